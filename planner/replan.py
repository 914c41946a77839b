"""Stable re-planning: a new fleet plan that moves as few GPUs as its cost allowance permits.

AIBrix re-plans from a live request window every few seconds and its users report plans that
flap on steady load and SLOs that break when one pool shrinks before another has grown.  Here
a re-plan reads the plan in place (a ``FleetPlan``), finds the cheapest fleet for the new load
as usual, then, among all fleets costing at most ``(1 + keep_within)`` times that, the one
nearest to the plan in place (:func:`solvers.binpack.closest_cover`: fewest GPUs added plus
removed).  The plan says what moves and in which order: grow first, switch the routing, then
shrink, with the cost of the overlap.

Pure functions over the fleet planner's objects (``options`` with ``group_id`` and ``gpus``);
:func:`planner.fleet.plan_from_problem` calls them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from hardware.errors import InputError
from solvers.binpack import PRICE_CLASSES, CoverProblem

#: share of the cheapest plan's cost a re-plan may add to keep pools in place, by default
DEFAULT_KEEP_WITHIN = 0.02


def check_keep_within(value: float, field: str = "--keep-within") -> float:
    """``value`` if it is a share in [0, 1), else an :class:`InputError`."""
    if not (0.0 <= value < 1.0):
        raise InputError(f"keep-within {value:g}", field=field,
                         expected="a share of the cheapest plan's cost in [0, 1), e.g. 0.02")
    return float(value)


def previous_counts(previous: dict[str, Any], problem: CoverProblem, keep: list[int],
                    options: list, file: str | None = None
                    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[dict[str, Any]]]:
    """The counts of the plan in place over ``problem``'s options (``keep[c]`` indexes
    ``options``), and its pools that no longer exist (model, GPU type or shape gone).

    A pool's per-period counts are used when the plan has as many periods as ``problem``;
    otherwise its peak count stands for every period.

    Returns ``((reserved [J], on_demand [J, T], spot [J, T]), retired)``; ``retired``: one
    entry per vanished pool (``pool``, ``count``, ``gpus`` averaged over its periods,
    ``cost_per_hour``)."""
    D, J, T = problem.shape
    where = {options[j].group_id: c for c, j in enumerate(keep)}
    counts = {cls: np.zeros((J, T), dtype=int) for cls in PRICE_CLASSES}
    retired = []
    pools = previous.get("pools")
    if not isinstance(pools, list):
        raise InputError("the previous plan has no pools list", file=file, field="pools",
                         expected="a FleetPlan written by planner fleet")
    for i, p in enumerate(pools):
        try:
            group, cls, count = str(p["group"]), str(p["price_class"]), int(p["count"])
            # one role of a disaggregated bundle: the option's count is in whole bundles
            per_unit = count // max(int(p["bundles"]), 1) if "bundles" in p else 1
        except (KeyError, TypeError, ValueError):
            raise InputError(f"pool {i} lacks group, price_class or an integer count",
                             file=file, field=f"pools[{i}]",
                             expected="a FleetPlan pool (group, price_class, count)") from None
        if cls not in PRICE_CLASSES or count < 0:
            raise InputError(f"pool {i}: price class {cls!r}, count {count}", file=file,
                             field=f"pools[{i}]",
                             expected=f"price_class in {list(PRICE_CLASSES)}, count >= 0")
        by_period = p.get("counts_by_period")
        series = (np.array(by_period, dtype=int) if isinstance(by_period, list)
                  and len(by_period) == T else np.full(T, count))
        col = where.get(group)
        if col is None:
            per_replica = float(p.get("gpus_per_replica") or 0)
            retired.append({"pool": str(p.get("id", f"{group}/{cls}")), "count": count,
                            "gpus": float(series.mean()) * per_replica,
                            "cost_per_hour": float(p.get("cost_per_hour") or 0.0),
                            # what emit needs to find the pool's workload (multi-node or not)
                            "gpu": str(p.get("gpu", "")), "gpus_per_replica": int(per_replica)})
            continue
        counts[cls][col] = series // max(per_unit, 1)  # both roles of a bundle agree
    reserved = counts["reserved"].max(axis=1)
    return (reserved, counts["on_demand"], counts["spot"]), retired


def transition(problem: CoverProblem, names: list[str], before: tuple, after: tuple,
               retired: list[dict[str, Any]], period: int = 0,
               roles: list[tuple] | None = None) -> dict[str, Any]:
    """How to move from ``before`` to ``after`` counts in ``period`` without breaking SLOs:
    every pool that grows (or is new) first, then the routing switch, then every pool that
    shrinks (or goes); ``cost_per_hour_during_switch`` is the $/h while both are up (each pool
    at the larger of its two counts).  ``names[c]``: pool group of option ``c``; ``roles[c]``:
    its disaggregated roles (``(role, tp, pp, instances)``, empty for a plain replica), each a
    pool of its own (as the plan lists them)."""
    grow, shrink = [], []
    overlap = sum(r["cost_per_hour"] for r in retired)
    for c, opt in enumerate(problem.options):
        for k, cls in enumerate(PRICE_CLASSES):
            a = int(before[k][c] if k == 0 else before[k][c, period])
            b = int(after[k][c] if k == 0 else after[k][c, period])
            overlap += max(a, b) * opt.prices.get(cls, 0.0)
            bundle = roles[c] if roles else ()
            parts = ([(f"{names[c]}/{role}/{cls}", n) for role, _, _, n in bundle]
                     or [(f"{names[c]}/{cls}", 1)])
            for pool, n in parts:
                step = {"pool": pool, "from": a * n, "to": b * n}
                if b > a:
                    grow.append(step)
                elif b < a:
                    shrink.append(step)
    shrink += [{"pool": r["pool"], "from": r["count"], "to": 0} for r in retired]
    return {"period": period, "grow_first": grow,
            "then": "switch the routing table to this plan's",
            "shrink_after": shrink, "cost_per_hour_during_switch": float(overlap)}
