"""Cost-aware covering: the cheapest multiset of server instances that covers demand rates.

Generic (knows nothing about LLMs).  *Options* are kinds of server instance (in the fleet
planner: one model on one GPU type in one TP/PP shape); *demands* are streams of work (one
request-size bucket of one model), each with a rate per period; ``capacity[d, j]`` is the rate
of demand ``d`` that ONE instance of option ``j`` sustains when it serves only ``d`` (0 means
"cannot serve").  Loads of different demands on one instance add linearly (the Mélange
assumption): an instance serving fractions ``x[d]`` of several demands is within its capacity
when ``sum_d x[d] * rate[d] / capacity[d, j] <= max_utilisation``.

Formulation (no symmetric variables: interchangeable instances are one integer count):

* ``R[j]`` integer: reserved instances, held over the whole horizon (price class "reserved");
* ``O[j, t]``, ``S[j, t]`` integer: on-demand and spot instances in period ``t``;
* routing ``x[d, j, t]``: continuous fraction of demand ``d`` in period ``t`` sent to ``j``
  (``slices=None``), or the integer number of ``d``'s ``k`` equal slices (``slices=k``: the
  aggregated form of Mélange's per-slice binaries, same optimum, no symmetry);
* covering: ``sum_j x[d, j, t] = 1``; capacity: ``sum_d x * rate / capacity <= u * (R + O + f S)``
  with ``f`` the spot capacity factor (expected share of spot capacity not lost to interruption);
* quotas: ``sum_{j in group} units_j (R_j + O_jt + S_jt) <= quota[group]`` in every period
  (an instance spanning several groups, e.g. a prefill/decode bundle on two GPU types, draws
  its units from each: :func:`quota_usage`);
* spot cap: ``sum_j units_j S_jt <= phi * N_t``, with ``N_t`` the quota units period ``t``'s
  load needs served the cheapest way (:meth:`CoverProblem.spot_units_allowed`).  The base is
  fixed by the demand: a share of the units provisioned paid for idle on-demand instances
  kept only to enlarge it (9-19% of the GPUs in the traces' reserved/spot plans), and a share
  of the units the routed load needs paid for slow instances given a trickle of traffic;
* objective: average $/h over the horizon: ``sum_j p_res R_j + sum_t w_t sum_j (p_od O + p_spot S)``,
  plus, where options carry a start cost ``c_j``, ``sum_jt c_j U_jt`` with ``U_jt >= (O + S)_jt
  - (O + S)_j,t-1`` the instances started at period ``t`` (the horizon repeats: period 0 follows
  the last), so that a plan does not flap a pool off and on for a short dip.

Solved with :func:`solvers.milp.solve_pulp` (HiGHS, CBC fallback) under a time limit; the
result carries the solver's real status, bound and gap.  Demands with proportional capacity
rows are merged first (:func:`merge_proportional`, exact for continuous routing).  Large
per-period models are solved by a decomposition instead (:func:`_solve_by_periods`): the LP
relaxation's value is the proven bound, lifted by a Lagrangian bound (quota, spot-cap and start
rows priced at the LP's duals, reserved counts split per period: one small MILP per model and
period, :mod:`solvers.lagrangian`); per-period MILPs given the LP's reserved counts (each
over its own LP's support plus the cheapest columns by reduced cost, on several processes when
asked) give the incumbent.  When the limit hits before any incumbent, a greedy cover is
returned (status "heuristic") with the solver's bound.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pulp

from solvers.budgets import solve_by_budgets
from solvers.milp import (SolveResult, heuristic_result, relative_gap, run_highs_arrays,
                          solve_pulp, solve_pulp_with_start)

#: price classes, in the order they are reported
PRICE_CLASSES = ("reserved", "on_demand", "spot")
_EPS = 1e-9


@dataclass(frozen=True)
class CoverOption:
    """One kind of server instance.

    Attributes:
        name: unique label (used in messages only).
        group: quota group it draws from (e.g. the GPU type).
        units: quota units one instance uses (e.g. GPUs per replica).
        prices: $/h of one instance per price class ("reserved", "on_demand", "spot");
            a class that is missing is not offered for this option.
        parts: for an instance spanning several quota groups, ``((group, units, prices),
            ...)`` per group (``units`` and ``prices`` above are their sums); empty: all of
            the instance is in ``group``.
        start_cost: what starting one instance costs, in objective units ($/h averaged over
            the horizon: the $ per start over the horizon's hours); 0: starts are free.
    """

    name: str
    group: str
    units: int
    prices: dict[str, float]
    parts: tuple = ()
    start_cost: float = 0.0


def quota_usage(option: CoverOption) -> dict[str, int]:
    """Quota units one instance of ``option`` draws, per group."""
    if option.parts:
        return {g: int(u) for g, u, _ in option.parts}
    return {option.group: int(option.units)}


def quota_groups(problem: "CoverProblem") -> list[str]:
    """Every quota group an option draws from, sorted."""
    return sorted({g for o in problem.options for g in quota_usage(o)})


def _group_units(problem: "CoverProblem") -> dict[str, np.ndarray]:
    """``[J]`` quota units one instance of each option draws, per group that has a quota."""
    usage = [quota_usage(o) for o in problem.options]
    return {g: np.array([float(u.get(g, 0)) for u in usage]) for g in problem.quotas}


def _fits_quotas(problem: "CoverProblem", group_units: dict[str, np.ndarray], counts: np.ndarray,
                 j: int, extra: np.ndarray) -> bool:
    """Whether ``extra`` (per period) more instances of option ``j`` fit every quota it draws
    on, on top of ``counts`` (``[J, periods]`` instances of every option, all classes)."""
    return not any(g in group_units
                   and np.any(group_units[g] @ counts + extra * u > problem.quotas[g] + 1e-9)
                   for g, u in quota_usage(problem.options[j]).items())


def _quota_bound(problem: "CoverProblem", j: int, big: float) -> float:
    """Largest count of option ``j`` its groups' quotas allow on their own (at most ``big``)."""
    ub = big
    for g, u in quota_usage(problem.options[j]).items():
        if g in problem.quotas:
            ub = min(ub, problem.quotas[g] // max(u, 1))
    return ub


@dataclass
class CoverProblem:
    """A covering instance.

    Attributes:
        options: the ``J`` instance kinds.
        capacity: ``[D, J]`` rate (any unit, e.g. req/s) one instance of ``j`` sustains on
            demand ``d`` alone; 0 = cannot serve.
        rates: ``[D, T]`` demand rate per period (same unit as ``capacity``).
        period_weights: ``[T]`` share of the horizon each period lasts (sums to 1).
        quotas: quota units available per group in every period (missing group = unlimited).
        spot_max_fraction: largest share, on spot, of the quota units a period's load needs
            when served the cheapest way (see :meth:`spot_units_allowed`; ``None`` = no cap).
        spot_capacity_factor: share of a spot instance's capacity counted on (interruptions).
        max_utilisation: load allowed per instance, as a share of its capacity (headroom).
        slices: ``None``: continuous routing; ``k``: each (demand, period) is cut into ``k``
            equal slices routed whole (Mélange's slice factor).
        max_instances: upper bound on any single count (keeps the MILP bounded).
        routing: "per_period" (each period routes its own way) or "shared" (one routing table
            for the whole horizon; counts still change per period: stable routing, and a
            ``T`` times smaller model).
        strong_links: add the linking cuts ``x <= N`` (see :func:`_add_links`); off by
            default: measured on the scale benchmark they barely lift the bound and slow the LP.
    """

    options: list[CoverOption]
    capacity: np.ndarray
    rates: np.ndarray
    period_weights: np.ndarray | None = None
    quotas: dict[str, int] = field(default_factory=dict)
    spot_max_fraction: float | None = None
    spot_capacity_factor: float = 1.0
    max_utilisation: float = 1.0
    slices: int | None = None
    max_instances: int = 100_000
    routing: str = "per_period"
    strong_links: bool = False

    def __post_init__(self) -> None:
        self.capacity = np.asarray(self.capacity, dtype=float)
        self.rates = np.asarray(self.rates, dtype=float)
        if self.rates.ndim == 1:
            self.rates = self.rates[:, None]
        d, j = self.capacity.shape
        if j != len(self.options) or self.rates.shape[0] != d:
            raise ValueError(f"capacity {self.capacity.shape} / rates {self.rates.shape} do not "
                             f"match {len(self.options)} options")
        t = self.rates.shape[1]
        if self.period_weights is None:
            self.period_weights = np.full(t, 1.0 / t)
        self.period_weights = np.asarray(self.period_weights, dtype=float)
        if self.period_weights.shape != (t,) or abs(self.period_weights.sum() - 1) > 1e-6:
            raise ValueError("period_weights must have one entry per period and sum to 1")
        if self.routing not in ("per_period", "shared"):
            raise ValueError("routing must be 'per_period' or 'shared'")
        if np.any(self.rates < 0) or np.any(self.capacity < 0):
            raise ValueError("rates and capacities must be non-negative")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(demands, options, periods)."""
        return self.capacity.shape[0], self.capacity.shape[1], self.rates.shape[1]

    def spot_units_allowed(self) -> np.ndarray:
        """``[T]`` most quota units on spot per period: ``spot_max_fraction`` times the units
        the period's load needs when every demand goes to its cheapest option per unit of rate
        (on-demand price where offered, else reserved, else spot) at ``max_utilisation``,
        rounded down (units are whole: the LP gets the tighter row).  Fixed by the demand, so
        no choice of the plan can enlarge it; infinite without a cap."""
        T = self.rates.shape[1]
        if self.spot_max_fraction is None:
            return np.full(T, np.inf)
        price = _reference_prices(self)
        units = np.array([float(o.units) for o in self.options])
        cap = self.capacity
        with np.errstate(divide="ignore"):
            per_rate = np.where(cap > 0, price[None, :] / np.where(cap > 0, cap, 1.0), np.inf)
        best = np.argmin(per_rate, axis=1)  # the cheapest option of each demand ($/h per rate)
        best_cap = cap[np.arange(cap.shape[0]), best]  # 0 only where nothing serves the demand
        units_per_rate = np.divide(units[best], best_cap, out=np.zeros_like(best_cap),
                                   where=best_cap > 0)
        needed = units_per_rate @ self.rates / float(self.max_utilisation)
        return np.floor(float(self.spot_max_fraction) * needed + 1e-9)

    def unservable(self) -> list[tuple[int, int]]:
        """(demand, period) pairs with positive rate that no option can serve."""
        can = (self.capacity > 0).any(axis=1)
        return [(int(d), int(t)) for d, t in zip(*np.nonzero(self.rates > 0)) if not can[d]]


@dataclass
class CoverSolution:
    """A cover: counts per option, price class and period, and the routing.

    Attributes:
        reserved: ``[J]`` reserved instances (whole horizon).
        on_demand: ``[J, T]`` on-demand instances per period.
        spot: ``[J, T]`` spot instances per period.
        routing: ``[D, J, T]`` fraction of each demand's rate sent to each option.
        load: ``[J, T]`` load per option in instance-equivalents (sum of rate / capacity).
        cost_per_hour: average $/h over the horizon (the objective).
        result: solver facts (status, objective, bound, gap, time).
        method: "milp" or "greedy".
    """

    reserved: np.ndarray
    on_demand: np.ndarray
    spot: np.ndarray
    routing: np.ndarray
    load: np.ndarray
    cost_per_hour: float
    result: SolveResult
    method: str

    def counts(self, t: int) -> np.ndarray:
        """``[J]`` instances of every class in period ``t``."""
        return self.reserved + self.on_demand[:, t] + self.spot[:, t]

    def period_cost_per_hour(self, problem: CoverProblem, t: int) -> float:
        """$/h paid during period ``t`` (reserved included)."""
        total = 0.0
        for j, opt in enumerate(problem.options):
            total += self.reserved[j] * opt.prices.get("reserved", 0.0)
            total += self.on_demand[j, t] * opt.prices.get("on_demand", 0.0)
            total += self.spot[j, t] * opt.prices.get("spot", 0.0)
        return total


def _classes(opt: CoverOption) -> dict[str, float]:
    return {c: float(p) for c, p in opt.prices.items() if c in PRICE_CLASSES and p is not None}


def _reference_prices(problem: "CoverProblem") -> np.ndarray:
    """``[J]`` each option's price to compare options by: on demand where offered, else
    reserved, else spot (inf: none)."""
    return np.array([c.get("on_demand", c.get("reserved", c.get("spot", math.inf)))
                     for c in (_classes(o) for o in problem.options)])


def starts_of(on_demand: np.ndarray, spot: np.ndarray) -> np.ndarray:
    """``[J, T]`` instances started at each period (the horizon repeats: period 0 follows the
    last; a single period starts nothing)."""
    n = np.asarray(on_demand) + np.asarray(spot)
    if n.shape[1] < 2:
        return np.zeros_like(n)
    return np.maximum(n - np.roll(n, 1, axis=1), 0)


def start_cost_of(problem: CoverProblem, on_demand: np.ndarray, spot: np.ndarray) -> float:
    """The start costs of given counts, in objective units."""
    costs = np.array([o.start_cost for o in problem.options])
    if not costs.any():
        return 0.0
    return float(costs @ starts_of(on_demand, spot).sum(axis=1))


def _starts_priced(problem: CoverProblem) -> bool:
    return problem.shape[2] > 1 and any(o.start_cost > 0 for o in problem.options)


def objective_of(problem: CoverProblem, reserved: np.ndarray, on_demand: np.ndarray,
                 spot: np.ndarray) -> float:
    """Average $/h over the horizon of given counts (start costs included)."""
    w = problem.period_weights
    total = start_cost_of(problem, on_demand, spot)
    for j, opt in enumerate(problem.options):
        p = _classes(opt)
        total += reserved[j] * p.get("reserved", 0.0)
        total += float(np.dot(on_demand[j], w)) * p.get("on_demand", 0.0)
        total += float(np.dot(spot[j], w)) * p.get("spot", 0.0)
    return total


def build_model(problem: CoverProblem, *, quota_slack_penalty: float | None = None,
                slack: dict | None = None, allowed: np.ndarray | None = None):
    """The PuLP model and its variables: ``(lp, R, O, S, X)`` with dicts keyed by index tuples.

    With ``quota_slack_penalty``, every quota row gets an integer slack (extra units) costing
    that much each; the slack variables are put in ``slack`` keyed by (group, period).
    ``allowed`` (``[D, J, T]`` bool, per-period routing only) keeps only those routing columns:
    a *restriction* of the problem (its solutions are feasible, its bounds are not bounds of
    the full problem).
    """
    D, J, T = problem.shape
    rates, cap = problem.rates, problem.capacity
    u = float(problem.max_utilisation)
    k = problem.slices
    fspot = float(problem.spot_capacity_factor)
    big = int(problem.max_instances)
    lp = pulp.LpProblem("cover", pulp.LpMinimize)
    classes = [_classes(o) for o in problem.options]
    multi = T > 1
    R: dict[int, pulp.LpVariable] = {}
    O: dict[tuple[int, int], pulp.LpVariable] = {}
    S: dict[tuple[int, int], pulp.LpVariable] = {}
    for j in range(J):
        quota_ub = big if quota_slack_penalty is not None else int(_quota_bound(problem, j, big))
        if "reserved" in classes[j] and (multi or "on_demand" not in classes[j]
                                         or classes[j]["reserved"] < classes[j]["on_demand"]):
            R[j] = pulp.LpVariable(f"R_{j}", 0, quota_ub, cat=pulp.LpInteger)
        for t in range(T):
            if "on_demand" in classes[j]:
                O[j, t] = pulp.LpVariable(f"O_{j}_{t}", 0, quota_ub, cat=pulp.LpInteger)
            if "spot" in classes[j] and (problem.spot_max_fraction is None
                                         or problem.spot_max_fraction > 0):
                S[j, t] = pulp.LpVariable(f"S_{j}_{t}", 0, quota_ub, cat=pulp.LpInteger)
    w = problem.period_weights
    obj = []
    for j, v in R.items():
        obj.append((v, classes[j]["reserved"]))
    for (j, t), v in O.items():
        obj.append((v, classes[j]["on_demand"] * w[t]))
    for (j, t), v in S.items():
        obj.append((v, classes[j]["spot"] * w[t]))
    X: dict[tuple[int, int, int], pulp.LpVariable] = {}
    load_terms: dict[tuple[int, int], list] = {}
    servable = cap > 0
    if problem.routing == "shared":
        # one routing table for all periods: x[d, j] serves every period's rate of d.  Demands
        # whose rates follow the same time profile (a fixed histogram times a rate curve) share
        # one aggregate load variable per option, so each capacity row has a few terms instead
        # of one per demand (exact; the LP gets much sparser).
        peak = rates.max(axis=1)
        profile_id: dict[bytes, int] = {}
        profiles: list[np.ndarray] = []
        demand_profile = np.full(D, -1)
        for d in np.nonzero(peak > 0)[0]:
            prof = np.round(rates[d] / peak[d], 9)
            key = prof.tobytes()
            if key not in profile_id:
                profile_id[key] = len(profiles)
                profiles.append(prof)
            demand_profile[d] = profile_id[key]
        aggregate = len(profiles) * 4 <= max(1, int((peak > 0).sum()))
        agg_terms: dict[tuple[int, int], list] = {}
        for d in np.nonzero(peak > 0)[0]:
            d = int(d)
            cover = []
            for j in np.nonzero(servable[d])[0]:
                j = int(j)
                if k is None:
                    v = pulp.LpVariable(f"x_{d}_{j}", 0, 1)
                else:
                    v = pulp.LpVariable(f"z_{d}_{j}", 0, k, cat=pulp.LpInteger)
                cover.append((v, 1.0))
                scale = 1 if k is None else k
                for t in range(T):
                    X[d, j, t] = v
                if aggregate:
                    agg_terms.setdefault((j, int(demand_profile[d])), []).append(
                        (v, peak[d] / (cap[d, j] * scale)))
                else:
                    for t in range(T):
                        if rates[d, t] > 0:
                            load_terms.setdefault((j, t), []).append(
                                (v, rates[d, t] / (cap[d, j] * scale)))
            lp += pulp.LpConstraint(pulp.LpAffineExpression(cover), pulp.LpConstraintEQ,
                                    f"cover_{d}", 1.0 if k is None else float(k))
        for (j, g), terms in sorted(agg_terms.items()):
            load = pulp.LpVariable(f"L_{j}_{g}", 0, None)
            lp += pulp.LpConstraint(pulp.LpAffineExpression(terms + [(load, -1.0)]),
                                    pulp.LpConstraintEQ, f"load_{j}_{g}", 0.0)
            for t in range(T):
                if profiles[g][t] > 0:
                    load_terms.setdefault((j, t), []).append((load, float(profiles[g][t])))
    for t in range(T if problem.routing != "shared" else 0):
        for d in np.nonzero(rates[:, t] > 0)[0]:
            d = int(d)
            cover = []
            cols = servable[d] if allowed is None else servable[d] & allowed[d, :, t]
            for j in np.nonzero(cols)[0]:
                j = int(j)
                if k is None:
                    v = pulp.LpVariable(f"x_{d}_{j}_{t}", 0, 1)
                    coef = rates[d, t] / cap[d, j]
                else:
                    v = pulp.LpVariable(f"z_{d}_{j}_{t}", 0, k, cat=pulp.LpInteger)
                    coef = rates[d, t] / (k * cap[d, j])
                X[d, j, t] = v
                cover.append((v, 1.0))
                load_terms.setdefault((j, t), []).append((v, coef))
            lp += pulp.LpConstraint(pulp.LpAffineExpression(cover), pulp.LpConstraintEQ,
                                    f"cover_{d}_{t}", 1.0 if k is None else float(k))
    for (j, t), terms in load_terms.items():
        supply = []
        if j in R:
            supply.append((R[j], -u))
        if (j, t) in O:
            supply.append((O[j, t], -u))
        if (j, t) in S:
            supply.append((S[j, t], -u * fspot))
        lp += pulp.LpConstraint(pulp.LpAffineExpression(terms + supply), pulp.LpConstraintLE,
                                f"cap_{j}_{t}", 0.0)
    if problem.strong_links:
        _add_links(problem, lp, R, O, S, X)
    groups = quota_groups(problem)
    usage = [quota_usage(o) for o in problem.options]
    spot_room = problem.spot_units_allowed()
    for t in range(T):
        spot_units = []
        for j, opt in enumerate(problem.options):
            if (j, t) in S:
                spot_units.append((S[j, t], float(opt.units)))
        for g in groups:
            terms = [(v, float(usage[j][g])) for j in range(J) if g in usage[j]
                     for v in (R.get(j), O.get((j, t)), S.get((j, t))) if v is not None]
            if g in problem.quotas and terms:
                if quota_slack_penalty is not None:
                    v = pulp.LpVariable(f"slack_{groups.index(g)}_{t}", 0, None, cat=pulp.LpInteger)
                    slack[g, t] = v
                    terms = terms + [(v, -1.0)]
                    obj.append((v, quota_slack_penalty))
                lp += pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintLE,
                                        f"quota_{groups.index(g)}_{t}", float(problem.quotas[g]))
        if problem.spot_max_fraction is not None and spot_units:
            lp += pulp.LpConstraint(pulp.LpAffineExpression(spot_units), pulp.LpConstraintLE,
                                    f"spotcap_{t}", float(spot_room[t]))
    if _starts_priced(problem):
        for j, opt in enumerate(problem.options):
            if opt.start_cost <= 0:
                continue
            for t in range(T):
                started = pulp.LpVariable(f"U_{j}_{t}", 0, None)
                now = [v for v in (O.get((j, t)), S.get((j, t))) if v is not None]
                before = [v for v in (O.get((j, t - 1 if t else T - 1)),
                                      S.get((j, t - 1 if t else T - 1))) if v is not None]
                lp += pulp.LpConstraint(pulp.LpAffineExpression(
                    [(started, 1.0)] + [(v, -1.0) for v in now] + [(v, 1.0) for v in before]),
                    pulp.LpConstraintGE, f"start_{j}_{t}", 0.0)
                obj.append((started, opt.start_cost))
    lp += pulp.LpAffineExpression(obj)
    return lp, R, O, S, X


def _count_terms(j: int, t: int, R, O, S) -> list:
    return [(v, 1.0) for v in (R.get(j), O.get((j, t)), S.get((j, t))) if v is not None]


def _add_links(problem: CoverProblem, lp: pulp.LpProblem, R, O, S, X) -> None:
    """Linking cuts of the strong facility-location form: a demand routed (even partly) to an
    option needs at least one instance of it, ``x[d, j, t] <= N[j, t]`` (``x`` a fraction <= 1,
    ``N`` the integer count).  Valid for every integer solution; they lift the LP bound where the
    relaxation spreads small loads over many options (each of which costs a whole replica).

    Shared routing: one ``M[j] <= N[j, t]`` per period and ``x[d, j] <= M[j]`` for demands with
    positive rate in every period; per-period routing: one row per routing column.
    """
    D, J, T = problem.shape
    k = problem.slices
    scale = 1.0 if k is None else float(k)
    rates = problem.rates
    if problem.routing == "shared":
        always = np.all(rates > 0, axis=1)
        by_option: dict[int, list] = {}
        for (d, j, t), v in X.items():
            if t == 0 and always[d]:
                by_option.setdefault(j, []).append(v)
        for j, xs in sorted(by_option.items()):
            m = pulp.LpVariable(f"M_{j}", 0, None)
            for t in range(T):
                lp += pulp.LpConstraint(pulp.LpAffineExpression([(m, 1.0)] + [
                    (v, -c) for v, c in _count_terms(j, t, R, O, S)]), pulp.LpConstraintLE,
                    f"link_{j}_{t}", 0.0)
            for i, v in enumerate(xs):
                lp += pulp.LpConstraint(pulp.LpAffineExpression([(v, 1.0 / scale), (m, -1.0)]),
                                        pulp.LpConstraintLE, f"linkx_{j}_{i}", 0.0)
        return
    for (d, j, t), v in X.items():
        lp += pulp.LpConstraint(pulp.LpAffineExpression([(v, 1.0 / scale)] + [
            (c, -1.0) for c, _ in _count_terms(j, t, R, O, S)]), pulp.LpConstraintLE,
            f"linkx_{d}_{j}_{t}", 0.0)


def _clean_routing(routing: np.ndarray) -> np.ndarray:
    """Routing fractions ``[D, J, T]`` rounded to 1e-9 and renormalised per demand and period:
    solver dust removed so that plans are reproducible byte for byte."""
    routing = np.round(routing, 9)
    sums = routing.sum(axis=1, keepdims=True)
    return np.where(sums > 0, routing / np.where(sums > 0, sums, 1.0), 0.0)


def _extract(problem: CoverProblem, R, O, S, X) -> tuple[np.ndarray, ...]:
    D, J, T = problem.shape
    reserved = np.zeros(J, dtype=int)
    on_demand = np.zeros((J, T), dtype=int)
    spot = np.zeros((J, T), dtype=int)
    routing = np.zeros((D, J, T))
    for j, v in R.items():
        reserved[j] = int(round(v.varValue or 0.0))
    for (j, t), v in O.items():
        on_demand[j, t] = int(round(v.varValue or 0.0))
    for (j, t), v in S.items():
        spot[j, t] = int(round(v.varValue or 0.0))
    scale = 1.0 if problem.slices is None else float(problem.slices)
    for (d, j, t), v in X.items():
        val = (v.varValue or 0.0) / scale
        if val > 1e-9:
            routing[d, j, t] = val
    routing = _clean_routing(routing)
    return reserved, on_demand, spot, routing


def load_of(problem: CoverProblem, routing: np.ndarray) -> np.ndarray:
    """``[J, T]`` load (instance-equivalents at full capacity) of a routing."""
    cap = problem.capacity
    inv = np.divide(1.0, cap, out=np.zeros_like(cap), where=cap > 0)
    return np.einsum("djt,dt,dj->jt", routing, problem.rates, inv)


def _best_reserved(counts: np.ndarray, w: np.ndarray, p_res: float, p_od: float) -> int:
    """Reserved level minimising p_res R + sum_t w_t p_od max(0, c_t - R)."""
    best, best_cost = 0, float(np.dot(w, counts)) * p_od
    for r in sorted(set(int(c) for c in counts)):
        cost = r * p_res + float(np.dot(w, np.maximum(counts - r, 0))) * p_od
        if cost < best_cost - 1e-12:
            best, best_cost = r, cost
    return best


def greedy_cover(problem: CoverProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """A quick feasible cover, or ``None`` when the greedy cannot respect the quotas.

    Each (demand, period), largest first, goes whole to the option with the lowest on-demand
    $ per unit of its rate that still has quota room (fractional accounting), then counts are
    rounded up; a reserved level is chosen per option from its count profile.
    """
    D, J, T = problem.shape
    cap, rates = problem.capacity, problem.rates
    u = problem.max_utilisation
    classes = [_classes(o) for o in problem.options]
    price = _reference_prices(problem)
    routing = np.zeros((D, J, T))
    on_demand = np.zeros((J, T), dtype=int)
    for t in range(T):
        used: dict[str, float] = {}
        load = np.zeros(J)
        for d in np.argsort(-rates[:, t], kind="stable"):
            r = rates[d, t]
            if r <= 0:
                continue
            cands = []
            for j in np.nonzero(cap[d] > 0)[0]:
                opt = problem.options[j]
                extra = r / (cap[d, j] * u)
                new_count = math.ceil(load[j] + extra - 1e-9)
                old_count = math.ceil(load[j] - 1e-9)
                if any(g in problem.quotas
                       and used.get(g, 0.0) + (new_count - old_count) * u > problem.quotas[g] + 1e-9
                       for g, u in quota_usage(opt).items()):
                    continue
                cands.append(((new_count - old_count) * price[j] + extra * price[j] * 1e-3, int(j), extra))
            if not cands:
                return None
            _, j, extra = min(cands)
            added = math.ceil(load[j] + extra - 1e-9) - math.ceil(load[j] - 1e-9)
            for g, u in quota_usage(problem.options[j]).items():
                used[g] = used.get(g, 0.0) + added * u
            load[j] += extra
            routing[d, j, t] = 1.0
        on_demand[:, t] = np.ceil(load - 1e-9).astype(int)
    reserved = np.zeros(J, dtype=int)
    spot = np.zeros((J, T), dtype=int)
    for j in range(J):
        c = classes[j]
        if "on_demand" not in c:  # only reserved (or spot) offered
            if "reserved" in c:
                reserved[j] = int(on_demand[j].max())
            else:
                spot[j] = on_demand[j]
            on_demand[j] = 0
            continue
        if "reserved" in c:
            r = _best_reserved(on_demand[j], problem.period_weights, c["reserved"], c["on_demand"])
            reserved[j] = r
            on_demand[j] = np.maximum(on_demand[j] - r, 0)
    return reserved, on_demand, spot, routing


def _honest(result: SolveResult, objective: float | None, bound: float | None, time_s: float,
            backend: str, time_limit_s: float | None) -> SolveResult:
    """Status and gap from an incumbent and a bound: "optimal" only when they meet."""
    gap = relative_gap(objective, bound)
    objective = None if objective is None else float(objective)
    bound = None if bound is None else float(bound)
    if objective is None:
        status = result.status
    elif gap is not None and gap <= 1e-6 + 1e-9:  # the cutoff proof leaves exactly 1e-6
        status, gap = "optimal", 0.0
    else:
        status = "feasible"
    return SolveResult(status, objective, bound, gap, time_s, backend, time_limit_s)


def _relaxed(lp: pulp.LpProblem, time_limit_s: float, backend: str, threads: int | None
             ) -> SolveResult:
    ints = [v for v in lp.variables() if v.cat == pulp.LpInteger]
    for v in ints:
        v.cat = pulp.LpContinuous
    try:
        return solve_pulp(lp, time_limit_s=max(0.5, time_limit_s), backend=backend,
                          threads=threads)
    finally:
        for v in ints:
            v.cat = pulp.LpInteger


def _lp_rounding(problem: CoverProblem, lp: pulp.LpProblem, R, O, S, X, time_limit_s: float,
                 backend: str, threads: int | None):
    """Primal heuristic guided by the LP relaxation (an "LP dive").

    1. Solve the LP relaxation (its value is a valid lower bound).
    2. Repeatedly drop options whose LP instance count stays below ``0.5`` in every period
       (each would cost a whole rounded-up instance) and re-solve the LP, a few rounds.
    3. Fix the last LP's routing and choose integer counts (reserved / on-demand / spot,
       quotas, spot cap) for its loads with a small MILP.  When rounding up breaks a quota
       the LP filled, the quotas are tightened by room for one replica per price class of
       every option in use, the LP re-solved and the rounding repeated.

    Returns ``(lp_bound, arrays or None)``; the model's bounds are restored afterwards.
    """
    start = time.perf_counter()
    relax = _relaxed(lp, time_limit_s, backend, threads)
    if relax.status != "optimal":
        return None, None
    lp_bound = relax.objective
    J, T = problem.shape[1], problem.shape[2]
    saved = {id(v): (v, v.lowBound, v.upBound) for v in lp.variables()}
    per_option: dict[int, list] = {j: [] for j in range(J)}
    for j, v in R.items():
        per_option[j].append(v)
    for (j, _t), v in list(O.items()) + list(S.items()):
        per_option[j].append(v)
    for (_d, j, _t), v in X.items():
        per_option[j].append(v)
    arrays = None
    try:
        dropped: set[int] = set()
        for _round in range(4):
            if time_limit_s - (time.perf_counter() - start) < 2.0:
                break
            count = np.zeros((J, T))
            for j, v in R.items():
                count[j] += v.varValue or 0.0
            for (j, t), v in list(O.items()) + list(S.items()):
                count[j, t] += v.varValue or 0.0
            small = [j for j in range(J) if j not in dropped and 0 < count[j].max() < 0.5]
            if not small:
                break
            trial = set(dropped) | set(small)
            for j in small:
                for v in per_option[j]:
                    v.upBound = 0
            res = _relaxed(lp, time_limit_s - (time.perf_counter() - start), backend, threads)
            if res.status != "optimal":  # dropping made it infeasible: undo and stop
                for j in small:
                    for v in per_option[j]:
                        v.upBound = saved[id(v)][2]
                _relaxed(lp, time_limit_s - (time.perf_counter() - start), backend, threads)
                break
            dropped = trial
        count = np.zeros((J, T))  # the LP's counts (read before the rounding overwrites them)
        for j, v in R.items():
            count[j] += v.varValue or 0.0
        for (j, t), v in list(O.items()) + list(S.items()):
            count[j, t] += v.varValue or 0.0
        arrays = _round_fixed(problem, lp, R, O, S, X, saved,
                              time_limit_s - (time.perf_counter() - start), backend, threads)
        if arrays is None and problem.quotas:
            # rounding up broke a quota the LP filled: leave room for rounding every option
            # in use, re-solve the LP and round again
            groups = quota_groups(problem)
            changed = []
            for t in range(T):
                for gi, g in enumerate(groups):
                    name = f"quota_{gi}_{t}"
                    if g not in problem.quotas or name not in lp.constraints:
                        continue
                    # each price class of an option may round up by one replica
                    room = sum(3 * quota_usage(problem.options[j]).get(g, 0) for j in range(J)
                               if count[j, t] > 1e-6)
                    lp.constraints[name].changeRHS(max(0.0, problem.quotas[g] - room))
                    changed.append((name, problem.quotas[g]))
            try:
                res = _relaxed(lp, time_limit_s - (time.perf_counter() - start), backend, threads)
                if res.status == "optimal":
                    arrays = _round_fixed(problem, lp, R, O, S, X, saved,
                                          time_limit_s - (time.perf_counter() - start),
                                          backend, threads, restore_rhs=changed)
            finally:
                for name, q in changed:
                    lp.constraints[name].changeRHS(float(q))
    finally:
        for v, lo, hi in saved.values():
            v.lowBound, v.upBound = lo, hi
    return lp_bound, arrays


@dataclass
class _LpRelaxation:
    """The LP relaxation of the per-period model, solved once (arrays, no PuLP).

    Attributes:
        value: its optimal objective (a proven lower bound on every cover: every integer
            solution of the model is a point of this LP; HiGHS's simplex stops at an optimal
            basis whose objective equals the dual objective up to its 1e-7 tolerances, which
            :func:`_safe_bound` subtracts).
        reserved: ``[J]`` the LP's reserved counts.
        model, duals: the model solved and its row duals (for :func:`_lagrangian_bound`).
        top_up: ``[T]`` the LP's on-demand and spot instances per period (0: the LP's
            reserved counts carry that period's load alone); ``None``: not known.
    """

    value: float
    reserved: np.ndarray
    model: _ArrayModel | None = None
    duals: np.ndarray | None = None
    top_up: np.ndarray | None = None


def _safe_bound(value: float, problem: CoverProblem) -> float:
    """An LP optimum made safe against the solver's tolerances: the dual objective may exceed
    the true LP optimum by at most (dual feasibility tolerance) x (sum of variable ranges
    that matter); we take 1e-7 relative plus 1e-9 absolute, far above HiGHS's defaults."""
    return float(value) - 1e-7 * abs(float(value)) - 1e-9


@dataclass
class _ArrayModel:
    """The cover model as arrays for highspy (no PuLP): routing columns first, then counts.

    Attributes:
        dd, jj, tt: ``[nx]`` (demand, option, period) of each routing column.
        kind, kj, kt: ``[ncount]`` price class (0 reserved, 1 on demand, 2 spot), option and
            period (-1: reserved, every period) of each count column.
        cost, col_hi: ``[n]`` objective coefficients ($/h averaged over the horizon) and upper
            bounds of all columns (routing, counts, then one start column per (option with a
            start cost, period) when the model spans the whole horizon).
        a: ``[nrow, n]`` constraint matrix (CSR); ``row_lo``, ``row_hi`` its bounds.
    """

    dd: np.ndarray
    jj: np.ndarray
    tt: np.ndarray
    kind: np.ndarray
    kj: np.ndarray
    kt: np.ndarray
    cost: np.ndarray
    col_hi: np.ndarray
    a: object
    row_lo: np.ndarray
    row_hi: np.ndarray
    #: options with a start column per period (after the counts), in column order
    start_options: tuple = ()
    #: rows from here on (quota, spot cap, starts) tie options or periods together; the cover
    #: and capacity rows before them stay within one period
    first_linking_row: int = 0
    #: rows from here on (starts) tie consecutive periods together; the quota and spot-cap
    #: rows before them stay within one period
    first_start_row: int = 0

    @property
    def nx(self) -> int:
        return len(self.dd)

    @property
    def count_slice(self) -> slice:
        """The count columns' positions."""
        return slice(len(self.dd), len(self.dd) + len(self.kind))


def _array_model(problem: CoverProblem, *, periods: np.ndarray | None = None,
                 reserved: np.ndarray | None = None,
                 allowed: np.ndarray | None = None) -> _ArrayModel:
    """Build the per-period-routing model (same rows as :func:`build_model`) from numpy arrays.

    ``periods``: keep only these periods (their weights as in the full horizon);
    ``reserved``: fix the reserved counts (no reserved columns; their capacity, quota units and
    spot-cap share move to the right-hand sides, their cost is left out); ``allowed`` (``[D, J, T]`` bool): keep
    only those routing columns (a restriction: its solutions are feasible, its bounds are not
    bounds of the full problem).
    """
    from scipy import sparse

    D, J, T = problem.shape
    rates, cap = problem.rates, problem.capacity
    u, fspot = float(problem.max_utilisation), float(problem.spot_capacity_factor)
    w = problem.period_weights
    classes = [_classes(o) for o in problem.options]
    units = np.array([float(o.units) for o in problem.options])
    big = float(problem.max_instances)
    keep_t = np.zeros(T, dtype=bool)
    keep_t[np.arange(T) if periods is None else np.asarray(periods, dtype=int)] = True
    fixed = np.zeros(J) if reserved is None else np.asarray(reserved, dtype=float)
    mask = (cap > 0)[:, :, None] & (rates > 0)[:, None, :] & keep_t[None, None, :]
    if allowed is not None:
        mask &= allowed
    dd, jj, tt = np.nonzero(mask)
    nx = len(dd)
    cost, upper, kinds = [], [], []
    multi = T > 1
    for j in range(J):
        ub = float(_quota_bound(problem, j, big))
        c = classes[j]
        if reserved is None and "reserved" in c and (
                multi or "on_demand" not in c or c["reserved"] < c["on_demand"]):
            kinds.append((0, j, -1)); cost.append(c["reserved"]); upper.append(ub)
        for t in np.nonzero(keep_t)[0]:
            if "on_demand" in c:
                kinds.append((1, j, t)); cost.append(c["on_demand"] * w[t]); upper.append(ub)
            if "spot" in c and (problem.spot_max_fraction is None or problem.spot_max_fraction > 0):
                kinds.append((2, j, t)); cost.append(c["spot"] * w[t]); upper.append(ub)
    kind = np.array([k[0] for k in kinds], dtype=int)
    kj = np.array([k[1] for k in kinds], dtype=int)
    kt = np.array([k[2] for k in kinds], dtype=int)
    ncount = len(kinds)
    # rows: cover (d, t) | capacity (j, t) | quota (g, t) | spot cap t; unused periods' rows
    # stay empty (free) so that row numbers do not depend on ``periods``
    cover_id = -np.ones((D, T), dtype=int)
    dt = np.nonzero((rates > 0) & keep_t[None, :])
    cover_id[dt] = np.arange(len(dt[0]))
    ncover = len(dt[0])
    cap_row = ncover + jj * T + tt
    rows = [cover_id[dd, tt], cap_row]
    cols = [np.arange(nx), np.arange(nx)]
    vals = [np.ones(nx), rates[dd, tt] / cap[dd, jj]]
    lo = [np.ones(ncover), np.full(J * T, -np.inf)]
    hi = [np.ones(ncover), np.repeat(u * fixed, T)]
    count_cols = nx + np.arange(ncount)
    factor = np.where(kind == 2, u * fspot, u)
    for t in range(T):
        sel = (kt == t) | (kt == -1)
        rows.append(ncover + kj[sel] * T + t); cols.append(count_cols[sel])
        vals.append(-factor[sel])
    nrow = ncover + J * T
    quota_units = _group_units(problem)
    for g in quota_groups(problem):
        if g not in problem.quotas:
            continue
        g_units = quota_units[g]
        sel_j = g_units[kj] > 0
        for t in range(T):
            sel = sel_j & ((kt == t) | (kt == -1))
            rows.append(np.full(int(sel.sum()), nrow + t)); cols.append(count_cols[sel])
            vals.append(g_units[kj[sel]])
        room = float(problem.quotas[g]) - float(g_units @ fixed)
        lo.append(np.full(T, -np.inf)); hi.append(np.full(T, room))
        nrow += T
    if problem.spot_max_fraction is not None and (kind == 2).any():
        sel = kind == 2
        rows.append(nrow + kt[sel]); cols.append(count_cols[sel]); vals.append(units[kj[sel]])
        lo.append(np.full(T, -np.inf)); hi.append(problem.spot_units_allowed())
        nrow += T
    nstart, priced, first_start_row = 0, [], nrow
    if periods is None and reserved is None and allowed is None and _starts_priced(problem):
        # U_jt - (O + S)_jt + (O + S)_j,t-1 >= 0: instances started at t, priced per start
        priced = [j for j, o in enumerate(problem.options) if o.start_cost > 0]
        for n_j, j in enumerate(priced):
            for t in range(T):
                col = nx + ncount + n_j * T + t
                now = count_cols[(kj == j) & (kt == t) & (kind > 0)]
                before = count_cols[(kj == j) & (kt == (t - 1) % T) & (kind > 0)]
                rows.append(np.full(1 + len(now) + len(before), nrow))
                cols.append(np.concatenate([[col], now, before]))
                vals.append(np.concatenate([[1.0], -np.ones(len(now)), np.ones(len(before))]))
                lo.append(np.zeros(1)); hi.append(np.full(1, np.inf))
                nrow += 1
        nstart = len(priced) * T
        cost += [problem.options[j].start_cost for j in priced for _ in range(T)]
        upper += [np.inf] * nstart
    a = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(nrow, nx + ncount + nstart))
    return _ArrayModel(dd, jj, tt, kind, kj, kt,
                       np.concatenate([np.zeros(nx), np.array(cost, dtype=float)]),
                       np.concatenate([np.ones(nx), np.array(upper, dtype=float)]),
                       a, np.concatenate(lo), np.concatenate(hi), tuple(priced),
                       ncover + J * T, first_start_row)


