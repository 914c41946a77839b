"""Big cover models solved by periods (the formulation: :mod:`solvers.binpack`).

Models with many routing columns or periods are built from numpy arrays and handed to highspy
directly (:func:`_array_model`: through PuLP, 400k columns cost several times the simplex).
Their LP relaxation gives the proven bound, lifted by a Lagrangian bound (quota, spot-cap and
start rows priced at the LP's duals, reserved counts split per period: one small MILP per
model and period, :mod:`solvers.lagrangian`); per-period MILPs given the LP's reserved counts
(each over its own LP's support plus the cheapest columns by reduced cost, on several
processes when asked; big periods model by model first, :mod:`solvers.budgets`) give the
incumbent; where the model is small enough, the whole-horizon MILP then runs from it
(:func:`_solve_by_periods`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from solvers.budgets import solve_by_budgets
from solvers.cover_model import (CoverProblem, CoverSolution, _best_reserved, _classes,
                                 _clean_routing, _fits_quotas, _group_units, _honest,
                                 _quota_bound, _safe_bound, _starts_priced, load_of,
                                 objective_of, quota_groups, starts_of)
from solvers.milp import (WRAP_UP_S, SolveResult, die_with_parent, relative_gap,
                          run_highs_arrays)


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
        counts: the LP's values of ``model``'s count columns (``None``: not known).
    """

    value: float
    reserved: np.ndarray
    model: _ArrayModel | None = None
    duals: np.ndarray | None = None
    top_up: np.ndarray | None = None
    counts: np.ndarray | None = None


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
    """Build the per-period-routing model (same rows as :func:`solvers.binpack.build_model`)
    from numpy arrays.

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
    vector of ``model`` (routing normalised per demand and period, as in
    :func:`solvers.binpack._extract`)."""
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
                         np.asarray(h.getSolution().row_dual), top_up, x[m.count_slice])


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
#: pieces proven in 3 s, gap 0.92% -> 0.70-0.79%); it stops once every piece is proven, and
#: the whole MILP after it seldom moves the bound.  0.1 -> 0.2 (at most a quarter of what the
#: passes left): the merged 1x option-noise 20 x 20 x 24 proves its 24 period pieces in every
#: run (gap 0.43%; with 0.1 some runs ended at 0.49-0.54%); 10 x 10 x 6 instances unchanged.
#: Models too big for the whole MILP run it before their passes instead
#: (:data:`LAGRANGIAN_FIRST_SHARE`)
LAGRANGIAN_SHARE = 0.2
#: routing columns kept per demand in a period's MILP: the period LP's support first, then the
#: cheapest columns by reduced cost, this many in all (:func:`_kept_columns`).  Measured on the 1x bucket-noise 20 x 20 x 24 scale
#: instance (sum of the 24 periods' on-demand / spot costs at the pass's time shares): 2 139.5,
#: 3 132.1, 4 131.5, 5 131.3, 6 131.3, 8 132.4 $/h; the whole cover 250.9 -> 250.1 $/h from
#: 3 to 5 (seeds 1, 2: -0.15%, -0.2%; 20 x 20 x 6: -0.3 to -0.4%).  With 3, off-peak periods,
#: where the fixed reserved counts leave a small top-up, lack the columns their optimum uses
PERIOD_COLUMNS = 5
#: of those, the slots held for options the period LP uses (for any demand), cheapest first:
#: with few instances per option an integer plan puts small demands on the spare room of the
#: instances it opens anyway, which the reduced costs (all near zero for such demands) do not
#: rank.  Measured (30 s, 2 workers, seeds 0 / 1 / 2, with the passes of
#: :func:`_solve_by_periods` going on to other levels): cost-model x0.1 20 x 20 x 24 45.76 /
#: 45.74 / 45.35 -> 44.23 / 43.95 / 43.54 $/h (those periods' MILPs over all columns reach
#: 44.20 at seed 0's reserved levels); x1 430.77 / 420.65 / 414.08 -> 430.82 / 420.65 / 414.08;
#: 1x bucket-noise 249.75 / 242.68 / 230.06 -> 249.81 / 242.75 / 230.12 (its instances fill
#: up: the reduced costs rank well).  All five slots on used options: bucket-noise +0.03-0.07%;
#: three columns beside the five: worse on its big periods (larger MILPs)
OPEN_OPTION_COLUMNS = 2
#: a period with at most this many routing columns counts as small: its MILP skips that
#: restriction, the Lagrangian bound solves it whole (:func:`_lagrangian_bound`), and a
#: single-period cover starts its run beside only once stage 1 proves nothing
SMALL_PERIOD_COLUMNS = 2_000


