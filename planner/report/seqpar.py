"""Reports of the sequence-parallel plans.

``StepPlan`` (one training step): a Gantt chart of the sequence-parallel groups per rank and
micro-batch against the step's lower bound.  ``SequencePlan`` (offline): step times of the static
strategies against the adaptive per-step planner, per batch, with throughput and memory headroom.
"""
from __future__ import annotations

from typing import Any

from planner.report import html as H
from planner.report import plots as P


def _runs(ranks: list[int]) -> list[tuple[int, int]]:
    """Consecutive rank runs as (first, length): one rectangle per run keeps the SVG small."""
    out: list[tuple[int, int]] = []
    for r in sorted(int(x) for x in ranks):
        if out and out[-1][0] + out[-1][1] == r:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((r, 1))
    return out


def _gantt_plot(plan: dict[str, Any]) -> str:
    mbs = [m for m in plan.get("micro_batches") or [] if isinstance(m, dict)]
    n_ranks = int(plan.get("num_gpus") or 0) or 1 + max(
        (int(r) for m in mbs for g in m.get("groups") or [] for r in g.get("ranks") or []), default=0)
    fig, (ax,) = P.figure(11, min(9.0, max(3.2, 0.12 * n_ranks + 1.8)))
    if not mbs:
        P.empty_note(ax, "no micro-batches in the plan")
        return P.to_svg(fig)
    start = 0.0
    seen: set[str] = set()
    for k, m in enumerate(mbs):
        for g in m.get("groups") or []:
            t = P.as_float(g.get("time_s"))
            if t is None:
                continue
            gtype = str(g.get("type", "?"))
            col = P.GROUP_TYPE_COLOURS.get(gtype, P.colour(5))
            for first, length in _runs(g.get("ranks") or []):
                ax.broken_barh([(start, t)], (first - 0.45, length - 0.1), facecolors=col,
                               edgecolor="white", linewidth=0.4,
                               label=gtype if gtype not in seen else None)
                seen.add(gtype)
                if length >= 2 and n_ranks <= 128:
                    ax.text(start + t / 2, first + (length - 1) / 2, f"{gtype}{g.get('size', '')}",
                            ha="center", va="center", fontsize=6, color="white")
        mt = P.as_float(m.get("time_s")) or 0.0
        start += mt
        ax.axvline(start, color="#1d2330", linewidth=0.6, alpha=0.6)
    lb = P.as_float(plan.get("lower_bound_s"))
    if lb is not None:
        ax.axvline(lb, color=P.colour(3), linestyle="--", label=f"lower bound {lb:.4g} s")
    step = P.as_float(plan.get("step_time_s"))
    ax.set_xlim(0, max(start, step or 0.0, lb or 0.0) * 1.02)
    ax.set_ylim(n_ranks - 0.5, -0.5)
    ax.set_ylabel("rank")
    ax.set_xlabel("time within the step (s); thin lines end each micro-batch")
    ax.set_title(f"groups per rank over the step ({len(mbs)} micro-batch(es), step {step:.4g} s)"
                 if step is not None else "groups per rank over the step")
    ax.grid(axis="y", alpha=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=7)
    return P.to_svg(fig)


def _group_table(plan: dict[str, Any]) -> str:
    rows = []
    for k, m in enumerate(plan.get("micro_batches") or []):
        kinds: dict[str, list[dict[str, Any]]] = {}
        for g in m.get("groups") or []:
            kinds.setdefault(f"{g.get('type')}{g.get('size')}", []).append(g)
        for name, gs in sorted(kinds.items()):
            times = [P.as_float(g.get("time_s")) or 0.0 for g in gs]
            rows.append((k, name, len(gs), sum(len(g.get("sequences") or []) for g in gs),
                         sum(int(g.get("tokens") or 0) for g in gs), max(times), min(times),
                         ", ".join(sorted({str(g.get("link_tier")) for g in gs if g.get("link_tier")}))))
    return H.table(["micro-batch", "group kind", "groups", "sequences", "tokens", "slowest s", "fastest s",
                    "link tiers"], rows)


