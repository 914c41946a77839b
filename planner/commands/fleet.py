"""``planner fleet``: the cheapest GPU mix and shapes under latency SLOs."""
from __future__ import annotations

from pathlib import Path

import typer

from hardware.errors import InputError


def fleet(
    request: Path = typer.Argument(None, help="Fleet request (YAML or JSON)."),
    output: Path = typer.Option(None, "-o", "--output", help="Write the FleetPlan here (.yaml or .json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout (only JSON)."),
    time_limit: float = typer.Option(None, "--time-limit", help="Solver time limit in seconds."),
    melange: Path = typer.Option(None, "--melange", help="Solve a Mélange config JSON directly."),
) -> None:
    """Plan the cheapest GPU mix, TP/PP shapes and routing that meet the SLOs."""
    from planner import fleet as fl
    from planner.commands.common import echo_json, write_output

    if time_limit is not None and time_limit <= 0:
        raise InputError(f"time limit {time_limit:g} s", field="--time-limit",
                         expected="a positive number of seconds")
    if (request is None) == (melange is None):
        raise InputError("give a request file or --melange CONFIG.json (exactly one)",
                         field="REQUEST", expected="planner fleet REQUEST.yaml -o plan.yaml")
    if melange is not None:
        plan = fl.plan_melange(melange, time_limit_s=time_limit)
        inputs = [melange]
    else:
        req, hashed = fl.request_from_file(request)
        plan = fl.plan_fleet(req, file=str(request), time_limit_s=time_limit, inputs=hashed)
        # traces are named relative to the request file
        inputs = [request] + [request.parent / m.workload.trace for m in req.models if m.workload.trace]
    write_output(plan, output, inputs)
    if as_json:
        echo_json(plan)
        return
    solver = plan["solver"]
    gap = "" if solver.get("gap") in (None, 0.0) else f", gap {100 * solver['gap']:.3f}%"
    typer.echo(f"cost {plan['cost_per_hour']:.2f} $/h ({solver['status']}{gap}, "
               f"{solver['time_s']:.2f} s)")
    if plan.get("periods"):
        typer.echo(f"{len(plan['periods'])} periods of {plan['period_s']:g} s; peak "
                   f"{plan['peak_cost_per_hour']:.2f} $/h; counts shown are peaks")
    for p in plan["pools"]:
        typer.echo(f"  {p['count']:>4} x {p['model']} on {p['gpu']} tp{p['shape']['tp']}-pp{p['shape']['pp']}"
                   f" [{p['price_class']}]  util {p['utilisation']:.2f}")
    base = plan.get("baseline_single_gpu") or {}
    if base.get("gpu"):
        typer.echo(f"best single GPU type: {base['gpu']} {base['cost_per_hour']:.2f} $/h "
                   f"(saves {100 * base['savings_fraction']:.1f}%)")
    peak = plan.get("peak_provisioning") or {}
    if peak.get("feasible"):
        typer.echo(f"provisioning every period for the peak: {peak['cost_per_hour']:.2f} $/h "
                   f"(the plan saves {100 * peak['savings_fraction']:.1f}%)")
    if "melange_result" in plan:
        typer.echo(f"melange: {plan['melange_result']}")


def register(app: typer.Typer) -> None:
    app.command("fleet")(fleet)
