"""Model specs read straight from a Hugging Face ``config.json`` (no ``transformers``).

One adapter per family turns the raw config into a :class:`ModelSpec`: dense GQA models
(Llama 2/3.x, Mistral, Qwen2/2.5, Qwen3), sparse MoE (Mixtral, Qwen3-MoE, gpt-oss) and
DeepSeek-V2/V3 (multi-head latent attention, shared experts, leading dense layers,
group-limited routing).  Parameter counts are computed from the shapes, so they can be checked
against the published totals; KV bytes per token follow the attention type (GQA stores K and V
per KV head; MLA stores one compressed latent plus the decoupled RoPE key).

Short aliases (``llama-3.1-70b``, ``deepseek-v3``...) resolve to the configs checked in under
``costmodels/configs/``, written from the published numbers.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from hardware.errors import InputError, unknown_name

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: bytes per element of the dtypes we plan for
DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "fp4": 0.5,
               "mxfp4": 0.5 + 1 / 32, "int4": 0.5}


def dtype_bytes(dtype: str, *, field_name: str = "dtype") -> float:
    """Bytes per element for a dtype name (``bf16`` -> 2.0)."""
    try:
        return DTYPE_BYTES[dtype.lower()]
    except (KeyError, AttributeError):
        raise InputError(f"unknown dtype {dtype!r}", field=field_name,
                         expected=" | ".join(DTYPE_BYTES)) from None


@dataclass(frozen=True)
class MLASpec:
    """Multi-head latent attention dimensions (DeepSeek-V2/V3)."""

    q_lora_rank: int | None  # None: queries projected directly (V2-Lite)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class MoESpec:
    """Routed-expert layout of a mixture-of-experts model."""

    num_experts: int              # routed experts per MoE layer
    experts_per_token: int        # top-k
    expert_intermediate_size: int
    num_shared_experts: int = 0
    shared_intermediate_size: int = 0  # per shared expert
    first_dense_layers: int = 0   # leading layers with a dense MLP (first_k_dense_replace)
    layer_freq: int = 1           # every layer_freq-th layer (after the dense ones) is MoE
    num_expert_groups: int = 1    # group-limited routing (n_group)
    topk_groups: int = 1          # groups each token may use (topk_group)
    expert_bias: bool = False     # gpt-oss experts carry biases


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of a decoder-only transformer; everything the cost models need.

    Sizes are element counts; use :func:`dtype_bytes` for bytes.
    """

    name: str
    family: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int        # dense MLP width (0 if no dense layer)
    vocab_size: int
    tie_word_embeddings: bool = False
    gated_mlp: bool = True
    attention_bias: bool = False
    mla: MLASpec | None = None
    moe: MoESpec | None = None
    sliding_window: int | None = None
    sliding_layers: int = 0       # layers that use the sliding window (gpt-oss: every other)
    max_position_embeddings: int = 0
    weight_dtype: str = "bf16"    # dtype the checkpoint is published in
    source: str = ""
    hf_id: str = ""               # Hugging Face repository id (the config's _name_or_path)

    # ---- structure -----------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    def is_moe_layer(self, layer: int) -> bool:
        """True when decoder layer ``layer`` (0-based) has routed experts."""
        if self.moe is None or layer < self.moe.first_dense_layers:
            return False
        return (layer - self.moe.first_dense_layers) % self.moe.layer_freq == 0

    @property
    def num_moe_layers(self) -> int:
        # closed form of sum(is_moe_layer(i)): every layer_freq-th layer after the dense ones
        # (called for every op list the cost model builds, so no loop over layers)
        if self.moe is None or self.num_layers <= self.moe.first_dense_layers:
            return 0
        return -(-(self.num_layers - self.moe.first_dense_layers) // self.moe.layer_freq)

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def q_dim(self) -> int:
        """Width of the query projection output (heads x per-head query dim)."""
        if self.mla:
            return self.num_attention_heads * (self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim)
        return self.num_attention_heads * self.head_dim

    @property
    def attn_out_dim(self) -> int:
        """Width of the attention output before the output projection."""
        if self.mla:
            return self.num_attention_heads * self.mla.v_head_dim
        return self.num_attention_heads * self.head_dim

    # ---- parameters ----------------------------------------------------------------------
    def attention_parameters(self) -> int:
        """Parameters of one attention block (projections and their norms/biases)."""
        h = self.hidden_size
        if self.mla:
            m = self.mla
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank:
                q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * self.num_attention_heads * qk
            else:
                q = h * self.num_attention_heads * qk
            kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank + \
                m.kv_lora_rank * self.num_attention_heads * (m.qk_nope_head_dim + m.v_head_dim)
            return q + kv + self.attn_out_dim * h
        kv_dim = self.num_kv_heads * self.head_dim
        params = h * self.q_dim + 2 * h * kv_dim + self.attn_out_dim * h
        if self.attention_bias:
            params += self.q_dim + 2 * kv_dim + (h if self.family == "gpt_oss" else 0)
        if self.family == "gpt_oss":
            params += self.num_attention_heads  # attention sinks
        if self.family in ("qwen3", "qwen3_moe"):
            params += 2 * self.head_dim  # q_norm, k_norm
        if self.family == "qwen2":
            params += self.q_dim + 2 * kv_dim  # q/k/v biases
        return params

    def mlp_parameters(self, intermediate: int) -> int:
        """Parameters of one (gated) MLP of the given width."""
        mats = 3 if self.gated_mlp else 2
        return mats * self.hidden_size * intermediate

    def expert_parameters(self) -> int:
        """Parameters of ONE routed expert in one layer."""
        if self.moe is None:
            return 0
        p = self.mlp_parameters(self.moe.expert_intermediate_size)
        if self.moe.expert_bias:
            p += 2 * self.moe.expert_intermediate_size + self.hidden_size
        return p

    def layer_parameters(self, layer: int, *, active_only: bool = False) -> int:
        """Parameters of decoder layer ``layer``; ``active_only`` counts top-k experts only."""
        h = self.hidden_size
        p = self.attention_parameters() + 2 * h  # two RMSNorms
        if self.is_moe_layer(layer):
            moe = self.moe
            experts = moe.experts_per_token if active_only else moe.num_experts
            p += experts * self.expert_parameters()
            p += moe.num_shared_experts * self.mlp_parameters(moe.shared_intermediate_size)
            p += h * moe.num_experts  # router
            if self.family == "gpt_oss":
                p += moe.num_experts  # router bias
            if self.family in ("deepseek_v3",):
                p += moe.num_experts  # e_score_correction_bias
        else:
            p += self.mlp_parameters(self.intermediate_size)
        return p

    def embedding_parameters(self) -> int:
        """Input embedding plus LM head (once when tied) plus the final norm."""
        emb = self.vocab_size * self.hidden_size
        return emb * (1 if self.tie_word_embeddings else 2) + self.hidden_size

    def parameters(self) -> int:
        """Total parameters (all experts), excluding multi-token-prediction modules."""
        return self.embedding_parameters() + sum(self.layer_parameters(i) for i in range(self.num_layers))

    def active_parameters(self) -> int:
        """Parameters touched per token (top-k routed experts + shared experts)."""
        return self.embedding_parameters() + sum(
            self.layer_parameters(i, active_only=True) for i in range(self.num_layers))

    def weight_bytes(self, dtype: str | float = "bf16") -> float:
        """Bytes of all weights at ``dtype`` (a name or bytes per element)."""
        b = dtype if isinstance(dtype, (int, float)) else dtype_bytes(dtype)
        return self.parameters() * float(b)

    # ---- KV cache ------------------------------------------------------------------------
    def kv_values_per_token_per_layer(self) -> int:
        """Cached values per token per layer: 2 x kv_heads x head_dim (GQA) or
        kv_lora_rank + qk_rope_head_dim (MLA; 576 for DeepSeek-V3)."""
        if self.mla:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    def kv_bytes_per_token(self, kv_dtype_bytes: float = 2.0) -> float:
        """KV-cache bytes per token over all layers (bytes/token), full-attention layers."""
        return float(self.kv_values_per_token_per_layer() * self.num_layers * kv_dtype_bytes)

    def kv_bytes_for_sequence(self, length: int, kv_dtype_bytes: float = 2.0) -> float:
        """KV bytes one sequence of ``length`` tokens holds; sliding-window layers keep at most
        ``sliding_window`` tokens."""
        per_layer = self.kv_values_per_token_per_layer() * kv_dtype_bytes
        full_layers = self.num_layers - self.sliding_layers
        windowed = min(length, self.sliding_window or length)
        return float(per_layer * (full_layers * length + self.sliding_layers * windowed))

    def summary(self) -> dict[str, Any]:
        """The fields ``planner catalog models`` shows."""
        return {
            "name": self.name, "family": self.family, "layers": self.num_layers,
            "hidden_size": self.hidden_size, "attention": "mla" if self.mla else "gqa",
            "heads": self.num_attention_heads, "kv_heads": self.num_kv_heads,
            "experts": self.moe.num_experts if self.moe else 0,
            "experts_per_token": self.moe.experts_per_token if self.moe else 0,
            "parameters": self.parameters(), "active_parameters": self.active_parameters(),
            "kv_bytes_per_token": self.kv_bytes_per_token(2.0),
        }


# ---- adapters ----------------------------------------------------------------------------

def _req(cfg: dict, key: str, src: str, kind: type = int) -> Any:
    if key not in cfg or cfg[key] is None:
        raise InputError(f"missing required field '{key}'", file=src, field=key,
                         expected=f"an {kind.__name__} in the Hugging Face config")
    value = cfg[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise InputError(f"field '{key}' is {value!r}", file=src, field=key, expected="a positive integer")
    return value


def _common(cfg: dict, src: str, family: str) -> dict[str, Any]:
    h = _req(cfg, "hidden_size", src)
    heads = _req(cfg, "num_attention_heads", src)
    kv = cfg.get("num_key_value_heads") or heads
    if not isinstance(kv, int) or kv <= 0 or heads % kv:
        raise InputError(f"num_key_value_heads={kv!r} does not divide num_attention_heads={heads}",
                         file=src, field="num_key_value_heads", expected="a divisor of num_attention_heads")
    head_dim = cfg.get("head_dim") or h // heads
    act = str(cfg.get("hidden_act", "silu"))
    name = cfg.get("_name_or_path") or Path(src).parent.name or Path(src).stem
    return dict(
        name=str(name), family=family, hidden_size=h, num_layers=_req(cfg, "num_hidden_layers", src),
        num_attention_heads=heads, num_kv_heads=kv, head_dim=int(head_dim),
        intermediate_size=int(cfg.get("intermediate_size") or 0), vocab_size=_req(cfg, "vocab_size", src),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        gated_mlp=act in ("silu", "swiglu", "gelu_pytorch_tanh", "geglu") or family != "gpt2",
        attention_bias=bool(cfg.get("attention_bias", False)),
        max_position_embeddings=int(cfg.get("max_position_embeddings") or 0),
        weight_dtype=_weight_dtype(cfg), source=str(src), hf_id=str(cfg.get("_name_or_path") or ""),
    )


def _weight_dtype(cfg: dict) -> str:
    q = cfg.get("quantization_config") or {}
    method = str(q.get("quant_method", "")).lower()
    if method == "fp8":
        return "fp8"
    if method == "mxfp4":
        return "mxfp4"
    return {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}.get(str(cfg.get("torch_dtype")), "bf16")


def _dense(cfg: dict, src: str, family: str) -> ModelSpec:
    spec = _common(cfg, src, family)
    _req(cfg, "intermediate_size", src)
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None
    if window and family == "mistral":
        spec.update(sliding_window=int(window), sliding_layers=spec["num_layers"])
    return ModelSpec(**spec)


def _mixtral(cfg: dict, src: str, family: str) -> ModelSpec:
    spec = _common(cfg, src, family)
    moe = MoESpec(num_experts=_req(cfg, "num_local_experts", src),
                  experts_per_token=_req(cfg, "num_experts_per_tok", src),
                  expert_intermediate_size=_req(cfg, "intermediate_size", src))
    return ModelSpec(**spec, moe=moe)


def _qwen_moe(cfg: dict, src: str, family: str) -> ModelSpec:
    spec = _common(cfg, src, family)
    if cfg.get("mlp_only_layers"):
        raise InputError("mlp_only_layers is not supported", file=src, field="mlp_only_layers",
                         expected="an empty list (every layer MoE)")
    shared = int(cfg.get("shared_expert_intermediate_size") or 0)
    moe = MoESpec(num_experts=_req(cfg, "num_experts", src),
                  experts_per_token=_req(cfg, "num_experts_per_tok", src),
                  expert_intermediate_size=_req(cfg, "moe_intermediate_size", src),
                  num_shared_experts=1 if shared else 0, shared_intermediate_size=shared,
                  layer_freq=int(cfg.get("decoder_sparse_step") or 1))
    return ModelSpec(**spec, moe=moe)


def _deepseek(cfg: dict, src: str, family: str) -> ModelSpec:
    spec = _common(cfg, src, family)
    mla = MLASpec(q_lora_rank=cfg.get("q_lora_rank") or None, kv_lora_rank=_req(cfg, "kv_lora_rank", src),
                  qk_nope_head_dim=_req(cfg, "qk_nope_head_dim", src),
                  qk_rope_head_dim=_req(cfg, "qk_rope_head_dim", src), v_head_dim=_req(cfg, "v_head_dim", src))
    spec["head_dim"] = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    moe = None
    if cfg.get("n_routed_experts"):
        inter = _req(cfg, "moe_intermediate_size", src)
        moe = MoESpec(num_experts=_req(cfg, "n_routed_experts", src),
                      experts_per_token=_req(cfg, "num_experts_per_tok", src),
                      expert_intermediate_size=inter,
                      num_shared_experts=int(cfg.get("n_shared_experts") or 0), shared_intermediate_size=inter,
                      first_dense_layers=int(cfg.get("first_k_dense_replace") or 0),
                      layer_freq=int(cfg.get("moe_layer_freq") or 1),
                      num_expert_groups=int(cfg.get("n_group") or 1), topk_groups=int(cfg.get("topk_group") or 1))
        if moe.num_experts % moe.num_expert_groups:
            raise InputError("n_group does not divide n_routed_experts", file=src, field="n_group",
                             expected="a divisor of n_routed_experts")
    return ModelSpec(**spec, mla=mla, moe=moe)


def _gpt_oss(cfg: dict, src: str, family: str) -> ModelSpec:
    spec = _common(cfg, src, family)
    types = cfg.get("layer_types") or []
    moe = MoESpec(num_experts=_req(cfg, "num_local_experts", src),
                  experts_per_token=int(cfg.get("num_experts_per_tok") or cfg.get("experts_per_token") or 0) or
                  _req(cfg, "num_experts_per_tok", src),
                  expert_intermediate_size=_req(cfg, "intermediate_size", src), expert_bias=True)
    spec.update(sliding_window=cfg.get("sliding_window"),
                sliding_layers=sum(1 for t in types if t == "sliding_attention"))
    return ModelSpec(**spec, moe=moe)


ADAPTERS: dict[str, Callable[[dict, str, str], ModelSpec]] = {
    "llama": _dense, "mistral": _dense, "qwen2": _dense, "qwen3": _dense,
    "mixtral": _mixtral, "qwen2_moe": _qwen_moe, "qwen3_moe": _qwen_moe,
    "deepseek_v2": _deepseek, "deepseek_v3": _deepseek, "gpt_oss": _gpt_oss,
}


def model_from_config(cfg: dict, *, source: str = "<config>") -> ModelSpec:
    """Build a :class:`ModelSpec` from a parsed Hugging Face config dict."""
    if not isinstance(cfg, dict):
        raise InputError("config is not a JSON object", file=source, expected="a Hugging Face config.json")
    model_type = cfg.get("model_type")
    if model_type is None:
        raise InputError("missing 'model_type'", file=source, field="model_type",
                         expected=" | ".join(sorted(ADAPTERS)))
    adapter = ADAPTERS.get(str(model_type))
    if adapter is None:
        raise InputError(f"unsupported model_type {model_type!r}", file=source, field="model_type",
                         expected=" | ".join(sorted(ADAPTERS)))
    return adapter(cfg, source, str(model_type))


def aliases() -> dict[str, Path]:
    """Short model names -> checked-in config files."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.json"))}


@functools.lru_cache(maxsize=64)
def _load_path(path: str) -> ModelSpec:
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.exists():
        raise InputError("model config not found", file=str(p), expected="a Hugging Face config.json")
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"malformed JSON: {exc}", file=str(p), expected="a Hugging Face config.json") from None
    return model_from_config(cfg, source=str(p))


def model_beside(name_or_path: str, base: str | Path) -> str:
    """A request's ``model`` read from the request's folder ``base``: an alias stays as it is;
    a relative path that exists under ``base`` becomes that path (as the request's trace and
    profile paths do); anything else stays as given (relative to the current folder)."""
    key = str(name_or_path).strip()
    beside = Path(base) / key
    if key.lower() in aliases() or Path(key).is_absolute() or not beside.exists():
        return name_or_path
    return str(beside)


def model_config_file(name_or_path: str | ModelSpec) -> Path | None:
    """The config.json a model name reads when it is a path (a file or a model folder) rather
    than an alias: an input the planners must never write over; ``None`` for an alias."""
    if isinstance(name_or_path, ModelSpec):
        return None
    key = str(name_or_path).strip()
    if key.lower() in aliases():
        return None
    p = Path(key)
    p = p / "config.json" if p.is_dir() else p
    return p if p.is_file() else None


def load_model(name_or_path: str | ModelSpec) -> ModelSpec:
    """A model by alias (``llama-3.1-70b``, case-insensitive) or path to a config.json / folder."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    key = str(name_or_path).strip()
    known = aliases()
    alias = key.lower().split("/")[-1] if "/" in key and not Path(key).exists() else key.lower()
    if alias in known:
        spec = _load_path(str(known[alias]))
        return replace(spec, name=alias)
    if Path(key).exists() or key.endswith(".json"):
        return _load_path(key)
    raise unknown_name("model", key, known, field="model")
