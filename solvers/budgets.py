"""A primal heuristic for MILPs whose blocks share a few capacity rows: split the rows' room
between the blocks by an LP point's use of it, then solve the blocks one at a time.

Generic (arrays in, a column vector out).  Minimise ``c x`` subject to
``row_lo <= A x <= row_hi``, ``0 <= x <= col_hi``, some columns integer, where the rows before
``first_linking`` fall apart into connected blocks (in the fleet cover: one model in one period)
and the *linking* rows from ``first_linking`` on are capacities (``<=`` rows: GPU quotas, a spot
cap) shared by the blocks.

Resource-directive decomposition: each block gets a budget on every linking row and its own
MILP with that budget as the row's bound, so any set of block solutions is feasible together.
Blocks run costliest first; a block's budget is what the blocks before it left of the row, less
what the LP point gives the blocks after it (rounded down: counts are integers), so room a block
leaves unused passes on.  A block MILP is a few hundred rows where the whole is thousands: HiGHS
proves it, or comes close, in a fraction of a second.  Measured on the 1x bucket-noise
20 x 20 x 24 scale instance, reserved counts fixed (16 periods with a top-up, the sum of their
on-demand / spot $/h): the period MILP 123.7 in 0.9 s per period, 121.0 in 1.8 s; its three
model blocks with budgets 120.6 in 0.9 s, 120.2 in 6 s (LP 118.2; the periods' Lagrangian
bound, every model block proven at the LP's prices of the shared rows: 119.1).  Measured, not
kept: the blocks' costs with the shared rows also priced at the LP's duals (121.2 against
120.3 at 2.7 s per period); budgets from the priced blocks' own use of the rows where that
breaks a row (120.24: the priced blocks break the H200 quota or the spot cap in most periods).
"""
from __future__ import annotations

import time

import numpy as np

from solvers.milp import PROOF_OPTIONS, run_highs_arrays


def connected_pieces(a) -> tuple[np.ndarray, np.ndarray]:
    """``(row_label [rows], col_label [n])`` of sparse ``a`` (``[rows, n]``): rows and columns
    in the same connected piece (rows joined through the columns they share) get the same
    label; a row or column with no entry is a piece of its own."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    a = sparse.csr_matrix(a)
    graph = sparse.bmat([[None, a], [a.T, None]]).tocsr()
    graph.data[:] = 1.0
    _, label = connected_components(graph, directed=False)
    return label[:a.shape[0]], label[a.shape[0]:]


def solve_by_budgets(cost, col_hi, a, row_lo, row_hi, integer, first_linking: int,
                     x_lp: np.ndarray, *, time_limit_s: float, threads: int | None = 1,
                     gap_rel: float = 1e-4) -> np.ndarray | None:
    """A feasible point of the MILP (see the module docstring) or ``None``: one linking row
    with a lower bound, fewer than two blocks, or a block MILP without an incumbent in time
    (its budget too tight, or too little time).

    ``x_lp``: an LP point (``[n]``, e.g. the relaxation's optimum) whose use of the linking
    rows sets the budgets; ``integer``: ``[n]`` bool; ``time_limit_s``: wall seconds for all
    blocks, shared in proportion to their LP cost (time a block leaves unused passes on)."""
    from scipy import sparse

    start = time.perf_counter()
    a = sparse.csr_matrix(a)
    cost, x_lp = np.asarray(cost, dtype=float), np.asarray(x_lp, dtype=float)
    col_hi, integer = np.asarray(col_hi, dtype=float), np.asarray(integer, dtype=bool)
    row_lo, row_hi = np.asarray(row_lo, dtype=float), np.asarray(row_hi, dtype=float)
    linking = np.arange(first_linking, a.shape[0])
    if np.isfinite(row_lo[linking]).any():
        return None
    main = a[:first_linking]
    row_label, col_label = connected_pieces(main)
    if (np.diff(main.tocsc().indptr) == 0).any():  # a column no block holds
        return None
    pieces = np.unique(col_label)
    if len(pieces) < 2:
        return None
    blocks = [np.nonzero(col_label == b)[0] for b in pieces]
    block_rows = [np.nonzero(row_label == b)[0] for b in pieces]
    a_link = a[linking].tocsc()
    usage = np.stack([a_link[:, cols] @ x_lp[cols] for cols in blocks], axis=1)
    floors = np.floor(usage + 1e-6)
    weight = np.array([max(float(cost[cols] @ x_lp[cols]), 0.0) for cols in blocks])
    order = np.argsort(-weight, kind="stable")
    hi_link = row_hi[linking]
    used = np.zeros(len(linking))
    x = np.zeros(a.shape[1])
    for n, b in enumerate(order):
        cols = blocks[b]
        later = floors[:, order[n + 1:]].sum(axis=1)
        budget = hi_link - used - later
        rows = block_rows[b]
        sub = sparse.vstack([a[rows][:, cols], a_link[:, cols].tocsr()]).tocsr()
        left = time_limit_s - (time.perf_counter() - start)
        share = weight[b] / max(float(weight[order[n:]].sum()), 1e-300)
        h = run_highs_arrays(cost[cols], col_hi[cols], sub,
                             np.concatenate([row_lo[rows], np.full(len(linking), -np.inf)]),
                             np.concatenate([row_hi[rows], budget]),
                             integer=np.nonzero(integer[cols])[0],
                             time_limit_s=max(0.05, left * share if weight[b] > 0 else left),
                             threads=threads, gap_rel=gap_rel, options=PROOF_OPTIONS)
        if h.getInfo().primal_solution_status != 2:  # kSolutionStatusFeasible
            return None
        x[cols] = np.asarray(h.getSolution().col_value)
        used += a_link[:, cols] @ x[cols]
    return x
