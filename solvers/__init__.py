"""Generic optimisation: MILP / CP-SAT wrappers, bin packing, assignment, partition, search.

Knows nothing about LLMs; imports only numpy, scipy, networkx, pulp and ortools.
"""
from solvers.milp import SolveResult, solve_pulp, solve_cpsat, heuristic_result

__all__ = ["SolveResult", "solve_pulp", "solve_cpsat", "heuristic_result"]
