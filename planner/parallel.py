"""Serving parallel-plan search: TP / PP / EP / DP per phase, aggregated or prefill/decode
disaggregated, ranked by goodput per dollar with the SLOs as hard constraints.

Flow (APEX / DistServe / Vidur-Search, done in seconds):

1. :class:`ParallelRequest` (pydantic) names the model, GPU type(s) and cluster, the workload
   (trace file, or fixed / histogram lengths plus a rate), SLOs with percentiles, dtypes and
   the engine.
2. For each GPU type, engine *shapes* are enumerated (:func:`solvers.search.enumerate_space`):
   TP (power of two inside a node, dividing the heads), PP (even and balanced uneven layer
   splits), for MoE models EP over the TP group or attention data-parallelism with EP over the
   whole group; rules prune what cannot work (heads, experts, memory, SLO unreachable at zero
   load) and record why.
3. Each surviving shape is evaluated per phase ("both" = aggregated, "prefill", "decode") by an
   iteration-level continuous-batching simulation (:mod:`costmodels.batching`) of one engine
   lane over the workload; its goodput is the highest request rate at which the SLO
   percentiles hold, found by bisection over rate; shapes are visited best-bound first and
   skipped when even their fluid upper bound cannot enter the top K.
4. Plans: an aggregated plan is a shape times ``dp`` replicas; a disaggregated plan is a
   prefill shape x count plus a decode shape x count, with the KV transfer over the link tier
   between them added to TTFT.  Counts serve the requested rate (or fill the cluster).
5. Plans are ranked by goodput per dollar (or per GPU), top K explained, and emitted with vLLM
   and SGLang launch commands.

Modelling assumptions (stated in every plan's ``assumptions``): a round-robin router splits
load evenly over replicas, so one replica is simulated at ``rate / dp`` (Poisson arrivals kept,
which is conservative); ``pp`` micro-batches are in flight, so a PP replica is ``pp`` lanes each
with ``1 / pp`` of the KV cache and the period of the busiest stage; attention-DP groups are
load balanced.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, ValidationError,
                      field_validator, model_validator)

from costmodels.batching import (EngineLimits, IterationCostTable, SimResult, Trace, fluid_max_rate_rps,
                                 little_stable, percentile, simulate)
from costmodels.comm import LinkModel
from costmodels.memory import (MemoryBreakdown, attention_dp_memory_breakdown,
                               kv_bytes_per_token_per_gpu, memory_breakdown,
                               stage_weight_params)
from costmodels.model import ModelSpec, dtype_bytes, load_model
from costmodels.ops import Iteration, Op, Parallel, attention_dp_forward_ops, forward_ops, layer_ops
from costmodels.roofline import OpTime, op_time
from costmodels.serving import CostContext, kv_transfer_s, links_for, make_context, op_roofline_params
from hardware.accelerator import Accelerator
from hardware.catalog import default_node_for, get_accelerator, get_node
from hardware.errors import InfeasibleError, InputError, from_validation_error
from hardware.topology import Cluster, NodeType
from solvers.search import SearchLog, best_first, bisect_max, enumerate_space

PHASES = ("both", "prefill", "decode")
#: the fluid capacity estimate times this is used as the optimistic bound of branch and bound
#: (chunked prefill mixed into decode iterations lets a simulated engine beat the fluid estimate
#: by up to ~30% in our runs)
OPTIMISM = 1.5
#: requests of the trace prefix the rate bisection simulates (the result is confirmed on all)
BISECTION_REQUESTS = 300
ASSUMPTIONS = [
    "round-robin routing: each of dp replicas sees rate/dp; the replica is simulated with Poisson-like "
    "arrivals scaled from the workload (conservative against the smoother split stream)",
    "pipeline parallelism: pp micro-batch lanes per replica, each with 1/pp of the KV cache, iteration "
    "period set by the busiest stage",
    "attention data-parallelism: attention groups equally loaded; routed experts see all tokens (EP = group)",
    "disaggregation: TTFT includes the KV transfer from the prefill to the decode instance",
    "analytical roofline cost model with the catalog's efficiency priors unless a calibration is given",
]


# ==================================================================================== request
#: the most GPUs one pool may have (nodes x gpus_per_node): plans filling the pool emit one launch
#: command per replica, and a larger pool makes a plan file of millions of lines
MAX_POOL_GPUS = 4096
#: the lowest request rate a workload may ask for (req/s; about one request in 11.6 days): below
#: it a plan's goodput per dollar is a rounding error and synthetic arrival times overflow
MIN_RATE_RPS = 1e-6


class _Spec(BaseModel):
    # no inf / nan anywhere: a request's every number is a finite quantity (one config line, as
    # in planner/fleet/request.py)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ClusterSpec(_Spec):
    """Where plans may run: ``nodes`` x ``gpus_per_node`` of one GPU type, optional link overrides."""

    nodes: int = Field(1, ge=1)
    gpus_per_node: Optional[int] = Field(None, ge=1)
    node: Optional[str] = None
    intra_node_bandwidth_gbs: Optional[float] = Field(None, gt=0, description="GB/s per GPU per direction")
    inter_node_bandwidth_gbs: Optional[float] = Field(None, gt=0, description="GB/s per GPU per direction")


class GpuPool(_Spec):
    """One GPU type the search may use, with its own cluster (defaults: the request's cluster)."""

    type: str
    nodes: Optional[int] = Field(None, ge=1)
    gpus_per_node: Optional[int] = Field(None, ge=1)
    node: Optional[str] = None
    price_per_hour: Optional[float] = Field(None, gt=0)


LengthSpec = Union[int, list[list[float]]]


def check_lengths(value: Any) -> Any:
    """A request length: a whole number of tokens in ``1..MAX_TOKENS``, or a histogram of
    ``[length, weight]`` pairs (lengths as above, weights finite, >= 0 and not all 0).  Returns
    the value (``512.0`` as ``512``); raises ValueError saying what is wrong (pydantic turns it
    into the field's one-line error)."""
    from planner.workload import MAX_TOKENS

    def length(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(f"length {v!r} is not a number of tokens")
        if not (isinstance(v, numbers.Integral) or math.isfinite(v) and float(v).is_integer()):
            raise ValueError(f"length {v!r} is not a whole number of tokens")
        if not 1 <= v <= MAX_TOKENS:
            raise ValueError(f"length {v:.6g} tokens is outside 1..{MAX_TOKENS:,}")
        return int(v)

    if not isinstance(value, (list, tuple)):
        return length(value)
    if not value:
        raise ValueError("the histogram is empty")
    total = 0.0
    for pair in value:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"histogram entry {pair!r} is not a [length, weight] pair")
        length(pair[0])
        w = pair[1]
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not (math.isfinite(w) and w >= 0):
            raise ValueError(f"weight {w!r} of length {pair[0]!r} is not a finite number >= 0")
        total += w
    if total <= 0:
        raise ValueError("the histogram's weights are all 0")
    return value


class WorkloadSpec(_Spec):
    """A trace file, or request lengths (fixed, or a histogram of [length, weight] pairs) plus a rate."""

    trace: Optional[str] = None
    input_len: Optional[LengthSpec] = None
    output_len: Optional[LengthSpec] = None
    rate_rps: Optional[float] = Field(None, ge=MIN_RATE_RPS)
    num_requests: int = Field(1000, ge=10, le=200000)
    arrival: Literal["poisson", "uniform"] = "poisson"
    seed: int = Field(0, ge=0)

    @field_validator("input_len", "output_len", mode="before")
    @classmethod
    def _lengths(cls, v: Any) -> Any:
        return None if v is None else check_lengths(v)

    @model_validator(mode="after")
    def _one_source(self) -> "WorkloadSpec":
        if self.trace is None and (self.input_len is None or self.output_len is None):
            raise ValueError("give either 'trace' or both 'input_len' and 'output_len'")
        return self


class SloSpec(_Spec):
    """Latency SLOs: the ``ttft_percentile``-th TTFT and ``tpot_percentile``-th TPOT must not exceed them."""

    ttft_s: Optional[float] = Field(None, gt=0)
    tpot_s: Optional[float] = Field(None, gt=0)
    percentile: float = Field(90.0, gt=0, le=100)
    ttft_percentile: Optional[float] = Field(None, gt=0, le=100)
    tpot_percentile: Optional[float] = Field(None, gt=0, le=100)

    @property
    def p_ttft(self) -> float:
        return self.ttft_percentile or self.percentile

    @property
    def p_tpot(self) -> float:
        return self.tpot_percentile or self.percentile


class SearchSpec(_Spec):
    """Knobs of the search space and the engine limits."""

    disaggregation: Literal["auto", "on", "off"] = "auto"
    objective: Literal["goodput_per_dollar", "goodput_per_gpu"] = "goodput_per_dollar"
    max_pp: int = Field(8, ge=1, le=64)
    uneven_pp: bool = True
    attention_dp: bool = True
    top_k: int = Field(5, ge=1, le=100)
    # upper bounds far above any engine's setting: the iteration-cost tables are that long
    max_num_seqs: int = Field(256, ge=1, le=16384)
    max_num_batched_tokens: int = Field(8192, ge=64, le=1 << 20)
    prefill_max_num_batched_tokens: int = Field(16384, ge=64, le=1 << 20)
    gpu_memory_utilization: float = Field(0.9, gt=0.1, le=0.99)
    rate_rel_tol: float = Field(0.04, gt=0.001, le=0.5)


#: a GPU type by name, or a pool with its own cluster and price; the tags ("str" / "dict") keep
#: a pool's errors on the pool's field (``gpus[0].price_per_hour``), not on the string member
GpuItem = Annotated[Union[Annotated[str, Tag("str")], Annotated[GpuPool, Tag("dict")]],
                    Discriminator(lambda v: "str" if isinstance(v, str) else "dict")]


class ParallelRequest(_Spec):
    """The request of ``planner parallel`` (YAML / JSON)."""

    #: a model alias, or a config.json (or its folder): a relative path is read from the
    #: request's folder where it exists there (:func:`parse_request`), else from the current one
    model: str
    gpu: Optional[str] = None
    gpus: Optional[list[GpuItem]] = None
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    workload: WorkloadSpec
    slo: SloSpec = Field(default_factory=SloSpec)
    dtype: Literal["bf16", "fp16", "fp8"] = "bf16"
    kv_dtype: Optional[Literal["bf16", "fp16", "fp8"]] = None
    engine: Literal["vllm", "sglang"] = "vllm"
    search: SearchSpec = Field(default_factory=SearchSpec)
    #: the model's config path resolved against the request's folder (set by
    #: :func:`parse_request`); None: ``model`` as given
    _model_path: Optional[str] = PrivateAttr(None)

    @model_validator(mode="after")
    def _gpu_given(self) -> "ParallelRequest":
        if not self.gpu and not self.gpus:
            raise ValueError("give 'gpu' (one type) or 'gpus' (a list)")
        return self

    @property
    def model_source(self) -> str:
        """What to load the model from: the config path beside the request, else ``model``."""
        return self._model_path or self.model

    def pools(self) -> list[GpuPool]:
        items: list[Union[str, GpuPool]] = list(self.gpus or []) or [self.gpu]
        return [GpuPool(type=i) if isinstance(i, str) else i for i in items]


def parse_request(data: Any, *, file: str | None = None) -> ParallelRequest:
    """Validate a request mapping; a malformed one raises one InputError naming the field.

    With ``file``, a relative ``model`` path is read from the file's folder where it exists
    there (as the trace is), else from the current folder."""
    if not isinstance(data, dict):
        raise InputError("request is not a mapping", file=file, expected="a YAML/JSON object")
    try:
        req = ParallelRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after")
                       and str(p) not in ("str", "dict"))
        raise from_validation_error(exc, file=file, expected=_expected_for(loc)) from None
    if file is not None:
        from costmodels.model import model_beside
        source = model_beside(req.model, Path(file).resolve().parent)
        if source != req.model:
            req._model_path = source
    return req


