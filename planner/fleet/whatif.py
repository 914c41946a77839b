"""What the plan is compared with: the best single GPU type, provisioning for the peak,
break-even prices per GPU type and the cost of tighter or looser SLOs."""
from __future__ import annotations

from typing import Any

import numpy as np

from hardware.errors import InfeasibleError
from planner.fleet.load import bucket_dict
from planner.fleet.problem import (FleetProblem, build_problem, cover_problem, solve_fleet_cover,
                                   solve_problem)
from solvers.binpack import CoverInfeasible, CoverProblem, CoverSolution


def single_gpu_baseline(fp: FleetProblem, time_limit_s: float):
    """Best single-GPU-type plan: ``(summary, (keep, solution) or None)``; savings are filled in
    by :func:`with_savings` once the mix's cost is final."""
    per_gpu = []
    best_sol = None
    for g in sorted({o.gpu for o in fp.options}):
        mask = np.array([set(o.gpus_by_type()) == {g} for o in fp.options])
        problem, keep = cover_problem(fp, mask)
        if problem.unservable():
            d, _ = problem.unservable()[0]
            mi, b = fp.demand_index[d]
            model = fp.request.models[mi]
            per_gpu.append({"gpu": g, "feasible": False,
                            "reason": f"cannot serve bucket {bucket_dict(fp.loads[mi], b)['label']} "
                                      f"of {model.name or model.model} within the SLO"})
            continue
        try:
            sol = solve_fleet_cover(fp, problem, time_limit_s)
        except CoverInfeasible as exc:
            per_gpu.append({"gpu": g, "feasible": False,
                            "reason": "quota too small" if exc.result.status == "infeasible"
                            else f"no solution in {time_limit_s:g} s"})
            continue
        if best_sol is None or sol.cost_per_hour < best_sol[1].cost_per_hour - 1e-9:
            best_sol = (keep, sol)
        gpus = np.array([fp.options[k].gpus for k in keep])
        busiest = sol.counts(int(np.argmax(problem.rates.sum(axis=0))))  # the peak period's counts
        per_gpu.append({"gpu": g, "feasible": True, "cost_per_hour": sol.cost_per_hour,
                        "gpus_peak": int(max(sol.counts(t) @ gpus
                                             for t in range(problem.shape[2]))),
                        "status": sol.result.status, "gap": sol.result.gap,
                        "pools": {fp.options[keep[c]].group_id: int(busiest[c])
                                  for c in range(len(keep)) if busiest[c] > 0}})
    feasible = [p for p in per_gpu if p["feasible"]]
    if not feasible:
        return {"gpu": None, "cost_per_hour": None, "savings_per_hour": None,
                "savings_fraction": None, "per_gpu": per_gpu}, None
    best = min(feasible, key=lambda p: (p["cost_per_hour"], p["gpu"]))
    return {"gpu": best["gpu"], "cost_per_hour": best["cost_per_hour"],
            "status": best["status"], "gap": best.get("gap"),
            "pools": best["pools"], "per_gpu": per_gpu}, best_sol


def with_savings(base: dict[str, Any], cost: float) -> dict[str, Any]:
    """The single-GPU baseline ``base`` with what the mix at ``cost`` ($/h) saves against it."""
    if base.get("cost_per_hour") is None:
        return base
    out = dict(base)
    out["savings_per_hour"] = base["cost_per_hour"] - cost
    out["savings_fraction"] = ((base["cost_per_hour"] - cost) / base["cost_per_hour"]
                               if base["cost_per_hour"] > 0 else None)
    # keep a stable key order: summary first, the per-GPU list last
    per = out.pop("per_gpu")
    out["per_gpu"] = per
    return out


