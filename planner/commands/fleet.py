"""``planner fleet``: the cheapest GPU mix and shapes under latency SLOs."""
from __future__ import annotations

from pathlib import Path

import typer

from hardware.errors import InputError


def fleet(
    request: Path = typer.Argument(None, help="Fleet request (YAML or JSON)."),
    output: Path = typer.Option(None, "-o", "--output", help="Write the FleetPlan here (.yaml or .json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout (only JSON)."),
    time_limit: float = typer.Option(
        None, "--time-limit",
        help="Time limit in seconds for the mix's solve (default: the request's "
             "solver.time_limit_s, 30).  Each single-GPU-type baseline and the "
             "peak-provisioning comparison get a quarter of it (1-10 s): the wall time grows "
             "with the number of GPU types."),
    melange: Path = typer.Option(None, "--melange", help="Solve a Mélange config JSON directly."),
    previous: Path = typer.Option(None, "--previous", help="The FleetPlan in place: re-plan "
                                  "moving as few GPUs as the cost allowance permits."),
    keep_within: float = typer.Option(None, "--keep-within", help="With --previous: share of "
                                      "the cheapest plan's cost that may be spent to keep pools "
                                      "in place (default 0.02)."),
    break_even: bool = typer.Option(False, "--break-even", help="Also find, per GPU type, the "
                                    "price at which it enters or leaves the cheapest plan."),
    slo_factor: list[float] = typer.Option(None, "--slo-factor", help="Also plan with every SLO "
                                           "times this factor (repeat: --slo-factor 0.8 "
                                           "--slo-factor 1.25) and report the cost."),
    simulate: bool = typer.Option(False, "--simulate", help="Replay the plan in the iteration-level "
                                  "serving simulator (Poisson arrivals, continuous batching); "
                                  "where a pool misses an SLO percentile, scale its capacity down "
                                  "and re-plan (at most 8 plans).  Not with --previous / --melange."),
) -> None:
    """Plan the cheapest GPU mix, TP/PP shapes and routing that meet the SLOs."""
    from pydantic import ValidationError

    from planner import fleet as fl
    from planner.commands.common import echo_json, require_finite, working, write_output
    from planner.plan import check_output

    require_finite(time_limit=time_limit, keep_within=keep_within, slo_factor=slo_factor)
    if time_limit is not None and time_limit <= 0:
        raise InputError(f"time limit {time_limit:g} s", field="--time-limit",
                         expected="a positive number of seconds")
    if (request is None) == (melange is None):
        raise InputError("give a request file or --melange CONFIG.json (exactly one)",
                         field="REQUEST", expected="planner fleet REQUEST.yaml -o plan.yaml")
    if keep_within is not None and previous is None:
        raise InputError("--keep-within needs --previous", field="--keep-within",
                         expected="planner fleet REQUEST.yaml --previous plan.yaml --keep-within 0.02")
    if simulate and (previous is not None or melange is not None):
        raise InputError("--simulate plans a fleet request from scratch",
                         field="--previous" if previous is not None else "--melange",
                         expected="planner fleet REQUEST.yaml --simulate -o plan.yaml")
    if output is not None:  # before solving: a long solve must not end in "cannot write there"
        check_output(output, inputs=[request, melange, previous])
    if melange is not None:
        if previous is not None:
            raise InputError("--previous works with a fleet request, not --melange",
                             field="--previous", expected="planner fleet REQUEST.yaml --previous plan.yaml")
        with working("solving the Mélange instance"):
            plan = fl.plan_melange(melange, time_limit_s=time_limit)
        inputs = [melange]
    else:
        from planner.plan import load_plan

        before = None if previous is None else load_plan(previous, kinds=["FleetPlan"])
        req, hashed = fl.request_from_file(request)
        # the files the request reads (traces, profiles, model configs) are inputs too
        inputs = [request, previous, *(p for ps in fl.input_files(req).values() for p in ps)]
        if output is not None:
            check_output(output, inputs=inputs)
        if break_even or slo_factor:
            extra = {"break_even": True} if break_even else {}
            if slo_factor:
                extra["slo_factors"] = list(slo_factor)
            try:
                solver = fl.SolverSpec.model_validate({**req.solver.model_dump(), **extra})
            except ValidationError:
                raise InputError(f"SLO factors {list(slo_factor)}", field="--slo-factor",
                                 expected="factors in (0, 10], e.g. 0.8 for 20% tighter SLOs") from None
            req = req.model_copy(update={"solver": solver})
        limit = time_limit or req.solver.time_limit_s  # as plan_fleet reads it
        with working(f"planning the fleet (solver time limit {limit:g} s)"):
            plan = fl.plan_fleet(req, file=str(request), time_limit_s=time_limit, inputs=hashed,
                                 previous=before,
                                 previous_file=None if previous is None else str(previous),
                                 keep_within=keep_within, simulate=simulate)
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
    by_model = plan.get("cost_by_model") or {}
    if len(by_model) > 1:
        for name, m in by_model.items():
            per_token = ("" if m["cost_per_million_tokens"] is None
                         else f", {m['cost_per_million_tokens']:.3f} $/M tokens")
            typer.echo(f"  model {name}: {m['cost_per_hour']:.2f} $/h{per_token}, "
                       f"{m['gpus_peak']} GPUs at its peak")
    if plan.get("scaling"):
        sc = plan["scaling"]
        typer.echo(f"replica starts over the horizon: {sc['replica_starts']} ({sc['gpu_starts']} GPUs), "
                   f"{sc['start_cost_per_hour']:.2f} $/h of the cost")
    base = plan.get("baseline_single_gpu") or {}
    if base.get("gpu"):
        saves = base.get("savings_fraction")
        typer.echo(f"best single GPU type: {base['gpu']} {base['cost_per_hour']:.2f} $/h"
                   + ("" if saves is None else f" (saves {100 * saves:.1f}%)"))
    peak = plan.get("peak_provisioning") or {}
    if peak.get("feasible"):
        typer.echo(f"provisioning every period for the peak: {peak['cost_per_hour']:.2f} $/h "
                   f"(the plan saves {100 * peak['savings_fraction']:.1f}%)")
    for b in plan.get("break_even_prices") or []:
        price = b["break_even_price_per_gpu_hour"]
        typer.echo(f"  {b['gpu']}: " + (f"{'leaves above' if b['used'] else 'enters at or below'} "
                                        f"{price:.3f} $/GPU-h (now {b['on_demand_price_per_gpu_hour']:.3f})"
                                        if price is not None else b["note"]))
    for v in plan.get("slo_sensitivity") or []:
        typer.echo(f"  SLOs x{v['factor']:g}: " + (f"{v['cost_per_hour']:.2f} $/h ({v['delta_per_hour']:+.2f})"
                                                    if v["feasible"] else f"no plan: {v['reason']}"))
    rp = plan.get("replan")
    if rp is not None:
        tr = rp["transition"]
        typer.echo(f"re-plan: {rp['gpus_changed']:g} GPUs change (cheapest plan: "
                   f"{rp['gpus_changed_by_cheapest']:g}) for {rp['extra_cost_per_hour']:+.2f} $/h")
        for step in tr["grow_first"]:
            typer.echo(f"  grow   {step['pool']}: {step['from']} -> {step['to']}")
        if tr["grow_first"] or tr["shrink_after"]:
            typer.echo("  then switch the routing table")
        for step in tr["shrink_after"]:
            typer.echo(f"  shrink {step['pool']}: {step['from']} -> {step['to']}")
    sim = plan.get("simulation")
    if sim is not None:
        typer.echo(simulation_summary(sim))
    if "melange_result" in plan:
        typer.echo(f"melange: {plan['melange_result']}")


