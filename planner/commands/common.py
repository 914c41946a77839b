"""Small helpers shared by the command modules: output of JSON / tables, writing plan files,
checking numeric options."""
from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Any, Iterable

import typer

from hardware.errors import InputError
from planner.plan import dump_plan, to_json


def console():
    """The rich console (imported lazily: --json runs never need rich).  Pipes get a wide
    table (rich would fold at 80 columns); terminals keep their own width."""
    from rich.console import Console
    return Console(width=None if sys.stdout.isatty() else 160)


def working(message: str):
    """A spinner with ``message`` on stderr while a long step runs (a solve with a time limit
    of tens of seconds), where stderr is a terminal; pipes, files and tests get nothing.  It
    is transient: stdout, and with it ``--json``, is untouched."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    from rich.console import Console
    return Console(stderr=True).status(message)


def echo_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (nothing else goes to stdout with --json)."""
    typer.echo(to_json(obj), nl=False)


def print_table(title: str, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    from rich.table import Table
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*[fmt(v) for v in r])
    console().print(table)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-3:
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v)


def write_output(plan: Any, output: Path | None, inputs: Iterable[Path | str | None] = ()) -> None:
    """Write a plan file atomically when ``-o`` was given, refusing to overwrite an input."""
    if output is not None:
        dump_plan(plan, output, protect=[p for p in inputs if p is not None])
        typer.echo(f"wrote {output}", err=True)


def require_finite(**options: float | None) -> None:
    """Refuse NaN and infinite values of numeric options (typer parses ``nan`` and ``inf`` as
    floats, and every later ``x <= 0`` check lets NaN through).  Keyword names are the options'
    names with ``_`` for ``-`` (``time_limit`` -> ``--time-limit``); None means not given."""
    for name, value in options.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is not None and not math.isfinite(v):
                flag = "--" + name.replace("_", "-")
                raise InputError(f"{flag} {v}", field=flag, expected="a finite number")
