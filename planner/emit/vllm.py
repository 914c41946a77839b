"""vLLM launch commands (``vllm serve``), reusable by every planner.

Flag names follow vLLM's engine-argument reference (docs.vllm.ai "Engine Arguments"):
``--tensor-parallel-size``, ``--pipeline-parallel-size``, ``--data-parallel-size``,
``--enable-expert-parallel``, ``--max-num-seqs``, ``--max-num-batched-tokens``,
``--max-model-len``, ``--gpu-memory-utilization``, ``--dtype``, ``--kv-cache-dtype``,
``--quantization``, ``--port``.
"""
from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any, NamedTuple

from planner.emit import Artifact, hf_model_id, write_artifacts

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


#: the port a multi-node replica's Ray head listens on (Ray's default)
RAY_PORT = 6379


def replica_nodes(pool: dict[str, Any]) -> tuple[int, int]:
    """``(nodes, GPUs per node)`` one replica of ``pool`` spans: more than one when its GPUs
    exceed the largest catalog node of its GPU type (vLLM then runs over a Ray cluster, its
    pipeline stages across the nodes); one node of all its GPUs for a type outside the
    catalog."""
    from hardware.catalog import largest_node_gpus

    gpus = int(pool["gpus_per_replica"])
    per_node = largest_node_gpus(pool["gpu"])
    if per_node is None:
        return 1, gpus
    nodes = -(-gpus // per_node)
    return nodes, -(-gpus // nodes)


def pool_command(pool: dict[str, Any], *, port: int = 8000,
                 max_model_len: int | None = None) -> list[str]:
    """The ``vllm serve`` command of one FleetPlan pool (one replica).

    ``max_model_len``: the longest sequence (prompt + output tokens) the engine accepts; None
    takes the pool's ``engine.max_model_len`` if the plan has one (see :func:`context_lengths`
    for what the emitters pass)."""
    engine = pool.get("engine") or {}
    extra = []
    if engine.get("kv_transfer"):  # a prefill or decode role of a disaggregated bundle
        from planner.emit.disagg import NIXL_CONFIG
        extra = ["--kv-transfer-config", json.dumps(NIXL_CONFIG, separators=(",", ":"))]
    if replica_nodes(pool)[0] > 1:  # one engine over the Ray cluster of the replica's nodes
        extra += ["--distributed-executor-backend", "ray"]
    return vllm_serve_command(pool.get("serve_model") or pool["model"], tp=pool["shape"]["tp"],
                              pp=pool["shape"].get("pp", 1), max_num_seqs=engine.get("max_num_seqs"),
                              max_num_batched_tokens=engine.get("max_num_batched_tokens"),
                              max_model_len=max_model_len or engine.get("max_model_len"),
                              dtype=engine.get("dtype"), kv_cache_dtype=engine.get("kv_cache_dtype"),
                              port=port, extra_args=extra)


#: load balancing of a P/D router's two sides (vLLM's router docs' advice): prefill by prompt
#: prefix (KV cache hits), decode by load (the less busy of two picked at random)
ROUTER_POLICIES = {"prefill": "cache_aware", "decode": "power_of_two"}


def pd_router_args(backends: list[str], *, port: int | str = 8000) -> list[str]:
    """The command line of vLLM's router (``vllm-router``, github.com/vllm-project/router) in
    prefill/decode mode: ``backends`` name its prefill and decode servers (``--prefill URL``
    / ``--decode URL``, or Kubernetes selectors); it sends each request to a prefill server,
    then to a decode server with the KV-transfer parameters the prefill returned (NIXL)."""
    return ["vllm-router", "--vllm-pd-disaggregation", *backends,
            "--prefill-policy", ROUTER_POLICIES["prefill"],
            "--decode-policy", ROUTER_POLICIES["decode"],
            "--host", "0.0.0.0", "--port", str(port)]


def slug(text: str) -> str:
    """A DNS-1035 label from a pool id or a model name: lower case ``[a-z0-9-]``, starting with
    a letter (``m-`` goes before one that does not: ``8b-chat`` -> ``m-8b-chat``), ending with
    a letter or digit, at most 63 characters (a longer one is cut and ends in a hash of the
    whole).  Service names must be DNS-1035 labels; every name and label value the emitters
    write comes from here, so Deployments, Services, selectors and scripts agree."""
    out = "".join(c if c.isascii() and c.isalnum() else "-" for c in text.lower())
    while "--" in out:
        out = out.replace("--", "-")
    out = out.strip("-")
    if out and not out[0].isalpha():
        out = "m-" + out
    if len(out) > 63:
        import hashlib
        out = out[:54].rstrip("-") + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return out or "pool"


# ------------------------------------------------------------ what a pool serves: model, context

#: the model a plan from a Mélange config serves: a stand-in, Mélange configs name no model
PLACEHOLDER_MODELS = ("melange",)


def check_servable(plan: dict[str, Any], *, file: str | None = None) -> None:
    """Refuse a plan whose pools name no model an engine can load (a plan made by ``planner
    fleet --melange``: Mélange configs carry throughputs, not a model)."""
    from hardware.errors import InputError

    for i, pool in enumerate(plan.get("pools") or []):
        model = str(pool.get("serve_model") or pool.get("model") or "")
        if model.lower() in PLACEHOLDER_MODELS:
            key = "serve_model" if pool.get("serve_model") else "model"
            raise InputError(
                f"the plan has no servable model id: '{model}' stands for the model of a Mélange "
                "config (planner fleet --melange)", file=file, field=f"pools[{i}].{key}",
                expected="a Hugging Face model id or a local model folder",
                hint="Plan from a fleet request instead: models[].serve_model names the model, and "
                     "the Mélange throughputs can be its models[].profiles (format: melange)")


class ContextLength(NamedTuple):
    """A pool's ``--max-model-len`` (tokens; None: not emitted) and where it came from."""

    tokens: int | None
    why: str


def _catalog_model(pool: dict[str, Any]):
    """The catalog ``ModelSpec`` a pool serves (by alias, by Hugging Face id, or a config.json
    path), or None when the plan names a model the catalog does not know."""
    from costmodels.model import aliases, load_model
    from hardware.errors import InputError

    names = [str(n) for n in (pool.get("serve_model"), pool.get("model")) if n]
    for name in names:
        try:
            if name.lower() in aliases() or Path(name).exists():
                return load_model(name)
        except InputError:
            continue
    wanted = {n.lower() for n in names}
    for alias in aliases():
        try:
            spec = load_model(alias)
        except InputError:
            continue
        if spec.hf_id and spec.hf_id.lower() in wanted:
            return spec
    return None


def _kv_tokens(pool: dict[str, Any], spec) -> int:
    """KV-cache capacity of one replica of the pool in tokens, by the serving cost model (0 when
    the cost model cannot say)."""
    from costmodels.ops import Parallel
    from costmodels.serving import make_context, max_kv_tokens
    from hardware.catalog import get_accelerator
    from hardware.errors import InputError

    engine = pool.get("engine") or {}
    try:
        ctx = make_context(spec, get_accelerator(pool["gpu"]),
                           Parallel(tp=int(pool["shape"]["tp"]), pp=int(pool["shape"].get("pp", 1))),
                           dtype=engine.get("dtype") or "bf16", kv_dtype=engine.get("kv_cache_dtype"))
        return max_kv_tokens(ctx)
    except (InputError, KeyError, TypeError, ValueError):
        return 0


def context_lengths(plan: dict[str, Any]) -> dict[str, ContextLength]:
    """``--max-model-len`` per pool id of a FleetPlan.

    vLLM's default is the model's whole context (131072 tokens for Llama 3.1), and it refuses
    to start when the KV cache cannot hold one sequence that long (an 8B model on one A10G or
    L4).  The pool has to serve only the requests routed to it, so its limit is the largest
    input + output upper bucket edge among the routing entries that send traffic to its group,
    capped at the model's ``max_position_embeddings`` and at one replica's KV-cache capacity
    by the cost model (vLLM refuses a longer limit than its cache holds).  In order of precedence:

    1. the pool's ``engine.max_model_len`` when the plan sets one;
    2. the routing, as above;
    3. with no routing for the pool, the KV-cache capacity of one replica by the cost model
       (the most vLLM could accept), capped the same way;
    4. else nothing is emitted (the model is not in the catalog): vLLM's own default.
    """
    out = {}
    for pool in plan.get("pools") or []:
        engine = pool.get("engine") or {}
        if engine.get("max_model_len"):
            out[pool["id"]] = ContextLength(int(engine["max_model_len"]), "the plan's engine.max_model_len")
            continue
        longest = None
        for r in plan.get("routing") or []:
            if pool.get("group") not in (r.get("pools") or {}):
                continue
            b = r.get("bucket") or {}
            try:
                need = math.ceil(float(b["input_tokens"][1]) + float(b["output_tokens"][1]))
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if longest is None or need > longest[0]:
                longest = (need, b.get("label", "?"))
        spec = _catalog_model(pool)
        limit = spec.max_position_embeddings if spec is not None else 0
        kv = _kv_tokens(pool, spec) if spec is not None else 0
        if longest is not None:
            need, label = longest
            why = f"the longest bucket routed to this pool, {label}: {need} tokens (input + output)"
            if limit and need > limit:
                need, why = limit, why + f", capped at the model's max_position_embeddings {limit}"
            if 0 < kv < need:  # a bucket's upper edge may exceed what its typical request needs
                need, why = kv, why + f", capped at one replica's KV cache by the cost model {kv}"
            out[pool["id"]] = ContextLength(need, why)
            continue
        if kv > 0:
            tokens = min(kv, limit) if limit else kv
            out[pool["id"]] = ContextLength(
                tokens, f"the plan routes nothing to this pool: the KV cache of one replica by the "
                        f"cost model, {kv} tokens" + (f", capped at max_position_embeddings {limit}"
                                                      if limit and kv > limit else ""))
            continue
        out[pool["id"]] = ContextLength(None, "not set: the plan routes nothing to this pool and its "
                                              "model is not in the catalog (vLLM uses the model's own)")
    return out


# ------------------------------------------------------------------------------------ artifacts

def fleet_vllm_files(plan: dict[str, Any]) -> dict[str, Artifact]:
    """The files of :func:`emit_fleet_vllm`, by path relative to the output folder (the plan
    checked first: :func:`planner.emit.plan_check.check_fleet_plan`)."""
    from planner.emit.plan_check import check_fleet_plan
    plan = check_fleet_plan(plan)
    files: dict[str, Artifact] = {}
    lines = []
    lengths = context_lengths(plan)
    bundles: dict[tuple[str, str], dict[str, list[str]]] = {}  # (model, group) -> role -> pools
    for pool in plan.get("pools", []):
        ctx = lengths[pool["id"]]
        cmd = shell_line(pool_command(pool, max_model_len=ctx.tokens))
        name = slug(pool["id"])
        role = ""
        if pool.get("role"):
            roles = bundles.setdefault((pool["model"], pool["group"]), {"prefill": [], "decode": []})
            roles[pool["role"]].append(f"{pool['id']} ({pool['count']} replica(s))")
            router = slug(f"router-{pool['group']}")
            role = (f"# {pool['role']} role of a disaggregated bundle ({pool['group']}): KV moves "
                    f"over NIXL; requests come through {router}.sh\n" + NIXL_HOST_CHECK)
        nodes, per_node = replica_nodes(pool)
        where = (f"# run this on each replica (GPUs {pool['gpus_per_replica']} per replica)\n"
                 if nodes == 1 else
                 f"# each replica spans {nodes} nodes of {per_node} GPUs (a Ray cluster): run "
                 f"'{name}.sh worker HEAD_IP' on all but its first node, then '{name}.sh' there\n")
        start = f"exec {cmd}\n" if nodes == 1 else (
            'case "${1:-head}" in\n'
            f"  head) ray start --head --port={RAY_PORT} && exec {cmd} ;;\n"
            f'  worker) exec ray start --address="${{2:?the head node\'s IP}}:{RAY_PORT}" --block ;;\n'
            '  *) echo "usage: $0 [head | worker HEAD_IP]" >&2; exit 2 ;;\n'
            "esac\n")
        text = ("#!/bin/sh\n"
                f"# pool {pool['id']}: {pool['count']} replica(s) x {pool['gpus_per_replica']} "
                f"{pool['gpu']} GPU(s), price class {pool['price_class']}\n"
                + where + f"# --max-model-len: {ctx.why}\n" + role + start)
        add_file(files, f"{name}.sh", Artifact(text, executable=True), pool["id"])
        lines.append(f"# {pool['id']} x{pool['count']}; --max-model-len: {ctx.why}\n{cmd}")
    files["commands.txt"] = Artifact("\n".join(lines) + "\n")
    for (model, group), roles in sorted(bundles.items()):
        add_file(files, f"{slug(f'router-{group}')}.sh",
                 Artifact(router_script(model, group, roles), executable=True), f"{group} (router)")
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
        files["schedule.csv"] = Artifact(buf.getvalue())
    return files


#: a role pool's script stops unless NIXL's handshake host is set: vLLM's default, localhost,
#: only works where prefill and decode share one host, and fails at the first transfer
NIXL_HOST_CHECK = (': "${VLLM_NIXL_SIDE_CHANNEL_HOST:?set it to this host\'s IP, reachable from the '
                   'other role\'s hosts (NIXL handshake; localhost if all run on one host)}"\n'
                   "export VLLM_NIXL_SIDE_CHANNEL_HOST\n")


def router_script(model: str, group: str, roles: dict[str, list[str]]) -> str:
    """``router-<bundle>.sh``: vLLM's router in front of one disaggregated bundle
    (:func:`pd_router_args`), its servers from ``PREFILL_URLS`` / ``DECODE_URLS`` (the
    replicas' ``http://HOST:8000``, space-separated; the pools in ``roles`` say which)."""
    args = pd_router_args([], port=8090)  # ends in the port: the script takes ROUTER_PORT
    return ("#!/bin/sh\n"
            f"# prefill/decode router of bundle {group} (model {model}): clients send it the "
            "requests the plan routes to the bundle (pip install vllm-router)\n"
            f"# PREFILL_URLS: the replicas of {', '.join(roles['prefill'])}\n"
            f"# DECODE_URLS: the replicas of {', '.join(roles['decode'])}\n"
            "set -eu\n"
            ': "${PREFILL_URLS:?the prefill replicas, http://HOST:8000 each, space-separated}"\n'
            ': "${DECODE_URLS:?the decode replicas, http://HOST:8000 each, space-separated}"\n'
            "set --\n"
            'for url in $PREFILL_URLS; do set -- "$@" --prefill "$url"; done\n'
            'for url in $DECODE_URLS; do set -- "$@" --decode "$url"; done\n'
            f'exec {shell_line(args[:2])} "$@" {shell_line(args[2:-1])} "${{ROUTER_PORT:-8090}}"\n')


def add_file(files: dict[str, Artifact], rel: str, artifact: Artifact, source: str) -> None:
    """Add one file, refusing a second one of the same name (two pool ids that differ only in
    characters a name cannot hold)."""
    if rel in files:
        from hardware.errors import InputError
        raise InputError(f"two artifacts would be named {rel} (the second from {source})",
                         field="pools[].id", expected="pool ids that differ in letters or digits")
    files[rel] = artifact


def emit_fleet_vllm(plan: dict[str, Any], out_dir: Path, *, replace: bool = False) -> list[Path]:
    """One shell script per pool (``<pool>.sh``: the command, run on each of ``count`` replicas)
    and ``commands.txt`` listing them all; per prefill/decode bundle ``router-<bundle>.sh``
    (:func:`router_script`); for a plan over several periods also
    ``schedule.csv`` (``period,start_s,pool,replicas``: how many replicas of each pool to run
    in each period, for whatever starts and stops them).  The folder rules (empty, or
    ``replace``) are :func:`planner.emit.write_artifacts`'s."""
    return write_artifacts(out_dir, fleet_vllm_files(plan), replace=replace)
