"""The fleet problem: options, prices, quotas and rates gathered from a request, turned into
:class:`solvers.binpack.CoverProblem` and solved, with infeasibility explained."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardware.errors import InfeasibleError, InputError
from planner.fleet.bundles import prune_cross_bundles
from planner.fleet.capacity import cost_model_options
from planner.fleet.load import ModelLoad, build_load
from planner.fleet.options import Option
from planner.fleet.profiles import profile_options
from planner.fleet.request import FleetRequest, GPUEntry
from solvers.binpack import (CoverInfeasible, CoverOption, CoverProblem, CoverSolution,
                             dominated_options, parallel_workers, quota_shortfall, solve_cover)


#: above this many routing columns (demands x options x periods) "auto" shares one routing
#: table over all periods, which keeps the model T times smaller.  Per-period routing is the
#: better plan (each period re-routes: on the 20 x 20-bucket, 24-period scale benchmark it is
#: ~5% cheaper than the best shared plan) and large per-period models are solved by the
#: LP-bound + per-period-rounding decomposition (solvers.cover_periods._solve_by_periods: 415k
#: columns in ~20 s on 2 cores), so only beyond this size does "auto" share
AUTO_SHARED_COLUMNS = 600_000


@dataclass
class FleetProblem:
    """Everything the solver and the plan writer need."""

    request: FleetRequest
    loads: list[ModelLoad]
    options: list[Option]
    prices: dict[str, dict[str, float]]  # gpu -> class -> $/h per GPU
    quotas: dict[str, int]
    rates: np.ndarray  # [D, T]
    demand_index: list[tuple[int, int]]  # d -> (model index, bucket)
    period_weights: np.ndarray
    period_s: float
    file: str | None = None


def _prices(g: GPUEntry, gi: int, file: str | None, use_catalog: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    od = g.price_per_hour
    acc = None
    if use_catalog or od is None:
        from hardware.catalog import get_accelerator
        try:
            acc = get_accelerator(g.name, field=f"gpus[{gi}].name", file=file)
        except InputError:
            if od is None:  # no price given and none in the catalog
                raise
        if od is None:
            od = acc.price_per_hour
    if od is None:
        raise InputError(f"no on-demand price for {g.name}", file=file,
                         field=f"gpus[{gi}].price_per_hour", expected="$ per GPU-hour")
    out["on_demand"] = float(od)
    res = g.reserved_price_per_hour
    if res is None and acc is not None and acc.reserved_price is not None:
        res = acc.reserved_price.usd_per_hour
    if res is not None:
        out["reserved"] = float(res)
    spot = g.spot_price_per_hour
    if spot is None and acc is not None and acc.spot_price is not None:
        spot = acc.spot_price.usd_per_hour
    if spot is not None:
        out["spot"] = float(spot)
    return out


def _gpu_key(name: str, catalog: bool) -> str:
    """The name a requested GPU type goes by in the plan: the catalog's when the request uses
    the catalog (so aliases such as H100 and H100-SXM are one type), else as given (also for a
    profiled GPU the catalog does not know)."""
    if catalog:
        from hardware.catalog import get_accelerator
        try:
            return get_accelerator(name).name
        except InputError:
            pass
    return name


def _model_name(req: FleetRequest, i: int) -> str:
    m = req.models[i]
    return m.name or m.model


def _common_periods(req: FleetRequest, loads: list[ModelLoad], file: str | None
                    ) -> tuple[int, float]:
    """The problem's period count and length.  Models whose loads vary over time (more than
    one period) must agree on both: their periods are lined up index by index, so different
    lengths would plan a 15-minute period beside an hour, and different counts would leave a
    series short (padding it with a guess is no plan).  A model with one period (a single
    rate, or ``periods: peak / mean``) is constant and joins any period length, its rate
    repeated in every period.  The plan's ``period_s`` is the time-varying models' (the
    largest given where every model is constant)."""
    varying = [i for i, ld in enumerate(loads) if len(ld.rates_rps) > 1]
    if not varying:
        return 1, max(ld.period_s for ld in loads)

    def listed(idx: list[int], what) -> str:
        return ", ".join(f"{_model_name(req, i)} (models[{i}]) {what(i)}" for i in idx)

    lengths = {loads[i].period_s for i in varying}
    if len(lengths) > 1:
        raise InputError(
            "models with a rate series have different period lengths: "
            + listed(varying, lambda i: f"period_s {loads[i].period_s:g}"),
            file=file, field=f"models[{varying[-1]}].workload.period_s",
            expected="one period_s for every model whose load has more than one period",
            hint="Give them the same period_s, or plan a model on its peak or mean rate "
                 "(workload.periods: peak or mean)")
    counts = {len(loads[i].rates_rps) for i in varying}
    if len(counts) > 1:
        raise InputError(
            "models have rate series of different lengths: "
            + listed(varying, lambda i: f"{len(loads[i].rates_rps)} periods"),
            file=file, field=f"models[{varying[-1]}].workload",
            expected="the same number of periods for every model whose load varies (or a "
                     "single rate)",
            hint="Periods are lined up by index from each series' start; cut the traces to "
                 "the same span or give rate_rps lists of one length")
    return counts.pop(), lengths.pop()


def build_problem(req: FleetRequest, *, file: str | None = None) -> FleetProblem:
    """Read workloads and capacities and line up demands, options, prices and quotas."""
    loads = [build_load(m, i, file) for i, m in enumerate(req.models)]
    T, period_s = _common_periods(req, loads, file)
    needs_catalog = any(not m.profiles for m in req.models)
    seen: dict[str, int] = {}
    for gi, g in enumerate(req.gpus):
        same = _gpu_key(g.name, needs_catalog).lower()
        if same in seen:
            first = req.gpus[seen[same]].name
            also = "" if first.lower() == g.name.lower() else f" (as {first!r} in gpus[{seen[same]}])"
            raise InputError(f"GPU {g.name!r} listed twice{also}", file=file,
                             field=f"gpus[{gi}].name", expected="each GPU type once")
        seen[same] = gi
    options: list[Option] = []
    for i, (m, ld) in enumerate(zip(req.models, loads)):
        if m.profiles:
            options += profile_options(m, i, ld, req.gpus, file)
        else:
            options += cost_model_options(m, i, ld, req.gpus, file)
    prices, quotas = {}, {}
    canon = {}
    for gi, g in enumerate(req.gpus):
        p = _prices(g, gi, file, needs_catalog)
        key = _gpu_key(g.name, needs_catalog)
        canon[g.name] = key
        prices[key] = p
        if g.quota is not None:
            quotas[key] = int(g.quota)
    for o in options:
        o.gpu = canon.get(o.gpu, o.gpu)
        if o.decode_gpu:
            o.decode_gpu = canon.get(o.decode_gpu, o.decode_gpu)
    options = prune_cross_bundles(options, prices)
    demand_index, rows = [], []
    for mi, ld in enumerate(loads):
        rates = ld.rates_rps if len(ld.rates_rps) == T else np.repeat(ld.rates_rps, T)
        shares = ld.shares if ld.shares.shape[0] == T else np.repeat(ld.shares, T, axis=0)
        per_bucket = (shares * rates[:, None]).T  # [B, T]
        for b in np.nonzero(per_bucket.max(axis=1) > 0)[0]:
            demand_index.append((mi, int(b)))
            rows.append(per_bucket[b])
    return FleetProblem(req, loads, options, prices, quotas, np.asarray(rows),
                        demand_index, np.full(T, 1.0 / T), period_s, file)


def cover_problem(fp: FleetProblem, option_mask: np.ndarray | None = None,
                  rates: np.ndarray | None = None, reserved: bool = True,
                  routing: str | None = None, prune: bool = True
                  ) -> tuple[CoverProblem, list[int]]:
    """The covering problem over the options ``option_mask`` keeps (all by default) and
    ``(problem, keep)``: ``keep[c]`` is the index in ``fp.options`` of the problem's option
    ``c``.  ``rates`` replaces the load ([D, T] req/s), ``reserved`` offers the reserved price
    class, ``routing`` overrides the request's, ``prune`` drops dominated options and options
    with no capacity on any bucket."""
    req = fp.request
    keep = [j for j, _ in enumerate(fp.options) if option_mask is None or option_mask[j]]
    D = len(fp.demand_index)
    cap = np.zeros((D, len(keep)))
    for col, j in enumerate(keep):
        o = fp.options[j]
        for d, (mi, b) in enumerate(fp.demand_index):
            if o.model_index == mi:
                cap[d, col] = o.capacity[b]
    # a replica that serves none of its model's buckets within the SLOs is never deployed
    useful = cap.any(axis=0)
    keep, cap = [j for j, u in zip(keep, useful) if u], cap[:, useful]
    rates = fp.rates if rates is None else rates
    covers = []
    for j in keep:
        o = fp.options[j]
        by_type = o.gpus_by_type()
        # a class is offered when every GPU type the replica holds offers it
        classes = set.intersection(*(set(fp.prices[g]) for g in by_type))
        if not reserved:
            classes.discard("reserved")
        if req.spot.max_fraction <= 0:
            classes.discard("spot")
        parts = tuple((g, n, {c: fp.prices[g][c] * n for c in sorted(classes)})
                      for g, n in sorted(by_type.items()))
        prices = {c: sum(pr[c] for _, _, pr in parts) for c in sorted(classes)}
        covers.append(CoverOption(o.group_id, o.gpu, o.gpus, prices,
                                  parts if len(parts) > 1 else (),
                                  _start_cost(req, prices, rates.shape[1], fp.period_s)))
    T = rates.shape[1]
    if routing is None:
        routing = req.solver.routing
    problem = CoverProblem(covers, cap, rates, np.full(T, 1.0 / T), dict(fp.quotas),
                           req.spot.max_fraction if req.spot.max_fraction > 0 else None,
                           req.spot.capacity_factor, req.max_utilisation,
                           req.solver.slice_factor,
                           routing="per_period" if routing == "auto" else routing)
    if prune:
        # exact: a shape never faster than m smaller replicas of the same GPU at the same price
        # per GPU cannot improve the optimum
        dropped = set(dominated_options(problem))
        if dropped:
            cols = [c for c in range(len(keep)) if c not in dropped]
            problem = CoverProblem([covers[c] for c in cols], cap[:, cols], rates,
                                   problem.period_weights, problem.quotas,
                                   problem.spot_max_fraction, problem.spot_capacity_factor,
                                   problem.max_utilisation, problem.slices,
                                   routing=problem.routing)
            keep = [keep[c] for c in cols]
    if routing == "auto":  # by the size of the model the solver gets (after the pruning)
        columns = int((problem.capacity > 0).sum(axis=1) @ (rates > 0).sum(axis=1))
        if columns > AUTO_SHARED_COLUMNS and T > 1:
            problem.routing = "shared"
    return problem, keep


def _start_cost(req: FleetRequest, prices: dict[str, float], periods: int,
                period_s: float) -> float:
    """One replica start, in the cover's objective units ($/h over the horizon): its on-demand
    price (the dearest class where there is none) for ``scaling.start_cost_s``, spread over the
    horizon's hours."""
    if req.scaling.start_cost_s <= 0 or periods < 2 or not prices:
        return 0.0
    price = prices.get("on_demand", max(prices.values()))
    return price * req.scaling.start_cost_s / (periods * period_s)


