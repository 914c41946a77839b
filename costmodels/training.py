"""Training-side estimates for one sequence on a sequence-parallel group (used by seqpar).

All functions are pure and take a :class:`~costmodels.model.ModelSpec` and, where hardware
matters, an :class:`~hardware.accelerator.Accelerator` (and link tiers priced by
:mod:`costmodels.comm`).  Units: FLOPs, bytes, seconds, tokens.

Counting conventions:

* linear FLOPs: 2 x (active, non-embedding weights) per token plus the LM head (2 h V);
* attention FLOPs: 2 s^2 (q_dim + attn_out_dim) per layer for QK^T and PV, halved for causal
  masks (packed documents keep their own causal mask, so s is the document length);
* training = forward + backward (2x forward) = 3x forward, plus the recomputed part:
  "none" recomputes nothing, "selective" recomputes core attention (Megatron's selective
  mode), "full" recomputes the whole forward;
* a sequence of length s on a group of d devices does 1/d of the work on each device; GEMM
  efficiency follows the accelerator's size-dependent curve at the per-device GEMM size, so
  splitting short sequences thinly is penalised, as it is on real GPUs;
* Ulysses: per layer, all-to-all of Q, K, V before attention and of the output after, in the
  forward and again in the backward (8 per layer; 12 with full recompute); KV heads fewer than
  the degree are replicated up to it;
* ring attention (balanced causal / zigzag layout): per layer d - 1 p2p steps passing K and V
  blocks of s/d tokens forward, K, V, dK, dV backward; each step's transfer hides behind the
  step's attention compute, only the excess is exposed;
* hybrid: Ulysses of degree u inside a node x ring of degree r across nodes (USP-style).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from costmodels.comm import collective_time_s
from costmodels.model import ModelSpec
from hardware.accelerator import Accelerator, Link

RECOMPUTE_MODES = ("none", "selective", "full")
ZERO_STAGES = (0, 1, 2, 3)
#: flash-attention kernels reach this fraction of the GEMM efficiency at the same FLOPs
#: (our prior: FA2/FA3 forward ~70-75% of peak on H100, backward lower)
ATTENTION_EFFICIENCY_FACTOR = 0.8
#: kernels launched per decoder layer in one forward pass (norms, projections, attention, MLP)
KERNELS_PER_LAYER = 14


def efficiency_at(curve: Any, size: Any) -> Any:
    """``curve.at(size)`` for a scalar or a numpy array of sizes (same interpolation: linear in
    log(size), clamped at both ends)."""
    xs = np.log(np.asarray(curve.sizes, dtype=float))
    ys = np.asarray(curve.efficiencies, dtype=float)
    x = np.log(np.maximum(np.asarray(size, dtype=float), 1.0))
    out = np.interp(x, xs, ys) if len(xs) > 1 else np.full_like(x, ys[0])
    return float(out) if np.ndim(out) == 0 else out


def collective_line(kind: str, group_size: int, link: Link) -> tuple[float, float]:
    """(fixed seconds, seconds per byte) of one collective: the alpha-beta model of
    :func:`costmodels.comm.collective_time_s` is ``fixed + per_byte * message_bytes`` for a
    link without a size-dependent efficiency curve (read off two message sizes)."""
    x = 1e6
    t1 = collective_time_s(kind, x, group_size, link)
    t2 = collective_time_s(kind, 2 * x, group_size, link)
    per_byte = (t2 - t1) / x
    return t1 - per_byte * x, per_byte


def _check_recompute(recompute: str) -> None:
    if recompute not in RECOMPUTE_MODES:
        raise ValueError(f"unknown recompute mode {recompute!r} (expected one of {RECOMPUTE_MODES})")


def kv_dim(model: ModelSpec) -> int:
    """Width of K (= of V) per token: kv_heads x head_dim (MLA: heads x v_head_dim after
    up-projection, which is what attention kernels see)."""
    if model.mla:
        return model.num_attention_heads * model.mla.v_head_dim
    return model.num_kv_heads * model.head_dim


def linear_flops_per_token(model: ModelSpec) -> float:
    """Forward FLOPs per token of all GEMMs (projections, MLP / active experts, LM head)."""
    layers = sum(model.layer_parameters(i, active_only=True) for i in range(model.num_layers))
    return 2.0 * layers + 2.0 * model.hidden_size * model.vocab_size


def attention_flops(model: ModelSpec, seq_len: float, *, causal: bool = True) -> float:
    """Forward FLOPs of the s^2 part (QK^T and PV) for one sequence over all layers."""
    per_layer = 2.0 * seq_len * seq_len * (model.q_dim + model.attn_out_dim)
    return per_layer * model.num_layers * (0.5 if causal else 1.0)


def training_flops(model: ModelSpec, seq_len: float, recompute: str = "selective") -> tuple[float, float]:
    """(linear FLOPs, attention FLOPs) of one training pass (forward + backward + recompute)
    of one sequence of ``seq_len`` tokens."""
    _check_recompute(recompute)
    lin = linear_flops_per_token(model) * seq_len
    att = attention_flops(model, seq_len)
    lin_mult = 4.0 if recompute == "full" else 3.0
    att_mult = 3.0 if recompute == "none" else 4.0
    return lin * lin_mult, att * att_mult


def compute_time_s(model: ModelSpec, acc: Accelerator, seq_len: Any, group_size: int, *,
                   recompute: str = "selective", dtype: str = "bf16") -> Any:
    """Seconds of GPU compute for one sequence split over ``group_size`` devices (per device,
    all devices in parallel), with size-dependent GEMM efficiency.  ``seq_len`` may be a numpy
    array (one time per length)."""
    lin, att = training_flops(model, seq_len, recompute)
    d = max(1, int(group_size))
    peak = acc.peak_flops(dtype)
    tokens = np.asarray(seq_len, dtype=float) / d
    gemm = 2.0 * tokens * model.hidden_size * max(model.hidden_size, model.intermediate_size or 0)
    e_gemm = efficiency_at(acc.matmul_efficiency, gemm)
    att_layer = np.asarray(att, dtype=float) / max(1, model.num_layers) / d
    e_att = efficiency_at(acc.matmul_efficiency, att_layer) * ATTENTION_EFFICIENCY_FACTOR
    t = lin / d / (peak * e_gemm) + att / d / (peak * e_att)
    return float(t) if np.ndim(t) == 0 else t


def activation_bytes_per_token(model: ModelSpec, recompute: str = "selective", *,
                               dtype_bytes: float = 2.0, logits_bytes: float = 4.0) -> float:
    """Activation bytes kept per token for the backward pass, over all layers (bytes/token).

    Per layer (flash attention, so no s^2 term): the layer input and both norm outputs,
    Q, K, V, the core-attention output, the MLP's gate / up / activation outputs (active
    experts for MoE).  "selective" drops the core-attention output (recomputed); "full" keeps
    only each layer's input plus one layer's full set during its recompute.  Plus the LM head's
    logits (fp32 for the loss) per token.
    """
    _check_recompute(recompute)
    h = model.hidden_size
    attn = model.q_dim + 2 * kv_dim(model) + model.attn_out_dim
    if model.moe is not None:
        moe = model.moe
        mlp = 3 * (moe.experts_per_token * moe.expert_intermediate_size +
                   moe.num_shared_experts * moe.shared_intermediate_size)
    else:
        mlp = 3 * model.intermediate_size
    per_layer_none = dtype_bytes * (3 * h + attn + mlp)
    logits = logits_bytes * model.vocab_size
    if recompute == "none":
        return per_layer_none * model.num_layers + logits
    if recompute == "selective":
        per_layer = per_layer_none - dtype_bytes * model.attn_out_dim
        return per_layer * model.num_layers + logits
    return dtype_bytes * h * model.num_layers + per_layer_none + logits


def model_state_bytes(model: ModelSpec, zero_stage: int = 3, shard_size: int = 1, *,
                      weight_bytes: float = 2.0, grad_bytes: float = 2.0,
                      optimizer_bytes: float = 12.0) -> float:
    """Bytes per device of weights, gradients and Adam states (fp32 master + m + v) under ZeRO
    stage 0-3 sharded over ``shard_size`` data-parallel ranks (mixed precision: 2 + 2 + 12 =
    16 bytes per parameter before sharding)."""
    if zero_stage not in ZERO_STAGES:
        raise ValueError(f"unknown ZeRO stage {zero_stage!r} (expected 0, 1, 2 or 3)")
    p = float(model.parameters())
    n = max(1, int(shard_size))
    w, g, o = weight_bytes * p, grad_bytes * p, optimizer_bytes * p
    if zero_stage >= 1:
        o /= n
    if zero_stage >= 2:
        g /= n
    if zero_stage >= 3:
        w /= n
    return w + g + o


def ulysses_a2a_bytes(model: ModelSpec, seq_len: float, degree: int) -> tuple[float, float]:
    """(bytes one rank sends in the Q/K/V all-to-all, bytes in the output all-to-all) for one
    layer's forward, bf16.  KV heads fewer than the degree are replicated up to it."""
    d = max(1, int(degree))
    tokens = seq_len / d
    kv_heads = model.num_kv_heads if not model.mla else model.num_attention_heads
    kv_width = max(kv_heads, d) * (model.head_dim if not model.mla else model.mla.v_head_dim)
    qkv = tokens * (model.q_dim + 2 * kv_width) * 2.0
    out = tokens * model.attn_out_dim * 2.0
    return qkv, out


