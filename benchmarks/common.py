"""Helpers shared by the benchmark scripts (run on demand: ``python -m benchmarks.<name>``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """Where the shared data should be: $PLANNER_SHARED_DATA, else ../shared/data beside the
    repository (it may not exist)."""
    env = os.environ.get("PLANNER_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def shared_data_dir() -> Path:
    """:func:`shared_data_root`; exits with a message if it is absent."""
    path = shared_data_root()
    if not path.is_dir():
        sys.exit(f"shared data not found at {path}; set PLANNER_SHARED_DATA")
    return path


def print_table(rows: list[dict], title: str | None = None) -> None:
    """Print rows (dicts with the same keys) as an aligned text table."""
    if title:
        print(f"\n## {title}")
    if not rows:
        print("(no rows)")
        return
    cols = list(rows[0])
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")


def _fmt(v) -> str:
    # 4 significant digits, but cents from 100 up (4 digits cut $196.19/h to 196.2)
    if isinstance(v, float):
        if abs(v) >= 1e6:
            return f"{v:.3e}"
        return f"{v:.2f}" if abs(v) >= 100 else f"{v:.4g}"
    return "" if v is None else str(v)
