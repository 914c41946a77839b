"""solvers.budgets: room on shared rows split by an LP point, blocks solved one at a time."""
import numpy as np
import pytest
from scipy import sparse

from solvers.budgets import connected_pieces, solve_by_budgets
from solvers.milp import run_highs_arrays


def _two_blocks(quota: float):
    """Two blocks, each: cover a load of 2.5 with integer counts of a small (capacity 1,
    cost 1) or a large (capacity 3, cost 2.4) instance; the large ones of both blocks share
    ``quota``.  Columns: x_small_0, x_large_0, x_small_1, x_large_1 (all integer).
    Rows: block 0 cover, block 1 cover, the shared quota (linking, last)."""
    a = sparse.csr_matrix(np.array([[1.0, 3.0, 0.0, 0.0],
                                    [0.0, 0.0, 1.0, 3.0],
                                    [0.0, 1.0, 0.0, 1.0]]))
    cost = np.array([1.0, 2.4, 1.0, 2.4])
    return (cost, np.full(4, 10.0), a, np.array([2.5, 2.5, -np.inf]),
            np.array([np.inf, np.inf, quota]), np.ones(4, dtype=bool))


def _lp_point(cost, col_hi, a, row_lo, row_hi):
    h = run_highs_arrays(cost, col_hi, a, row_lo, row_hi, time_limit_s=10)
    return np.asarray(h.getSolution().col_value)


def test_connected_pieces_label_rows_and_columns_of_each_block():
    a = sparse.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=float))
    rows, cols = connected_pieces(a)
    assert rows[0] == cols[0] == cols[1]
    assert rows[1] == cols[2] != rows[0]
    assert len({rows[2], cols[3], rows[0], rows[1]}) == 4  # empty row and column: alone


@pytest.mark.parametrize("quota", [1.0, 2.0])
def test_blocks_under_their_budgets_are_feasible_together(quota):
    cost, hi, a, lo, up, integer = _two_blocks(quota)
    x_lp = _lp_point(cost, hi, a, lo, up)
    x = solve_by_budgets(cost, hi, a, lo, up, integer, 2, x_lp, time_limit_s=10)
    assert x is not None
    assert np.allclose(x, np.round(x))
    act = a @ x
    assert np.all(act >= lo - 1e-9) and np.all(act <= up + 1e-9)
    # the exact MILP: each block takes one large + 0 small (2.4) if the quota allows,
    # else 3 small (3.0); with quota 1 one block must do without the large instance
    exact = run_highs_arrays(cost, hi, a, lo, up, integer=np.arange(4), time_limit_s=10)
    assert cost @ x == pytest.approx(exact.getInfo().objective_function_value)


def test_room_a_block_leaves_passes_to_the_next():
    """The LP gives each block 0.83 of the quota of 2 (floors 0): the first block gets the
    whole room less the later block's floor, takes 1, and the second still gets the 1 left."""
    cost, hi, a, lo, up, integer = _two_blocks(2.0)
    x_lp = _lp_point(cost, hi, a, lo, up)
    assert x_lp[1] + x_lp[3] == pytest.approx(5.0 / 3.0)
    x = solve_by_budgets(cost, hi, a, lo, up, integer, 2, x_lp, time_limit_s=10)
    assert x[1] == 1 and x[3] == 1


def test_no_split_without_two_blocks_or_with_a_lower_bounded_linking_row():
    cost, hi, a, lo, up, integer = _two_blocks(2.0)
    x_lp = _lp_point(cost, hi, a, lo, up)
    assert solve_by_budgets(cost, hi, a, lo, up, integer, 3, x_lp, time_limit_s=10) is None
    lo2 = lo.copy()
    lo2[2] = 0.5
    assert solve_by_budgets(cost, hi, a, lo2, up, integer, 2, x_lp, time_limit_s=10) is None
    joined = sparse.vstack([a[:2], sparse.csr_matrix(np.ones((1, 4))), a[2:]]).tocsr()
    assert solve_by_budgets(cost, hi, joined, np.array([2.5, 2.5, 0.0, -np.inf]),
                            np.array([np.inf, np.inf, np.inf, 2.0]), integer, 3, x_lp,
                            time_limit_s=10) is None  # one block: nothing to split