def ulysses_comm_time_s(model: ModelSpec, seq_len: Any, degree: int, link: Link, *,
                        recompute: str = "selective", include_latency: bool = False) -> Any:
    """Seconds of Ulysses all-to-all for one sequence over all layers (forward + backward,
    plus the recomputed forward under "full"); bandwidth part only unless ``include_latency``
    (the latency part is paid once per group and micro-batch, see :func:`group_fixed_time_s`).
    ``seq_len`` may be a numpy array."""
    _check_recompute(recompute)
    d = int(degree)
    if d <= 1:
        return 0.0 * np.asarray(seq_len, dtype=float) if np.ndim(seq_len) else 0.0
    qkv, out = ulysses_a2a_bytes(model, np.asarray(seq_len, dtype=float), d)
    fixed, per_byte = collective_line("all_to_all", d, link)
    passes = 3.0 if recompute == "full" else 2.0
    t = per_byte * (qkv + out) + (2 * fixed if include_latency else 0.0)
    t = t * passes * model.num_layers
    return float(t) if np.ndim(t) == 0 else t


def _latency_only(kind: str, group: int, link: Link) -> float:
    """Time of a collective with a negligible message (its fixed part)."""
    return collective_time_s(kind, 1e-30, group, link)


def ring_comm_time_s(model: ModelSpec, acc: Accelerator, seq_len: Any, degree: int, link: Link, *,
                     recompute: str = "selective", heads_split: int = 1, dtype: str = "bf16") -> Any:
    """Exposed seconds of ring-attention p2p for one sequence (all layers, all passes).

    Per layer and pass, ``degree - 1`` steps each send a K and V block of ``s/degree`` tokens
    (``heads_split`` > 1 when Ulysses already split the heads, hybrid); the backward also
    passes dK, dV.  Each step overlaps with that step's block of attention compute; only the
    excess is exposed.  ``seq_len`` may be a numpy array.
    """
    r = int(degree)
    s = np.asarray(seq_len, dtype=float)
    if r <= 1:
        return 0.0 * s if np.ndim(s) else 0.0
    kv_bytes = s / r * 2 * kv_dim(model) / max(1, heads_split) * 2.0
    peak = acc.peak_flops(dtype)
    att_fwd_layer = attention_flops(model, s) / model.num_layers / (r * heads_split)
    e_att = efficiency_at(acc.matmul_efficiency, att_fwd_layer / r) * ATTENTION_EFFICIENCY_FACTOR
    step_fwd = att_fwd_layer / r / (peak * e_att)  # compute per ring step, forward
    fixed, per_byte = collective_line("p2p", 2, link)
    send_fwd = fixed + per_byte * kv_bytes
    send_bwd = fixed + per_byte * 2 * kv_bytes
    fwd_passes = 2.0 if recompute in ("full", "selective") else 1.0
    exposed = fwd_passes * np.maximum(0.0, send_fwd - step_fwd) + \
        np.maximum(0.0, send_bwd - 2 * step_fwd)
    t = exposed * (r - 1) * model.num_layers
    return float(t) if np.ndim(t) == 0 else t


