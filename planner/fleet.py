"""Fleet planner: the cheapest GPU mix, TP/PP shapes and routing that meet latency SLOs.

Request (YAML / JSON / Python) -> capacity table per (model, GPU type, shape, bucket) from
measured profiles (Mélange JSON, AIBrix GPU-optimizer profiles) or the serving cost model ->
:mod:`solvers.binpack` covering MILP (integer counts per option and price class, reserved held
over the horizon, on-demand / spot per period, quotas, spot cap) -> a ``FleetPlan``.

Stable plan fields read by pipelines: ``cost_per_hour``, ``pools`` (each with ``gpu``,
``count``, ``shape``, ``price_class``), ``routing``, ``solver`` (``status``, ``objective``,
``bound``, ``gap``, ``time_s``) and ``baseline_single_gpu``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hardware.errors import InfeasibleError, InputError, from_validation_error
from planner import workload as wl
from planner.plan import envelope, read_structured
from solvers.binpack import (CoverInfeasible, CoverOption, CoverProblem, CoverSolution,
                             dominated_options, parallel_workers, quota_shortfall,
                             solve_cover, start_cost_of, starts_of)

#: shapes tried per GPU type when the request names none (TP within one node, PP 1)
DEFAULT_TPS = (1, 2, 4, 8)
#: above this many routing columns (demands x options x periods) "auto" shares one routing
#: table over all periods, which keeps the model T times smaller.  Per-period routing is the
#: better plan (each period re-routes: on the 20 x 20-bucket, 24-period scale benchmark it is
#: ~5% cheaper than the best shared plan) and large per-period models are solved by the
#: LP-bound + per-period-rounding decomposition (solvers.cover_periods._solve_by_periods: 415k
#: columns in ~20 s on 2 cores), so only beyond this size does "auto" share
AUTO_SHARED_COLUMNS = 600_000


# ------------------------------------------------------------------------------------ the request

class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SLOSpec(_Spec):
    """Latency targets; ``percentile`` picks each bucket's representative request size from a
    trace (the p-th percentile of its requests' lengths)."""

    ttft_s: float | None = Field(None, gt=0)
    tpot_s: float | None = Field(None, gt=0)
    e2e_s: float | None = Field(None, gt=0)
    percentile: float = Field(90.0, gt=0, le=100)


class ShapeSpec(_Spec):
    tp: int = Field(1, ge=1, le=64)
    pp: int = Field(1, ge=1, le=64)


class ProfileSpec(_Spec):
    """A measured capacity table for one GPU type (and shape)."""

    gpu: str
    file: str
    format: Literal["auto", "aibrix", "melange"] = "auto"
    key: str | None = Field(None, description="gpu_info key inside a Mélange config")
    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)


class HistogramSpec(_Spec):
    input_edges: list[float]
    output_edges: list[float]
    shares: list[list[float]]


class WorkloadSpec(_Spec):
    """One model's load: a trace, or a histogram with a rate (or a rate series)."""

    trace: str | None = None
    format: Literal["auto", "azure", "burstgpt", "jsonl"] = "auto"
    histogram: HistogramSpec | None = None
    rate_rps: float | list[float] | None = None
    period_s: float = Field(3600.0, gt=0)
    rate_scale: float = Field(1.0, gt=0)
    input_edges: list[float] | None = None
    output_edges: list[float] | None = None
    normalise_shares: bool = False
    periods: Literal["series", "peak", "mean"] = "series"


class ModelEntry(_Spec):
    name: str | None = None
    model: str
    workload: WorkloadSpec
    slo: SLOSpec = SLOSpec()
    profiles: list[ProfileSpec] = []
    serve_model: str | None = Field(None, description="Hugging Face id used by emitted commands")
    dtype: str = "bf16"
    kv_dtype: str | None = None
    max_num_seqs: int | None = Field(None, ge=1)
    disaggregation: Literal["off", "auto", "same_gpu"] = Field("off", description=(
        "auto: also offer prefill/decode disaggregated bundles (a ratio of prefill to decode "
        "instances, KV moved between them), chosen jointly with the mix: on one GPU type, or "
        "prefill on one type and decode on another of the same vendor; same_gpu: one GPU type "
        "per bundle only"))


class GPUEntry(_Spec):
    name: str
    price_per_hour: float | None = Field(None, gt=0)
    reserved_price_per_hour: float | None = Field(None, gt=0)
    spot_price_per_hour: float | None = Field(None, gt=0)
    quota: int | None = Field(None, ge=0, description="GPUs of this type available")
    shapes: list[ShapeSpec] | None = None
    max_tp: int = Field(8, ge=1)


class SpotSpec(_Spec):
    max_fraction: float = Field(0.0, ge=0, le=1, description="largest share on spot of the GPUs each period's load needs when served the cheapest way on demand")
    capacity_factor: float = Field(1.0, gt=0, le=1,
                                   description="share of spot capacity counted on (interruptions)")


class SolverSpec(_Spec):
    time_limit_s: float = Field(30.0, gt=0)
    slice_factor: int | None = Field(None, ge=1)
    routing: Literal["auto", "per_period", "shared"] = "auto"
    gap_rel: float = Field(1e-6, ge=0, lt=1)
    baseline: bool = True
    workers: int | None = Field(None, ge=1, description=(
        "processes for the per-period solves of large multi-period problems "
        "(default: one per available core, at most 4)"))
    break_even: bool = Field(False, description=(
        "also find, per GPU type, the price at which it enters or leaves the cheapest plan "
        "(a few more MILPs per type)"))
    slo_factors: list[float] = Field(default_factory=list, description=(
        "also plan with every SLO multiplied by each factor (0.8 = 20% tighter) and report "
        "the cost: what a tighter or looser SLO costs (capacities recomputed per factor)"))

    @field_validator("slo_factors")
    @classmethod
    def _factors(cls, v: list[float]) -> list[float]:
        if any(not (0 < f <= 10) for f in v):
            raise ValueError("SLO factors must be in (0, 10]")
        return sorted(set(v))


class ScalingSpec(_Spec):
    start_cost_s: float = Field(0.0, ge=0, le=86_400, description=(
        "seconds of a replica's price each start costs (it loads weights before it serves; "
        "e.g. 600): the plan then keeps a pool up through a short dip when restarting it "
        "costs more; starts are counted as if the horizon repeated (a day); 0 = free"))


class FleetRequest(_Spec):
    """A fleet planning request (the YAML file's content)."""

    models: list[ModelEntry] = Field(min_length=1)
    gpus: list[GPUEntry] = Field(min_length=1)
    spot: SpotSpec = SpotSpec()
    scaling: ScalingSpec = ScalingSpec()
    solver: SolverSpec = SolverSpec()
    max_utilisation: float = Field(1.0, gt=0, le=1)

    @field_validator("models")
    @classmethod
    def _unique(cls, v: list[ModelEntry]) -> list[ModelEntry]:
        names = [m.name or m.model for m in v]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique (set 'name' to tell them apart)")
        return v


