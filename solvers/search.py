"""Enumeration and pruning of discrete plan spaces, with a reason for every pruned point.

Generic: a space is a dict of named axes (each an iterable of values); rules are named
predicates returning ``None`` (keep) or a reason string (prune).  :func:`enumerate_space`
walks the Cartesian product in a deterministic order and applies the rules in order (the first
rule that fires is the recorded reason).  :func:`best_first` evaluates candidates in descending
order of an optimistic bound and skips those whose bound cannot beat the ``keep``-th best score
found so far (branch and bound over a flat list); the skipped ones are recorded as pruned by
"bound".  Nothing here knows what the axes mean.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

Rule = tuple[str, Callable[[dict], "str | None"]]


@dataclass(frozen=True)
class Pruned:
    """A candidate that was not evaluated (or failed evaluation), the rule and the reason."""

    candidate: dict
    rule: str
    reason: str


@dataclass
class SearchLog:
    """What a search did: candidates generated, evaluated, pruned (with reasons)."""

    generated: int = 0
    evaluated: int = 0
    pruned: list[Pruned] = field(default_factory=list)

    def prune(self, candidate: dict, rule: str, reason: str) -> None:
        self.pruned.append(Pruned(dict(candidate), rule, reason))

    def counts_by_rule(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.pruned:
            out[p.rule] = out.get(p.rule, 0) + 1
        return dict(sorted(out.items()))

    def merge(self, other: "SearchLog") -> None:
        self.generated += other.generated
        self.evaluated += other.evaluated
        self.pruned.extend(other.pruned)


def enumerate_space(axes: Mapping[str, Iterable[Any]], rules: Sequence[Rule] = (), *,
                    log: SearchLog | None = None) -> list[dict]:
    """Candidates of the Cartesian product of ``axes`` that pass every rule, in axis order.

    Pruned candidates go to ``log`` with the first rule that fired.
    """
    names = list(axes)
    values = [list(v) for v in axes.values()]
    kept: list[dict] = []
    for combo in itertools.product(*values):
        cand = dict(zip(names, combo))
        if log is not None:
            log.generated += 1
        reason = None
        for rule, check in rules:
            reason = check(cand)
            if reason:
                if log is not None:
                    log.prune(cand, rule, reason)
                break
        if not reason:
            kept.append(cand)
    return kept


def best_first(candidates: Sequence[dict], bound: Callable[[dict], float],
               evaluate: Callable[[dict], "tuple[float, Any] | None"], *, keep: int = 1,
               log: SearchLog | None = None, label: Callable[[dict], str] | None = None
               ) -> list[tuple[float, int, dict, Any]]:
    """Evaluate candidates in descending ``bound`` order; skip those that cannot enter the top ``keep``.

    ``bound(c)`` must be an upper bound on the score ``evaluate(c)`` returns (higher is better);
    ``evaluate`` returns ``(score, payload)`` or ``None`` (infeasible; it should log why itself).
    Returns ``(score, index, candidate, payload)`` best first; ties keep the input order.
    """
    order = sorted(range(len(candidates)), key=lambda i: (-bound(candidates[i]), i))
    found: list[tuple[float, int, dict, Any]] = []
    for i in order:
        cand = candidates[i]
        b = bound(cand)
        if len(found) >= keep:
            kth = sorted(found, key=lambda x: (-x[0], x[1]))[keep - 1][0]
            if b < kth:
                if log is not None:
                    log.prune(cand, "bound", f"optimistic score {b:.4g} below the top-{keep} score {kth:.4g}")
                continue
        res = evaluate(cand)
        if log is not None:
            log.evaluated += 1
        if res is None:
            continue
        found.append((res[0], i, cand, res[1]))
    return sorted(found, key=lambda x: (-x[0], x[1]))


def bisect_max(feasible: Callable[[float], bool], lo: float, hi: float, *, rel_tol: float = 0.02,
               max_steps: int = 40) -> tuple[float, int]:
    """Largest x in [lo, hi] with ``feasible(x)`` for a predicate that holds below a threshold.

    Geometric bisection (``lo`` > 0) until hi / lo <= 1 + rel_tol.  Returns ``(x, calls)``;
    x is 0.0 when even ``lo`` is infeasible, ``hi`` when ``hi`` is feasible.
    """
    calls = 1
    if feasible(hi):
        return hi, calls
    calls += 1
    if not feasible(lo):
        return 0.0, calls
    steps = 0
    while hi / lo > 1.0 + rel_tol and steps < max_steps:
        mid = (lo * hi) ** 0.5
        calls += 1
        steps += 1
        if feasible(mid):
            lo = mid
        else:
            hi = mid
    return lo, calls


__all__ = ["Rule", "Pruned", "SearchLog", "enumerate_space", "best_first", "bisect_max"]