def break_evens(fp: FleetProblem, problem: CoverProblem, sol: CoverSolution,
                 time_limit_s: float) -> list[dict[str, Any]]:
    """Per GPU type, the on-demand $/GPU-h at which it leaves (used) or enters (unused) the
    cheapest plan, every price class of the type scaled alike (:mod:`solvers.sensitivity`)."""
    from solvers.sensitivity import all_break_evens

    limit = max(1.0, min(time_limit_s, 10.0))
    found = all_break_evens(problem, sol, lambda p: solve_fleet_cover(fp, p, limit))
    out = []
    for b in found:
        price = fp.prices[b.group]["on_demand"]
        out.append({"gpu": b.group, "used": bool(b.used), "on_demand_price_per_gpu_hour": price,
                    "break_even_price_per_gpu_hour": None if b.factor is None else price * b.factor,
                    "factor": b.factor,
                    "meaning": ("leaves the cheapest plan above this price" if b.used else
                                "enters the cheapest plan at or below this price"),
                    "exact": bool(b.exact), "milps": b.solves, "note": b.reason})
    return out


def slo_sensitivity(fp: FleetProblem, cost: float, time_limit_s: float) -> list[dict[str, Any]]:
    """The cheapest plan's cost with every model's SLOs (TTFT, TPOT, end-to-end) multiplied by
    each of ``solver.slo_factors``: capacities are recomputed from the cost model at the new
    SLOs, the mix is solved again (no baselines).  Models whose capacity comes from measured
    profiles (measured at one SLO) make the comparison meaningless: then each factor says so."""
    req = fp.request
    out = []
    for f in req.solver.slo_factors:
        row: dict[str, Any] = {"factor": f}
        if any(not p.follows_slo() for m in req.models for p in m.profiles):
            out.append({**row, "feasible": None, "reason": "capacity from measured profiles, "
                        "which do not change with the SLO"})
            continue
        models = [m.model_copy(update={"slo": m.slo.model_copy(update={
            k: (None if getattr(m.slo, k) is None else getattr(m.slo, k) * f)
            for k in ("ttft_s", "tpot_s", "e2e_s")})}) for m in req.models]
        variant = req.model_copy(update={"models": models, "solver": req.solver.model_copy(
            update={"slo_factors": [], "break_even": False, "baseline": False})})
        try:
            _, _, sol = solve_problem(build_problem(variant, file=fp.file), time_limit_s=time_limit_s)
        except InfeasibleError as exc:
            out.append({**row, "feasible": False, "reason": exc.message})
            continue
        out.append({**row, "feasible": True, "cost_per_hour": sol.cost_per_hour,
                    "delta_per_hour": sol.cost_per_hour - cost,
                    "delta_fraction": (sol.cost_per_hour - cost) / cost if cost > 0 else None,
                    "status": sol.result.status, "gap": sol.result.gap})
    return out


def peak_provisioning(fp: FleetProblem, cost: float, time_limit_s: float) -> dict[str, Any] | None:
    """The cost of one fleet for the whole horizon with every bucket at its peak-period rate
    and what the per-period plan (``cost``, $/h) saves against it; ``None`` for a single
    period.  The fixed fleet is priced like the plan (the same price classes, quotas and spot
    allowance: a fleet held all horizon is what reserved prices are for), so the savings are
    those of following the load, not a price discount the fixed fleet could have had too."""
    T = fp.rates.shape[1]
    if T <= 1:
        return None
    peak = fp.rates.max(axis=1, keepdims=True)  # every bucket at its own peak rate
    problem, keep = cover_problem(fp, rates=peak, routing="per_period")
    try:
        sol = solve_fleet_cover(fp, problem, time_limit_s)
    except CoverInfeasible:
        return {"feasible": False, "reason": "the peak does not fit the quotas in one period"}
    return {"feasible": True, "cost_per_hour": sol.cost_per_hour, "status": sol.result.status,
            "savings_per_hour": sol.cost_per_hour - cost,
            "savings_fraction": (sol.cost_per_hour - cost) / sol.cost_per_hour,
            "note": "every bucket provisioned at its peak-period rate for the whole horizon, "
                    "at the plan's price classes (reserved where offered)"}
