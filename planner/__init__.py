"""LLM placement planner: GPU mixes, parallel plans, expert placement, sequence parallelism.

The public Python API; the CLI (``planner``) is a thin layer over these functions.  Names are
imported lazily so that ``planner --help`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from hardware.errors import InfeasibleError, InputError  # noqa: E402

#: public name -> "module:attribute"
_API = {
    "estimate": "planner.estimates:run_estimate",
    "load_model": "costmodels.model:load_model",
    "get_accelerator": "hardware.catalog:get_accelerator",
    "get_node": "hardware.catalog:get_node",
}

__all__ = ["__version__", "InputError", "InfeasibleError", *_API]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'planner' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
