"""vLLM launch commands (``vllm serve``), reusable by every planner.

Flag names follow vLLM's engine-argument reference (docs.vllm.ai "Engine Arguments"):
``--tensor-parallel-size``, ``--pipeline-parallel-size``, ``--data-parallel-size``,
``--enable-expert-parallel``, ``--max-num-seqs``, ``--max-num-batched-tokens``,
``--max-model-len``, ``--gpu-memory-utilization``, ``--dtype``, ``--kv-cache-dtype``,
``--quantization``, ``--port``.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from planner.emit import hf_model_id

#: our dtype names -> vLLM's --dtype values
_VLLM_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def vllm_serve_command(model: str, *, tp: int = 1, pp: int = 1, dp: int = 1, ep: bool = False,
                       max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
                       max_model_len: int | None = None,
                       gpu_memory_utilization: float | None = None, dtype: str | None = None,
                       kv_cache_dtype: str | None = None, quantization: str | None = None,
                       port: int | None = 8000, extra_args: list[str] | None = None) -> list[str]:
    """``vllm serve`` argument vector for one engine instance.

    Args:
        model: Hugging Face id, local path or fixture alias (mapped with :func:`hf_model_id`).
        tp, pp, dp: tensor-, pipeline- and data-parallel sizes (GPUs = tp * pp * dp).
        ep: enable expert parallelism for MoE layers (vLLM derives the EP size from TP x DP).
        max_num_seqs: cap on concurrently running sequences (the batch the SLO allows).
        dtype: our dtype name ("bf16") or vLLM's ("bfloat16").
        kv_cache_dtype: "fp8", "fp8_e4m3", ... (None: same as the model).
    """
    for name, v in (("tp", tp), ("pp", pp), ("dp", dp)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    args = ["vllm", "serve", hf_model_id(model), "--tensor-parallel-size", str(tp)]
    if pp > 1:
        args += ["--pipeline-parallel-size", str(pp)]
    if dp > 1:
        args += ["--data-parallel-size", str(dp)]
    if ep:
        args.append("--enable-expert-parallel")
    if max_num_seqs:
        args += ["--max-num-seqs", str(int(max_num_seqs))]
    if max_num_batched_tokens:
        args += ["--max-num-batched-tokens", str(int(max_num_batched_tokens))]
    if max_model_len:
        args += ["--max-model-len", str(int(max_model_len))]
    if gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", f"{gpu_memory_utilization:g}"]
    if dtype:
        args += ["--dtype", _VLLM_DTYPES.get(dtype, dtype)]
    if kv_cache_dtype:
        args += ["--kv-cache-dtype", kv_cache_dtype]
    if quantization:
        args += ["--quantization", quantization]
    if port is not None:
        args += ["--port", str(int(port))]
    return args + list(extra_args or [])


def shell_line(args: list[str]) -> str:
    """One shell-quoted command line."""
    return " ".join(shlex.quote(a) for a in args)


def pool_command(pool: dict[str, Any], *, port: int = 8000) -> list[str]:
    """The ``vllm serve`` command of one FleetPlan pool (one replica)."""
    engine = pool.get("engine") or {}
    extra = []
    if engine.get("kv_transfer"):  # a prefill or decode role of a disaggregated bundle
        from planner.emit.disagg import NIXL_CONFIG
        extra = ["--kv-transfer-config", json.dumps(NIXL_CONFIG, separators=(",", ":"))]
    return vllm_serve_command(pool.get("serve_model") or pool["model"], tp=pool["shape"]["tp"],
                              pp=pool["shape"].get("pp", 1), max_num_seqs=engine.get("max_num_seqs"),
                              max_model_len=engine.get("max_model_len"),
                              dtype=engine.get("dtype"), kv_cache_dtype=engine.get("kv_cache_dtype"),
                              port=port, extra_args=extra)


def slug(text: str) -> str:
    """A DNS-1123 label from a pool id (lower case, [a-z0-9-], at most 63 characters)."""
    out = "".join(c if c.isalnum() else "-" for c in text.lower())
    while "--" in out:
        out = out.replace("--", "-")
    out = out.strip("-")
    if len(out) > 63:
        import hashlib
        out = out[:54].rstrip("-") + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return out or "pool"


def emit_fleet_vllm(plan: dict[str, Any], out_dir: Path) -> list[Path]:
    """One shell script per pool (``<pool>.sh``: the command, run on each of ``count`` replicas)
    and ``commands.txt`` listing them all; for a plan over several periods also
    ``schedule.csv`` (``period,start_s,pool,replicas``: how many replicas of each pool to run
    in each period, for whatever starts and stops them)."""
    written = []
    lines = []
    for pool in plan.get("pools", []):
        cmd = shell_line(pool_command(pool))
        name = slug(pool["id"])
        text = ("#!/bin/sh\n"
                f"# pool {pool['id']}: {pool['count']} replica(s) x {pool['gpus_per_replica']} "
                f"{pool['gpu']} GPU(s), price class {pool['price_class']}\n"
                f"# run this on each replica (GPUs {pool['gpus_per_replica']} per replica)\n"
                + (f"# {pool['role']} role of a disaggregated bundle ({pool['group']}): KV moves "
                   f"over NIXL; route requests through a prefill/decode proxy\n"
                   if pool.get("role") else "") +
                f"exec {cmd}\n")
        path = out_dir / f"{name}.sh"
        path.write_text(text, encoding="utf-8")
        path.chmod(0o755)
        written.append(path)
        lines.append(f"# {pool['id']} x{pool['count']}\n{cmd}")
    (out_dir / "commands.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.append(out_dir / "commands.txt")
    pools = [p for p in plan.get("pools", []) if p.get("counts_by_period")]
    if pools:
        import csv
        import io

        period_s = float(plan.get("period_s") or 0.0)
        buf = io.StringIO()
        table = csv.writer(buf, lineterminator="\n")
        table.writerow(["period", "start_s", "pool", "replicas"])
        for t in range(len(pools[0]["counts_by_period"])):
            table.writerows([t, f"{t * period_s:g}", p["id"], p["counts_by_period"][t]] for p in pools)
        (out_dir / "schedule.csv").write_text(buf.getvalue(), encoding="utf-8")
        written.append(out_dir / "schedule.csv")
    return written