def _run_highs(model: _ArrayModel, *, integer: bool, time_limit_s: float,
               threads: int | None, gap_rel: float = 1e-4, start: np.ndarray | None = None):
    """Solve an :class:`_ArrayModel` with highspy (:func:`solvers.milp.run_highs_arrays`);
    returns the ``Highs`` object after ``run``.

    ``integer``: count columns integer (a MILP), else the LP relaxation.  ``start``: a
    feasible point (``[n]`` column values) handed to HiGHS as its first incumbent (it prunes
    from the first node; the start changes no proof)."""
    counts = np.arange(model.count_slice.start, model.count_slice.stop) if integer else None
    return run_highs_arrays(model.cost, model.col_hi, model.a, model.row_lo, model.row_hi,
                            integer=counts, time_limit_s=time_limit_s, threads=threads,
                            gap_rel=gap_rel, start=start)


def _model_point(model: _ArrayModel, reserved: np.ndarray, on_demand: np.ndarray,
                 spot: np.ndarray, routing: np.ndarray) -> np.ndarray:
    """A cover in array form as a column vector of ``model`` (built without fixed reserved
    counts, over all periods)."""
    counts = np.where(model.kind == 0, reserved[model.kj],
                      np.where(model.kind == 1, on_demand[model.kj, model.kt],
                               spot[model.kj, model.kt]))
    started = np.zeros(0)
    if model.start_options:  # one start column per (priced option, period), in that order
        started = starts_of(on_demand, spot)[list(model.start_options)].ravel().astype(float)
    return np.concatenate([routing[model.dd, model.jj, model.tt], counts.astype(float), started])