def explain_unservable(fp: FleetProblem) -> None:
    """Raise an InfeasibleError naming the first bucket no option can serve and the SLO that
    fails for it."""
    for d, (mi, b) in enumerate(fp.demand_index):
        opts = [o for o in fp.options if o.model_index == mi]
        if any(o.capacity[b] > 0 for o in opts):
            continue
        entry = fp.request.models[mi]
        load = fp.loads[mi]
        i, j = divmod(b, load.hist.shares.shape[1])
        label = load.hist.grid.label(i, j)
        share = float(load.shares[:, b].max())
        size = f"{int(load.hist.input_len[i, j])} in / {int(load.hist.output_len[i, j])} out tokens"
        if not opts:
            raise InfeasibleError(
                f"model {entry.name or entry.model}: no candidate GPU shape fits the model",
                binding="memory", file=fp.file, field=f"models[{mi}]",
                expected="a GPU type with enough memory, a larger max_tp, or shapes with more "
                         "pipeline stages (without shapes the planner tries up to 8 nodes)")
        best = None
        for o in opts:
            det = o.details[b] if o.details and o.details[b] else None
            if det is None:
                continue
            ratio, slo_name = 0.0, det.get("binding", "slo")
            for key in ("tpot", "ttft", "e2e"):  # the target missed by the largest ratio
                lim = det.get(f"{key}_slo_s")
                if lim and det.get(f"{key}_s") is not None:
                    r = det[f"{key}_s"] / lim
                    if r > ratio:
                        ratio, slo_name = r, key
            if best is None or ratio < best[0]:
                best = (ratio, slo_name, o, det)
        if best is not None:
            ratio, slo_name, o, det = best
            slo_field = f"models[{mi}].slo.{slo_name}_s"
            closest = o.group_id.split("/", 1)[1] if o.roles else f"{o.gpu} tp{o.tp}-pp{o.pp}"
            raise InfeasibleError(
                f"model {entry.name or entry.model}: bucket {label} ({size}, share {share:.3g}) "
                f"cannot be served within the {slo_name.upper()} SLO by any candidate GPU; closest "
                f"is {closest} with {slo_name.upper()} {det[f'{slo_name}_s'] * 1e3:.1f} ms "
                f"against {det[f'{slo_name}_slo_s'] * 1e3:.1f} ms even for one request",
                binding=slo_name, file=fp.file, field=slo_field,
                expected=f"a looser {slo_name.upper()} SLO, faster GPUs, or larger TP")
        raise InfeasibleError(
            f"model {entry.name or entry.model}: bucket {label} ({size}, share {share:.3g}) has "
            f"zero throughput in every profile (cannot meet the SLO) or lies outside the profiled "
            f"sizes", binding="slo", file=fp.file, field=f"models[{mi}].profiles",
            expected="a profile with a positive rate for this bucket")


