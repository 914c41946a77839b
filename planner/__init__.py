"""LLM placement planner: GPU mixes, parallel plans, expert placement, sequence parallelism.

The public Python API; the CLI (``planner``) is a thin layer over these functions.
"""
__version__ = "0.1.0"

from hardware.errors import InfeasibleError, InputError  # noqa: E402

__all__ = ["__version__", "InputError", "InfeasibleError"]