def _model_cover(problem: CoverProblem, model: _ArrayModel, x: np.ndarray) -> tuple:
    """``(reserved [J], on_demand [J, T], spot [J, T], routing [D, J, T])`` of a column
    vector of ``model`` (routing normalised per demand and period, as in :func:`_extract`)."""
    D, J, T = problem.shape
    counts = np.rint(x[model.count_slice]).astype(int)
    reserved = np.zeros(J, dtype=int)
    on_demand, spot = np.zeros((J, T), dtype=int), np.zeros((J, T), dtype=int)
    sel = model.kind == 0
    reserved[model.kj[sel]] = counts[sel]
    sel = model.kind == 1
    on_demand[model.kj[sel], model.kt[sel]] = counts[sel]
    sel = model.kind == 2
    spot[model.kj[sel], model.kt[sel]] = counts[sel]
    routing = np.zeros((D, J, T))
    routing[model.dd, model.jj, model.tt] = np.clip(x[:model.nx], 0.0, 1.0)
    routing = _clean_routing(routing)
    return reserved, on_demand, spot, routing


def _solve_lp_arrays(problem: CoverProblem, time_limit_s: float,
                     threads: int | None) -> _LpRelaxation | None:
    """Solve the LP relaxation of the per-period model directly through highspy, built from
    numpy arrays (the PuLP model of a 20 x 20-bucket, 3-model, 24-period instance has 400k
    columns: building and handing it over through PuLP costs several times the simplex).

    Returns ``None`` when highspy is missing or the LP is not solved to optimality.
    """
    try:
        import highspy
    except ImportError:
        return None
    m = _array_model(problem)
    h = _run_highs(m, integer=False, time_limit_s=time_limit_s, threads=threads)
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    x = np.asarray(h.getSolution().col_value)
    reserved = np.zeros(problem.shape[1])
    sel = m.kind == 0
    reserved[m.kj[sel]] = x[m.count_slice][sel]
    top_up = np.zeros(problem.shape[2])
    np.add.at(top_up, m.kt[~sel], x[m.count_slice][~sel])
    return _LpRelaxation(float(h.getInfo().objective_function_value), reserved, m,
                         np.asarray(h.getSolution().row_dual), top_up)