def input_files(data: Any, base_dir: str | Path | None = None) -> list[Path]:
    """The files a request (a mapping, as read) reads besides itself: its trace and its model's
    config.json, resolved as the search resolves them (relative to ``base_dir``, the request's
    folder); existing files only.  Outputs must never be written over them."""
    from costmodels.model import model_beside, model_config_file
    if not isinstance(data, dict):
        return []
    base = Path(base_dir) if base_dir is not None else Path(".")
    found: list[Path] = []
    w = data.get("workload")
    if isinstance(w, dict) and isinstance(w.get("trace"), str) and w["trace"].strip():
        t = Path(w["trace"])
        found.append(t if t.is_absolute() else base / t)
    if isinstance(data.get("model"), str) and data["model"].strip():
        cfg = model_config_file(model_beside(data["model"], base.resolve()))
        found += [cfg] if cfg is not None else []
    return [p for p in found if p.is_file()]


def _expected_for(loc: str) -> str | None:
    hints = {"model": "a model alias or config.json path", "workload": "trace, or input_len + output_len",
             "workload.rate_rps": f"a rate in req/s of at least {MIN_RATE_RPS:g}", "engine": "vllm | sglang",
             "workload.input_len": "a whole number of tokens, or [[tokens, weight], ...]",
             "workload.output_len": "a whole number of tokens, or [[tokens, weight], ...]",
             "workload.seed": "an integer >= 0",
             "dtype": "bf16 | fp16 | fp8", "kv_dtype": "bf16 | fp16 | fp8", "slo": "ttft_s / tpot_s in seconds",
             "slo.ttft_s": "finite seconds above 0", "slo.tpot_s": "finite seconds above 0", "gpu": "a GPU name",
             "gpus": "a list of GPU names or {type, nodes, gpus_per_node, price_per_hour}",
             "price_per_hour": "a finite price above 0 in $/GPU-hour",
             "search.disaggregation": "auto | on | off",
             "search.objective": "goodput_per_dollar | goodput_per_gpu"}
    if not loc:
        return None
    return hints.get(loc) or hints.get(loc.split(".")[-1]) or \
        hints.get(loc.split(".")[0] if "." not in loc else "")


# ==================================================================================== workload
def load_workload(spec: WorkloadSpec, *, base_dir: Path | None = None) -> Trace:
    """The request trace the search simulates (deterministic for a given seed)."""
    rng = np.random.default_rng(spec.seed)
    if spec.trace:
        path = Path(spec.trace)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        trace = read_trace(path)
        if len(trace) > spec.num_requests:
            trace = Trace(trace.arrival_s[:spec.num_requests], trace.input_len[:spec.num_requests],
                          trace.output_len[:spec.num_requests])
        if spec.rate_rps:
            trace = trace.scaled_to_rate(spec.rate_rps)
        else:  # the trace's own rate: it must span some time (rate_series says so the same way)
            from planner import workload as wl
            wl.require_span(wl.Trace(trace.arrival_s, trace.input_len, trace.output_len, str(path)))
        return trace
    n = spec.num_requests
    ins = _lengths(spec.input_len, n, rng, "workload.input_len")
    outs = _lengths(spec.output_len, n, rng, "workload.output_len")
    rate = spec.rate_rps or 1.0
    if spec.arrival == "poisson":
        gaps = rng.exponential(1.0 / rate, n)
        gaps[0] = 0.0
        arr = np.cumsum(gaps)
    else:
        arr = np.arange(n, dtype=float) / rate
    return Trace(arr, ins, outs)


def _lengths(spec: LengthSpec, n: int, rng: np.random.Generator, field_name: str) -> np.ndarray:
    """``n`` request lengths drawn from a length spec (checked by :func:`check_lengths`)."""
    if isinstance(spec, int):
        return np.full(n, spec, dtype=np.int64)
    lens = np.array([int(p[0]) for p in spec], dtype=np.int64)
    w = np.array([float(p[1]) for p in spec], dtype=float)
    if not np.isfinite(w.sum()):  # huge weights: scale them first, their sum overflows
        w = w / w.max()
    return rng.choice(lens, size=n, p=w / w.sum())


_TIME_COLS = ("arrival_s", "arrival_time", "timestamp", "time", "TIMESTAMP")
_IN_COLS = ("input_len", "input_tokens", "prompt_tokens", "prompt_len", "ContextTokens", "num_prefill_tokens")
_OUT_COLS = ("output_len", "output_tokens", "completion_tokens", "GeneratedTokens", "num_decode_tokens")


def read_trace(path: Path) -> Trace:
    """Read a CSV or JSONL trace: an arrival column (seconds, or timestamps), prompt and output tokens.

    Uses :func:`planner.workload.read_trace` (Azure, BurstGPT, JSONL) when that module is
    present; otherwise accepts the column names above.
    """
    try:  # the fleet engineer's workload module, when it has landed
        from planner import workload as _wl  # type: ignore
        reader = getattr(_wl, "read_trace", None)
    except ImportError:
        reader = None
    import pandas as pd
    if not path.exists():
        raise InputError("trace file not found", file=str(path), field="workload.trace")
    if reader is not None:  # planner.workload.read_trace -> Trace(arrival_s, input_tokens, output_tokens)
        t = reader(path)
        ins = getattr(t, "input_tokens", None)
        outs = getattr(t, "output_tokens", None)
        if ins is not None and outs is not None:
            return _sorted_trace(np.asarray(t.arrival_s, dtype=float), np.asarray(ins), np.asarray(outs), path)
    try:
        if path.suffix.lower() in (".jsonl", ".json"):
            df = pd.read_json(path, lines=path.suffix.lower() == ".jsonl")
        else:
            df = pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read trace: {str(exc).splitlines()[0]}", file=str(path),
                         field="workload.trace", expected="CSV or JSONL") from None

    def col(names: tuple[str, ...], what: str) -> str:
        for c in names:
            if c in df.columns:
                return c
        raise InputError(f"trace has no {what} column", file=str(path), field="workload.trace",
                         expected=" | ".join(names))

    tc, ic, oc = col(_TIME_COLS, "arrival"), col(_IN_COLS, "prompt-length"), col(_OUT_COLS, "output-length")
    times = df[tc]
    if pd.api.types.is_numeric_dtype(times):
        arr = times.to_numpy(dtype=float)
    else:
        ts = pd.to_datetime(times, errors="coerce", format="mixed")
        if ts.isna().any():
            raise InputError("unreadable arrival timestamps", file=str(path), field=f"workload.trace:{tc}",
                             expected="seconds or ISO timestamps")
        arr = (ts - ts.min()).dt.total_seconds().to_numpy()
    return _sorted_trace(arr, df[ic].to_numpy(), df[oc].to_numpy(), path)


def _sorted_trace(arr: np.ndarray, ins: np.ndarray, outs: np.ndarray, path: Path) -> Trace:
    if arr.size < 2:
        raise InputError("trace needs at least 2 requests", file=str(path), field="workload.trace")
    ins = np.maximum(np.asarray(ins, dtype=np.int64), 1)
    outs = np.maximum(np.asarray(outs, dtype=np.int64), 1)
    order = np.argsort(arr, kind="stable")
    arr = arr[order] - arr[order][0]
    return Trace(arr, ins[order], outs[order])


# ==================================================================================== shapes
@dataclass(frozen=True)
class Shape:
    """One engine instance (a replica, or a prefill / decode instance).

    ``tp`` x ``pp`` GPUs.  With attention data-parallelism (``attn_dp`` > 1) the replica is
    SGLang's ``--tp-size tp --dp-size attn_dp --enable-dp-attention``: attention groups of
    ``tp / attn_dp`` ranks, routed experts over ``ep = tp`` GPUs.  ``pp_layers`` lists the
    decoder layers per stage.
    """

    gpu: str
    tp: int
    pp: int = 1
    ep: int = 1
    attn_dp: int = 1
    pp_layers: tuple[int, ...] = ()

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def attn_tp(self) -> int:
        return self.tp // self.attn_dp

    def label(self) -> str:
        s = f"TP{self.tp}"
        if self.pp > 1:
            s += f"-PP{self.pp}" + ("" if _even(self.pp_layers) else "[" + "/".join(map(str, self.pp_layers)) + "]")
        if self.attn_dp > 1:
            s += f"-DPattn{self.attn_dp}"
        if self.ep > 1:
            s += f"-EP{self.ep}"
        return s

    def as_dict(self) -> dict[str, Any]:
        d = {"gpu": self.gpu, "gpus": self.gpus, "tp": self.tp, "pp": self.pp, "ep": self.ep,
             "attention_dp": self.attn_dp, "attention_tp": self.attn_tp}
        if self.pp > 1:
            d["pp_layers"] = list(self.pp_layers)
        return d


def _even(layers: tuple[int, ...]) -> bool:
    return not layers or max(layers) - min(layers) <= 1 and list(layers) == sorted(layers, reverse=True)


@dataclass
class Pool:
    """A GPU type with its cluster and price."""

    accel: Accelerator
    node: NodeType
    cluster: Cluster
    price_per_hour: float

    @property
    def gpus(self) -> int:
        return self.cluster.num_gpus


