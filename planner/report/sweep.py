"""Report of a sweep's results table: sensitivity curves (cost against rate, cost against SLO),
break-even rates between GPU types, and which points were infeasible and why.

Axis roles come from the field each axis sets (recorded in the table's ``axes`` column): a field
ending in ``rate_rps`` is the rate, one under ``slo`` an SLO, ``gpus`` / ``gpu`` a GPU set.  When
a plot varies one or two axes, the others are held at their first value, and the caption says so.
"""
from __future__ import annotations

import json
import math
from typing import Any

from hardware.errors import InputError
from planner.report import html as H
from planner.report import plots as P

AXIS_PREFIX = "axis."
METRIC = "cost_per_hour"
MAX_SERIES = 6
MAX_PANELS = 4


def _values(frame, col: str) -> list[Any]:
    """Distinct values of a column in order of first appearance (the sweep's axis order)."""
    seen: dict[Any, None] = {}
    for v in frame[col].tolist():
        seen.setdefault(v, None)
    return list(seen)


def _pick(values: list[Any], n: int) -> list[Any]:
    """At most ``n`` values spread evenly over the list (ends kept)."""
    if len(values) <= n:
        return values
    idx = sorted({round(i * (len(values) - 1) / (n - 1)) for i in range(n)})
    return [values[i] for i in idx]


def _roles(axes: dict[str, str]) -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {"rate": [], "slo": [], "gpus": [], "other": []}
    for name, field in axes.items():
        f = field.lower()
        last = f.split(".")[-1]
        if last.endswith("rate_rps") or last == "rate" or "rate" in name.lower():
            roles["rate"].append(name)
        elif ".slo." in f or f.startswith("slo.") or "slo" in name.lower():
            roles["slo"].append(name)
        elif last in ("gpus", "gpu") or "gpu" in name.lower():
            roles["gpus"].append(name)
        else:
            roles["other"].append(name)
    return roles


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _subset(frame, fixed: dict[str, Any]):
    mask = None
    for name, v in fixed.items():
        m = frame[AXIS_PREFIX + name] == v
        mask = m if mask is None else (mask & m)
    return frame if mask is None else frame[mask]


def _metric(sub, col: str = METRIC) -> list[float]:
    out = []
    for status, v in zip(sub["status"].tolist(), sub[col].tolist() if col in sub.columns else [None] * len(sub)):
        f = P.as_float(v)
        out.append(f if status == "ok" and f is not None else float("nan"))
    return out