def explain_oversized(fp: FleetProblem) -> None:
    """Raise an InfeasibleError naming the first bucket whose peak load needs more instances
    of its fastest option than a pool may hold (``CoverProblem.max_instances``): numbers that
    large (a rate or a profile off by many orders of magnitude) are no plan, and the solver's
    numbers would overflow on them."""
    limit = CoverProblem.max_instances
    for d, (mi, b) in enumerate(fp.demand_index):
        fastest = max((o.capacity[b] for o in fp.options if o.model_index == mi), default=0.0)
        rate = float(fp.rates[d].max())
        if fastest <= 0 or rate <= limit * fastest * fp.request.max_utilisation:
            continue
        entry, load = fp.request.models[mi], fp.loads[mi]
        label = load.hist.grid.label(*divmod(b, load.hist.shares.shape[1]))
        raise InfeasibleError(
            f"model {entry.name or entry.model}: bucket {label} peaks at {rate:.3g} req/s, "
            f"which needs {rate / (fastest * fp.request.max_utilisation):.3g} instances of its "
            f"fastest option (at most {limit:,} per pool)", binding="load", file=fp.file,
            field=f"models[{mi}].workload",
            expected="a rate (and rate_scale) and profiled capacities in requests per second")


def solve_fleet_cover(fp: FleetProblem, problem: CoverProblem, time_limit_s: float
                      ) -> CoverSolution:
    """``problem`` solved with the request's gap and worker settings."""
    return solve_cover(problem, time_limit_s=time_limit_s, gap_rel=fp.request.solver.gap_rel,
                       workers=parallel_workers(fp.request.solver.workers))