def _strategy_plot(plan: dict[str, Any]) -> str:
    strategies = [s for s in plan.get("strategies") or [] if isinstance(s, dict)]
    fig, (ax,) = P.figure(11, max(3.0, 0.26 * len(strategies) + 1.4))
    if not strategies:
        P.empty_note(ax, "no strategies in the plan")
        return P.to_svg(fig)
    best = plan.get("best_static")
    labels, vals, cols = [], [], []
    infeasible = []
    for s in strategies:
        v = P.as_float(s.get("step_time_s"))
        labels.append(str(s.get("name")))
        vals.append(v or 0.0)
        if v is None:
            infeasible.append(len(labels) - 1)
        adaptive = s.get("mode") == "adaptive"
        cols.append(P.colour(2) if s.get("name") == "adaptive" else P.colour(4) if adaptive else
                    P.colour(1) if s.get("name") == best else P.colour(0))
    P.barh(ax, labels, vals, cols, xlabel="mean step time over the sampled batches (s)")
    y = list(range(len(labels)))[::-1]
    for i in infeasible:
        ax.text(0, y[i], " infeasible on some batch", va="center", fontsize=7, color=P.colour(3))
    worst = [P.as_float(s.get("step_time_s_max")) for s in strategies]
    ax.scatter([w for w in worst if w is not None], [yy for yy, w in zip(y, worst) if w is not None],
               marker="|", color="#1d2330", s=60, zorder=3, label="slowest batch")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title("static strategies (blue; best static orange) against the adaptive planner (green)")
    return P.to_svg(fig)


def _per_batch_plot(plan: dict[str, Any]) -> str:
    strategies = {s.get("name"): s for s in plan.get("strategies") or [] if isinstance(s, dict)}
    pick = [n for n in (plan.get("best_static"), "adaptive") if n in strategies]
    pick += [n for n, s in strategies.items() if s.get("mode") == "adaptive" and n not in pick]
    fig, (a1, a2) = P.figure(11, 3.4, ncols=2)
    drawn = False
    for i, n in enumerate(pick):
        ys = [P.as_float(v) for v in strategies[n].get("per_batch_step_time_s") or []]
        if ys:
            a1.plot(range(len(ys)), [v if v is not None else float("nan") for v in ys], marker="o",
                    color=P.colour(i), label=str(n))
            drawn = True
    if drawn:
        n = max(len(strategies[n].get("per_batch_step_time_s") or []) for n in pick)
        a1.set_xticks(range(n))
        a1.set_xlabel("sampled batch")
        a1.set_ylabel("step time (s)")
        a1.legend(fontsize=7)
        a1.set_ylim(bottom=0)
    else:
        P.empty_note(a1, "no per-batch step times in the plan")
    a1.set_title("step time per sampled batch")
    names = list(strategies)
    tput = [P.as_float(strategies[n].get("tokens_per_s_per_gpu")) for n in names]
    head = [P.as_float(strategies[n].get("memory_headroom")) for n in names]
    if any(t is not None for t in tput):
        import numpy as np
        x = np.arange(len(names))
        a2.bar(x, [t or 0.0 for t in tput], color=P.colour(0), label="tokens/s per GPU")
        a2.set_xticks(x, [P.short(str(n), 18) for n in names], rotation=60, ha="right", fontsize=6)
        a2.set_ylabel("tokens / s / GPU")
        tw = a2.twinx()
        tw.plot(x, [h if h is not None else float("nan") for h in head], "o", color=P.colour(1),
                label="memory headroom")
        tw.set_ylabel("memory headroom (fraction)")
        tw.set_ylim(0, 1)
        tw.grid(False)
        h1, l1 = a2.get_legend_handles_labels()
        h2, l2 = tw.get_legend_handles_labels()
        a2.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    else:
        P.empty_note(a2, "no throughput in the plan")
    a2.set_title("throughput and memory headroom per strategy")
    return P.to_svg(fig)


def _facts(plan: dict[str, Any], source: str) -> H.Facts:
    facts = H.base_facts(plan, source)
    cm = plan.get("cost_model") or {}
    for key in ("preset", "model", "accelerator", "num_gpus", "gpus_per_node", "zero_stage", "recompute",
                "memory_bytes", "group_types"):
        if key in cm:
            v = cm[key]
            facts.inputs.append((f"cost model {key}", ", ".join(map(str, v)) if isinstance(v, list) else v))
    if cm.get("fidelity") or cm.get("source"):
        facts.fidelity.append(("step and group times, memory", str(cm.get("fidelity", H.NOT_IN_PLAN)),
                               str(cm.get("source", H.NOT_IN_PLAN))))
    for key in ("notes", "assumptions"):
        facts.assumptions += [str(x) for x in cm.get(key) or []]
    return facts


