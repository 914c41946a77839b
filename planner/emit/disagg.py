"""Launch commands for a parallel plan: vLLM and SGLang, aggregated or prefill/decode disaggregated.

vLLM flag names checked (2026-11) against docs.vllm.ai: engine arguments
(``--tensor-parallel-size``, ``--pipeline-parallel-size``, ``--data-parallel-size``,
``--enable-expert-parallel``, ``--max-num-seqs``, ``--max-num-batched-tokens``,
``--gpu-memory-utilization``, ``--quantization fp8``, ``--kv-cache-dtype fp8``), the data-parallel
deployment page (``--data-parallel-size-local``, ``--data-parallel-address``,
``--data-parallel-rpc-port``, ``--data-parallel-start-rank``, ``--headless``; with
``--enable-expert-parallel`` the experts use EP over DP x TP while attention is data-parallel)
and the NixlConnector usage guide (``--kv-transfer-config
'{"kv_connector":"NixlConnector","kv_role":"kv_both"}'``; NIXL ignores the role, the proxy
decides who prefills; ``VLLM_NIXL_SIDE_CHANNEL_PORT`` per instance on a host).  Multi-node
pipeline parallelism in vLLM runs on a Ray cluster (``--distributed-executor-backend ray``).
SGLang flags: see :mod:`planner.emit.sglang`.

``vllm serve`` lines come from the shared builder :func:`planner.emit.vllm.vllm_serve_command`
(the fleet planner's); this module adds the KV-transfer config, placement on nodes and GPUs,
multi-node data-parallel flags, and the SGLang side.
"""
from __future__ import annotations

import json
import shlex
from typing import Any

from planner.emit import hf_model_id
from planner.emit.sglang import SglangInstance, sglang_commands, sglang_router_command
from planner.emit.vllm import pd_router_args

NIXL_CONFIG = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}


def vllm_serve_args(model: str, *, tp: int, pp: int = 1, dp: int = 1, expert_parallel: bool = False,
                    max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
                    gpu_memory_utilization: float | None = None, quantization: str | None = None,
                    kv_cache_dtype: str | None = None, kv_transfer: bool = False, port: int = 8000) -> list[str]:
    """``vllm serve`` arguments for one instance (dp > 1: one server with DP ranks inside).

    Built by the shared :func:`planner.emit.vllm.vllm_serve_command`; this adds the
    disaggregated-prefill KV-transfer config (NixlConnector) it does not know about.
    """
    from planner.emit.vllm import vllm_serve_command
    extra = ["--kv-transfer-config", json.dumps(NIXL_CONFIG, separators=(",", ":"))] if kv_transfer else []
    return vllm_serve_command(model, tp=tp, pp=pp, dp=dp, ep=expert_parallel, max_num_seqs=max_num_seqs,
                              max_num_batched_tokens=max_num_batched_tokens,
                              gpu_memory_utilization=gpu_memory_utilization, quantization=quantization,
                              kv_cache_dtype=kv_cache_dtype, port=port, extra_args=extra)