def _validation_error(exc: ValidationError, file: str | None) -> InputError:
    """A malformed request as one :class:`InputError` (field path and the value given, as for
    every planner: :func:`hardware.errors.from_validation_error`)."""
    extra = exc.errors()[0]["type"] == "extra_forbidden"
    return from_validation_error(
        exc, file=file,
        expected="only the fields documented in examples/fleet_request.yaml" if extra else None)


def load_request(path: str | Path) -> FleetRequest:
    """Read and validate a request file; relative paths inside it are relative to the file."""
    path = Path(path)
    data = read_structured(path, what="fleet request")
    if not isinstance(data, dict):
        raise InputError("the request is not a mapping", file=str(path),
                         expected="a YAML object with models and gpus")
    try:
        req = FleetRequest.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, str(path)) from None
    base = path.resolve().parent
    for m in req.models:
        if m.workload.trace and not Path(m.workload.trace).is_absolute():
            m.workload.trace = str(base / m.workload.trace)
        for p in m.profiles:
            if not Path(p.file).is_absolute():
                p.file = str(base / p.file)
    return req


# -------------------------------------------------------------------------------- workloads

@dataclass
class ModelLoad:
    """One model's load after reading: bucket histogram and per-period rates.

    ``shares[t]`` is the bucket share in period t (a trace's own mix per period, or the fixed
    histogram); ``rates_rps[t]`` the total rate; ``mean_tokens`` the mean input + output tokens
    per request (for $ per million tokens)."""

    hist: wl.Histogram
    rates_rps: np.ndarray
    shares: np.ndarray  # [T, I*J]
    period_s: float
    mean_tokens: float
    summary: dict[str, Any]


def _field(i: int, name: str) -> str:
    return f"models[{i}].workload.{name}"


def build_load(entry: ModelEntry, index: int, file: str | None = None) -> ModelLoad:
    """Read the workload of one model entry."""
    w = entry.workload
    if (w.trace is None) == (w.histogram is None):
        raise InputError("give exactly one of trace or histogram", file=file,
                         field=_field(index, "trace"), expected="a trace file or a histogram")
    if w.trace is not None:
        trace = wl.read_trace(w.trace, fmt=w.format)
        grid = wl.default_grid(trace)
        if w.input_edges or w.output_edges:
            grid = wl.BucketGrid(tuple(map(float, w.input_edges or grid.input_edges)),
                                 tuple(map(float, w.output_edges or grid.output_edges)))
            # the edges must cover the trace, or long requests would hide in the last bucket
            if grid.input_edges[-1] < trace.input_tokens.max() or \
                    grid.output_edges[-1] < trace.output_tokens.max():
                grid = wl.BucketGrid(grid.input_edges[:-1] + (max(grid.input_edges[-1], float(trace.input_tokens.max())),),
                                     grid.output_edges[:-1] + (max(grid.output_edges[-1], float(trace.output_tokens.max())),))
        hist = wl.histogram(trace, grid, percentile=entry.slo.percentile)
        if w.rate_rps is not None:
            rates = wl.check_rates(w.rate_rps, file=file, field=_field(index, "rate_rps"))
            shares = np.tile(hist.shares.ravel(), (len(rates), 1))
        else:
            rates = wl.rate_series(trace, w.period_s) * w.rate_scale
            masks = wl.period_masks(trace, w.period_s)
            shares = np.stack([
                wl.histogram(trace, grid, mask=mk).shares.ravel() if mk.any() else hist.shares.ravel()
                for mk in masks])
        mean_tokens = float((trace.input_tokens + trace.output_tokens).mean())
        summary = {"trace": Path(w.trace).name, **wl.summarise(trace, min(w.period_s, 60.0))}
    else:
        h = w.histogram
        hist = wl.histogram_from_shares(h.shares, h.input_edges, h.output_edges,
                                        normalise=w.normalise_shares, file=file,
                                        field=_field(index, "histogram.shares"))
        if w.rate_rps is None:
            raise InputError("a histogram needs a rate", file=file, field=_field(index, "rate_rps"),
                             expected="requests per second, or a list of them per period")
        rates = wl.check_rates(w.rate_rps, file=file, field=_field(index, "rate_rps")) * w.rate_scale
        shares = np.tile(hist.shares.ravel(), (len(rates), 1))
        mid_in = (np.asarray(hist.grid.input_edges[:-1]) + np.asarray(hist.grid.input_edges[1:])) / 2
        mid_out = (np.asarray(hist.grid.output_edges[:-1]) + np.asarray(hist.grid.output_edges[1:])) / 2
        mean_tokens = float((hist.shares * (mid_in[:, None] + mid_out[None, :])).sum())
        summary = {"histogram_buckets": list(hist.grid.shape)}
    if w.periods == "peak" and len(rates) > 1:
        t = int(np.argmax(rates))
        rates, shares = rates[t:t + 1], shares[t:t + 1]
    elif w.periods == "mean" and len(rates) > 1:
        shares = (shares * rates[:, None]).sum(axis=0, keepdims=True) / rates.sum()
        rates = np.array([rates.mean()])
    summary["rates_rps"] = [float(r) for r in rates]
    return ModelLoad(hist, np.asarray(rates, dtype=float), shares, w.period_s, mean_tokens, summary)


# --------------------------------------------------------------------------- capacity tables

@dataclass(frozen=True)
class ProfileTable:
    """A measured max-rate table: ``tputs[out_idx][in_idx]`` at tick lengths (AIBrix layout)."""

    output_ticks: tuple[float, ...]
    input_ticks: tuple[float, ...]
    tputs: np.ndarray  # [len(output_ticks), len(input_ticks)], req/s; 0 = cannot serve
    cost: float | None
    source: str

    def lookup(self, input_len: float, output_len: float) -> float:
        """Rate for a request size: the table cell at the smallest ticks >= the lengths (a
        longer request never gets a shorter request's capacity); 0 beyond the table."""
        i = int(np.searchsorted(self.input_ticks, input_len - 1e-9))
        o = int(np.searchsorted(self.output_ticks, output_len - 1e-9))
        if i >= len(self.input_ticks) or o >= len(self.output_ticks):
            return 0.0
        return float(self.tputs[o, i])


def _tputs(raw: Any, file: str, field: str) -> np.ndarray:
    try:
        arr = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        raise InputError("throughputs are not a grid of numbers", file=file, field=field,
                         expected="a list of rows of req/s") from None
    if arr.ndim != 2 or arr.size == 0:
        raise InputError("throughputs are not a 2-D grid", file=file, field=field,
                         expected="a list of rows of req/s")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise InputError("throughputs must be finite and >= 0", file=file, field=field,
                         expected="req/s >= 0 (0 means cannot meet the SLO)")
    return arr


