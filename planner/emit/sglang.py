"""SGLang launch commands (``python -m sglang.launch_server``) for one engine instance.

Flag names checked (2026-11) against the SGLang documentation: server arguments page
(docs.sglang.io/advanced_features/server_arguments: ``--model-path``, ``--tp-size``,
``--dp-size``, ``--ep-size``, ``--enable-dp-attention``, ``--pp-size``, ``--mem-fraction-static``,
``--chunked-prefill-size``, ``--max-running-requests``, ``--quantization fp8``,
``--kv-cache-dtype fp8_e4m3``, ``--nnodes``, ``--node-rank``, ``--dist-init-addr``, ``--port``)
and the PD-disaggregation page / ``launch_server --help`` (``--disaggregation-mode
prefill|decode``, ``--disaggregation-transfer-backend mooncake|nixl``,
``--disaggregation-bootstrap-port``), plus the router
(``python -m sglang_router.launch_router --pd-disaggregation --prefill URL --decode URL``).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class SglangInstance:
    """What one SGLang server needs to know (SGLang's own terms: tp = GPUs of the instance)."""

    model_path: str
    tp: int
    pp: int = 1
    dp: int = 1                   # attention data-parallel groups (with enable_dp_attention)
    ep: int = 1
    enable_dp_attention: bool = False
    max_running_requests: int | None = None
    chunked_prefill_size: int | None = None
    mem_fraction_static: float | None = None
    quantization: str | None = None      # "fp8" for fp8 weights on a bf16 checkpoint
    kv_cache_dtype: str | None = None    # "fp8_e4m3"
    disaggregation_mode: str | None = None  # "prefill" | "decode"
    transfer_backend: str = "mooncake"
    port: int = 30000
    gpus_per_node: int = 8


def sglang_commands(inst: SglangInstance, *, head_addr: str = "HEAD_NODE_IP:50000") -> list[str]:
    """One command per node of the instance (a single command when it fits in one node)."""
    args = ["python", "-m", "sglang.launch_server", "--model-path", inst.model_path, "--tp-size", str(inst.tp)]
    if inst.pp > 1:
        args += ["--pp-size", str(inst.pp)]
    if inst.enable_dp_attention and inst.dp > 1:
        args += ["--dp-size", str(inst.dp), "--enable-dp-attention"]
    if inst.ep > 1:
        args += ["--ep-size", str(inst.ep)]
    if inst.quantization:
        args += ["--quantization", inst.quantization]
    if inst.kv_cache_dtype:
        args += ["--kv-cache-dtype", inst.kv_cache_dtype]
    if inst.mem_fraction_static is not None:
        args += ["--mem-fraction-static", f"{inst.mem_fraction_static:g}"]
    if inst.max_running_requests:
        args += ["--max-running-requests", str(inst.max_running_requests)]
    if inst.chunked_prefill_size:
        args += ["--chunked-prefill-size", str(inst.chunked_prefill_size)]
    if inst.disaggregation_mode:
        args += ["--disaggregation-mode", inst.disaggregation_mode,
                 "--disaggregation-transfer-backend", inst.transfer_backend]
    args += ["--port", str(inst.port)]
    gpus = inst.tp * inst.pp
    nnodes = max(1, -(-gpus // inst.gpus_per_node))
    if nnodes == 1:
        return [shlex.join(args)]
    return [shlex.join(args + ["--nnodes", str(nnodes), "--node-rank", str(r), "--dist-init-addr", head_addr])
            for r in range(nnodes)]


def sglang_router_command(prefill_urls: list[str], decode_urls: list[str], *, port: int = 8000) -> str:
    """The PD router in front of prefill and decode servers."""
    args = ["python", "-m", "sglang_router.launch_router", "--pd-disaggregation"]
    for u in prefill_urls:
        args += ["--prefill", u]
    for u in decode_urls:
        args += ["--decode", u]
    args += ["--host", "0.0.0.0", "--port", str(port)]
    return shlex.join(args)


__all__ = ["SglangInstance", "sglang_commands", "sglang_router_command"]