def _lagrangian_bound(relax: _LpRelaxation, time_limit_s: float, workers: int) -> float | None:
    """A lower bound on the cover above the LP's
    (:func:`solvers.lagrangian.block_lagrangian_bound`): reserved counts split per period and
    start rows priced at the LP's duals, so that the model falls apart into pieces of one
    period, each solved as a MILP while ``time_limit_s`` lasts; each proven piece adds its
    integrality gap to the LP bound.  Where a period's model is small (at most
    :data:`SMALL_PERIOD_COLUMNS` routing columns) a piece is the whole period, with its quota
    and spot-cap rows; otherwise those rows are priced too and a piece is one model in one
    period (its buckets and instances: solvable where whole periods are not).  Measured: the
    merged 1x option-noise 20 x 20 x 24 scale instance, 24 period pieces all proven in 2.6 s:
    LP 243.62 -> 244.56 $/h (model-period pieces: 244.10 in 0.8 s); the 1x bucket-noise
    10 x 10 x 6, 18 model-period pieces proven in 3 s: 234.72 -> 235.66 (period pieces: 2 of 6
    proven in 9 s, 235.19).  ``None`` without the LP's duals."""
    from solvers.lagrangian import block_lagrangian_bound

    m = relax.model
    if m is None or relax.duals is None:
        return None
    period_columns = int(np.bincount(m.tt).max()) if m.nx else 0
    first = m.first_start_row if period_columns <= SMALL_PERIOD_COLUMNS else m.first_linking_row
    linking = np.arange(first, m.a.shape[0])
    split = m.count_slice.start + np.nonzero(m.kind == 0)[0]  # reserved: held in every period
    integer = np.zeros(m.a.shape[1], dtype=bool)
    integer[m.count_slice.start:] = True  # counts and starts
    got = block_lagrangian_bound(m.a, m.cost, m.col_hi, m.row_lo, m.row_hi, integer,
                                 relax.duals, linking_rows=linking, split_columns=split,
                                 time_limit_s=time_limit_s, workers=workers)
    return got.value if math.isfinite(got.value) else None