def load_profile(spec: ProfileSpec) -> ProfileTable | np.ndarray:
    """An AIBrix profile as a :class:`ProfileTable`, or a Mélange ``tputs`` grid (aligned with
    the request's histogram) as an array."""
    data = read_structured(spec.file, what="capacity profile")
    file = spec.file
    if not isinstance(data, dict):
        raise InputError("profile is not a JSON object", file=file, expected="{gpu, tputs, indexes}")
    fmt = spec.format
    if fmt == "auto":
        fmt = "melange" if "gpu_info" in data else "aibrix"
    if fmt == "melange":
        info = data.get("gpu_info")
        key = spec.key or spec.gpu
        if not isinstance(info, dict) or key not in info:
            raise InputError(f"no gpu_info entry {key!r}", file=file, field="gpu_info",
                             expected=f"one of {sorted(info) if isinstance(info, dict) else []}")
        return _tputs(info[key].get("tputs"), file, f"gpu_info.{key}.tputs")
    if "tputs" not in data or "indexes" not in data:
        raise InputError("not an AIBrix GPU profile", file=file, field="tputs/indexes",
                         expected="keys gpu, cost, tputs[out][in], indexes [output ticks, input ticks]")
    tputs = _tputs(data["tputs"], file, "tputs")
    idx = data["indexes"]
    if not (isinstance(idx, list) and len(idx) == 2):
        raise InputError("indexes must be [output ticks, input ticks]", file=file, field="indexes")
    out_t, in_t = (tuple(float(x) for x in a) for a in idx)
    if tputs.shape != (len(out_t), len(in_t)):
        raise InputError(f"tputs is {tputs.shape[0]} x {tputs.shape[1]} but indexes give "
                         f"{len(out_t)} x {len(in_t)}", file=file, field="tputs",
                         expected="one row per output tick, one column per input tick")
    cost = data.get("cost")
    return ProfileTable(out_t, in_t, tputs, float(cost) if isinstance(cost, (int, float)) else None,
                        Path(file).name)


@dataclass
class Option:
    """One (model, GPU type, shape) with its capacity per bucket."""

    model_index: int
    model: str
    gpu: str
    tp: int
    pp: int
    capacity: np.ndarray  # [I*J] req/s per replica
    source: str  # "profile:<file>" or "cost-model:<fidelity>"
    details: list[dict[str, Any]] = field(default_factory=list)  # per bucket: binding, ttft, tpot
    #: a disaggregated bundle: ((role, tp, pp, instances), ...) for "prefill" and "decode"; one
    #: "replica" of the option is the whole bundle (``tp``/``pp`` are the prefill role's)
    roles: tuple[tuple[str, int, int, int], ...] = ()
    #: a bundle whose decode instances run on another GPU type than ``gpu`` (the prefill's)
    decode_gpu: str | None = None

    def role_gpu(self, role: str) -> str:
        """The GPU type a role of a bundle runs on."""
        return self.decode_gpu if role == "decode" and self.decode_gpu else self.gpu

    def gpus_by_type(self) -> dict[str, int]:
        """GPUs one replica (one bundle) holds, per GPU type."""
        if not self.roles:
            return {self.gpu: self.gpus}
        out: dict[str, int] = {}
        for role, tp, pp, n in self.roles:
            g = self.role_gpu(role)
            out[g] = out.get(g, 0) + tp * pp * n
        return out

    @property
    def gpus(self) -> int:
        if self.roles:
            return sum(tp * pp * n for _, tp, pp, n in self.roles)
        return self.tp * self.pp

    @property
    def group_id(self) -> str:
        if self.roles:
            parts = "-".join(f"{n}{role[0]}-tp{tp}-pp{pp}" for role, tp, pp, n in self.roles)
            gpu = f"{self.gpu}+{self.decode_gpu}" if self.decode_gpu else self.gpu
            return f"{self.model}/{gpu}/pd-{parts}"
        return f"{self.model}/{self.gpu}/tp{self.tp}-pp{self.pp}"


def _effective_slo(slo: SLOSpec, output_len: float) -> tuple[float | None, float | None]:
    """(TTFT, TPOT) limits; an end-to-end SLO splits into both (TTFT + out * TPOT <= e2e)."""
    ttft, tpot = slo.ttft_s, slo.tpot_s
    if slo.e2e_s is not None:
        share = slo.e2e_s / (output_len + 1.0)
        ttft = share if ttft is None else min(ttft, max(share, slo.e2e_s - (tpot or share) * output_len))
        tpot = share if tpot is None else min(tpot, share)
    return ttft, tpot


def _gpu_shapes(g: GPUEntry) -> list[tuple[int, int]]:
    if g.shapes:
        return sorted({(s.tp, s.pp) for s in g.shapes})
    return [(tp, 1) for tp in DEFAULT_TPS if tp <= g.max_tp]


def cost_model_options(entry: ModelEntry, index: int, load: ModelLoad, gpus: list[GPUEntry],
                       file: str | None) -> list[Option]:
    """Capacity of every (GPU, shape) from the serving cost model (batching included)."""
    from costmodels.model import load_model
    from costmodels.serving import max_rate_under_slo
    from hardware.catalog import get_accelerator

    try:
        spec = load_model(entry.model)
    except InputError as exc:
        # a fault inside a config.json keeps that file's own field; else it is the request's
        field = exc.field if exc.file else f"models[{index}].model"
        raise InputError(exc.message, file=exc.file or file, field=field, expected=exc.expected,
                         hint=exc.hint) from None
    name = entry.name or entry.model
    rep_in = load.hist.input_len.ravel()
    rep_out = load.hist.output_len.ravel()
    active = load.shares.max(axis=0) > 0
    options = []
    for gi, g in enumerate(gpus):
        accel = get_accelerator(g.name, field=f"gpus[{gi}].name", file=file)
        for tp, pp in _gpu_shapes(g):
            cap = np.zeros(rep_in.shape[0])
            details = [dict() for _ in range(cap.shape[0])]
            fidelity = "analytical"
            any_fit = False
            for b in np.nonzero(active)[0]:
                ttft, tpot = _effective_slo(entry.slo, rep_out[b])
                kwargs = {}
                if entry.max_num_seqs:
                    kwargs["max_num_seqs"] = entry.max_num_seqs
                est = max_rate_under_slo(spec, accel, tp=tp, pp=pp, input_len=int(rep_in[b]),
                                         output_len=int(rep_out[b]), ttft_slo_s=ttft,
                                         tpot_slo_s=tpot, dtype=entry.dtype,
                                         kv_dtype=entry.kv_dtype, **kwargs)
                if est.binding == "fit":
                    break  # the weights do not fit this shape: no bucket will
                any_fit = True
                fidelity = est.fidelity
                cap[b] = max(est.rate_rps, 0.0)
                details[b] = {"binding": est.binding, "ttft_s": est.ttft_s, "tpot_s": est.tpot_s,
                              "max_batch": est.max_batch, "ttft_slo_s": ttft, "tpot_slo_s": tpot}
            if any_fit:
                options.append(Option(index, name, accel.name, tp, pp, cap,
                                      f"cost-model:{fidelity}", details))
        if entry.disaggregation in ("auto", "same_gpu"):
            fitting = [(o.tp, o.pp) for o in options if o.gpu == accel.name and not o.roles]
            options += _bundles(entry, index, name, spec, accel, fitting, rep_in, rep_out, active)
    if entry.disaggregation == "auto" and len(gpus) > 1:
        accels = [get_accelerator(g.name) for g in gpus]
        fitting: dict[str, list[tuple[int, int]]] = {}
        for o in options:
            if not o.roles:
                fitting.setdefault(o.gpu, []).append((o.tp, o.pp))
        options += _cross_bundles(entry, index, name, spec, accels, fitting, rep_in, rep_out,
                                  active)
    return options