def _quota_error(fp: FleetProblem, problem: CoverProblem, time_limit_s: float) -> InfeasibleError:
    short = quota_shortfall(problem, time_limit_s=time_limit_s)
    if not short:
        return InfeasibleError("no fleet meets the load within the quotas", binding="quota",
                               file=fp.file, field="gpus[].quota")
    per_gpu: dict[str, int] = {}
    for (g, _t), n in short.items():
        per_gpu[g] = max(per_gpu.get(g, 0), n)
    worst_t = max(short, key=lambda k: short[k])[1]
    parts = ", ".join(f"{g} +{n} GPUs (quota {fp.quotas.get(g)})" for g, n in sorted(per_gpu.items()))
    return InfeasibleError(
        f"quotas too small: the load needs at least {sum(per_gpu.values())} more GPUs: {parts}"
        + (f" (tightest in period {worst_t})" if problem.shape[2] > 1 else ""),
        binding="quota", file=fp.file, field="gpus[].quota",
        expected="larger quotas, more GPU types, or a looser SLO")


def solve_problem(fp: FleetProblem, *, time_limit_s: float | None = None
                  ) -> tuple[CoverProblem, list[int], CoverSolution]:
    """Solve the main problem, explaining infeasibility."""
    explain_unservable(fp)
    limit = time_limit_s or fp.request.solver.time_limit_s
    explain_oversized(fp)
    problem, keep = cover_problem(fp)
    try:
        sol = solve_fleet_cover(fp, problem, limit)
    except CoverInfeasible as exc:
        if fp.quotas and exc.result.status == "infeasible":
            raise _quota_error(fp, problem, min(limit, 10.0)) from None
        raise InfeasibleError(f"the solver found no fleet ({exc.result.status}) within "
                              f"{limit:g} s", binding="time_limit", file=fp.file,
                              field="solver.time_limit_s", expected="a longer time limit") from None
    return problem, keep, sol
