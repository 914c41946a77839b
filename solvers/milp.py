"""One thin, honest layer over PuLP (HiGHS, CBC fallback) and OR-Tools CP-SAT.

Every solve returns a :class:`SolveResult` with the solver's real status, the incumbent
objective, the best proven bound and the relative gap.  ``status == "optimal"`` only when the
solver proved optimality (within its gap tolerance); a run stopped by its time limit with an
incumbent is ``"feasible"``, with no incumbent ``"no_solution"``.  PuLP's CBC wrapper famously
reports "Optimal" for a time-limited incumbent; we never pass that on.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import pulp

#: relative gap below which a proven incumbent is called optimal
OPTIMALITY_TOLERANCE = 1e-6
#: seconds a time-limited solver keeps back at the end of the caller's limit: HiGHS stops up
#: to ~0.3 s after its own limit on the 415k-column scale models, and reading the solution back,
#: trimming idle instances and the repair take the rest
WRAP_UP_S = 0.5

#: statuses a plan may carry
STATUSES = ("optimal", "feasible", "infeasible", "unbounded", "no_solution", "heuristic")


@dataclass(frozen=True)
class SolveResult:
    """Outcome of one solve.

    Attributes:
        status: one of :data:`STATUSES`.
        objective: incumbent objective value (problem units), ``None`` without an incumbent.
        bound: best proven bound on the objective (lower bound when minimising), or ``None``.
        gap: relative gap ``|objective - bound| / max(|objective|, 1e-9)``; ``None`` when
            unknown.  "optimal" means proven within :data:`OPTIMALITY_TOLERANCE`; its gap is
            then 0 and its bound the objective (a dual bound that close varies in the last
            digits with the path the solver took, and plans must not)
        time_s: wall time of the solve in seconds.
        backend: "highs", "cbc", "cp-sat" or the name of the heuristic.
        time_limit_s: the limit the solve ran under (``None`` = none).
    """

    status: str
    objective: float | None
    bound: float | None
    gap: float | None
    time_s: float
    backend: str
    time_limit_s: float | None = None

    @property
    def has_solution(self) -> bool:
        return self.status in ("optimal", "feasible", "heuristic")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("objective", "bound", "gap", "time_s"):
            if out[key] is not None:
                out[key] = float(out[key])
        return out


def die_with_parent() -> None:
    """Have the kernel stop this process (SIGTERM) when its parent dies: worker processes of
    the solvers (period MILPs, Lagrangian blocks, the run beside) otherwise keep running until
    their own time limits after the planner is killed.  For process pools' ``initializer``;
    Linux only (``prctl(PR_SET_PDEATHSIG)``), a no-op elsewhere.  The signal follows the thread
    that started the process: the pools here are started from the main thread."""
    import ctypes
    import os
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took hold
        os._exit(1)


def relative_gap(objective: float | None, bound: float | None) -> float | None:
    """``|objective - bound| / max(|objective|, 1e-9)``, or ``None`` when either is unknown."""
    if objective is None or bound is None or not math.isfinite(bound):
        return None
    return abs(objective - bound) / max(abs(objective), 1e-9)


def heuristic_result(objective: float, time_s: float, name: str,
                     bound: float | None = None) -> SolveResult:
    """Result of a heuristic (greedy, LPT, water-filling); status "heuristic" unless a bound
    proves it optimal."""
    gap = relative_gap(objective, bound)
    status = "optimal" if gap is not None and gap <= 1e-9 else "heuristic"
    return SolveResult(status, float(objective), bound, gap, time_s, name)


def _highs_solve(problem: pulp.LpProblem, time_limit_s: float | None, gap_rel: float,
                 threads: int | None, mip_start: dict | None = None,
                 options: dict | None = None) -> SolveResult:
    import highspy

    start = time.perf_counter()
    solver = _HighsWithStart(mip_start or {}, msg=False, timeLimit=time_limit_s, gapRel=gap_rel,
                             threads=threads, deadline=None if time_limit_s is None
                             else start + time_limit_s, **(options or {}))
    problem.solve(solver)
    elapsed = time.perf_counter() - start
    highs = problem.solverModel
    model_status = highs.getModelStatus()
    info = highs.getInfo()
    sign = -1.0 if problem.sense == pulp.LpMaximize else 1.0
    constant = float(problem.objective.constant) if problem.objective is not None else 0.0
    has_incumbent = info.primal_solution_status == 2  # kSolutionStatusFeasible
    S = highspy.HighsModelStatus
    is_mip = any(v.cat == pulp.LpInteger for v in problem.variables())
    objective = None
    if has_incumbent:
        objective = float(pulp.value(problem.objective)) if problem.objective is not None else 0.0
    if is_mip:
        raw_bound = info.mip_dual_bound
        bound = sign * raw_bound + constant if math.isfinite(raw_bound) else None
    else:
        bound = objective if model_status == S.kOptimal else None
    if model_status == S.kOptimal:
        if bound is None:
            bound = objective
        gap = relative_gap(objective, bound) or 0.0
        # HiGHS says "optimal" once the gap is below the caller's gap_rel; we say so only when
        # the gap is within OPTIMALITY_TOLERANCE (then gap 0, bound = objective), else report
        # "feasible" with the real gap
        status = "optimal" if gap <= OPTIMALITY_TOLERANCE else "feasible"
        if status == "optimal":
            gap, bound = 0.0, objective
        return SolveResult(status, objective, bound, gap, elapsed, "highs", time_limit_s)
    if model_status in (S.kInfeasible,):
        status = "infeasible"
    elif model_status in (S.kUnbounded, S.kUnboundedOrInfeasible):
        status = "unbounded"
    else:  # time limit, iteration limit, interrupt...
        status = "feasible" if has_incumbent else "no_solution"
    return SolveResult(status, objective, bound, relative_gap(objective, bound), elapsed, "highs", time_limit_s)


class _HighsWithStart(pulp.HiGHS):
    """PuLP's highspy interface, handing HiGHS a start solution (``setSolution``) before it runs
    and holding it to a wall-clock ``deadline`` (``time.perf_counter()`` seconds).

    ``start`` maps PuLP variables (or their names) to values; variables left out are left for
    HiGHS to complete (it repairs a partial start with a sub-MIP when the start is infeasible or
    incomplete).  The start changes only how fast an incumbent appears, never what is proven.
    HiGHS's own time limit counts from its ``run``; PuLP's hand-over before it (building the
    model, the start) took 0.3-0.7 s on the 415k-column scale model, so the limit is set to the
    time left to the deadline just before the run.
    """

    def __init__(self, start: dict, deadline: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start = start
        self.deadline = deadline

    def callSolver(self, lp: pulp.LpProblem) -> None:  # noqa: N802 (PuLP's name)
        import highspy

        if self.deadline is not None:
            lp.solverModel.setOptionValue(
                "time_limit", float(max(0.05, self.deadline - time.perf_counter())))

        if self.start:
            by_name = {(k if isinstance(k, str) else k.name): float(v)
                       for k, v in self.start.items()}
            variables = lp.variables()
            index, value = [], []
            for var in variables:
                if var.name in by_name:
                    index.append(var.index)
                    value.append(by_name[var.name])
            if index:
                sol = highspy.HighsSolution()
                if len(index) == len(variables):
                    col = [0.0] * len(variables)
                    for i, v in zip(index, value):
                        col[i] = v
                    sol.col_value = col
                    sol.value_valid = True
                    lp.solverModel.setSolution(sol)
                else:
                    lp.solverModel.setSolution(len(index), index, value)
        lp.solverModel.run()


def solve_pulp_with_start(problem: pulp.LpProblem, start: dict | None = None, *,
                          time_limit_s: float | None = 30.0, gap_rel: float = 1e-6,
                          threads: int | None = None, options: dict | None = None
                          ) -> SolveResult:
    """:func:`solve_pulp` on HiGHS with a MIP start and extra HiGHS options.

    Args:
        problem: the model; its variables hold the incumbent afterwards.
        start: values of (some of) the variables, keyed by ``LpVariable`` or name; HiGHS checks
            the start itself and uses it as its first incumbent when it is feasible.
        options: extra HiGHS options (e.g. ``{"mip_heuristic_effort": 0.3}``).
    Other arguments and the honest status / bound / gap rules are those of :func:`solve_pulp`;
    falls back to :func:`solve_pulp` (no start) when highspy is missing.
    """
    try:
        import highspy  # noqa: F401
    except ImportError:
        return solve_pulp(problem, time_limit_s=time_limit_s, backend="cbc", gap_rel=gap_rel,
                          threads=threads)
    return _highs_solve(problem, time_limit_s, gap_rel, threads, mip_start=start, options=options)


#: HiGHS options for small block MILPs that are solved to be proven (a Lagrangian piece, one
#: model of a period under budgets): the root heuristics RINS, RENS, root reduced cost and
#: feasibility jump off.  There the branch and bound finds the optimum itself, and the
#: heuristics' sub-MIPs took most of the root's time.  Measured on the 72 Lagrangian pieces of
#: the 1x bucket-noise 20 x 20 x 24 scale instance (one core, each proven): 75.6 s -> 55.0 s.
#: Period 10's three model blocks under budgets were proven in 1.62 / 1.58 / 1.28 s before,
#: 0.78 / 1.23 / 0.80 s after.  Whole 30-s runs of that instance: seed 0 gap 0.824% -> 0.764%,
#: seed 1 0.608% -> 0.603%, seed 2 0.711% -> 0.605%; never worse on 20 x 20 x 6 or 10 x 10 x 6.
#: Not used for the period MILPs: there the incumbent comes from the blocks, and the
#: switches changed nothing measurable.
PROOF_OPTIONS = {"mip_heuristic_run_rins": False, "mip_heuristic_run_rens": False,
                 "mip_heuristic_run_root_reduced_cost": False,
                 "mip_heuristic_run_feasibility_jump": False}


def run_highs_arrays(cost, col_hi, a, row_lo, row_hi, *, integer=None,
                     time_limit_s: float, threads: int | None = None, gap_rel: float = 1e-4,
                     start=None, options: dict | None = None):
    """Minimise ``cost x`` over ``row_lo <= a x <= row_hi``, ``0 <= x <= col_hi`` with highspy
    directly from arrays (no PuLP: handing 100k+ columns over through PuLP costs more than the
    solve).  ``integer``: indices of integer columns (none: the LP); ``start``: a feasible
    point handed over as the first incumbent (prunes from the first node, proves nothing);
    ``options``: further HiGHS options by name (one this HiGHS lacks is skipped).
    Returns the ``Highs`` object after ``run`` (status, info, solution, duals)."""
    import highspy
    import numpy as np

    a = a.tocsr()
    n = a.shape[1]
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(max(0.05, time_limit_s)))
    if threads is not None:
        h.setOptionValue("threads", int(threads))
    idx = np.zeros(0, dtype=np.int32) if integer is None else np.asarray(integer, dtype=np.int32)
    if len(idx):
        h.setOptionValue("mip_rel_gap", float(gap_rel))
    for name, value in (options or {}).items():
        h.setOptionValue(name, value)
    h.addCols(n, np.asarray(cost, dtype=float), np.zeros(n), np.asarray(col_hi, dtype=float), 0,
              np.zeros(n, dtype=np.int32), np.zeros(0, dtype=np.int32), np.zeros(0))
    h.addRows(a.shape[0], np.asarray(row_lo, dtype=float), np.asarray(row_hi, dtype=float), a.nnz,
              a.indptr.astype(np.int32), a.indices.astype(np.int32), a.data)
    if len(idx):
        h.changeColsIntegrality(len(idx), idx, np.full(len(idx), highspy.HighsVarType.kInteger))
    if start is not None:
        sol = highspy.HighsSolution()
        sol.col_value = np.asarray(start, dtype=float)
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    return h


def _cbc_solve(problem: pulp.LpProblem, time_limit_s: float | None, gap_rel: float,
               threads: int | None) -> SolveResult:
    solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, gapRel=gap_rel, threads=threads)
    start = time.perf_counter()
    problem.solve(solver)
    elapsed = time.perf_counter() - start
    objective = None
    if problem.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        objective = float(pulp.value(problem.objective)) if problem.objective is not None else 0.0
    hit_limit = time_limit_s is not None and elapsed >= 0.95 * time_limit_s
    if problem.status == pulp.LpStatusInfeasible:
        status = "infeasible"
    elif problem.status == pulp.LpStatusUnbounded:
        status = "unbounded"
    elif objective is None:
        status = "no_solution"
    elif problem.sol_status == pulp.LpSolutionOptimal and not hit_limit and gap_rel <= OPTIMALITY_TOLERANCE:
        status = "optimal"
    else:  # CBC through PuLP gives no bound after a time limit: say so
        status = "feasible"
    bound = objective if status == "optimal" else None
    gap = 0.0 if status == "optimal" else None
    return SolveResult(status, objective, bound, gap, elapsed, "cbc", time_limit_s)


def solve_pulp(problem: pulp.LpProblem, *, time_limit_s: float | None = 30.0,
               backend: str = "highs", gap_rel: float = 1e-6,
               threads: int | None = None) -> SolveResult:
    """Solve a PuLP problem and report status, incumbent, bound and gap honestly.

    Args:
        problem: the model; its variables hold the incumbent afterwards.
        time_limit_s: wall-clock limit in seconds (``None``: none).
        backend: "highs" (default) or "cbc"; HiGHS falls back to CBC when highspy is missing.
        gap_rel: relative gap at which the solver may stop; the result is "optimal" only when
            the real gap is at most :data:`OPTIMALITY_TOLERANCE`, else "feasible" with its gap.
        threads: solver threads (``None``: solver default).
    """
    if backend == "highs":
        try:
            import highspy  # noqa: F401
        except ImportError:
            backend = "cbc"
    if backend == "highs":
        return _highs_solve(problem, time_limit_s, gap_rel, threads)
    if backend == "cbc":
        return _cbc_solve(problem, time_limit_s, gap_rel, threads)
    raise ValueError(f"unknown MILP backend '{backend}' (expected 'highs' or 'cbc')")


def solve_cpsat(model: Any, *, time_limit_s: float | None = 30.0, workers: int = 2,
                seed: int = 0, solver: Any = None) -> tuple[Any, SolveResult]:
    """Solve an OR-Tools CP-SAT model deterministically.

    Returns the ``CpSolver`` (to read values from) and the :class:`SolveResult`.
    ``workers`` defaults to 2 (our CI machines have 2 cores); ``seed`` and
    ``interleave_search`` keep runs reproducible.
    """
    from ortools.sat.python import cp_model

    solver = solver or cp_model.CpSolver()
    if time_limit_s is not None:
        solver.parameters.max_time_in_seconds = float(time_limit_s)
    solver.parameters.num_workers = int(workers)
    solver.parameters.random_seed = int(seed)
    start = time.perf_counter()
    code = solver.Solve(model)
    elapsed = time.perf_counter() - start
    has_objective = model.HasObjective()
    objective = bound = None
    if code in (cp_model.OPTIMAL, cp_model.FEASIBLE) and has_objective:
        objective = float(solver.ObjectiveValue())
        bound = float(solver.BestObjectiveBound())
    if code == cp_model.OPTIMAL:
        status = "optimal"
    elif code == cp_model.FEASIBLE:
        status = "feasible"
    elif code == cp_model.INFEASIBLE:
        status = "infeasible"
    elif code == cp_model.MODEL_INVALID:
        raise ValueError(f"CP-SAT model invalid: {model.Validate()}")
    else:
        status = "no_solution"
    gap = 0.0 if status == "optimal" else relative_gap(objective, bound)
    return solver, SolveResult(status, objective, bound, gap, elapsed, "cp-sat", time_limit_s)