def _kept_columns(reduced: np.ndarray, used: np.ndarray) -> np.ndarray:
    """``[D, J]`` routing columns a period's restricted MILP keeps: per demand the
    :data:`PERIOD_COLUMNS` cheapest by reduced cost (``reduced``: ``[D, J]`` $/h, ``-inf`` on
    the LP's support, ``inf`` where no column exists), :data:`OPEN_OPTION_COLUMNS` of those
    slots held for the cheapest options among ``used`` (``[J]`` bool: options the LP uses);
    slots those leave empty go to the next cheapest columns."""
    def cheapest(values: np.ndarray, n) -> np.ndarray:
        # the n (per demand: an int or a [D] array) smallest finite values of each row
        rank = np.empty(values.shape, dtype=int)
        np.put_along_axis(rank, np.argsort(values, axis=1, kind="stable"),
                          np.arange(values.shape[1])[None, :], axis=1)
        return (rank < np.reshape(n, (-1, 1))) & (values < np.inf)

    kept = cheapest(reduced, PERIOD_COLUMNS - OPEN_OPTION_COLUMNS)
    kept |= cheapest(np.where(used[None, :] & ~kept, reduced, np.inf), OPEN_OPTION_COLUMNS)
    return kept | cheapest(np.where(kept, np.inf, reduced), PERIOD_COLUMNS - kept.sum(axis=1))


