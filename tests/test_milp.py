"""The solver layer reports the truth: optimal only when proven, bound and gap otherwise."""
import sys
from pathlib import Path

import pulp
import pytest

from solvers.milp import heuristic_result, solve_cpsat, solve_pulp


def knapsack(n=60, seed=3):
    import random
    rnd = random.Random(seed)
    w = [rnd.randint(10, 60) for _ in range(n)]
    v = [wi + rnd.randint(-5, 5) for wi in w]
    prob = pulp.LpProblem("k", pulp.LpMaximize)
    x = [pulp.LpVariable(f"x{i}", cat="Binary") for i in range(n)]
    prob += pulp.lpSum(vi * xi for vi, xi in zip(v, x))
    prob += pulp.lpSum(wi * xi for wi, xi in zip(w, x)) <= sum(w) // 2
    return prob


@pytest.mark.parametrize("backend", ["highs", "cbc"])
def test_small_problem_optimal(backend):
    p = pulp.LpProblem("t", pulp.LpMinimize)
    x = pulp.LpVariable("x", 0, cat="Integer")
    y = pulp.LpVariable("y", 0, cat="Integer")
    p += 1.01 * x + 3.67 * y
    p += 2 * x + 20 * y >= 30
    r = solve_pulp(p, backend=backend)
    assert r.status == "optimal" and r.objective == pytest.approx(7.34) and r.gap == 0.0


def test_infeasible_is_reported():
    p = pulp.LpProblem("t", pulp.LpMinimize)
    x = pulp.LpVariable("x", 0, 1)
    p += x
    p += x >= 2
    assert solve_pulp(p).status == "infeasible"


def test_maximisation_bound_is_an_upper_bound():
    r = solve_pulp(knapsack())
    assert r.status in ("optimal", "feasible")
    assert r.bound >= r.objective - 1e-6


def test_cpsat_result():
    from ortools.sat.python import cp_model
    m = cp_model.CpModel()
    x = m.NewIntVar(0, 10, "x")
    m.Add(3 * x >= 7)
    m.Minimize(x)
    solver, r = solve_cpsat(m, time_limit_s=5)
    assert r.status == "optimal" and solver.Value(x) == 3 and r.bound == 3


def test_heuristic_is_not_called_optimal_without_a_bound():
    assert heuristic_result(10.0, 0.01, "greedy").status == "heuristic"
    assert heuristic_result(10.0, 0.01, "greedy", bound=10.0).status == "optimal"
    assert heuristic_result(10.0, 0.01, "greedy", bound=9.0).gap == pytest.approx(0.1)


def test_stopping_at_a_loose_gap_is_not_called_optimal():
    r = solve_pulp(knapsack(n=80, seed=5), gap_rel=0.2)  # HiGHS stops at ~2% and calls it "Optimal"
    assert r.bound >= r.objective
    assert r.gap > 1e-6 and r.status == "feasible"
    exact = solve_pulp(knapsack(n=80, seed=5))
    assert exact.status == "optimal" and exact.gap == 0.0


def test_highs_arrays_takes_options_and_skips_unknown_ones():
    pytest.importorskip("highspy")
    import numpy as np
    from scipy import sparse

    from solvers.milp import PROOF_OPTIONS, run_highs_arrays

    # min x0 + x1 with 2 x0 + 3 x1 >= 7, x integer: optimum 3 (x0 = 2, x1 = 1)
    a = sparse.csr_matrix(np.array([[2.0, 3.0]]))
    h = run_highs_arrays(np.array([1.0, 1.0]), np.array([10.0, 10.0]), a, np.array([7.0]),
                         np.array([np.inf]), integer=[0, 1], time_limit_s=5,
                         options={**PROOF_OPTIONS, "no_such_option": 1})
    assert h.getInfo().objective_function_value == pytest.approx(3.0)
    for name, value in PROOF_OPTIONS.items():
        got = h.getOptionValue(name)
        assert (got[-1] if isinstance(got, tuple) else got) == value  # (status, value) in 1.14


def test_the_time_limit_counts_pulps_hand_over(monkeypatch):
    """HiGHS's own limit counts from its run: the time PuLP spends building the model before it
    comes off the caller's limit (0.3-0.7 s on the scale models)."""
    pytest.importorskip("highspy")
    import time

    build = pulp.HiGHS.buildSolverModel

    def slow_build(self, lp):
        time.sleep(0.4)
        return build(self, lp)

    monkeypatch.setattr(pulp.HiGHS, "buildSolverModel", slow_build)
    problem = knapsack()
    result = solve_pulp(problem, time_limit_s=1.0)
    got = problem.solverModel.getOptionValue("time_limit")
    limit = got[-1] if isinstance(got, tuple) else got
    assert limit <= 0.6 + 1e-9
    assert result.status == "optimal"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_solver_workers_stop_when_the_planner_is_killed():
    """A pool worker started with die_with_parent ends when its parent is killed (SIGKILL)
    instead of running on until its own time limit."""
    import os
    import signal
    import subprocess
    import textwrap
    import time

    script = textwrap.dedent("""
        import multiprocessing, os, signal, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from solvers.milp import die_with_parent
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                                   initializer=die_with_parent)
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 60)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=60)
    child = int(out.stdout.split()[0])

    def alive() -> bool:
        try:
            with open(f"/proc/{child}/stat") as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.time() + 10
    while alive() and time.time() < deadline:
        time.sleep(0.1)
    if alive():
        os.kill(child, signal.SIGKILL)
        pytest.fail("the worker outlived its killed parent")
