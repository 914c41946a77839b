"""Plot helpers: matplotlib (Agg backend) figures rendered to inline SVG strings.

Every helper takes plain lists (what the plan holds) and returns ``<svg ...>...</svg>`` text with
the XML prologue stripped, ready to sit inside the HTML page.  Text stays text (svg.fonttype
none) so reports are small and searchable; ids are salted deterministically so the same plan
gives byte-identical SVG.
"""
from __future__ import annotations

import io
import re
from typing import Any, Sequence

#: colours by role, shared by every report so a price class or group type reads the same everywhere
PALETTE = ("#3b6fb6", "#e08a2e", "#4a9a5b", "#c24b4b", "#8266b5", "#8c6d4f", "#d36fb4", "#6f7782",
           "#b5b53a", "#3fb0c0")
PRICE_CLASS_COLOURS = {"reserved": "#3b6fb6", "on_demand": "#e08a2e", "spot": "#4a9a5b"}
GROUP_TYPE_COLOURS = {"ulysses": "#3b6fb6", "ring": "#e08a2e", "hybrid": "#8266b5", "single": "#6f7782"}

_plt = None


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported once, lazily: the CLI stays fast)."""
    global _plt
    if _plt is None:
        import matplotlib
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
        matplotlib.rcParams.update({
            "svg.fonttype": "none", "svg.hashsalt": "planner-report", "font.size": 9,
            "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
            "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8, "figure.dpi": 100,
            "font.family": "DejaVu Sans", "path.simplify": True})
        _plt = plt
    return _plt


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def figure(width_in: float = 9.0, height_in: float = 3.6, ncols: int = 1, nrows: int = 1, **kw):
    """A new figure and its axes (a flat list)."""
    plt = pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width_in, height_in), squeeze=False, **kw)
    return fig, [ax for row in axes for ax in row]


def to_svg(fig) -> str:
    """The figure as an ``<svg>`` element (prologue stripped), then closed to free memory."""
    plt = pyplot()
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    start = text.find("<svg")
    text = text[start:]
    # matplotlib's comment lines carry no information the page needs
    return re.sub(r"<!--.*?-->", "", text, flags=re.S).strip()


def empty_note(ax, text: str) -> None:
    """Say on the axes why nothing is drawn (never an empty box)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#5b6475")
    ax.set_xticks([])
    ax.set_yticks([])


def short(label: str, n: int = 28) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def barh(ax, labels: Sequence[str], values: Sequence[float], colours: Sequence[str] | None = None,
         xlabel: str = "", annotate_fmt: str = "{:.3g}") -> None:
    """Horizontal bars, first label on top, each bar annotated with its value."""
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=colours or [colour(0)] * len(values))
    ax.set_yticks(y, [short(str(l), 34) for l in labels])
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", alpha=0)
    vmax = max([abs(v) for v in values] + [1e-12])
    for yi, v in zip(y, values):
        ax.text(v + 0.01 * vmax, yi, annotate_fmt.format(v), va="center", fontsize=8)
    ax.set_xlim(0, vmax * 1.18)


def heatmap(ax, matrix: Sequence[Sequence[float]], row_labels: Sequence[str],
            col_labels: Sequence[str], cbar_label: str, *, cmap: str = "Blues",
            annotate: bool = True, vmin: float | None = None, vmax: float | None = None,
            fig=None, fmt: str = "{:.2f}") -> None:
    """A labelled heatmap with a colour bar; NaN cells stay blank (not routed / not given)."""
    import numpy as np
    arr = np.asarray(matrix, dtype=float)
    im = ax.imshow(arr, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.grid(False)
    if len(col_labels) <= 40:
        ax.set_xticks(range(len(col_labels)), [short(str(c), 22) for c in col_labels],
                      rotation=30, ha="right")
    if len(row_labels) <= 60:
        ax.set_yticks(range(len(row_labels)), [short(str(r), 34) for r in row_labels])
    if annotate and arr.size <= 400:
        finite = arr[np.isfinite(arr)]
        top = float(finite.max()) if finite.size else 1.0
        for (i, j), v in np.ndenumerate(arr):
            if np.isfinite(v) and v != 0:
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                        color="white" if (cmap in ("Blues", "magma_r") and v > 0.6 * top) else "#1d2330")
    if fig is not None:
        cb = fig.colorbar(im, ax=ax, fraction=0.035, pad=0.02)
        cb.set_label(cbar_label)


def legend_below(ax, ncol: int = 4, offset: float = -0.18) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, offset), ncol=ncol,
                  frameon=False)


def as_float(v: Any) -> float | None:
    """A number from plan data, or None (absent, null, or not numeric)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None
