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
per-period models are solved by a decomposition instead (:mod:`solvers.cover_periods`): the LP
relaxation's value is the proven bound, lifted by a Lagrangian bound (quota, spot-cap and start
rows priced at the LP's duals, reserved counts split per period: one small MILP per model and
period, :mod:`solvers.lagrangian`); per-period MILPs given the LP's reserved counts (each
over its own LP's support plus the cheapest columns by reduced cost, on several processes when
asked) give the incumbent.  When the limit hits before any incumbent, a greedy cover is
returned (status "heuristic") with the solver's bound.

The problem's data and the helpers every solver shares are in :mod:`solvers.cover_model`
(re-exported here: ``from solvers.binpack import CoverProblem`` keeps working).
"""
from __future__ import annotations

import math
import time

import numpy as np
import pulp

from solvers import cover_periods
from solvers.cover_model import (PRICE_CLASSES, CoverOption, CoverProblem, CoverSolution,
                                 _best_reserved, _classes, _clean_routing, _honest,
                                 _quota_bound, _reference_prices, _safe_bound, _starts_priced,
                                 _short, cover_violation, load_of, objective_of, quota_groups,
                                 quota_usage, start_cost_of, starts_of)
from solvers.cover_periods import (_finish_beside, _routing_columns, _solve_by_periods,
                                   _start_beside, parallel_workers)
from solvers.milp import (WRAP_UP_S, SolveResult, heuristic_result, relative_gap,
                          solve_pulp, solve_pulp_with_start)

#: the cover solver's public names (those from :mod:`solvers.cover_model` and
#: :mod:`solvers.cover_periods` re-exported)
__all__ = ["PRICE_CLASSES", "CoverInfeasible", "CoverOption", "CoverProblem", "CoverSolution",
           "build_model", "closest_cover", "cover_violation", "dominated_options", "greedy_cover",
           "load_of", "merge_proportional", "objective_of", "parallel_workers", "quota_groups",
           "quota_shortfall", "quota_usage", "solve_cover", "start_cost_of", "starts_of",
           "units_changed"]


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


def _instances(load: float) -> int:
    """Whole instances for a load (instance-equivalents): rounded up past a 1e-9 tolerance,
    and at least one for any load at all."""
    return max(math.ceil(load - 1e-9), 1) if load > 0 else 0


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
                new_count, old_count = _instances(load[j] + extra), _instances(load[j])
                if any(g in problem.quotas
                       and used.get(g, 0.0) + (new_count - old_count) * n > problem.quotas[g] + 1e-9
                       for g, n in quota_usage(opt).items()):
                    continue
                cands.append(((new_count - old_count) * price[j] + extra * price[j] * 1e-3, int(j), extra))
            if not cands:
                return None
            _, j, extra = min(cands)
            added = _instances(load[j] + extra) - _instances(load[j])
            for g, n in quota_usage(problem.options[j]).items():
                used[g] = used.get(g, 0.0) + added * n
            load[j] += extra
            routing[d, j, t] = 1.0
        on_demand[:, t] = [_instances(x) for x in load]
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


def _serve_every_load(problem: CoverProblem, arrays: tuple) -> tuple:
    """Counts that serve every load the routing sends: a MILP's feasibility tolerance (about
    1e-6 instance) lets a load that small ride on an option with no instance (a tiny rate, or
    a vast capacity), which would name a pool the plan does not have.  Where an option is
    short, its smallest loads move to options with room in that period (within :func:`_short`'s
    tolerance where none has more) until it is not; where that is not enough, on-demand
    instances are added (spot or reserved where on demand is not offered).  Returns ``arrays``
    itself when every load was served."""
    reserved, on_demand, spot, routing = arrays
    u, f = float(problem.max_utilisation), float(problem.spot_capacity_factor)
    cap, rates = problem.capacity, problem.rates
    inv = np.divide(1.0, cap, out=np.zeros_like(cap), where=cap > 0)
    load = load_of(problem, routing)

    def provided() -> np.ndarray:
        return u * (reserved[:, None] + on_demand + f * spot)

    have = provided()
    unserved = _short(load, have)
    if not unserved.any():
        return arrays
    reserved, on_demand, spot, routing = (np.array(a, copy=True)
                                          for a in (reserved, on_demand, spot, routing))
    classes = [_classes(o) for o in problem.options]
    for j, t in zip(*np.nonzero(unserved)):
        routed = np.nonzero(routing[:, j, t] > 0)[0]
        for d in routed[np.argsort(routing[routed, j, t] * rates[routed, t] * inv[routed, j],
                                   kind="stable")]:
            if not _short(load[j, t], have[j, t]):
                break
            extra = routing[d, j, t] * rates[d, t] * inv[d]  # [J] its load on each option
            room = have[:, t] - load[:, t]
            fits = (cap[d] > 0) & (have[:, t] > 0) & (room >= extra)
            fits[j] = False
            if not fits.any():  # a full option takes it within _short's tolerance
                room = room + 1e-6 * (1.0 + have[:, t])
                fits = (cap[d] > 0) & (have[:, t] > 0) & (room >= extra)
                fits[j] = False
            if fits.any():
                k = int(np.nonzero(fits)[0][np.argmax(room[fits])])
                routing[d, k, t] += routing[d, j, t]
                routing[d, j, t] = 0.0
                load[k, t] += extra[k]
                load[j, t] = float(routing[:, j, t] @ (rates[:, t] * inv[:, j]))
        if _short(load[j, t], have[j, t]):
            c = classes[j]
            kind = "on_demand" if "on_demand" in c else ("spot" if "spot" in c else "reserved")
            size = u * (f if kind == "spot" else 1.0)
            add = max(1, math.ceil((load[j, t] - have[j, t]) / size - 1e-9))
            if kind == "reserved":
                reserved[j] += add
            else:
                (on_demand if kind == "on_demand" else spot)[j, t] += add
            have = provided()
    return reserved, on_demand, spot, _clean_routing(routing)


def one_instance_bound(problem: CoverProblem) -> float:
    """A lower bound on any cover ($/h): every period with load needs at least one instance
    of an option serving its demands, so the cheapest reserved instance or, in every such
    period, the cheapest on-demand or spot one.  Above the LP's bound only when the load is a
    sliver of one instance."""
    rates = problem.rates
    loaded = rates.sum(axis=0) > 0
    if not loaded.any():
        return 0.0
    serving = (problem.capacity[rates.sum(axis=1) > 0] > 0).any(axis=0)
    classes = [_classes(o) for j, o in enumerate(problem.options) if serving[j]]
    cheapest_reserved = min((c["reserved"] for c in classes if "reserved" in c), default=math.inf)
    cheapest_other = min((p for c in classes for k, p in c.items() if k != "reserved"),
                         default=math.inf)
    per_period = float(problem.period_weights[loaded].sum()) * cheapest_other
    bound = min(cheapest_reserved, per_period)
    return bound if math.isfinite(bound) else 0.0


def solve_cover(problem: CoverProblem, *, time_limit_s: float | None = 30.0,
                backend: str = "highs", gap_rel: float = 1e-6,
                threads: int | None = None, polish: bool = True,
                workers: int = 1) -> CoverSolution:
    """Solve a covering problem (see the module docstring for the formulation and
    :func:`_solve_cover` for the stages), then drop idle instances (:func:`_trim_idle`) and
    serve any load the solver's tolerance left on an option with no instance
    (:func:`_serve_every_load`, weighed against :func:`greedy_cover` where it adds instances):
    the status and gap are those of the cover returned."""
    sol = _solve_cover(problem, time_limit_s=time_limit_s, backend=backend, gap_rel=gap_rel,
                       threads=threads, polish=polish, workers=workers)
    start = time.perf_counter()
    trimmed = _trim_idle(problem, (sol.reserved, sol.on_demand, sol.spot, sol.routing))
    arrays, method = _serve_every_load(problem, trimmed), sol.method + "+trim"
    repaired = arrays is not trimmed
    if repaired:
        method = sol.method + "+served"
        # the greedy cover where the repair failed or had to add instances (on a tiny load it
        # may have bought a dear one): not where it only moved loads, as on the scale
        # instances, where greedy costs ~1 s past the time limit for a plan ~60% dearer
        failed = cover_violation(problem, arrays) is not None
        repair_cost = objective_of(problem, *arrays[:3])
        if failed or repair_cost > objective_of(problem, *trimmed[:3]):
            greedy = greedy_cover(problem)
            if greedy is not None and cover_violation(problem, greedy) is None and (
                    failed or objective_of(problem, *greedy[:3]) < repair_cost - 1e-12):
                arrays, method = greedy, "greedy"
    reserved, on_demand, spot, routing = arrays
    cost = objective_of(problem, reserved, on_demand, spot)
    if not repaired and cost >= sol.cost_per_hour - 1e-12:
        return sol
    res = sol.result
    bound = res.bound
    if repaired:
        bound = max(-math.inf if bound is None else bound, one_instance_bound(problem))
    time_s = res.time_s + time.perf_counter() - start
    if res.status == "heuristic":
        res = heuristic_result(cost, time_s, res.backend, bound=bound)
        res = SolveResult(res.status, res.objective, res.bound, res.gap, time_s, res.backend,
                          sol.result.time_limit_s)
    else:
        res = _honest(res, cost, bound, time_s, res.backend, res.time_limit_s)
    return CoverSolution(reserved, on_demand, spot, routing, load_of(problem, routing), cost,
                         res, method)


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
              if may_beside and _routing_columns(problem) > cover_periods.SMALL_PERIOD_COLUMNS
              else None)
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
        left = time_limit_s - (time.perf_counter() - start) - WRAP_UP_S
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
    """The MILP with the incumbent ``best`` as a start; returns ``(result, arrays or None)``.
    ``time_limit_s`` counts from the call (the start's hand-over included)."""
    deadline = time.perf_counter() + time_limit_s
    if backend == "highs":
        try:
            import highspy  # noqa: F401
            start = _start_values(problem, R, O, S, X, best)
            res = solve_pulp_with_start(lp, start, time_limit_s=deadline - time.perf_counter(),
                                        gap_rel=gap_rel, threads=threads)
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
    if arrays is not None:
        arrays = _serve_every_load(problem, arrays)  # the MILP's tolerance: no load on no instance
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