#: (prefill instances, decode instances) per disaggregated bundle
PD_RATIOS = ((1, 1), (1, 2), (2, 1), (1, 3), (3, 1))
#: prefill / decode shapes per GPU type considered for bundles: the smallest that fit
PD_SHAPES = 2


def _phase_caps(entry: ModelEntry, spec, accel, node, phase: str, shape: tuple[int, int],
                rep_in: np.ndarray, rep_out: np.ndarray, buckets: np.ndarray, link=None) -> dict:
    """Per active bucket, the capacity estimate of ONE prefill-only or decode-only instance
    of ``shape`` on ``accel`` (:func:`costmodels.serving.max_rate_disaggregated`); ``link``:
    the KV path to the decode side (prefill only)."""
    from costmodels.serving import max_rate_disaggregated

    out = {}
    for b in buckets:
        ttft, tpot = _effective_slo(entry.slo, rep_out[b])
        kwargs = {"max_num_seqs": entry.max_num_seqs} if entry.max_num_seqs else {}
        out[b] = max_rate_disaggregated(
            spec, accel, phase=phase, tp=shape[0], pp=shape[1], input_len=int(rep_in[b]),
            output_len=int(rep_out[b]), ttft_slo_s=ttft, tpot_slo_s=tpot, dtype=entry.dtype,
            kv_dtype=entry.kv_dtype, node=node, kv_link=link, **kwargs)
    return out


def _bundle_option(entry: ModelEntry, index: int, name: str, gpu: str, decode_gpu: str | None,
                   sp: tuple[int, int], sd: tuple[int, int], n_p: int, n_d: int, pre: dict,
                   dec: dict, rep_out: np.ndarray, n_buckets: int) -> Option | None:
    """One bundle of ``n_p`` prefill instances (``sp`` on ``gpu``) and ``n_d`` decode instances
    (``sd`` on ``decode_gpu``, or ``gpu``): it serves a bucket at ``min(n_p cap_P, n_d cap_D)``
    req/s; ``None`` when it serves no bucket."""
    cap = np.zeros(n_buckets)
    details = [dict() for _ in range(n_buckets)]
    for b in pre:
        p_rate, d_rate = n_p * pre[b].rate_rps, n_d * dec[b].rate_rps
        cap[b] = max(0.0, min(p_rate, d_rate))
        ttft, tpot = _effective_slo(entry.slo, rep_out[b])
        details[b] = {"binding": ("prefill:" + pre[b].binding) if p_rate <= d_rate
                      else ("decode:" + dec[b].binding),
                      "ttft_s": pre[b].ttft_s + (tpot or 0.0) / 2,
                      "tpot_s": dec[b].tpot_s, "max_batch": dec[b].max_batch,
                      "ttft_slo_s": ttft, "tpot_slo_s": tpot}
    if cap.max() <= 0:
        return None
    fidelity = pre[next(iter(pre))].fidelity
    return Option(index, name, gpu, sp[0], sp[1], cap, f"cost-model:{fidelity}:disaggregated",
                  details, roles=(("prefill", sp[0], sp[1], n_p), ("decode", sd[0], sd[1], n_d)),
                  decode_gpu=decode_gpu)


