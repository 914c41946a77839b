"""``planner emit``: deployable artifacts from a plan (vLLM commands, Kubernetes manifests)."""
from __future__ import annotations

from pathlib import Path

import typer

from hardware.errors import InputError

FORMATS = ("vllm", "kubernetes")


def emit(
    plan_path: Path = typer.Argument(..., help="A plan file (FleetPlan) written by the planner."),
    fmt: str = typer.Option(..., "--format", help="vllm | kubernetes"),
    out_dir: Path = typer.Option(..., "-o", "--output", help="Folder for the artifacts (created)."),
    image: str = typer.Option(None, "--image", help="Container image (kubernetes)."),
    namespace: str = typer.Option(None, "--namespace", help="Namespace (kubernetes)."),
) -> None:
    """Write one vLLM serve command per pool, or one Kubernetes Deployment per pool."""
    from planner.emit.kubernetes import DEFAULT_IMAGE, emit_fleet_kubernetes
    from planner.emit.vllm import emit_fleet_vllm
    from planner.plan import load_plan

    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}", field="--format", expected=" or ".join(FORMATS))
    plan = load_plan(plan_path, kinds=["FleetPlan"])
    if not isinstance(plan.get("pools"), list) or not plan["pools"]:
        raise InputError("the plan has no pools", file=str(plan_path), field="pools",
                         expected="a FleetPlan with at least one pool")
    for i, pool in enumerate(plan["pools"]):
        for key in ("id", "model", "gpu", "count", "shape", "price_class", "gpus_per_replica"):
            if key not in pool:
                raise InputError("pool field missing", file=str(plan_path), field=f"pools[{i}].{key}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("output exists and is not a folder", file=str(out_dir), field="-o/--output")
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "vllm":
        written = emit_fleet_vllm(plan, out_dir)
    else:
        written = emit_fleet_kubernetes(plan, out_dir, image=image or DEFAULT_IMAGE,
                                        namespace=namespace)
    for p in written:
        typer.echo(f"wrote {p}")


def register(app: typer.Typer) -> None:
    app.command("emit")(emit)
