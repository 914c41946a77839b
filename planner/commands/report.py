"""``planner report``: one self-contained HTML capacity-planning report from a plan file
(every plan kind) or from a sweep's results table (.csv / .parquet)."""
from __future__ import annotations

from pathlib import Path

import typer


def report_cmd(
    source: Path = typer.Argument(..., help="A plan (YAML/JSON: FleetPlan, ParallelPlan, ExpertPlacement, "
                                            "StepPlan, SequencePlan) or sweep results (.csv/.parquet)."),
    output: Path = typer.Option(..., "-o", "--output", help="The HTML report to write."),
) -> None:
    """Write an HTML report (plots inline, no network needed to view it)."""
    from planner.plan import check_output, write_atomic
    from planner.report import report_file

    check_output(output, inputs=[source], suffixes=(".html", ".htm"), what="report")
    html = report_file(source)
    write_atomic(output, html, protect=[source])
    typer.echo(f"wrote {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
