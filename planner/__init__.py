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
    # one function per capability
    "estimate": "planner.estimates:run_estimate",
    "plan_fleet": "planner.fleet:plan_fleet",
    "plan_parallel": "planner.parallel:run_parallel",
    "place_experts": "planner.experts:plan_experts",
    "plan_step": "planner.seqpar:plan_step",
    "plan_sequence_parallel": "planner.seqpar:plan_offline",
    "calibrate": "planner.calibrate:run_calibrate",
    "phase_capacity": "planner.parallel:phase_capacity",
    "run_sweep": "planner.sweep:run_sweep",
    "load_sweep": "planner.sweep:load_sweep",
    "report": "planner.report:report_file",
    "render_report": "planner.report:render_plan",
    # typed requests and plans (pydantic)
    "FleetRequest": "planner.fleet:FleetRequest",
    "ParallelRequest": "planner.parallel:ParallelRequest",
    "ExpertRequest": "planner.experts:ExpertRequest",
    "StepPlan": "planner.seqpar:StepPlan",
    "SequencePlan": "planner.seqpar:SequencePlan",
    # building blocks
    "load_model": "costmodels.model:load_model",
    "get_accelerator": "hardware.catalog:get_accelerator",
    "get_node": "hardware.catalog:get_node",
    "load_plan": "planner.plan:load_plan",
    "dump_plan": "planner.plan:dump_plan",
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