@dataclass(frozen=True)
class SPGroupSpec:
    """A sequence-parallel group: type ("single", "ulysses", "ring", "hybrid"), Ulysses degree
    u, ring degree r (size = u x r), and the link tiers its Ulysses and ring traffic use."""

    type: str
    ulysses_degree: int
    ring_degree: int
    ulysses_link: Link | None
    ring_link: Link | None

    @property
    def size(self) -> int:
        return self.ulysses_degree * self.ring_degree


def sequence_time_s(model: ModelSpec, acc: Accelerator, seq_len: Any, group: SPGroupSpec, *,
                    recompute: str = "selective", dtype: str = "bf16") -> Any:
    """Seconds one sequence of ``seq_len`` tokens adds to its group's time: compute split over
    the group plus the bandwidth part of its Ulysses traffic plus exposed ring traffic
    (``seq_len`` may be a numpy array)."""
    t = compute_time_s(model, acc, seq_len, group.size, recompute=recompute, dtype=dtype)
    if group.ulysses_degree > 1 and group.ulysses_link is not None:
        # Ulysses inside a hybrid group exchanges s / r tokens per ring rank
        t = t + ulysses_comm_time_s(model, np.asarray(seq_len, dtype=float) / group.ring_degree, group.ulysses_degree,
                                 group.ulysses_link, recompute=recompute)
    if group.ring_degree > 1 and group.ring_link is not None:
        t = t + ring_comm_time_s(model, acc, seq_len, group.ring_degree, group.ring_link,
                              recompute=recompute, heads_split=group.ulysses_degree, dtype=dtype)
    return t