def render_step(plan: dict[str, Any], source: str) -> str:
    facts = _facts(plan, source)
    for key in ("num_gpus", "gpus_per_node", "num_sequences", "total_tokens", "longest_sequence", "cost_preset"):
        if key in plan:
            facts.inputs.append((key, plan[key]))
    facts.assumptions.append("micro-batches run one after another; groups within one run in parallel on "
                             "disjoint ranks, so a micro-batch lasts as long as its slowest group")
    solver = plan.get("solver") or None
    facts.solver = solver
    if solver and isinstance(solver.get("milp"), dict):
        m = solver["milp"]
        facts.solver_note = "MILP sub-problem: " + ", ".join(f"{k} {v}" for k, v in m.items()
                                                              if k in ("status", "gap", "variables", "question"))
    headline = [("step time", H.num(plan.get("step_time_s"), "s")),
                ("lower bound", H.num(plan.get("lower_bound_s"), "s")),
                ("gap", H.pct((solver or {}).get("gap"))),
                ("tokens/s per GPU", H.num(plan.get("tokens_per_s_per_gpu"))),
                ("micro-batches", H.num(len(plan.get("micro_batches") or [])))]
    sections = [
        ("Summary", H.cards(headline)),
        ("Groups over the step (Gantt)",
         H.figure("seqpar-gantt", _gantt_plot(plan),
                  "Each bar is one sequence-parallel group on its ranks for its predicted time; colour is the "
                  "group type; the dashed line is the step's lower bound.")),
        ("Groups by kind", _group_table(plan)),
    ]
    return H.page(f"Training step plan: {H.num(plan.get('step_time_s'), 's')}", f"kind StepPlan · {source}",
                  facts, sections)


def render_sequence(plan: dict[str, Any], source: str) -> str:
    facts = _facts(plan, source)
    for key in ("distribution", "cluster", "batches"):
        for k, v in (plan.get(key) or {}).items():
            facts.inputs.append((f"{key} {k}", v))
    facts.solver = plan.get("solver") or None
    adaptive = next((s for s in plan.get("strategies") or [] if s.get("name") == "adaptive"), {})
    facts.solver_note = ("the adaptive strategy runs the per-step planner on every sampled batch (planning "
                         f"time {H.num(adaptive.get('planning_time_s'), 's')} per batch); per-batch solver "
                         "status and gap are not recorded in this plan (plan one step with `planner seqpar "
                         "step` to see them)")
    rec = plan.get("recommendation") or {}
    headline = [("recommended", str(rec.get("choice", "-"))), ("best static", str(plan.get("best_static", "-"))),
                ("adaptive gain vs best static", H.pct(plan.get("adaptive_gain_vs_best_static"))),
                ("adaptive step time", H.num(adaptive.get("step_time_s"), "s"))]
    rec_rows = []
    for mode in ("static", "adaptive"):
        r = rec.get(mode) or {}
        for k, v in r.items():
            rec_rows.append((mode, k, " ".join(map(str, v)) if isinstance(v, list) else v))
    rows = [(s.get("name"), s.get("mode"), s.get("type"), s.get("size"), s.get("feasible_batches"),
             P.as_float(s.get("step_time_s")), P.as_float(s.get("step_time_s_max")),
             P.as_float(s.get("tokens_per_s_per_gpu")), P.as_float(s.get("memory_headroom")),
             P.as_float(s.get("micro_batches_mean"))) for s in plan.get("strategies") or []]
    sections = [
        ("Summary", H.cards(headline)),
        ("Static against adaptive step times",
         H.figure("seqpar-strategies", _strategy_plot(plan),
                  "Mean modelled step time over the sampled batches per strategy; bars end at the mean, "
                  "ticks mark the slowest batch.")),
        ("Per batch, throughput and memory headroom",
         H.figure("seqpar-batches", _per_batch_plot(plan),
                  "Step time of the best static strategy and the adaptive planner on each sampled batch; "
                  "tokens/s per GPU and memory headroom per strategy.")),
        ("Strategies", H.table(["strategy", "mode", "type", "size", "feasible batches", "step s", "slowest s",
                                "tokens/s/GPU", "memory headroom", "micro-batches"], rows)),
        ("Recommendation", H.table(["mode", "field", "value"], rec_rows)),
    ]
    return H.page(f"Sequence-parallel plan: {rec.get('choice', '-')}", f"kind SequencePlan · {source}",
                  facts, sections)


def render(plan: dict[str, Any], source: str) -> str:
    """The StepPlan or SequencePlan report as one HTML page."""
    if plan.get("kind") == "StepPlan":
        return render_step(plan, source)
    return render_sequence(plan, source)
