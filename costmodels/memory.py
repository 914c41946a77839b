"""Memory per GPU: weights, KV cache (MLA aware), activations and what the engine reserves.

Weights are sharded ``tp`` ways (vocabulary-parallel embeddings and LM head, column/row
parallel projections); routed experts are split ``ep`` ways when expert parallelism is used,
else sharded ``tp`` ways like a dense MLP; layers are split over ``pp`` stages and the busiest
stage sets the need.  KV per token per GPU: GQA keeps ``max(1, kv_heads / tp)`` heads (heads are
replicated once tp exceeds them); MLA keeps the whole compressed latent on every TP rank.

Reserved memory follows vLLM's accounting: the engine may use ``gpu_memory_utilization`` of
the device (default 0.9); inside that, CUDA graphs and the CUDA context take about 0.5 GiB and
NCCL buffers about 0.4 GB when the GPU talks to peers (ANCHORS.md section 5).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from costmodels.model import ModelSpec
from costmodels.ops import Parallel, stage_layers

GiB = 2.0 ** 30
CUDA_CONTEXT_AND_GRAPHS_BYTES = 0.5 * GiB
NCCL_BUFFER_BYTES = 0.4e9
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per GPU on the busiest pipeline stage.

    ``kv_cache`` is what is left for the KV cache (negative: the model does not fit);
    ``reserved`` = the device memory the engine leaves alone plus context / graphs / NCCL.
    """

    total: float
    weights: float
    kv_cache: float
    activations: float
    reserved: float

    @property
    def fits(self) -> bool:
        return self.kv_cache > 0

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def layer_weight_params_per_gpu(model: ModelSpec, par: Parallel, moe_layer: bool) -> float:
    """Parameters of one decoder layer held by one GPU."""
    attn = model.attention_parameters() / par.tp
    norms = 2 * model.hidden_size
    if moe_layer and model.moe:
        moe = model.moe
        experts = moe.num_experts * model.expert_parameters()
        experts /= par.ep if par.ep > 1 else par.tp
        shared = moe.num_shared_experts * model.mlp_parameters(moe.shared_intermediate_size) / par.tp
        router = model.hidden_size * moe.num_experts
        return attn + norms + experts + shared + router
    return attn + norms + model.mlp_parameters(model.intermediate_size) / par.tp


def stage_weight_params(model: ModelSpec, par: Parallel, layers_per_stage: Sequence[int] | None = None) -> list[float]:
    """Parameters per GPU for each pipeline stage (embedding on the first, LM head on the last).

    ``layers_per_stage`` gives an uneven split; by default layers are split evenly."""
    counts = list(layers_per_stage) if layers_per_stage else stage_layers(model.num_layers, par.pp)
    out, layer = [], 0
    emb = model.vocab_size * model.hidden_size / par.tp
    for s, n in enumerate(counts):
        p = sum(layer_weight_params_per_gpu(model, par, model.is_moe_layer(i)) for i in range(layer, layer + n))
        layer += n
        if s == 0:
            p += emb
        if s == par.pp - 1:
            p += model.hidden_size + (0 if model.tie_word_embeddings and par.pp == 1 else emb)
        out.append(p)
    return out


def weight_bytes_per_gpu(model: ModelSpec, par: Parallel, weight_bytes: float) -> float:
    """Weight bytes on the busiest GPU."""
    return max(stage_weight_params(model, par)) * weight_bytes


def kv_bytes_per_token_per_gpu(model: ModelSpec, par: Parallel, kv_bytes: float) -> float:
    """KV-cache bytes one token occupies on one GPU of the busiest stage (bytes/token)."""
    layers = max(stage_layers(model.num_layers, par.pp))
    if model.mla:
        per_layer = model.kv_values_per_token_per_layer()
    else:
        per_layer = 2 * max(1.0, model.num_kv_heads / par.tp) * model.head_dim
    return layers * per_layer * kv_bytes