#: share of the time limit the Lagrangian bound gets between the per-period passes and the
#: whole-horizon MILP (measured on the 1x bucket-noise 10 x 10 x 6 scale instance: all 18
#: pieces proven in 3 s, gap 0.92% -> 0.70-0.79%).  Models too big for the whole MILP run it
#: before their passes instead (:data:`LAGRANGIAN_FIRST_SHARE`)
LAGRANGIAN_SHARE = 0.1
#: routing columns kept per demand in a period's MILP: the period LP's support plus this many
#: cheapest columns by reduced cost.  Measured on the 1x bucket-noise 20 x 20 x 24 scale
#: instance (sum of the 24 periods' on-demand / spot costs at the pass's time shares): 2 139.5,
#: 3 132.1, 4 131.5, 5 131.3, 6 131.3, 8 132.4 $/h; the whole cover 250.9 -> 250.1 $/h from
#: 3 to 5 (seeds 1, 2: -0.15%, -0.2%; 20 x 20 x 6: -0.3 to -0.4%).  With 3, off-peak periods,
#: where the fixed reserved counts leave a small top-up, lack the columns their optimum uses
PERIOD_COLUMNS = 5
#: a period with at most this many routing columns counts as small: its MILP skips that
#: restriction, the Lagrangian bound solves it whole (:func:`_lagrangian_bound`), and a
#: single-period cover starts its run beside only once stage 1 proves nothing
SMALL_PERIOD_COLUMNS = 2_000


def _period_solve(problem: CoverProblem, t: int, reserved: np.ndarray, time_limit_s: float,
                  threads: int | None, gap_rel: float):
    """Period ``t`` alone with the reserved counts fixed: its LP over every routing column,
    then a MILP over the LP's support plus the :data:`PERIOD_COLUMNS` cheapest columns per
    demand by reduced cost (a restriction: its solutions are feasible).  Where the period holds
    several models, they are first solved one by one under budgets of the quota and spot-cap
    rows (:func:`solvers.budgets.solve_by_budgets`), and the period MILP starts from that plan
    with the time the models left (:data:`BUDGET_SHARE`, :data:`MIN_MILP_S`).  Periods with at
    most :data:`SMALL_PERIOD_COLUMNS` routing columns get the MILP over all of them directly.

    Returns ``(on_demand [J], spot [J], routing [D, J], bound)`` or ``None`` (no incumbent
    in time, or the period is infeasible given ``reserved``); ``bound`` is the MILP's dual
    bound on the period's cost (horizon-weighted $/h, reserved excluded) when it ran over every
    routing column, else ``None`` (a restricted MILP proves nothing about the period)."""
    import highspy

    D, J, T = problem.shape
    full = _array_model(problem, periods=[t], reserved=reserved)
    left = time_limit_s
    model, start = full, None
    if full.nx > SMALL_PERIOD_COLUMNS:
        h = _run_highs(full, integer=False, time_limit_s=time_limit_s, threads=threads)
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        sol = h.getSolution()
        x, rc = np.asarray(sol.col_value), np.asarray(sol.col_dual)
        nx = full.nx
        rcs = np.full((D, J), np.inf)
        support = x[:nx] > 1e-9
        rcs[full.dd, full.jj] = np.where(support, -np.inf, rc[:nx])
        allowed = np.zeros((D, J, T), dtype=bool)
        np.put_along_axis(allowed[:, :, t],
                          np.argsort(rcs, axis=1, kind="stable")[:, :PERIOD_COLUMNS],
                          True, axis=1)
        allowed[:, :, t] &= rcs < np.inf
        model = _array_model(problem, periods=[t], reserved=reserved, allowed=allowed)
        left = time_limit_s - h.getRunTime()
        if BUDGET_SHARE > 0:
            # the LP's counts (the same count columns in both models): all the quota and
            # spot-cap rows read
            x_lp = np.zeros(model.a.shape[1])
            x_lp[model.count_slice] = x[full.count_slice]
            integer = np.zeros(model.a.shape[1], dtype=bool)
            integer[model.count_slice] = True
            block_start = time.perf_counter()
            start = solve_by_budgets(model.cost, model.col_hi, model.a, model.row_lo,
                                     model.row_hi, integer, model.first_linking_row, x_lp,
                                     time_limit_s=BUDGET_SHARE * left, threads=threads,
                                     gap_rel=gap_rel)
            left -= time.perf_counter() - block_start
    if start is None or left >= MIN_MILP_S:
        h = _run_highs(model, integer=True, time_limit_s=max(0.05, left), threads=threads,
                       gap_rel=gap_rel, start=start)
        if h.getInfo().primal_solution_status == 2:  # kSolutionStatusFeasible
            start = np.asarray(h.getSolution().col_value)
    if start is None:
        return None
    _, on_demand, spot, routing = _model_cover(problem, model, start)
    bound = float(h.getInfo().mip_dual_bound) if model is full else None
    return on_demand[:, t], spot[:, t], routing[:, :, t], bound


#: share of a big period's time (after its LP) its models get one by one under budgets
#: (:func:`solvers.budgets.solve_by_budgets`); the period MILP then runs from their plan with
#: what they left, if at least :data:`MIN_MILP_S` seconds.  A model MILP is a few hundred rows
#: where the period's is over a thousand: HiGHS proves it or comes close in a fraction of a
#: second, where the period MILP spends its first ~2 s at the root.  Measured on the 1x
#: bucket-noise scale instances (seed 0, 30 s, 2 workers): 20 x 20 x 24 250.03 -> 249.90 $/h,
#: 20 x 20 x 6 249.9 -> 249.46 (gap 0.50% -> 0.33%), 10 x 10 x 6 236.6 -> 236.46, where the
#: models' blocks prove early and the period MILP gets the split's loss back; seeds 1 and 2
#: move by -0.09% to +0.07% (noise of the time-limited solves).  Half the time each: worse on
#: 20 x 20 x 24 (250.26: the blocks need their time there); blocks only: 10 x 10 x 6 237.1.
BUDGET_SHARE = 1.0
MIN_MILP_S = 0.2


#: time limit (s) of a period the LP's reserved instances serve alone (its LP is all the work)
TRIVIAL_PERIOD_S = 1.0


def _periods_in_parallel(problem: CoverProblem, order: list[int], reserved: np.ndarray,
                         time_limit_s: float, threads: int | None, gap_rel: float,
                         workers: int, load: np.ndarray) -> list | None:
    """:func:`_period_solve` for the periods in ``order`` on ``workers`` processes (HiGHS's
    branch and bound runs on one core; periods are independent once reserved counts are
    fixed).  Each period gets time in proportion to its ``load`` (``[T]``, any unit), less a
    margin for starting the processes; a period of zero load gets :data:`TRIVIAL_PERIOD_S`.
    Returns the results in ``order`` or ``None``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # the pool hands each period to the first free worker: simulate that (list scheduling,
    # times in proportion to load) and scale so the busiest worker ends within the limit
    ends = np.zeros(workers)
    for t in order:
        ends[np.argmin(ends)] += float(load[t])
    scale = max(0.1, time_limit_s - 0.5) / max(float(ends.max()), 1e-300)
    limits = [max(0.05, scale * float(load[t])) if load[t] > 0 else TRIVIAL_PERIOD_S
              for t in order]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_period_solve, problem, t, reserved, tl, threads, gap_rel)
                   for t, tl in zip(order, limits)]
        results = [f.result() for f in futures]
    return None if any(r is None for r in results) else results


def parallel_workers(requested: int | None) -> int:
    """Worker processes for period solves: ``requested`` (``None``: one per available core,
    at most 4), and 1 inside a daemonic process (which may not start children)."""
    import multiprocessing
    import os

    if multiprocessing.current_process().daemon:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4) if requested is None else int(requested))


def _period_rounding(problem: CoverProblem, relax: _LpRelaxation, time_limit_s: float,
                     threads: int | None, gap_rel: float = 1e-4,
                     reserved: np.ndarray | None = None, workers: int = 1):
    """Primal heuristic for per-period routing, from a solved LP relaxation: reserved counts =
    the LP's, rounded down; then every period alone (:func:`_period_solve`) picks integer
    on-demand / spot counts and routing, heavier periods with a larger share of the time;
    finally each option's reserved level is re-chosen from its resulting count profile where
    quotas allow.

    Returns ``(arrays, bound)`` or ``None``: ``arrays`` = ``(reserved, on_demand, spot,
    routing)``; ``bound`` = the sum of the periods' MILP bounds when every period's MILP ran
    over all its columns, else ``None``.  It bounds the cover only where periods are
    independent (no reserved class: see :func:`_periods_independent`)."""
    start = time.perf_counter()
    D, J, T = problem.shape
    if reserved is None:
        reserved = np.floor(relax.reserved + 1e-6).astype(int)
    reserved = np.array(reserved, dtype=int)
    on_demand = np.zeros((J, T), dtype=int)
    spot = np.zeros((J, T), dtype=int)
    routing = np.zeros((D, J, T))
    # the heaviest periods first, each with time in proportion to its load: they are the
    # hardest and decide the most money.  A period the LP served with its reserved instances
    # alone needs no top-up once the reserved counts are at least the LP's (the LP's routing
    # fits in them, and zero top-up counts are integer): its MILP ends at once, so its share
    # goes to the others (on the 1x bucket-noise 20 x 20 x 6 scale instance, 2 of 6 periods)
    load = problem.rates.sum(axis=0)
    order = [int(t) for t in np.argsort(-load, kind="stable") if load[t] > 0]
    if relax.top_up is not None and np.all(reserved >= relax.reserved - 1e-6):
        load = np.where(relax.top_up > 1e-9, load, 0.0)  # time: TRIVIAL_PERIOD_S
        order = [t for t in order if load[t] > 0] + [t for t in order if load[t] == 0]
    if workers > 1 and len(order) > 1:
        results = _periods_in_parallel(problem, order, reserved, time_limit_s, threads, gap_rel,
                                       workers, load)
    else:
        results = []
        for n, t in enumerate(order):
            left = time_limit_s - (time.perf_counter() - start)
            share = load[t] / max(float(load[order[n:]].sum()), 1e-300)
            limit = max(0.05, left * share) if load[t] > 0 else TRIVIAL_PERIOD_S
            got = None if left <= 0.05 else _period_solve(problem, t, reserved, limit, threads,
                                                           gap_rel)
            if got is None:
                return None
            results.append(got)
    if results is None:
        return None
    bounds = []
    for t, got in zip(order, results):
        on_demand[:, t], spot[:, t], routing[:, :, t], b = got
        bounds.append(b)
    # a period without load costs nothing beyond the reserved counts: its bound is 0
    bound = None if any(b is None for b in bounds) else float(sum(bounds))
    # re-choose reserved levels from the count profiles (same counts per period: routing,
    # quotas and spot cap stay satisfied as long as no idle reserved instance breaks a quota)
    classes = [_classes(o) for o in problem.options]
    w = problem.period_weights
    group_units = _group_units(problem)
    for j in range(J):
        if "reserved" not in classes[j] or "on_demand" not in classes[j] or T == 1:
            continue
        counts = reserved[j] + on_demand[j]
        r = _best_reserved(counts, w, classes[j]["reserved"], classes[j]["on_demand"])
        new_od = np.maximum(counts - r, 0)
        idle = np.maximum(r - counts, 0)
        if idle.any() and not _fits_quotas(problem, group_units,
                                           reserved[:, None] + on_demand + spot, j, idle):
            continue
        reserved[j], on_demand[j] = r, new_od
    routing = _clean_routing(routing)
    return (reserved, on_demand, spot, routing), bound


def _hold_through_dips(problem: CoverProblem, arrays: tuple) -> tuple:
    """With start costs: keep an option's instances up through a dip (periods below both the
    count before and the count after, cyclically) when the starts saved cost more than the idle
    instances, by adding on-demand instances (routing and the spot cap stay satisfied; quotas
    are checked).  Greedy, repeated until no dip pays; per-period solves (which do not see
    start costs) leave many such dips."""
    if not _starts_priced(problem):
        return arrays
    reserved, on_demand, spot, routing = arrays
    on_demand = np.array(on_demand, copy=True)
    J, T = on_demand.shape
    group_units = _group_units(problem)

    best = objective_of(problem, reserved, on_demand, spot)
    for _ in range(J * T):  # each accepted move lowers the cost: a bounded walk
        moved = False
        for j in range(J):
            if problem.options[j].start_cost <= 0 or "on_demand" not in _classes(problem.options[j]):
                continue
            n = on_demand[j] + spot[j]
            for t in range(T):
                if n[t] >= n[t - 1]:
                    continue
                run, k = [], t  # the dip: periods from t on below the level before it
                while n[k % T] < n[t - 1] and len(run) < T - 1:
                    run.append(k % T)
                    k += 1
                target = min(n[t - 1], n[k % T])
                extra = np.maximum(target - n[run], 0)
                if not extra.any() or not _fits_quotas(
                        problem, group_units,
                        reserved[:, None] + on_demand[:, run] + spot[:, run], j, extra):
                    continue
                on_demand[j, run] += extra
                cost = objective_of(problem, reserved, on_demand, spot)
                if cost < best - 1e-12:
                    best, moved = cost, True
                    n = on_demand[j] + spot[j]
                else:
                    on_demand[j, run] -= extra
        if not moved:
            break
    return reserved, on_demand, spot, routing


def _periods_independent(problem: CoverProblem) -> bool:
    """True when nothing ties the periods together: no option offers the reserved class
    (quotas and the spot cap are per period), so the cover's optimum is the sum of the
    periods' optima and the sum of their MILP bounds bounds it."""
    return not any("reserved" in _classes(o) for o in problem.options)