def _period_solve(problem: CoverProblem, t: int, reserved: np.ndarray, time_limit_s: float,
                  threads: int | None, gap_rel: float):
    """Period ``t`` alone with the reserved counts fixed: its LP over every routing column,
    then a MILP over the LP's support and the cheapest columns by reduced cost
    (:func:`_kept_columns`) (a restriction: its solutions are feasible).  Where the period holds
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
        used = np.zeros(J, dtype=bool)
        used[full.jj[support]] = True
        allowed = np.zeros((D, J, T), dtype=bool)
        allowed[:, :, t] = _kept_columns(rcs, used)
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
    scale = max(0.1, time_limit_s - WRAP_UP_S) / max(float(ends.max()), 1e-300)
    limits = [max(0.05, scale * float(load[t])) if load[t] > 0 else TRIVIAL_PERIOD_S
              for t in order]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                             initializer=die_with_parent) as pool:
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
    die_with_parent()
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


#: relative excess of a bound over a cover's cost still taken for rounding noise; beyond it the
#: bound is discarded as wrong (see :func:`_solve_by_periods`)
BOUND_NOISE = 1e-7


def _routing_columns(problem: CoverProblem) -> int:
    cap, rates = problem.capacity, problem.rates
    return int((cap > 0).sum(axis=1) @ (rates > 0).sum(axis=1))


def _level_estimate(problem: CoverProblem, relax: _LpRelaxation, level: np.ndarray) -> float:
    """Rough $/h of a cover holding ``level`` reserved instances: their price, plus the
    capacity the LP provides in each (option, period) above the level, bought at the LP's own
    mix of on-demand and spot there (on demand where the LP bought none); whole instances
    ignored.  Ranks the candidate levels of one pass (:func:`_solve_by_periods`)."""
    m, x = relax.model, relax.counts
    if m is None or x is None:
        return math.nan
    J, T = problem.shape[1], problem.shape[2]
    w = problem.period_weights
    cost = m.cost[m.count_slice]
    reserved_price = np.zeros(J)
    reserved_price[m.kj[m.kind == 0]] = cost[m.kind == 0]
    paid, bought = np.zeros((J, T)), np.zeros((J, T))  # $/h and capacity of the LP's top-ups
    for k, factor in ((1, 1.0), (2, float(problem.spot_capacity_factor))):
        sel = m.kind == k
        np.add.at(paid, (m.kj[sel], m.kt[sel]), cost[sel] / w[m.kt[sel]] * x[sel])
        np.add.at(bought, (m.kj[sel], m.kt[sel]), factor * x[sel])
    fallback = np.array([_classes(o).get("on_demand", math.inf) for o in problem.options])
    unit = np.where(bought > 1e-12, paid / np.maximum(bought, 1e-12), fallback[:, None])
    need = np.maximum(relax.reserved[:, None] + bought - np.asarray(level, float)[:, None], 0.0)
    return float(reserved_price @ np.asarray(level, float)
                 + w @ np.where(need > 0, unit * need, 0.0).sum(axis=0))


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
       the level the LP's counts price cheapest, the next one only if that pass fails, then
       improvement passes), then
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
    bound = lp_bound = _safe_bound(relax.value, problem)
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
    # instance the nearest level saves 0.1% over rounding down); else one pass, from the level
    # the LP's own counts price cheapest (_level_estimate: "up" on the synthetic scale
    # instances, where the top-ups above fixed reserved counts are where per-period MILPs lose
    # money; "down" on a ~30-GPU cost-model fleet, where rounding up a 0.08 TP 8 replica buys 8
    # reserved GPUs: 47.61 -> 45.41 $/h), the next level only if a pass fails
    down, near = np.floor(relax.reserved + 1e-6), np.round(relax.reserved)
    up = np.ceil(relax.reserved - 1e-6)
    levels = [down, near, up] if whole else [up, near, down]
    candidates = list({tuple(int(v) for v in r): None for r in levels})
    if not whole:  # one pass: the level the LP's own counts price cheapest first
        estimate = {c: _level_estimate(problem, relax, np.array(c)) for c in candidates}
        if all(math.isfinite(v) for v in estimate.values()):
            candidates.sort(key=lambda c: estimate[c])
    # (without a whole MILP after it, the pass keeps half a second for the clean-up, or
    # 15% of the time for the bound)
    budget_end = time.perf_counter() + (0.5 * left if whole else
                                        left - 0.5 if lagrangian_done else 0.85 * left)
    arrays, best_cost, pass_s = None, None, 0.0
    tried: set = set()  # reserved levels passed over
    for n, level in enumerate(candidates):
        pass_start = time.perf_counter()
        budget = (budget_end - pass_start) / (len(candidates) - n if whole else 1)
        if arrays is not None and (not whole or budget < 0.2):
            break
        tried.add(level)
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
    # improvement passes while the time lasts (no whole MILP follows): from the reserved levels
    # the best cover settled on (re-chosen from its count profiles), else from the candidate
    # levels not passed over yet.  Small fleets, whose period MILPs end early, get through
    # several: the level decides the most there (cost-model x0.1 20 x 20 x 6, seeds 0 / 1 / 2,
    # 30 s: 44.70 / 43.06 / 43.45 -> 44.70 / 42.95 / 42.47 $/h)
    while not whole:
        left = time_limit_s - (time.perf_counter() - start)
        gap = relative_gap(best_cost, bound)
        if left < 1.3 * pass_s + 0.5 or (gap is not None and gap <= gap_rel + 1e-12):
            break
        settled = tuple(int(v) for v in arrays[0])
        level = settled if settled not in tried else next(
            (c for c in candidates if c not in tried), None)
        if level is None:
            break
        tried.add(level)
        pass_start = time.perf_counter()
        more = _period_rounding(problem, relax, left - 0.5, threads, gap_rel=period_gap,
                                reserved=np.array(level, dtype=int), workers=workers)
        pass_s = max(pass_s, time.perf_counter() - pass_start)
        if more is None:
            continue
        more = _hold_through_dips(problem, more[0])
        cost = objective_of(problem, *more[:3])
        if cost < best_cost - 1e-9:
            arrays, best_cost = more, cost
            method = "lp+period-rounding+passes"
    left = time_limit_s - (time.perf_counter() - start)
    gap = relative_gap(best_cost, bound)
    if not lagrangian_done and left > 1.0 and (gap is None or gap > gap_rel + 1e-12):
        # a slice before the whole MILP; without one, what the passes left
        lift_bound(min(LAGRANGIAN_SHARE * time_limit_s, left / 4) if whole else (left - WRAP_UP_S))
    result = SolveResult("feasible", best_cost, bound, relative_gap(best_cost, bound),
                         0.0, "highs", time_limit_s)
    left = time_limit_s - (time.perf_counter() - start)
    gap = relative_gap(best_cost, bound)
    if whole and left > 1.0 and (gap is None or gap > gap_rel + 1e-12):
        # the whole-horizon MILP from arrays (no PuLP: handing 100k columns over through
        # PuLP took seconds past the limit), the incumbent as its start
        left = time_limit_s - (time.perf_counter() - start) - WRAP_UP_S
        if left > 0.5:
            improved, milp_bound = _whole_milp(problem, left, gap_rel, threads, start=arrays)
            if improved is not None:
                # solutions dearer than the incumbent are no better than it
                bound = max(bound, min(_safe_bound(milp_bound, problem), best_cost))
                cost = objective_of(problem, *improved[:3])
                if cost < best_cost - 1e-9:
                    arrays, best_cost, method = improved, cost, method + "+milp"
    if bound > best_cost * (1.0 + BOUND_NOISE) + 1e-9:
        # a bound above a cover we hold is wrong (a solver's bad proof on a piece): keep only
        # the LP's, which needs no MILP
        bound = min(lp_bound, best_cost)
    bound = min(bound, best_cost)  # numerical noise on proven optima
    res = _honest(result, best_cost, bound, time.perf_counter() - start, f"highs+{method}",
                  time_limit_s)
    reserved, on_demand, spot, routing = arrays
    return CoverSolution(reserved, on_demand, spot, routing, load_of(problem, routing),
                         best_cost, res, method)