def activation_bytes(model: ModelSpec, par: Parallel, max_tokens: int, act_bytes: float = 2.0) -> float:
    """Peak transient activation bytes for one forward of ``max_tokens`` tokens (inference:
    only a layer's working set is alive: residual, QKV, MLP intermediate, logits in fp32)."""
    h = model.hidden_size
    inter = model.intermediate_size
    if model.moe:
        inter = max(inter, model.moe.expert_intermediate_size * model.moe.experts_per_token)
    per_token = (2 * h + (model.q_dim + 2 * model.num_kv_heads * model.head_dim) / par.tp
                 + 3 * inter / par.tp) * act_bytes
    logits = min(max_tokens, 256) * model.vocab_size / par.tp * 4.0
    return max_tokens * per_token + logits


def memory_breakdown(model: ModelSpec, par: Parallel, memory_bytes: float, *, weight_bytes: float = 2.0,
                     max_batched_tokens: int = 8192, act_bytes: float = 2.0,
                     gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION) -> MemoryBreakdown:
    """Memory per GPU for a replica laid out as ``par`` on devices of ``memory_bytes``."""
    weights = weight_bytes_per_gpu(model, par, weight_bytes)
    acts = activation_bytes(model, par, max_batched_tokens, act_bytes)
    return _breakdown(memory_bytes, weights, acts, par.gpus > 1 or par.ep > 1, gpu_memory_utilization)


def _breakdown(memory_bytes: float, weights: float, acts: float, talks_to_peers: bool,
               gpu_memory_utilization: float) -> MemoryBreakdown:
    """What is left for the KV cache once the engine's reserve, weights and activations are out."""
    engine = CUDA_CONTEXT_AND_GRAPHS_BYTES + (NCCL_BUFFER_BYTES if talks_to_peers else 0.0)
    reserved = (1.0 - gpu_memory_utilization) * memory_bytes + engine
    kv = memory_bytes - reserved - weights - acts
    return MemoryBreakdown(memory_bytes, weights, kv, acts, reserved)


def min_gpus_to_fit(model: ModelSpec, memory_bytes: float, weight_bytes: float = 2.0,
                    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION) -> int:
    """Smallest power-of-two GPU count whose weights leave room for some KV cache (TP only)."""
    n = 1
    while n <= 1024:
        par = Parallel(tp=min(n, 8), pp=max(1, n // 8))
        if memory_breakdown(model, par, memory_bytes, weight_bytes=weight_bytes,
                            gpu_memory_utilization=gpu_memory_utilization).kv_cache > 0.05 * memory_bytes:
            return n
        n *= 2
    return n


def attention_dp_memory_breakdown(model: ModelSpec, group: int, attn_dp: int, memory_bytes: float, *,
                                  weight_bytes: float = 2.0, max_batched_tokens: int = 8192,
                                  act_bytes: float = 2.0,
                                  gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
                                  ) -> MemoryBreakdown:
    """Memory per GPU of an MoE replica with data-parallel attention (additive; parallel planner).

    ``group`` GPUs hold the routed experts split ``group`` ways (EP = group); attention, dense
    MLPs, shared experts, router, embedding and LM head are sharded over the attention group of
    ``attn_tp = group / attn_dp`` ranks and replicated across the ``attn_dp`` groups.  Each
    attention group keeps the KV cache of its own sequences, so the replica's KV capacity in
    tokens is ``attn_dp`` x (kv_cache bytes / :func:`kv_bytes_per_token_per_gpu` at ``attn_tp``).
    ``max_batched_tokens`` is the token budget of one attention group.
    """
    attn_tp = group // attn_dp
    local = Parallel(tp=attn_tp)
    params = 0.0
    for i in range(model.num_layers):
        moe_layer = model.is_moe_layer(i)
        p = layer_weight_params_per_gpu(model, local, False) if not moe_layer else 0.0
        if moe_layer:
            moe = model.moe
            p = (model.attention_parameters() / attn_tp + 2 * model.hidden_size
                 + moe.num_experts * model.expert_parameters() / group
                 + moe.num_shared_experts * model.mlp_parameters(moe.shared_intermediate_size) / attn_tp
                 + model.hidden_size * moe.num_experts)
        params += p
    params += model.vocab_size * model.hidden_size / attn_tp * (1 if model.tie_word_embeddings else 2)
    weights = params * weight_bytes
    acts = activation_bytes(model, local, max_batched_tokens, act_bytes)
    return _breakdown(memory_bytes, weights, acts, group > 1, gpu_memory_utilization)