def build_pools(req: ParallelRequest) -> list[Pool]:
    pools = []
    for i, p in enumerate(req.pools()):
        fld = f"gpus[{i}]" if req.gpus else "gpu"
        accel = get_accelerator(p.type, field=fld)
        node_name = p.node or req.cluster.node
        node = get_node(node_name, field="cluster.node") if node_name else _default_node(accel)
        gpn = p.gpus_per_node or req.cluster.gpus_per_node or node.gpus_per_node
        if node.gpus_per_node != gpn:
            node = node.model_copy(update={"gpus_per_node": gpn, "name": f"{node.name}-{gpn}gpu"})
        scale_up = accel.scale_up
        if req.cluster.intra_node_bandwidth_gbs:
            scale_up = scale_up.model_copy(update={"bandwidth_bytes_per_s": req.cluster.intra_node_bandwidth_gbs * 1e9})
        if req.cluster.inter_node_bandwidth_gbs:
            node = node.model_copy(update={"scale_out": node.scale_out.model_copy(
                update={"bandwidth_bytes_per_s": req.cluster.inter_node_bandwidth_gbs * 1e9})})
        price = p.price_per_hour if p.price_per_hour is not None else accel.price_per_hour
        if price is None or not (math.isfinite(price) and price > 0):
            what = "no catalog price" if price is None else f"a catalog price of {price:g} $/GPU-hour"
            raise InputError(f"{accel.name} has {what}", field=f"{fld}.price_per_hour",
                             expected="a price above 0 in $/GPU-hour")
        nodes = p.nodes or req.cluster.nodes
        if nodes * gpn > MAX_POOL_GPUS:
            where = (f"{fld}.nodes" if p.nodes else "cluster.nodes") if nodes > 1 else \
                (f"{fld}.gpus_per_node" if p.gpus_per_node else "cluster.gpus_per_node")
            raise InputError(f"the {accel.name} pool has {nodes:,} x {gpn:,} = {nodes * gpn:,} GPUs, more than "
                             f"{MAX_POOL_GPUS:,}", field=where,
                             expected=f"at most {MAX_POOL_GPUS:,} GPUs per GPU type (nodes x gpus_per_node)")
        pools.append(Pool(accel, node, Cluster(node, nodes, scale_up), float(price)))
    return pools


def _default_node(accel: Accelerator) -> NodeType:
    try:
        return default_node_for(accel)
    except InputError:
        return NodeType(name=f"{accel.name}-8", accelerator=accel.name, gpus_per_node=8, scale_out=accel.host_link)


def _pow2_upto(n: int) -> list[int]:
    out, v = [], 1
    while v <= n:
        out.append(v)
        v *= 2
    return out