def _bundles(entry: ModelEntry, index: int, name: str, spec, accel, fitting: list[tuple[int, int]],
             rep_in: np.ndarray, rep_out: np.ndarray, active: np.ndarray) -> list[Option]:
    """Prefill/decode bundles on one GPU type: ``nP`` prefill instances of one shape feeding
    ``nD`` decode instances of another (:data:`PD_RATIOS`, the :data:`PD_SHAPES` smallest
    fitting shapes each).  A bundle serves a bucket at ``min(nP cap_P, nD cap_D)`` req/s
    (:func:`costmodels.serving.max_rate_disaggregated`); loads of buckets add on that one
    figure, which is conservative (the prefill and decode sides are each loaded at most that
    much).  The KV moves over the link tier a group of the bundle's size crosses (the node's
    scale-up fabric when it fits one node, its scale-out network otherwise)."""
    from costmodels.comm import LinkModel
    from hardware.catalog import default_node_for
    from hardware.topology import Cluster

    shapes = sorted(fitting, key=lambda s: (s[0] * s[1], s))[:PD_SHAPES]
    try:
        node = default_node_for(accel)
    except InputError:  # no node type known for this GPU: no link to move the KV over
        return []
    if not shapes:
        return []
    buckets = np.nonzero(active)[0]
    decode = {sh: _phase_caps(entry, spec, accel, node, "decode", sh, rep_in, rep_out, buckets)
              for sh in shapes}
    prefill: dict = {}  # (shape, tier) -> capacities: the KV link depends on the bundle's size
    options = []
    for sp in shapes:
        for sd in shapes:
            for n_p, n_d in PD_RATIOS:
                gpus = n_p * sp[0] * sp[1] + n_d * sd[0] * sd[1]
                tier = Cluster(node, -(-gpus // node.gpus_per_node),
                               accel.scale_up).tier_for_group(gpus)
                if (sp, tier.name) not in prefill:
                    prefill[sp, tier.name] = _phase_caps(entry, spec, accel, node, "prefill", sp,
                                                         rep_in, rep_out, buckets,
                                                         LinkModel.from_link(tier.link))
                o = _bundle_option(entry, index, name, accel.name, None, sp, sd, n_p, n_d,
                                   prefill[sp, tier.name], decode[sd], rep_out, len(rep_in))
                if o is not None:
                    options.append(o)
    return options


#: cross-type bundles kept per model (the ones that beat every same-type option by the most on
#: some bucket, see :func:`_prune_cross_bundles`): each pair of GPU types adds
#: PD_SHAPES^2 x len(PD_RATIOS) candidates, too many columns to offer them all
CROSS_BUNDLES_KEPT = 12


def _cross_bundles(entry: ModelEntry, index: int, name: str, spec, accels: list,
                   fitting: dict[str, list[tuple[int, int]]], rep_in: np.ndarray,
                   rep_out: np.ndarray, active: np.ndarray) -> list[Option]:
    """Bundles whose prefill instances run on one GPU type and decode instances on another of
    the same vendor (prefill wants FLOPs per $, decode HBM bandwidth and capacity per $; the
    Splitwise idea).  The two sides sit on different nodes: the KV crosses the slower of the
    two nodes' scale-out networks.  Shapes and ratios as in :func:`_bundles`."""
    from costmodels.comm import LinkModel
    from hardware.catalog import default_node_for

    nodes = {}
    for a in accels:
        try:
            nodes[a.name] = default_node_for(a)
        except InputError:
            continue
    buckets = np.nonzero(active)[0]
    shapes = {a.name: sorted(fitting.get(a.name, []), key=lambda s: (s[0] * s[1], s))[:PD_SHAPES]
              for a in accels if a.name in nodes}
    by_name = {a.name: a for a in accels}
    decode = {(g, sh): _phase_caps(entry, spec, by_name[g], nodes[g], "decode", sh, rep_in,
                                   rep_out, buckets)
              for g, shs in shapes.items() for sh in shs}
    options = []
    for a in accels:
        for b in accels:
            if (a.name == b.name or a.vendor != b.vendor or not shapes.get(a.name)
                    or not shapes.get(b.name)):
                continue
            link = min((nodes[a.name].scale_out, nodes[b.name].scale_out),
                       key=lambda lk: lk.bandwidth_bytes_per_s)
            for sp in shapes[a.name]:
                pre = _phase_caps(entry, spec, a, nodes[a.name], "prefill", sp, rep_in, rep_out,
                                  buckets, LinkModel.from_link(link))
                for sd in shapes[b.name]:
                    for n_p, n_d in PD_RATIOS:
                        o = _bundle_option(entry, index, name, a.name, b.name, sp, sd, n_p, n_d,
                                           pre, decode[b.name, sd], rep_out, len(rep_in))
                        if o is not None:
                            options.append(o)
    return options


def _prune_cross_bundles(options: list[Option], prices: dict[str, dict[str, float]]
                         ) -> list[Option]:
    """Keep, per model, the :data:`CROSS_BUNDLES_KEPT` cross-type bundles that undercut every
    other option of the model on some bucket by the largest margin, in on-demand $ per req/s
    (a restriction, like the ratio and shape lists: the MILP stays exact over what is kept)."""
    def unit_cost(o: Option) -> np.ndarray:
        price = sum(prices[g].get("on_demand", min(prices[g].values())) * n
                    for g, n in o.gpus_by_type().items())
        return np.divide(price, o.capacity, out=np.full(o.capacity.shape, np.inf),
                         where=o.capacity > 0)

    keep_ids = set()
    for mi in sorted({o.model_index for o in options}):
        mine = [o for o in options if o.model_index == mi]
        cross = [o for o in mine if o.decode_gpu]
        others = [unit_cost(o) for o in mine if not o.decode_gpu]
        if not cross or not others:  # cross bundles come from the plain shapes: never alone
            continue
        best_other = np.min(others, axis=0)
        scored = []
        for k, o in enumerate(cross):
            gain = np.where(np.isfinite(best_other), 1.0 - unit_cost(o) / best_other, 0.0)
            if gain.max() > 1e-6:
                scored.append((-float(gain.max()), k))
        keep_ids |= {id(cross[k]) for _, k in sorted(scored)[:CROSS_BUNDLES_KEPT]}
    return [o for o in options if not o.decode_gpu or id(o) in keep_ids]


def profile_options(entry: ModelEntry, index: int, load: ModelLoad, gpus: list[GPUEntry],
                    file: str | None) -> list[Option]:
    """Capacity from measured profiles (zero throughput = cannot serve)."""
    names = {g.name.lower(): g.name for g in gpus}
    options = []
    rep_in = load.hist.input_len.ravel()
    rep_out = load.hist.output_len.ravel()
    for pi, p in enumerate(entry.profiles):
        gname = names.get(p.gpu.lower())
        if gname is None:
            raise InputError(f"profile for GPU {p.gpu!r} which is not among the candidate gpus",
                             file=file, field=f"models[{index}].profiles[{pi}].gpu",
                             expected=f"one of {sorted(names.values())}")
        table = load_profile(p)
        if isinstance(table, np.ndarray):
            if table.shape != load.hist.shares.shape:
                raise InputError(f"tputs grid {table.shape} does not match the workload grid "
                                 f"{load.hist.shares.shape}", file=p.file, field="tputs",
                                 expected="the same bucket grid as workload_distribution")
            cap = table.ravel().copy()
        else:
            cap = np.array([table.lookup(a, b) for a, b in zip(rep_in, rep_out)])
        options.append(Option(index, entry.name or entry.model, gname, p.tp, p.pp, cap,
                              f"profile:{Path(p.file).name}"))
    return options


# ------------------------------------------------------------------------------------ planning

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


def build_problem(req: FleetRequest, *, file: str | None = None) -> FleetProblem:
    """Read workloads and capacities and line up demands, options, prices and quotas."""
    loads = [build_load(m, i, file) for i, m in enumerate(req.models)]
    periods = {len(ld.rates_rps) for ld in loads}
    T = max(periods)
    if len(periods - {1, T}) > 0:
        raise InputError(f"models have different numbers of periods {sorted(periods)}", file=file,
                         field="models[].workload", expected="the same period count (or a single rate)")
    period_s = max(ld.period_s for ld in loads)
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
    options = _prune_cross_bundles(options, prices)
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


def _cover_problem(fp: FleetProblem, option_mask: np.ndarray | None = None,
                   rates: np.ndarray | None = None, reserved: bool = True,
                   routing: str | None = None, prune: bool = True
                   ) -> tuple[CoverProblem, list[int]]:
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
    if routing == "auto":
        columns = int((cap > 0).sum(axis=1) @ (rates > 0).sum(axis=1))
        routing = "shared" if columns > AUTO_SHARED_COLUMNS and T > 1 else "per_period"
    problem = CoverProblem(covers, cap, rates, np.full(T, 1.0 / T), dict(fp.quotas),
                           req.spot.max_fraction if req.spot.max_fraction > 0 else None,
                           req.spot.capacity_factor, req.max_utilisation,
                           req.solver.slice_factor, routing=routing)
    if prune:
        # exact: a shape never faster than m smaller replicas of the same GPU at the same price
        # per GPU cannot improve the optimum
        dropped = set(dominated_options(problem))
        if dropped:
            cols = [c for c in range(len(keep)) if c not in dropped]
            problem = CoverProblem([covers[c] for c in cols], cap[:, cols], rates,
                                   problem.period_weights, problem.quotas,
                                   problem.spot_max_fraction, problem.spot_capacity_factor,
                                   problem.max_utilisation, problem.slices, routing=routing)
            keep = [keep[c] for c in cols]
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
                expected="a GPU type with enough memory (or larger max_tp)")
        best = None
        for o in opts:
            det = o.details[b] if o.details and o.details[b] else None
            if det is None:
                continue
            ratio, slo_name = 0.0, det.get("binding", "slo")
            for key in ("tpot", "ttft"):
                lim = det.get(f"{key}_slo_s")
                if lim:
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


