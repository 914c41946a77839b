"""Hardware descriptions: accelerators, node types, link tiers, prices, measured profiles."""
from hardware.errors import InputError, InfeasibleError

__all__ = ["InputError", "InfeasibleError"]
