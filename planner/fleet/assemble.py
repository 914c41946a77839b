"""Plan assembly: pools, routing, periods, solver facts and explanations as a ``FleetPlan``."""
from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import ValidationError

from hardware.errors import InputError
from planner.fleet.load import ModelLoad, bucket_dict
from planner.fleet.options import Option
from planner.fleet.problem import FleetProblem, build_problem, solve_problem
from planner.fleet.request import SLO_KEYS, FleetRequest, validation_error
from planner.fleet.solutions import adopt, nearest_replan
from planner.fleet.whatif import (break_evens, peak_provisioning, single_gpu_baseline,
                                  slo_sensitivity, with_savings)
from planner.plan import envelope
from solvers.binpack import CoverProblem, CoverSolution, start_cost_of, starts_of


def _pools(fp: FleetProblem, problem: CoverProblem, keep: list[int], sol: CoverSolution
           ) -> list[dict[str, Any]]:
    T = problem.shape[2]
    pools = []
    for col, j in enumerate(keep):
        o = fp.options[j]
        cover = problem.options[col]
        total = sol.reserved[col] + sol.on_demand[col] + sol.spot[col]
        if total.max() == 0:
            continue
        load = sol.load[col]
        eff_cap = (sol.reserved[col] + sol.on_demand[col]
                   + sol.spot[col] * problem.spot_capacity_factor)
        util = np.divide(load, eff_cap, out=np.zeros(T), where=eff_cap > 0)
        # a full pool reads 1, not 1 + the LP's feasibility tolerance (1e-10-ish)
        util = np.where(util <= 1.0 + 1e-6, np.minimum(util, 1.0), util)
        peak_t = int(np.argmax(total))
        for cls, counts in (("reserved", np.full(T, sol.reserved[col])),
                            ("on_demand", sol.on_demand[col]), ("spot", sol.spot[col])):
            if counts.max() == 0:
                continue
            price = cover.prices[cls]
            entry = {
                "id": f"{o.group_id}/{cls}",
                "group": o.group_id,
                "model": o.model,
                "gpu": o.gpu,
                "shape": {"tp": o.tp, "pp": o.pp},
                "gpus_per_replica": o.gpus,
                "price_class": cls,
                "count": int(counts.max()),
                "gpus": int(counts.max()) * o.gpus,
                "price_per_replica_hour": price,
                "cost_per_hour": float(np.dot(counts, problem.period_weights) * price),
                "capacity_source": o.source,
                "utilisation": float(util[peak_t]),
                "rate_headroom_fraction": float(max(0.0, 1.0 - util[peak_t])),
            }
            if T > 1:
                entry["counts_by_period"] = [int(c) for c in counts]
            served = [d for d in range(problem.shape[0]) if sol.routing[d, col].max() > 0]
            m = fp.request.models[o.model_index]
            entry["serve_model"] = m.serve_model or m.model
            engine: dict[str, Any] = {"dtype": m.dtype}
            if m.kv_dtype:
                engine["kv_cache_dtype"] = m.kv_dtype
            seqs = _max_num_seqs(fp, problem, sol, col, o, served)
            if seqs is not None:  # the sequences in flight at the pool's planned mix
                engine["max_num_seqs"] = seqs
            if m.max_num_seqs:
                engine["max_num_seqs"] = min(engine.get("max_num_seqs", m.max_num_seqs), m.max_num_seqs)
            entry["engine"] = engine
            if o.details:
                worst = None
                for d in served:
                    det = o.details[fp.demand_index[d][1]]
                    if not det:
                        continue
                    for key in ("tpot", "ttft", "e2e"):
                        lim = det.get(f"{key}_slo_s")
                        if lim and det.get(f"{key}_s") is not None:
                            head = 1.0 - det[f"{key}_s"] / lim
                            if worst is None or head < worst[0]:
                                worst = (head, key, det)
                if worst is not None:
                    head, key, det = worst
                    entry["slo_headroom"] = {"binding": key, "fraction_at_capacity": float(head),
                                             "predicted_s": float(det[f"{key}_s"]),
                                             "slo_s": float(det[f"{key}_slo_s"]),
                                             "percentile": det.get("percentile")}
            pools.extend(_role_pools(entry, o, {g: fp.prices[g][cls] for g in o.gpus_by_type()})
                         if o.roles else [entry])
    return pools


