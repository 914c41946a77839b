"""The op list of one forward iteration, per GPU, with FLOPs and HBM bytes.

An iteration processes ``tokens`` new tokens (prefill chunks and decode steps together, as in
continuous batching).  GEMMs see all of them as rows; attention work is given separately:
``prefill_pairs`` (query-key pairs of prefill tokens, causal) and ``decode_context_tokens``
(keys read by decode steps).  Everything is per GPU under tensor parallelism ``tp`` and, for
MoE layers, expert parallelism ``ep`` (each GPU holds ``num_experts / ep`` whole experts;
``ep = 1`` shards every expert ``tp`` ways instead).

Counting conventions (the usual ones): a multiply-accumulate is 2 FLOPs; a GEMM
[M x K] @ [K x N] costs 2MKN FLOPs and moves (MK + KN + MN) elements; attention costs
4 x heads x head_dim FLOPs per query-key pair (QK^T and PV) and reads the KV cache once.
MoE layers read only the experts that the batch activates: the expected number of distinct
experts hit by T tokens choosing k of E each is E (1 - (1 - k/E)^T) (uniform routing).
"""
from __future__ import annotations

from dataclasses import dataclass

from costmodels.model import ModelSpec

OP_KINDS = ("gemm", "attention", "elementwise", "comm")


@dataclass(frozen=True)
class Op:
    """One op instance on one GPU.

    Attributes:
        name: stable op name (``qkv_proj``, ``attention``, ``o_proj``, ``mlp_up_gate``,
            ``mlp_act``, ``mlp_down``, ``moe_router``, ``moe_dispatch``, ``moe_combine``,
            ``tp_allreduce``, ``pp_sendrecv``, ...).
        kind: "gemm" | "attention" | "elementwise" | "comm".
        flops: FLOPs of one instance.
        bytes: HBM bytes of one instance (for comm: the message bytes per rank).
        count: instances per forward pass on this GPU's pipeline stage path (e.g. layers).
        collective: for comm ops, the collective kind; group_size: ranks in it;
        scope: for comm ops, "tp" | "ep" | "pp" (which group the tier is looked up for).
        gemm_mnk: the (M, N, K) of a GEMM, for lookups in measured tables.
    """

    name: str
    kind: str
    flops: float
    bytes: float
    count: int = 1
    collective: str | None = None
    group_size: int = 1
    scope: str | None = None
    gemm_mnk: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Parallel:
    """Parallel layout of one model replica: tensor, pipeline and expert degrees."""

    tp: int = 1
    pp: int = 1
    ep: int = 1

    @property
    def gpus(self) -> int:
        return self.tp * self.pp


@dataclass(frozen=True)
class Iteration:
    """Work of one forward iteration of a replica.

    Attributes:
        tokens: new tokens this iteration (GEMM rows).
        prefill_pairs: causal query-key pairs of the prefill tokens (sum s(s+1)/2 + s*c).
        decode_context_tokens: total context length read by the decode tokens.
        sampled_tokens: positions that produce logits (one per sequence that samples).
    """

    tokens: int
    prefill_pairs: float = 0.0
    decode_context_tokens: float = 0.0
    sampled_tokens: int = 0

    @classmethod
    def prefill(cls, batch: int, input_len: int) -> "Iteration":
        return cls(tokens=batch * input_len, prefill_pairs=batch * input_len * (input_len + 1) / 2,
                   sampled_tokens=batch)

    @classmethod
    def decode(cls, batch: int, context_len: float) -> "Iteration":
        return cls(tokens=batch, decode_context_tokens=batch * context_len, sampled_tokens=batch)


def _gemm(name: str, m: float, n: float, k: float, w_bytes: float, a_bytes: float, count: int) -> Op:
    flops = 2.0 * m * n * k
    moved = k * n * w_bytes + (m * k + m * n) * a_bytes
    return Op(name, "gemm", flops, moved, count, gemm_mnk=(int(m), int(n), int(k)))


def expected_active_experts(tokens: float, experts: int, top_k: int) -> float:
    """Expected distinct experts hit when ``tokens`` tokens each pick ``top_k`` of ``experts``."""
    if tokens <= 0:
        return 0.0
    return experts * (1.0 - (1.0 - top_k / experts) ** tokens)


