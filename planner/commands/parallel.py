"""``planner parallel``: search TP / PP / EP / DP plans per phase (aggregated or P/D disaggregated)
for serving a model under TTFT / TPOT SLOs, ranked by goodput per dollar, with launch commands."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from planner.commands.common import echo_json, fmt, print_table, working, write_output


def register(app: typer.Typer) -> None:
    app.command("parallel")(parallel_cmd)


def _set(d: dict, dotted: str, value: Any) -> None:
    if value is None:
        return
    keys = dotted.split(".")
    for k in keys[:-1]:
        if not isinstance(d.get(k), dict):
            d[k] = {}
        d = d[k]
    d[keys[-1]] = value


def build_request(request: Optional[Path], flags: dict[str, Any]) -> tuple[dict, Optional[str]]:
    """The request mapping: the file (if any) with every given flag overriding its field."""
    from hardware.errors import InputError
    from planner.plan import read_structured

    data: dict = {}
    file = None
    if request is not None:
        file = str(request)
        data = read_structured(request, what="parallel request")
        if not isinstance(data, dict):
            raise InputError("request is not a mapping", file=file, expected="a YAML/JSON object")
    gpus = flags.pop("gpu")
    if gpus:
        data.pop("gpu", None)
        data.pop("gpus", None)
        if len(gpus) == 1:
            data["gpu"] = gpus[0]
        else:
            data["gpus"] = list(gpus)
    if request is not None:  # paths typed as flags are relative to the current folder, not the request's
        if flags.get("workload.trace") is not None and not Path(flags["workload.trace"]).is_absolute():
            flags["workload.trace"] = str(Path(flags["workload.trace"]).resolve())
        model = flags.get("model")
        if model is not None and not Path(model).is_absolute() and Path(model).exists():
            flags["model"] = str(Path(model).resolve())
    for dotted, value in flags.items():
        _set(data, dotted, value)
    if (flags.get("workload.input_len") is not None or flags.get("workload.output_len") is not None) and \
            request is not None and "trace" in data.get("workload", {}) and flags.get("workload.trace") is None:
        data["workload"].pop("trace")
    return data, file


def parallel_cmd(
    request: Optional[Path] = typer.Argument(None, help="Request YAML/JSON (see examples/parallel_request.yaml)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the ParallelPlan here (.yaml or .json)."),
    top: Optional[int] = typer.Option(None, "--top", "-k", help="How many plans to keep (default: search.top_k = 5)."),
    explain: bool = typer.Option(False, "--explain", help="Also list pruned candidates and why."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout (nothing else)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model alias or config.json path."),
    gpu: Optional[List[str]] = typer.Option(None, "--gpu", "-g", help="GPU type; repeat for several."),
    nodes: Optional[int] = typer.Option(None, "--nodes", help="Nodes in the cluster."),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", help="GPUs per node."),
    node: Optional[str] = typer.Option(None, "--node", help="Node type from the catalog (sets the network)."),
    inter_node_gbs: Optional[float] = typer.Option(None, "--inter-node-gbs", help="Scale-out GB/s per GPU per direction."),
    intra_node_gbs: Optional[float] = typer.Option(None, "--intra-node-gbs", help="Scale-up GB/s per GPU per direction."),
    trace: Optional[str] = typer.Option(None, "--trace", help="Request trace (CSV / JSONL: arrival, input, output tokens)."),
    input_len: Optional[int] = typer.Option(None, "--input-len", help="Prompt tokens per request (fixed)."),
    output_len: Optional[int] = typer.Option(None, "--output-len", help="Output tokens per request (fixed)."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Request rate to serve, req/s."),
    num_requests: Optional[int] = typer.Option(None, "--num-requests", help="Requests simulated (default 1000)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the synthetic workload."),
    ttft_slo: Optional[float] = typer.Option(None, "--ttft-slo", help="TTFT SLO, seconds."),
    tpot_slo: Optional[float] = typer.Option(None, "--tpot-slo", help="TPOT SLO, seconds."),
    percentile: Optional[float] = typer.Option(None, "--percentile", help="SLO percentile (default 90)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Weights: bf16 | fp8."),
    kv_dtype: Optional[str] = typer.Option(None, "--kv-dtype", help="KV cache: bf16 | fp8."),
    engine: Optional[str] = typer.Option(None, "--engine", help="vllm | sglang (both commands are emitted)."),
    disaggregation: Optional[str] = typer.Option(None, "--disaggregation", help="auto | on | off."),
    objective: Optional[str] = typer.Option(None, "--objective", help="goodput_per_dollar | goodput_per_gpu."),
    max_pp: Optional[int] = typer.Option(None, "--max-pp", help="Largest pipeline degree searched."),
    max_num_seqs: Optional[int] = typer.Option(None, "--max-num-seqs", help="Engine max running sequences."),
    max_num_batched_tokens: Optional[int] = typer.Option(None, "--max-num-batched-tokens", help="Engine token budget."),
    gpu_memory_utilization: Optional[float] = typer.Option(None, "--gpu-memory-utilization", help="Engine memory share."),
) -> None:
    """Search parallel plans (TP / PP / EP / attention-DP / replicas, aggregated or prefill/decode
    disaggregated) that meet the SLOs at the best goodput per dollar; emit vLLM and SGLang commands."""
    from planner.commands.common import require_finite
    from planner.plan import check_output
    from planner.parallel import input_files, parse_request, run_parallel

    require_finite(inter_node_gbs=inter_node_gbs, intra_node_gbs=intra_node_gbs, rate=rate,
                   ttft_slo=ttft_slo, tpot_slo=tpot_slo, percentile=percentile,
                   gpu_memory_utilization=gpu_memory_utilization)
    if output is not None:  # before the search, which takes seconds to minutes
        check_output(output, inputs=[request, trace])
    flags = {
        "gpu": gpu, "model": model, "cluster.nodes": nodes, "cluster.gpus_per_node": gpus_per_node,
        "cluster.node": node, "cluster.inter_node_bandwidth_gbs": inter_node_gbs,
        "cluster.intra_node_bandwidth_gbs": intra_node_gbs, "workload.trace": trace,
        "workload.input_len": input_len, "workload.output_len": output_len, "workload.rate_rps": rate,
        "workload.num_requests": num_requests, "workload.seed": seed, "slo.ttft_s": ttft_slo,
        "slo.tpot_s": tpot_slo, "slo.percentile": percentile, "dtype": dtype, "kv_dtype": kv_dtype,
        "engine": engine, "search.disaggregation": disaggregation, "search.objective": objective,
        "search.max_pp": max_pp, "search.max_num_seqs": max_num_seqs,
        "search.max_num_batched_tokens": max_num_batched_tokens,
        "search.gpu_memory_utilization": gpu_memory_utilization, "search.top_k": top,
    }
    data, file = build_request(request, flags)
    req = parse_request(data, file=file)
    # the files the request reads (its trace, its model's config.json) are inputs too
    inputs = [request, *input_files(data, Path(file).parent if file else None)]
    if output is not None:
        check_output(output, inputs=inputs)
    with working("searching parallel plans"):
        doc = run_parallel(req, file=file, top_k=top, with_pruned=explain)
    write_output(doc, output, inputs=inputs)
    if as_json:
        echo_json(doc)
        return
    _print_human(doc, explain)


def _print_human(doc: dict, explain: bool) -> None:
    s = doc["search"]
    wl = doc["workload"]
    slo = doc["slo"]
    rate = f"rate {fmt(wl['rate_rps'])} req/s" if wl["rate_rps"] else "no rate given: plans fill the cluster"
    slos = [f"p{fmt(slo[k + '_percentile'])} {k.upper()} <= {fmt(slo[k + '_s'])} s" for k in ("ttft", "tpot")
            if slo[k + "_s"] is not None]
    typer.echo(f"{doc['model']}: {wl['requests']} requests, mean {wl['mean_input_len']:.0f} in / "
               f"{wl['mean_output_len']:.0f} out, {rate}; SLO {', '.join(slos)}")
    rows = []
    for p in doc["plans"]:
        rows.append((p["rank"], p["label"], p["gpu"], p["gpus"], p["ttft_s"], p["tpot_s"], p["goodput_rps"],
                     "yes" if p["meets_rate"] else "no", p["cost_per_hour"], p["cost_per_million_tokens"],
                     p["goodput_per_dollar"]))
    print_table(f"Top {len(rows)} plans ({doc['objective']})",
                ["#", "plan", "GPU", "GPUs", "TTFT s", "TPOT s", "goodput req/s", "meets rate", "$/h", "$/Mtok",
                 "req/s per $/h"], rows)
    for p in doc["plans"]:
        typer.echo(f"#{p['rank']} {p['label']}: {p['why']}")
    best = doc["plans"][0]
    eng = doc["engine"]
    launch = best["launch"][eng]
    typer.echo(f"\nlaunch #1 with {eng}:")
    for key in ("commands", "prefill", "decode"):
        for line in launch.get(key, []):
            typer.echo(line)
    if "router" in launch:
        typer.echo(launch["router"])
    typer.echo(f"\nsearch: {s['plans_evaluated']} plans evaluated, {s['simulations']} simulations, "
               f"{s['pruned']} candidates pruned {s['pruned_by_rule']}, {s['time_s']:.2f} s "
               f"({fmt(s['plans_evaluated'] / max(s['time_s'], 1e-9))} plans/s)")
    if explain:
        rows = [(p["rule"], _cand(p["candidate"]), p["reason"]) for p in doc.get("pruned", [])]
        print_table("Pruned candidates", ["rule", "candidate", "reason"], rows)


def _cand(c: dict) -> str:
    parts = [f"{k}={v}" for k, v in c.items() if k in ("gpu", "tp", "pp", "ep", "attention_dp", "mode", "phase",
                                                         "pp_layers")]
    return " ".join(parts)
