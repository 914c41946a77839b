"""Report of a ``ParallelPlan``: the top plans on a TTFT / TPOT / cost chart with the SLO lines,
where the chosen plan's time goes, memory per GPU, launch commands and search facts.

Reads the stable names (``plans`` with ``tp``, ``pp``, ``dp``, ``ep``, ``disaggregated``,
``ttft_s``, ``tpot_s``, ``goodput_rps``, ``cost_per_hour``, ``launch``; ``search``) and the
optional detail (``replica`` / ``prefill`` / ``decode`` memory, ``characteristics``).
"""
from __future__ import annotations

from typing import Any

from planner.report import html as H
from planner.report import plots as P

MEMORY_PARTS = ("weights", "kv_cache", "activations", "reserved")
#: optional per-op breakdown keys a plan may carry ({name: seconds} or [{op|name, time_s}])
BREAKDOWN_KEYS = ("op_breakdown", "time_breakdown", "breakdown")


def _tag(p: dict[str, Any]) -> str:
    return f"#{p.get('rank', '?')} {p.get('label', '')}".strip()


def _tradeoff_plot(plans: list[dict[str, Any]], slo: dict[str, Any], rate: float | None) -> str:
    fig, (a1, a2) = P.figure(11, 4.0, ncols=2)
    pts = [(P.as_float(p.get("ttft_s")), P.as_float(p.get("tpot_s")), P.as_float(p.get("cost_per_hour")), p)
           for p in plans]
    pts = [x for x in pts if x[0] is not None and x[1] is not None]
    if pts:
        costs = [x[2] or 0.0 for x in pts]
        sc = a1.scatter([x[0] for x in pts], [x[1] for x in pts], c=costs, cmap="viridis", s=60,
                        edgecolors="#1d2330", linewidths=0.5, zorder=3)
        cb = fig.colorbar(sc, ax=a1, fraction=0.05, pad=0.02)
        cb.set_label("cost ($/h)")
        for x in pts:
            a1.annotate(_tag(x[3]), (x[0], x[1]), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if P.as_float(slo.get("ttft_s")) is not None:
            a1.axvline(slo["ttft_s"], color=P.colour(3), linestyle="--",
                       label=f"TTFT SLO {slo['ttft_s']:g} s (p{slo.get('ttft_percentile', '?'):g})"
                       if isinstance(slo.get("ttft_percentile"), (int, float)) else f"TTFT SLO {slo['ttft_s']:g} s")
        if P.as_float(slo.get("tpot_s")) is not None:
            a1.axhline(slo["tpot_s"], color=P.colour(4), linestyle="--",
                       label=f"TPOT SLO {slo['tpot_s']:g} s (p{slo.get('tpot_percentile', '?'):g})"
                       if isinstance(slo.get("tpot_percentile"), (int, float)) else f"TPOT SLO {slo['tpot_s']:g} s")
        a1.set_xlim(left=0)
        a1.set_ylim(bottom=0)
        a1.legend(loc="lower right", fontsize=7)
    else:
        P.empty_note(a1, "no plan with TTFT and TPOT in the plan file")
    a1.set_xlabel("TTFT at the SLO percentile (s)")
    a1.set_ylabel("TPOT at the SLO percentile (s)")
    a1.set_title("top plans: latency against the SLOs (colour: $/h)")
    gp = [(P.as_float(p.get("cost_per_hour")), P.as_float(p.get("goodput_rps")), p) for p in plans]
    gp = [x for x in gp if x[0] is not None and x[1] is not None]
    if gp:
        a2.scatter([x[0] for x in gp], [x[1] for x in gp], color=P.colour(0), s=50, zorder=3)
        for x in gp:
            a2.annotate(_tag(x[2]), (x[0], x[1]), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if rate is not None:
            a2.axhline(rate, color=P.colour(1), linestyle="--", label=f"workload rate {rate:g} req/s")
            a2.legend(loc="lower right", fontsize=7)
        a2.set_xlim(left=0)
        a2.set_ylim(bottom=0)
    else:
        P.empty_note(a2, "no goodput / cost in the plan file")
    a2.set_xlabel("cost ($/h)")
    a2.set_ylabel("goodput (req/s within the SLOs)")
    a2.set_title("goodput against cost")
    return P.to_svg(fig)


def _items(raw: Any, prefix: str = "") -> list[tuple[str, float | None]]:
    """(op, seconds) pairs from {op: s}, [{op|name, time_s}] or {phase: either of those}."""
    if isinstance(raw, list):
        return [(prefix + str(r.get("op") or r.get("name")), P.as_float(r.get("time_s"))) for r in raw
                if isinstance(r, dict)]
    if isinstance(raw, dict):
        out: list[tuple[str, float | None]] = []
        for k, v in raw.items():
            out += _items(v, f"{prefix}{k}: ") if isinstance(v, (list, dict)) else [(prefix + str(k), P.as_float(v))]
        return out
    return []


def _breakdown_items(plan: dict[str, Any]) -> list[tuple[str, float]] | None:
    for key in BREAKDOWN_KEYS:
        for holder in (plan, plan.get("replica") or {}):
            items = [(k, v) for k, v in _items(holder.get(key)) if v is not None]
            if items:
                return items
    return None


def _time_plot(plans: list[dict[str, Any]]) -> tuple[str, str]:
    """Per-op breakdown of the chosen plan when the plan holds one; otherwise the phase shares
    (compute- / memory-bound, communication) that the plan records for each top plan."""
    chosen = plans[0] if plans else {}
    items = _breakdown_items(chosen)
    if items:
        fig, (ax,) = P.figure(10, max(2.4, 0.3 * len(items) + 1))
        P.barh(ax, [k for k, _ in items], [v for _, v in items], xlabel="time (s)")
        ax.set_title(f"per-op time of the chosen plan {_tag(chosen)}")
        return P.to_svg(fig), "Per-op time of the chosen plan, as recorded in the plan."
    keys = [("prefill_compute_bound_share", "prefill: compute-bound"), ("prefill_comm_share", "prefill: communication"),
            ("decode_memory_bound_share", "decode: memory-bound"), ("decode_comm_share", "decode: communication")]
    fig, (ax,) = P.figure(10, 3.4)
    rows = [(p, p.get("characteristics") or {}) for p in plans]
    rows = [(p, c) for p, c in rows if any(P.as_float(c.get(k)) is not None for k, _ in keys)]
    if not rows:
        P.empty_note(ax, "no time breakdown in the plan")
        ax.set_title("where the time goes")
        return P.to_svg(fig), "The plan records no time breakdown."
    import numpy as np
    x = np.arange(len(keys))
    w = 0.8 / len(rows)
    for i, (p, c) in enumerate(rows):
        vals = [P.as_float(c.get(k)) or 0.0 for k, _ in keys]
        ax.bar(x + i * w - 0.4 + w / 2, vals, width=w, color=P.colour(i), label=_tag(p))
    ax.set_xticks(x, [lab for _, lab in keys])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of the iteration time")
    ax.set_title("where the time goes at the operating point (per-op times are not in the plan)")
    ax.legend(fontsize=7)
    return P.to_svg(fig), ("Shares of one prefill and one decode iteration's time that are compute-bound, "
                           "memory-bound or communication, as the plan records them (characteristics).")


def _memory_rows(plans: list[dict[str, Any]]) -> list[tuple[str, dict[str, float]]]:
    rows = []
    for p in plans:
        phases = [("", p.get("replica"))] if p.get("replica") else \
            [(" prefill", p.get("prefill")), (" decode", p.get("decode"))]
        for suffix, ph in phases:
            mem = (ph or {}).get("memory_per_gpu_bytes") or {}
            if mem:
                rows.append((_tag(p) + suffix, {k: P.as_float(v) for k, v in mem.items()}))
    return rows


def _memory_plot(plans: list[dict[str, Any]]) -> str:
    rows = _memory_rows(plans)
    fig, (ax,) = P.figure(10, max(2.4, 0.4 * len(rows) + 1.4))
    if not rows:
        P.empty_note(ax, "no memory per GPU in the plan")
        return P.to_svg(fig)
    y = list(range(len(rows)))[::-1]
    left = [0.0] * len(rows)
    for i, part in enumerate(MEMORY_PARTS):
        vals = [(m.get(part) or 0.0) / 1e9 for _, m in rows]
        ax.barh(y, vals, left=left, color=P.colour(i), label=part)
        left = [a + b for a, b in zip(left, vals)]
    totals = [(m.get("total") or 0.0) / 1e9 for _, m in rows]
    for yi, t in zip(y, totals):
        if t:
            ax.plot([t, t], [yi - 0.4, yi + 0.4], color="#1d2330", linewidth=2)
    ax.plot([], [], color="#1d2330", linewidth=2, label="GPU memory (total)")
    ax.set_yticks(y, [P.short(r, 34) for r, _ in rows])
    ax.set_xlabel("GB per GPU")
    ax.set_title("memory per GPU")
    ax.grid(axis="y", alpha=0)
    P.legend_below(ax, ncol=5, offset=-0.5 if len(rows) < 4 else -0.25)
    return P.to_svg(fig)


def render(plan: dict[str, Any], source: str) -> str:
    """The ParallelPlan report as one HTML page."""
    plans = [p for p in plan.get("plans") or [] if isinstance(p, dict)]
    slo = plan.get("slo") or {}
    wl = plan.get("workload") or {}
    search = plan.get("search") or {}
    facts = H.base_facts(plan, source)
    facts.inputs += [("model", plan.get("model", "-")), ("engine", plan.get("engine", "-")),
                     ("objective", plan.get("objective", "-"))]
    facts.inputs += [(f"workload {k}", v) for k, v in wl.items()]
    facts.inputs += [(f"SLO {k}", v) for k, v in slo.items() if v is not None]
    for c in plan.get("cluster") or []:
        facts.inputs.append(("cluster", ", ".join(f"{k} {v}" for k, v in c.items())))
    facts.assumptions = [str(a) for a in plan.get("assumptions") or []]
    layer = plan.get("fidelity")
    if layer:
        facts.fidelity += [("TTFT, TPOT, goodput, throughput", str(layer), "iteration-level batching simulation"),
                           ("memory per GPU, KV capacity", str(layer), "cost models (costmodels/memory.py)")]
    facts.fidelity.append(("cost ($/h)", "prices x GPUs", "cluster price_per_gpu_hour"))
    facts.solver = plan.get("solver")
    facts.solver_note = ("the search enumerates and prunes candidate plans; " +
                         ", ".join(f"{k} {v}" for k, v in search.items() if not isinstance(v, dict)) +
                         ("" if plan.get("solver") else "; the plan records no solver status or gap "
                          "(exhaustive over the candidates that survive pruning)"))

    best = plans[0] if plans else {}
    headline = [("chosen plan", str(best.get("label", "-"))), ("GPUs", H.num(best.get("gpus"))),
                ("TTFT", H.num(best.get("ttft_s"), "s")), ("TPOT", H.num(best.get("tpot_s"), "s")),
                ("goodput", H.num(best.get("goodput_rps"), "req/s")),
                ("cost", H.num(best.get("cost_per_hour"), "$/h")),
                ("plans evaluated", H.num(search.get("plans_evaluated")))]
    rows = [(p.get("rank"), p.get("label"), p.get("gpu"), p.get("gpus"), p.get("tp"), p.get("pp"), p.get("dp"),
             p.get("ep"), p.get("disaggregated"), P.as_float(p.get("ttft_s")), P.as_float(p.get("tpot_s")),
             P.as_float(p.get("goodput_rps")), P.as_float(p.get("cost_per_hour")),
             P.as_float(p.get("cost_per_million_tokens")), p.get("why")) for p in plans]
    time_svg, time_caption = _time_plot(plans)
    launch = best.get("launch") or {}
    launch_html = "".join(f"<h3>{H.esc(engine)}</h3>" + H.pre("\n\n".join((spec or {}).get("commands") or []))
                          for engine, spec in launch.items() if isinstance(spec, dict))
    pruned = search.get("pruned_by_rule") or {}
    sections = [
        ("Summary", H.cards(headline) + H.table(
            ["#", "plan", "GPU", "GPUs", "TP", "PP", "DP", "EP", "disagg.", "TTFT s", "TPOT s", "goodput req/s",
             "$/h", "$/Mtok", "why"], rows)),
        ("Top plans: TTFT, TPOT and cost against the SLOs",
         H.figure("parallel-tradeoff", _tradeoff_plot(plans, slo, P.as_float(wl.get("rate_rps"))),
                  "TTFT and TPOT at the SLO percentiles per plan (dashed: the SLOs); goodput is the highest "
                  "rate at which the SLO attainment target holds.")),
        ("Where the time goes", H.figure("parallel-time", time_svg, time_caption)),
        ("Memory per GPU", H.figure("parallel-memory", _memory_plot(plans),
                                    "Weights, KV cache, activations and reserved memory per GPU of each plan "
                                    "(per phase when disaggregated).")),
        ("Launch commands of the chosen plan", launch_html or f'<p class="muted">{H.NOT_IN_PLAN}</p>'),
        ("Search", H.table(["fact", "value"], [(k, v) for k, v in search.items() if not isinstance(v, dict)]
                           + [(f"pruned: {k}", v) for k, v in pruned.items()])),
    ]
    title = f"Parallel plan: {plan.get('model', '')} — {best.get('label', 'no plan')}"
    return H.page(title, f"kind ParallelPlan · {source}", facts, sections)