def layer_ops(model: ModelSpec, par: Parallel, it: Iteration, *, moe_layer: bool,
              weight_bytes: float = 2.0, act_bytes: float = 2.0, kv_bytes: float = 2.0,
              count: int = 1) -> list[Op]:
    """Ops of one decoder layer on one GPU (``count`` = how many such layers the path holds)."""
    h, t, tp = model.hidden_size, it.tokens, par.tp
    ops: list[Op] = []
    heads = model.num_attention_heads / tp
    ops.append(Op("input_norm", "elementwise", 4.0 * t * h, 2.0 * t * h * act_bytes, count))
    # --- attention projections ------------------------------------------------------------
    if model.mla:
        m = model.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            q_out = m.q_lora_rank  # q_a replicated, q_b sharded by heads
            ops.append(_gemm("qkv_proj", t, m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim, h,
                             weight_bytes, act_bytes, count))
            ops.append(_gemm("q_up_proj", t, heads * qk, q_out, weight_bytes, act_bytes, count))
        else:
            ops.append(_gemm("qkv_proj", t, heads * qk + m.kv_lora_rank + m.qk_rope_head_dim, h,
                             weight_bytes, act_bytes, count))
        ops.append(_gemm("kv_up_proj", t, heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank,
                         weight_bytes, act_bytes, count))
        kv_values = m.kv_lora_rank + m.qk_rope_head_dim  # latent is replicated across TP ranks
        per_pair_flops = 2.0 * heads * (qk + m.v_head_dim)
        decode_pair_flops = 2.0 * heads * (kv_values + m.kv_lora_rank)  # absorbed weights
    else:
        kv_heads = max(1.0, model.num_kv_heads / tp)
        d = model.head_dim
        ops.append(_gemm("qkv_proj", t, (heads + 2 * kv_heads) * d, h, weight_bytes, act_bytes, count))
        kv_values = 2 * kv_heads * d
        per_pair_flops = 4.0 * heads * d
        decode_pair_flops = per_pair_flops
    # --- attention kernel -----------------------------------------------------------------
    attn_flops = per_pair_flops * it.prefill_pairs + decode_pair_flops * it.decode_context_tokens
    attn_bytes = (it.decode_context_tokens * kv_values * kv_bytes      # KV cache read by decode
                  + t * kv_values * kv_bytes                           # KV cache written
                  + 2.0 * t * model.q_dim / tp * act_bytes)            # Q in, O out
    ops.append(Op("attention", "attention", attn_flops, attn_bytes, count))
    ops.append(_gemm("o_proj", t, h, model.attn_out_dim / tp, weight_bytes, act_bytes, count))
    if tp > 1:
        ops.append(Op("tp_allreduce", "comm", 0.0, t * h * act_bytes, count, "all_reduce", tp, "tp"))
    ops.append(Op("post_attn_norm", "elementwise", 4.0 * t * h, 2.0 * t * h * act_bytes, count))
    # --- MLP or MoE -----------------------------------------------------------------------
    if moe_layer and model.moe:
        ops.extend(_moe_ops(model, par, it, weight_bytes, act_bytes, count))
    else:
        inter = model.intermediate_size / tp
        ops.extend(_mlp_ops(model, t, inter, weight_bytes, act_bytes, count, prefix="mlp"))
    if tp > 1:
        ops.append(Op("tp_allreduce", "comm", 0.0, t * h * act_bytes, count, "all_reduce", tp, "tp"))
    return ops


def _mlp_ops(model: ModelSpec, t: float, inter: float, wb: float, ab: float, count: int,
             prefix: str) -> list[Op]:
    h = model.hidden_size
    up = 2 * inter if model.gated_mlp else inter
    return [
        _gemm(f"{prefix}_up_gate", t, up, h, wb, ab, count),
        Op(f"{prefix}_act", "elementwise", 4.0 * t * inter, (up + inter) * t * ab, count),
        _gemm(f"{prefix}_down", t, h, inter, wb, ab, count),
    ]


