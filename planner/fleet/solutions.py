"""Cover solutions moved between option sets: a single-GPU-type plan adopted as the mix's
incumbent, and the re-plan nearest the plan in place."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from planner.fleet.problem import FleetProblem, cover_problem
from solvers.binpack import CoverProblem, CoverSolution


def embed(problem: CoverProblem, keep: list[int], other_keep: list[int],
           other: CoverSolution) -> tuple | None:
    """``other`` (a solution over the options ``other_keep``, e.g. one GPU type's) as arrays
    ``(reserved, on_demand, spot, routing)`` over ``problem``'s options ``keep``; ``None``
    when ``other`` uses an option ``problem`` lacks."""
    where = {k: c for c, k in enumerate(keep)}
    if any(k not in where for k in other_keep):
        return None
    D, J, T = problem.shape
    reserved = np.zeros(J, dtype=int)
    on_demand = np.zeros((J, T), dtype=int)
    spot = np.zeros((J, T), dtype=int)
    routing = np.zeros((D, J, T))
    for c, k in enumerate(other_keep):
        m = where[k]
        reserved[m] = other.reserved[c]
        on_demand[m] = other.on_demand[c]
        spot[m] = other.spot[c]
        routing[:, m, :] = other.routing[:, c, :]
    return reserved, on_demand, spot, routing


def adopt(problem: CoverProblem, keep: list[int], sol: CoverSolution, other_keep: list[int],
           other: CoverSolution) -> CoverSolution | None:
    """``other`` (a solution over a subset of the options, e.g. one GPU type) as a solution of
    ``problem`` when it is cheaper than ``sol``: the MILP's incumbent is replaced, its bound is
    kept, and the gap recomputed."""
    if other.cost_per_hour >= sol.cost_per_hour - 1e-9:
        return None
    arrays = embed(problem, keep, other_keep, other)
    if arrays is None:
        return None
    return with_cost_facts(problem, arrays, sol, sol.method + "+single-gpu-incumbent")


def with_cost_facts(problem: CoverProblem, arrays: tuple, sol: CoverSolution,
                     method: str) -> CoverSolution:
    """A cover ``arrays`` with solver facts about its cost: ``sol``'s bound and time, the gap
    recomputed, "optimal" only when the cost meets the bound."""
    from solvers.binpack import load_of, objective_of
    from solvers.milp import SolveResult, relative_gap

    reserved, on_demand, spot, routing = arrays
    cost = objective_of(problem, reserved, on_demand, spot)
    r = sol.result
    gap = relative_gap(cost, r.bound)
    status = "optimal" if gap is not None and gap <= 1e-6 else "feasible"
    res = SolveResult(status, cost, r.bound, 0.0 if status == "optimal" else gap, r.time_s,
                      r.backend, r.time_limit_s)
    return CoverSolution(reserved, on_demand, spot, routing, load_of(problem, routing), cost, res,
                         method)


def nearest_replan(fp: FleetProblem, problem: CoverProblem, keep: list[int], sol: CoverSolution,
            previous: dict[str, Any], previous_file: str | None, keep_within: float,
            time_limit_s: float) -> tuple[CoverProblem, list[int], CoverSolution, dict[str, Any]]:
    """The plan nearest to ``previous`` within ``keep_within`` of the cheapest one (``sol``):
    ``(problem, keep, solution, replan section)`` over every option (none pruned: the plan in
    place may use one the cheapest search dropped as dominated)."""
    from planner.replan import previous_counts, transition
    from solvers.binpack import closest_cover, units_changed

    full, full_keep = cover_problem(fp, prune=False)
    cheapest = embed(full, full_keep, keep, sol)
    before, retired = previous_counts(previous, full, full_keep, fp.options, previous_file)
    gone = sum(r["gpus"] for r in retired)
    cap = sol.cost_per_hour * (1.0 + keep_within)
    near = closest_cover(full, before, cost_cap=cap, start=cheapest, time_limit_s=time_limit_s,
                         gap_rel=fp.request.solver.gap_rel)
    names = [fp.options[j].group_id for j in full_keep]
    section = {
        "previous": {"file": Path(previous_file).name if previous_file else None,
                     "inputs_sha256": (previous.get("metadata") or {}).get("inputs_sha256"),
                     "cost_per_hour": previous.get("cost_per_hour")},
        "keep_within": keep_within,
        "cheapest_cost_per_hour": sol.cost_per_hour,
        "cost_per_hour": near.cost_per_hour,
        "extra_cost_per_hour": near.cost_per_hour - sol.cost_per_hour,
        "gpus_changed": near.result.objective + gone,
        "gpus_changed_by_cheapest": units_changed(full, before, cheapest[:3]) + gone,
        "retired_pools": retired,
        "solver": near.result.to_dict(),
        "transition": transition(full, names, before, (near.reserved, near.on_demand, near.spot),
                                 retired, roles=[fp.options[j].roles for j in full_keep]),
    }
    return full, full_keep, with_cost_facts(full, (near.reserved, near.on_demand, near.spot,
                                                    near.routing), sol, sol.method + "+closest"), section