def _placements(count: int, gpus_each: int, gpn: int, start: tuple[int, int] = (0, 0)
                ) -> tuple[list[tuple[int, list[int]]], tuple[int, int]]:
    """(node, local GPU ids) of ``count`` instances of ``gpus_each`` GPUs packed onto nodes from
    ``start`` = (node, next free GPU); returns them and the cursor after the last one."""
    out, (node, used) = [], start
    for _ in range(count):
        if gpus_each >= gpn:
            if used:
                node, used = node + 1, 0
            out.append((node, list(range(gpn))))
            node += -(-gpus_each // gpn)
            continue
        if used + gpus_each > gpn:
            node, used = node + 1, 0
        out.append((node, list(range(used, used + gpus_each))))
        used += gpus_each
    return out, (node, used)


def _vllm_instance_cmds(model: str, phase: dict, *, engine_opts: dict, port: int, kv_transfer: bool,
                        gpn: int, count: int, start: tuple[int, int] = (0, 0), nixl_base: int = 0,
                        host: str = "") -> list[str]:
    attn_dp = phase.get("attention_dp", 1)
    label = phase.get("role", "replica")
    expert = phase.get("ep", 1) > 1 or attn_dp > 1
    tp = phase["attention_tp"] if attn_dp > 1 else phase["tp"]
    cmds = []
    for i, (node, gpus) in enumerate(_placements(count, phase["gpus"], gpn, start)[0]):
        args = vllm_serve_args(model, tp=tp, pp=phase.get("pp", 1), dp=attn_dp, expert_parallel=expert,
                               max_num_seqs=phase.get("max_num_seqs"),
                               max_num_batched_tokens=phase.get("max_num_batched_tokens"),
                               kv_transfer=kv_transfer, port=port + i, **engine_opts)
        env = f"CUDA_VISIBLE_DEVICES={','.join(map(str, gpus))} "
        if kv_transfer:  # NIXL's handshake: the instance's host (``host``_i), a port per instance
            env += (f"VLLM_NIXL_SIDE_CHANNEL_HOST={host}_{i} "
                    f"VLLM_NIXL_SIDE_CHANNEL_PORT={5600 + 10 * (nixl_base + i)} ")
        span = phase["gpus"] > gpn
        if span and attn_dp > 1:
            local = max(1, gpn // tp)
            args += ["--data-parallel-size-local", str(local), "--data-parallel-address", "HEAD_NODE_IP",
                     "--data-parallel-rpc-port", "13345"]
            nodes = -(-phase["gpus"] // gpn)
            cmds.append(f"# {label} {i}, node {node} (head)\n" + shlex.join(args))
            for r in range(1, nodes):
                cmds.append(f"# {label} {i}, node {node + r}\n" + shlex.join(
                    args + ["--headless", "--data-parallel-start-rank", str(r * local)]))
            continue
        if span:
            args += ["--distributed-executor-backend", "ray"]
            cmds.append(f"# {label} {i}: Ray cluster over nodes {node}..{node + -(-phase['gpus'] // gpn) - 1}\n"
                        + shlex.join(args))
            continue
        cmds.append(f"# {label} {i}, node {node}\n{env}{shlex.join(args)}")
    return cmds


def _sglang_instance_cmds(model: str, phase: dict, *, mode: str | None, opts: dict, port: int, gpn: int,
                          count: int, start: tuple[int, int] = (0, 0)) -> list[str]:
    attn_dp = phase.get("attention_dp", 1)
    label = phase.get("role", "replica")
    cmds = []
    for i, (node, gpus) in enumerate(_placements(count, phase["gpus"], gpn, start)[0]):
        inst = SglangInstance(hf_model_id(model), tp=phase["tp"], pp=phase.get("pp", 1), dp=attn_dp,
                              ep=phase.get("ep", 1), enable_dp_attention=attn_dp > 1,
                              max_running_requests=phase.get("max_num_seqs", 0) * max(1, attn_dp) or None,
                              chunked_prefill_size=phase.get("max_num_batched_tokens"),
                              disaggregation_mode=mode, port=port + i, gpus_per_node=gpn, **opts)
        lines = sglang_commands(inst)
        if len(lines) == 1:
            cmds.append(f"# {label} {i}, node {node}\nCUDA_VISIBLE_DEVICES={','.join(map(str, gpus))} {lines[0]}")
        else:
            cmds.extend(f"# {label} {i}, node {node + r}\n{line}" for r, line in enumerate(lines))
    return cmds


def launch_for_plan(p, res) -> dict[str, Any]:
    """``{"vllm": {...}, "sglang": {...}}`` for a :class:`planner.parallel.Plan`."""
    req = res.request
    model = res.model.name
    pool = next(x for x in res.pools if x.accel.name == p.pool)
    gpn = pool.cluster.gpus_per_node
    util = req.search.gpu_memory_utilization
    fp8 = req.dtype == "fp8" and res.model.weight_dtype != "fp8"
    kv8 = (req.kv_dtype or ("fp8" if req.dtype == "fp8" else "bf16")) == "fp8"
    v_opts = {"gpu_memory_utilization": util, "quantization": "fp8" if fp8 else None,
              "kv_cache_dtype": "fp8" if kv8 else None}
    s_opts = {"mem_fraction_static": util, "quantization": "fp8" if fp8 else None,
              "kv_cache_dtype": "fp8_e4m3" if kv8 else None}

    def phase_of(e, count: int) -> dict:
        sm = e.sm
        return {**e.shape.as_dict(), "count": count, "max_num_seqs": sm.limits.max_num_seqs // max(1, e.shape.attn_dp),
                "max_num_batched_tokens": sm.limits.max_num_batched_tokens // max(1, e.shape.attn_dp)}

    if p.decode is None:
        ph = phase_of(p.prefill, p.n_prefill)
        vl = _vllm_instance_cmds(model, ph, engine_opts=v_opts, port=8000, kv_transfer=False, gpn=gpn,
                                 count=p.n_prefill)
        sg = _sglang_instance_cmds(model, ph, mode=None, opts=s_opts, port=30000, gpn=gpn, count=p.n_prefill)
        note = ("one server per replica; put a round-robin load balancer in front" if p.n_prefill > 1
                else "single server")
        if p.prefill.shape.gpus > gpn:
            note += "; replace HEAD_NODE_IP with the first node of each multi-node replica"
        return {"vllm": {"commands": vl, "note": note}, "sglang": {"commands": sg, "note": note}}
    pp_ = {**phase_of(p.prefill, p.n_prefill), "role": "prefill"}
    dp_ = {**phase_of(p.decode, p.n_decode), "role": "decode"}
    # prefill instances first, decode instances on the GPUs after them (or on the other GPU type's nodes)
    _, cursor = _placements(p.n_prefill, pp_["gpus"], gpn)
    gpn_d = gpn
    if p.decode_pool and p.decode_pool != p.pool:
        gpn_d = next(x for x in res.pools if x.accel.name == p.decode_pool).cluster.gpus_per_node
        cursor = (0, 0)
    v_pre = _vllm_instance_cmds(model, pp_, engine_opts=v_opts, port=8100, kv_transfer=True, gpn=gpn,
                                count=p.n_prefill, host="PREFILL")
    v_dec = _vllm_instance_cmds(model, dp_, engine_opts=v_opts, port=8200, kv_transfer=True, gpn=gpn_d,
                                count=p.n_decode, start=cursor, nixl_base=p.n_prefill, host="DECODE")
    s_pre = _sglang_instance_cmds(model, pp_, mode="prefill", opts=s_opts, port=30000, gpn=gpn, count=p.n_prefill)
    s_dec = _sglang_instance_cmds(model, dp_, mode="decode", opts=s_opts, port=31000, gpn=gpn_d, count=p.n_decode,
                                  start=cursor)
    if p.decode_pool and p.decode_pool != p.pool:
        dp_["role"] = f"decode ({p.decode_pool} pool)"
    router = sglang_router_command([f"http://PREFILL_{i}:{30000 + i}" for i in range(p.n_prefill)],
                                   [f"http://DECODE_{i}:{31000 + i}" for i in range(p.n_decode)])
    v_router = shlex.join(pd_router_args(
        [a for i in range(p.n_prefill) for a in ("--prefill", f"http://PREFILL_{i}:{8100 + i}")]
        + [a for i in range(p.n_decode) for a in ("--decode", f"http://DECODE_{i}:{8200 + i}")], port=8000))
    return {
        "vllm": {"prefill": v_pre, "decode": v_dec, "router": v_router,
                 "note": "vLLM's router (pip install vllm-router) sends each request to a prefill "
                         "instance, then to a decode instance that pulls the KV over NIXL; replace "
                         "PREFILL_i / DECODE_i with the instances' hosts (also NIXL's handshake "
                         "host: localhost where all run on one node)"},
        "sglang": {"prefill": s_pre, "decode": s_dec, "router": router,
                   "note": "replace PREFILL_i / DECODE_i with the instances' hosts and HEAD_NODE_IP with the first "
                           "node of a multi-node instance"},
    }


__all__ = ["launch_for_plan", "vllm_serve_args"]