def _moe_ops(model: ModelSpec, par: Parallel, it: Iteration, wb: float, ab: float, count: int) -> list[Op]:
    moe = model.moe
    h, t = model.hidden_size, it.tokens
    ops = [_gemm("moe_router", t, moe.num_experts, h, wb, ab, count)]
    pairs = t * moe.experts_per_token                       # token-expert pairs in the batch
    if par.ep > 1:
        local_experts = moe.num_experts / par.ep
        shard = 1.0
        pairs_here = pairs / par.ep                         # balanced routing
        send = (t / par.ep) * moe.experts_per_token * h * ab  # each rank dispatches its tokens
        ops.append(Op("moe_dispatch", "comm", 0.0, send, count, "all_to_all", par.ep, "ep"))
    else:
        local_experts, shard, pairs_here = float(moe.num_experts), float(par.tp), pairs
    active = min(local_experts, expected_active_experts(t, moe.num_experts, moe.experts_per_token)
                 * local_experts / moe.num_experts)
    inter = moe.expert_intermediate_size / shard
    up = 2 * inter if model.gated_mlp else inter
    # grouped GEMM: rows = token-expert pairs here, weights = the active local experts
    w_up = active * up * h * wb
    w_down = active * inter * h * wb
    ops.append(Op("moe_up_gate", "gemm", 2.0 * pairs_here * up * h,
                  w_up + pairs_here * (h + up) * ab, count, gemm_mnk=(int(pairs_here), int(up), h)))
    ops.append(Op("moe_act", "elementwise", 4.0 * pairs_here * inter, pairs_here * (up + inter) * ab, count))
    ops.append(Op("moe_down", "gemm", 2.0 * pairs_here * inter * h,
                  w_down + pairs_here * (inter + h) * ab, count, gemm_mnk=(int(pairs_here), h, int(inter))))
    if par.ep > 1:
        ops.append(Op("moe_combine", "comm", 0.0, (t / par.ep) * moe.experts_per_token * h * ab,
                      count, "all_to_all", par.ep, "ep"))
    if moe.num_shared_experts:
        inter_s = moe.num_shared_experts * moe.shared_intermediate_size / par.tp
        ops.extend(_mlp_ops(model, t, inter_s, wb, ab, count, prefix="shared_expert"))
    return ops


def forward_ops(model: ModelSpec, par: Parallel, it: Iteration, *, weight_bytes: float = 2.0,
                act_bytes: float = 2.0, kv_bytes: float = 2.0) -> list[Op]:
    """All ops one token batch passes through, end to end across pipeline stages.

    Layers are split as evenly as possible over ``par.pp`` stages; the list holds every layer
    once (the latency path of one iteration through all stages) plus ``pp - 1`` stage hand-offs.
    Use :func:`stage_layers` for the per-stage split.
    """
    h, t = model.hidden_size, it.tokens
    ops: list[Op] = [Op("embedding", "elementwise", 0.0, t * h * act_bytes, 1)]
    dense = model.num_dense_layers
    moe = model.num_moe_layers
    kw = dict(weight_bytes=weight_bytes, act_bytes=act_bytes, kv_bytes=kv_bytes)
    if dense:
        ops.extend(layer_ops(model, par, it, moe_layer=False, count=dense, **kw))
    if moe:
        ops.extend(layer_ops(model, par, it, moe_layer=True, count=moe, **kw))
    if par.pp > 1:
        ops.append(Op("pp_sendrecv", "comm", 0.0, t * h * act_bytes, par.pp - 1, "p2p", 2, "pp"))
    s = max(it.sampled_tokens, 1)
    ops.append(Op("final_norm", "elementwise", 4.0 * s * h, 2.0 * s * h * act_bytes, 1))
    ops.append(_gemm("lm_head", s, model.vocab_size / par.tp, h, weight_bytes, act_bytes, 1))
    return _merge(ops)


def _merge(ops: list[Op]) -> list[Op]:
    """Merge identical op instances (same name and cost) by adding their counts."""
    merged: dict[tuple, Op] = {}
    for op in ops:
        key = (op.name, op.kind, op.flops, op.bytes, op.collective, op.group_size, op.scope, op.gemm_mnk)
        if key in merged:
            old = merged[key]
            merged[key] = Op(**{**old.__dict__, "count": old.count + op.count})
        else:
            merged[key] = op
    return list(merged.values())


def stage_layers(num_layers: int, pp: int) -> list[int]:
    """Even split of layers over ``pp`` stages (the first stages take the remainder)."""
    base, extra = divmod(num_layers, pp)
    return [base + (1 if i < extra else 0) for i in range(pp)]


def bottleneck_stage_fraction(num_layers: int, pp: int) -> float:
    """Fraction of all layers on the busiest pipeline stage (sets pipelined throughput)."""
    return max(stage_layers(num_layers, pp)) / num_layers if pp > 1 else 1.0


