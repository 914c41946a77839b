"""A fleet plan replayed through the iteration-level serving simulator: does each pool meet its
SLOs at their percentiles under bursty arrivals and the real mix of request lengths?

The capacities the plan was sized with (:mod:`.capacity`) take one bucket's requests at a time
and add a pool's buckets linearly.  Here every period of the plan is replayed with its mix:

* arrivals: a Poisson process at the period's rate (req/s) over ``window_s`` seconds;
* each request's bucket drawn from the period's bucket shares; its lengths drawn from the
  trace's own requests in that bucket (a histogram workload has only its buckets'
  representative lengths, the upper edges);
* routing: each request goes to a pool group with the period's routing shares of its bucket,
  and round-robin over the group's replicas (and a replica's pipeline lanes);
* each simulated replica runs :func:`costmodels.batching.simulate` (vLLM-like continuous
  batching with chunked prefill, KV admission and preemption) with the engine settings the plan
  deploys (``engine.max_num_seqs``; a token budget of ``TOKEN_BUDGET`` per iteration, which a
  simulated plan's engines then carry as ``max_num_batched_tokens``).

The first ``WARMUP_SHARE`` of the window is dropped (the engine starts empty).  Percentiles use
the simulator's convention (``numpy`` 'higher').  Pools sized from measured profiles and
prefill / decode bundles are listed as not simulated, with the reason.  Deterministic for a seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner import workload as wl
from planner.fleet.problem import FleetProblem, _model_name
from planner.fleet.request import SLO_KEYS

#: seconds of each period replayed (the period itself when shorter)
DEFAULT_WINDOW_S = 300.0
#: share of the window dropped as warm-up
WARMUP_SHARE = 0.1
#: tokens per engine iteration (vLLM's ``--max-num-batched-tokens``, the chunked-prefill
#: budget) in the simulation; a simulated plan's engines carry it so they are deployed that way
TOKEN_BUDGET = 8192
#: vLLM's default ``--max-num-seqs``, for a pool whose plan sets none
DEFAULT_MAX_NUM_SEQS = 256
#: replicas of one pool group simulated per period: round-robin gives each the same stream in
#: distribution, so more add samples, not information
MAX_REPLICAS_SIMULATED = 4


@dataclass
class _Requests:
    """One model's simulated arrivals in one period (seconds, tokens, bucket index)."""

    arrival_s: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray
    bucket: np.ndarray


def _bucket_pools(plan: dict[str, Any], model: str, labels: list[str], period: int,
                  periods: int) -> list[dict[str, float]]:
    """Routing shares (group -> share) of each bucket of ``model`` in ``period``."""
    out: list[dict[str, float]] = [{} for _ in labels]
    where = {label: b for b, label in enumerate(labels)}
    for r in plan["routing"]:
        if r["model"] != model:
            continue
        shares = r["pools_by_period"][period] if periods > 1 and "pools_by_period" in r else r["pools"]
        out[where[r["bucket"]["label"]]] = dict(shares)
    return out