def _round_fixed(problem, lp, R, O, S, X, saved, time_limit_s, backend, threads,
                 restore_rhs=()):
    """Fix the routing at the current LP values and solve for integer counts (quotas at their
    true values); the routing bounds are restored afterwards."""
    xs = {id(v): v for v in X.values()}
    for v in xs.values():
        val = max(0.0, min(1.0, v.varValue or 0.0))
        v.lowBound = v.upBound = val
    for name, q in restore_rhs:
        lp.constraints[name].changeRHS(float(q))
    try:
        rounded = solve_pulp(lp, time_limit_s=max(0.5, time_limit_s), backend=backend,
                             gap_rel=1e-3, threads=threads)
        return _extract(problem, R, O, S, X) if rounded.has_solution else None
    finally:
        for v in xs.values():
            _, lo, hi = saved[id(v)]
            v.lowBound, v.upBound = lo, hi


def _trim_idle(problem: CoverProblem, arrays: tuple) -> tuple:
    """Drop instances the routing does not need: on-demand, then spot, then reserved ones
    whose removal keeps every period's load within ``max_utilisation`` of the capacity left
    (the spot cap does not depend on the counts: removals keep it); a removal is kept only
    where it lowers the objective (start costs can rise).  A time-limited MILP incumbent may
    carry such idle, paid-for instances; an optimal one never does (each costs money), so
    this never changes a proven optimum."""
    reserved, on_demand, spot, routing = arrays
    reserved, on_demand, spot = (np.array(a, dtype=int, copy=True)
                                 for a in (reserved, on_demand, spot))
    load = load_of(problem, routing)
    u, f = float(problem.max_utilisation), float(problem.spot_capacity_factor)
    J, T = on_demand.shape
    best = objective_of(problem, reserved, on_demand, spot)

    def room(j: int) -> np.ndarray:  # capacity left over the load, per period (instances)
        return u * (reserved[j] + on_demand[j] + f * spot[j]) - load[j] + 1e-9 * (1 + load[j])

    def keep_if_cheaper() -> bool:
        nonlocal best
        cost = objective_of(problem, reserved, on_demand, spot)
        if cost < best - 1e-12:
            best = cost
            return True
        return False

    for j in range(J):
        for t in range(T):
            for counts, size in ((on_demand, u), (spot, u * f)):
                while counts[j, t] > 0 and room(j)[t] >= size:
                    counts[j, t] -= 1
                    if not keep_if_cheaper():
                        counts[j, t] += 1
                        break
        while reserved[j] > 0 and (room(j) >= u).all():
            reserved[j] -= 1
            if not keep_if_cheaper():
                reserved[j] += 1
                break
    return reserved, on_demand, spot, routing


def solve_cover(problem: CoverProblem, *, time_limit_s: float | None = 30.0,
                backend: str = "highs", gap_rel: float = 1e-6,
                threads: int | None = None, polish: bool = True,
                workers: int = 1) -> CoverSolution:
    """Solve a covering problem (see the module docstring for the formulation and
    :func:`_solve_cover` for the stages), then drop idle instances (:func:`_trim_idle`): the
    status and gap are those of the cover returned."""
    sol = _solve_cover(problem, time_limit_s=time_limit_s, backend=backend, gap_rel=gap_rel,
                       threads=threads, polish=polish, workers=workers)
    start = time.perf_counter()
    reserved, on_demand, spot, routing = _trim_idle(
        problem, (sol.reserved, sol.on_demand, sol.spot, sol.routing))
    cost = objective_of(problem, reserved, on_demand, spot)
    if cost >= sol.cost_per_hour - 1e-12:
        return sol
    res = sol.result
    time_s = res.time_s + time.perf_counter() - start
    if res.status == "heuristic":
        res = heuristic_result(cost, time_s, res.backend, bound=res.bound)
        res = SolveResult(res.status, res.objective, res.bound, res.gap, time_s, res.backend,
                          sol.result.time_limit_s)
    else:
        res = _honest(res, cost, res.bound, time_s, res.backend, res.time_limit_s)
    return CoverSolution(reserved, on_demand, spot, routing, sol.load, cost, res,
                         sol.method + "+trim")


def _solve_cover(problem: CoverProblem, *, time_limit_s: float | None, backend: str,
                 gap_rel: float, threads: int | None, polish: bool,
                 workers: int) -> CoverSolution:
    """Solve a covering problem; see the module docstring for the formulation.

    ``workers``: processes for the per-period solves of :func:`_solve_by_periods` (see
    :func:`parallel_workers`), and above 1 a second HiGHS run beside the MILP stages; 1 keeps
    everything in this process.

    Large per-period models (continuous routing, more than one period, more than
    :data:`DECOMPOSE_COLUMNS` routing columns) go to :func:`_solve_by_periods` first: the LP
    relaxation solved from arrays gives the bound, per-period MILPs given the LP's reserved
    counts give the incumbent.  Otherwise, or when that fails:

    Stages (continuous routing; with ``slices`` the MILP alone gets the whole limit):
    1. the MILP for a fifth of the time;
    2. if not proven, an incumbent from the LP relaxation (:func:`_lp_rounding`);
    3. the MILP again for the rest of the time with the best incumbent as a MIP start
       (:func:`solvers.milp.solve_pulp_with_start`; without highspy, an objective cutoff row
       just below the incumbent, where "infeasible" proves it within ``gap_rel``).
    With ``workers`` > 1, HiGHS alone on the whole model runs beside these stages in another
    process (:func:`_start_beside`); its incumbent and bound are taken where better, unless
    the stages proved the requested gap first.
    The bound reported is the best valid one (the MILP's, the LP relaxation's or the cutoff's)
    and the gap is computed from it; "optimal" only when bound and incumbent meet.  With no
    incumbent at all, a greedy cover is returned (method "greedy").

    Raises:
        ValueError: some demand with positive rate has no option able to serve it (callers
            explain which one before calling; see :meth:`CoverProblem.unservable`).
        CoverInfeasible: the MILP is infeasible (e.g. quotas too small).
    """
    if problem.unservable():
        d, t = problem.unservable()[0]
        raise ValueError(f"demand {d} (period {t}) has no option that can serve it")
    start = time.perf_counter()
    merged = merge_proportional(problem)
    if merged is not None:
        small, members, scale = merged
        sol = solve_cover(small, time_limit_s=time_limit_s, backend=backend, gap_rel=gap_rel,
                          threads=threads, polish=polish, workers=workers)
        routing = sol.routing[members]  # every member routes like its merged demand
        res = sol.result
        res = SolveResult(res.status, res.objective, res.bound, res.gap,
                          time.perf_counter() - start, res.backend, res.time_limit_s)
        return CoverSolution(sol.reserved, sol.on_demand, sol.spot, routing,
                             load_of(problem, routing), sol.cost_per_hour, res,
                             sol.method + "+merged")
    if (problem.routing == "per_period" and problem.slices is None and problem.shape[2] > 1
            and time_limit_s is not None
            and (_routing_columns(problem) > DECOMPOSE_COLUMNS
                 or problem.shape[2] >= DECOMPOSE_PERIODS)):
        decomposed = _solve_by_periods(problem, time_limit_s, gap_rel, threads, workers)
        if decomposed is not None:
            return decomposed
    lp, R, O, S, X = build_model(problem)
    build_s = time.perf_counter() - start
    remaining = None if time_limit_s is None else max(1.0, time_limit_s - build_s)
    use_polish = polish and problem.slices is None and remaining is not None
    # the stages below run HiGHS on one core: with a second worker, HiGHS alone on the whole
    # model from arrays runs beside them (incumbents and bounds of the two differ from run to
    # run; the better of each is kept), from the start on models with more than
    # SMALL_PERIOD_COLUMNS routing columns, on smaller ones once the first stage proves nothing
    # (measured on the 1x bucket-noise 10 x 10 x 1 scale instance: ours 349.30 / 347.03,
    # HiGHS alone 348.24 / 346.78 in 1.1 s; seeds 1-8 mixed, HiGHS alone ahead on seed 7 only;
    # 20 x 20 x 1 seeds 1-4 ours ahead in all)
    may_beside = (use_polish and workers > 1 and backend == "highs"
                  and problem.routing == "per_period")
    beside = (_start_beside(problem, start + time_limit_s, gap_rel)
              if may_beside and _routing_columns(problem) > SMALL_PERIOD_COLUMNS else None)
    first = remaining * 0.2 if use_polish else remaining
    result = solve_pulp(lp, time_limit_s=first, backend=backend, gap_rel=gap_rel,
                        threads=threads)
    if result.status == "infeasible":
        if beside is not None:
            _finish_beside(beside, 0.0)
        raise _Infeasible(_honest(result, None, None, time.perf_counter() - start,
                                  result.backend, time_limit_s))
    best = _extract(problem, R, O, S, X) if result.has_solution else None
    best_cost = objective_of(problem, *best[:3]) if best is not None else None
    bound, method = result.bound, "milp"

    def proven() -> bool:
        g = relative_gap(best_cost, bound)
        return g is not None and g <= gap_rel + 1e-12

    def take_beside(wait_s: float) -> None:
        nonlocal beside, best, best_cost, bound, method
        got = _finish_beside(beside, wait_s)
        beside = None
        if got is None:
            return
        arrays, other_bound = got
        if arrays is not None:
            cost = objective_of(problem, *arrays[:3])
            if best_cost is None or cost < best_cost - 1e-9:
                best, best_cost, method = arrays, cost, method + "+beside"
        if best_cost is not None and math.isfinite(other_bound):
            bound = max(bound if bound is not None else -math.inf,
                        min(_safe_bound(other_bound, problem), best_cost))

    if may_beside and beside is None and not proven():
        beside = _start_beside(problem, start + time_limit_s, gap_rel)
    if beside is not None and not proven() and beside[1].poll(0):  # it ended: take it now
        take_beside(1.0)
    if use_polish and not proven():
        # stage 2: an incumbent from the LP relaxation (dive + rounding)
        left = time_limit_s - (time.perf_counter() - start)
        if left > 0.2:
            lp_bound, arrays = _lp_rounding(problem, lp, R, O, S, X, min(left, 0.65 * remaining),
                                            backend, threads)
            if lp_bound is not None and (bound is None or lp_bound > bound):
                bound = lp_bound
            if arrays is not None:
                cost = objective_of(problem, *arrays[:3])
                if best_cost is None or cost < best_cost - 1e-9:
                    best, best_cost, method = arrays, cost, "milp+lp-rounding"
        # stage 3: the MILP again, handed the incumbent as a MIP start (highspy's setSolution):
        # HiGHS prunes with it from the first node and its improvement heuristics (RINS, ...)
        # start from it.  The start changes no proof: the bound is HiGHS's dual bound.  Without
        # highspy, an objective cutoff row just below the incumbent does the pruning instead.
        if beside is not None and not proven() and beside[1].poll(0):
            take_beside(1.0)
        left = time_limit_s - (time.perf_counter() - start)
        if best_cost is not None and left > 0.2 and not proven():
            third, improved = _milp_from_start(problem, lp, R, O, S, X, best, best_cost, left,
                                               backend, gap_rel, threads)
            if third.status == "infeasible":  # cutoff form: nothing cheaper than the cutoff
                bound = max(bound if bound is not None else -math.inf,
                            best_cost * (1.0 - max(gap_rel, 1e-6)))
            elif third.bound is not None:
                # solutions above the incumbent are no better than it
                bound = max(bound if bound is not None else -math.inf,
                            min(third.bound, best_cost))
            if improved is not None:
                cost = objective_of(problem, *improved[:3])
                if cost < best_cost - 1e-9:
                    best, best_cost = improved, cost
                    method = method if method.endswith("+start") else method + "+start"
    if beside is not None:
        # proven here: the other run is not waited for (nor taken: the plan stays the same
        # for the same input); else it ends by the same deadline
        take_beside(0.0 if proven() else start + time_limit_s - time.perf_counter() + 1.0)
    total_s = time.perf_counter() - start
    if best is not None:
        if bound is not None and bound > best_cost:  # numerical noise on proven optima
            bound = best_cost
        res = _honest(result, best_cost, bound, total_s,
                      result.backend if method == "milp" else f"{result.backend}+lp-rounding",
                      time_limit_s)
        reserved, on_demand, spot, routing = best
        return CoverSolution(reserved, on_demand, spot, routing, load_of(problem, routing),
                             best_cost, res, method)
    greedy = greedy_cover(problem)
    if greedy is None:
        raise _Infeasible(_honest(result, None, bound, total_s, result.backend, time_limit_s))
    reserved, on_demand, spot, routing = greedy
    cost = objective_of(problem, reserved, on_demand, spot)
    res = heuristic_result(cost, time.perf_counter() - start, "greedy", bound=bound)
    res = SolveResult(res.status, res.objective, res.bound, relative_gap(cost, bound),
                      res.time_s, "greedy", time_limit_s)
    return CoverSolution(reserved, on_demand, spot, routing, load_of(problem, routing), cost,
                         res, "greedy")


