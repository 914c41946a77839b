"""The cover problem's data and what every solver of it shares: the instance kinds
(:class:`CoverOption`), demands, prices, quotas and the spot cap (:class:`CoverProblem`), a
solution (:class:`CoverSolution`), its cost (:func:`objective_of`) and load
(:func:`load_of`), and the quota helpers.  The formulation and the solvers:
:mod:`solvers.binpack` (small models, the entry point) and :mod:`solvers.cover_periods`
(big ones, by periods).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from solvers.milp import SolveResult, relative_gap

#: price classes, in the order they are reported
PRICE_CLASSES = ("reserved", "on_demand", "spot")


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
        strong_links: add the linking cuts ``x <= N`` (see :func:`solvers.binpack._add_links`);
            off by default: measured on the scale benchmark they barely lift the bound and slow
            the LP.
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
        # a capacity so small against its demand's peak rate that even max_instances
        # instances would take less of the demand than routing's 1e-9 precision is "cannot
        # serve" (its rate / capacity coefficient would also exceed what LP solvers accept)
        peak = self.rates.max(axis=1, keepdims=True)
        sliver = self.capacity * float(self.max_utilisation) * self.max_instances < 1e-9 * peak
        if sliver.any():
            self.capacity = np.where(sliver, 0.0, self.capacity)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(demands, options, periods)."""
        return self.capacity.shape[0], self.capacity.shape[1], self.rates.shape[1]

    def spot_units_allowed(self) -> np.ndarray:
        """``[T]`` most quota units on spot per period: ``spot_max_fraction`` times the units
        the period's load needs when every demand goes to its cheapest option per unit of rate
        (on-demand price where offered, else reserved, else spot) at ``max_utilisation``.
        Units are whole: the units needed are rounded up (a fleet needing 3.2 GPUs holds at
        least 4, and with a 30% allowance may run one on spot: rounding the product down
        alone gave small fleets no spot at all), the allowance down.  Fixed by the demand, so
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
        return np.floor(float(self.spot_max_fraction) * np.ceil(needed - 1e-9) + 1e-9)

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


def _clean_routing(routing: np.ndarray) -> np.ndarray:
    """Routing fractions ``[D, J, T]`` rounded to 1e-9 and renormalised per demand and period:
    solver dust removed so that plans are reproducible byte for byte."""
    routing = np.round(routing, 9)
    sums = routing.sum(axis=1, keepdims=True)
    return np.where(sums > 0, routing / np.where(sums > 0, sums, 1.0), 0.0)


def _short(load, capacity):
    """Where a load (instance-equivalents) is not served by the capacity provided: any load
    on no capacity, or more than the solvers' 1e-6 tolerance over it."""
    return (load > 0) & ((capacity <= 0) | (load > capacity + 1e-6 * (1.0 + capacity)))


def cover_violation(problem: CoverProblem, arrays: tuple) -> str | None:
    """The first constraint a cover ``(reserved, on_demand, spot, routing)`` breaks, in words,
    or ``None``: every demand routed in full to options that serve it, every load within its
    option's capacity (the solvers' 1e-6 tolerance), quotas and the spot cap in every period."""
    reserved, on_demand, spot, routing = arrays
    counts = np.asarray(reserved)[:, None] + on_demand + spot
    if min(np.min(reserved), np.min(on_demand), np.min(spot)) < 0:
        return "a negative count"
    served = routing.sum(axis=1)
    if np.any(np.abs(served - 1.0)[problem.rates > 0] > 1e-6) or np.any(routing < -1e-12):
        return "a demand not routed in full"
    if np.any(routing[problem.capacity == 0] > 1e-12):
        return "a demand routed to an option that cannot serve it"
    have = problem.max_utilisation * (np.asarray(reserved)[:, None] + on_demand
                                      + problem.spot_capacity_factor * np.asarray(spot))
    if np.any(_short(load_of(problem, routing), have)):
        return "a load above its option's capacity"
    for g, units in _group_units(problem).items():
        if np.any(units @ counts > problem.quotas[g] + 1e-9):
            return f"the quota of {g}"
    spot_units = np.array([float(o.units) for o in problem.options]) @ spot
    if np.any(spot_units > problem.spot_units_allowed() + 1e-9):
        return "the spot cap"
    return None


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


def _honest(result: SolveResult, objective: float | None, bound: float | None, time_s: float,
            backend: str, time_limit_s: float | None) -> SolveResult:
    """Status and gap from an incumbent and a bound: "optimal" only when they meet (within
    :data:`solvers.milp.OPTIMALITY_TOLERANCE`: then gap 0 and the bound reported is the
    incumbent's value, as :class:`solvers.milp.SolveResult` says)."""
    gap = relative_gap(objective, bound)
    objective = None if objective is None else float(objective)
    bound = None if bound is None else float(bound)
    if objective is None:
        status = result.status
    elif gap is not None and gap <= 1e-6 + 1e-9:  # the cutoff proof leaves exactly 1e-6
        status, gap, bound = "optimal", 0.0, objective
    else:
        status = "feasible"
    return SolveResult(status, objective, bound, gap, time_s, backend, time_limit_s)


def _safe_bound(value: float, problem: CoverProblem) -> float:
    """An LP optimum made safe against the solver's tolerances: the dual objective may exceed
    the true LP optimum by at most (dual feasibility tolerance) x (sum of variable ranges
    that matter); we take 1e-7 relative plus 1e-9 absolute, far above HiGHS's defaults."""
    return float(value) - 1e-7 * abs(float(value)) - 1e-9