def _lengths_by_bucket(fp: FleetProblem, mi: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The trace's (input, output) lengths per bucket of model ``mi``; None for a histogram."""
    w = fp.request.models[mi].workload
    if w.trace is None:
        return None
    trace = wl.read_trace(w.trace, fmt=w.format)
    grid = fp.loads[mi].hist.grid
    b = wl.bucket_index(trace.input_tokens, grid.input_edges) * grid.shape[1] + \
        wl.bucket_index(trace.output_tokens, grid.output_edges)
    ins, outs = trace.input_tokens.astype(np.int64), trace.output_tokens.astype(np.int64)
    return [(ins[b == k], outs[b == k]) for k in range(grid.shape[0] * grid.shape[1])]


def _arrivals(rng: np.random.Generator, rate_rps: float, window_s: float, shares: np.ndarray,
              rep_in: np.ndarray, rep_out: np.ndarray,
              by_bucket: list[tuple[np.ndarray, np.ndarray]] | None) -> _Requests:
    n = int(rng.poisson(rate_rps * window_s))
    arrival = np.sort(rng.uniform(0.0, window_s, n))
    p = shares / shares.sum() if shares.sum() > 0 else np.full(len(shares), 1.0 / len(shares))
    bucket = rng.choice(len(shares), size=n, p=p)
    ins = rep_in[bucket].astype(np.int64)
    outs = rep_out[bucket].astype(np.int64)
    if by_bucket is not None:
        for k in np.unique(bucket):
            pick = bucket == k
            b_in, b_out = by_bucket[k]
            if len(b_in):
                j = rng.integers(0, len(b_in), int(pick.sum()))
                ins[pick], outs[pick] = b_in[j], b_out[j]
    return _Requests(arrival, np.maximum(ins, 1), np.maximum(outs, 1), bucket)


def _route(rng: np.random.Generator, req: _Requests, shares: list[dict[str, float]]
           ) -> tuple[np.ndarray, list[str]]:
    """Group index per request into the sorted group names (returned too); -1 where the
    bucket is routed nowhere."""
    names = sorted({g for s in shares for g in s})
    dest = np.full(len(req.arrival_s), -1, dtype=np.int64)
    u = rng.random(len(req.arrival_s))
    for k in np.unique(req.bucket):
        s = shares[k]
        if not s:
            continue
        keys = sorted(s)
        cum = np.cumsum([s[g] for g in keys])
        pick = req.bucket == k
        idx = np.minimum(np.searchsorted(cum / cum[-1], u[pick], side="right"), len(keys) - 1)
        dest[pick] = np.array([names.index(g) for g in keys])[idx]
    return dest, names


class _Engines:
    """What replays of one problem share, built once: iteration-cost tables and engine limits
    per (model, GPU, shape, max_num_seqs), and each model's trace lengths per bucket."""

    def __init__(self, fp: FleetProblem) -> None:
        self.fp = fp
        self.cache: dict[tuple, Any] = {}
        self._lengths: dict[int, list[tuple[np.ndarray, np.ndarray]] | None] = {}

    def lengths(self, mi: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """:func:`_lengths_by_bucket` of model ``mi``, the trace read once."""
        if mi not in self._lengths:
            self._lengths[mi] = _lengths_by_bucket(self.fp, mi)
        return self._lengths[mi]

    def get(self, mi: int, gpu: str, tp: int, pp: int, max_num_seqs: int):
        key = (mi, gpu, tp, pp, max_num_seqs)
        if key not in self.cache:
            from costmodels.model import load_model
            from hardware.catalog import get_accelerator
            from hardware.topology import Cluster
            from planner.parallel import Pool, SearchSpec, Shape, _default_node, build_shape_model

            entry = self.fp.request.models[mi]
            accel = get_accelerator(gpu)
            node = _default_node(accel)
            pool = Pool(accel, node, Cluster(node, max(1, math.ceil(tp * pp / node.gpus_per_node)),
                                             accel.scale_up), 1.0)
            self.cache[key] = build_shape_model(
                load_model(entry.source), pool, Shape(accel.name, tp, pp),
                dtype=entry.dtype or "bf16", kv_dtype=entry.kv_dtype,
                search=SearchSpec(max_num_seqs=max_num_seqs, max_num_batched_tokens=TOKEN_BUDGET),
                phase="both")
        return self.cache[key]


def _targets(fp: FleetProblem, mi: int) -> list[tuple[str, float, float]]:
    """(metric, percentile, limit s) of every SLO target of model ``mi``."""
    slo = fp.request.models[mi].slo
    return [(k[:-2], slo.percentile_of(k), getattr(slo, k)) for k in SLO_KEYS if getattr(slo, k) is not None]


def _replay_group(sm, req: _Requests, sel: np.ndarray, replicas: int, warm_s: float
                  ) -> dict[str, np.ndarray]:
    """Simulated TTFT / TPOT / e2e (s) of the requests ``sel`` over ``replicas`` round-robin
    replicas (the first MAX_REPLICAS_SIMULATED of them), after the warm-up."""
    from costmodels.batching import Trace, simulate

    out: dict[str, list[np.ndarray]] = {"ttft": [], "tpot": [], "e2e": []}
    for r in range(min(replicas, MAX_REPLICAS_SIMULATED)):
        mine = sel[r::replicas]
        for lane in range(sm.lanes):
            s = mine[lane::sm.lanes]
            if not len(s):
                continue
            res = simulate(Trace(req.arrival_s[s], req.input_len[s], req.output_len[s]), sm.cost, sm.limits)
            kept = req.arrival_s[s] >= warm_s
            out["ttft"].append(res.ttft_s[kept])
            out["tpot"].append(res.tpot_s[kept & (req.output_len[s] > 1)])
            out["e2e"].append((res.finish_s - req.arrival_s[s])[kept])
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


@dataclass
class _Stream:
    """One pool group's simulated requests in its worst period, kept to search its load factor."""

    engine: Any
    requests: _Requests
    selected: np.ndarray
    replicas: int
    targets: list[tuple[str, float, float]]
    warm_s: float
    #: the group's load in that period in replicas' worth of capacity (sum over its requests of
    #: 1 / capacity of their bucket, per second) over its replicas: the planned utilisation
    utilisation: float


def _measure(lat: dict[str, np.ndarray], targets: list[tuple[str, float, float]]
             ) -> list[dict[str, Any]]:
    from costmodels.batching import percentile

    out = []
    for metric, q, limit in targets:
        value = percentile(lat[metric], q) if len(lat[metric]) else 0.0
        out.append({"metric": f"{metric}_s", "percentile": q, "slo_s": limit,
                    "simulated_s": value if math.isfinite(value) else None, "ratio": value / limit})
    return out


def _simulate(fp: FleetProblem, plan: dict[str, Any], window_s: float, seed: int,
              engines: _Engines | None = None) -> tuple[dict[str, Any], dict[str, _Stream]]:
    """The ``simulation`` section of ``plan`` and each simulated group's worst-period stream
    (``engines``: tables built by an earlier call on the same problem)."""
    rng = np.random.default_rng(seed)
    periods = plan.get("periods") or []
    T = max(1, len(periods))
    window = min(window_s, fp.period_s) if T > 1 else window_s
    engines = engines or _Engines(fp)
    by_group: dict[str, list[dict[str, Any]]] = {}
    for p in plan["pools"]:
        by_group.setdefault(p["group"], []).append(p)
    options = {o.group_id: o for o in fp.options}
    skipped: dict[str, str] = {}
    for g, ps in by_group.items():
        if g not in options or options[g].roles:
            skipped[g] = "a prefill / decode bundle (the simulator runs aggregated replicas)"
        elif not options[g].source.startswith("cost-model"):
            skipped[g] = "sized from a measured profile, not from the cost model"
    results: dict[str, dict[str, Any]] = {}
    streams: dict[str, _Stream] = {}
    unrouted: dict[str, int] = {}
    for mi in range(len(fp.request.models)):
        name = _model_name(fp.request, mi)
        ld = fp.loads[mi]
        grid = ld.hist.grid
        labels = [grid.label(i, j) for i in range(grid.shape[0]) for j in range(grid.shape[1])]
        by_bucket = engines.lengths(mi)
        targets = _targets(fp, mi)
        for t in range(T):
            rate = float(ld.rates_rps[min(t, len(ld.rates_rps) - 1)])
            req = _arrivals(rng, rate, window, ld.shares[min(t, len(ld.shares) - 1)],
                            ld.hist.input_len.ravel(), ld.hist.output_len.ravel(), by_bucket)
            dest, names = _route(rng, req, _bucket_pools(plan, name, labels, t, T))
            if (dest < 0).any():  # a bucket with load the plan routes nowhere: it is wrong
                unrouted[name] = unrouted.get(name, 0) + int((dest < 0).sum())
            for gi, g in enumerate(names):
                if g in skipped or g not in by_group:
                    continue
                ps = by_group[g]
                sel = np.nonzero(dest == gi)[0]
                if not len(sel):
                    continue
                replicas = sum(p["counts_by_period"][t] if T > 1 else p["count"] for p in ps)
                entry = results.setdefault(g, {"group": g, "model": name, "gpu": ps[0]["gpu"],
                                               "shape": dict(ps[0]["shape"]), "periods_missed": [],
                                               "requests": 0})
                if replicas < 1:  # routed where no replica runs: the plan itself is wrong
                    entry["periods_missed"].append(t)
                    entry.setdefault("periods_without_replicas", []).append(t)
                    continue
                sm = engines.get(mi, ps[0]["gpu"], ps[0]["shape"]["tp"], ps[0]["shape"]["pp"],
                                 int(ps[0]["engine"].get("max_num_seqs") or DEFAULT_MAX_NUM_SEQS))
                warm = WARMUP_SHARE * window
                measured = _measure(_replay_group(sm, req, sel, replicas, warm), targets)
                entry["requests"] += int(np.count_nonzero(req.arrival_s[sel] >= warm))
                worst = max(m["ratio"] for m in measured)
                if worst > 1.0:
                    entry["periods_missed"].append(t)
                if "worst_period" not in entry or worst > entry["_ratio"]:
                    with np.errstate(divide="ignore"):
                        per_request = 1.0 / options[g].capacity[req.bucket[sel]]
                    util = float(per_request.sum()) / window / replicas
                    entry.update({"_ratio": worst, "worst_period": t,
                                  "rate_rps": len(sel) / window, "replicas": replicas,
                                  "planned_utilisation": util,
                                  "targets": [{k: v for k, v in m.items() if k != "ratio"}
                                              for m in measured]})
                    streams[g] = _Stream(sm, req, sel, replicas, targets, warm, util)
    groups = []
    for g in sorted(results):
        e = results[g]
        e.pop("_ratio", None)
        e["meets_slo"] = not e["periods_missed"]
        groups.append(e)
    section = {
        "method": "iteration-level continuous batching (costmodels.batching.simulate) with the "
                  f"engine settings the plan deploys ({TOKEN_BUDGET} tokens per iteration); "
                  "Poisson arrivals at each period's rate, the period's bucket mix, lengths drawn from the trace's requests of each bucket (a "
                  "histogram's bucket representatives); the period's routing shares, round-robin "
                  "over replicas; a target met when its simulated percentile over the pool's "
                  "requests is within it",
        "seed": seed,
        "window_s": window,
        "warmup_s": WARMUP_SHARE * window,
        "periods": T,
        # None: nothing could be simulated (every pool from a measured profile or a bundle)
        "meets_slo": (all(e["meets_slo"] for e in groups) and not unrouted) if groups else None,
        "groups": groups,
        "not_simulated": [{"group": g, "why": why} for g, why in sorted(skipped.items())],
    }
    if unrouted:
        section["requests_unrouted"] = dict(sorted(unrouted.items()))
    return section, streams


def simulate_plan(fp: FleetProblem, plan: dict[str, Any], *, window_s: float = DEFAULT_WINDOW_S,
                  seed: int = 0) -> dict[str, Any]:
    """Replay every period of ``plan`` (a FleetPlan of ``fp``) through the serving simulator.

    Returns the plan's ``simulation`` section: per pool group, the simulated percentile (s) of
    each SLO target in its worst period (the largest ratio to its target), the periods where a
    target is missed, the requests simulated after warm-up, and the groups not simulated with
    the reason.  ``window_s``: seconds replayed per period (the period when shorter); ``seed``:
    the random stream (the same seed gives the same section).
    """
    return _simulate(fp, plan, window_s, seed)[0]


#: plans made at most: plan -> replay -> correct the contradicted capacities -> re-plan
MAX_ROUNDS = 8
#: a scaled capacity sits this far inside the largest load that met the targets: a percentile
#: over a few thousand simulated requests moves by a few percent with the sample, and the
#: re-made plan (another mix, other replica counts) must not land on the boundary again
LOAD_FACTOR_MARGIN = 0.95
#: bisection steps on a group's load factor (on its logarithm: ~1.5% resolution over 1-4x)
LOAD_FACTOR_STEPS = 7
#: below this share of its planned load a group that still misses is taken as unable to serve
MIN_LOAD_FACTOR = 0.02
#: the most a group's capacity is raised by in one step where it meets its targets with room
MAX_LOAD_FACTOR = 4.0
#: a capacity factor within this much of 1 is left alone (simulation noise)
FACTOR_DEADBAND = 0.05


def _meets_at(stream: _Stream, factor: float) -> bool:
    """Does the group meet its targets with its requests arriving ``factor`` times as fast
    (arrival times divided by ``factor``; the same replicas)?"""
    req = stream.requests
    faster = _Requests(req.arrival_s / factor, req.input_len, req.output_len, req.bucket)
    lat = _replay_group(stream.engine, faster, stream.selected, stream.replicas, stream.warm_s / factor)
    return all(m["ratio"] <= 1.0 for m in _measure(lat, stream.targets))


def load_factor(stream: _Stream) -> float:
    """Largest factor (``MIN_LOAD_FACTOR``..``MAX_LOAD_FACTOR``) on a group's simulated arrival
    rate at which it meets its SLO targets, by bisection; 0 when even ``MIN_LOAD_FACTOR``
    misses."""
    if _meets_at(stream, 1.0):
        lo, hi = 1.0, MAX_LOAD_FACTOR
        if _meets_at(stream, hi):
            return hi
    else:
        lo, hi = MIN_LOAD_FACTOR, 1.0
        if not _meets_at(stream, lo):
            return 0.0
    for _ in range(LOAD_FACTOR_STEPS):
        mid = math.sqrt(lo * hi)  # factors are ratios: bisect on their logarithm
        lo, hi = (mid, hi) if _meets_at(stream, mid) else (lo, mid)
    return lo


def plan_with_simulation(fp: FleetProblem, *, time_limit_s: float | None = None, inputs: Any = None,
                         window_s: float = DEFAULT_WINDOW_S, seed: int = 0,
                         rounds: int = MAX_ROUNDS) -> dict[str, Any]:
    """Plan, replay the plan in the simulator, correct the capacities of the pool groups the
    replay contradicts, re-plan; at most ``rounds`` plans.

    A group's correction is ``LOAD_FACTOR_MARGIN`` x (the factor on its simulated arrival rate
    at which it just meets its SLO targets, :func:`load_factor`) x its planned utilisation,
    applied to its option's capacity on every bucket.  After the first plan every group is
    corrected (up where the cost model left room, down where it promised too much); after
    later plans only groups that miss, and only down, so the loop ends.  The returned plan
    carries ``simulation`` (:func:`simulate_plan`'s section of the last plan, with ``rounds``,
    the ``capacity_factors`` applied per group and each plan's ``cost_per_hour_by_round``).
    ``time_limit_s`` holds for each solve.  Baselines (single GPU type, peak provisioning) are
    priced with the same corrected capacities.

    Raises:
        InfeasibleError: the first plan cannot be made (as :func:`plan_from_problem`).
    """
    from hardware.errors import InfeasibleError
    from planner.fleet.assemble import plan_from_problem

    options = {o.group_id: o for o in fp.options}
    factors: dict[str, float] = {}
    plan = plan_from_problem(fp, time_limit_s=time_limit_s, inputs=inputs)
    costs = [plan["cost_per_hour"]]
    engines = _Engines(fp)
    stop = None
    kept = None  # the cheapest plan whose replay met every target, with its section
    for r in range(1, rounds + 1):
        section, streams = _simulate(fp, plan, window_s, seed, engines)
        section["rounds"] = r
        if section["meets_slo"] and (kept is None or plan["cost_per_hour"] < kept[0]["cost_per_hour"]):
            kept = (plan, section)
        if r == rounds:
            break
        changed = False
        for g in section["groups"]:
            s = streams.get(g["group"])
            if s is None or (r > 1 and g["meets_slo"]):
                continue
            factor = LOAD_FACTOR_MARGIN * load_factor(s) * min(1.0, s.utilisation)
            if g["meets_slo"] and factor < 1.0 + FACTOR_DEADBAND:
                continue  # it holds: no cut for a group the replay did not contradict
            factors[g["group"]] = factors.get(g["group"], 1.0) * factor
            o = options[g["group"]]
            o.capacity[:] = o.capacity * factor
            changed = True
        if not changed:
            break
        try:
            plan = plan_from_problem(fp, time_limit_s=time_limit_s, inputs=inputs)
            costs.append(plan["cost_per_hour"])
        except InfeasibleError as exc:
            stop = f"no plan with the corrected capacities: {exc}"
            break
    if not section["meets_slo"] and kept is not None:  # a raise went too far: the plan that held
        plan, section = kept[0], {**kept[1], "rounds": section["rounds"]}
    simulated = {g["group"] for g in section["groups"]}
    for p in plan["pools"]:  # deploy the engines as they were simulated
        if p["group"] in simulated:
            p["engine"]["max_num_batched_tokens"] = TOKEN_BUDGET
    section["capacity_factors"] = {g: factors[g] for g in sorted(factors)}
    section["cost_per_hour_by_round"] = costs
    if stop is not None:
        section["stopped"] = stop
    plan["simulation"] = section
    return plan