def _solve(fp: FleetProblem, problem: CoverProblem, time_limit_s: float) -> CoverSolution:
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
    problem, keep = _cover_problem(fp)
    try:
        sol = _solve(fp, problem, limit)
    except CoverInfeasible as exc:
        if fp.quotas and exc.result.status == "infeasible":
            raise _quota_error(fp, problem, min(limit, 10.0)) from None
        raise InfeasibleError(f"the solver found no fleet ({exc.result.status}) within "
                              f"{limit:g} s", binding="time_limit", file=fp.file,
                              field="solver.time_limit_s", expected="a longer time limit") from None
    return problem, keep, sol


# ------------------------------------------------------------------------------ plan assembly

def _bucket_dict(load: ModelLoad, b: int) -> dict[str, Any]:
    g = load.hist.grid
    i, j = divmod(b, load.hist.shares.shape[1])
    return {"label": g.label(i, j), "input_tokens": [g.input_edges[i], g.input_edges[i + 1]],
            "output_tokens": [g.output_edges[j], g.output_edges[j + 1]],
            "representative": [int(load.hist.input_len[i, j]), int(load.hist.output_len[i, j])]}


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
            batches = [o.details[fp.demand_index[d][1]].get("max_batch") for d in served
                       if o.details and o.details[fp.demand_index[d][1]]]
            batches = [b for b in batches if b]
            if batches:  # the batch at which the capacity model met the SLO: cap the engine there
                engine["max_num_seqs"] = int(min(batches))
            if m.max_num_seqs:
                engine["max_num_seqs"] = min(engine.get("max_num_seqs", m.max_num_seqs), m.max_num_seqs)
            entry["engine"] = engine
            if o.details:
                worst = None
                for d in served:
                    det = o.details[fp.demand_index[d][1]]
                    if not det:
                        continue
                    for key in ("tpot", "ttft"):
                        lim = det.get(f"{key}_slo_s")
                        if lim:
                            head = 1.0 - det[f"{key}_s"] / lim
                            if worst is None or head < worst[0]:
                                worst = (head, key, det)
                if worst is not None:
                    head, key, det = worst
                    entry["slo_headroom"] = {"binding": key, "fraction_at_capacity": float(head),
                                             "predicted_s": float(det[f"{key}_s"]),
                                             "slo_s": float(det[f"{key}_slo_s"])}
            pools.extend(_role_pools(entry, o, {g: fp.prices[g][cls] for g in o.gpus_by_type()})
                         if o.roles else [entry])
    return pools


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
    out = []
    for d, (mi, b) in enumerate(fp.demand_index):
        rates = problem.rates[d]
        total = float(rates.sum())
        fracs = {}
        for col, j in enumerate(keep):
            served = float(np.dot(sol.routing[d, col], rates))
            if served > 1e-12 and total > 0:
                fracs[fp.options[j].group_id] = round(served / total, 6)
        load = fp.loads[mi]
        out.append({"model": fp.request.models[mi].name or fp.request.models[mi].model,
                    "bucket": _bucket_dict(load, b),
                    "rate_rps": float(rates.max()),  # the bucket's peak over the periods
                    "share": float(load.shares[:, b].mean()),
                    "pools": dict(sorted(fracs.items()))})
    return out


def _periods(fp: FleetProblem, problem: CoverProblem, keep: list[int], sol: CoverSolution
             ) -> list[dict[str, Any]]:
    T = problem.shape[2]
    out, prev = [], None
    spot_allowed = problem.spot_units_allowed()
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
                    "gpus": int(sum(n * fp.options[keep[col]].gpus for col in range(len(keep))
                                    for n in [sol.counts(t)[col]])),
                    "pools": counts, "changes": changes})
        if problem.spot_max_fraction is not None:
            out[-1]["spot_gpus_allowed"] = float(spot_allowed[t])
        prev = counts
    return out


def _tokens_per_hour(fp: FleetProblem) -> float:
    total = 0.0
    for ld in fp.loads:
        total += float(ld.rates_rps.mean()) * ld.mean_tokens * 3600.0
    return total


def _baseline(fp: FleetProblem, time_limit_s: float):
    """Best single-GPU-type plan: ``(summary, (keep, solution) or None)``; savings are filled in
    by :func:`_savings` once the mix's cost is final."""
    per_gpu = []
    best_sol = None
    for g in sorted({o.gpu for o in fp.options}):
        mask = np.array([set(o.gpus_by_type()) == {g} for o in fp.options])
        problem, keep = _cover_problem(fp, mask)
        if problem.unservable():
            d, _ = problem.unservable()[0]
            mi, b = fp.demand_index[d]
            per_gpu.append({"gpu": g, "feasible": False,
                            "reason": f"cannot serve bucket {_bucket_dict(fp.loads[mi], b)['label']} "
                                      f"of {fp.request.models[mi].name or fp.request.models[mi].model} within the SLO"})
            continue
        try:
            sol = _solve(fp, problem, time_limit_s)
        except CoverInfeasible as exc:
            per_gpu.append({"gpu": g, "feasible": False,
                            "reason": "quota too small" if exc.result.status == "infeasible"
                            else f"no solution in {time_limit_s:g} s"})
            continue
        if best_sol is None or sol.cost_per_hour < best_sol[1].cost_per_hour - 1e-9:
            best_sol = (keep, sol)
        per_gpu.append({"gpu": g, "feasible": True, "cost_per_hour": sol.cost_per_hour,
                        "gpus_peak": int(max(sum(sol.counts(t)[c] * fp.options[keep[c]].gpus
                                                 for c in range(len(keep)))
                                             for t in range(problem.shape[2]))),
                        "status": sol.result.status, "gap": sol.result.gap,
                        "pools": {fp.options[keep[c]].group_id: int(sol.counts(int(np.argmax(problem.rates.sum(axis=0)))).tolist()[c])
                                  for c in range(len(keep)) if sol.counts(int(np.argmax(problem.rates.sum(axis=0))))[c] > 0}})
    feasible = [p for p in per_gpu if p["feasible"]]
    if not feasible:
        return {"gpu": None, "cost_per_hour": None, "savings_per_hour": None,
                "savings_fraction": None, "per_gpu": per_gpu}, None
    best = min(feasible, key=lambda p: (p["cost_per_hour"], p["gpu"]))
    return {"gpu": best["gpu"], "cost_per_hour": best["cost_per_hour"],
            "status": best["status"], "gap": best.get("gap"),
            "pools": best["pools"], "per_gpu": per_gpu}, best_sol