def _curves(frame, axes: dict[str, str], x: str, series: str | None, panel: str | None,
            title: str, xlabel: str) -> tuple[str, str]:
    """Metric against axis ``x``: one line per value of ``series``, one panel per value of ``panel``;
    every other axis held at its first value."""
    panels = _pick(_values(frame, AXIS_PREFIX + panel), MAX_PANELS) if panel else [None]
    series_vals = _pick(_values(frame, AXIS_PREFIX + series), MAX_SERIES) if series else [None]
    fixed = {n: _values(frame, AXIS_PREFIX + n)[0] for n in axes if n not in (x, series, panel)}
    base = _subset(frame, fixed)
    xs_all = _values(frame, AXIS_PREFIX + x)
    fig, axs = P.figure(min(12, 3.4 * len(panels) + 1.5), 3.6, ncols=len(panels), sharey=True)
    logx = _numeric(xs_all) and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 20
    drawn = 0
    for ax, pv in zip(axs, panels):
        sub = base if pv is None else base[base[AXIS_PREFIX + panel] == pv]
        for i, sv in enumerate(series_vals):
            s = sub if sv is None else sub[sub[AXIS_PREFIX + series] == sv]
            s = s.sort_values(AXIS_PREFIX + x) if _numeric(xs_all) else s
            ys = _metric(s)
            if not any(y == y for y in ys):
                continue
            ax.plot(s[AXIS_PREFIX + x].tolist(), ys, marker="o", markersize=3, color=P.colour(i),
                    label=f"{series} = {sv}" if series else METRIC)
            drawn += 1
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(f"{panel} = {pv}" if panel else title, fontsize=9)
    axs[0].set_ylabel("cost ($/h)")
    ys_all = [y for y in _metric(base) if y == y and y > 0]
    if ys_all and max(ys_all) / min(ys_all) > 20:  # costs spanning decades read better on a log scale
        for ax in axs:
            ax.set_yscale("log")
    if drawn:
        axs[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    else:
        P.empty_note(axs[0], "no feasible point to draw")
    if panel:
        fig.suptitle(title, fontsize=10)
    held = ", ".join(f"{k} = {v}" for k, v in fixed.items())
    caption = f"{METRIC} of each point ({'gaps: infeasible or failed points'})" + \
        (f"; held at: {held}" if held else "")
    return P.to_svg(fig), caption


def _single_cols(frame) -> dict[str, str]:
    return {c[len("single."):-len(".cost_per_hour")]: c for c in frame.columns
            if c.startswith("single.") and c.endswith(".cost_per_hour")}


def break_even(frame, rate: str, others: list[str]) -> list[dict[str, Any]]:
    """Rates at which two GPU types' single-type plans cost the same: between consecutive sampled
    rates where the cost difference changes sign, interpolated linearly (the plans themselves are
    only known at the sampled rates)."""
    singles = _single_cols(frame)
    out = []
    combos = frame[[AXIS_PREFIX + o for o in others]].drop_duplicates().values.tolist() if others else [[]]
    gpus = sorted(singles)
    for combo in combos:
        sub = _subset(frame, dict(zip(others, combo))).sort_values(AXIS_PREFIX + rate)
        rates = [float(r) for r in sub[AXIS_PREFIX + rate].tolist()]
        costs = {g: _metric(sub, singles[g]) for g in gpus}
        for a_i, a in enumerate(gpus):
            for b in gpus[a_i + 1:]:
                d = [x - y for x, y in zip(costs[a], costs[b])]
                for k in range(len(rates) - 1):
                    d0, d1 = d[k], d[k + 1]
                    if math.isnan(d0) or math.isnan(d1) or d0 == 0 or (d0 > 0) == (d1 > 0):
                        continue
                    r = rates[k] + (rates[k + 1] - rates[k]) * d0 / (d0 - d1)
                    out.append({**dict(zip(others, combo)), "gpu_a": a, "gpu_b": b,
                                "rate_low": rates[k], "rate_high": rates[k + 1], "break_even_rate": r,
                                "cheaper_below": a if d0 < 0 else b, "cheaper_above": b if d0 < 0 else a})
    return out


def _single_plot(frame, rate: str, others: list[str]) -> tuple[str, str]:
    singles = _single_cols(frame)
    fixed = {n: _values(frame, AXIS_PREFIX + n)[0] for n in others}
    sub = _subset(frame, fixed).sort_values(AXIS_PREFIX + rate)
    fig, (ax,) = P.figure(10, 3.8)
    xs = sub[AXIS_PREFIX + rate].tolist()
    drawn = False
    for i, (g, col) in enumerate(sorted(singles.items())):
        ys = _metric(sub, col)
        if any(y == y for y in ys):
            ax.plot(xs, ys, marker="o", markersize=3, color=P.colour(i + 1), label=f"only {g}")
            drawn = True
    mix = _metric(sub)
    if any(y == y for y in mix):
        ax.plot(xs, mix, color="#1d2330", linewidth=3.5, alpha=0.45, zorder=1, label="the planned mix")
        drawn = True
    if drawn:
        if _numeric(xs) and xs and min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper left")
    else:
        P.empty_note(ax, "no single-GPU-type costs in this table")
    ax.set_xlabel(rate)
    ax.set_ylabel("cost ($/h)")
    ax.set_title("single-GPU-type plans against the mix: where the cheapest type changes")
    held = ", ".join(f"{k} = {v}" for k, v in fixed.items())
    return P.to_svg(fig), "Cost of the best plan restricted to each GPU type (from each point's " \
        "baseline_single_gpu) and of the mixed plan" + (f"; held at: {held}" if held else "")


#: what every row of a sweep table holds (planner/sweep.py ``results_frame``)
ROW_COLUMNS = ("point", "kind", "status", "axes", "tool_version", "sweep_sha256")
STATUSES = ("ok", "infeasible", "error")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _cut(message: str, file: str | None, field: str, expected: str) -> InputError:
    return InputError(f"{message}: the table looks truncated or edited", file=file, field=field,
                      expected=expected, hint="Run the sweep again, or restore what was lost")


def check_table(frame, *, file: str | None = None) -> None:
    """Check what the report reads of a sweep table (the columns and, per row, the cells
    ``planner sweep`` always writes) before anything is drawn: a row cut short, an ``axes``
    cell that is not the sweep's JSON, an axis without its column, an unknown status.

    Raises:
        InputError: the first problem, naming ``file``, the column and the data row.
    """
    if not len(frame):
        raise _cut("no rows", file, "point", "one row per sweep point")
    columns = [c for c in ROW_COLUMNS if c in frame.columns]
    first: dict[str, Any] = {}
    for i, row in enumerate(frame[columns].itertuples(index=False, name=None), start=1):
        cells = dict(zip(columns, row))
        for col in columns:
            if _missing(cells[col]):
                raise _cut(f"data row {i} has no '{col}'", file, col, f"'{col}' in every row")
        point = cells["point"]
        if isinstance(point, bool) or not isinstance(point, (int, float)) or point != int(point) or point < 0:
            raise InputError(f"data row {i}: point {point!r} is not a point number", file=file, field="point",
                             expected="a whole number, at least 0")
        if cells["status"] not in STATUSES:
            raise InputError(f"data row {i}: unknown status {cells['status']!r}", file=file, field="status",
                             expected=" | ".join(STATUSES))
        for col in ("axes", "tool_version", "sweep_sha256", "kind"):
            if col in cells and col in first and cells[col] != first[col]:
                raise _cut(f"data row {i}'s {col} differs from row 1's", file, col,
                           f"one {col} in every row of one sweep")
        first = first or dict(cells)
    try:
        axes = json.loads(str(first["axes"]))
    except json.JSONDecodeError as exc:
        raise _cut(f"the axes cell is not JSON ({exc.msg})", file, "axes",
                   "the sweep's axes as JSON: {name: field}") from None
    if not isinstance(axes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in axes.items()):
        raise InputError("the axes cell is not a mapping of axis name to field", file=file, field="axes",
                         expected="the sweep's axes as JSON: {name: field}")
    for name in axes:
        if AXIS_PREFIX + name not in frame.columns:
            raise _cut(f"axis '{name}' has no column", file, AXIS_PREFIX + name, "a column per axis of the sweep")
    sha = first.get("sweep_sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64
                                and all(c in "0123456789abcdef" for c in sha)):
        raise _cut("the sweep_sha256 cell is not a sha256", file, "sweep_sha256", "64 hex digits")


def render(frame, source: str) -> str:
    """The sweep report as one HTML page."""
    axes: dict[str, str] = json.loads(str(frame["axes"].iloc[0])) if len(frame) else {}
    axes = {n: f for n, f in axes.items() if AXIS_PREFIX + n in frame.columns}
    kind = str(frame["kind"].iloc[0]) if len(frame) else "?"
    roles = _roles(axes)
    counts = frame["status"].value_counts().to_dict() if len(frame) else {}

    facts = H.Facts(kind=f"sweep of {kind}", source=source,
                    tool_version=str(frame["tool_version"].iloc[0]) if "tool_version" in frame.columns and len(frame) else None,
                    api_version=None,
                    inputs_sha256=str(frame["sweep_sha256"].iloc[0]) if "sweep_sha256" in frame.columns and len(frame) else None)
    facts.inputs.append(("points", len(frame)))
    for name, field in axes.items():
        vals = _values(frame, AXIS_PREFIX + name)
        facts.inputs.append((f"axis {name} ({field})", ", ".join(H.num(v) if isinstance(v, float) else str(v)
                                                                 for v in vals)))
    facts.assumptions = [
        "each point is one independent planner run on the base request with the axis values set",
        "where a plot varies one or two axes, the other axes are held at their first value (named in the caption)",
    ]
    if roles["rate"]:
        facts.assumptions.append("break-even rates are interpolated linearly between the two sampled rates "
                                 "around a sign change")
    if "fidelity" in frame.columns:
        for f in sorted({str(v) for v in frame["fidelity"].dropna().tolist() if str(v)}):
            from planner.report.fleet import fidelity_layer
            facts.fidelity.append(("cost, capacity of every point", fidelity_layer(f.split(",")[0]), f))
    if "solver.status" in frame.columns:
        st = frame["solver.status"].dropna().value_counts().to_dict()
        gaps = [g for g in (P.as_float(v) for v in frame.get("solver.gap", []).tolist()) if g is not None] \
            if "solver.gap" in frame.columns else []
        facts.solver = {"status": ", ".join(f"{k} at {v} point(s)" for k, v in sorted(st.items())) or "-",
                        "gap": max(gaps) if gaps else None}
        facts.solver_note = "gap: the largest over the feasible points"
    else:
        facts.solver_note = "this kind records no solver status per point"

    ok = frame[frame["status"] == "ok"]
    headline = [("points", H.num(len(frame))), ("ok", H.num(int(counts.get("ok", 0)))),
                ("infeasible", H.num(int(counts.get("infeasible", 0)))), ("error", H.num(int(counts.get("error", 0))))]
    if METRIC in frame.columns and len(ok):
        costs = [c for c in _metric(ok) if c == c]
        if costs:
            headline += [("cheapest point", H.num(min(costs), "$/h")), ("dearest point", H.num(max(costs), "$/h"))]
    sections = [("Summary", H.cards(headline))]

    rate = roles["rate"][0] if roles["rate"] else None
    names = list(axes)
    if METRIC not in frame.columns:
        sections.append(("Sensitivity", f'<p class="muted">no {METRIC} column in this table</p>'))
    elif rate:
        rest = [n for n in names if n != rate]
        series = next(iter(roles["slo"]), None) or next((n for n in rest if n not in roles["gpus"]), None)
        panel = next((n for n in roles["gpus"] if n != series), None) or \
            next((n for n in rest if n not in (series,)), None)
        svg, cap = _curves(frame, axes, rate, series, panel, "cost against rate", rate)
        sections.append(("Cost against rate", H.figure("sweep-cost-rate", svg, cap)))
        for slo in roles["slo"]:
            others = [n for n in names if n not in (slo, rate)]
            panel2 = next((n for n in others if n in roles["gpus"]), None) or next(iter(others), None)
            svg, cap = _curves(frame, axes, slo, rate, panel2, f"cost against {slo}", slo)
            sections.append((f"Cost against SLO ({slo})", H.figure(f"sweep-cost-{slo}", svg, cap)))
        others = [n for n in names if n != rate]
        svg, cap = _single_plot(frame, rate, others)
        rows = break_even(frame, rate, others)
        table = H.table(others + ["GPU A", "GPU B", "between rates", "break-even rate", "cheaper below",
                                  "cheaper above"],
                        [[r[o] for o in others] + [r["gpu_a"], r["gpu_b"],
                                                   f"{H.num(r['rate_low'])} - {H.num(r['rate_high'])}",
                                                   r["break_even_rate"], r["cheaper_below"], r["cheaper_above"]]
                         for r in rows]) if rows else \
            '<p class="muted">no sign change between single-GPU-type costs at the sampled rates</p>'
        sections.append(("Break-even rates between GPU types", H.figure("sweep-break-even", svg, cap) + table))
    else:
        for x in [n for n in names if _numeric(_values(frame, AXIS_PREFIX + n))][:3]:
            rest = [n for n in names if n != x]
            svg, cap = _curves(frame, axes, x, rest[0] if rest else None, rest[1] if len(rest) > 1 else None,
                               f"cost against {x}", x)
            sections.append((f"Cost against {x}", H.figure(f"sweep-cost-{x}", svg, cap)))
    bad = frame[frame["status"] != "ok"]
    if len(bad):
        sections.append(("Points without a plan", H.table(
            ["point"] + names + ["status", "message"],
            [[r["point"]] + [r[AXIS_PREFIX + n] for n in names] + [r["status"], r["message"]]
             for _, r in bad.head(100).iterrows()])))
    return H.page(f"Sweep of the {kind} planner: {len(frame)} points", f"sweep results · {source}", facts, sections)
