"""Report of an ``ExpertPlacement``: expert loads before placement and GPU loads after it,
per-layer max/mean against the proven bound, traffic saved, migration and memory.

The plan holds the placement (``placement.phy2log``), metrics, per-layer results and solver facts;
the load matrix itself stays in the loads file the plan names (``spec.loads``).  When that file can
be read, the heatmaps show it and the per-GPU loads it implies under the placement (each replica of
an expert takes an equal share, the planner's own model); otherwise the report says so and shows
the replica counts the plan holds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from planner.report import html as H
from planner.report import plots as P


def _find_loads(plan: dict[str, Any], plan_dir: Path | None) -> Path | None:
    name = (plan.get("spec") or {}).get("loads")
    if not name:
        return None
    for cand in (Path(name), *(() if plan_dir is None else (plan_dir / name, plan_dir / Path(name).name))):
        if cand.is_file():
            return cand
    return None


def gpu_loads(weights, phy2log, slot_to_gpu, num_gpus: int, speeds=None):
    """``[layers, gpus]`` load per GPU over the mean GPU load: each replica of an expert takes an
    equal share of the expert's load; a GPU's time is its load over its speed."""
    import numpy as np
    w = np.asarray(weights, dtype=float)
    table = np.asarray(phy2log, dtype=np.int64)
    L, S = table.shape
    E = w.shape[1]
    gpu_of_slot = np.asarray(slot_to_gpu, dtype=np.int64)
    counts = np.zeros((L, E))
    for l in range(L):
        np.add.at(counts[l], table[l], 1.0)
    share = w / np.maximum(counts, 1.0)
    load = np.zeros((L, num_gpus))
    for l in range(L):
        np.add.at(load[l], gpu_of_slot, share[l, table[l]])
    speed = np.ones(num_gpus) if speeds is None else np.asarray(speeds, dtype=float)
    mean = w.sum(1, keepdims=True) / speed.sum()
    return (load / speed) / np.where(mean > 0, mean, 1.0)


def _slot_to_gpu(plan: dict[str, Any]) -> list[int] | None:
    spec = plan.get("spec") or {}
    pl = plan.get("placement") or {}
    table = pl.get("phy2log") or []
    if not table:
        return None
    s2g = pl.get("slot_to_gpu")
    if isinstance(s2g, list):
        return [int(x) for x in s2g]
    spg = spec.get("slots_per_gpu")
    if not spg:
        return None
    return [i // int(spg) for i in range(len(table[0]))]


def _heatmaps(plan: dict[str, Any], plan_dir: Path | None) -> tuple[str, str, list[str]]:
    """(before svg, after svg, notes)."""
    import numpy as np
    notes: list[str] = []
    spec = plan.get("spec") or {}
    table = (plan.get("placement") or {}).get("phy2log") or []
    s2g = _slot_to_gpu(plan)
    gpus = int(spec.get("gpus") or (max(s2g) + 1 if s2g else 0))
    path = _find_loads(plan, plan_dir)
    weights = None
    if path is not None:
        try:
            from planner.experts import read_loads
            weights = read_loads(path).weights
            shape = np.asarray(weights).shape
            if table and shape[0] != len(table):
                notes.append(f"the loads file {path} has {shape[0]} layers but the placement "
                             f"{len(table)}: loads not shown")
                weights = None
            elif spec.get("experts") and shape[1] != spec["experts"]:
                notes.append(f"the loads file {path} has {shape[1]} experts but the plan {spec['experts']}: "
                             "loads not shown")
                weights = None
        except Exception as exc:  # a moved or changed file: say so, draw what the plan holds
            notes.append(f"could not read the loads file {path}: {exc}")
            weights = None
    elif spec.get("loads"):
        notes.append(f"the loads file {spec.get('loads')} named by the plan was not found next to the plan or "
                     "in the working folder: expert loads are not shown")
    fig, (a1,) = P.figure(10, 3.6)
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        mean = w.mean(1, keepdims=True)
        P.heatmap(a1, w / np.where(mean > 0, mean, 1.0), [f"layer {l}" for l in range(w.shape[0])],
                  [str(e) if w.shape[1] <= 40 else "" for e in range(w.shape[1])],
                  "load / mean expert load", cmap="magma_r", annotate=False, fig=fig)
        a1.set_xlabel("logical expert")
        a1.set_title(f"before placement: measured load per expert ({path.name})")
    elif table:
        E = int(spec.get("experts") or (max(max(r) for r in table) + 1))
        counts = np.zeros((len(table), E))
        for l, row in enumerate(table):
            np.add.at(counts[l], np.asarray(row, dtype=np.int64), 1)
        P.heatmap(a1, counts, [f"layer {l}" for l in range(len(table))], [str(e) for e in range(E)],
                  "replicas", cmap="Blues", annotate=E <= 40, fig=fig, fmt="{:.0f}")
        a1.set_xlabel("logical expert")
        a1.set_title("replicas per expert (loads not available)")
    else:
        P.empty_note(a1, "no placement in the plan")
    before = P.to_svg(fig)
    fig, (a2,) = P.figure(10, 3.6)
    if weights is not None and table and s2g:
        ratio = gpu_loads(weights, table, s2g, gpus, (plan.get("placement") or {}).get("gpu_speeds"))
        top = max(1.05, float(ratio.max()))
        P.heatmap(a2, ratio, [f"layer {l}" for l in range(ratio.shape[0])], [f"GPU {g}" for g in range(gpus)],
                  "GPU load / mean GPU load", cmap="coolwarm", annotate=ratio.size <= 256,
                  vmin=min(float(ratio.min()), 2 - top), vmax=top, fig=fig)
        a2.set_title("after placement: load per GPU over the mean")
    elif table and s2g:
        per_gpu = np.zeros((len(table), gpus))
        for l, row in enumerate(table):
            per_gpu[l] = [len({row[s] for s in range(len(row)) if s2g[s] == g}) for g in range(gpus)]
        P.heatmap(a2, per_gpu, [f"layer {l}" for l in range(len(table))], [f"GPU {g}" for g in range(gpus)],
                  "distinct experts", cmap="Blues", fig=fig, fmt="{:.0f}")
        a2.set_title("distinct experts per GPU (loads not available)")
    else:
        P.empty_note(a2, "no placement in the plan")
    return before, P.to_svg(fig), notes


def _per_layer_plot(plan: dict[str, Any]) -> str:
    rows = [r for r in plan.get("per_layer") or [] if isinstance(r, dict)]
    fig, (ax,) = P.figure(10, 3.4)
    if not rows:
        P.empty_note(ax, "no per-layer results in the plan")
        return P.to_svg(fig)
    x = [r.get("layer", i) for i, r in enumerate(rows)]
    for key, label, style in (("max_mean_gpu_load", "max/mean GPU load", "-o"),
                              ("max_mean_node_load", "max/mean node load", "-s"),
                              ("lower_bound", "proven lower bound (GPU)", "--"),
                              ("node_bound", "node-level bound", ":")):
        ys = [P.as_float(r.get(key)) for r in rows]
        if any(y is not None for y in ys):
            ax.plot(x, [y if y is not None else float("nan") for y in ys], style, markersize=3, label=label)
    ax.axhline(1.0, color="#6f7782", linewidth=0.8)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("max / mean load")
    ax.set_title("per layer: busiest GPU and node against the bound (1.0 = perfect balance)")
    ax.legend(fontsize=7)
    return P.to_svg(fig)


def _traffic_plot(plan: dict[str, Any]) -> tuple[str, str]:
    aff = plan.get("affinity") or {}
    metrics = plan.get("metrics") or {}
    keys = ["cross_gpu_transitions", "cross_node_transitions", "cross_gpu_coactivation", "cross_node_coactivation"]
    after = {k: P.as_float(aff.get(k, metrics.get(k))) for k in keys}
    before = {k: P.as_float((aff.get("load_only") or {}).get(k)) for k in keys}
    keys = [k for k in keys if after[k] is not None or before[k] is not None]
    fig, (ax,) = P.figure(10, 3.0)
    if not keys:
        P.empty_note(ax, "no routing traces given: the plan records no token traffic")
        ax.set_title("token traffic across GPUs and nodes")
        return P.to_svg(fig), "The plan holds no traffic figures (they need token-level routing traces)."
    import numpy as np
    x = np.arange(len(keys))
    if any(before[k] is not None for k in keys):
        ax.bar(x - 0.2, [before[k] or 0.0 for k in keys], width=0.4, color=P.colour(7), label="load-only placement")
    ax.bar(x + 0.2, [after[k] or 0.0 for k in keys], width=0.4, color=P.colour(0), label="this placement")
    ax.set_xticks(x, [k.replace("_", " ") for k in keys])
    ax.set_ylabel("share of the traced token pairs")
    ax.set_title("token traffic crossing GPUs / nodes")
    ax.legend(fontsize=7)
    given = P.as_float(aff.get("max_mean_gpu_load_given_up"))
    cap = "Share of consecutive-layer transitions and co-activated pairs whose experts sit on different GPUs / nodes."
    if given is not None:
        cap += f" Max/mean GPU load given up for it: {given:.4g}."
    return P.to_svg(fig), cap


def render(plan: dict[str, Any], source: str, plan_dir: Path | None = None) -> str:
    """The ExpertPlacement report as one HTML page (``plan_dir`` helps find the loads file)."""
    spec = plan.get("spec") or {}
    metrics = plan.get("metrics") or {}
    facts = H.base_facts(plan, source)
    facts.inputs += [(k, v) for k, v in spec.items()]
    facts.assumptions = [str(n) for n in plan.get("notes") or []] + [
        "a GPU's load is the sum over its slots of the expert's load divided by the expert's replica count "
        "(tokens split evenly over replicas), over the GPU's speed",
        "max/mean compares the busiest GPU (node) of a layer with the mean over GPUs (nodes)"]
    before_svg, after_svg, notes = _heatmaps(plan, plan_dir)
    facts.assumptions += notes
    facts.fidelity += [("expert loads", "measured input", str(spec.get("loads") or H.NOT_IN_PLAN)),
                       ("GPU / node loads, bounds", "counted from the loads and the placement",
                        "planner/experts.py evaluate"),
                       ]
    if plan.get("memory"):
        facts.fidelity.append(("memory", "analytical", "expert weight bytes from the model spec"))
    facts.solver = plan.get("solver")
    if facts.solver and facts.solver.get("objective_meaning"):
        facts.solver_note = f"objective: {facts.solver['objective_meaning']}; bound: {facts.solver.get('bound_meaning', '-')}"
    headline = [("max/mean GPU load (mean)", H.num(metrics.get("max_mean_gpu_load_mean"))),
                ("worst layer", H.num(metrics.get("max_mean_gpu_load_worst"))),
                ("lower bound (mean)", H.num(metrics.get("lower_bound_mean"))),
                ("gap to bound", H.pct(metrics.get("gap_to_bound_mean"))),
                ("duplicate pairs", H.num(metrics.get("duplicate_pairs"))),
                ("experts moved", H.num(metrics.get("experts_moved")))]
    traffic_svg, traffic_cap = _traffic_plot(plan)
    sections = [
        ("Summary", H.cards(headline) + H.table(["metric", "value"], [(k, v) for k, v in metrics.items()])),
        ("Loads before and after placement",
         H.figure("experts-before", before_svg, "Load of each logical expert per layer over the layer's mean "
                  "expert load, as measured (the input).")
         + H.figure("experts-after", after_svg, "Load of each GPU per layer over the mean GPU load under this "
                    "placement; 1.0 is perfect balance.")),
        ("Per layer against the bound", H.figure("experts-layers", _per_layer_plot(plan),
                                                 "Busiest GPU and node per layer, with the proven lower bound.")),
        ("Traffic", H.figure("experts-traffic", traffic_svg, traffic_cap)),
    ]
    if plan.get("migration"):
        sections.append(("Migration", H.table(["fact", "value"], list(plan["migration"].items()))))
    if plan.get("memory"):
        sections.append(("Memory", H.table(["fact", "value"], [(k, v if not isinstance(v, (list, dict)) else str(v))
                                                               for k, v in plan["memory"].items()])))
    title = (f"Expert placement: {spec.get('layers', '?')} layers x {spec.get('experts', '?')} experts on "
             f"{spec.get('gpus', '?')} GPUs")
    return H.page(title, f"kind ExpertPlacement · {source}", facts, sections)