def _savings(base: dict[str, Any], cost: float) -> dict[str, Any]:
    if base.get("cost_per_hour") is None:
        return base
    out = dict(base)
    out["savings_per_hour"] = base["cost_per_hour"] - cost
    out["savings_fraction"] = (base["cost_per_hour"] - cost) / base["cost_per_hour"]
    # keep a stable key order: summary first, the per-GPU list last
    per = out.pop("per_gpu")
    out["per_gpu"] = per
    return out


def _embed(problem: CoverProblem, keep: list[int], other_keep: list[int],
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


def _adopt(problem: CoverProblem, keep: list[int], sol: CoverSolution, other_keep: list[int],
           other: CoverSolution) -> CoverSolution | None:
    """``other`` (a solution over a subset of the options, e.g. one GPU type) as a solution of
    ``problem`` when it is cheaper than ``sol``: the MILP's incumbent is replaced, its bound is
    kept, and the gap recomputed."""
    if other.cost_per_hour >= sol.cost_per_hour - 1e-9:
        return None
    arrays = _embed(problem, keep, other_keep, other)
    if arrays is None:
        return None
    return _with_cost_facts(problem, arrays, sol, sol.method + "+single-gpu-incumbent")


def _with_cost_facts(problem: CoverProblem, arrays: tuple, sol: CoverSolution,
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


def _break_evens(fp: FleetProblem, problem: CoverProblem, sol: CoverSolution,
                 time_limit_s: float) -> list[dict[str, Any]]:
    """Per GPU type, the on-demand $/GPU-h at which it leaves (used) or enters (unused) the
    cheapest plan, every price class of the type scaled alike (:mod:`solvers.sensitivity`)."""
    from solvers.sensitivity import all_break_evens

    limit = max(1.0, min(time_limit_s, 10.0))
    found = all_break_evens(problem, sol, lambda p: _solve(fp, p, limit))
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


def _slo_sensitivity(fp: FleetProblem, cost: float, time_limit_s: float) -> list[dict[str, Any]]:
    """The cheapest plan's cost with every model's SLOs (TTFT, TPOT, end-to-end) multiplied by
    each of ``solver.slo_factors``: capacities are recomputed from the cost model at the new
    SLOs, the mix is solved again (no baselines).  Models whose capacity comes from measured
    profiles (measured at one SLO) make the comparison meaningless: then each factor says so."""
    req = fp.request
    out = []
    for f in req.solver.slo_factors:
        row: dict[str, Any] = {"factor": f}
        if any(m.profiles for m in req.models):
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


def _replan(fp: FleetProblem, problem: CoverProblem, keep: list[int], sol: CoverSolution,
            previous: dict[str, Any], previous_file: str | None, keep_within: float,
            time_limit_s: float) -> tuple[CoverProblem, list[int], CoverSolution, dict[str, Any]]:
    """The plan nearest to ``previous`` within ``keep_within`` of the cheapest one (``sol``):
    ``(problem, keep, solution, replan section)`` over every option (none pruned: the plan in
    place may use one the cheapest search dropped as dominated)."""
    from planner.replan import previous_counts, transition
    from solvers.binpack import closest_cover, units_changed

    full, full_keep = _cover_problem(fp, prune=False)
    cheapest = _embed(full, full_keep, keep, sol)
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
    return full, full_keep, _with_cost_facts(full, (near.reserved, near.on_demand, near.spot,
                                                    near.routing), sol, sol.method + "+closest"), section


def _peak_provisioning(fp: FleetProblem, cost: float, time_limit_s: float) -> dict[str, Any] | None:
    T = fp.rates.shape[1]
    if T <= 1:
        return None
    peak = fp.rates.max(axis=1, keepdims=True)  # every bucket at its own peak rate
    problem, keep = _cover_problem(fp, rates=peak, reserved=False, routing="per_period")
    try:
        sol = _solve(fp, problem, time_limit_s)
    except CoverInfeasible:
        return {"feasible": False, "reason": "the peak does not fit the quotas in one period"}
    return {"feasible": True, "cost_per_hour": sol.cost_per_hour, "status": sol.result.status,
            "savings_per_hour": sol.cost_per_hour - cost,
            "savings_fraction": (sol.cost_per_hour - cost) / sol.cost_per_hour,
            "note": "every bucket provisioned at its peak-period rate for the whole horizon, "
                    "on-demand prices"}


def plan_fleet(req: FleetRequest | dict, *, file: str | None = None,
               time_limit_s: float | None = None, inputs: Any = None,
               previous: dict[str, Any] | None = None, previous_file: str | None = None,
               keep_within: float | None = None) -> dict[str, Any]:
    """Plan a fleet; returns the ``FleetPlan`` as plain data (envelope included).

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
            raise _validation_error(exc, file) from None
    fp = build_problem(req, file=file)
    return plan_from_problem(fp, time_limit_s=time_limit_s,
                             inputs=inputs if inputs is not None else req.model_dump(mode="json"),
                             previous=previous, previous_file=previous_file,
                             keep_within=keep_within)


def plan_from_problem(fp: FleetProblem, *, time_limit_s: float | None = None,
                      inputs: Any = None, previous: dict[str, Any] | None = None,
                      previous_file: str | None = None,
                      keep_within: float | None = None) -> dict[str, Any]:
    from planner.replan import DEFAULT_KEEP_WITHIN, check_keep_within

    req = fp.request
    limit = time_limit_s or req.solver.time_limit_s
    keep_within = check_keep_within(DEFAULT_KEEP_WITHIN if keep_within is None else keep_within)
    problem, keep, sol = solve_problem(fp, time_limit_s=limit)
    base_limit = max(1.0, min(limit / 4, 10.0))
    base = None
    if req.solver.baseline:
        base, best_single = _baseline(fp, base_limit)
        if best_single is not None and sol.result.status != "optimal":
            # a single-type plan is a feasible mix: never report a mix dearer than it
            adopted = _adopt(problem, keep, sol, *best_single)
            if adopted is not None:
                sol = adopted
    breaks = _break_evens(fp, problem, sol, limit) if req.solver.break_even else None
    slo_costs = _slo_sensitivity(fp, sol.cost_per_hour, limit) if req.solver.slo_factors else None
    replan = None
    if previous is not None:
        problem, keep, sol, replan = _replan(fp, problem, keep, sol, previous, previous_file,
                                             keep_within, limit)
    cost = sol.cost_per_hour
    T = problem.shape[2]
    tokens = _tokens_per_hour(fp)
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
    body["baseline_single_gpu"] = _savings(base, cost) if base is not None else None
    peak = _peak_provisioning(fp, cost, base_limit) if req.solver.baseline else None
    if peak is not None:
        body["peak_provisioning"] = peak
    body["capacity"] = {
        (m.name or m.model): sorted({o.source for o in fp.options if o.model_index == i})
        for i, m in enumerate(req.models)}
    body["workload"] = {(m.name or m.model): ld.summary for m, ld in zip(req.models, fp.loads)}
    body["slo"] = {(m.name or m.model): m.slo.model_dump() for m in req.models}
    body["explanations"] = _explain(fp, problem, keep, sol, body)
    return envelope("FleetPlan", body, inputs=inputs)


def _explain(fp, problem, keep, sol, body) -> list[str]:
    notes = []
    if sol.method == "greedy":
        notes.append("the MILP found no incumbent within the time limit; counts come from the "
                     "greedy cover (status heuristic)")
    notes.append(f"routing: {problem.routing}" + (" (one routing table for all periods; counts "
                 "change per period)" if problem.routing == "shared" else ""))
    notes.append("solver: " + _method_words(sol.method))
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
    if base and base.get("gpu"):
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
        notes.append(f"{m.name or m.model}: capacity from {', '.join(srcs)}; SLO percentile "
                     f"{m.slo.percentile:g} applied through each bucket's representative request "
                     f"size (the p-th percentile of its lengths)")
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


def _method_words(method: str) -> str:
    """``method`` (e.g. ``lp+period-rounding+milp+merged``) in words, steps in order."""
    parts = method.split("+")
    # the merge is a presolve: it comes first whatever its place in the name
    first = [_METHOD_WORDS["merged"]] if "merged" in parts else []
    # "milp" after the period rounding is the whole-horizon MILP from its incumbent
    words = [_METHOD_WORDS["start"] if p == "milp" and i > 0 else _METHOD_WORDS.get(p, p)
             for i, p in enumerate(parts) if p != "merged"]
    return f"{method}: " + "; then ".join(first + words)


# ---------------------------------------------------------------------------------- Mélange I/O

def melange_request(path: str | Path) -> tuple[dict[str, Any], FleetProblem]:
    """Read a Mélange config JSON (gpu_info, workload_distribution, total_request_rate,
    slice_factor) as a fleet problem over one period."""
    path = Path(path)
    data = read_structured(path, what="Mélange config")
    file = str(path)
    if not isinstance(data, dict):
        raise InputError("not a JSON object", file=file, expected="a Mélange config object")
    for key in ("gpu_info", "workload_distribution", "total_request_rate"):
        if key not in data:
            raise InputError("required field is missing", file=file, field=key)
    info = data["gpu_info"]
    if not isinstance(info, dict) or not info:
        raise InputError("gpu_info must map GPU names to {cost, tputs}", file=file, field="gpu_info")
    rate = data["total_request_rate"]
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0:
        raise InputError(f"total_request_rate is {rate!r}", file=file, field="total_request_rate",
                         expected="a positive number of requests per second")
    k = data.get("slice_factor", 1)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InputError(f"slice_factor is {k!r}", file=file, field="slice_factor",
                         expected="a positive integer")
    shares = wl.check_shares(data["workload_distribution"], file=file, field="workload_distribution",
                             normalise=bool(data.get("normalise_shares", False)))
    I, J = shares.shape
    gpus = []
    for name, entry in info.items():
        if not isinstance(entry, dict) or "cost" not in entry or "tputs" not in entry:
            raise InputError("each GPU needs cost and tputs", file=file, field=f"gpu_info.{name}",
                             expected="{cost: $/h, tputs: [[req/s]]}")
        cost = entry["cost"]
        if not isinstance(cost, (int, float)) or isinstance(cost, bool) or cost <= 0:
            raise InputError(f"cost is {cost!r}", file=file, field=f"gpu_info.{name}.cost",
                             expected="a positive $ per hour")
        tputs = _tputs(entry["tputs"], file, f"gpu_info.{name}.tputs")
        if tputs.shape != shares.shape:
            raise InputError(f"tputs is {tputs.shape[0]} x {tputs.shape[1]} but the workload grid is "
                             f"{I} x {J}", file=file, field=f"gpu_info.{name}.tputs",
                             expected="the same grid as workload_distribution")
        gpus.append({"name": name, "price_per_hour": float(cost)})
    request = {
        "models": [{"name": "model", "model": "melange",
                    "workload": {"histogram": {"input_edges": list(range(I + 1)),
                                               "output_edges": list(range(J + 1)),
                                               "shares": shares.tolist()},
                                 "rate_rps": float(rate)},
                    "profiles": [{"gpu": g["name"], "file": file, "format": "melange"}
                                 for g in gpus]}],
        "gpus": gpus,
        "solver": {"slice_factor": k, "routing": "per_period"},
    }
    req = FleetRequest.model_validate(request)
    fp = build_problem(req, file=file)
    return data, fp


def plan_melange(path: str | Path, *, time_limit_s: float | None = None) -> dict[str, Any]:
    """Solve a Mélange config; the plan adds ``melange_result`` in Mélange's own output format
    ({gpu: count, "cost": $/h})."""
    data, fp = melange_request(path)
    plan = plan_from_problem(fp, time_limit_s=time_limit_s, inputs=data)
    result = {g: 0 for g in data["gpu_info"]}
    for p in plan["pools"]:
        result[p["gpu"]] += p["count"]
    result["cost"] = round(plan["cost_per_hour"], 6)
    plan["melange_result"] = result
    plan["explanations"].append("Mélange input: bucket in(i,i+1]xout(j,j+1] is row i, column j "
                                "of workload_distribution and tputs; capacities are the "
                                "config's measured tputs (0 = cannot serve)")
    return plan


def request_from_file(path: str | Path) -> tuple[FleetRequest, Any]:
    """The validated request and the raw data that goes into the inputs' hash."""
    req = load_request(path)
    raw = read_structured(path, what="fleet request")
    hashed = {"request": raw}
    for m in req.models:
        if m.workload.trace:
            p = Path(m.workload.trace)
            if p.is_file():
                import hashlib
                hashed.setdefault("traces", {})[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return req, hashed