def group_fixed_time_s(model: ModelSpec, acc: Accelerator, group: SPGroupSpec, *,
                       recompute: str = "selective") -> float:
    """Seconds a group pays once per micro-batch whatever it holds: kernel launches and the
    latency part of its collectives (forward + backward)."""
    passes = 3.0 if recompute == "full" else 2.0
    t = KERNELS_PER_LAYER * model.num_layers * passes * acc.kernel_overhead_s
    if group.ulysses_degree > 1 and group.ulysses_link is not None:
        t += 2 * passes * model.num_layers * _latency_only("all_to_all", group.ulysses_degree,
                                                           group.ulysses_link)
    # ring p2p latencies are part of each step's transfer (see ring_comm_time_s)
    return t


def zero3_microbatch_time_s(model: ModelSpec, num_gpus: int, link: Link, *,
                            exposed_fraction: float = 0.3) -> float:
    """Exposed seconds of ZeRO-3 traffic paid once per micro-batch: weights all-gathered for the
    forward and again for the backward, gradients reduce-scattered (bf16), over all GPUs;
    ``exposed_fraction`` is the part prefetching does not hide (our prior)."""
    w = 2.0 * model.parameters()
    t = 2 * collective_time_s("all_gather", w, num_gpus, link) + \
        collective_time_s("reduce_scatter", w, num_gpus, link)
    return exposed_fraction * t
