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
    day_start: str = typer.Option("00:00", "--day-start",
                                  help="Time of day period 0 starts, HH:MM (kubernetes: KEDA "
                                       "cron triggers for a plan whose periods tile a day)."),
    timezone: str = typer.Option("Etc/UTC", "--timezone", help="IANA time zone of --day-start."),
    lead_s: float = typer.Option(None, "--lead-s",
                                 help="Seconds a KEDA scale-up starts before its period "
                                      "(default 600: weights take minutes to load)."),
) -> None:
    """Write one vLLM serve command per pool, or one Kubernetes Deployment per pool (plus
    schedule.sh and KEDA ScaledObjects for a plan over several periods, transition.sh for a
    re-plan)."""
    from planner.emit.kubernetes import DEFAULT_IMAGE, DEFAULT_LEAD_S, emit_fleet_kubernetes
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
    day_start_s = _time_of_day(day_start)
    lead = DEFAULT_LEAD_S if lead_s is None else float(lead_s)
    period_s = plan.get("period_s")
    if lead < 0 or (isinstance(period_s, (int, float)) and lead >= period_s):
        raise InputError(f"lead {lead:g} s", field="--lead-s",
                         expected=f"at least 0 and less than the plan's period ({period_s} s)")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("output exists and is not a folder", file=str(out_dir), field="-o/--output")
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "vllm":
        written = emit_fleet_vllm(plan, out_dir)
    else:
        written = emit_fleet_kubernetes(plan, out_dir, image=image or DEFAULT_IMAGE,
                                        namespace=namespace, day_start_s=day_start_s,
                                        timezone=timezone, lead_s=lead)
    for p in written:
        typer.echo(f"wrote {p}")
    keda = any(p.parent.name == "keda" for p in written)
    if keda:
        from planner.emit.kubernetes import lead_cost_per_hour
        extra = lead_cost_per_hour(plan, lead)
        cost = plan.get("cost_per_hour")
        share = f" ({100 * extra / cost:.1f}% of the plan's {cost:.2f})" if cost else ""
        typer.echo(f"note: KEDA starts scale-ups {lead:g} s early: about {extra:.2f} $/h more"
                   f"{share}", err=True)
    if any(p.name == "schedule.sh" for p in written) and not keda:
        periods = max(len(pool.get("counts_by_period") or []) for pool in plan["pools"])
        typer.echo(f"note: no KEDA ScaledObjects: the plan's {periods} periods of "
                   f"{plan.get('period_s')} s do not tile one day on whole minutes; schedule.sh "
                   "scales between them", err=True)


def _time_of_day(text: str) -> float:
    """Seconds after midnight of "HH:MM"."""
    parts = text.strip().split(":")
    if (len(parts) != 2 or not all(p.isdigit() for p in parts)
            or int(parts[0]) > 23 or int(parts[1]) > 59):
        raise InputError(f"time of day {text!r}", field="--day-start", expected="HH:MM, 00:00-23:59")
    return 3600.0 * int(parts[0]) + 60.0 * int(parts[1])


def register(app: typer.Typer) -> None:
    app.command("emit")(emit)
