"""Serving estimates: prefill and decode step times, TTFT, TPOT, throughput, capacity under SLOs.

Built from :func:`costmodels.ops.forward_ops` (what one iteration does), :mod:`roofline` (how
long each op takes on the device) and :mod:`memory` (how many sequences fit).

Pipeline parallelism: a token's latency crosses every stage (the op list holds all layers plus
``pp - 1`` hand-offs); ``pp`` micro-batches are in flight at once, so a batch of ``B``
sequences decodes as ``pp`` micro-batches of ``B / pp`` and TPOT is the path time at ``B / pp``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


from costmodels.comm import LinkModel
from costmodels.memory import (DEFAULT_GPU_MEMORY_UTILIZATION, MemoryBreakdown, kv_bytes_per_token_per_gpu,
                               memory_breakdown, min_gpus_to_fit)
from costmodels.model import ModelSpec, dtype_bytes
from costmodels.ops import Iteration, Op, Parallel, forward_ops
from costmodels.batching import IterationCostTable
from costmodels.queueing import md1_wait_quantile, mmc_wait_quantile, poisson_pmf, poisson_quantile
from costmodels.roofline import DeviceEfficiency, MeasuredTable, OpTime, default_efficiency, op_time
from hardware.accelerator import Accelerator
from hardware.catalog import default_node_for
from hardware.errors import InputError
from hardware.topology import Cluster, NodeType

DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_MAX_BATCHED_TOKENS = 8192


@dataclass(frozen=True)
class CostContext:
    """Everything fixed while a search varies the load: model, device, layout, dtypes, efficiencies.

    Build it once with :func:`make_context`; :func:`iteration_time` then costs well under a
    millisecond per call.
    """

    model: ModelSpec
    accel: Accelerator
    par: Parallel
    dtype: str
    weight_bytes: float
    act_bytes: float
    kv_bytes: float
    eff: DeviceEfficiency
    links: Mapping[str, LinkModel]
    measured: MeasuredTable | None = None
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION

    @property
    def fidelity(self) -> str:
        kinds = {k.fidelity for k in self.eff.by_kind.values()}
        if self.measured is not None:
            return "measured"
        return "calibrated" if "calibrated" in kinds else "analytical"


def check_layout(model: ModelSpec, par: Parallel) -> None:
    """Raise InputError when a layout cannot work (heads, layers, experts)."""
    if par.tp < 1 or par.pp < 1 or par.ep < 1:
        raise InputError("parallel degrees must be positive", field="tp/pp/ep", expected="integers >= 1")
    if model.num_attention_heads % par.tp:
        raise InputError(f"TP={par.tp} does not divide the {model.num_attention_heads} attention heads of "
                         f"{model.name}", field="tp",
                         expected=f"a divisor of {model.num_attention_heads}")
    if par.pp > model.num_layers:
        raise InputError(f"PP={par.pp} exceeds the {model.num_layers} layers", field="pp",
                         expected=f"at most {model.num_layers}")
    if par.ep > 1:
        if model.moe is None:
            raise InputError(f"{model.name} is dense; expert parallelism needs an MoE model", field="ep",
                             expected="1")
        if model.moe.num_experts % par.ep:
            raise InputError(f"EP={par.ep} does not divide the {model.moe.num_experts} experts", field="ep",
                             expected=f"a divisor of {model.moe.num_experts}")
        if par.ep > par.tp:
            raise InputError(f"EP={par.ep} larger than the TP group ({par.tp}) of one replica", field="ep",
                             expected="ep <= tp (experts are spread over the replica's GPUs)")


def links_for(cluster: Cluster, par: Parallel) -> dict[str, LinkModel]:
    """Link model per comm scope: TP / EP groups are consecutive ranks; PP hand-offs cross a node
    when a stage boundary does."""
    tp_tier = cluster.tier_for_group(par.tp)
    ep_tier = cluster.tier_for_group(par.ep)
    pp_tier = cluster.tier_for_group(par.tp * par.pp) if par.pp > 1 else tp_tier
    return {"tp": LinkModel.from_link(tp_tier.link), "ep": LinkModel.from_link(ep_tier.link),
            "pp": LinkModel.from_link(pp_tier.link)}


def make_context(model: ModelSpec, accel: Accelerator, par: Parallel, *, dtype: str = "bf16",
                 kv_dtype: str | None = None, node: NodeType | None = None,
                 efficiency: DeviceEfficiency | None = None,
                 links: Mapping[str, LinkModel] | None = None, measured: MeasuredTable | None = None,
                 gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION) -> CostContext:
    """Build a :class:`CostContext` (checks the layout and the dtype).

    Args:
        dtype: weight / GEMM dtype ("bf16", "fp8" W8A8...).
        kv_dtype: KV-cache dtype (defaults to ``dtype`` for fp8, else bf16).
        node: the node type (defaults to the largest catalog node of this accelerator).
        efficiency: calibrated efficiencies (defaults to the catalog's analytical priors).
        links: calibrated link models per scope (defaults to the catalog's links).
    """
    check_layout(model, par)
    if not accel.supports(dtype) or dtype not in accel.flops_per_s and dtype not in ("bf16", "fp16"):
        raise InputError(f"{accel.name} does not support {dtype}", field="dtype",
                         expected=" | ".join(sorted(accel.flops_per_s)))
    kv_dtype = kv_dtype or ("fp8" if dtype == "fp8" else "bf16")
    if node is None:
        try:
            node = default_node_for(accel)
        except InputError:
            node = None
    if links is None:
        if node is None:
            from hardware.topology import NodeType as _NT
            node = _NT(name=f"{accel.name}-1", accelerator=accel.name, gpus_per_node=max(8, par.tp),
                       scale_out=accel.host_link)
        nodes = max(1, -(-par.tp * par.pp // node.gpus_per_node))
        links = links_for(Cluster(node, nodes, accel.scale_up), par)
    return CostContext(model, accel, par, dtype, dtype_bytes(dtype), 2.0, dtype_bytes(kv_dtype, field_name="kv_dtype"),
                       efficiency or default_efficiency(accel), links, measured, gpu_memory_utilization)


def iteration_ops(ctx: CostContext, it: Iteration) -> list[Op]:
    return forward_ops(ctx.model, ctx.par, it, weight_bytes=ctx.weight_bytes, act_bytes=ctx.act_bytes,
                       kv_bytes=ctx.kv_bytes)


def iteration_breakdown(ctx: CostContext, it: Iteration) -> list[OpTime]:
    """Per-op times of one iteration along the latency path (all stages)."""
    return [op_time(op, ctx.accel, dtype=ctx.dtype, eff=ctx.eff, links=ctx.links, measured=ctx.measured,
                    tp=ctx.par.tp) for op in iteration_ops(ctx, it)]


def iteration_time(ctx: CostContext, it: Iteration) -> float:
    """Seconds one iteration takes along the latency path (all pipeline stages)."""
    return sum(t.time_s for t in iteration_breakdown(ctx, it))


def op_roofline_params(ctx: CostContext, op: Op) -> tuple:
    """``(overhead_s, peak_flops, compute_curve, hbm_bytes_per_s, memory_curve)`` of ``op``:
    what :class:`costmodels.batching.IterationCostTable` needs to evaluate attention exactly."""
    k = ctx.eff.for_op(op)
    peak = ctx.accel.peak_flops(ctx.dtype if op.kind == "gemm" else "bf16")
    return (k.overhead_s, peak, k.compute, ctx.accel.hbm_bandwidth_bytes_per_s, k.memory)


def iteration_cost_table(ctx: CostContext, *, max_tokens: int, max_seqs: int) -> IterationCostTable:
    """The fast iteration-time lookup of ``ctx`` (along the latency path, all stages): ~100
    op-list evaluations to build, microseconds per lookup."""
    return IterationCostTable(
        lambda it: iteration_ops(ctx, it),
        lambda o: op_time(o, ctx.accel, dtype=ctx.dtype, eff=ctx.eff, links=ctx.links, measured=ctx.measured,
                          tp=ctx.par.tp).time_s,
        lambda o: op_roofline_params(ctx, o), max_tokens=max_tokens, max_seqs=max_seqs)


#: cost tables of recent (model, GPU, layout, dtypes, budget): a capacity table asks for one
#: per bucket; entries hold their objects, so an ``id`` in a key is never reused while cached
_COST_TABLES: dict[tuple, tuple] = {}
_COST_TABLES_KEPT = 64


def _cached_cost_table(ctx: CostContext, model: ModelSpec, accel: Accelerator, node, efficiency,
                       key: tuple, max_tokens: int, max_seqs: int) -> IterationCostTable:
    full = (id(model), id(accel), id(node), id(efficiency), *key, max_tokens, max_seqs)
    hit = _COST_TABLES.get(full)
    if hit is None:
        if len(_COST_TABLES) >= _COST_TABLES_KEPT:
            _COST_TABLES.pop(next(iter(_COST_TABLES)))
        hit = (iteration_cost_table(ctx, max_tokens=max_tokens, max_seqs=max_seqs), model, accel, node, efficiency)
        _COST_TABLES[full] = hit
    return hit[0]


def prefill_time_s(ctx: CostContext, batch: int, input_len: int) -> float:
    """Seconds to prefill ``batch`` prompts of ``input_len`` tokens in one iteration."""
    return iteration_time(ctx, Iteration.prefill(batch, input_len))


def decode_step_s(ctx: CostContext, batch: int, context_len: float) -> float:
    """Seconds per output token (TPOT) for ``batch`` sequences at ``context_len``, pipelined."""
    micro = max(1, math.ceil(batch / ctx.par.pp))
    return iteration_time(ctx, Iteration.decode(micro, context_len))


def memory_for(ctx: CostContext, max_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS) -> MemoryBreakdown:
    return memory_breakdown(ctx.model, ctx.par, ctx.accel.memory_bytes, weight_bytes=ctx.weight_bytes,
                            max_batched_tokens=max_batched_tokens, act_bytes=ctx.act_bytes,
                            gpu_memory_utilization=ctx.gpu_memory_utilization)


def max_kv_tokens(ctx: CostContext, mem: MemoryBreakdown | None = None) -> int:
    """KV-cache capacity of one replica in tokens (0 when the weights do not fit)."""
    mem = mem or memory_for(ctx)
    per_token = kv_bytes_per_token_per_gpu(ctx.model, ctx.par, ctx.kv_bytes)
    return max(0, int(mem.kv_cache // per_token))


def not_fitting_error(ctx: CostContext, mem: MemoryBreakdown) -> InputError:
    need = min_gpus_to_fit(ctx.model, ctx.accel.memory_bytes, ctx.weight_bytes, ctx.gpu_memory_utilization)
    return InputError(
        f"{ctx.model.name} does not fit on {ctx.par.gpus} x {ctx.accel.name} with TP={ctx.par.tp} PP={ctx.par.pp}: "
        f"{mem.weights / 1e9:.1f} GB of weights per GPU leave {mem.kv_cache / 1e9:.1f} GB for the KV cache",
        field="tp/pp", expected=f"at least {need} x {ctx.accel.name} (e.g. --tp {min(need, 8)}"
                                f"{' --pp ' + str(need // 8) if need > 8 else ''})")


@dataclass(frozen=True)
class Estimate:
    """Result of :func:`estimate`; ``to_dict`` gives the stable JSON names."""

    model: str
    gpu: str
    tp: int
    pp: int
    ep: int
    dtype: str
    kv_dtype: str
    input_len: int
    output_len: int
    batch: int
    prefill_time_s: float
    ttft_s: float
    tpot_s: float
    e2e_latency_s: float
    output_tokens_per_s: float
    memory: MemoryBreakdown
    max_batch: int
    max_kv_tokens: int
    prefill_ops: list[OpTime]
    decode_ops: list[OpTime]
    fidelity: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def ops(phase: str, items: list[OpTime]) -> list[dict[str, Any]]:
            return [{"phase": phase, "name": o.name, "kind": o.kind, "time_s": o.time_s, "count": o.count,
                     "bound": o.bound, "fidelity": o.fidelity, "flops": o.flops * o.count,
                     "bytes": o.bytes * o.count} for o in items]
        return {
            "model": self.model, "gpu": self.gpu, "tp": self.tp, "pp": self.pp, "ep": self.ep,
            "gpus": self.tp * self.pp, "dtype": self.dtype, "kv_dtype": self.kv_dtype,
            "input_len": self.input_len, "output_len": self.output_len, "batch": self.batch,
            "prefill_time_s": self.prefill_time_s, "ttft_s": self.ttft_s, "tpot_s": self.tpot_s,
            "e2e_latency_s": self.e2e_latency_s, "output_tokens_per_s": self.output_tokens_per_s,
            "memory_bytes": {k: v for k, v in self.memory.as_dict().items()},
            "max_batch": self.max_batch, "max_kv_tokens": self.max_kv_tokens, "fidelity": self.fidelity,
            "ops": ops("prefill", self.prefill_ops) + ops("decode", self.decode_ops), "notes": list(self.notes),
        }


def estimate(model: ModelSpec, accel: Accelerator, *, tp: int = 1, pp: int = 1, ep: int = 1,
             input_len: int, output_len: int, batch: int = 1, dtype: str = "bf16",
             kv_dtype: str | None = None, node: NodeType | None = None,
             efficiency: DeviceEfficiency | None = None, links: Mapping[str, LinkModel] | None = None,
             measured: MeasuredTable | None = None,
             max_num_seqs: int = DEFAULT_MAX_NUM_SEQS) -> Estimate:
    """Latency, throughput and memory of ``batch`` requests of (``input_len``, ``output_len``).

    TTFT is the prefill of the whole batch in one iteration (the requests arrive together);
    TPOT is the decode step at the batch's mean context ``input_len + output_len / 2``.
    Raises InputError when the layout is impossible or the model does not fit.
    """
    for name, v in (("input_len", input_len), ("output_len", output_len), ("batch", batch)):
        if not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}", field=name, expected="an integer >= 1")
    ctx = make_context(model, accel, Parallel(tp, pp, ep), dtype=dtype, kv_dtype=kv_dtype, node=node,
                       efficiency=efficiency, links=links, measured=measured)
    mem = memory_for(ctx)
    if not mem.fits:
        raise not_fitting_error(ctx, mem)
    kv_tokens = max_kv_tokens(ctx, mem)
    max_batch = min(max_num_seqs * pp, kv_tokens // (input_len + output_len))
    notes = []
    if batch > max_batch:
        notes.append(f"batch {batch} exceeds the {max_batch} sequences whose KV cache fits; "
                     "a real engine would queue or preempt")
    pre = iteration_breakdown(ctx, Iteration.prefill(batch, input_len))
    micro = max(1, math.ceil(batch / pp))
    dec = iteration_breakdown(ctx, Iteration.decode(micro, input_len + output_len / 2))
    prefill_s = sum(o.time_s for o in pre)
    tpot = sum(o.time_s for o in dec)
    e2e = prefill_s + max(output_len - 1, 0) * tpot
    kv_name = kv_dtype or ("fp8" if dtype == "fp8" else "bf16")
    return Estimate(model.name, accel.name, tp, pp, ep, dtype, kv_name, input_len, output_len, batch,
                    prefill_s, prefill_s, tpot, e2e, batch / tpot, mem, max(max_batch, 0), kv_tokens,
                    pre, dec, ctx.fidelity, notes)


@dataclass(frozen=True)
class CapacityEstimate:
    """Sustained capacity of one replica for one request shape under SLOs.

    ``rate_rps`` is the largest request rate the replica sustains with the SLOs met (0.0: it
    cannot meet them at any rate); ``binding`` names what limits it ("tpot", "ttft", "e2e",
    "memory", "max_num_seqs", "throughput" or "fit").  ``ttft_s`` / ``tpot_s`` / ``e2e_s``: the
    modelled latencies (s) at that rate, at the percentile asked for (``e2e_s`` None where it
    is not modelled: one side of a disaggregated pair); ``max_batch``: the sequences decoding
    on average, rounded up.
    """

    rate_rps: float
    max_batch: int
    ttft_s: float
    tpot_s: float
    binding: str
    fidelity: str
    e2e_s: float | None = None


def _decode_steps(ctx: CostContext, context_len: float) -> Callable[[int], float]:
    """Decode step time (s) against the whole batch at ``context_len``, memoised: a capacity
    search asks for the same few batches many times (each one a full op-list evaluation)."""
    return functools.lru_cache(maxsize=None)(lambda batch: decode_step_s(ctx, batch, context_len))


def _decode_step_between(step: Callable[[int], float], batch: float) -> float:
    """Decode step time (s) at an average batch ``batch`` >= 1 that need not be whole: the
    batch alternates between its two neighbours, so the step time interpolates linearly;
    ``step``: the step time at a whole batch (:func:`_decode_steps`)."""
    lo = math.floor(batch)
    t_lo = step(lo)
    if batch == lo:
        return t_lo
    return t_lo + (batch - lo) * (step(lo + 1) - t_lo)


#: relative width at which the rate bisection of :func:`max_rate_under_slo` stops (the model
#: itself is good to ~5-20% against the iteration-level simulator; the rate reported is the
#: lower end, so within 1% below the model's own capacity)
RATE_REL_TOL = 1e-2
#: decode batches from which iteration times are read at the nearest whole batch (below, they
#: interpolate between whole ones: one sequence more changes a small batch's step visibly)
EXACT_BATCH = 16
#: evaluation points of a mean iteration time over the Poisson number of prompts in it
MIXTURE_POINTS = 10


@dataclass(frozen=True)
class _LoadPoint:
    """The steady state of one engine lane at one request rate (see :func:`max_rate_under_slo`)."""

    batch: float      # mean decode batch
    tpot_s: float     # the percentile TPOT
    ttft_s: float     # the percentile TTFT
    e2e_s: float      # the percentile end-to-end latency


class _ChunkedPrefillLane:
    """One engine lane (a replica, or one of a pipeline's ``pp`` micro-batch lanes) serving one
    request shape with vLLM's scheduler: running decodes first, then prefill tokens (chunks of
    prompts) up to ``budget`` tokens per iteration.  Iteration times come from the op-level cost
    model through ``table`` (:func:`iteration_cost_table`); ``limit``: the batch slots (KV
    cache and max-num-seqs)."""

    def __init__(self, table: IterationCostTable, input_len: int, output_len: int, limit: int,
                 budget: int) -> None:
        self.table, self.L, self.limit, self.budget = table, input_len, limit, budget
        self.steps = max(output_len - 1, 0)  # decode iterations after the first token
        self.context = input_len + output_len / 2.0
        self._solved: dict[float, float] = {}  # rate -> mean iteration time (s)

    def _iteration(self, decodes: int, tokens: int, prompts: float) -> float:
        per = tokens / prompts if prompts else 0.0
        offset = max(0.0, (self.L - per) / 2.0) if prompts else 0.0  # a chunk's mean start
        pairs = prompts * per * (per + 1.0) / 2.0 + tokens * offset
        return self.table.time_s(decodes + tokens, pairs, decodes * self.context, decodes + round(prompts))

    def iteration(self, batch: float, tokens: int = 0, prompts: float = 0) -> float:
        """Seconds of one iteration with ``batch`` decodes (>= 1; between whole batches the time
        interpolates) and ``tokens`` prefill tokens of ``prompts`` prompts."""
        if batch >= EXACT_BATCH:  # a sequence more or less is well inside the model's accuracy
            return self._iteration(round(batch), tokens, prompts)
        lo = max(1, math.floor(batch))
        t_lo = self._iteration(lo, tokens, prompts)
        frac = max(batch, 1.0) - lo
        return t_lo if frac == 0.0 else t_lo + frac * (self._iteration(lo + 1, tokens, prompts) - t_lo)

    def _mean_iteration(self, batch: float, idle: float, arrivals: float, room: int) -> float:
        """E[T(batch, k prompts)] (s) over ``k`` Poisson with mean ``arrivals``, at most
        ``room // L`` per iteration (more wait for the next one): over blocks of consecutive
        k (at most ``MIXTURE_POINTS``), each at its mean k with its probability (T is nearly
        affine in k within a block)."""
        L = self.L
        most = min(room // L, poisson_quantile(1.0 - 1e-9, arrivals) + 1)
        pk = poisson_pmf(arrivals, most)
        pk[-1] += max(0.0, 1.0 - sum(pk))
        width = max(1, math.ceil((most + 1) / MIXTURE_POINTS))
        total = 0.0
        for lo in range(0, most + 1, width):
            mass = sum(pk[lo:lo + width])
            if mass <= 0.0:
                continue
            k = sum(j * pk[j] for j in range(lo, min(lo + width, most + 1))) / mass
            total += mass * (idle if k == 0 else self.iteration(batch, round(k * L), k))
        return total

    def at(self, rate: float, q: float) -> tuple[_LoadPoint | None, str]:
        """The steady state at ``rate`` (req/s) with latencies at quantile ``q`` (0..1); None and
        the limit that breaks ("memory": the batch reaches the slots, "throughput": prefill
        cannot keep up) when there is none."""
        L, n = self.L, self.steps
        # start from the iteration time of the nearest lower rate asked for (a search climbs)
        below = [r for r in self._solved if r <= rate]
        t = self._solved[max(below)] if below else self.iteration(1.0)
        batch = room = 0
        history: list[float] = []
        for it in range(60):  # the mean iteration time t and the batch it implies (Little's law)
            batch = rate * n * t
            room = self.budget - math.ceil(batch)
            if batch >= self.limit or room <= 0:
                return None, "memory"
            arrivals = rate * t  # prompts arriving per iteration
            if arrivals * L >= room:
                return None, "throughput"
            idle = self.iteration(batch)
            if L < room:  # whole prompts; k of them arrive per iteration (Poisson)
                t_new = self._mean_iteration(batch, idle, arrivals, room)
            else:  # chunks of ``room`` tokens fill the iterations that carry prefill
                share = arrivals * L / room
                t_new = share * self.iteration(batch, room, 1) + (1.0 - share) * idle
            done = abs(t_new - t) <= 1e-6 * t
            if done:
                t = t_new
                break
            # plain steps converge linearly (t_new grows slower than t): Aitken's extrapolation
            # of three of them where the ratio is steady; damped after 20 in case of a cycle
            history.append(t_new)
            t = t_new if it < 20 else 0.5 * (t + t_new)
            if len(history) >= 3:
                a, b, c = history[-3:]
                ratio = (c - b) / (b - a) if b != a else 0.0
                if 0.0 < ratio < 0.95:
                    t = c + (c - b) * ratio / (1.0 - ratio)
                    history.clear()
        self._solved[rate] = t
        arrivals = rate * t
        extra = (t - idle) / arrivals if arrivals > 0 else 0.0  # seconds a prompt adds to the iterations
        full = self.iteration(batch, room, max(1, room // L))
        queue_service = full * L / room  # the prefill queue's work per prompt (s)
        own = math.ceil(L / room) * self.iteration(batch, min(L, room), 1)  # its own prefill (s)
        rho = rate * queue_service
        if rho >= 1.0:
            return None, "throughput"
        queued = rho * rho / (2.0 * (1.0 - rho))  # prompts waiting, mean (M/D/1)
        # TPOT: its n decode iterations take tau = n x (a step beside the others and the k
        # prompts that arrive meanwhile, half its window each) + the prefill work of those k
        # and of the queue it found; k at quantile q of arrivals over tau and its own prefill
        tau = n * t
        for _ in range(60 if n else 0):  # one output token: no decode iterations
            k = poisson_quantile(q, rate * (tau + own))
            tau_new = n * self.iteration(batch + 1.0 + k / 2.0) + extra * (k + queued)
            if abs(tau_new - tau) <= 1e-6 * tau:
                break
            tau = tau_new
        # TTFT: the rest of the iteration under way, the prefill queue, a free slot, its prefill
        slot = mmc_wait_quantile(self.limit, rate * (n * t + own), n * t + own, q)
        ttft = t / 2.0 + md1_wait_quantile(rate, queue_service, q) + slot + own
        return _LoadPoint(batch, tau / n if n else 0.0, ttft, ttft + tau), ""


def max_rate_under_slo(model: ModelSpec, accel: Accelerator, *, tp: int, pp: int = 1, ep: int = 1,
                       input_len: int, output_len: int, ttft_slo_s: float | None = None,
                       tpot_slo_s: float | None = None, dtype: str = "bf16", kv_dtype: str | None = None,
                       node: NodeType | None = None, efficiency: DeviceEfficiency | None = None,
                       max_num_seqs: int = DEFAULT_MAX_NUM_SEQS, percentile: float = 50.0,
                       e2e_slo_s: float | None = None,
                       max_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS) -> CapacityEstimate:
    """Largest sustained Poisson request rate (req/s) of one replica at which the
    ``percentile``-th TTFT, TPOT and end-to-end latency of requests of (``input_len``,
    ``output_len``) tokens meet the SLOs (limits in s; None: no such target).

    The replica is ``pp`` independent lanes (micro-batches), each with vLLM's chunked-prefill
    scheduler: decodes first, then prefill tokens up to ``max_batched_tokens`` per iteration.
    At rate ``r`` per lane:

    * the mean iteration time ``t`` solves ``t = E[T(B, k prompts)]`` with the decode batch
      ``B = r (out - 1) t`` (Little's law) and ``k`` Poisson with mean ``r t`` (prompts that
      arrived during the last iteration; a prompt longer than the budget fills whole chunks);
    * TPOT: a request's ``out - 1`` decode iterations take ``tau = (out - 1) T(B + 1 + k/2)
      + k D``, where ``k`` is the ``percentile`` quantile of the prompts arriving during ``tau``
      and its own prefill (Poisson), ``D = (t - T(B)) / (r t)`` the time a prompt adds, and
      ``B + 1 + k/2`` the batch it decodes in (itself, the others, the newcomers for half its
      window), plus the prefill queue it found (M/D/1 mean);
    * TTFT: half an iteration, the M/D/1 wait behind other prompts (service: a prompt's share
      of full-budget iterations), the wait for a free batch slot (M/M/c with the KV / max-seqs
      slots), then its own prefill iterations;
    * end-to-end: TTFT + tau (both at the percentile: conservative).

    Latencies grow with the rate, so the rate is found by bisection.  Returns rate 0.0 with the
    binding constraint ("ttft", "tpot", "e2e", "memory", "max_num_seqs", "throughput", "fit")
    when even a trickle misses an SLO or the weights do not fit.  Checked against the
    iteration-level simulator (:func:`costmodels.batching.simulate`) in ``tests`` and
    ``benchmarks.bench_costmodel``.
    """
    try:
        ctx = make_context(model, accel, Parallel(tp, pp, ep), dtype=dtype, kv_dtype=kv_dtype, node=node,
                           efficiency=efficiency)
    except InputError:
        return CapacityEstimate(0.0, 0, math.inf, math.inf, "fit", "analytical")
    mem = memory_for(ctx, max_batched_tokens)
    kv_slots = max_kv_tokens(ctx, mem) // pp // (input_len + output_len)  # per lane
    limit = min(kv_slots, max_num_seqs)
    if limit < 1:
        return CapacityEstimate(0.0, 0, math.inf, math.inf, "memory" if mem.fits else "fit", ctx.fidelity)
    table = _cached_cost_table(ctx, model, accel, node, efficiency, (tp, pp, ep, dtype, kv_dtype),
                               max_batched_tokens + max_num_seqs, max_num_seqs)
    lane = _ChunkedPrefillLane(table, input_len, output_len, limit, max_batched_tokens)
    q = percentile / 100.0
    slots = "memory" if kv_slots <= max_num_seqs else "max_num_seqs"

    def verdict(point: _LoadPoint | None, why: str) -> tuple[_LoadPoint | None, str]:
        """The point where it meets every target, else None and the limit or target it breaks."""
        if point is None:
            return None, slots if why == "memory" else why
        # one output token has no time per output token: a TPOT target does not apply
        tpot_limit = tpot_slo_s if output_len > 1 else None
        for limit_s, value, name in ((ttft_slo_s, point.ttft_s, "ttft"), (tpot_limit, point.tpot_s, "tpot"),
                                     (e2e_slo_s, point.e2e_s, "e2e")):
            if limit_s is not None and value > limit_s:
                return None, name
        return point, ""

    def check(rate: float) -> tuple[_LoadPoint | None, str]:
        return verdict(*lane.at(rate, q))

    # a trickle: one request in an idle lane
    idle, why = lane.at(1e-9, q)
    trickle, why = verdict(idle, why)
    if trickle is None:
        ttft, tpot = (math.inf, math.inf) if idle is None else (idle.ttft_s, idle.tpot_s)
        return CapacityEstimate(0.0, 0, ttft, tpot, why or "throughput", ctx.fidelity,
                                None if idle is None else idle.e2e_s)
    lo, best = 1e-9, trickle
    # above any capacity: the slots full at the full batch's step, or the budget all prefill
    full = lane.iteration(float(limit))
    hi = 1.5 * min(limit / (max(lane.steps, 1) * full),
                   max_batched_tokens / (input_len * lane.iteration(1.0, max_batched_tokens, 1)))
    point, why_hi = check(hi)
    while point is not None:
        lo, best, hi = hi, point, 2.0 * hi
        point, why_hi = check(hi)
    while hi - lo > RATE_REL_TOL * hi:
        mid = 0.5 * (lo + hi)
        point, why = check(mid)
        if point is None:
            hi, why_hi = mid, why
        else:
            lo, best = mid, point
    return CapacityEstimate(lo * pp, int(math.ceil(best.batch * pp)), best.ttft_s, best.tpot_s, why_hi,
                            ctx.fidelity, best.e2e_s)


def kv_transfer_s(model: ModelSpec, input_len, kv_bytes: float, link: LinkModel, parallel_links: int):
    """Seconds to move a prompt's KV cache (all layers, ``input_len`` tokens; a number or an
    array) from a prefill to a decode instance over ``link``: each of the ``parallel_links``
    prefill GPUs sends its shard at once, plus one message latency and the launch overhead."""
    per_token = model.kv_bytes_per_token(kv_bytes)
    bandwidth = link.effective_bandwidth(1e8) * max(1, parallel_links)
    return link.collective_overhead_s + link.latency_s + input_len * per_token / bandwidth


def split_e2e(e2e_s: float, output_len: int, first_s: float, step_s: float,
              ttft_s: float | None = None, tpot_s: float | None = None) -> float:
    """The part (s) of an end-to-end target ``e2e_s`` (s) given to the first token where two
    instances that cannot see each other's load must share it (prefill / decode
    disaggregation); the rest, over ``output_len - 1`` decode steps, bounds the decode side's
    TPOT.  In proportion to the idle latencies ``first_s`` (first token, s) and ``step_s`` (one
    decode step, s), so both sides may stretch by the same factor; then moved so that a side's
    own target (``ttft_s`` / ``tpot_s``, s), where tighter, leaves its unused share to the
    other side."""
    steps = max(output_len - 1, 0)
    if steps == 0:
        return e2e_s
    share = e2e_s * first_s / max(first_s + steps * step_s, 1e-300)
    if tpot_s is not None:  # the decode side cannot use more than its TPOT allows
        share = max(share, e2e_s - steps * tpot_s)
    if ttft_s is not None:  # nor the first token more than its TTFT
        share = min(share, ttft_s)
    return share


def max_rate_disaggregated(model: ModelSpec, accel: Accelerator, *, phase: str, tp: int, pp: int = 1,
                           input_len: int, output_len: int, ttft_slo_s: float | None = None,
                           tpot_slo_s: float | None = None, dtype: str = "bf16",
                           kv_dtype: str | None = None, node: NodeType | None = None,
                           efficiency: DeviceEfficiency | None = None,
                           max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
                           kv_link: LinkModel | None = None, e2e_slo_s: float | None = None,
                           e2e_ttft_s: float | None = None) -> CapacityEstimate:
    """Largest sustained request rate of ONE prefill-only or decode-only instance (prefill /
    decode disaggregation) under the SLOs, in a steady-state model of mean latencies (the
    percentile terms of :func:`max_rate_under_slo` are not applied to one side of a pair yet).

    * ``phase="decode"``: ``b`` sequences decode in steps of ``t_dec(b)`` with no prefill in
      between, so TPOT = ``t_dec(b)`` and, by Little's law, rate = ``b / (output_len t_dec(b))``;
      ``b`` grows (bisection) while TPOT holds, the KV cache (prompt and output of every
      sequence) fits and ``b <= max_num_seqs * pp``.
    * ``phase="prefill"``: prompts are prefilled one at a time in ``t_pf``; at utilisation
      ``rho = rate t_pf`` one waits behind the others as in the colocated model,
      ``t_pf / (1 - rho)``; its KV then moves to a decode instance (:func:`kv_transfer_s` over
      ``kv_link``, default the instance's own scale-up link) and waits for a decode step to
      join, at most one TPOT (``tpot_slo_s / 2`` is set aside on average; without a TPOT SLO,
      nothing).  So ``rho <= 1 - t_pf / (ttft_slo - t_kv - tpot_slo / 2)``; without a TTFT SLO
      the instance runs at ``rho = 0.95``.

    An end-to-end target ``e2e_slo_s`` (s) spans both sides, which do not see each other's
    load, so it is met through a split (:func:`split_e2e`): the first token must come within
    ``e2e_ttft_s`` (s; the prefill side's limit, binding "e2e" where tighter than the TTFT SLO)
    and each of the ``output_len - 1`` later tokens within ``(e2e_slo_s - e2e_ttft_s) /
    (output_len - 1)`` (the decode side's TPOT limit, which also sets the join wait aside).
    Both sides of a bundle must be given the same ``e2e_ttft_s``; without one, the split is
    in proportion to this instance's own idle latencies.

    Returns rate 0.0 with the binding constraint when even an idle instance misses the SLO or
    the weights do not fit.
    """
    if phase not in ("prefill", "decode"):
        raise InputError(f"unknown phase {phase!r}", field="phase", expected="prefill | decode")
    try:
        ctx = make_context(model, accel, Parallel(tp, pp, 1), dtype=dtype, kv_dtype=kv_dtype, node=node,
                           efficiency=efficiency)
    except InputError:
        return CapacityEstimate(0.0, 0, math.inf, math.inf, "fit", "analytical")
    mem = memory_for(ctx)
    if not mem.fits:
        return CapacityEstimate(0.0, 0, math.inf, math.inf, "fit", ctx.fidelity)
    # the decode side's TPOT limit and the first token's under an end-to-end target
    tpot_limit, tpot_binding = tpot_slo_s, "tpot"
    if e2e_slo_s is not None:
        steps = max(output_len - 1, 0)
        if e2e_ttft_s is None:
            t_step = decode_step_s(ctx, 1, input_len + output_len / 2)
            e2e_ttft_s = split_e2e(e2e_slo_s, output_len,
                                   prefill_time_s(ctx, 1, input_len) + 0.5 * t_step, t_step,
                                   ttft_slo_s, tpot_slo_s)
        if steps and (tpot_limit is None or (e2e_slo_s - e2e_ttft_s) / steps < tpot_limit):
            tpot_limit, tpot_binding = (e2e_slo_s - e2e_ttft_s) / steps, "e2e"
    if phase == "prefill":
        t_pf = prefill_time_s(ctx, 1, input_len)
        t_kv = float(kv_transfer_s(model, input_len, ctx.kv_bytes, kv_link or ctx.links["tp"], tp))
        budgets = [(lim - t_kv - (tpot_limit or 0.0) / 2, name)
                   for lim, name in ((ttft_slo_s, "ttft"),
                                     (e2e_ttft_s if e2e_slo_s is not None else None, "e2e"))
                   if lim is not None]
        if not budgets:
            rho, binding = 0.95, "throughput"
        else:
            budget, binding = min(budgets, key=lambda pair: pair[0])  # a tie names the TTFT SLO
            if budget <= t_pf:
                return CapacityEstimate(0.0, 1, t_pf + t_kv, 0.0, binding, ctx.fidelity)
            rho = min(0.95, 1.0 - t_pf / budget)
        return CapacityEstimate(rho / t_pf, 1, t_pf / (1.0 - rho) + t_kv, 0.0, binding, ctx.fidelity)
    kv_cap = max_kv_tokens(ctx, mem) // (input_len + output_len)
    limit = min(kv_cap, max_num_seqs * pp)
    if limit < 1:
        return CapacityEstimate(0.0, 0, math.inf, math.inf, "memory", ctx.fidelity)

    tpot = _decode_steps(ctx, input_len + output_len / 2)

    if tpot_limit is not None and tpot(1) > tpot_limit:
        return CapacityEstimate(0.0, 0, 0.0, tpot(1), tpot_binding, ctx.fidelity)
    lo, hi = 1, limit
    if tpot_limit is None or tpot(hi) <= tpot_limit:
        lo, binding = hi, "memory" if kv_cap <= max_num_seqs * pp else "max_num_seqs"
    else:
        binding = tpot_binding
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if tpot(mid) <= tpot_limit else (lo, mid)
    b, t = float(lo), tpot(lo)
    if binding == tpot_binding and tpot(hi) > t:
        # the average batch need not be whole: TPOT interpolates linearly up to the SLO
        b = lo + min(1.0, (tpot_limit - t) / (tpot(hi) - t))
        t = _decode_step_between(tpot, b)
    return CapacityEstimate(b / (output_len * t), hi if b > lo else lo, 0.0, t, binding,
                            ctx.fidelity)