def flops_per_token(model: ModelSpec, context_len: float = 0.0) -> float:
    """Forward FLOPs per token: 2 x active parameters plus attention over ``context_len``."""
    attn = 4.0 * model.num_attention_heads * model.head_dim * context_len * model.num_layers
    return 2.0 * model.active_parameters() + attn


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def attention_dp_forward_ops(model: ModelSpec, group: int, attn_dp: int, it: Iteration, *,
                             weight_bytes: float = 2.0, act_bytes: float = 2.0,
                             kv_bytes: float = 2.0) -> list[Op]:
    """Ops on one GPU of an MoE replica with data-parallel attention (additive; parallel planner).

    The replica has ``group`` GPUs split into ``attn_dp`` attention groups of
    ``attn_tp = group / attn_dp`` ranks.  Each attention group runs attention, the dense MLP
    layers, the shared experts and the router for its ``1 / attn_dp`` share of the iteration's
    tokens (tensor-parallel over ``attn_tp``); the routed experts are spread over all ``group``
    GPUs (EP = ``group``) and see every token of the replica through an all-to-all dispatch and
    combine (SGLang ``--enable-dp-attention`` with ``--ep-size``, APEX's attention / FFN split).
    Load is assumed balanced over the attention groups, so this is the latency path of any of
    them; with fp8 weights the dispatch all-to-all carries fp8 tokens (DeepEP), the combine bf16; the caller's link map needs "tp" (the attention group's tier), "ep" (the whole
    group's) and "pp".
    """
    if model.moe is None:
        raise ValueError("attention data-parallelism is modelled for MoE models only")
    if attn_dp < 1 or group % attn_dp:
        raise ValueError(f"attn_dp={attn_dp} must divide group={group}")
    attn_tp = group // attn_dp
    local = Iteration(tokens=max(1, ceil_div(int(it.tokens), attn_dp)) if it.tokens else 0,
                      prefill_pairs=it.prefill_pairs / attn_dp,
                      decode_context_tokens=it.decode_context_tokens / attn_dp,
                      sampled_tokens=ceil_div(int(it.sampled_tokens), attn_dp))
    par_local = Parallel(tp=attn_tp)
    kw = dict(weight_bytes=weight_bytes, act_bytes=act_bytes, kv_bytes=kv_bytes)
    h = model.hidden_size
    ops: list[Op] = [Op("embedding", "elementwise", 0.0, local.tokens * h * act_bytes, 1)]
    if model.num_dense_layers:
        ops.extend(layer_ops(model, par_local, local, moe_layer=False, count=model.num_dense_layers, **kw))
    n_moe = model.num_moe_layers
    if n_moe:
        base = layer_ops(model, par_local, local, moe_layer=False, count=n_moe, **kw)
        ops.extend(o for o in base if not o.name.startswith("mlp_"))
        here = _moe_ops(model, par_local, local, weight_bytes, act_bytes, n_moe)
        ops.extend(o for o in here if o.name == "moe_router" or o.name.startswith("shared_expert"))
        routed = _moe_ops(model, Parallel(tp=group, ep=group), Iteration(tokens=it.tokens),
                          weight_bytes, act_bytes, n_moe)
        for o in routed:
            if o.name == "moe_dispatch" and weight_bytes <= 1.0:
                # fp8 models dispatch tokens in fp8 (DeepEP / SGLang, vLLM's DeepEP backends);
                # the combine returns bf16
                o = Op(**{**o.__dict__, "bytes": o.bytes * 1.0 / act_bytes})
            if o.name in ("moe_dispatch", "moe_up_gate", "moe_act", "moe_down", "moe_combine"):
                ops.append(o)
    s = max(local.sampled_tokens, 1)
    ops.append(Op("final_norm", "elementwise", 4.0 * s * h, 2.0 * s * h * act_bytes, 1))
    ops.append(_gemm("lm_head", s, model.vocab_size / attn_tp, h, weight_bytes, act_bytes, 1))
    return _merge(ops)


__all__ = ["Op", "Parallel", "Iteration", "layer_ops", "forward_ops", "attention_dp_forward_ops", "stage_layers",
           "bottleneck_stage_fraction", "expected_active_experts", "flops_per_token", "ceil_div"]