def simulation_summary(sim: dict) -> str:
    """The simulation section in a few lines: verdict, capacity factors, missing pools."""
    lines = [f"simulated ({sim['periods']} period(s), {sim['window_s']:g} s each, seed {sim['seed']}, "
             f"{sim['rounds']} plan(s)): " + {True: "every pool meets its SLOs",
                                              False: "some pools miss their SLOs",
                                              None: "no pool could be simulated"}[sim["meets_slo"]]]
    if len(sim["cost_per_hour_by_round"]) > 1:
        lines.append("  $/h by plan: " + " -> ".join(f"{c:.2f}" for c in sim["cost_per_hour_by_round"]))
    for g, f in sim["capacity_factors"].items():
        lines.append(f"  capacity of {g} scaled by {f:.3f}")
    for g in sim["groups"]:
        if not g["meets_slo"]:
            worst = ", ".join(f"p{t['percentile']:g} {t['metric'][:-2]} "
                              + ("unserved" if t["simulated_s"] is None else f"{t['simulated_s']:.3g} s")
                              + f" (SLO {t['slo_s']:g} s)" for t in g.get("targets", []))
            lines.append(f"  {g['group']} misses in periods {g['periods_missed']}: {worst}")
    for s in sim["not_simulated"]:
        lines.append(f"  not simulated: {s['group']} ({s['why']})")
    if sim.get("stopped"):
        lines.append(f"  {sim['stopped']}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("fleet")(fleet)