def _whole_milp(problem: CoverProblem, time_limit_s: float, gap_rel: float,
                threads: int | None, start: tuple | None = None) -> tuple:
    """HiGHS on the whole per-period model from arrays, optionally from a cover ``start``
    (``(reserved, on_demand, spot, routing)``); stops a little inside ``gap_rel`` so that the
    safety margin taken off its bound does not push the reported gap past the request.
    Returns ``(cover arrays or None, HiGHS's dual bound)``."""
    model = _array_model(problem)
    h = _run_highs(model, integer=True, time_limit_s=time_limit_s, threads=threads,
                   gap_rel=0.99 * gap_rel,
                   start=None if start is None else _model_point(model, *start))
    info = h.getInfo()
    arrays = None
    if info.primal_solution_status == 2:  # kSolutionStatusFeasible
        arrays = _model_cover(problem, model, np.asarray(h.getSolution().col_value))
    return arrays, float(info.mip_dual_bound)


def _beside_run(problem: CoverProblem, deadline: float, gap_rel: float, conn) -> None:
    """Child process of :func:`_start_beside`: :func:`_whole_milp` until ``deadline``
    (``time.perf_counter`` seconds: one monotonic clock for every process); sends its
    ``(cover arrays or None, dual bound)``."""
    conn.send(_whole_milp(problem, max(0.05, deadline - time.perf_counter()), gap_rel, 1))
    conn.close()


def _start_beside(problem: CoverProblem, deadline: float, gap_rel: float):
    """Start :func:`_beside_run` in a forked process; ``(process, pipe end)`` or ``None``
    (no highspy, less than a second left, or inside a daemonic process)."""
    import multiprocessing

    try:
        import highspy  # noqa: F401
    except ImportError:
        return None
    if deadline - time.perf_counter() < 1.0 or multiprocessing.current_process().daemon:
        return None  # a daemonic process may not start children
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_beside_run, args=(problem, deadline, gap_rel, send), daemon=True)
    proc.start()
    send.close()
    return proc, receive


def _finish_beside(handle, wait_s: float):
    """What the process of :func:`_start_beside` sent within ``wait_s`` seconds, or ``None``;
    the process is stopped either way."""
    proc, receive = handle
    got = None
    try:
        if wait_s > 0 and receive.poll(wait_s):
            got = receive.recv()
    except (EOFError, OSError):
        got = None
    finally:
        proc.terminate()
        proc.join()
        receive.close()
    return got


def merge_proportional(problem: CoverProblem, rtol: float = 1e-9):
    """Exact presolve for continuous routing: demands whose capacity rows are proportional
    (``capacity[d] = beta_d * capacity[r]``) are one demand.  A fraction ``x`` of ``d`` on
    option ``j`` loads it by ``x rate_d / (beta_d capacity[r, j])``, so ``d`` is ``rate_d /
    beta_d`` more rate of ``r``'s kind; if every member routes like the merged demand, loads,
    and so counts and costs, are unchanged, and any routing of the members averages into one
    of the merged demand with the same loads.  Not for slices (whole slices per demand).

    Returns ``(merged problem, member -> merged demand index [D], beta [D])`` or ``None`` when
    nothing merges."""
    if problem.slices is not None:
        return None
    cap = problem.capacity
    D = cap.shape[0]
    top = cap.max(axis=1)
    if np.any(top <= 0):
        return None
    shape = cap / top[:, None]          # each row scaled to max 1: equal iff proportional
    key = np.round(shape / rtol) * rtol if rtol > 0 else shape
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if len(first) == D:
        return None
    # keep the merged demands in order of their first member (stable, input-ordered plans)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    members = rank[inverse]
    reps = first[order]
    beta = top / top[reps][members]
    rates = np.zeros((len(reps), problem.rates.shape[1]))
    np.add.at(rates, members, problem.rates / beta[:, None])
    small = CoverProblem(problem.options, cap[reps], rates, problem.period_weights,
                         dict(problem.quotas), problem.spot_max_fraction,
                         problem.spot_capacity_factor, problem.max_utilisation, None,
                         problem.max_instances, problem.routing, problem.strong_links)
    return small, members, beta


def _start_values(problem: CoverProblem, R, O, S, X, arrays) -> dict:
    """MIP start (variable -> value) of a solution in array form."""
    reserved, on_demand, spot, routing = arrays
    scale = 1.0 if problem.slices is None else float(problem.slices)
    start: dict = {}
    for j, v in R.items():
        start[v] = float(reserved[j])
    for (j, t), v in O.items():
        start[v] = float(on_demand[j, t])
    for (j, t), v in S.items():
        start[v] = float(spot[j, t])
    for (d, j, t), v in X.items():
        start.setdefault(v, float(routing[d, j, t]) * scale)  # shared: one column, all periods
    return start


def _milp_from_start(problem, lp, R, O, S, X, best, best_cost, time_limit_s, backend, gap_rel,
                     threads):
    """The MILP with the incumbent ``best`` as a start; returns ``(result, arrays or None)``."""
    if backend == "highs":
        try:
            import highspy  # noqa: F401
            start = _start_values(problem, R, O, S, X, best)
            res = solve_pulp_with_start(lp, start, time_limit_s=time_limit_s, gap_rel=gap_rel,
                                        threads=threads)
            return res, (_extract(problem, R, O, S, X) if res.has_solution else None)
        except ImportError:
            pass
    cutoff = best_cost * (1.0 - max(gap_rel, 1e-6))
    lp += pulp.LpConstraint(lp.objective, pulp.LpConstraintLE, "objective_cutoff", cutoff)
    try:
        res = solve_pulp(lp, time_limit_s=time_limit_s, backend=backend, gap_rel=gap_rel,
                         threads=threads)
    finally:
        del lp.constraints["objective_cutoff"]
    return res, (_extract(problem, R, O, S, X) if res.has_solution else None)


#: per-period models with more routing columns than this, or at least this many periods, are
#: solved by :func:`_solve_by_periods` (measured on the merged scale instance, 3 demands x 24
#: periods: HiGHS's own heuristics leave the MILP 1.5% from its bound after 30 s; per-period
#: rounding plus the MILP from that start, 0.5%)
DECOMPOSE_COLUMNS = 20_000
DECOMPOSE_PERIODS = 6
#: ... and get the whole-horizon MILP (the decomposition's incumbent as its start) for the
#: time left only up to this many routing columns.  Beyond it there is no time for more than one
#: reserved level: the Lagrangian bound runs first (at most :data:`LAGRANGIAN_FIRST_SHARE` of the
#: limit), then one pass from the LP's reserved counts rounded up gets all the time left, then
#: improvement passes while time lasts.  Measured on the 1x bucket-noise 20 x 20 x 6 scale
#: instance (103k columns; seeds 0, 1, 2): the whole MILP's 12 s improved neither plan nor
#: bound (250.33 / 243.41 / 230.70 $/h); three levels (down, near, up: up the cheapest on every
#: seed) in 8 s each and the bound after them: 250.14 / 243.13 / 230.62, gaps 0.75 / 0.57 /
#: 0.63%; the bound first (all 18 pieces proven in ~8 s) and one pass from "up" in ~20 s:
#: 249.82-249.96 / 243.00 / 230.56, gaps 0.47-0.54 / 0.35 / 0.41% over five runs of seed 0
WHOLE_MILP_COLUMNS = 50_000
#: ... the cap on the Lagrangian bound's time before that pass (it stops early once every piece
#: is proven) ...
LAGRANGIAN_FIRST_SHARE = 0.35
#: ... on models of up to this many routing columns (the bound's pieces take ~0.1 ms per column
#: on two cores); beyond, the pass comes first with 85% of the time and the bound gets what is
#: left (1x bucket-noise 20 x 20 x 24, 415k columns: its 72 pieces need ~40 s; the bound first
#: for 10.5 s took the plan from 250.03 to 250.51 $/h for +0.05 on the bound; the pass with
#: 90% / 85%: 250.01 / 247.66 and 250.03 / 247.81)
LAGRANGIAN_FIRST_COLUMNS = 150_000


def _routing_columns(problem: CoverProblem) -> int:
    cap, rates = problem.capacity, problem.rates
    return int((cap > 0).sum(axis=1) @ (rates > 0).sum(axis=1))


