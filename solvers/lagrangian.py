"""A Lagrangian lower bound for MILPs that fall apart into blocks once a few rows are priced.

Generic (arrays in, a number out).  Minimise ``c x`` subject to ``row_lo <= A x <= row_hi``,
``0 <= x <= col_hi``, some columns integer.  Given duals ``y`` of the LP relaxation:

1. *Linking rows* (e.g. quotas and a spot cap shared by every model of a period) are priced
   out: ``c' = c - A_L^T y_L`` plus the constant ``sum y_L b_L`` (``b`` the row bound the dual's
   sign makes active).  For any ``y_L`` of the right sign this is a relaxation (weak duality).
2. *Split columns* (e.g. reserved counts held over every period) are cut into one copy per
   block they touch, each copy integer like the original and costed ``a_b^T y_b`` plus a share
   of the column's reduced cost, so the copies' costs add up to ``c'``: setting every copy to
   the original's value gives the same cost, so the copies relax the equality between them.
3. What is left falls apart into connected blocks (in the fleet cover: one model in one
   period).  The bound is the constant plus, per block, the larger of its LP bound from the
   duals (weak duality, no solve) and the dual bound of its MILP, solved while time lasts.

At the LP's duals the blocks' LP bounds add up to the LP optimum, so every block MILP solved
lifts the bound by that block's integrality gap; a block stopped by the time limit still gives
its proven dual bound.  Measured on the 1x bucket-noise scale instance (72 blocks of ~6,000
columns): the LP's 247.52 $/h rises to 248.43 with every block proven (55 core-seconds with
:data:`solvers.milp.PROOF_OPTIONS`, 76 without).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from solvers.budgets import connected_pieces
from solvers.milp import PROOF_OPTIONS, die_with_parent, run_highs_arrays


@dataclass(frozen=True)
class LagrangianBound:
    """Outcome of :func:`block_lagrangian_bound`.

    Attributes:
        value: the lower bound (objective units); ``-inf`` when the duals give none.
        lp_value: the same bound with no block MILP solved (the duals' weak-duality bound).
        blocks: blocks the model fell apart into; ``solved``: block MILPs run;
        ``proven``: those that ended proven optimal.
    """

    value: float
    lp_value: float
    blocks: int
    solved: int
    proven: int


def _clip_duals(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Row duals with the sign their active bound allows (minimisation, HiGHS's convention:
    a dual < 0 prices the upper bound, > 0 the lower); a dual whose bound is infinite is 0."""
    y = np.asarray(y, dtype=float).copy()
    y[(y < 0) & ~np.isfinite(hi)] = 0.0
    y[(y > 0) & ~np.isfinite(lo)] = 0.0
    return y


def _active(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``y_r b_r`` per row, ``b_r`` the bound the dual's sign makes active (0 where ``y = 0``)."""
    return np.where(y < 0, y * np.where(np.isfinite(hi), hi, 0.0),
                    np.where(y > 0, y * np.where(np.isfinite(lo), lo, 0.0), 0.0))


#: reduced costs above this count as 0 on columns without an upper bound (the LP's duals are
#: dual feasible up to the simplex's tolerance; the caller's safety margin covers the rest)
DUAL_TOLERANCE = 1e-9


def _column_floor(reduced: np.ndarray, col_hi: np.ndarray) -> float:
    """``sum_c min(0, d_c) hi_c``: what columns with a negative reduced cost ``d_c`` can take
    off a dual bound (``-inf`` if one of them has no upper bound)."""
    finite = np.isfinite(col_hi)
    if np.any(~finite & (reduced < -DUAL_TOLERANCE)):
        return -math.inf
    neg = finite & (reduced < 0)
    return float(np.dot(reduced[neg], col_hi[neg]))


@dataclass
class _Block:
    a: object  # CSR [rows, cols]
    cost: np.ndarray
    col_hi: np.ndarray
    row_lo: np.ndarray
    row_hi: np.ndarray
    integer: np.ndarray
    lp_bound: float


#: coefficients below this (and above 0) in rows with no lower bound are dropped from a block
#: before its MILP: with every column >= 0 that only loosens the row, a relaxation, so the
#: bound stays valid.  HiGHS's MIP presolve (1.12 to 1.15.1) proves wrong optima on fleet-cover
#: blocks holding loads of 2e-9..1e-6 instance (a tiny bucket's rate / capacity): on the
#: cost-model scale instance (x10) blocks claimed "optimal" 27.755 and 20.634 against feasible
#: points of 27.5025 and 20.2136, lifting the bound above a feasible plan (431.18 against
#: 431.04 $/h); with those coefficients dropped (or presolve off) 27.4811 and 20.2065
BLOCK_COEFFICIENT_FLOOR = 1e-6


def _without_tiny(block: _Block):
    """The block's matrix without the coefficients of :data:`BLOCK_COEFFICIENT_FLOOR`."""
    from scipy import sparse

    a = sparse.csr_matrix(block.a, copy=True)
    upper_only = np.repeat(~np.isfinite(block.row_lo), np.diff(a.indptr))
    a.data[upper_only & (a.data > 0) & (a.data < BLOCK_COEFFICIENT_FLOOR)] = 0.0
    a.eliminate_zeros()
    return a


def _solve_block(block: _Block, time_limit_s: float, threads: int | None) -> tuple[float, bool]:
    """``(dual bound, proven)`` of one block's MILP within ``time_limit_s`` (HiGHS), tiny
    coefficients dropped (:data:`BLOCK_COEFFICIENT_FLOOR`)."""
    import highspy

    h = run_highs_arrays(block.cost, block.col_hi, _without_tiny(block), block.row_lo, block.row_hi,
                         integer=np.nonzero(block.integer)[0], time_limit_s=time_limit_s,
                         threads=threads, gap_rel=1e-6, options=PROOF_OPTIONS)
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kInfeasible:  # only by tolerances when the whole
        return -math.inf, False  # model has a solution: take nothing from it
    bound = float(h.getInfo().mip_dual_bound)
    proven = status == highspy.HighsModelStatus.kOptimal
    return (bound if math.isfinite(bound) else -math.inf), proven


def _split_blocks(a, cost, col_hi, row_lo, row_hi, integer, y, linking, split) -> tuple:
    """Price out the linking rows, split the split columns per block; returns ``(constant,
    blocks, isolated)`` where ``isolated`` is the bound of the columns left in no block."""
    from scipy import sparse

    a = sparse.csr_matrix(a)
    nrow, n = a.shape
    y = _clip_duals(y, row_lo, row_hi)
    side = np.zeros(nrow, dtype=bool)
    side[np.asarray(linking, dtype=int)] = True
    y_side = np.where(side, y, 0.0)
    priced = np.asarray(cost - a.T @ y_side, dtype=float)
    const = float(_active(y_side, row_lo, row_hi).sum())
    main = np.nonzero(~side)[0]
    am = a[main].tocsc()
    y_main = y[main]
    is_split = np.zeros(n, dtype=bool)
    is_split[np.asarray(split, dtype=int)] = True
    # blocks: connected pieces of the main rows through the columns that are not split
    nnz_col = np.diff(am.indptr)
    kept = np.nonzero(~is_split & (nnz_col > 0))[0]
    row_label, col_label = connected_pieces(am[:, kept])
    # columns in no main row sit alone, at whichever bound their cost prefers
    alone = np.nonzero(nnz_col == 0)[0]
    isolated = _column_floor(priced[alone], col_hi[alone])
    # split columns: one copy per block touched, costed a_b^T y_b + a share of the reduced cost
    copies: dict[int, list[tuple]] = {}
    for c in np.nonzero(is_split & (nnz_col > 0))[0]:
        seg = slice(am.indptr[c], am.indptr[c + 1])
        rows, vals = am.indices[seg], am.data[seg]
        labels = row_label[rows]
        pieces = np.unique(labels)
        shares = np.array([float(np.dot(vals[labels == b], y_main[rows[labels == b]]))
                           for b in pieces])
        reduced = float(priced[c]) - float(shares.sum())
        weights = (np.maximum(shares, 0.0) / shares[shares > 0].sum() if (shares > 0).any()
                   else np.full(len(pieces), 1.0 / len(pieces)))
        for b, share, wgt in zip(pieces, shares, weights):
            sel = labels == b
            copies.setdefault(int(b), []).append((c, rows[sel], vals[sel], share + reduced * wgt))
    am_rows = am.tocsr()
    row_order = np.argsort(row_label, kind="stable")
    row_cuts = np.searchsorted(row_label[row_order], np.unique(row_label))
    col_order = np.argsort(col_label, kind="stable")
    blocks = []
    for b, rows in zip(np.unique(row_label), np.split(row_order, row_cuts[1:])):
        lo_c, hi_c = np.searchsorted(col_label[col_order], [b, b + 1])
        cols = kept[col_order[lo_c:hi_c]]
        sub = am_rows[rows][:, cols]
        bcost, bhi, bint = priced[cols], col_hi[cols], integer[cols]
        extra = copies.get(int(b), [])
        if extra:
            local = np.full(len(main), -1)
            local[rows] = np.arange(len(rows))
            ri = np.concatenate([local[rr] for _, rr, _, _ in extra])
            ci = np.concatenate([np.full(len(rr), k) for k, (_, rr, _, _) in enumerate(extra)])
            vv = np.concatenate([v for _, _, v, _ in extra])
            sub = sparse.hstack([sub, sparse.csr_matrix((vv, (ri, ci)),
                                                        shape=(len(rows), len(extra)))]).tocsr()
            bcost = np.concatenate([bcost, [cc for *_, cc in extra]])
            bhi = np.concatenate([bhi, [col_hi[c] for c, *_ in extra]])
            bint = np.concatenate([bint, [bool(integer[c]) for c, *_ in extra]])
        rlo, rhi = row_lo[main[rows]], row_hi[main[rows]]
        yb = y_main[rows]
        lp = float(_active(yb, rlo, rhi).sum()) + _column_floor(bcost - sub.T @ yb, bhi)
        blocks.append(_Block(sparse.csr_matrix(sub), np.asarray(bcost, dtype=float),
                             np.asarray(bhi, dtype=float), rlo, rhi,
                             np.asarray(bint, dtype=bool), lp))
    return const, blocks, isolated


def block_lagrangian_bound(a, cost: np.ndarray, col_hi: np.ndarray, row_lo: np.ndarray,
                           row_hi: np.ndarray, integer: np.ndarray, row_duals: np.ndarray, *,
                           linking_rows, split_columns, time_limit_s: float,
                           workers: int = 1, threads: int | None = 1) -> LagrangianBound:
    """Lower bound on ``min c x`` (see the module docstring) from the LP's ``row_duals``.

    Block MILPs run costliest first (their LP bounds: the most money, usually the largest
    integrality gaps) on ``workers`` processes until ``time_limit_s`` (seconds, wall) is spent;
    blocks not reached keep their LP bound; blocks stopped unproven by their share of the time
    run again with what is left.  Every number added is a proven bound, so the
    result is valid whatever the time limit (up to the solvers' tolerances).
    """
    start = time.perf_counter()
    const, blocks, isolated = _split_blocks(a, np.asarray(cost, dtype=float),
                                            np.asarray(col_hi, dtype=float),
                                            np.asarray(row_lo, dtype=float),
                                            np.asarray(row_hi, dtype=float),
                                            np.asarray(integer, dtype=bool),
                                            np.asarray(row_duals, dtype=float),
                                            linking_rows, split_columns)
    lp_bounds = np.array([b.lp_bound for b in blocks])
    base = const + isolated
    lp_value = base + float(lp_bounds.sum())
    best = lp_bounds.copy()
    order = [i for i in np.argsort(-lp_bounds, kind="stable")
             if blocks[i].integer.any() and math.isfinite(lp_bounds[i])]
    solved: set = set()
    done: set = set()
    deadline = start + time_limit_s
    # blocks stopped by their share of the time are run again with the time the others left
    # (a block's limit is its share of the LP bounds, and some cheap blocks are hard ones)
    for _ in range(3):
        if not order or not math.isfinite(lp_value) or deadline - time.perf_counter() < 0.5:
            break
        results = _run_blocks(blocks, order, deadline, workers, threads)
        for i, (bound, ok) in results.items():
            solved.add(i)
            if ok:
                done.add(i)
            best[i] = max(best[i], bound)
        # (a block with no bound at all, e.g. infeasible by tolerances, is not run again)
        order = [i for i in order if i in results and not results[i][1]
                 and math.isfinite(results[i][0])]
    return LagrangianBound(base + float(best.sum()), lp_value, len(blocks), len(solved),
                           len(done))


def _run_blocks(blocks: list[_Block], order: list[int], deadline: float, workers: int,
                threads: int | None) -> dict[int, tuple[float, bool]]:
    """Solve blocks in ``order`` until ``deadline`` (``time.perf_counter`` seconds); each gets
    the time left, spread over the workers, in proportion to its share of the LP bounds of the
    blocks not yet finished (the costly blocks are the hard ones; cheap ones end early and
    leave their time to the rest)."""
    weight = {i: max(blocks[i].lp_bound, 0.0) + 1e-9 for i in order}
    results: dict[int, tuple[float, bool]] = {}

    def limit(i: int, unfinished: list[int]) -> float:
        left = deadline - time.perf_counter()
        share = weight[i] / sum(weight[k] for k in unfinished)
        return min(left, left * workers * share)

    if workers <= 1:
        for k, i in enumerate(order):
            if deadline - time.perf_counter() < 0.05:
                break
            results[i] = _solve_block(blocks[i], limit(i, order[k:]), threads)
        return results
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                             initializer=die_with_parent) as pool:
        running: dict = {}
        queue = list(order)
        while queue or running:
            while queue and len(running) < workers:
                if deadline - time.perf_counter() < 0.05:
                    queue.clear()
                    break
                i = queue[0]
                tl = limit(i, queue + list(running.values()))
                queue.pop(0)
                running[pool.submit(_solve_block, blocks[i], tl, threads)] = i
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                results[running.pop(f)] = f.result()
    return results
