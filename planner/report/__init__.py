"""Capacity-planning reports: one self-contained HTML file per plan or sweep result.

``render_plan(plan, source)`` picks the renderer by the plan's ``kind``; ``render_sweep(table,
source)`` draws a sweep's sensitivity curves.  ``report_file(path)`` does either from a file
(a plan YAML/JSON, or a sweep's .csv / .parquet) and is what ``planner report`` calls.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from hardware.errors import InputError

#: plan kind -> module (in planner.report) with ``render(plan, source) -> str``
RENDERERS = {
    "FleetPlan": "fleet",
    "ParallelPlan": "parallel",
    "ExpertPlacement": "experts",
    "StepPlan": "seqpar",
    "SequencePlan": "seqpar",
}
#: file suffixes read as sweep results
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def render_plan(plan: dict[str, Any], source: str = "<plan>", plan_dir: Path | None = None, *,
                file: str | None = None) -> str:
    """HTML text of the report of one plan.  The kind and every section the report reads are
    checked first (:func:`planner.report.check.check_plan`): a truncated or edited plan is an
    InputError naming ``file`` (default ``source``) and the field, never a partial report.
    ``plan_dir`` is where the plan file lives: an ExpertPlacement's loads file is looked up there."""
    from planner.report.check import check_plan
    kind = plan.get("kind") if isinstance(plan, dict) else None
    if kind not in RENDERERS:
        raise InputError(f"no report for plan kind {kind!r}", file=file or source, field="kind",
                         expected=" or ".join(RENDERERS))
    check_plan(plan, file=file or source)
    module = importlib.import_module(f"planner.report.{RENDERERS[kind]}")
    if kind == "ExpertPlacement":
        return module.render(plan, source, plan_dir=plan_dir)
    return module.render(plan, source)


def render_sweep(table: Any, source: str = "<sweep>", *, file: str | None = None) -> str:
    """HTML text of the sensitivity report of a sweep's result table (a pandas DataFrame),
    checked first (:func:`planner.report.sweep.check_table`; errors name ``file``, default
    ``source``)."""
    from planner.report import sweep
    sweep.check_table(table, file=file or source)
    return sweep.render(table, source)


def report_file(path: str | Path) -> str:
    """Read a plan file or a sweep table and return the report's HTML text."""
    from planner.plan import load_plan
    path = Path(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        from planner.sweep import read_results
        return render_sweep(read_results(path), path.name, file=str(path))
    plan = load_plan(path, kinds=tuple(RENDERERS))
    return render_plan(plan, path.name, plan_dir=path.resolve().parent, file=str(path))
