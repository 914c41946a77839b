"""Price sensitivity of a cover: the price at which a group of options (a GPU type) enters or
leaves the cheapest cover.

Scale every price of group ``g``'s options by a factor ``f``.  Each cover ``k`` then costs
``A_k + B_k f`` ($/h; ``B_k`` = what it spends on ``g`` at today's prices), so the optimum
``c(f) = min(C_without, min_k A_k + B_k f)`` is concave and piecewise linear in ``f``, where
``C_without`` is the optimum without ``g``.  The break-even factor is where the covers that use
``g`` stop (or start) beating ``C_without``: found by Newton's method on that envelope, one MILP
per step, exact when every MILP on the way is proven optimal.  From a cover ``k`` that uses
``g`` the next factor is ``f' = (C_without - A_k) / B_k``, where ``k`` ties; the MILP at ``f'``
either finds nothing cheaper than ``C_without`` (``f'`` is the answer) or a new cover that
moves ``f'`` on.  Finitely many covers, so finitely many steps.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from solvers.binpack import (CoverInfeasible, CoverOption, CoverProblem, CoverSolution,
                             quota_groups, quota_usage)

#: relative tolerance on costs when deciding that a cover ties the optimum without the group
TIE_RTOL = 1e-6


@dataclass(frozen=True)
class BreakEven:
    """Where group ``group`` enters or leaves the cheapest cover.

    Attributes:
        group: the option group (GPU type).
        used: whether the reference cover uses it.
        factor: price multiplier (on all its price classes) at which it leaves the cover (used:
            above this factor it is no longer worth it) or enters it (unused: at or below this
            factor some cheapest cover uses it); ``None`` when there is none (``reason`` says
            why).
        exact: every MILP on the way was proven optimal (else ``factor`` is an estimate).
        solves: MILPs run.
        reason: why ``factor`` is ``None`` (or a note), else ``""``.
    """

    group: str
    used: bool
    factor: float | None
    exact: bool
    solves: int
    reason: str = ""


def _group_prices(option: CoverOption, group: str) -> dict[str, float]:
    """What one instance of ``option`` pays for ``group``'s part, per price class."""
    if option.parts:
        return {c: p for g, _, prices in option.parts if g == group for c, p in prices.items()}
    return dict(option.prices) if option.group == group else {}


def _scaled_option(option: CoverOption, group: str, factor: float) -> CoverOption:
    if not option.parts:
        if option.group != group:
            return option
        return replace(option, prices={c: p * factor for c, p in option.prices.items()})
    parts = tuple((g, u, {c: p * (factor if g == group else 1.0) for c, p in prices.items()})
                  for g, u, prices in option.parts)
    prices = {c: sum(pr[c] for _, _, pr in parts) for c in option.prices}
    return replace(option, prices=prices, parts=parts)


def scaled(problem: CoverProblem, group: str, factor: float) -> CoverProblem:
    """``problem`` with every price of ``group``'s options (and of ``group``'s part of options
    spanning several groups) multiplied by ``factor``."""
    return replace(problem, options=[_scaled_option(o, group, factor) for o in problem.options])


def without(problem: CoverProblem, group: str) -> CoverProblem | None:
    """``problem`` without the options that draw on ``group`` (``None`` when nothing would be
    left)."""
    cols = [j for j, o in enumerate(problem.options) if group not in quota_usage(o)]
    if not cols:
        return None
    return replace(problem, options=[problem.options[j] for j in cols],
                   capacity=problem.capacity[:, cols])


def group_spend(problem: CoverProblem, sol: CoverSolution, group: str) -> float:
    """$/h ``sol`` spends on ``group``'s options at ``problem``'s prices."""
    w = problem.period_weights
    total = 0.0
    for j, o in enumerate(problem.options):
        prices = _group_prices(o, group)
        if not prices:
            continue
        total += sol.reserved[j] * prices.get("reserved", 0.0)
        total += float(sol.on_demand[j] @ w) * prices.get("on_demand", 0.0)
        total += float(sol.spot[j] @ w) * prices.get("spot", 0.0)
    return total


Solve = Callable[[CoverProblem], CoverSolution]


def price_break_even(problem: CoverProblem, group: str, reference: CoverSolution, solve: Solve,
                     *, max_steps: int = 12) -> BreakEven:
    """The break-even price factor of ``group`` (see the module docstring).

    Args:
        problem: the cover problem at today's prices.
        reference: its cheapest cover found (``problem``'s own solution).
        solve: the solver to use on modified problems (e.g. :func:`solvers.binpack.solve_cover`
            with the caller's limits); it may raise on infeasible problems.
        max_steps: Newton steps before giving up (the factor is then an estimate).
    """
    spend = group_spend(problem, reference, group)
    exact = reference.result.status == "optimal"
    solves = 0
    alone = without(problem, group)
    if alone is None or alone.unservable():
        if spend > 0:
            return BreakEven(group, True, None, exact, solves, "the load cannot be served without it")
        return BreakEven(group, False, None, exact, solves, "nothing else is offered")
    if spend > 0:
        try:
            base = solve(alone)
        except CoverInfeasible:  # infeasible without it (quotas): it never leaves
            return BreakEven(group, True, None, exact, solves + 1,
                             "the load does not fit the quotas without it")
        solves += 1
        exact &= base.result.status == "optimal"
        c_without = base.cost_per_hour
        rest, per_unit, factor = reference.cost_per_hour - spend, spend, 1.0
    else:
        c_without = reference.cost_per_hour
        free = solve(scaled(problem, group, 0.0))
        solves += 1
        exact &= free.result.status == "optimal"
        per_unit = group_spend(problem, free, group)
        if per_unit <= 0 or free.cost_per_hour >= c_without * (1 - TIE_RTOL):
            return BreakEven(group, False, None, exact, solves, "not worth using even at no cost")
        rest, factor = free.cost_per_hour, 0.0
    tol = TIE_RTOL * max(abs(c_without), 1e-9)
    for _ in range(max_steps):
        factor = (c_without - rest) / per_unit  # where the last cover found ties C_without
        sol = solve(scaled(problem, group, factor))
        solves += 1
        exact &= sol.result.status == "optimal"
        spent = group_spend(problem, sol, group)  # at today's prices: B_k
        if sol.cost_per_hour >= c_without - tol or spent <= 0:
            return BreakEven(group, spend > 0, float(factor), exact, solves)
        rest, per_unit = sol.cost_per_hour - spent * factor, spent
    return BreakEven(group, spend > 0, float(factor), False, solves,
                     f"stopped after {max_steps} steps")


def all_break_evens(problem: CoverProblem, reference: CoverSolution, solve: Solve
                    ) -> list[BreakEven]:
    """:func:`price_break_even` for every group, in sorted order."""
    return [price_break_even(problem, g, reference, solve)
            for g in quota_groups(problem)]