def _max_num_seqs(fp: FleetProblem, problem: CoverProblem, sol: CoverSolution, col: int,
                  o: Option, served: list[int]) -> int | None:
    """The engine's ``max_num_seqs`` for option ``o`` (column ``col``): the sequences one
    replica holds in flight at full utilisation with the mix the plan routes to it.

    The capacity model is Mélange's linear mix: a replica's time is shared between buckets in
    proportion to each bucket's load / capacity, and bucket ``d``'s capacity was met at its own
    average batch ``max_batch[d]`` (``o.details``).  A replica whose time goes in shares
    ``s[d]`` (normalised to sum to 1: the replica at capacity; the pool's count per period
    cancels out) holds ``sum_d s[d] max_batch[d]`` sequences; the cap is the largest of those
    over the periods, rounded up, at least 1 and at most the largest ``max_batch``: a rare
    bucket with a small batch (long prompts) does not throttle the whole pool to its batch.
    None when the capacities came without batches (measured profiles)."""
    if not o.details:
        return None
    batch = {d: (o.details[fp.demand_index[d][1]] or {}).get("max_batch") or 0 for d in served}
    known = [d for d in served if batch[d] > 0]
    if not known:
        return None
    largest = max(batch[d] for d in known)
    b = np.array([batch[d] for d in known], dtype=float)
    cap = problem.capacity[known, col]
    # load in replica-equivalents per bucket and period: routed rate / the bucket's capacity
    load = np.where(cap[:, None] > 0, sol.routing[known, col] * problem.rates[known]
                    / np.where(cap > 0, cap, 1.0)[:, None], 0.0)
    total = load.sum(axis=0)
    busy = total > 0
    if not busy.any():
        return int(largest)
    in_flight = float(((b @ load[:, busy]) / total[busy]).max())
    return int(min(largest, max(1, int(np.ceil(in_flight - 1e-9)))))


def _role_pools(entry: dict[str, Any], o: Option, price_per_gpu: dict[str, float]
                ) -> list[dict[str, Any]]:
    """A disaggregated bundle's pool as one pool per role (what deploys: each role its own
    engines, on its own GPU type), ``count`` and cost per role; ``bundles`` and ``group`` tie
    them together.  ``price_per_gpu``: $/GPU-h of the bundle's price class per GPU type."""
    out = []
    bundle_price = sum(price_per_gpu[o.role_gpu(role)] * tp * pp * n for role, tp, pp, n in o.roles)
    for role, tp, pp, n in o.roles:
        e = dict(entry)
        bundles = entry["count"]
        per_replica = price_per_gpu[o.role_gpu(role)] * tp * pp
        e.update({"id": f"{o.group_id}/{role}/{entry['price_class']}", "role": role,
                  "gpu": o.role_gpu(role),
                  "bundles": bundles, "shape": {"tp": tp, "pp": pp}, "gpus_per_replica": tp * pp,
                  "count": bundles * n, "gpus": bundles * n * tp * pp,
                  "price_per_replica_hour": per_replica,
                  "cost_per_hour": entry["cost_per_hour"] * n * per_replica / bundle_price})
        if "counts_by_period" in e:
            e["counts_by_period"] = [c * n for c in entry["counts_by_period"]]
        engine = dict(e.get("engine") or {})
        engine["kv_transfer"] = role  # the engine joins a KV-transfer group (emit adds the flags)
        if role == "prefill":
            engine.pop("max_num_seqs", None)  # the decode batch cap is the decode side's
        e["engine"] = engine
        out.append(e)
    return out