def enumerate_shapes(model: ModelSpec, pool: Pool, search: SearchSpec, log: SearchLog) -> list[Shape]:
    """Engine shapes on one GPU pool, with structural pruning (heads, layers, experts, cluster size)."""
    gpn, total = pool.cluster.gpus_per_node, pool.gpus
    tps = _pow2_upto(max(total, 1))
    pps = [p for p in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32) if p <= search.max_pp]
    moe = model.moe
    modes = ["none"] if moe is None else ["tp_experts", "ep"] + (["attn_dp"] if search.attention_dp else [])
    heads = model.num_attention_heads

    def rules_for() -> list:
        return [
            ("cluster", lambda c: f"needs {c['tp'] * c['pp']} GPUs, the {pool.accel.name} pool has {total}"
             if c["tp"] * c["pp"] > total else None),
            ("tp_spans_nodes", lambda c: f"TP={c['tp']} would span nodes of {gpn} GPUs (all-reduce over the NIC)"
             if c["tp"] > gpn and c["mode"] != "attn_dp" else None),
            ("heads", lambda c: f"TP={c['tp'] if c['mode'] != 'attn_dp' else c['tp']} does not divide the "
                                f"{heads} attention heads"
             if (c["tp"] if c["mode"] != "attn_dp" else min(c["tp"], gpn)) > 0 and
             heads % (c["tp"] if c["mode"] != "attn_dp" else _attn_tp_for(c["tp"], gpn)) else None),
            ("layers", lambda c: f"PP={c['pp']} exceeds the {model.num_layers} layers" if c["pp"] > model.num_layers
             else None),
            ("experts", lambda c: _expert_rule(model, c)),
        ]

    cands = enumerate_space({"tp": tps, "pp": pps, "mode": modes}, rules_for(), log=log)
    shapes: list[Shape] = []
    for c in cands:
        tp, pp, mode = c["tp"], c["pp"], c["mode"]
        if mode == "attn_dp":
            # attention groups of one GPU (pure DP attention) and of a whole node (TP inside a node)
            for attn_tp in sorted({1, _attn_tp_for(tp, gpn)}):
                if tp // attn_tp < 2 or heads % attn_tp:
                    continue
                shapes.append(Shape(pool.accel.name, tp, 1, tp, tp // attn_tp))
            continue
        ep = tp if mode == "ep" else 1
        for split in _pp_splits(model, pp, search.uneven_pp):
            shapes.append(Shape(pool.accel.name, tp, pp, ep, 1, split))
    return shapes


def _attn_tp_for(tp: int, gpn: int) -> int:
    return min(tp, gpn)


def _expert_rule(model: ModelSpec, c: dict) -> str | None:
    mode, tp, pp = c["mode"], c["tp"], c["pp"]
    if model.moe is None:
        return None
    e = model.moe.num_experts
    if mode == "ep" and tp == 1:
        return "EP over a TP group of 1 is the same as no EP"
    if mode in ("ep", "attn_dp") and e % tp:
        return f"EP={tp} does not divide the {e} experts"
    if mode == "attn_dp" and (pp > 1 or tp < 2):
        return "attention data-parallelism is searched with PP=1 and at least 2 GPUs"
    return None


def _pp_splits(model: ModelSpec, pp: int, uneven: bool) -> list[tuple[int, ...]]:
    """Layer splits over ``pp`` stages: the even one and, when asked, the last stage lighter by one
    or two layers (it carries the LM head) - balanced splits."""
    L = model.num_layers
    if pp == 1:
        return [(L,)]
    base, extra = divmod(L, pp)
    even = tuple(base + (1 if i < extra else 0) for i in range(pp))
    splits = [even]
    if uneven:
        for d in (1, 2):
            last = base - d
            if last < 1:
                break
            rest = L - last
            b2, e2 = divmod(rest, pp - 1)
            s = tuple(b2 + (1 if i < e2 else 0) for i in range(pp - 1)) + (last,)
            if s not in splits:
                splits.append(s)
    return splits


# ==================================================================================== evaluation
@dataclass
class ShapeModel:
    """Everything fixed for one shape: context, links, memory, KV capacity, cost table."""

    shape: Shape
    ctx: CostContext
    links: dict[str, LinkModel]
    memory: MemoryBreakdown
    kv_tokens: int              # KV-cache capacity of the whole replica, tokens
    lanes: int                  # independent scheduling lanes (pp micro-batch lanes)
    limits: EngineLimits        # per lane
    cost: IterationCostTable    # per lane iteration time
    stage_imbalance: float

    def ops_for(self, it: Iteration) -> list[Op]:
        return _ops_for(self.ctx, self.shape, it)

    def breakdown(self, it: Iteration) -> list[OpTime]:
        return [op_time(o, self.ctx.accel, dtype=self.ctx.dtype, eff=self.ctx.eff, links=self.links,
                        tp=self.shape.attn_tp) for o in self.ops_for(it)]


def _ops_for(ctx: CostContext, shape: Shape, it: Iteration) -> list[Op]:
    kw = dict(weight_bytes=ctx.weight_bytes, act_bytes=ctx.act_bytes, kv_bytes=ctx.kv_bytes)
    if shape.attn_dp > 1:
        return attention_dp_forward_ops(ctx.model, shape.tp, shape.attn_dp, it, **kw)
    return forward_ops(ctx.model, Parallel(shape.tp, shape.pp, shape.ep), it, **kw)


def _links(pool: Pool, shape: Shape) -> dict[str, LinkModel]:
    if shape.attn_dp > 1:
        c = pool.cluster
        return {"tp": LinkModel.from_link(c.tier_for_group(shape.attn_tp).link),
                "ep": LinkModel.from_link(c.tier_for_group(shape.tp).link),
                "pp": LinkModel.from_link(c.tier_for_group(shape.tp).link)}
    return links_for(pool.cluster, Parallel(shape.tp, shape.pp, shape.ep))


def _stage_memory(model: ModelSpec, shape: Shape, accel: Accelerator, weight_b: float, kv_b: float,
                  max_tokens: int, util: float) -> tuple[MemoryBreakdown, int]:
    """Memory on the busiest stage and the replica's KV capacity (tokens) for a layer split."""
    if shape.attn_dp > 1:
        mem = attention_dp_memory_breakdown(model, shape.tp, shape.attn_dp, accel.memory_bytes,
                                            weight_bytes=weight_b, max_batched_tokens=max(1, max_tokens // shape.attn_dp),
                                            gpu_memory_utilization=util)
        per_tok = kv_bytes_per_token_per_gpu(model, Parallel(shape.attn_tp), kv_b)
        return mem, int(shape.attn_dp * max(0.0, mem.kv_cache) // per_tok)
    par = Parallel(shape.tp, shape.pp, shape.ep)
    base = memory_breakdown(model, par, accel.memory_bytes, weight_bytes=weight_b, max_batched_tokens=max_tokens,
                            gpu_memory_utilization=util)
    per_layer_kv = kv_bytes_per_token_per_gpu(model, Parallel(shape.tp, 1, shape.ep), kv_b) / model.num_layers
    layers = list(shape.pp_layers or (model.num_layers,))
    worst_kv_tokens, worst = math.inf, None
    for n, p in zip(layers, stage_weight_params(model, par, layers)):
        w = p * weight_b
        kv = base.total - base.reserved - base.activations - w
        tokens = kv / (n * per_layer_kv) if n else math.inf
        if worst is None or tokens < worst_kv_tokens:
            worst_kv_tokens, worst = tokens, MemoryBreakdown(base.total, w, kv, base.activations, base.reserved)
    return worst, int(max(0.0, worst_kv_tokens))


def _stage_imbalance(ctx: CostContext, shape: Shape, links: dict[str, LinkModel]) -> float:
    """pp x (busiest stage time) / (sum of stage times) at a mid-size decode iteration (>= 1)."""
    if shape.pp <= 1:
        return 1.0
    model = ctx.model
    it = Iteration.decode(32, 1024)
    par = Parallel(shape.tp, shape.pp, shape.ep)
    kw = dict(weight_bytes=ctx.weight_bytes, act_bytes=ctx.act_bytes, kv_bytes=ctx.kv_bytes)

    def t(ops: list[Op]) -> float:
        return sum(op_time(o, ctx.accel, dtype=ctx.dtype, eff=ctx.eff, links=links, tp=shape.tp).time_s for o in ops)

    t_dense = t(layer_ops(model, par, it, moe_layer=False, **kw))
    t_moe = t(layer_ops(model, par, it, moe_layer=True, **kw)) if model.moe else t_dense
    full = forward_ops(model, par, it, **kw)
    t_head = t([o for o in full if o.name in ("lm_head", "final_norm")])
    t_emb = t([o for o in full if o.name == "embedding"])
    stages, layer = [], 0
    for s, n in enumerate(shape.pp_layers):
        v = sum(t_moe if model.is_moe_layer(i) else t_dense for i in range(layer, layer + n))
        layer += n
        v += t_emb if s == 0 else 0.0
        v += t_head if s == shape.pp - 1 else 0.0
        stages.append(v)
    return shape.pp * max(stages) / sum(stages)


def build_shape_models(model: ModelSpec, pool: Pool, shape: Shape, *, dtype: str, kv_dtype: str | None,
                       search: SearchSpec, phases: list[str]) -> dict[str, ShapeModel]:
    """:func:`build_shape_model` for several phases sharing one iteration-cost table."""
    out: dict[str, ShapeModel] = {}
    cost = None
    for ph in sorted(phases, key=lambda x: x != "prefill"):  # prefill has the largest token budget
        sm = build_shape_model(model, pool, shape, dtype=dtype, kv_dtype=kv_dtype, search=search, phase=ph,
                               cost=cost)
        cost = sm.cost
        out[ph] = sm
    return {ph: out[ph] for ph in phases}


def build_shape_model(model: ModelSpec, pool: Pool, shape: Shape, *, dtype: str, kv_dtype: str | None,
                      search: SearchSpec, phase: str, cost: IterationCostTable | None = None) -> ShapeModel:
    """Cost context, memory, KV capacity and the fast iteration-cost table of one shape and phase
    (``cost``: reuse a table built for the same shape, covering at least this phase's budget)."""
    accel = pool.accel
    links = _links(pool, shape)
    ctx_par = Parallel(shape.attn_tp, 1, 1) if shape.attn_dp > 1 else Parallel(shape.tp, shape.pp, shape.ep)
    ctx = make_context(model, accel, ctx_par, dtype=dtype, kv_dtype=kv_dtype, node=pool.node, links=links,
                       gpu_memory_utilization=search.gpu_memory_utilization)
    budget = search.prefill_max_num_batched_tokens if phase == "prefill" else search.max_num_batched_tokens
    seqs = search.max_num_seqs
    if shape.attn_dp > 1:  # one scheduler per attention group; the replica is their sum
        budget_r, seqs_r = budget * shape.attn_dp, seqs * shape.attn_dp
    else:
        budget_r, seqs_r = budget, seqs
    mem, kv_tokens = _stage_memory(model, shape, accel, ctx.weight_bytes, ctx.kv_bytes,
                                   budget if shape.attn_dp == 1 else budget, search.gpu_memory_utilization)
    imbalance = _stage_imbalance(ctx, shape, links)
    lanes = shape.pp
    limits = EngineLimits(kv_capacity_tokens=kv_tokens // lanes, max_num_seqs=seqs_r,
                          max_num_batched_tokens=budget_r)
    if cost is None or cost.max_tokens < budget_r + seqs_r:
        cost = IterationCostTable(
            lambda it: _ops_for(ctx, shape, it),
            lambda o: op_time(o, accel, dtype=ctx.dtype, eff=ctx.eff, links=links, tp=shape.attn_tp).time_s,
            lambda o: op_roofline_params(ctx, o),
            max_tokens=budget_r + seqs_r, max_seqs=seqs_r, time_scale=imbalance)
    return ShapeModel(shape, ctx, links, mem, kv_tokens, lanes, limits, cost, imbalance)


@dataclass
class PhaseEval:
    """One shape evaluated for one phase: per-instance goodput and the metrics at it."""

    shape: Shape
    phase: str
    goodput_rps: float             # per instance
    ttft_p_s: float
    tpot_p_s: float
    ttft_p50_s: float
    tpot_p50_s: float
    throughput_tokens_per_s: float  # output tokens/s per instance at goodput
    max_rate_rps: float             # fluid upper bound per instance
    binding: str                    # what stops a higher rate: "ttft" | "tpot" | "throughput" | ...
    preemptions: int
    simulations: int
    sm: ShapeModel
    notes: list[str] = field(default_factory=list)


@dataclass
class Workload:
    """The trace plus derived per-phase traces and statistics the evaluation reuses."""

    trace: Trace
    slo: SloSpec
    rate_rps: float | None

    @property
    def mean_in(self) -> float:
        return float(self.trace.input_len.mean())

    @property
    def mean_out(self) -> float:
        return float(self.trace.output_len.mean())


def _sim_metrics(res: SimResult, slo: SloSpec) -> tuple[float, float, float, float]:
    ttft_p = percentile(res.ttft_s, slo.p_ttft)
    tpot_p = percentile(res.tpot_s, slo.p_tpot)
    return ttft_p, tpot_p, percentile(res.ttft_s, 50), percentile(res.tpot_s, 50)


#: share of the TTFT SLO a disaggregated plan gives to waiting for a decode slot (the prefill
#: instance, its queue and the KV transfer get the rest)
DECODE_WAIT_SHARE = 0.1


def phase_slo(slo: SloSpec, phase: str) -> SloSpec:
    """The SLO one phase is held to: aggregated replicas the request's; a prefill instance
    (1 - DECODE_WAIT_SHARE) of the TTFT and no TPOT; a decode instance the TPOT plus a bound on
    the wait for a decode slot (DECODE_WAIT_SHARE of the TTFT, else 20 x TPOT), which keeps it
    out of overload."""
    if phase == "prefill":
        return slo.model_copy(update={"ttft_s": None if slo.ttft_s is None else slo.ttft_s * (1 - DECODE_WAIT_SHARE),
                                      "tpot_s": None})
    if phase == "decode":
        wait = slo.ttft_s * DECODE_WAIT_SHARE if slo.ttft_s is not None else 20.0 * (slo.tpot_s or 0.05)
        return slo.model_copy(update={"ttft_s": wait})
    return slo


def evaluate_phase(sm: ShapeModel, wl: Workload, phase: str, *, kv_transfer_s: np.ndarray | None = None,
                   rel_tol: float = 0.03) -> PhaseEval | tuple[str, str]:
    """Goodput of one instance for ``phase`` by bisection over rate; or (rule, reason) when pruned."""
    slo = phase_slo(wl.slo, phase)
    trace = wl.trace
    if phase == "prefill":
        trace = Trace(trace.arrival_s, trace.input_len, np.ones_like(trace.output_len))
    limits = sm.limits
    n = len(trace)
    # --- zero-load checks: the SLO is unreachable at any rate -----------------------------
    p_in = int(np.percentile(trace.input_len, slo.p_ttft, method="higher"))
    p_ctx = float(np.percentile(trace.input_len + trace.output_len / 2.0, slo.p_tpot, method="higher"))
    longest = int((trace.input_len + trace.output_len).max())
    if longest > limits.kv_capacity_tokens:
        return ("kv_capacity", f"KV capacity {limits.kv_capacity_tokens} tokens per lane is below the longest "
                               f"request ({longest} tokens)")
    extra = float(np.percentile(kv_transfer_s, slo.p_ttft)) if kv_transfer_s is not None else 0.0
    if phase in ("both", "prefill") and slo.ttft_s is not None:
        ttft0 = sm.cost.prefill_s(p_in, limits.max_num_batched_tokens) + extra
        if ttft0 > slo.ttft_s:
            return ("slo_unreachable", f"p{slo.p_ttft:g} TTFT at zero load is {ttft0:.3g} s > SLO {slo.ttft_s:g} s")
    if phase in ("both", "decode") and slo.tpot_s is not None:
        tpot0 = sm.cost.decode_s(1, p_ctx)
        if tpot0 > slo.tpot_s:
            return ("slo_unreachable", f"TPOT at zero load is {tpot0:.3g} s > SLO {slo.tpot_s:g} s")
    ub = fluid_max_rate_rps(sm.cost, limits, float(trace.input_len.mean()),
                            1.0 if phase == "prefill" else float(trace.output_len.mean()))
    if phase == "decode":  # no prefill compute on a decode instance
        batch = int(max(1, min(limits.max_num_seqs, limits.kv_capacity_tokens //
                               max(1.0, float(trace.input_len.mean() + trace.output_len.mean())))))
        ub = batch / (float(trace.output_len.mean()) * sm.cost.decode_s(batch, float(
            trace.input_len.mean() + trace.output_len.mean() / 2.0)))
    memo: dict[tuple[float, int], tuple[bool, SimResult, str]] = {}
    prefix = min(n, BISECTION_REQUESTS)
    occupancy = float(trace.input_len.mean() + trace.output_len.mean() / 2.0)
    max_conc = min(limits.max_num_seqs, limits.kv_capacity_tokens / occupancy)

    def run(rate: float, m: int = n) -> tuple[bool, SimResult, str]:
        key = (rate, m)
        if key in memo:
            return memo[key]
        tr = trace if m == n else Trace(trace.arrival_s[:m], trace.input_len[:m], trace.output_len[:m])
        tr = tr.scaled_to_rate(rate)
        allowed = int((1 - slo.p_ttft / 100.0) * m) + int((1 - slo.p_tpot / 100.0) * m)
        res = simulate(tr, sm.cost, limits, prefilled=(phase == "decode"),
                       ttft_offset_s=None if kv_transfer_s is None else kv_transfer_s[:m],
                       ttft_slo_s=slo.ttft_s, tpot_slo_s=slo.tpot_s if phase != "prefill" else None,
                       max_violations=allowed)
        if res.aborted:
            out = (False, res, "slo")
        elif phase != "prefill" and not little_stable(rate, res.mean_decode_residence_s(), max_conc):
            out = (False, res, "throughput")
        else:
            ttft_p, tpot_p, _, _ = _sim_metrics(res, slo)
            why = ""
            if slo.ttft_s is not None and ttft_p > slo.ttft_s:
                why = "ttft" if phase != "decode" else "decode_wait"
            elif phase != "prefill" and slo.tpot_s is not None and tpot_p > slo.tpot_s:
                why = "tpot"
            out = (not why, res, why)
        memo[key] = out
        return out

    # bisection over the lane's rate on a prefix of the trace: first inside [ub/4, ub], where the
    # goodput usually lies, else [ub/64, ub/4]; then confirm on the whole trace, stepping down
    lane_ub = ub
    calls = 0
    for _ in range(3):  # the fluid estimate is not a strict bound (mixed iterations beat it): grow
        calls += 1
        if not run(lane_ub, prefix)[0]:
            break
        lane_ub *= 2.0
    good, c1 = bisect_max(lambda r: run(r, prefix)[0], lane_ub / 4.0, lane_ub, rel_tol=rel_tol)
    calls += c1
    if good <= 0:
        good, c2 = bisect_max(lambda r: run(r, prefix)[0], lane_ub / 64.0, lane_ub / 4.0, rel_tol=rel_tol)
        calls += c2
    if good > 0 and prefix < n:
        for _ in range(12):
            calls += 1
            if run(good)[0]:
                break
            good /= 1.0 + rel_tol
        else:
            good = 0.0
    if good <= 0:
        return ("slo_unreachable", f"SLOs missed even at {lane_ub / 64.0 * sm.lanes:.3g} req/s per instance "
                                   f"(queueing on a single request already breaks them)")
    ok, res, _ = run(good)
    above = [memo[key] for key in sorted(memo) if key[0] > good and not memo[key][0]]
    binding = "throughput"
    if above:
        binding = above[0][2] or "throughput"
        if binding == "slo":
            tt, tp, _, _ = _sim_metrics(above[0][1], slo)
            binding = "tpot" if (slo.tpot_s is not None and phase != "prefill" and tp > slo.tpot_s) else \
                ("decode_wait" if phase == "decode" else "ttft")
    ttft_p, tpot_p, ttft50, tpot50 = _sim_metrics(res, slo)
    thr = res.throughput_tokens_per_s * sm.lanes
    return PhaseEval(sm.shape, phase, good * sm.lanes, ttft_p, tpot_p if phase != "prefill" else 0.0, ttft50,
                     tpot50 if phase != "prefill" else 0.0, thr, ub * sm.lanes, binding, res.preemptions, calls, sm)


def kv_transfer_times_s(model: ModelSpec, input_len: np.ndarray, kv_bytes: float, link: LinkModel,
                        parallel_links: int) -> np.ndarray:
    """Seconds to move each request's prompt KV from a prefill to a decode instance.

    The KV of all layers (``model.kv_bytes_for_sequence``) moves over ``parallel_links`` GPU
    links at once (each prefill GPU sends its shard), plus one message latency and overhead.
    """
    return kv_transfer_s(model, input_len.astype(float), kv_bytes, link, parallel_links)


def pick_pp_splits(model: ModelSpec, pool: Pool, shapes: list[Shape], *, dtype: str, kv_dtype: str | None,
                   search: SearchSpec, log: SearchLog) -> list[Shape]:
    """Keep one layer split per (TP, PP, EP) family, chosen analytically: the split with the
    smallest stage imbalance (busiest stage time x PP / total) among those whose KV capacity is
    within 10% of the family's best.  The others are logged as pruned ("pp_split")."""
    families: dict[tuple, list[Shape]] = {}
    for sh in shapes:
        families.setdefault((sh.tp, sh.pp, sh.ep, sh.attn_dp), []).append(sh)
    kept: list[Shape] = []
    for fam in families.values():
        if len(fam) == 1:
            kept.append(fam[0])
            continue
        scored = []
        for sh in fam:
            try:
                links = _links(pool, sh)
                ctx = make_context(model, pool.accel, Parallel(sh.tp, sh.pp, sh.ep), dtype=dtype, kv_dtype=kv_dtype,
                                   node=pool.node, links=links, gpu_memory_utilization=search.gpu_memory_utilization)
            except InputError:
                kept.append(sh)  # let the main loop record the layout error
                break
            _, kv = _stage_memory(model, sh, pool.accel, ctx.weight_bytes, ctx.kv_bytes,
                                  search.max_num_batched_tokens, search.gpu_memory_utilization)
            scored.append((sh, kv, _stage_imbalance(ctx, sh, links)))
        else:
            best_kv = max(kv for _, kv, _ in scored)
            ok = [x for x in scored if x[1] >= 0.9 * best_kv] or scored
            win = min(ok, key=lambda x: (x[2], -x[1]))
            kept.append(win[0])
            for sh, kv, imb in scored:
                if sh is not win[0]:
                    log.prune(sh.as_dict(), "pp_split",
                              f"layer split {list(sh.pp_layers)} (stage imbalance {imb:.3f}, KV {kv} tokens) loses to "
                              f"{list(win[0].pp_layers)} (imbalance {win[2]:.3f}, KV {win[1]} tokens)")
    return kept


# ==================================================================================== plans
@dataclass
class Plan:
    """One ranked plan (aggregated: ``decode`` is None)."""

    kind: str                     # "aggregated" | "disaggregated"
    pool: str
    prefill: PhaseEval            # aggregated: the replica's evaluation
    decode: PhaseEval | None
    n_prefill: int                # aggregated: dp
    n_decode: int
    price_per_hour: float
    rate_rps: float | None
    kv_transfer_tier: str = ""
    kv_transfer_p50_s: float = 0.0
    decode_pool: str | None = None              # another GPU type for the decode instances
    decode_price_per_hour: float | None = None

    @property
    def disaggregated(self) -> bool:
        return self.decode is not None

    @property
    def gpus(self) -> int:
        g = self.n_prefill * self.prefill.shape.gpus
        if self.decode:
            g += self.n_decode * self.decode.shape.gpus
        return g

    @property
    def goodput_rps(self) -> float:
        if self.decode is None:
            return self.n_prefill * self.prefill.goodput_rps
        return min(self.n_prefill * self.prefill.goodput_rps, self.n_decode * self.decode.goodput_rps)

    @property
    def cost_per_hour(self) -> float:
        cost = self.n_prefill * self.prefill.shape.gpus * self.price_per_hour
        if self.decode is not None:
            cost += self.n_decode * self.decode.shape.gpus * (self.decode_price_per_hour or self.price_per_hour)
        return cost

    @property
    def meets_rate(self) -> bool:
        return self.rate_rps is None or self.goodput_rps >= self.rate_rps * (1 - 1e-9)

    def score(self, objective: str) -> float:
        served = self.goodput_rps if self.rate_rps is None else min(self.goodput_rps, self.rate_rps)
        denom = self.cost_per_hour if objective == "goodput_per_dollar" else self.gpus
        return served / denom if denom > 0 else 0.0

    @property
    def ttft_s(self) -> float:
        """p TTFT; disaggregated: prefill-side TTFT (queue, prefill, KV transfer) plus the p wait for
        a decode slot (adding percentiles over-estimates: conservative)."""
        return self.prefill.ttft_p_s + (self.decode.ttft_p_s if self.decode else 0.0)

    @property
    def tpot_s(self) -> float:
        return (self.decode or self.prefill).tpot_p_s


def _replicas_for(rate: float | None, per_instance: float, max_count: int) -> int:
    if max_count < 1:
        return 0
    if rate is None or per_instance <= 0:
        return max_count
    return int(min(max_count, max(1, math.ceil(rate / per_instance - 1e-9))))


def aggregated_plan(ev: PhaseEval, pool: Pool, rate: float | None) -> Plan:
    dp_max = pool.gpus // ev.shape.gpus
    return Plan("aggregated", pool.accel.name, ev, None, _replicas_for(rate, ev.goodput_rps, dp_max), 0,
                pool.price_per_hour, rate)


def disaggregated_plan(pe: PhaseEval, de: PhaseEval, pool: Pool, rate: float | None, tier: str,
                       kv_p50: float) -> Plan | None:
    """Counts of prefill and decode instances: just enough for the rate, or the best split of the pool."""
    gp, gd = pe.shape.gpus, de.shape.gpus
    total = pool.gpus
    if gp + gd > total:
        return None
    if rate is not None:
        npf = max(1, math.ceil(rate / pe.goodput_rps - 1e-9))
        nd = max(1, math.ceil(rate / de.goodput_rps - 1e-9))
        if npf * gp + nd * gd <= total:  # else it cannot serve the rate: the pool's best split
            return Plan("disaggregated", pool.accel.name, pe, de, npf, nd, pool.price_per_hour, rate, tier, kv_p50)
    best = None
    for npf in range(1, (total - gd) // gp + 1):
        nd = (total - npf * gp) // gd
        if nd < 1:
            break
        g = min(npf * pe.goodput_rps, nd * de.goodput_rps)
        # fewest GPUs for the same goodput: trim the over-provisioned side
        nd_t = max(1, math.ceil(g / de.goodput_rps - 1e-9))
        np_t = max(1, math.ceil(g / pe.goodput_rps - 1e-9))
        key = (g, -(np_t * gp + nd_t * gd))
        if best is None or key > best[0]:
            best = (key, np_t, nd_t)
    if best is None:
        return None
    return Plan("disaggregated", pool.accel.name, pe, de, best[1], best[2], pool.price_per_hour, rate, tier, kv_p50)


# ==================================================================================== search
@dataclass
class SearchResult:
    plans: list[Plan]                       # ranked, best first (all evaluated plans)
    log: SearchLog
    time_s: float
    plans_evaluated: int
    simulations: int
    shapes_evaluated: int
    request: ParallelRequest
    model: ModelSpec
    workload: Workload
    pools: list[Pool]
    objective: str
    phase_evals: list[PhaseEval]


def search_plans(req: ParallelRequest, *, base_dir: Path | None = None, top_k: int | None = None,
                 file: str | None = None) -> SearchResult:
    """Run the whole search (see the module docstring).  Raises InputError / InfeasibleError;
    an InputError about a request field (unknown GPU or model, no SLO, ...) names ``file``, the
    request file, when it names no file of its own (a trace's or a config's)."""
    try:
        return _search(req, base_dir=base_dir, top_k=top_k)
    except InputError as exc:
        if exc.file is not None or file is None:
            raise
        kw = dict(file=file, field=exc.field, expected=exc.expected, hint=exc.hint)
        if isinstance(exc, InfeasibleError):
            raise InfeasibleError(exc.message, binding=exc.binding, **kw) from None
        raise InputError(exc.message, **kw) from None


def check_context(model: ModelSpec, spec: WorkloadSpec, trace: Trace, trace_file: str | None = None) -> None:
    """Refuse requests longer than the model's context (``max_position_embeddings``, prompt plus
    output): no engine serves them, so no plan does.  Lengths given in the request are checked
    as given (the longest prompt, then the longest prompt plus the longest output); a trace's
    requests one by one."""
    ctx = int(model.max_position_embeddings or 0)
    if ctx <= 0:  # the config does not say
        return
    expected = f"prompt plus output of at most {ctx:,} tokens ({model.name}'s max_position_embeddings)"
    if spec.trace:
        total = trace.input_len.astype(np.int64) + trace.output_len.astype(np.int64)
        over = int((total > ctx).sum())
        if over:
            raise InputError(f"{over} of {len(trace)} requests are longer than {model.name}'s context of "
                             f"{ctx:,} tokens (the longest: {int(total.max()):,} tokens, prompt plus output)",
                             file=trace_file, field="workload.trace", expected=expected)
        return

    def longest(v: LengthSpec) -> int:
        return int(v) if isinstance(v, int) else max(int(p[0]) for p in v)

    lin, lout = longest(spec.input_len), longest(spec.output_len)
    if lin > ctx:
        raise InputError(f"prompts of {lin:,} tokens do not fit {model.name}'s context of {ctx:,} tokens",
                         field="workload.input_len", expected=expected)
    if lin + lout > ctx:
        raise InputError(f"prompts of up to {lin:,} plus outputs of up to {lout:,} tokens exceed "
                         f"{model.name}'s context of {ctx:,} tokens", field="workload.output_len",
                         expected=expected)


def _search(req: ParallelRequest, *, base_dir: Path | None = None, top_k: int | None = None) -> SearchResult:
    t0 = time.perf_counter()
    model = load_model(req.model_source)
    dtype_bytes(req.dtype, field_name="dtype")
    pools = build_pools(req)
    if req.slo.ttft_s is None and req.slo.tpot_s is None:
        raise InputError("no SLO given", field="slo", expected="slo.ttft_s and/or slo.tpot_s in seconds")
    trace = load_workload(req.workload, base_dir=base_dir)
    trace_file = None
    if req.workload.trace:
        trace_file = str(Path(req.workload.trace) if Path(req.workload.trace).is_absolute() or base_dir is None
                         else base_dir / req.workload.trace)
    check_context(model, req.workload, trace, trace_file)
    rate = req.workload.rate_rps if req.workload.rate_rps else (trace.mean_rate_rps if req.workload.trace else None)
    wl = Workload(trace, req.slo, rate)
    search = req.search
    k = top_k or search.top_k
    log = SearchLog()
    phases = ["both"]
    if search.disaggregation in ("auto", "on"):
        phases += ["prefill", "decode"]
    if search.disaggregation == "on":
        phases = ["prefill", "decode"]
    evals: dict[tuple[str, str], list[PhaseEval]] = {}
    all_evals: list[PhaseEval] = []
    sims = 0
    shapes_evaluated = 0
    usable = [p for p in pools if req.dtype in p.accel.flops_per_s or req.dtype in ("bf16", "fp16")]
    for p in pools:
        if p not in usable:
            log.prune({"gpu": p.accel.name}, "dtype", f"{p.accel.name} has no {req.dtype} support")
    if not usable:
        names = ", ".join(p.accel.name for p in pools)
        raise InputError(f"{names} cannot run {req.dtype} weights", field="dtype",
                         expected="bf16 (or a GPU with " + req.dtype + " support, e.g. H100-SXM)")
    for pool in usable:
        shapes = pick_pp_splits(model, pool, enumerate_shapes(model, pool, search, log), dtype=req.dtype,
                                kv_dtype=req.kv_dtype, search=search, log=log)
        models: list[tuple[Shape, dict[str, ShapeModel]]] = []
        for shape in shapes:
            try:
                sms = build_shape_models(model, pool, shape, dtype=req.dtype, kv_dtype=req.kv_dtype,
                                         search=search, phases=phases)
            except InputError as exc:
                log.prune(shape.as_dict(), "layout", exc.message)
                continue
            sm0 = next(iter(sms.values()))
            if not sm0.memory.fits:
                log.prune(shape.as_dict(), "memory",
                          f"{sm0.memory.weights / 1e9:.1f} GB of weights per GPU leave no room for the KV cache")
                continue
            models.append((shape, sms))
        # the KV transfer of a disaggregated plan: a prefill and a decode instance share a node
        # when both fit in one (NVLink); otherwise they talk over the NIC
        min_gpus = min((m[0].gpus for m in models), default=0)
        for ph in phases:
            cands = [{"i": i} for i in range(len(models))]
            if ph != "both":  # a P/D plan needs room for at least one instance of the other phase
                for c in [c for c in cands if models[c["i"]][0].gpus + min_gpus > pool.gpus]:
                    log.prune({**models[c["i"]][0].as_dict(), "phase": ph}, "cluster",
                              "no room left in the pool for an instance of the other phase")
                cands = [c for c in cands if models[c["i"]][0].gpus + min_gpus <= pool.gpus]

            def ub(c: dict, ph=ph) -> float:
                shape, sms = models[c["i"]]
                sm = sms[ph]
                mo = 1.0 if ph == "prefill" else wl.mean_out
                r = OPTIMISM * fluid_max_rate_rps(sm.cost, sm.limits, wl.mean_in, mo) * sm.lanes
                if ph == "both":
                    return _agg_score(r, shape, pool, rate, search.objective)
                return _phase_score(r, shape, pool, search.objective)

            def ev(c: dict, ph=ph):
                nonlocal sims
                shape, sms = models[c["i"]]
                sm = sms[ph]
                kv_t = None
                if ph == "prefill":  # a prefill instance next to a decode one of its size, if a node holds both
                    tier = pool.cluster.tier_for_group(2 * shape.gpus)
                    kv_t = kv_transfer_times_s(model, wl.trace.input_len, sm.ctx.kv_bytes,
                                               LinkModel.from_link(tier.link), shape.gpus)
                res = evaluate_phase(sm, wl, ph, kv_transfer_s=kv_t, rel_tol=search.rate_rel_tol)
                if isinstance(res, tuple):
                    log.prune({**shape.as_dict(), "phase": ph}, res[0], res[1])
                    return None
                sims += res.simulations
                evals.setdefault((pool.accel.name, ph), []).append(res)
                all_evals.append(res)
                score = _agg_score(res.goodput_rps, shape, pool, rate, search.objective) if ph == "both" \
                    else _phase_score(res.goodput_rps, shape, pool, search.objective)
                return (score, res)

            # aggregated shapes: branch and bound on the plan score; per-phase shapes of a
            # disaggregated plan are all evaluated (their pairing is decided afterwards)
            best_first(cands, ub, ev, keep=max(k, 3) if ph == "both" else max(k, 4), log=log)
            shapes_evaluated += len(cands)
    # ---- plans ---------------------------------------------------------------------------
    plans: list[Plan] = []
    plans_evaluated = 0
    for pool in pools:
        for e in evals.get((pool.accel.name, "both"), []):
            plans.append(aggregated_plan(e, pool, rate))
            plans_evaluated += pool.gpus // e.shape.gpus  # every replica count was costed
    # disaggregated pairs: prefill and decode shapes of one pool, and across pools (prefill on one
    # GPU type, decode on another; their KV then crosses the slower of the two pools' NICs)
    for pool_p in pools:
        for pool_d in pools:
            pre = evals.get((pool_p.accel.name, "prefill"), [])
            dec = evals.get((pool_d.accel.name, "decode"), [])
            for pe in pre:
                for de in dec:
                    plans_evaluated += 1
                    p = _pair_plan(pe, de, pool_p, pool_d, rate, model, wl, req.slo)
                    if p is not None:
                        plans.append(p)
    obj = search.objective
    # scores compared to 12 significant digits (relative: a tiny rate gives tiny scores that an
    # absolute rounding would make all equal)
    plans.sort(key=lambda p: (not p.meets_rate, -float(f"{p.score(obj):.12g}"), -p.goodput_rps, p.gpus,
                              p.ttft_s, _plan_label(p)))
    seen: set = set()
    unique = []
    for p in plans:  # keep the best layer split of each (shape, phase) family
        if _family(p) not in seen:
            seen.add(_family(p))
            unique.append(p)
    plans = unique
    elapsed = time.perf_counter() - t0
    result = SearchResult(plans, log, elapsed, plans_evaluated, sims, shapes_evaluated, req, model, wl, pools,
                          obj, all_evals)
    if not plans:
        raise _no_plan_error(result)
    return result


def _pair_plan(pe: PhaseEval, de: PhaseEval, pool_p: Pool, pool_d: Pool, rate: float | None, model: ModelSpec,
               wl: Workload, slo: SloSpec) -> "Plan | None":
    """A disaggregated plan from a prefill and a decode evaluation, with the KV transfer priced on
    the tier between them: NVLink when one instance of each fits a node of the same pool, else the
    NIC (the slower one across pools).  The prefill evaluation assumed NVLink whenever two prefill
    instances fit a node; when the pair crosses the network the TTFT is re-priced and the pair is
    dropped if it then misses the prefill share of the TTFT SLO."""
    gpn = pool_p.cluster.gpus_per_node
    same_pool = pool_p is pool_d
    same_node = same_pool and pe.shape.gpus + de.shape.gpus <= gpn
    if same_node:
        tier, link = "intra-node", pool_p.cluster.tier_for_group(pe.shape.gpus + de.shape.gpus).link
    else:
        tier = "inter-node"
        nics = [pool_p.node.scale_out, pool_d.node.scale_out]
        link = min(nics, key=lambda lk: lk.bandwidth_bytes_per_s * lk.efficiency)
    lm = LinkModel.from_link(link)
    kv_t = kv_transfer_times_s(model, wl.trace.input_len, pe.sm.ctx.kv_bytes, lm, min(pe.shape.gpus, de.shape.gpus))
    assumed = pool_p.cluster.tier_for_group(2 * pe.shape.gpus)
    pe_adj = pe
    if not same_node and assumed.name != "inter-node":
        before = kv_transfer_times_s(model, wl.trace.input_len, pe.sm.ctx.kv_bytes, LinkModel.from_link(assumed.link),
                                     pe.shape.gpus)
        delta = float(np.percentile(kv_t, slo.p_ttft)) - float(np.percentile(before, slo.p_ttft))
        budget = phase_slo(slo, "prefill").ttft_s
        if budget is not None and pe.ttft_p_s + delta > budget:
            return None
        pe_adj = replace(pe, ttft_p_s=pe.ttft_p_s + max(0.0, delta))
    if same_pool:
        return disaggregated_plan(pe_adj, de, pool_p, rate, tier, float(np.median(kv_t)))
    gp, gd = pe.shape.gpus, de.shape.gpus
    np_max, nd_max = pool_p.gpus // gp, pool_d.gpus // gd
    if np_max < 1 or nd_max < 1:
        return None
    if rate is not None and math.ceil(rate / pe.goodput_rps - 1e-9) <= np_max and \
            math.ceil(rate / de.goodput_rps - 1e-9) <= nd_max:
        target = rate
    else:
        target = min(np_max * pe.goodput_rps, nd_max * de.goodput_rps)
    npf = max(1, math.ceil(target / pe.goodput_rps - 1e-9))
    nd = max(1, math.ceil(target / de.goodput_rps - 1e-9))
    return Plan("disaggregated", pool_p.accel.name, pe_adj, de, npf, nd, pool_p.price_per_hour, rate, tier,
                float(np.median(kv_t)), decode_pool=pool_d.accel.name, decode_price_per_hour=pool_d.price_per_hour)


def _agg_score(goodput_per_replica: float, shape: Shape, pool: Pool, rate: float | None, objective: str) -> float:
    """Ranking score of the aggregated plan built from a shape (higher is better; a plan that
    cannot serve the requested rate in the pool scores below every plan that can)."""
    dp_max = pool.gpus // shape.gpus
    if dp_max < 1 or goodput_per_replica <= 0:
        return 0.0
    dp = _replicas_for(rate, goodput_per_replica, dp_max)
    good = dp * goodput_per_replica
    served = good if rate is None else min(rate, good)
    denom = dp * shape.gpus * (pool.price_per_hour if objective == "goodput_per_dollar" else 1.0)
    score = served / denom
    if rate is not None and good < rate * (1 - 1e-9):
        score *= 1e-6
    return score


def _phase_score(goodput: float, shape: Shape, pool: Pool, objective: str) -> float:
    """Goodput of one prefill / decode instance per dollar-hour (or per GPU)."""
    return goodput / (shape.gpus * (pool.price_per_hour if objective == "goodput_per_dollar" else 1.0))


def _family(p: "Plan") -> tuple:
    """Plans that differ only by the layer split of their pipeline stages belong to one family."""
    def f(e):
        return None if e is None else (e.shape.gpu, e.shape.tp, e.shape.pp, e.shape.ep, e.shape.attn_dp)
    return (p.kind, f(p.prefill), f(p.decode))


def _no_plan_error(res: SearchResult) -> InputError:
    """Why nothing came out: the model fits nowhere (say how many GPUs), or the SLO is out of reach
    (name the closest shape and by how much it misses)."""
    log = res.log
    rules = log.counts_by_rule()
    model = res.model
    fit_rules = {"memory", "kv_capacity", "cluster", "layout"}
    if not any(r in rules for r in ("slo_unreachable",)) and (set(rules) & fit_rules):
        parts = []
        for pool in res.pools:
            need = _gpus_needed(model, pool.accel, res.request)
            parts.append(f"{need} x {pool.accel.name} (the pool has {pool.gpus})")
        return InfeasibleError(f"{model.name} fits no plan: the weights and one request's KV cache need at least "
                               + "; ".join(parts), binding="memory", field="cluster",
                               expected="more GPUs (cluster.nodes / gpus_per_node), fp8 weights (dtype: fp8) "
                                        "or a larger GPU")
    # closest plan to the SLO: the smallest relative miss at zero load
    best = None
    slo_pruned = [p for p in log.pruned if p.rule == "slo_unreachable"]
    whole = [p for p in slo_pruned if p.candidate.get("phase") in ("both", "prefill")]
    for p in whole or slo_pruned:
        text = p.reason
        try:
            got = float(text.split(" is ")[1].split(" s")[0])
            slo = float(text.split("SLO ")[1].split(" s")[0])
        except (IndexError, ValueError):
            continue
        miss = got / slo
        if best is None or miss < best[0]:
            best = (miss, p)
    if best is not None:
        c = best[1].candidate
        label = f"TP{c.get('tp')} PP{c.get('pp')}" + (f" EP{c.get('ep')}" if c.get("ep", 1) > 1 else "") + \
            (f" attention-DP{c.get('attention_dp')}" if c.get("attention_dp", 1) > 1 else "") + \
            (f" ({c['phase']} phase)" if c.get("phase") not in (None, "both") else "")
        miss = f"{100 * (best[0] - 1):.0f}%" if best[0] < 10 else f"a factor of {best[0]:.3g}"
        return InfeasibleError(f"no plan meets the SLO; the closest is {c.get('gpu')} {label}: {best[1].reason}, "
                               f"missing by {miss}", binding="slo", field="slo",
                               expected="a looser SLO, a faster GPU or fp8 weights")
    return InfeasibleError("no plan survives the search: " + ", ".join(f"{k}: {v}" for k, v in rules.items()),
                           binding="search", field="search")


def _gpus_needed(model: ModelSpec, accel: Accelerator, req: ParallelRequest) -> int:
    """Fewest GPUs of ``accel`` (TP up to 8, then PP) whose memory holds the weights and KV for one
    longest request of the workload."""
    wb = dtype_bytes(req.dtype)
    for n in range(1, 1025):
        tp = min(n, 8) if n <= 8 or n % 8 == 0 else None
        if tp is None:
            continue
        pp = max(1, n // 8)
        if model.num_attention_heads % tp:
            continue
        mem = memory_breakdown(model, Parallel(tp, pp), accel.memory_bytes, weight_bytes=wb,
                               gpu_memory_utilization=req.search.gpu_memory_utilization)
        if mem.kv_cache > 0.02 * accel.memory_bytes:
            return n
    return 1024


def _plan_label(p: Plan) -> str:
    if p.decode is None:
        return f"{p.n_prefill} x {p.prefill.shape.label()}"
    dp = f" {p.decode_pool}" if p.decode_pool and p.decode_pool != p.pool else ""
    pp = f" {p.pool}" if dp else ""
    return f"P {p.n_prefill} x{pp} {p.prefill.shape.label()} + D {p.n_decode} x{dp} {p.decode.shape.label()}"


# ==================================================================================== explain
def _shares(ops: list[OpTime]) -> dict[str, float]:
    total = sum(o.time_s for o in ops) or 1.0
    comm = sum(o.time_s for o in ops if o.kind == "comm")
    mem = sum(o.time_s for o in ops if o.bound == "memory")
    comp = sum(o.time_s for o in ops if o.bound == "compute")
    return {"comm": comm / total, "memory_bound": mem / total, "compute_bound": comp / total, "time_s": total}


def operating_point_ops(p: Plan, wl: Workload) -> tuple[list[OpTime], list[OpTime], int]:
    """Per-op times of one prefill chunk (the mean prompt, up to the token budget) and one decode
    step (as many sequences as the KV cache holds, at the mean context), plus that batch."""
    pe = p.prefill
    de = p.decode or p.prefill
    chunk = min(pe.sm.limits.max_num_batched_tokens, int(wl.mean_in))
    pre = pe.sm.breakdown(Iteration(tokens=chunk, prefill_pairs=chunk * (chunk + 1) / 2, sampled_tokens=1))
    batch = max(1, min(de.sm.limits.max_num_seqs,
                       int(de.sm.limits.kv_capacity_tokens // max(1.0, wl.mean_in + wl.mean_out))))
    dec = de.sm.breakdown(Iteration.decode(batch, wl.mean_in + wl.mean_out / 2))
    return pre, dec, batch


def characterise(p: Plan, wl: Workload) -> dict[str, Any]:
    """Where the time goes at the operating point: compute-bound prefill, memory-bound decode,
    communication share, KV capacity."""
    pre_ops, dec_ops, batch = operating_point_ops(p, wl)
    pre, dec = _shares(pre_ops), _shares(dec_ops)
    de = p.decode or p.prefill
    return {"prefill_compute_bound_share": round(pre["compute_bound"], 4),
            "prefill_comm_share": round(pre["comm"], 4),
            "decode_memory_bound_share": round(dec["memory_bound"], 4),
            "decode_comm_share": round(dec["comm"], 4),
            "kv_capacity_sequences": batch * de.sm.lanes,
            "binding": p.prefill.binding if p.decode is None else f"prefill:{p.prefill.binding} decode:{de.binding}"}


def op_breakdown(p: Plan, wl: Workload) -> dict[str, list[dict[str, Any]]]:
    """Per-op time (whole forward, all layers on the latency path) of one prefill chunk and one
    decode step at the operating point of :func:`operating_point_ops`, with bound and fidelity."""
    pre_ops, dec_ops, _ = operating_point_ops(p, wl)
    return {phase: [{"name": o.name, "time_s": _r(o.time_s), "bound": o.bound, "fidelity": o.fidelity}
                    for o in ops] for phase, ops in (("prefill", pre_ops), ("decode", dec_ops))}


def explain(plans: list[Plan], wl: Workload, objective: str) -> list[str]:
    """One sentence per plan: why it wins (first) or what it loses on against the winner."""
    if not plans:
        return []
    out = []
    best = plans[0]
    bs = best.score(objective)
    unit = "req/s per $/h" if objective == "goodput_per_dollar" else "req/s per GPU"
    for i, p in enumerate(plans):
        ch = characterise(p, wl)
        facts = (f"decode {100 * ch['decode_memory_bound_share']:.0f}% memory-bound, prefill "
                 f"{100 * ch['prefill_compute_bound_share']:.0f}% compute-bound, communication "
                 f"{100 * max(ch['decode_comm_share'], ch['prefill_comm_share']):.0f}%, KV holds "
                 f"{ch['kv_capacity_sequences']} sequences; rate limited by {ch['binding']}")
        if i == 0:
            why = f"wins: best {objective.replace('_', ' ')} ({bs:.3g} {unit})"
            if not p.meets_rate:
                why += f"; but cannot serve {wl.rate_rps:.3g} req/s in this cluster (goodput {p.goodput_rps:.3g})"
        else:
            s = p.score(objective)
            rel = 100 * (1 - s / bs) if bs > 0 else 0.0
            if abs(rel) < 0.5:
                why = (f"ties #1 on {objective.replace('_', ' ')} at this rate but has less headroom (goodput "
                       f"{p.goodput_rps:.3g} vs {best.goodput_rps:.3g} req/s)")
            else:
                why = f"loses: {rel:.0f}% lower {objective.replace('_', ' ')} than #1"
            if not p.meets_rate:
                why += f"; cannot serve {wl.rate_rps:.3g} req/s (goodput {p.goodput_rps:.3g})"
            elif p.ttft_s < best.ttft_s * 0.8:
                why += f"; lower p TTFT ({p.ttft_s:.3g} s vs {best.ttft_s:.3g} s)"
        out.append(f"{why}; {facts}")
    return out


# ==================================================================================== output
def plan_body(res: SearchResult, *, top_k: int | None = None, with_pruned: bool = False) -> dict[str, Any]:
    """The ParallelPlan body (stable names; see planner/schemas/parallel_plan.schema.json)."""
    from planner.emit.disagg import launch_for_plan
    req = res.request
    k = top_k or req.search.top_k
    top = res.plans[:k]
    reasons = explain(top, res.workload, res.objective)
    plans = []
    for rank, (p, why) in enumerate(zip(top, reasons), start=1):
        plans.append(plan_dict(p, res, rank, why, launch_for_plan(p, res)))
    wl = res.workload
    body: dict[str, Any] = {
        "model": res.model.name,
        "engine": req.engine,
        "objective": res.objective,
        "slo": {"ttft_s": req.slo.ttft_s, "tpot_s": req.slo.tpot_s, "ttft_percentile": req.slo.p_ttft,
                "tpot_percentile": req.slo.p_tpot},
        "workload": {"requests": len(wl.trace), "rate_rps": wl.rate_rps, "mean_input_len": wl.mean_in,
                     "mean_output_len": wl.mean_out, "source": req.workload.trace or "synthetic"},
        "cluster": [{"gpu": p.accel.name, "nodes": p.cluster.num_nodes, "gpus_per_node": p.cluster.gpus_per_node,
                     "gpus": p.gpus, "price_per_gpu_hour": p.price_per_hour} for p in res.pools],
        "plans": plans,
        "search": {"plans_evaluated": res.plans_evaluated, "shapes_evaluated": res.shapes_evaluated,
                   "simulations": res.simulations, "pruned": len(res.log.pruned),
                   "pruned_by_rule": res.log.counts_by_rule(), "time_s": round(res.time_s, 4)},
        "fidelity": "analytical",
        "assumptions": ASSUMPTIONS,
    }
    if with_pruned:
        body["pruned"] = [{"candidate": p.candidate, "rule": p.rule, "reason": p.reason} for p in res.log.pruned]
    return body


def _r(x: float, nd: int = 6) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{nd}g}")


def _phase_dict(e: PhaseEval, count: int) -> dict[str, Any]:
    sm = e.sm
    return {**e.shape.as_dict(), "count": count, "goodput_rps_per_instance": _r(e.goodput_rps),
            "ttft_s": _r(e.ttft_p_s), "tpot_s": _r(e.tpot_p_s), "binding": e.binding,
            "memory_per_gpu_bytes": {k: _r(v) for k, v in sm.memory.as_dict().items()},
            "kv_capacity_tokens": sm.kv_tokens, "max_num_seqs": sm.limits.max_num_seqs,
            "max_num_batched_tokens": sm.limits.max_num_batched_tokens // max(1, e.shape.attn_dp),
            "stage_imbalance": _r(sm.stage_imbalance, 4)}


def plan_dict(p: Plan, res: SearchResult, rank: int, why: str, launch: dict[str, Any]) -> dict[str, Any]:
    e = p.prefill
    d = p.decode or p.prefill
    tokens_per_s = p.goodput_rps * res.workload.mean_out
    served = p.goodput_rps if p.rate_rps is None else min(p.goodput_rps, p.rate_rps)
    served_tokens_per_s = served * res.workload.mean_out   # $/Mtok at the load actually served
    cost = p.cost_per_hour
    out = {
        "rank": rank,
        "label": _plan_label(p),
        "gpu": p.pool if not p.decode_pool or p.decode_pool == p.pool else f"{p.pool}+{p.decode_pool}",
        "gpus": p.gpus,
        "tp": d.shape.tp if p.decode is None else None,
        "pp": d.shape.pp if p.decode is None else None,
        "dp": p.n_prefill if p.decode is None else None,
        "ep": d.shape.ep if p.decode is None else None,
        "attention_dp": d.shape.attn_dp if p.decode is None else None,
        "disaggregated": p.disaggregated,
        "ttft_s": _r(p.ttft_s),
        "tpot_s": _r(p.tpot_s),
        "ttft_p50_s": _r(e.ttft_p50_s),
        "tpot_p50_s": _r(d.tpot_p50_s),
        "goodput_rps": _r(p.goodput_rps),
        "meets_rate": p.meets_rate,
        "throughput_tokens_per_s": _r(tokens_per_s),
        "cost_per_hour": _r(cost),
        "cost_per_million_tokens": _r(cost / (served_tokens_per_s * 3600) * 1e6) if served_tokens_per_s > 0 else None,
        "goodput_per_dollar": _r(p.score("goodput_per_dollar")),
        "goodput_per_gpu": _r(p.score("goodput_per_gpu")),
        "why": why,
        "characteristics": characterise(p, res.workload),
        "op_breakdown": op_breakdown(p, res.workload),
        "launch": launch,
    }
    if p.decode is None:
        out["replica"] = _phase_dict(e, p.n_prefill)
    else:
        out["prefill"] = _phase_dict(e, p.n_prefill)
        out["decode"] = _phase_dict(p.decode, p.n_decode)
        out["kv_transfer"] = {"tier": p.kv_transfer_tier, "p50_s": _r(p.kv_transfer_p50_s)}
    return out


def run_parallel(request: dict | ParallelRequest, *, file: str | None = None, top_k: int | None = None,
                 with_pruned: bool = False) -> dict[str, Any]:
    """Library entry: request (mapping or model) -> the ParallelPlan document (envelope included)."""
    from planner.plan import envelope
    req = request if isinstance(request, ParallelRequest) else parse_request(request, file=file)
    base = Path(file).parent if file else None
    res = search_plans(req, base_dir=base, top_k=top_k, file=file)
    body = plan_body(res, top_k=top_k, with_pruned=with_pruned)
    return envelope("ParallelPlan", body, inputs=req.model_dump(mode="json"))


# ==================================================================================== fleet API
@dataclass(frozen=True)
class PhaseCapacity:
    """Capacity of one instance of (GPU type, shape, phase) under SLOs, for the fleet planner."""

    gpu: str
    tp: int
    pp: int
    ep: int
    attention_dp: int
    phase: str
    gpus: int
    rate_rps: float              # 0.0: cannot meet the SLOs
    ttft_s: float
    tpot_s: float
    binding: str
    price_per_hour: float

    @property
    def rate_per_dollar(self) -> float:
        return self.rate_rps / (self.gpus * self.price_per_hour) if self.price_per_hour > 0 else 0.0


def phase_capacity(*, model: str | ModelSpec, gpu: str, tp: int, pp: int = 1, ep: int = 1, attention_dp: int = 1,
                   phase: str = "both", input_len: int | list[list[float]] = 1024,
                   output_len: int | list[list[float]] = 256, ttft_slo_s: float | None = None,
                   tpot_slo_s: float | None = None, percentile_q: float = 90.0, dtype: str = "bf16",
                   kv_dtype: str | None = None, nodes: int | None = None, num_requests: int = 400,
                   seed: int = 0) -> PhaseCapacity:
    """Sustained request rate of ONE instance of a shape for one phase under the SLOs.

    ``phase``: "both" (aggregated replica), "prefill" or "decode" (disaggregated instances).
    The fleet planner calls this per (GPU type, shape, phase) to choose GPU mixes, shapes and
    P/D pools jointly.
    """
    if phase not in PHASES:
        raise InputError(f"unknown phase {phase!r}", field="phase", expected=" | ".join(PHASES))
    spec = load_model(model)
    accel = get_accelerator(gpu)
    node = _default_node(accel)
    gpus = tp * pp
    req = ParallelRequest(model=spec.name if isinstance(model, ModelSpec) else str(model), gpu=accel.name,
                          cluster=ClusterSpec(nodes=nodes or max(1, -(-gpus // node.gpus_per_node))),
                          workload=WorkloadSpec(input_len=input_len, output_len=output_len, rate_rps=1.0,
                                                num_requests=num_requests, seed=seed),
                          slo=SloSpec(ttft_s=ttft_slo_s, tpot_s=tpot_slo_s, percentile=percentile_q),
                          dtype=dtype, kv_dtype=kv_dtype)
    pool = build_pools(req)[0]
    layers = _pp_splits(spec, pp, False)[0]
    shape = Shape(accel.name, tp, pp, ep, attention_dp, layers)
    price = pool.price_per_hour
    fail = PhaseCapacity(accel.name, tp, pp, ep, attention_dp, phase, gpus, 0.0, math.inf, math.inf, "fit", price)
    try:
        sm = build_shape_model(spec, pool, shape, dtype=dtype, kv_dtype=kv_dtype, search=req.search, phase=phase)
    except InputError:
        return fail
    if not sm.memory.fits:
        return fail
    wl = Workload(load_workload(req.workload), req.slo, None)
    kv_t = None
    if phase == "prefill":
        tier = pool.cluster.tier_for_group(2 * gpus)
        kv_t = kv_transfer_times_s(spec, wl.trace.input_len, sm.ctx.kv_bytes, LinkModel.from_link(tier.link), gpus)
    res = evaluate_phase(sm, wl, phase, kv_transfer_s=kv_t)
    if isinstance(res, tuple):
        return replace(fail, binding=res[0])
    return PhaseCapacity(accel.name, tp, pp, ep, attention_dp, phase, gpus, res.goodput_rps, res.ttft_p_s,
                         res.tpot_p_s, res.binding, price)


def capacity_curves(*, model: str | ModelSpec, gpu: str, phases: tuple[str, ...] = PHASES,
                    input_len: int | list[list[float]] = 1024, output_len: int | list[list[float]] = 256,
                    ttft_slo_s: float | None = None, tpot_slo_s: float | None = None, percentile_q: float = 90.0,
                    dtype: str = "bf16", kv_dtype: str | None = None, nodes: int = 1,
                    num_requests: int = 300, seed: int = 0) -> list[PhaseCapacity]:
    """:func:`phase_capacity` for every feasible shape of ``gpu`` on ``nodes`` nodes and every phase:
    the table the fleet planner chooses GPU mixes, shapes and P/D pools from (zero-rate rows dropped)."""
    spec = load_model(model)
    req = ParallelRequest(model=spec.name, gpu=gpu, cluster=ClusterSpec(nodes=nodes),
                          workload=WorkloadSpec(input_len=input_len, output_len=output_len, rate_rps=1.0,
                                                num_requests=num_requests, seed=seed),
                          slo=SloSpec(ttft_s=ttft_slo_s, tpot_s=tpot_slo_s, percentile=percentile_q),
                          dtype=dtype, kv_dtype=kv_dtype)
    pool = build_pools(req)[0]
    log = SearchLog()
    shapes = pick_pp_splits(spec, pool, enumerate_shapes(spec, pool, req.search, log), dtype=dtype,
                            kv_dtype=kv_dtype, search=req.search, log=log)
    wl = Workload(load_workload(req.workload), req.slo, None)
    out: list[PhaseCapacity] = []
    for shape in shapes:
        try:
            sms = build_shape_models(spec, pool, shape, dtype=dtype, kv_dtype=kv_dtype, search=req.search,
                                     phases=list(phases))
        except InputError:
            continue
        for ph, sm in sms.items():
            if not sm.memory.fits:
                continue
            kv_t = None
            if ph == "prefill":
                tier = pool.cluster.tier_for_group(2 * shape.gpus)
                kv_t = kv_transfer_times_s(spec, wl.trace.input_len, sm.ctx.kv_bytes,
                                           LinkModel.from_link(tier.link), shape.gpus)
            res = evaluate_phase(sm, wl, ph, kv_transfer_s=kv_t)
            if isinstance(res, tuple):
                continue
            out.append(PhaseCapacity(pool.accel.name, shape.tp, shape.pp, shape.ep, shape.attn_dp, ph, shape.gpus,
                                     res.goodput_rps, res.ttft_p_s, res.tpot_p_s, res.binding, pool.price_per_hour))
    return out


__all__ = ["ParallelRequest", "parse_request", "search_plans", "run_parallel", "plan_body", "phase_capacity",
           "capacity_curves",
           "PhaseCapacity", "Shape", "Plan", "SearchResult", "load_workload", "read_trace", "enumerate_shapes",
           "build_shape_model", "evaluate_phase", "kv_transfer_times_s"]
