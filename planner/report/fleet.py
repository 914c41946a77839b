"""Report of a ``FleetPlan``: cost and its breakdown, routing heatmap, utilisation and SLO
headroom per pool, the per-period plan against the load curve, savings against single-GPU plans.

Reads only the plan's stable names (``cost_per_hour``, ``pools``, ``routing``, ``solver``,
``baseline_single_gpu``) plus optional sections (``periods``, ``peak_provisioning``, ``workload``,
``slo``, ``capacity``, ``explanations``, ``replan``, ``break_even_prices``,
``slo_sensitivity``); anything absent is said to be absent, never filled in.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from planner.report import html as H
from planner.report import plots as P


def fidelity_layer(source: str) -> str:
    """The fidelity layer named by a capacity source string such as ``cost-model:analytical``."""
    s = source.lower()
    if "calibrat" in s:
        return "calibrated efficiency factors"
    if "profile" in s or "measured" in s or "melange" in s or "aibrix" in s:
        return "measured table"
    if "analytical" in s:
        return "analytical speed-of-light"
    return source


def _pool_label(p: dict[str, Any]) -> str:
    shape = p.get("shape") or {}
    sh = f"tp{shape.get('tp', '?')}-pp{shape.get('pp', '?')}" if shape else ""
    role = f" {p['role']}" if p.get("role") else ""
    return f"{p.get('count', '?')} x {p.get('gpu', '?')} {sh}{role} {p.get('price_class', '')}".strip()


def _cost_plot(pools: list[dict[str, Any]]) -> str:
    fig, (a1, a2) = P.figure(10, max(2.6, 0.35 * len(pools) + 1.2), ncols=2,
                             gridspec_kw={"width_ratios": [3, 2]})
    labels = [_pool_label(p) for p in pools]
    costs = [P.as_float(p.get("cost_per_hour")) or 0.0 for p in pools]
    cols = [P.PRICE_CLASS_COLOURS.get(str(p.get("price_class")), P.colour(5)) for p in pools]
    if pools:
        P.barh(a1, labels, costs, cols, xlabel="$ / h (mean over the horizon)")
        by_class: dict[str, float] = defaultdict(float)
        for p, c in zip(pools, costs):
            by_class[str(p.get("price_class"))] += c
        names = sorted(by_class)
        P.barh(a2, names, [by_class[n] for n in names],
               [P.PRICE_CLASS_COLOURS.get(n, P.colour(5)) for n in names], xlabel="$ / h")
    else:
        P.empty_note(a1, "no pools in the plan")
        P.empty_note(a2, "no pools in the plan")
    a1.set_title("cost by pool (colour: price class)")
    a2.set_title("cost by price class")
    return P.to_svg(fig)


def _routing_plot(routing: list[dict[str, Any]]) -> str:
    groups = sorted({g for r in routing for g in (r.get("pools") or {})})
    rows = []
    for r in routing:
        b = r.get("bucket") or {}
        label = b.get("label") if isinstance(b, dict) else str(b)
        rate = P.as_float(r.get("rate_rps"))
        prefix = f"{r.get('model')}: " if len({x.get('model') for x in routing}) > 1 else ""
        rows.append(f"{prefix}{label}" + (f" @{rate:.3g}/s" if rate is not None else ""))
    matrix = [[(P.as_float((r.get("pools") or {}).get(g)) if g in (r.get("pools") or {}) else float("nan"))
               for g in groups] for r in routing]
    fig, (ax,) = P.figure(10, max(2.6, 0.3 * len(rows) + 1.6))
    if rows and groups:
        P.heatmap(ax, matrix, rows, groups, "share of the bucket's requests", vmin=0, vmax=1, fig=fig)
        ax.set_xlabel("pool (model / GPU / shape)")
    else:
        P.empty_note(ax, "no routing table in the plan")
    ax.set_title("routing: bucket (input x output tokens, peak rate) -> pool")
    return P.to_svg(fig)


def _headroom_plot(pools: list[dict[str, Any]]) -> str:
    fig, (a1, a2) = P.figure(10, max(2.6, 0.35 * len(pools) + 1.2), ncols=2)
    labels = [_pool_label(p) for p in pools]
    util = [P.as_float(p.get("utilisation")) for p in pools]
    if any(u is not None for u in util):
        P.barh(a1, labels, [u or 0.0 for u in util], [P.colour(0)] * len(pools),
               xlabel="utilisation (routed rate / capacity)")
    else:
        P.empty_note(a1, "utilisation not in the plan")
    a1.set_title("utilisation per pool")
    slo = [P.as_float((p.get("slo_headroom") or {}).get("fraction_at_capacity")) for p in pools]
    rate_h = [P.as_float(p.get("rate_headroom_fraction")) for p in pools]
    if any(v is not None for v in slo + rate_h):
        import numpy as np
        y = np.arange(len(pools))[::-1]
        a2.barh(y + 0.2, [v or 0.0 for v in slo], height=0.4, color=P.colour(2),
                label="latency headroom at capacity (1 - predicted / SLO)")
        a2.barh(y - 0.2, [v or 0.0 for v in rate_h], height=0.4, color=P.colour(1),
                label="rate headroom (1 - utilisation)")
        a2.set_yticks(y, [""] * len(pools))
        a2.set_xlabel("fraction")
        for yi, p in zip(y, pools):
            b = (p.get("slo_headroom") or {}).get("binding")
            if b:
                a2.text(0, yi + 0.2, f" binding: {b}", va="center", fontsize=7)
        P.legend_below(a2, ncol=1)
    else:
        P.empty_note(a2, "SLO headroom not in the plan")
    a2.set_title("SLO and rate headroom per pool")
    return P.to_svg(fig)


def _periods_plot(plan: dict[str, Any]) -> str:
    periods = plan.get("periods") or []
    pools = {p.get("id"): p for p in plan.get("pools") or []}
    period_s = P.as_float(plan.get("period_s"))
    if not periods:
        fig, (a1,) = P.figure(11, 1.6)
        P.empty_note(a1, "the plan has one period (no load curve)")
        return P.to_svg(fig)
    fig, (a1, a2) = P.figure(11, 5.2, nrows=2, sharex=True)
    hours = [(P.as_float(p.get("start_s")) or 0.0) / 3600 for p in periods]
    width = (period_s / 3600 if period_s else (hours[1] - hours[0] if len(hours) > 1 else 1.0)) * 0.95
    ids = sorted({pid for p in periods for pid in (p.get("pools") or {})})
    bottom = [0.0] * len(periods)
    for i, pid in enumerate(ids):
        per = pools.get(pid, {})
        gpr = P.as_float(per.get("gpus_per_replica")) or 1.0
        vals = [(P.as_float((p.get("pools") or {}).get(pid)) or 0.0) * gpr for p in periods]
        a1.bar(hours, vals, width=width, bottom=bottom, align="edge",
               color=P.PRICE_CLASS_COLOURS.get(str(per.get("price_class")), P.colour(i)),
               edgecolor="white", linewidth=0.6, label=P.short(str(pid), 40))
        bottom = [b + v for b, v in zip(bottom, vals)]
    a1.set_ylabel("GPUs")
    a1.set_title("GPUs per period by pool (colour: price class), against the load")
    tw = a1.twinx()
    step = period_s / 3600 if period_s else width / 0.9
    edges = hours + [hours[-1] + step]
    models = sorted({m for p in periods for m in (p.get("rate_rps") or {})})
    for j, m in enumerate(models):
        rates = [P.as_float((p.get("rate_rps") or {}).get(m)) for p in periods]
        rates = [r if r is not None else float("nan") for r in rates]
        tw.step(edges, rates + rates[-1:], where="post", color="#1d2330",
                linestyle=["-", "--", ":", "-."][j % 4], linewidth=1.4, label=f"load {m} (req/s)")
    tw.set_ylabel("load (req/s)")
    tw.set_ylim(bottom=0)
    tw.grid(False)
    h1, l1 = a1.get_legend_handles_labels()
    h2, l2 = tw.get_legend_handles_labels()
    a1.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left", bbox_to_anchor=(1.08, 1.0), frameon=False)
    costs = [P.as_float(p.get("cost_per_hour")) for p in periods]
    a2.step(edges, costs + costs[-1:], where="post", color=P.colour(3),
            label="this plan ($/h per period)")
    mean = P.as_float(plan.get("cost_per_hour"))
    if mean is not None:
        a2.axhline(mean, color=P.colour(3), linestyle=":", label=f"mean {mean:.4g} $/h")
    peak = plan.get("peak_provisioning") or {}
    if P.as_float(peak.get("cost_per_hour")) is not None:
        a2.axhline(peak["cost_per_hour"], color=P.colour(6), linestyle="--",
                   label=f"provision for the peak {peak['cost_per_hour']:.4g} $/h")
    a2.set_ylabel("$ / h")
    a2.set_xlabel("hours from the start of the load curve")
    a2.set_ylim(bottom=0)
    a2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.08, 1.0), frameon=False)
    return P.to_svg(fig)


def _savings_plot(plan: dict[str, Any]) -> str:
    base = plan.get("baseline_single_gpu") or {}
    labels, vals, cols = ["this plan (mix)"], [P.as_float(plan.get("cost_per_hour")) or 0.0], [P.colour(0)]
    for g in base.get("per_gpu") or []:
        c = P.as_float(g.get("cost_per_hour"))
        if g.get("feasible", c is not None) and c is not None:
            labels.append(f"only {g.get('gpu')}")
            vals.append(c)
            cols.append(P.colour(1) if g.get("gpu") == base.get("gpu") else P.colour(7))
    if not (base.get("per_gpu")) and P.as_float(base.get("cost_per_hour")) is not None:
        labels.append(f"only {base.get('gpu')}")
        vals.append(base["cost_per_hour"])
        cols.append(P.colour(1))
    peak = plan.get("peak_provisioning") or {}
    if P.as_float(peak.get("cost_per_hour")) is not None:
        labels.append("provision for the peak")
        vals.append(peak["cost_per_hour"])
        cols.append(P.colour(6))
    fig, (ax,) = P.figure(10, max(2.4, 0.35 * len(labels) + 1.0))
    if len(labels) > 1:
        P.barh(ax, labels, vals, cols, xlabel="$ / h (mean over the horizon)")
    else:
        P.empty_note(ax, "no single-GPU-type baseline in the plan")
    ax.set_title("this plan against single-GPU-type plans (orange: the best single type)")
    return P.to_svg(fig)


def render(plan: dict[str, Any], source: str) -> str:
    """The FleetPlan report as one HTML page."""
    pools = list(plan.get("pools") or [])
    routing = list(plan.get("routing") or [])
    solver = plan.get("solver") or None
    base = plan.get("baseline_single_gpu") or {}

    facts = H.base_facts(plan, source)
    for m, w in sorted((plan.get("workload") or {}).items()):
        w = w or {}
        desc = ", ".join(f"{k} {H.num(w[k]) if isinstance(w[k], (int, float)) else w[k]}"
                         for k in ("trace", "requests", "mean_rate_rps", "peak_rate_rps", "histogram_buckets")
                         if k in w)
        facts.inputs.append((f"workload {m}", desc or "-"))
        if w.get("rates_rps"):
            facts.inputs.append((f"planned rates {m} (req/s)", ", ".join(H.num(r) for r in w["rates_rps"])))
    for m, s in sorted((plan.get("slo") or {}).items()):
        s = s or {}
        facts.inputs.append((f"SLO {m}", ", ".join(f"{k} {v:g}" for k, v in s.items()
                                                  if isinstance(v, (int, float)) and v is not None)))
    if plan.get("period_s") is not None:
        facts.inputs.append(("period", H.num(plan.get("period_s"), "s")))
    facts.inputs.append(("GPU types used", ", ".join(f"{g} x {n}" for g, n in (plan.get("gpus") or {}).items()) or "-"))
    facts.assumptions = [str(x) for x in plan.get("explanations") or []]
    if (plan.get("peak_provisioning") or {}).get("note"):
        facts.assumptions.append("peak provisioning baseline: " + plan["peak_provisioning"]["note"])
    for m, srcs in sorted((plan.get("capacity") or {}).items()):
        for s in srcs or []:
            facts.fidelity.append((f"capacity, utilisation, SLO headroom of {m}", fidelity_layer(str(s)), str(s)))
    for p in pools:
        if p.get("capacity_source"):
            facts.fidelity.append((f"pool {p.get('id', _pool_label(p))}", fidelity_layer(str(p["capacity_source"])),
                                   str(p["capacity_source"])))
    facts.fidelity.append(("costs ($/h)", "prices x counts", "price_per_replica_hour of each pool"))
    facts.solver = solver
    if solver and solver.get("formulation"):
        f = solver["formulation"]
        facts.solver_note = "formulation: " + ", ".join(f"{k} {v}" for k, v in f.items())

    headline = [("cost per hour", H.num(plan.get("cost_per_hour"), "$/h"))]
    if plan.get("peak_cost_per_hour") is not None:
        headline.append(("peak period cost", H.num(plan.get("peak_cost_per_hour"), "$/h")))
    if plan.get("cost_per_million_tokens") is not None:
        headline.append(("per million tokens", H.num(plan.get("cost_per_million_tokens"), "$")))
    # the busiest period's total: per-type peaks (``gpus``) may fall in different periods
    by_period = [int(p["gpus"]) for p in plan.get("periods") or [] if p.get("gpus") is not None]
    headline.append(("GPUs (peak)", H.num(max(by_period) if by_period else
                                          sum(int(v) for v in (plan.get("gpus") or {}).values()))))
    if base.get("savings_fraction") is not None:
        headline.append((f"saved vs only {base.get('gpu')}", H.pct(base.get("savings_fraction"))))
    if solver:
        headline.append(("solver", f"{solver.get('status')} (gap {H.pct(solver.get('gap'))})"))

    pool_rows = [(p.get("id"), p.get("gpu"), f"tp{(p.get('shape') or {}).get('tp')}-pp{(p.get('shape') or {}).get('pp')}",
                  p.get("price_class"), p.get("count"), p.get("gpus"), P.as_float(p.get("price_per_replica_hour")),
                  P.as_float(p.get("cost_per_hour")), P.as_float(p.get("utilisation")),
                  (p.get("slo_headroom") or {}).get("binding"), p.get("capacity_source")) for p in pools]
    by_model = plan.get("cost_by_model") or {}
    model_rows = [(name, P.as_float(m.get("cost_per_hour")), P.as_float(m.get("cost_per_million_tokens")),
                   m.get("gpus_peak")) for name, m in by_model.items()]
    sections = [
        ("Summary", H.cards(headline) + H.table(
            ["pool", "GPU", "shape", "price class", "replicas", "GPUs", "$/replica-h", "$/h (mean)",
             "utilisation", "binding SLO", "capacity from"], pool_rows)
         + (H.table(["model", "$/h (its pools)", "$ per million tokens", "GPUs at its peak"], model_rows)
            if len(model_rows) > 1 else "")),
        ("Cost breakdown by pool and price class",
         H.figure("fleet-cost", _cost_plot(pools), "Mean $/h over the planning horizon per pool, and summed per price class.")),
        ("Routing: which pool serves each bucket",
         H.figure("fleet-routing", _routing_plot(routing),
                  "Share of each bucket's requests sent to each pool (blank: none).")),
        ("Utilisation and SLO headroom per pool",
         H.figure("fleet-headroom", _headroom_plot(pools),
                  "Utilisation is routed rate over pool capacity; latency headroom is how far the predicted "
                  "latency at capacity sits under the binding SLO.")),
        ("The plan over time against the load curve",
         H.figure("fleet-periods", _periods_plot(plan),
                  "GPUs per period (stacked by pool) with the planned load, and cost per period.")
         + (H.table(["period", "start (s)", "GPUs", "$/h", "changes"],
                    [(p.get("index"), P.as_float(p.get("start_s")), p.get("gpus"), P.as_float(p.get("cost_per_hour")),
                      ", ".join(f"{k} {v:+d}" for k, v in (p.get("changes") or {}).items()) or "-")
                     for p in plan.get("periods") or []]) if plan.get("periods") else "")),
        ("Savings against single-GPU-type plans",
         H.figure("fleet-savings", _savings_plot(plan),
                  "Each single-GPU-type plan is solved by the planner with the mix restricted to one type.")
         + H.table(["GPU type", "feasible", "$/h", "status / reason"],
                   [(g.get("gpu"), g.get("feasible"), P.as_float(g.get("cost_per_hour")),
                     g.get("status") or g.get("reason")) for g in base.get("per_gpu") or []])),
    ]
    breaks = plan.get("break_even_prices") or []
    if breaks:
        sections.append(("Break-even prices per GPU type", H.table(
            ["GPU type", "used", "on-demand $/GPU-h now", "break-even $/GPU-h", "meaning", "exact"],
            [(b.get("gpu"), b.get("used"), P.as_float(b.get("on_demand_price_per_gpu_hour")),
              P.as_float(b.get("break_even_price_per_gpu_hour")), b.get("meaning") if b.get(
                  "break_even_price_per_gpu_hour") is not None else b.get("note"), b.get("exact"))
             for b in breaks])))
    slo_rows = plan.get("slo_sensitivity") or []
    if slo_rows:
        sections.append(("What a tighter or looser SLO costs", H.table(
            ["SLO factor", "feasible", "$/h", "change $/h", "change", "status / reason"],
            [(v.get("factor"), v.get("feasible"), P.as_float(v.get("cost_per_hour")),
              P.as_float(v.get("delta_per_hour")), H.pct(v.get("delta_fraction"))
              if v.get("delta_fraction") is not None else "-", v.get("status") or v.get("reason"))
             for v in slo_rows])))
    rp = plan.get("replan")
    if rp:
        tr = rp.get("transition") or {}
        steps = ([("1. grow", s.get("pool"), s.get("from"), s.get("to"))
                  for s in tr.get("grow_first") or []]
                 + [("2. switch routing", "-", "-", "-")]
                 + [("3. shrink", s.get("pool"), s.get("from"), s.get("to"))
                    for s in tr.get("shrink_after") or []])
        sections.append(("Re-plan against the plan in place", H.cards([
            ("GPUs changed", H.num(rp.get("gpus_changed"))),
            ("the cheapest plan would change", H.num(rp.get("gpus_changed_by_cheapest"))),
            ("extra cost", H.num(rp.get("extra_cost_per_hour"), "$/h")),
            ("allowance", H.pct(rp.get("keep_within"))),
            ("$/h during the switch", H.num(tr.get("cost_per_hour_during_switch"), "$/h"))])
            + H.table(["step", "pool", "from", "to"], steps)))
    if plan.get("melange_result"):
        sections.append(("Mélange-format result", H.pre(str(plan["melange_result"]))))
    title = f"Fleet plan: {H.num(plan.get('cost_per_hour'), '$/h')}"
    return H.page(title, f"kind FleetPlan · {source}", facts, sections)