def _routing(fp: FleetProblem, problem: CoverProblem, keep: list[int], sol: CoverSolution
             ) -> list[dict[str, Any]]:
    """Per bucket: ``pools``, the share of its requests over the horizon each pool group
    serves; with routing per period over several periods also ``pools_by_period``, the shares
    in each period (what a router applies then: pools with no replica in a period get none;
    a period where the bucket has no load gets an empty mapping)."""
    T = problem.shape[2]
    by_period = problem.routing == "per_period" and T > 1
    groups = [fp.options[j].group_id for j in keep]
    out = []
    for d, (mi, b) in enumerate(fp.demand_index):
        rates = problem.rates[d]
        total = float(rates.sum())
        fracs = {}
        for col in range(len(keep)):
            share = round(float(np.dot(sol.routing[d, col], rates)) / total, 6) if total > 0 else 0
            if share > 0:  # shares by fraction, not rate: a bucket of tiny rate keeps its own
                fracs[groups[col]] = share
        load = fp.loads[mi]
        entry = {"model": fp.request.models[mi].name or fp.request.models[mi].model,
                 "bucket": bucket_dict(load, b),
                 "rate_rps": float(rates.max()),  # the bucket's peak over the periods
                 "share": float(load.shares[:, b].mean()),
                 "pools": dict(sorted(fracs.items()))}
        if by_period:
            entry["pools_by_period"] = [
                {g: f for g, f in sorted((groups[col], round(float(sol.routing[d, col, t]), 6))
                                         for col in range(len(keep))) if f > 0 and rates[t] > 0}
                for t in range(T)]
        out.append(entry)
    return out


def _periods(fp: FleetProblem, problem: CoverProblem, keep: list[int], sol: CoverSolution
             ) -> list[dict[str, Any]]:
    T = problem.shape[2]
    out, prev = [], None
    spot_allowed = problem.spot_units_allowed()
    gpus = np.array([fp.options[j].gpus for j in keep])
    for t in range(T):
        counts = {}
        for col, j in enumerate(keep):
            o = fp.options[j]
            for cls, n in (("reserved", sol.reserved[col]), ("on_demand", sol.on_demand[col, t]),
                           ("spot", sol.spot[col, t])):
                if n > 0:
                    counts[f"{o.group_id}/{cls}"] = int(n)
        changes = {}
        if prev is not None:
            for k in sorted(set(counts) | set(prev)):
                delta = counts.get(k, 0) - prev.get(k, 0)
                if delta:
                    changes[k] = delta
        out.append({"index": t, "start_s": t * fp.period_s,
                    "rate_rps": {(m.name or m.model): float(ld.rates_rps[t] if len(ld.rates_rps) > 1 else ld.rates_rps[0])
                                 for m, ld in zip(fp.request.models, fp.loads)},
                    "cost_per_hour": sol.period_cost_per_hour(problem, t),
                    "gpus": int(sol.counts(t) @ gpus),
                    "pools": counts, "changes": changes})
        if problem.spot_max_fraction is not None:
            out[-1]["spot_gpus_allowed"] = float(spot_allowed[t])
        prev = counts
    return out


def _tokens_per_hour(ld: ModelLoad) -> float:
    """Tokens (input + output) per hour one model's load brings, averaged over the periods."""
    return float(ld.rates_rps.mean()) * ld.mean_tokens * 3600.0


