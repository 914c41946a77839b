"""``planner sweep``: what-if grids over a planner's request, one plan per point, as a table."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from hardware.errors import InputError


def sweep_cmd(
    spec: Path = typer.Argument(..., help="Sweep spec (YAML/JSON): kind, base request, axes (see examples/sweep_fleet.yaml)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Results table: .csv or .parquet."),
    backend: str = typer.Option("local", "--backend", help="local (processes) or ray."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Parallel workers (default: CPU count)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Ray cluster (auto, host:port, ray://host:port); default: a local Ray."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or summary."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary and rows as JSON on stdout (only JSON)."),
) -> None:
    """Run a planner over a grid of request values (rates, SLOs, prices, GPU sets, models, quotas)."""
    from planner.commands.common import echo_json
    from planner.plan import check_output
    from planner.sweep import check_ray_backend, input_files, load_sweep, results_frame, run_sweep, write_results

    if backend not in ("local", "ray"):
        raise InputError(f"unknown backend '{backend}'", field="--backend", expected="local or ray")
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}", field="--workers", expected="a positive number of workers")
    if output is None and not as_json:
        raise InputError("no output given", field="-o/--output", expected="-o results.csv (or .parquet), or --json")
    if output is not None:  # before the grid runs, which can take long
        check_output(output, inputs=[spec], suffixes=(".csv", ".parquet", ".pq"), what="results")
    if ray_address is not None and backend != "ray":
        raise InputError("--ray-address needs --backend ray", field="--ray-address")
    sweep = load_sweep(spec)
    # the base request and every file it reads (traces, profiles, model configs) are inputs too
    protect = [spec, *input_files(sweep)]
    if output is not None:
        check_output(output, inputs=protect, suffixes=(".csv", ".parquet", ".pq"), what="results")
    if backend == "ray":  # fail before any progress bar: Ray missing, or an address that does not answer
        check_ray_backend(ray_address)
    t0 = time.perf_counter()
    if quiet or as_json:
        rows = run_sweep(sweep, backend=backend, workers=workers, ray_address=ray_address)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.console import Console
        with Progress(TextColumn("[bold]sweep[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task(f"{sweep.kind} on {backend}", total=sweep.size)
            rows = run_sweep(sweep, backend=backend, workers=workers, ray_address=ray_address,
                             progress=lambda n: bar.advance(task, n))
    wall_s = time.perf_counter() - t0
    frame = results_frame(sweep, rows)
    if output is not None:
        write_results(frame, output, protect=protect)
    counts = frame["status"].value_counts().to_dict()
    summary = {"kind": sweep.kind, "points": sweep.size, "backend": backend, "workers": workers,
               "ok": int(counts.get("ok", 0)), "infeasible": int(counts.get("infeasible", 0)),
               "error": int(counts.get("error", 0)), "wall_time_s": wall_s,
               "output": str(output) if output is not None else None}
    if as_json:
        import json
        echo_json({"summary": summary, "rows": json.loads(frame.to_json(orient="records"))})
        return
    if not quiet:
        typer.echo(f"{summary['points']} points: {summary['ok']} ok, {summary['infeasible']} infeasible, "
                   f"{summary['error']} error, {wall_s:.2f} s on {backend}", err=True)
        if output is not None:
            typer.echo(f"wrote {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)