def _solve_by_periods(problem: CoverProblem, time_limit_s: float, gap_rel: float,
                      threads: int | None, workers: int = 1) -> CoverSolution | None:
    """Per-period models with many columns or periods: LP bound, per-period rounding, then (if
    small enough) the whole-horizon MILP.

    1. The LP relaxation, built from arrays and solved by HiGHS (:func:`_solve_lp_arrays`).
       Its value is the reported lower bound: every integer cover is feasible for the LP, so
       no cover costs less (made safe against tolerances by :func:`_safe_bound`).
    2. Models of more than :data:`WHOLE_MILP_COLUMNS` and at most
       :data:`LAGRANGIAN_FIRST_COLUMNS` routing columns (unless their periods are
       independent): the Lagrangian bound (:func:`_lagrangian_bound`; each piece's MILP
       proven adds its integrality gap to the LP's value), at most
       :data:`LAGRANGIAN_FIRST_SHARE` of the limit.
    3. An incumbent from :func:`_period_rounding`: reserved counts from the LP (where the
       whole MILP follows rounded down, to nearest and up, the cheapest cover wins; else
       rounded up, the next level only if that pass fails, then improvement passes), then
       each period's on-demand / spot counts and routing by a small exact-ish MILP per
       period.  Where no option offers reserved instances the periods are independent
       problems: their MILPs then run to the requested gap, and where each ran over all its
       columns the sum of their bounds is a bound of the cover too (often a proof of
       optimality).
    4. Where step 2 did not run, with time left (:data:`LAGRANGIAN_SHARE` of the limit where
       the whole MILP follows, else what the passes left), the Lagrangian bound.
    5. With time left and a model of at most :data:`WHOLE_MILP_COLUMNS` routing columns, the
       whole MILP with that incumbent as a MIP start; its dual bound is valid too, the largest
       bound is kept.
    Returns ``None`` when a step fails (no highspy, LP not solved, a period infeasible given
    the rounded reserved counts); the caller then runs the plain MILP path.
    """
    start = time.perf_counter()
    relax = _solve_lp_arrays(problem, 0.4 * time_limit_s, threads)
    if relax is None:
        return None
    bound = _safe_bound(relax.value, problem)
    columns = _routing_columns(problem)
    whole = columns <= WHOLE_MILP_COLUMNS  # the whole MILP follows the passes
    independent = _periods_independent(problem)
    period_gap = gap_rel if independent else max(min(gap_rel, 2e-3), 1e-4)
    lagrangian_done = False

    def lift_bound(slice_s: float) -> None:
        # priced-out linking rows: each piece's integrality gap on top of the LP
        nonlocal bound, lagrangian_done
        lagrangian_done = True
        lifted = _lagrangian_bound(relax, slice_s, workers)
        if lifted is not None:
            bound = max(bound, _safe_bound(lifted, problem))

    if not whole and not independent and columns <= LAGRANGIAN_FIRST_COLUMNS:
        lift_bound(min(LAGRANGIAN_FIRST_SHARE * time_limit_s,
                       0.5 * (time_limit_s - (time.perf_counter() - start))))
    left = time_limit_s - (time.perf_counter() - start)
    # reserved levels from the LP's: where the whole MILP follows, rounded down, to nearest and
    # up, in passes sharing half the time (the cheapest cover wins; on the merged scale
    # instance the nearest level saves 0.1% over rounding down); else one pass, rounded up
    # (the top-ups above fixed reserved counts are where per-period MILPs lose money: the more
    # capacity reserved counts carry, the less), the next level only if a pass fails
    down, near = np.floor(relax.reserved + 1e-6), np.round(relax.reserved)
    up = np.ceil(relax.reserved - 1e-6)
    levels = [down, near, up] if whole else [up, near, down]
    candidates = list({tuple(int(v) for v in r): None for r in levels})
    # (without a whole MILP after it, the pass keeps half a second for the clean-up, or
    # 15% of the time for the bound)
    budget_end = time.perf_counter() + (0.5 * left if whole else
                                        left - 0.5 if lagrangian_done else 0.85 * left)
    arrays, best_cost, pass_s = None, None, 0.0
    for n, level in enumerate(candidates):
        pass_start = time.perf_counter()
        budget = (budget_end - pass_start) / (len(candidates) - n if whole else 1)
        if arrays is not None and (not whole or budget < 0.2):
            break
        got = _period_rounding(problem, relax, max(0.2, budget), threads, gap_rel=period_gap,
                               reserved=np.array(level, dtype=int), workers=workers)
        pass_s = max(pass_s, time.perf_counter() - pass_start)
        if got is None:
            continue
        got, period_bound = got
        if independent and period_bound is not None:
            bound = max(bound, _safe_bound(period_bound, problem))
        cost = objective_of(problem, *got[:3])
        if best_cost is None or cost < best_cost - 1e-9:
            arrays, best_cost = got, cost
    if arrays is None:
        return None
    method = "lp+period-rounding"
    if _starts_priced(problem):  # the period solves do not see start costs: fill the dips
        arrays = _hold_through_dips(problem, arrays)
        best_cost = objective_of(problem, *arrays[:3])
    # improvement passes (no whole MILP follows): start each period from the reserved levels
    # the last pass settled on (re-chosen from its count profiles)
    tried: set = set()  # reserved levels already passed over
    for _ in range(3):
        left = time_limit_s - (time.perf_counter() - start)
        gap = relative_gap(best_cost, bound)
        if whole or left < 1.3 * pass_s + 0.5 or (gap is not None and gap <= gap_rel + 1e-12):
            break
        if tuple(arrays[0]) in tried:
            break
        tried.add(tuple(arrays[0]))
        more = _period_rounding(problem, relax, left - 0.5, threads, gap_rel=period_gap,
                                reserved=arrays[0], workers=workers)
        if more is None:
            break
        more = _hold_through_dips(problem, more[0])
        cost = objective_of(problem, *more[:3])
        if cost >= best_cost - 1e-9:
            break
        arrays, best_cost = more, cost
        method = "lp+period-rounding+passes"
    left = time_limit_s - (time.perf_counter() - start)
    gap = relative_gap(best_cost, bound)
    if not lagrangian_done and left > 1.0 and (gap is None or gap > gap_rel + 1e-12):
        # a slice before the whole MILP; without one, what the passes left
        lift_bound(min(LAGRANGIAN_SHARE * time_limit_s, left / 4) if whole else (left - 0.5))
    result = SolveResult("feasible", best_cost, bound, relative_gap(best_cost, bound),
                         0.0, "highs", time_limit_s)
    left = time_limit_s - (time.perf_counter() - start)
    gap = relative_gap(best_cost, bound)
    if whole and left > 1.0 and (gap is None or gap > gap_rel + 1e-12):
        # the whole-horizon MILP from arrays (no PuLP: handing 100k columns over through
        # PuLP took seconds past the limit), the incumbent as its start
        left = time_limit_s - (time.perf_counter() - start) - 0.5
        if left > 0.5:
            improved, milp_bound = _whole_milp(problem, left, gap_rel, threads, start=arrays)
            if improved is not None:
                # solutions dearer than the incumbent are no better than it
                bound = max(bound, min(_safe_bound(milp_bound, problem), best_cost))
                cost = objective_of(problem, *improved[:3])
                if cost < best_cost - 1e-9:
                    arrays, best_cost, method = improved, cost, method + "+milp"
    if bound > best_cost:  # numerical noise on proven optima
        bound = best_cost
    res = _honest(result, best_cost, bound, time.perf_counter() - start, f"highs+{method}",
                  time_limit_s)
    reserved, on_demand, spot, routing = arrays
    return CoverSolution(reserved, on_demand, spot, routing, load_of(problem, routing),
                         best_cost, res, method)


class _Infeasible(Exception):
    """The MILP is infeasible (or no solution was found at all); carries the solver facts."""

    def __init__(self, result: SolveResult) -> None:
        self.result = result
        super().__init__(f"cover problem {result.status}")


CoverInfeasible = _Infeasible


def quota_shortfall(problem: CoverProblem, *, time_limit_s: float | None = 10.0
                    ) -> dict[tuple[str, int], int]:
    """The fewest extra quota units per (group, period) that make the problem feasible.

    Solves the cover with one integer slack per (group, period) added to the quotas and a
    penalty far above any price, so the slack is minimised first and cost second.
    """
    penalty = 1e4 * (1.0 + max((max(_classes(o).values(), default=0.0) for o in problem.options),
                               default=1.0))
    slack: dict = {}
    lp, R, O, S, X = build_model(problem, quota_slack_penalty=penalty, slack=slack)
    result = solve_pulp(lp, time_limit_s=time_limit_s)
    if not result.has_solution:
        return {}
    return {key: int(round(v.varValue or 0)) for key, v in sorted(slack.items())
            if (v.varValue or 0) > 0.5}


def units_changed(problem: CoverProblem, a: tuple, b: tuple) -> float:
    """Quota units (GPUs) that differ between two covers' counts ``(reserved [J], on_demand
    [J, T], spot [J, T])``, added plus removed per option and price class; per-period classes
    are averaged over the horizon with the period weights, reserved counts (held throughout)
    count once."""
    units = np.array([float(o.units) for o in problem.options])
    w = problem.period_weights
    total = float(units @ np.abs(np.asarray(a[0], float) - np.asarray(b[0], float)))
    for k in (1, 2):
        total += float(units @ (np.abs(np.asarray(a[k], float) - np.asarray(b[k], float)) @ w))
    return total


def closest_cover(problem: CoverProblem, previous: tuple, *, cost_cap: float, start: tuple,
                  time_limit_s: float | None = 30.0, gap_rel: float = 1e-6,
                  threads: int | None = None) -> CoverSolution:
    """The cover nearest to ``previous`` among those costing at most ``cost_cap`` $/h: stable
    re-planning (a new plan that moves as few instances as its cost allowance permits).

    Same variables and rows as :func:`build_model`, plus one deviation column per count,
    ``dev >= |count - previous count|``; the objective is :func:`units_changed` against
    ``previous`` (a count in a class the problem no longer offers is a fixed removal, a
    constant), and the cost becomes a row, ``cost <= cost_cap``.

    Args:
        previous: ``(reserved [J], on_demand [J, T], spot [J, T])`` counts of the cover in
            place, over this problem's options.
        cost_cap: average $/h allowed (e.g. the cheapest cover's cost times 1.02).
        start: ``(reserved, on_demand, spot, routing)`` of a cover within the cap (e.g. the
            cheapest one found): the MIP start, and the answer when the solver finds nothing
            better in time.
    Returns a :class:`CoverSolution` whose ``result`` is about the units changed (status,
    objective = units changed, bound, gap), not about cost."""
    begin = time.perf_counter()
    _, J, T = problem.shape
    lp, R, O, S, X = build_model(problem)
    lp += pulp.LpConstraint(lp.objective, pulp.LpConstraintLE, "cost_cap", float(cost_cap))
    units = [float(o.units) for o in problem.options]
    w = problem.period_weights
    prev_r, prev_od, prev_spot = (np.asarray(a, dtype=float) for a in previous)
    target = {}  # count variable -> (previous count, weight of one unit of change)
    for j, v in R.items():
        target[v] = (prev_r[j], units[j])
    for (j, t), v in O.items():
        target[v] = (prev_od[j, t], units[j] * w[t])
    for (j, t), v in S.items():
        target[v] = (prev_spot[j, t], units[j] * w[t])
    terms, constant = [], 0.0
    for v, (p, weight) in target.items():
        dev = pulp.LpVariable(f"dev_{v.name}", 0, None)
        lp += pulp.LpConstraint(dev - v, pulp.LpConstraintGE, f"up_{v.name}", -float(p))
        lp += pulp.LpConstraint(dev + v, pulp.LpConstraintGE, f"down_{v.name}", float(p))
        terms.append((dev, weight))
    # counts in classes the problem does not offer must all go
    for j in range(J):
        constant += 0.0 if j in R else units[j] * prev_r[j]
        for t in range(T):
            constant += 0.0 if (j, t) in O else units[j] * prev_od[j, t] * w[t]
            constant += 0.0 if (j, t) in S else units[j] * prev_spot[j, t] * w[t]
    lp.setObjective(pulp.LpAffineExpression(terms, constant=constant))
    values = _start_values(problem, R, O, S, X, start)
    result = solve_pulp_with_start(lp, values, time_limit_s=time_limit_s, gap_rel=gap_rel,
                                   threads=threads)
    arrays = _extract(problem, R, O, S, X) if result.has_solution else None
    if arrays is None or objective_of(problem, *arrays[:3]) > cost_cap * (1 + 1e-9) + 1e-9:
        arrays = start  # nothing (within the cap) in time: the start stands
    moved = units_changed(problem, previous, arrays[:3])
    bound = result.bound
    if bound is not None:
        bound = min(max(bound, 0.0), moved)
    gap = relative_gap(moved, bound) if moved > 1e-9 else (0.0 if bound is not None else None)
    status = "optimal" if gap is not None and gap <= 1e-6 else (
        "feasible" if result.has_solution else "heuristic")
    res = SolveResult(status, moved, bound, 0.0 if status == "optimal" else gap,
                      time.perf_counter() - begin, result.backend, time_limit_s)
    reserved, on_demand, spot, routing = arrays
    return CoverSolution(reserved, on_demand, spot, routing, load_of(problem, routing),
                         objective_of(problem, reserved, on_demand, spot), res, "closest-milp")


def dominated_options(problem: CoverProblem) -> list[int]:
    """Options that can be dropped without changing the optimum.

    Option ``j`` is dominated by ``i`` (same quota group) when one ``j`` instance can be replaced
    by ``m = units_j / units_i`` (an integer) instances of ``i`` that cost no more in every price
    class ``j`` offers and serve at least as much of every demand: ``capacity[:, j] <=
    m * capacity[:, i]``.  (E.g. a TP-2 replica that is never more than twice as fast as a TP-1
    replica of the same GPU.)  Ties keep the lower index.
    """
    cap = problem.capacity
    J = cap.shape[1]
    dropped: list[int] = []
    for j in range(J):
        oj = problem.options[j]
        pj = _classes(oj)
        for i in range(J):
            if i == j or i in dropped:
                continue
            oi = problem.options[i]
            if oi.parts or oj.parts or oi.group != oj.group or oj.units % max(oi.units, 1):
                continue
            m = oj.units // max(oi.units, 1)
            pi = _classes(oi)
            if any(c not in pi or pi[c] * m > p + 1e-12 for c, p in pj.items()):
                continue
            if np.all(cap[:, j] <= m * cap[:, i] + 1e-12):
                if m == 1 and np.allclose(cap[:, j], cap[:, i]) and \
                        all(abs(pi[c] - p) < 1e-12 for c, p in pj.items()) and i > j:
                    continue  # identical twins: keep the first
                dropped.append(j)
                break
    return dropped