def _cost_by_model(fp: FleetProblem, pools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each model's share of the fleet: its pools' $/h (mean over the horizon; replica start
    costs are the fleet's, not a model's), $ per million of its tokens, and its GPUs at peak."""
    out = {}
    for m, ld in zip(fp.request.models, fp.loads):
        name = m.name or m.model
        mine = [p for p in pools if p["model"] == name]
        cost = sum(p["cost_per_hour"] for p in mine)
        tokens = _tokens_per_hour(ld)
        out[name] = {"cost_per_hour": cost,
                     "cost_per_million_tokens": cost / (tokens / 1e6) if tokens > 0 else None,
                     "gpus_peak": _peak_gpus(mine)}
    return out


def _peak_gpus(pools: list[dict[str, Any]]) -> int:
    """GPUs ``pools`` hold together in their busiest period."""
    series = [np.asarray(p.get("counts_by_period", [p["count"]])) * p["gpus_per_replica"] for p in pools]
    return int(np.sum(series, axis=0).max()) if series else 0


def plan_fleet(req: FleetRequest | dict, *, file: str | None = None,
               time_limit_s: float | None = None, inputs: Any = None,
               previous: dict[str, Any] | None = None, previous_file: str | None = None,
               keep_within: float | None = None, simulate: bool = False) -> dict[str, Any]:
    """Plan a fleet; returns the ``FleetPlan`` as plain data (envelope included).

    ``simulate``: replay the plan in the iteration-level serving simulator and re-plan with
    the capacities of pools that miss their SLOs scaled down
    (:func:`planner.fleet.simulate.plan_with_simulation`); not with ``previous``.

    ``previous``: the ``FleetPlan`` in place (as read by :func:`planner.plan.load_plan`): the
    plan is then the one nearest to it among those costing at most ``1 + keep_within``
    (default :data:`planner.replan.DEFAULT_KEEP_WITHIN`) times the cheapest (see
    :mod:`planner.replan`), with a ``replan`` section saying what moves and in which order.

    Raises:
        InputError: malformed request or workload.
        InfeasibleError: a bucket no GPU can serve within the SLO, or quotas too small.
    """
    if isinstance(req, dict):
        try:
            req = FleetRequest.model_validate(req)
        except ValidationError as exc:
            raise validation_error(exc, file) from None
    if simulate and previous is not None:
        raise InputError("a re-plan against the plan in place is not simulated",
                         field="--simulate", expected="--simulate without --previous")
    fp = build_problem(req, file=file)
    if simulate:
        from planner.fleet.simulate import plan_with_simulation

        return plan_with_simulation(fp, time_limit_s=time_limit_s,
                                    inputs=inputs if inputs is not None else req.model_dump(mode="json"))
    return plan_from_problem(fp, time_limit_s=time_limit_s,
                             inputs=inputs if inputs is not None else req.model_dump(mode="json"),
                             previous=previous, previous_file=previous_file,
                             keep_within=keep_within)


def plan_from_problem(fp: FleetProblem, *, time_limit_s: float | None = None,
                      inputs: Any = None, previous: dict[str, Any] | None = None,
                      previous_file: str | None = None,
                      keep_within: float | None = None) -> dict[str, Any]:
    """The ``FleetPlan`` of a built problem (:func:`plan_fleet`'s second half, also Mélange
    configs'): solve, compare, re-plan when ``previous`` is given, assemble."""
    from planner.replan import DEFAULT_KEEP_WITHIN, check_keep_within

    req = fp.request
    limit = time_limit_s or req.solver.time_limit_s
    keep_within = check_keep_within(DEFAULT_KEEP_WITHIN if keep_within is None else keep_within)
    problem, keep, sol = solve_problem(fp, time_limit_s=limit)
    base_limit = max(1.0, min(limit / 4, 10.0))
    base = None
    if req.solver.baseline:
        base, best_single = single_gpu_baseline(fp, base_limit)
        if best_single is not None and sol.result.status != "optimal":
            # a single-type plan is a feasible mix: never report a mix dearer than it
            adopted = adopt(problem, keep, sol, *best_single)
            if adopted is not None:
                sol = adopted
    breaks = break_evens(fp, problem, sol, limit) if req.solver.break_even else None
    slo_costs = slo_sensitivity(fp, sol.cost_per_hour, limit) if req.solver.slo_factors else None
    replan = None
    if previous is not None:
        problem, keep, sol, replan = nearest_replan(fp, problem, keep, sol, previous, previous_file,
                                             keep_within, limit)
    cost = sol.cost_per_hour
    T = problem.shape[2]
    tokens = sum(_tokens_per_hour(ld) for ld in fp.loads)
    body: dict[str, Any] = {
        "cost_per_hour": cost,
        "peak_cost_per_hour": max(sol.period_cost_per_hour(problem, t) for t in range(T)),
        "cost_per_million_tokens": cost / (tokens / 1e6) if tokens > 0 else None,
        "gpus": {g: int(max(sum(sol.counts(t)[c] * fp.options[keep[c]].gpus_by_type().get(g, 0)
                                for c in range(len(keep))) for t in range(T)))
                 for g in sorted({g for k in keep for g in fp.options[k].gpus_by_type()})},
        "pools": _pools(fp, problem, keep, sol),
        "routing": _routing(fp, problem, keep, sol),
        "solver": {**sol.result.to_dict(), "method": sol.method,
                   "formulation": {"routing": problem.routing,
                                   "slice_factor": problem.slices,
                                   "dominated_options_dropped": sum(
                                       1 for j, o in enumerate(fp.options)
                                       if j not in set(keep) and o.model_index >= 0),
                                   "demands": problem.shape[0], "options": problem.shape[1],
                                   "periods": T}},
    }
    body["gpus"] = {g: n for g, n in body["gpus"].items() if n > 0}
    body["cost_by_model"] = _cost_by_model(fp, body["pools"])
    if replan is not None:
        body["replan"] = replan
    if breaks is not None:
        body["break_even_prices"] = breaks
    if slo_costs is not None:
        body["slo_sensitivity"] = slo_costs
    if T > 1:
        body["periods"] = _periods(fp, problem, keep, sol)
        body["period_s"] = fp.period_s
    if req.scaling.start_cost_s > 0 and T > 1:
        started = starts_of(sol.on_demand, sol.spot)
        units = np.array([o.units for o in problem.options])
        body["scaling"] = {
            "start_cost_s": req.scaling.start_cost_s,
            # cost_per_hour = the pools' costs + this (what the MILP minimised)
            "start_cost_per_hour": start_cost_of(problem, sol.on_demand, sol.spot),
            "replica_starts": int(started.sum()), "gpu_starts": int(units @ started.sum(axis=1))}
    body["baseline_single_gpu"] = with_savings(base, cost) if base is not None else None
    peak = peak_provisioning(fp, cost, base_limit) if req.solver.baseline else None
    if peak is not None:
        body["peak_provisioning"] = peak
    body["capacity"] = {
        (m.name or m.model): sorted({o.source for o in fp.options if o.model_index == i})
        for i, m in enumerate(req.models)}
    body["workload"] = {(m.name or m.model): ld.summary for m, ld in zip(req.models, fp.loads)}
    body["slo"] = {(m.name or m.model): m.slo.summary() for m in req.models}
    body["explanations"] = _explain(fp, problem, keep, sol, body)
    return envelope("FleetPlan", body, inputs=inputs)


def _explain(fp, problem, keep, sol, body) -> list[str]:
    notes = []
    if sol.method == "greedy":
        notes.append("the MILP found no incumbent within the time limit; counts come from the "
                     "greedy cover (status heuristic)")
    notes.append(f"routing: {problem.routing}" + (" (one routing table for all periods; counts "
                 "change per period)" if problem.routing == "shared" else ""))
    notes.append("solver: " + method_words(sol.method))
    rp = body.get("replan")
    if rp is not None:
        notes.append(f"re-planned against {rp['previous']['file'] or 'the plan in place'}: "
                     f"{rp['gpus_changed']:g} GPUs change (the cheapest plan would change "
                     f"{rp['gpus_changed_by_cheapest']:g}) for {rp['extra_cost_per_hour']:+.2f} $/h, "
                     f"within {100 * rp['keep_within']:g}% of the cheapest; grow "
                     f"{len(rp['transition']['grow_first'])} pools first, shrink "
                     f"{len(rp['transition']['shrink_after'])} after the routing switch")
    for b in body.get("break_even_prices") or []:
        if b["break_even_price_per_gpu_hour"] is None:
            notes.append(f"{b['gpu']}: {'used' if b['used'] else 'unused'} at any price "
                         f"({b['note']})")  # e.g. nothing else serves some bucket
            continue
        notes.append(f"{b['gpu']}: {b['meaning'].replace('this price', '')}"
                     f"{b['break_even_price_per_gpu_hour']:.3f} $/GPU-h on demand (now "
                     f"{b['on_demand_price_per_gpu_hour']:.3f}; its reserved and spot prices "
                     f"scaled alike){'' if b['exact'] else ' (estimate: a MILP was not proven)'}")
    for v in body.get("slo_sensitivity") or []:
        what = f"every SLO x{v['factor']:g} ({'tighter' if v['factor'] < 1 else 'looser'})"
        if not v["feasible"]:
            notes.append(f"{what}: no plan ({v['reason']})")
        else:
            notes.append(f"{what}: {v['cost_per_hour']:.2f} $/h ({v['delta_per_hour']:+.2f} $/h"
                         + (f", {100 * v['delta_fraction']:+.1f}%" if v["delta_fraction"] is not None
                            else "") + f"; {v['status']})")
    base = body.get("baseline_single_gpu")
    if base and base.get("gpu") and base.get("savings_fraction") is not None:
        notes.append(f"best single GPU type {base['gpu']} costs {base['cost_per_hour']:.2f} $/h; "
                     f"the mix saves {100 * base['savings_fraction']:.1f}%")
    bundles = sorted({p["group"] for p in body.get("pools", []) if p.get("role")})
    if bundles:
        notes.append(f"prefill/decode disaggregated bundles in the plan: {', '.join(bundles)}; a "
                     "bundle serves a bucket at the lesser of its prefill and decode sides' rates "
                     "(decode with no prefill stalls; TTFT = prefill queue + prefill + KV transfer "
                     "+ half a TPOT to join a decode step); requests reach a bundle through its "
                     "prefill/decode router (planner emit writes one per bundle)")
    for i, m in enumerate(fp.request.models):
        srcs = body["capacity"][m.name or m.model]
        targets = [f"{k[:-2].upper()} p{m.slo.percentile_of(k):g}" for k in SLO_KEYS
                   if getattr(m.slo, k) is not None]
        where = (" on every bucket's representative request at that percentile of its lengths"
                 if m.workload.trace else " on every bucket's largest request (its upper edges: "
                 "a histogram has no lengths to take percentiles of)")
        fixed = sorted({(o.source, o.measured_at) for o in fp.options
                        if o.model_index == i and o.measured_at})
        if fixed:  # measured tables hold at the SLO they were measured at: say which
            notes.append(f"{m.name or m.model}: capacity from measured profiles, looked up"
                         f"{where}: " + "; ".join(f"{src} meets {at}" for src, at in fixed)
                         + ("" if all(p.follows_slo() for p in m.profiles) else
                            " (a profile's own SLO is taken as given, not checked against the "
                            "request's)"))
            continue
        notes.append(f"{m.name or m.model}: capacity from {', '.join(srcs)}; "
                     + (f"SLOs met at {', '.join(targets)}," if targets else
                        f"SLO percentile {m.slo.percentile:g},") + where)
    return notes


#: plain words for the parts of a cover solution's method (solvers.binpack)
_METHOD_WORDS = {
    "milp": "one MILP over the whole horizon",
    "lp-rounding": "an incumbent rounded from the LP relaxation",
    "start": "the MILP again from the best incumbent",
    "lp": "the LP relaxation's bound",
    "period-rounding": "per-period MILPs with reserved counts fixed from the LP (a period's own "
                       "MILP bounds prove the plan when no reserved price ties periods together)",
    "passes": "more passes from the reserved levels the last one settled on",
    "merged": "demands with proportional capacity rows merged first (exact)",
    "single-gpu-incumbent": "the best single-GPU-type plan, cheaper than the mix found in time",
    "greedy": "the greedy cover",
    "closest": "the plan nearest to the one in place within the cost allowance (re-planning)",
}


def method_words(method: str) -> str:
    """``method`` (e.g. ``lp+period-rounding+milp+merged``) in words, steps in order."""
    parts = method.split("+")
    # the merge is a presolve: it comes first whatever its place in the name
    first = [_METHOD_WORDS["merged"]] if "merged" in parts else []
    # "milp" after the period rounding is the whole-horizon MILP from its incumbent
    words = [_METHOD_WORDS["start"] if p == "milp" and i > 0 else _METHOD_WORDS.get(p, p)
             for i, p in enumerate(parts) if p != "merged"]
    return f"{method}: " + "; then ".join(first + words)
