"""The one HTML page every report shares: a header, a facts panel, sections of plots and tables.

Self-contained on purpose: CSS inline, plots inline as SVG, no scripts, no external URLs, so a
report opens offline and can be mailed or archived as one file.  Output is deterministic (no
timestamps): the same plan gives the same bytes.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

NOT_IN_PLAN = "not recorded in the plan"

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9;line-height:1.4}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
header{background:#1d2f4f;color:#fff;padding:18px 24px}
header h1{margin:0;font-size:22px;max-width:1180px;margin:0 auto}
header p{margin:4px auto 0;max-width:1180px;opacity:.85;font-size:13px}
h2{font-size:18px;border-bottom:2px solid #d6dbe4;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #d6dbe4;border-radius:6px;padding:8px 14px;min-width:130px}
.card .v{font-size:20px;font-weight:600}.card .k{font-size:12px;color:#5b6475}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0 12px}
th,td{border:1px solid #d6dbe4;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure.plot{background:#fff;border:1px solid #d6dbe4;border-radius:6px;margin:10px 0 16px;padding:8px}
figure.plot svg{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:12px;color:#5b6475;margin-top:4px}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:12px}
.facts section{background:#fff;border:1px solid #d6dbe4;border-radius:6px;padding:8px 12px}
.facts h3{margin-top:0}.facts td{overflow-wrap:anywhere}.facts ul{margin:4px 0;padding-left:18px;font-size:13px}
pre{background:#fff;border:1px solid #d6dbe4;padding:8px;white-space:pre-wrap;word-break:break-all;font-size:12px}
.status-optimal{color:#1a7f37;font-weight:600}.status-other{color:#9a6700;font-weight:600}
.muted{color:#5b6475;font-size:12px}
"""


def esc(value: Any) -> str:
    """HTML-escaped text of ``value``."""
    return html.escape("" if value is None else str(value), quote=True)


def num(value: Any, unit: str = "", digits: int = 4) -> str:
    """A number with ``digits`` significant digits and a unit; '-' when absent."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        text = f"{value:,}"
    elif isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0 and (abs(value) >= 1e7 or abs(value) < 1e-3):
            text = f"{value:.{digits - 1}e}"
        else:
            text = f"{value:,.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    else:
        return esc(value)
    return f"{text} {unit}".strip()


def pct(fraction: Any, digits: int = 3) -> str:
    """A fraction shown as a percentage ('-' when absent)."""
    if fraction is None or isinstance(fraction, str):
        return "-"
    return f"{100 * float(fraction):.{digits}g}%"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "") -> str:
    """An HTML table; numbers right-aligned.  Cells are escaped unless wrapped in :class:`Raw`."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for v in row:
            if isinstance(v, Raw):
                cells.append(f"<td>{v.html}</td>")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                cells.append(f'<td class="num">{num(v)}</td>')
            else:
                cells.append(f"<td>{esc(v) if v is not None else '-'}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    klass = f' class="{esc(cls)}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


@dataclass(frozen=True)
class Raw:
    """Trusted HTML (already escaped) to put into a table cell or section as is."""

    html: str


def cards(items: Iterable[tuple[str, str]]) -> str:
    """Headline numbers as cards: (label, formatted value)."""
    out = "".join(f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
                  for k, v in items)
    return f'<div class="cards">{out}</div>'


def figure(plot_id: str, svg: str, caption: str) -> str:
    """One plot: ``<figure class="plot" data-plot=ID>`` with the inline SVG and a caption."""
    return (f'<figure class="plot" id="plot-{esc(plot_id)}" data-plot="{esc(plot_id)}">{svg}'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def bullets(items: Iterable[Any]) -> str:
    lis = "".join(f"<li>{esc(i)}</li>" for i in items)
    return f"<ul>{lis}</ul>" if lis else f'<p class="muted">{NOT_IN_PLAN}</p>'


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


@dataclass
class Facts:
    """What every report states: inputs, assumptions, fidelity of each number, solver, version.

    ``fidelity`` rows are (quantity, layer, source); ``solver`` is the plan's solver dict (or
    None when the plan records none, which the report then says)."""

    kind: str
    source: str
    tool_version: str | None
    api_version: str | None
    inputs_sha256: str | None
    inputs: list[tuple[str, Any]] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    fidelity: list[tuple[str, str, str]] = field(default_factory=list)
    solver: dict[str, Any] | None = None
    solver_note: str | None = None


def solver_html(solver: dict[str, Any] | None, note: str | None = None) -> str:
    """Solver status, objective, bound, gap and time as a small table (honest about absence)."""
    if not solver:
        return f'<p class="muted">{esc(note or "no solver facts " + NOT_IN_PLAN)}</p>'
    status = str(solver.get("status", "-"))
    klass = "status-optimal" if status == "optimal" else "status-other"
    rows = [("status", Raw(f'<span class="{klass}">{esc(status)}</span>'))]
    for key in ("method", "backend", "objective", "objective_s", "bound", "lower_bound_s", "gap",
                "time_s", "time_limit_s"):
        if key in solver:
            v = solver[key]
            rows.append((key, pct(v) if key == "gap" and v is not None else
                         (v if v is not None else "-")))
    if "gap" not in solver:
        rows.append(("gap", NOT_IN_PLAN))
    out = table(["solver", "value"], rows)
    if note:
        out += f'<p class="muted">{esc(note)}</p>'
    return out


def facts_html(f: Facts) -> str:
    inputs = table(["input", "value"], [(k, v) for k, v in f.inputs]) if f.inputs else \
        f'<p class="muted">{NOT_IN_PLAN}</p>'
    fid = table(["numbers", "fidelity layer", "source"], f.fidelity) if f.fidelity else \
        f'<p class="muted">fidelity {NOT_IN_PLAN}</p>'
    version = table(["field", "value"], [
        ("kind", f.kind), ("apiVersion", f.api_version or "-"),
        ("tool version", f.tool_version or NOT_IN_PLAN),
        ("inputs sha256", f.inputs_sha256 or NOT_IN_PLAN), ("plan file", f.source)])
    return ('<div class="facts">'
            f'<section id="facts-inputs"><h3>Inputs</h3>{inputs}</section>'
            f'<section id="facts-assumptions"><h3>Assumptions</h3>{bullets(f.assumptions)}</section>'
            f'<section id="facts-fidelity"><h3>Fidelity of the numbers</h3>{fid}</section>'
            f'<section id="facts-solver"><h3>Solver</h3>{solver_html(f.solver, f.solver_note)}</section>'
            f'<section id="facts-version"><h3>Tool and plan</h3>{version}</section>'
            "</div>")


def page(title: str, subtitle: str, facts: Facts, sections: Iterable[tuple[str, str]]) -> str:
    """The whole report: header, headline sections, then the facts panel last-but-visible.

    ``sections`` are (heading, inner HTML) pairs in reading order."""
    body = "".join(f'<section class="report-section"><h2>{esc(h)}</h2>{inner}</section>'
                   for h, inner in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><main>"
            f'<section class="report-section"><h2>What this report rests on</h2>{facts_html(facts)}</section>'
            f"{body}</main></body></html>\n")


def base_facts(plan: dict[str, Any], source: str) -> Facts:
    """The envelope's facts (kind, apiVersion, tool version, inputs' hash) of a plan."""
    meta = plan.get("metadata") or {}
    return Facts(kind=str(plan.get("kind")), source=source, tool_version=meta.get("tool_version"),
                 api_version=plan.get("apiVersion"), inputs_sha256=meta.get("inputs_sha256"))
