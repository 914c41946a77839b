"""Fleet planner: the cheapest GPU mix, TP/PP shapes and routing that meet latency SLOs.

Request (YAML / JSON / Python, :mod:`.request`) -> each model's load per period (:mod:`.load`)
-> capacity per (model, GPU type, shape, bucket) from measured profiles (Mélange JSON, AIBrix
GPU-optimizer profiles: :mod:`.profiles`) or the serving cost model (:mod:`.capacity`, with
prefill/decode bundles from :mod:`.bundles`) -> :mod:`solvers.binpack` covering MILP (integer
counts per option and price class, reserved held over the horizon, on-demand / spot per period,
quotas, spot cap: :mod:`.problem`) -> a ``FleetPlan`` (:mod:`.assemble`), compared with the best
single GPU type, peak provisioning, other prices and SLOs (:mod:`.whatif`), or re-planned against
the plan in place (:mod:`.solutions`).  Mélange's own configs: :mod:`.melange`.

Stable plan fields read by pipelines: ``cost_per_hour``, ``pools`` (each with ``gpu``,
``count``, ``shape``, ``price_class``), ``routing``, ``solver`` (``status``, ``objective``,
``bound``, ``gap``, ``time_s``) and ``baseline_single_gpu``.
"""
from planner.fleet.assemble import plan_fleet, plan_from_problem
from planner.fleet.bundles import CROSS_BUNDLES_KEPT
from planner.fleet.melange import melange_request, plan_melange
from planner.fleet.problem import AUTO_SHARED_COLUMNS, FleetProblem, build_problem, solve_problem
from planner.fleet.profiles import load_profile
from planner.fleet.request import (FleetRequest, ProfileSpec, SLOSpec, SolverSpec, input_files,
                                   load_request, request_from_file, validation_error)

__all__ = ["AUTO_SHARED_COLUMNS", "CROSS_BUNDLES_KEPT", "FleetProblem", "FleetRequest",
           "ProfileSpec", "SLOSpec", "SolverSpec", "build_problem", "input_files", "load_profile",
           "load_request", "melange_request", "plan_fleet", "plan_from_problem", "plan_melange",
           "request_from_file", "solve_problem", "validation_error"]
