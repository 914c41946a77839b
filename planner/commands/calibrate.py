"""``planner calibrate``: fit efficiency curves and link models to measured tables."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from planner.commands.common import echo_json, print_table


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)


def calibrate_cmd(
    vidur: List[Path] = typer.Option([], "--vidur", help="Vidur per-op mlp.csv, or a folder of them (repeatable)."),
    nccl: List[str] = typer.Option([], "--nccl", help="Collective table: Vidur/APEX CSV, nccl-tests output or a "
                                                     "folder; GPU=PATH names its GPU (repeatable)."),
    gpu: Optional[str] = typer.Option(None, "--gpu", "-g", help="Only this accelerator (and the GPU of --nccl "
                                                               "tables without GPU=)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Calibration file to write (.yaml or .json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the residuals as JSON on stdout."),
) -> None:
    """Fit size-dependent efficiency curves (per op and op kind) and link models; print residuals."""
    from planner.calibrate import run_calibrate, split_assignment, write_calibration
    from planner.plan import check_output

    if output is not None:  # --nccl GPU=PATH names its file after the '='
        check_output(output, inputs=[*vidur, *(split_assignment(str(n))[1] for n in nccl)])
    calib = run_calibrate(vidur=vidur, nccl=nccl, gpu=gpu)
    rows = calib.residual_rows()
    if output is not None:
        write_calibration(calib, output, [*map(str, vidur), *nccl])
        typer.echo(f"wrote {output}", err=True)
    if as_json:
        echo_json({"output": None if output is None else str(output), "residuals": rows})
        return
    print_table("Calibration residuals (MAPE and worst error against the measured tables)",
                ["accelerator", "fit", "samples", "MAPE %", "max err %", "MAPE >=1MB %"],
                [(r["accelerator"], r["what"], r["samples"], 100 * r["mape"], 100 * r["max_error"],
                  "-" if r.get("mape_ge_1mb") is None else 100 * r["mape_ge_1mb"]) for r in rows])
