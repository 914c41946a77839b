"""solvers/partition.py: bounds, feasibility rules, optimality on brute-forced instances."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from solvers.partition import (PartitionInfeasible, PartitionProblem, evaluate, lower_bound,
                               min_rounds, solve_partition)


def _problem(lengths, sizes=(1, 2, 4), n=4, cap_per_dev=100.0, fixed=1.0, a1=0.0, a2=1.0,
             comm=0.1, **kw):
    s = np.asarray(lengths, dtype=float)
    d = np.asarray(sizes, dtype=float)
    cost = (a1 * s[:, None] ** 2 + a2 * s[:, None]) / d[None, :] + comm * s[:, None] * (d[None, :] > 1)
    return PartitionProblem(cost=cost, weight=s, devices=np.asarray(sizes), capacity=cap_per_dev * d,
                            fixed=fixed, num_devices=n, **kw)


def _configs(n, sizes):
    """Multisets of sizes adding up to n."""
    out = []

    def rec(rest, start, cur):
        if rest == 0:
            out.append(list(cur))
            return
        for j in range(start, len(sizes)):
            if sizes[j] <= rest:
                rec(rest - sizes[j], j, cur + [j])
    rec(n, 0, [])
    return out


def _brute_force_one_round(p: PartitionProblem) -> float:
    best = np.inf
    sizes = [int(x) for x in p.devices]
    allowed = p.allowed()
    for cfg in _configs(p.num_devices, sizes):
        if len(cfg) > p.n_items:
            continue
        for assign in itertools.product(range(len(cfg)), repeat=p.n_items):
            if p.nonempty_groups and len(set(assign)) < len(cfg):
                continue
            ok, t = True, 0.0
            for g, k in enumerate(cfg):
                items = [i for i, a in enumerate(assign) if a == g]
                if not all(allowed[i, k] for i in items) or p.weight[items].sum() > p.capacity[k]:
                    ok = False
                    break
                t = max(t, p.fixed[k] + p.cost[items, k].sum())
            if ok:
                best = min(best, t)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_small_instances_reach_brute_force_optimum_and_bound_is_valid(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 60, size=6)
    p = _problem(lengths, a1=0.01)
    opt = _brute_force_one_round(p)
    sol = solve_partition(p, rounds=1, time_limit_s=2.0)
    assert lower_bound(p) <= opt + 1e-9
    assert lower_bound(p, refined=False) <= lower_bound(p) + 1e-12
    assert sol.objective <= opt * 1.02 + 1e-9  # local search lands at (or next to) the optimum
    ev = evaluate(p, [[(g.kind, g.items) for g in r] for r in sol.rounds])
    assert ev["violations"] == []
    assert ev["objective"] == pytest.approx(sol.objective)


def test_status_optimal_only_when_the_bound_is_met():
    # 4 equal items, 4 devices, groups of one: the perfect split meets the bound exactly
    p = _problem([10, 10, 10, 10], sizes=(1,), n=4, comm=0.0)
    sol = solve_partition(p)
    assert sol.objective == pytest.approx(11.0)
    assert sol.result.status == "optimal" and sol.gap == pytest.approx(0.0)
    # an odd instance cannot meet the spread bound: status stays "feasible"
    p2 = _problem([10, 10, 10, 10, 10], sizes=(1,), n=4, comm=0.0)
    sol2 = solve_partition(p2)
    assert sol2.result.status == "feasible" and sol2.gap > 0


def test_memory_forces_rounds_and_every_rule_holds():
    rng = np.random.default_rng(7)
    lengths = rng.integers(10, 90, size=60)
    p = _problem(lengths, sizes=(2, 4, 8), n=16, cap_per_dev=60.0, fixed=5.0)
    m = min_rounds(p)
    assert m == int(np.ceil(lengths.sum() / (16 * 60.0)))
    sol = solve_partition(p, time_limit_s=2.0)
    assert len(sol.rounds) >= m
    ev = evaluate(p, [[(g.kind, g.items) for g in r] for r in sol.rounds])
    assert ev["violations"] == []
    for rnd in sol.rounds:  # all devices used, no empty group
        assert sum(int(p.devices[g.kind]) for g in rnd) == 16
        assert all(g.items for g in rnd)
    assert sol.lower_bound <= sol.objective


def test_refined_bound_tightens_with_one_giant_item():
    # one item whose cheapest device-time needs a small group that finishes late
    lengths = [400] + [10] * 40
    p = _problem(lengths, sizes=(1, 2, 4, 8), n=8, a1=0.01, comm=0.5, cap_per_dev=1e6)
    simple, refined = lower_bound(p, refined=False), lower_bound(p)
    assert refined > simple * 1.05
    sol = solve_partition(p, time_limit_s=2.0)
    assert refined <= sol.objective + 1e-9


def test_infeasible_item_names_capacity():
    p = _problem([10, 1000], sizes=(1, 2), n=2, cap_per_dev=100.0)
    with pytest.raises(PartitionInfeasible) as exc:
        solve_partition(p)
    assert exc.value.binding == "capacity" and exc.value.item == 1


def test_milp_path_reports_its_solver_facts_and_is_deterministic():
    rng = np.random.default_rng(3)
    lengths = rng.integers(10, 200, size=80)
    p = _problem(lengths, sizes=(2, 4, 8), n=16, a1=0.002, fixed=20.0, cap_per_dev=1e4)
    a = solve_partition(p, method="milp", time_limit_s=3.0)
    b = solve_partition(p, method="milp", time_limit_s=3.0)
    assert a.milp is not None and a.milp["backend"] == "highs"
    assert a.milp["status"] in ("feasible", "no_better_configuration")
    for r in a.milp["rounds"]:  # the MILP is warm-started by the incumbent's round ends
        assert r["milp_end"] is None or r["milp_end"] <= r["incumbent_end"]
    assert a.objective <= sum(r["incumbent_end"] for r in a.milp["rounds"]) + 1e-9
    assert [[(g.kind, g.items) for g in r] for r in a.rounds] == \
        [[(g.kind, g.items) for g in r] for r in b.rounds]
    assert a.objective == b.objective


def test_heuristic_path_without_fill_leaves_idle_devices():
    # groups of 3 cannot tile 8 devices: with fill_devices=False two groups run, 2 devices idle
    p = _problem([30] * 6, sizes=(3,), n=8, fill_devices=False, nonempty_groups=False)
    sol = solve_partition(p, method="heuristic")
    assert all(sum(int(p.devices[g.kind]) for g in r) <= 8 for r in sol.rounds)
    assert sum(len(g.items) for r in sol.rounds for g in r) == 6


def test_rounds_grow_when_long_items_cannot_share_a_round():
    # each item takes 60% of a round's memory: memory says 3 rounds, packing needs 5
    p = _problem([60] * 5, sizes=(1, 2, 4), n=4, cap_per_dev=25.0)
    assert min_rounds(p) == 3
    sol = solve_partition(p, time_limit_s=1.0)
    assert len(sol.rounds) == 5
    assert evaluate(p, [[(g.kind, g.items) for g in r] for r in sol.rounds])["violations"] == []
