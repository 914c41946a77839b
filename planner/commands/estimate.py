"""``planner estimate``: latency, throughput, memory and a per-op breakdown for one layout."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from planner.commands.common import echo_json, print_table


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate_cmd)


def estimate_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model alias (see `planner catalog models`) or config.json path."),
    gpu: str = typer.Option(..., "--gpu", "-g", help="Accelerator name (see `planner catalog gpus`)."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel degree."),
    pp: int = typer.Option(1, "--pp", help="Pipeline-parallel degree."),
    ep: int = typer.Option(1, "--ep", help="Expert-parallel degree (MoE; at most --tp)."),
    input_len: int = typer.Option(..., "--input-len", help="Prompt tokens per request."),
    output_len: int = typer.Option(..., "--output-len", help="Generated tokens per request."),
    batch: int = typer.Option(1, "--batch", "-b", help="Concurrent requests."),
    dtype: str = typer.Option("bf16", "--dtype", help="Weight / GEMM dtype: bf16 | fp8."),
    kv_dtype: Optional[str] = typer.Option(None, "--kv-dtype", help="KV-cache dtype (default: bf16, fp8 with --dtype fp8)."),
    node: Optional[str] = typer.Option(None, "--node", help="Node type (default: the catalog's largest node of this GPU)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="Calibration file from `planner calibrate`."),
    profile: Optional[Path] = typer.Option(None, "--profile", help="Vidur per-op mlp.csv (or a folder of them): "
                                                                  "measured times for the ops it covers."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Estimate TTFT, TPOT, tokens/s, memory and per-op times for one model on one layout."""
    from planner.estimates import run_estimate

    result = run_estimate(model=model, gpu=gpu, tp=tp, pp=pp, ep=ep, input_len=input_len, output_len=output_len,
                          batch=batch, dtype=dtype, kv_dtype=kv_dtype, node=node, calibration=calibration,
                          profile=profile)
    d = result.to_dict()
    if as_json:
        echo_json(d)
        return
    gb = 1e9
    typer.echo(f"{d['model']} on {d['gpus']} x {d['gpu']} (TP={tp} PP={pp} EP={ep}, {d['dtype']} weights, "
               f"{d['kv_dtype']} KV), batch {batch}, {input_len} in / {output_len} out; fidelity: {d['fidelity']}")
    print_table("Latency and throughput", ["metric", "value"], [
        ("prefill / TTFT (s)", d["ttft_s"]), ("decode step / TPOT (s)", d["tpot_s"]),
        ("end-to-end latency (s)", d["e2e_latency_s"]), ("output tokens/s", d["output_tokens_per_s"]),
        ("max batch (KV fits)", d["max_batch"]), ("max KV tokens", d["max_kv_tokens"]),
    ])
    mem = d["memory_bytes"]
    print_table("Memory per GPU (GB)", ["part", "GB"], [(k, v / gb) for k, v in mem.items()])
    print_table("Per-op time (whole forward, all layers)", ["phase", "op", "time (ms)", "share", "bound", "fidelity"],
                _op_rows(d["ops"]))
    for note in d["notes"]:
        typer.echo(f"note: {note}")


def _op_rows(ops: list[dict]) -> list[tuple]:
    totals: dict[str, float] = {}
    for o in ops:
        totals[o["phase"]] = totals.get(o["phase"], 0.0) + o["time_s"]
    return [(o["phase"], o["name"], o["time_s"] * 1e3, f"{100 * o['time_s'] / totals[o['phase']]:.1f}%",
             o["bound"], o["fidelity"]) for o in ops]
