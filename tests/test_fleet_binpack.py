"""The covering MILP (solvers.binpack): Mélange optima, quotas, spot cap, reserved, greedy."""
from __future__ import annotations

import json

import numpy as np
import pytest

from solvers.binpack import (CoverInfeasible, CoverOption, CoverProblem, greedy_cover,
                             objective_of, quota_shortfall, solve_cover)

TOY_T = {"A10G": [[2, 1], [5, 2]], "A100": [[20, 20], [40, 20]]}
TOY_SHARES = np.array([[0.2, 0.1], [0.5, 0.2]])


def _toy(slices=1, quotas=None, rate=30.0):
    opts = [CoverOption("A10G", "A10G", 1, {"on_demand": 1.01}),
            CoverOption("A100", "A100", 1, {"on_demand": 3.67})]
    cap = np.stack([np.ravel(TOY_T[g]) for g in ("A10G", "A100")], axis=1)
    return CoverProblem(opts, cap, TOY_SHARES.ravel() * rate, quotas=quotas or {}, slices=slices)


def test_melange_toy_exact():
    sol = solve_cover(_toy())
    assert sol.cost_per_hour == pytest.approx(6.70)
    assert list(sol.on_demand[:, 0]) == [3, 1]
    assert sol.result.status == "optimal" and sol.result.gap == 0.0
    # every demand fully routed, and loads within counts
    assert np.allclose(sol.routing.sum(axis=1), 1.0)
    assert np.all(sol.load[:, 0] <= sol.on_demand[:, 0] + 1e-6)


def test_continuous_routing_is_cheaper_or_equal():
    cont = solve_cover(_toy(slices=None))
    assert cont.cost_per_hour <= 6.70 + 1e-9
    assert cont.cost_per_hour == pytest.approx(4.68)


def test_quota_forces_other_type_and_shortfall():
    sol = solve_cover(_toy(quotas={"A100": 0}))
    assert sol.on_demand[1, 0] == 0
    assert sol.cost_per_hour == pytest.approx(1.01 * sol.on_demand[0, 0])
    bad = _toy(quotas={"A100": 0, "A10G": 5})
    with pytest.raises(CoverInfeasible):
        solve_cover(bad)
    short = quota_shortfall(bad)
    assert sum(short.values()) > 0 and set(g for g, _ in short) <= {"A100", "A10G"}


def test_zero_capacity_means_cannot_serve():
    opts = [CoverOption("a", "a", 1, {"on_demand": 1.0}), CoverOption("b", "b", 1, {"on_demand": 5.0})]
    cap = np.array([[0.0, 10.0], [4.0, 0.0]])
    sol = solve_cover(CoverProblem(opts, cap, [5.0, 3.0]))
    assert sol.routing[0, 0, 0] == 0.0 and sol.routing[1, 1, 0] == 0.0
    assert list(sol.on_demand[:, 0]) == [1, 1]
    with pytest.raises(ValueError, match="no option"):
        solve_cover(CoverProblem(opts, np.array([[0.0, 0.0]]), [1.0]))


def _periods_problem(**kw):
    opts = [CoverOption("g", "g", 1, {"on_demand": 1.0, "reserved": 0.6, "spot": 0.3})]
    rates = np.array([[2.0, 10.0, 10.0, 2.0]])
    kw.setdefault("spot_max_fraction", 0.0)  # no spot unless a test allows it
    return CoverProblem(opts, np.array([[1.0]]), rates, **kw)


def test_reserved_baseline_and_on_demand_peaks():
    sol = solve_cover(_periods_problem())
    # reserved pays off for a level held in more than 60% of the horizon: 2 GPUs all day
    assert sol.reserved[0] == 2
    assert list(sol.on_demand[0]) == [0, 8, 8, 0]
    assert sol.cost_per_hour == pytest.approx(2 * 0.6 + 0.5 * 8 * 1.0)


def test_spot_cap():
    sol = solve_cover(_periods_problem(spot_max_fraction=0.25))
    # spot at most a quarter of the GPUs the load needs (2, 10, 10, 2): 0, 2, 2, 0 whole GPUs
    assert _periods_problem(spot_max_fraction=0.25).spot_units_allowed().tolist() == [0, 2, 2, 0]
    assert sol.spot[0].tolist() == [0, 2, 2, 0]  # spot is cheapest, used up to the cap
    free = solve_cover(_periods_problem(spot_max_fraction=1.0))
    assert free.cost_per_hour < sol.cost_per_hour


def test_a_small_fleet_gets_its_share_of_spot():
    # 3.2 GPUs of load: the fleet holds 4 whole GPUs, and 30% of them allows one on spot
    # (30% of 3.2 rounded down would allow none)
    opts = [CoverOption("g", "g", 1, {"on_demand": 1.0, "spot": 0.3})]
    problem = CoverProblem(opts, np.array([[1.0]]), np.array([[3.2]]), spot_max_fraction=0.3)
    assert problem.spot_units_allowed().tolist() == [1.0]
    sol = solve_cover(problem)
    assert sol.spot[0, 0] == 1 and sol.result.status == "optimal"


def test_spot_cap_base_cannot_be_padded():
    # a slow type beside a dear one with cheap spot: were the cap a share of the GPUs in the
    # plan (or of the GPUs its routed load needs), slow GPUs idle or fed a trickle of traffic
    # (0.5 $/h each) would buy room for dear spot (saves 8 $/h per spot GPU)
    opts = [CoverOption("dear", "dear", 1, {"on_demand": 10.0, "spot": 2.0}),
            CoverOption("slow", "slow", 1, {"on_demand": 0.5})]
    problem = CoverProblem(opts, np.array([[1.0, 0.01]]), np.array([[10.0]]),
                           spot_max_fraction=0.5)
    # the base: 10 GPUs, the load on its cheapest option per unit of rate (dear: 10 $/h per
    # rate against 50 for slow)
    assert problem.spot_units_allowed().tolist() == [5.0]
    sol = solve_cover(problem)
    assert sol.result.status == "optimal"
    assert sol.spot[0, 0] == 5 and sol.on_demand[0, 0] == 5 and sol.on_demand[1, 0] == 0
    assert sol.cost_per_hour == pytest.approx(60.0)


def test_spot_capacity_factor_derates():
    sol = solve_cover(_periods_problem(spot_max_fraction=1.0, spot_capacity_factor=0.5))
    for t in range(4):
        assert sol.reserved[0] + sol.on_demand[0, t] + 0.5 * sol.spot[0, t] >= [2, 10, 10, 2][t] - 1e-6


def test_shared_routing_same_table_every_period():
    opts = [CoverOption("a", "a", 1, {"on_demand": 1.0}), CoverOption("b", "b", 2, {"on_demand": 1.5})]
    cap = np.array([[2.0, 5.0], [1.0, 4.0]])
    rates = np.array([[3.0, 6.0, 1.0], [2.0, 2.0, 4.0]])
    per = solve_cover(CoverProblem(opts, cap, rates, routing="per_period"))
    shared = solve_cover(CoverProblem(opts, cap, rates, routing="shared"))
    assert np.allclose(shared.routing[:, :, 0], shared.routing[:, :, 1])
    assert per.cost_per_hour <= shared.cost_per_hour + 1e-9


def test_greedy_is_feasible():
    p = _toy()
    p.slices = None
    reserved, od, spot, routing = greedy_cover(p)
    assert np.allclose(routing.sum(axis=1), 1.0)
    assert objective_of(p, reserved, od, spot) >= 4.68 - 1e-9


@pytest.mark.parametrize("name", ["synth_4gpu_10x10_sf1.json", "synth_4gpu_10x10_sf16.json"])
def test_mélange_synthetic_optimum(shared_data, name):
    cfg = json.loads((shared_data / "fleet_bench" / name).read_text())
    gpus = list(cfg["gpu_info"])
    cap = np.stack([np.ravel(cfg["gpu_info"][g]["tputs"]) for g in gpus], axis=1)
    opts = [CoverOption(g, g, 1, {"on_demand": cfg["gpu_info"][g]["cost"]}) for g in gpus]
    p = CoverProblem(opts, cap, np.ravel(cfg["workload_distribution"]) * cfg["total_request_rate"],
                     slices=cfg["slice_factor"])
    sol = solve_cover(p, time_limit_s=20)
    assert sol.result.status == "optimal"
    assert sol.cost_per_hour == pytest.approx(196.19, abs=1e-6)


def test_strong_links_keep_the_optimum():
    plain = solve_cover(_toy(slices=None))
    p = _toy(slices=None)
    p.strong_links = True
    assert solve_cover(p).cost_per_hour == pytest.approx(plain.cost_per_hour)


def test_large_problem_reports_honest_gap():
    """A multi-period instance under a short limit: any status but "optimal" must carry a
    positive gap computed from a valid bound (objective >= bound)."""
    rng = np.random.default_rng(3)
    opts = [CoverOption(f"o{j}", f"g{j % 3}", 1 + j % 2,
                        {"on_demand": 1.0 + j, "reserved": 0.6 * (1.0 + j)}) for j in range(6)]
    cap = rng.uniform(0.5, 5.0, (40, 6))
    rates = np.outer(rng.uniform(0.1, 2.0, 40), [1.0, 2.0, 3.0, 1.5])
    sol = solve_cover(CoverProblem(opts, cap, rates), time_limit_s=3)
    r = sol.result
    assert r.objective == pytest.approx(sol.cost_per_hour)
    assert r.bound is not None and r.bound <= r.objective + 1e-6
    if r.status == "optimal":
        assert r.gap == 0.0
    else:
        assert r.gap > 0
    assert np.allclose(sol.routing.sum(axis=1), 1.0, atol=1e-6)
    for t in range(4):
        assert np.all(sol.load[:, t] <= sol.counts(t) + 1e-6)


# ---------------------------------------------------------------- large per-period instances


def _random_periods_problem(seed=1, D=6, T=3):
    """Small instance with everything the decomposition must respect: 3 quota groups, two
    shapes (units 1 and 2), reserved / on-demand / spot, a spot cap and a derated spot."""
    rng = np.random.default_rng(seed)
    opts, cols = [], []
    for g, price in (("a", 1.0), ("b", 1.8), ("c", 3.1)):
        base = rng.uniform(0.5, 3.0, D) * price ** 0.9
        for units in (1, 2):
            cols.append(base * units * rng.uniform(0.8, 1.1, D))
            opts.append(CoverOption(f"{g}{units}", g, units, {
                "on_demand": price * units, "reserved": 0.6 * price * units,
                "spot": 0.35 * price * units}))
    cap = np.stack(cols, axis=1)
    cap[rng.random(cap.shape) < 0.2] = 0.0
    cap[:, 0] = np.maximum(cap[:, 0], 0.3)  # every demand servable
    curve = 0.5 + 0.5 * np.sin(np.linspace(0, 2 * np.pi, T, endpoint=False))
    rates = np.outer(rng.uniform(0.5, 6.0, D), 0.1 + curve)
    return CoverProblem(opts, cap, rates, quotas={"a": 40, "b": 12, "c": 10},
                        spot_max_fraction=0.3, spot_capacity_factor=0.9)


def _assert_feasible(problem, sol):
    D, J, T = problem.shape
    assert np.allclose(sol.routing.sum(axis=1)[problem.rates > 0], 1.0)
    assert np.all(sol.routing[problem.capacity == 0] == 0)
    units = np.array([o.units for o in problem.options])
    f = problem.spot_capacity_factor
    for t in range(T):
        supply = problem.max_utilisation * (sol.reserved + sol.on_demand[:, t] + f * sol.spot[:, t])
        assert np.all(sol.load[:, t] <= supply + 1e-6)
        counts = sol.counts(t)
        for g, q in problem.quotas.items():
            assert sum(units[j] * counts[j] for j in range(J)
                       if problem.options[j].group == g) <= q
        assert units @ sol.spot[:, t] <= problem.spot_units_allowed()[t] + 1e-6


def test_lp_from_arrays_equals_the_pulp_relaxation():
    from solvers.binpack import _relaxed, build_model
    from solvers.cover_periods import _solve_lp_arrays

    problem = _random_periods_problem()
    relax = _solve_lp_arrays(problem, 10.0, None)
    lp = build_model(problem)[0]
    assert relax.value == pytest.approx(_relaxed(lp, 10.0, "highs", None).objective, rel=1e-9)


@pytest.mark.parametrize("seed", [1, 2])
def test_period_decomposition_is_feasible_and_its_bound_is_below_the_optimum(seed, monkeypatch):
    import solvers.binpack as bp
    import solvers.cover_periods as cp

    problem = _random_periods_problem(seed)
    exact = solve_cover(problem, time_limit_s=20)
    assert exact.result.status == "optimal"  # small enough for the plain MILP to prove
    _assert_feasible(problem, exact)
    monkeypatch.setattr(bp, "DECOMPOSE_COLUMNS", 0)
    monkeypatch.setattr(cp, "WHOLE_MILP_COLUMNS", 0)  # decomposition alone, no MILP after it
    sol = solve_cover(problem, time_limit_s=20)
    assert sol.method.startswith("lp+period-rounding")
    _assert_feasible(problem, sol)
    assert sol.cost_per_hour == pytest.approx(objective_of(problem, sol.reserved, sol.on_demand,
                                                           sol.spot))
    assert sol.result.bound <= exact.cost_per_hour + 1e-9  # a proven lower bound
    assert sol.cost_per_hour >= exact.cost_per_hour - 1e-9
    if sol.result.status == "optimal":
        assert sol.cost_per_hour == pytest.approx(exact.cost_per_hour)
    else:
        assert sol.result.gap > 1e-6
    # with the MILP after it (model small enough), the optimum is proven again
    monkeypatch.setattr(cp, "WHOLE_MILP_COLUMNS", 10**9)
    again = solve_cover(problem, time_limit_s=20)
    assert again.result.status == "optimal"
    assert again.cost_per_hour == pytest.approx(exact.cost_per_hour)


def test_period_decomposition_on_two_processes(monkeypatch):
    import solvers.binpack as bp
    import solvers.cover_periods as cp

    problem = _random_periods_problem(3)
    exact = solve_cover(problem, time_limit_s=20)
    monkeypatch.setattr(bp, "DECOMPOSE_COLUMNS", 0)
    monkeypatch.setattr(cp, "WHOLE_MILP_COLUMNS", 0)
    sol = solve_cover(problem, time_limit_s=20, workers=2)
    assert sol.method.startswith("lp+period-rounding")
    _assert_feasible(problem, sol)
    assert sol.result.bound <= exact.cost_per_hour + 1e-9 <= sol.cost_per_hour + 2e-9


@pytest.mark.parametrize("workers", [1, 2])
def test_periods_the_reserved_counts_carry_alone_need_no_top_up(workers):
    """With reserved counts at least the LP's, a period the LP served from reserved instances
    alone gets no on-demand or spot instance (its MILP has only its LP to solve, and gets
    TRIVIAL_PERIOD_S instead of a share of the time), and the cover stays feasible."""
    import solvers.binpack as bp
    import solvers.cover_periods as cp

    problem = _random_periods_problem(2, T=8)
    relax = cp._solve_lp_arrays(problem, 10.0, None)
    trivial = relax.top_up <= 1e-9
    assert trivial.sum() >= 3 and not trivial.all()
    reserved = np.ceil(relax.reserved - 1e-6).astype(int)
    got, _ = cp._period_rounding(problem, relax, 20.0, None, reserved=reserved, workers=workers)
    R, O, S, X = got
    assert not O[:, trivial].any() and not S[:, trivial].any()
    sol = bp.CoverSolution(R, O, S, X, bp.load_of(problem, X),
                           bp.objective_of(problem, R, O, S), None, "test")
    _assert_feasible(problem, sol)


def test_independent_periods_are_proven_by_their_own_milps(monkeypatch):
    """Without a reserved class nothing ties the periods together: the per-period MILPs
    alone prove the optimum (the sum of their bounds bounds the cover), no full MILP needed."""
    import solvers.binpack as bp
    import solvers.cover_periods as cp

    base = _random_periods_problem(5, D=6, T=8)
    opts = [CoverOption(o.name, o.group, o.units,
                        {c: p for c, p in o.prices.items() if c != "reserved"})
            for o in base.options]
    problem = CoverProblem(opts, base.capacity, base.rates, quotas=base.quotas,
                           spot_max_fraction=base.spot_max_fraction,
                           spot_capacity_factor=base.spot_capacity_factor)
    assert cp._periods_independent(problem) and not cp._periods_independent(base)
    monkeypatch.setattr(cp, "WHOLE_MILP_COLUMNS", 0)  # decomposition alone
    sol = solve_cover(problem, time_limit_s=20)
    assert sol.method.startswith("lp+period-rounding")
    _assert_feasible(problem, sol)
    assert sol.result.status == "optimal" and sol.result.gap == 0.0
    # each period solved on its own by the plain MILP: the weighted sum of their optima
    w = problem.period_weights
    alone = [solve_cover(CoverProblem(opts, problem.capacity, problem.rates[:, [t]],
                                      quotas=problem.quotas,
                                      spot_max_fraction=problem.spot_max_fraction,
                                      spot_capacity_factor=problem.spot_capacity_factor),
                         time_limit_s=20) for t in range(problem.shape[2])]
    assert all(a.result.status == "optimal" for a in alone)
    assert sol.cost_per_hour == pytest.approx(sum(wt * a.cost_per_hour for wt, a in zip(w, alone)),
                                              rel=1e-9)
    # the whole-horizon MILP cannot do better (measured: it does not prove it in 20 s)
    monkeypatch.setattr(bp, "DECOMPOSE_PERIODS", 10**9)
    plain = solve_cover(problem, time_limit_s=3)
    assert plain.method.startswith("milp")
    assert plain.cost_per_hour >= sol.cost_per_hour - 1e-9
    assert plain.result.bound <= sol.cost_per_hour + 1e-9


def test_proportional_demands_merge_exactly(monkeypatch):
    import solvers.binpack as bp

    base = _random_periods_problem(4, D=4)
    # demands 4..7 have capacity rows 0.5x / 2x / 3x those of 0..3: four merged demands
    cap = np.concatenate([base.capacity, base.capacity * np.array([0.5, 2.0, 3.0, 1.0])[:, None]])
    rates = np.concatenate([base.rates, base.rates[::-1] * 0.7])
    problem = CoverProblem(base.options, cap, rates, quotas=base.quotas,
                           spot_max_fraction=base.spot_max_fraction,
                           spot_capacity_factor=base.spot_capacity_factor)
    small, members, beta = bp.merge_proportional(problem)
    assert small.shape[0] == 4 and list(members) == [0, 1, 2, 3, 0, 1, 2, 3]
    assert np.allclose(beta, [1, 1, 1, 1, 0.5, 2.0, 3.0, 1.0])
    merged = solve_cover(problem, time_limit_s=20)
    assert merged.method.endswith("+merged")
    _assert_feasible(problem, merged)
    monkeypatch.setattr(bp, "merge_proportional", lambda *a, **k: None)
    plain = solve_cover(problem, time_limit_s=20)
    assert merged.result.status == plain.result.status == "optimal"
    assert merged.cost_per_hour == pytest.approx(plain.cost_per_hour, rel=1e-9)
    # slices are whole per demand: no merging
    assert bp.merge_proportional(CoverProblem(problem.options, cap, rates, slices=2)) is None


def test_mip_start_is_used_and_changes_no_proof():
    import pulp

    from solvers.milp import solve_pulp_with_start

    p = pulp.LpProblem("t", pulp.LpMinimize)
    x = pulp.LpVariable("x", 0, cat="Integer")
    y = pulp.LpVariable("y", 0, cat="Integer")
    p += 1.01 * x + 3.67 * y
    p += 2 * x + 20 * y >= 30
    for start in ({x: 15, y: 0}, {"y": 2}, {}):  # full, partial (by name), none
        r = solve_pulp_with_start(p, start)
        assert r.status == "optimal" and r.objective == pytest.approx(7.34) and r.gap == 0.0


# ---------------------------------------------------------------- stable re-planning


def _counts(sol):
    return sol.reserved, sol.on_demand, sol.spot


def _arrays(sol):
    return sol.reserved, sol.on_demand, sol.spot, sol.routing


def test_closest_cover_keeps_a_cover_that_is_still_cheapest():
    from solvers.binpack import closest_cover

    problem = _random_periods_problem(seed=3)
    sol = solve_cover(problem, time_limit_s=20)
    near = closest_cover(problem, _counts(sol), cost_cap=sol.cost_per_hour, start=_arrays(sol))
    assert near.result.status == "optimal" and near.result.objective == 0.0
    for a, b in zip(_counts(near), _counts(sol)):
        assert np.array_equal(a, b)


def test_closest_cover_moves_fewer_units_than_the_cheapest_within_its_cap():
    from solvers.binpack import closest_cover, units_changed

    before = _random_periods_problem(seed=4)
    old = solve_cover(before, time_limit_s=20)
    after = _random_periods_problem(seed=4)
    after.rates = after.rates * 1.15  # the load grew
    new = solve_cover(after, time_limit_s=20)
    cheapest_moves = units_changed(after, _counts(old), _counts(new))
    for allowance in (0.0, 0.05, 0.5):
        cap = new.cost_per_hour * (1 + allowance)
        near = closest_cover(after, _counts(old), cost_cap=cap, start=_arrays(new))
        _assert_feasible(after, near)
        assert near.cost_per_hour <= cap + 1e-9
        assert near.result.objective == pytest.approx(units_changed(after, _counts(old), _counts(near)))
        assert near.result.objective <= cheapest_moves + 1e-9
        assert near.result.bound <= near.result.objective + 1e-9
    # a generous allowance keeps strictly more in place on this instance
    tight = closest_cover(after, _counts(old), cost_cap=new.cost_per_hour, start=_arrays(new))
    loose = closest_cover(after, _counts(old), cost_cap=new.cost_per_hour * 1.5, start=_arrays(new))
    assert loose.result.objective < tight.result.objective


def test_closest_cover_drops_what_is_no_longer_offered():
    from solvers.binpack import closest_cover, units_changed

    problem = _toy(slices=None)
    sol = solve_cover(problem)
    # the cover in place also ran 2 spot A100s, a class the problem no longer offers
    spot = sol.spot.copy()
    spot[1, 0] = 2
    near = closest_cover(problem, (sol.reserved, sol.on_demand, spot), cost_cap=100.0,
                         start=_arrays(sol))
    assert near.result.objective == pytest.approx(2.0)  # both must go; nothing else moves
    assert units_changed(problem, _counts(sol), _counts(near)) == 0


# ---------------------------------------------------------------- price break-even


def test_break_even_prices_on_the_melange_toy():
    """Toy: 3 x A10G ($1.01) + 1 x A100 ($3.67) = $6.70.  Each break-even factor is checked by
    solving just below and just above it."""
    from solvers.sensitivity import all_break_evens, scaled

    problem = _toy(slices=None)
    ref = solve_cover(problem)
    found = {b.group: b for b in all_break_evens(problem, ref, lambda p: solve_cover(p))}
    assert set(found) == {"A10G", "A100"}
    for group, b in found.items():
        assert b.used and b.exact and b.factor is not None and b.factor > 1.0
        cheaper = solve_cover(scaled(problem, group, b.factor * 0.999))
        dearer = solve_cover(scaled(problem, group, b.factor * 1.001))
        uses = lambda s: any(s.counts(0)[j] > 0 for j, o in enumerate(problem.options)  # noqa: E731
                             if o.group == group)
        assert uses(cheaper) and not uses(dearer)


def test_break_even_of_an_unused_type_is_where_it_enters():
    from solvers.sensitivity import price_break_even, scaled

    problem = _toy(slices=None)
    # a third type, twice the A100's speed at 3x its price: unused today
    opts = problem.options + [CoverOption("B", "B", 1, {"on_demand": 3 * 3.67})]
    cap = np.concatenate([problem.capacity, 2 * problem.capacity[:, 1:2]], axis=1)
    problem = CoverProblem(opts, cap, problem.rates)
    ref = solve_cover(problem)
    assert ref.counts(0)[2] == 0
    b = price_break_even(problem, "B", ref, lambda p: solve_cover(p))
    assert not b.used and b.exact and 0 < b.factor < 1
    assert solve_cover(scaled(problem, "B", b.factor * 0.999)).counts(0)[2] > 0
    assert solve_cover(scaled(problem, "B", b.factor * 1.001)).counts(0)[2] == 0
    # a type that can serve nothing (no bucket within the SLO) never enters, even free
    useless = CoverProblem(opts, np.concatenate([problem.capacity[:, :2],
                                                 0 * problem.capacity[:, 1:2]], axis=1),
                           problem.rates)
    lazy = price_break_even(useless, "B", solve_cover(useless), lambda p: solve_cover(p))
    assert lazy.factor is None and "even at no cost" in lazy.reason


def _split_problem(quotas=None, periods=1):
    """The toy plus a bundle ``AB`` holding 1 A10G and 1 A100 unit (a prefill/decode pair on
    two GPU types), 30% faster than an A100 alone on every bucket, priced as its parts."""
    toy = _toy(slices=None)
    parts = (("A10G", 1, {"on_demand": 1.01}), ("A100", 1, {"on_demand": 3.67}))
    opts = toy.options + [CoverOption("AB", "A10G", 2, {"on_demand": 4.68}, parts)]
    cap = np.concatenate([toy.capacity, 1.3 * toy.capacity[:, 1:2]], axis=1)
    rates = np.repeat(toy.rates[:, :1], periods, axis=1) * np.linspace(1.0, 2.0, periods)
    return CoverProblem(opts, cap, rates, quotas=quotas or {})


@pytest.mark.parametrize("periods", [1, 8])
def test_an_option_spanning_two_groups_draws_on_both_quotas(periods, monkeypatch):
    from solvers import binpack
    from solvers.binpack import quota_groups, quota_usage
    from solvers.cover_periods import _solve_by_periods

    free = _split_problem(periods=periods)
    assert quota_groups(free) == ["A100", "A10G"]
    assert quota_usage(free.options[2]) == {"A10G": 1, "A100": 1}
    free_cost = solve_cover(free, time_limit_s=20).cost_per_hour
    for quotas in ({"A100": 1}, {"A10G": 1}, {"A100": 2, "A10G": 3}):
        problem = _split_problem(quotas, periods=periods)
        solvers = [solve_cover(problem, time_limit_s=20)]
        if periods > 1:  # the array-built model of the decomposition, too
            monkeypatch.setattr(binpack, "DECOMPOSE_PERIODS", 2)
            solvers.append(_solve_by_periods(problem, 20.0, 1e-6, None))
        for sol in solvers:
            for t in range(periods):
                counts = sol.counts(t)
                for g, q in quotas.items():
                    used = sum(counts[j] * quota_usage(o).get(g, 0)
                               for j, o in enumerate(problem.options))
                    assert used <= q
        # tighter quotas never make the plan cheaper than without them; the A100 one binds
        # (the free plan holds an A100 and a bundle at the peak: two A100 units)
        assert solvers[0].cost_per_hour >= free_cost - 1e-9
        if quotas == {"A100": 1} and periods > 1:
            assert solvers[0].cost_per_hour > free_cost + 1e-6
    greedy = greedy_cover(_split_problem({"A100": 2, "A10G": 9}))
    if greedy is not None:
        counts = greedy[0] + greedy[1][:, 0] + greedy[2][:, 0]
        assert counts[1] + counts[2] <= 2 and counts[0] + counts[2] <= 9


def test_break_even_scales_only_a_groups_part_of_a_split_option():
    from solvers.sensitivity import group_spend, scaled, without

    problem = _split_problem()
    doubled = scaled(problem, "A100", 2.0)
    assert doubled.options[1].prices == {"on_demand": 7.34}
    assert doubled.options[2].prices == {"on_demand": pytest.approx(1.01 + 7.34)}
    assert doubled.options[0].prices == problem.options[0].prices
    assert [o.name for o in without(problem, "A100").options] == ["A10G"]
    sol = solve_cover(problem)
    spend = {g: group_spend(problem, sol, g) for g in ("A10G", "A100")}
    assert sum(spend.values()) == pytest.approx(sol.cost_per_hour)


@pytest.mark.parametrize("start_cost, held", [(0.0, False), (0.2, False), (0.3, True)])
def test_start_costs_keep_a_pool_up_through_a_dip(start_cost, held, monkeypatch):
    """Load 4, 1, 4, 1 req/s on 1-req/s instances at $1/h: flapping costs 2.5 $/h plus 6
    starts, holding 4 instances costs 4 $/h; holding wins once a start costs over 0.25."""
    from solvers import binpack
    from solvers.binpack import start_cost_of, starts_of
    from solvers.cover_periods import _solve_by_periods

    problem = CoverProblem([CoverOption("g", "g", 1, {"on_demand": 1.0}, start_cost=start_cost)],
                           np.ones((1, 1)), np.array([[4.0, 1.0, 4.0, 1.0]]))
    plain = solve_cover(problem, time_limit_s=10)  # the PuLP-built MILP
    monkeypatch.setattr(binpack, "DECOMPOSE_PERIODS", 2)  # and the array-built one
    for sol in (plain, solve_cover(problem, time_limit_s=10),
                _solve_by_periods(problem, 10.0, 1e-6, None)):
        counts = [int(sol.counts(t)[0]) for t in range(4)]
        assert counts == ([4, 4, 4, 4] if held else [4, 1, 4, 1])
        assert sol.result.status == "optimal"
        want = 4.0 if held else 2.5 + 6 * start_cost
        assert sol.cost_per_hour == pytest.approx(want)
        assert objective_of(problem, sol.reserved, sol.on_demand, sol.spot) == pytest.approx(want)
    assert starts_of(np.array([[4, 1, 4, 1]]), np.zeros((1, 4))).tolist() == [[3, 0, 3, 0]]
    assert start_cost_of(problem, np.array([[4, 1, 4, 1]]), np.zeros((1, 4))) == pytest.approx(6 * start_cost)


def test_dips_are_held_where_the_starts_saved_cost_more():
    from solvers.cover_periods import _hold_through_dips

    def problem(c, quotas=None):
        return CoverProblem([CoverOption("g", "g", 2, {"on_demand": 1.0}, start_cost=c)],
                            np.ones((1, 1)), np.array([[4.0, 1.0, 1.0, 4.0, 2.0, 4.0]]),
                            quotas=quotas or {})

    flapping = (np.zeros(1, int), np.array([[4, 1, 1, 4, 2, 4]]), np.zeros((1, 6), int),
                np.ones((1, 1, 6)))
    # a start costs 0.2: holding the one-period dip (2 idle for 1/6 h) pays, the two-period
    # dip (3 idle for 2/6 h) does not
    held = _hold_through_dips(problem(0.2), flapping)
    assert held[1].tolist() == [[4, 1, 1, 4, 4, 4]]
    assert objective_of(problem(0.2), *held[:3]) < objective_of(problem(0.2), *flapping[:3])
    assert _hold_through_dips(problem(0.6), flapping)[1].tolist() == [[4, 4, 4, 4, 4, 4]]
    assert _hold_through_dips(problem(0.01), flapping)[1].tolist() == [[4, 1, 1, 4, 2, 4]]
    # another option of the group fills the quota in the dips: no room to hold
    crowded = problem(0.6, {"g": 12})
    crowded = CoverProblem(crowded.options + [CoverOption("h", "g", 1, {"on_demand": 0.5})],
                           np.ones((1, 2)), crowded.rates, quotas={"g": 12})
    both = (np.zeros(2, int), np.array([[4, 1, 1, 4, 2, 4], [0, 9, 9, 0, 7, 0]]),
            np.zeros((2, 6), int), np.ones((1, 2, 6)) / 2)
    assert _hold_through_dips(crowded, both)[1].tolist() == both[1].tolist()


def test_trim_idle_drops_unneeded_instances():
    from solvers.binpack import _trim_idle, load_of
    opts = [CoverOption("a", "A", 1, {"on_demand": 2.0, "spot": 0.8, "reserved": 1.5}),
            CoverOption("b", "B", 1, {"on_demand": 1.0})]
    cap = np.array([[10.0, 0.0], [0.0, 10.0]])
    rates = np.array([[15.0, 5.0], [5.0, 5.0]])  # 2 demands x 2 periods
    problem = CoverProblem(opts, cap, rates, spot_max_fraction=0.5)
    routing = np.zeros((2, 2, 2))
    routing[0, 0, :] = routing[1, 1, :] = 1.0
    assert np.allclose(load_of(problem, routing), [[1.5, 0.5], [0.5, 0.5]])
    # a: 1 reserved + 2 on demand + 1 spot in both periods; b: 2 on demand (1 idle)
    reserved, od = np.array([1, 0]), np.array([[2, 2], [2, 2]])
    spot = np.array([[1, 1], [0, 0]])
    r2, od2, spot2, _ = _trim_idle(problem, (reserved, od, spot, routing))
    # b keeps one per period; a keeps 2 instances in period 0 (load 1.5) and 1 in period 1
    assert od2[1].tolist() == [1, 1]
    assert (r2[0] + od2[0] + spot2[0]).tolist() == [2, 1]
    assert objective_of(problem, r2, od2, spot2) < objective_of(problem, reserved, od, spot)
    assert spot2[0].tolist() == [1, 0]  # the spot instance of period 1 was idle too
    # nothing to trim: unchanged
    again = _trim_idle(problem, (r2, od2, spot2, routing))
    assert all(np.array_equal(x, y) for x, y in zip(again[:3], (r2, od2, spot2)))


def test_highs_beside_the_stages_sends_a_feasible_cover_and_a_valid_bound():
    """The second worker's run (HiGHS alone on the array model): what it sends back is a
    feasible cover and a bound no higher than the proven optimum."""
    import time

    import solvers.binpack as bp
    import solvers.cover_periods as cp

    problem = _random_periods_problem(4, D=6, T=2)
    exact = solve_cover(problem, time_limit_s=20)
    assert exact.result.status == "optimal"
    handle = cp._start_beside(problem, time.perf_counter() + 20.0, 1e-6)
    assert handle is not None
    got = cp._finish_beside(handle, 25.0)
    assert got is not None
    arrays, bound = got
    reserved, on_demand, spot, routing = arrays
    sol = bp.CoverSolution(reserved, on_demand, spot, routing, bp.load_of(problem, routing),
                           objective_of(problem, reserved, on_demand, spot), exact.result, "beside")
    _assert_feasible(problem, sol)
    assert bound <= exact.cost_per_hour + 1e-6
    assert sol.cost_per_hour >= exact.cost_per_hour - 1e-6
    assert not handle[0].is_alive()


def test_a_run_beside_does_not_change_a_proven_plan(monkeypatch):
    """With two workers the run beside starts at once (threshold lowered here), yet a plan the
    stages prove is the same as with one worker: the other run is stopped, not taken."""
    import solvers.binpack as bp
    import solvers.cover_periods as cp

    problem = _random_periods_problem(6, D=6, T=2)
    one = solve_cover(problem, time_limit_s=20)
    assert one.result.status == "optimal"
    monkeypatch.setattr(cp, "SMALL_PERIOD_COLUMNS", 0)
    started = []
    real_start = bp._start_beside
    monkeypatch.setattr(bp, "_start_beside",
                        lambda *a, **k: started.append(real_start(*a, **k)) or started[-1])
    two = solve_cover(problem, time_limit_s=20, workers=2)
    assert len(started) == 1 and started[0] is not None  # it ran from the start ...
    assert not started[0][0].is_alive()  # ... and was stopped
    assert two.result.status == "optimal" and "beside" not in two.method
    assert two.cost_per_hour == one.cost_per_hour
    assert np.array_equal(two.on_demand, one.on_demand) and np.array_equal(two.spot, one.spot)
    assert np.array_equal(two.routing, one.routing)


def _two_model_problem(seed=1, D=6, T=3):
    """Two models (demands 0..D-1 and D..2D-1), each with its own instances of the same three
    GPU types: their periods fall apart into one block per model, tied by quotas and spot cap."""
    one = _random_periods_problem(seed, D=D, T=T)
    J = len(one.options)
    cap = np.zeros((2 * D, 2 * J))
    cap[:D, :J] = one.capacity
    cap[D:, J:] = one.capacity[::-1]
    opts = [CoverOption(f"m{m}/{o.name}", o.group, o.units, o.prices)
            for m in range(2) for o in one.options]
    rates = np.concatenate([one.rates, one.rates[::-1] * 1.3])
    return CoverProblem(opts, cap, rates, quotas={"a": 30, "b": 10, "c": 6},
                        spot_max_fraction=0.3, spot_capacity_factor=0.9)


def test_period_blocks_under_budgets_then_the_period_milp_from_them(monkeypatch):
    """A period of two models is solved model by model under budgets of the shared quota and
    spot-cap rows (solvers.budgets); the period MILP then starts from that plan with the time
    the blocks left: never worse, and both feasible."""
    import solvers.binpack as bp
    import solvers.cover_periods as cp

    base = _two_model_problem(7)
    t = int(np.argmax(base.rates.sum(axis=0)))
    problem = CoverProblem(base.options, base.capacity, base.rates[:, [t]], quotas=base.quotas,
                           spot_max_fraction=base.spot_max_fraction,
                           spot_capacity_factor=base.spot_capacity_factor)
    relax = cp._solve_lp_arrays(base, 10.0, None)
    reserved = np.floor(relax.reserved + 1e-6).astype(int)
    monkeypatch.setattr(cp, "SMALL_PERIOD_COLUMNS", 0)  # the restricted path, as on big models
    calls = []
    real = cp.solve_by_budgets

    def recorded(*a, **k):
        calls.append(real(*a, **k))
        return calls[-1]

    monkeypatch.setattr(cp, "solve_by_budgets", recorded)

    def solve():
        on_demand, spot, routing, _ = cp._period_solve(problem, 0, reserved, 10.0, None, 1e-6)
        sol = bp.CoverSolution(reserved, on_demand[:, None], spot[:, None], routing[:, :, None],
                               bp.load_of(problem, routing[:, :, None]),
                               objective_of(problem, reserved, on_demand[:, None],
                                            spot[:, None]), None, "test")
        _assert_feasible(problem, sol)
        return sol.cost_per_hour

    monkeypatch.setattr(cp, "MIN_MILP_S", 1e9)  # the blocks' plan alone
    blocks = solve()
    monkeypatch.setattr(cp, "MIN_MILP_S", 0.0)
    both = solve()
    assert len(calls) == 2 and all(x is not None for x in calls)
    monkeypatch.setattr(cp, "BUDGET_SHARE", 0.0)
    milp = solve()
    assert len(calls) == 2
    # here the split costs 16.60 against the period's optimum of 16.00: the MILP gets it back
    assert both < blocks - 0.5
    assert both == pytest.approx(milp)  # small: both proven


def test_serving_every_load_moves_the_smallest_loads_first_and_only_as_needed():
    """An option left 0.3 instance short: its smallest load moves to the option with room
    (not the big one, and nothing more than needed); a sliver on an option with no instance
    moves to a full option within the solvers' tolerance rather than buying an instance."""
    from solvers.binpack import _serve_every_load

    opts = [CoverOption("a", "g", 1, {"on_demand": 1.0}), CoverOption("b", "g", 1, {"on_demand": 1.0}),
            CoverOption("c", "g", 1, {"on_demand": 5.0})]
    cap = np.ones((4, 3))
    rates = np.array([[1.0], [0.3], [0.5], [1e-8]])
    problem = CoverProblem(opts, cap, rates)
    routing = np.zeros((4, 3, 1))
    routing[0, 0, 0] = routing[1, 0, 0] = 1.0  # a: load 1.3 on 1 instance
    routing[2, 1, 0] = 1.0                      # b: 0.5 on 1 instance (room 0.5)
    routing[3, 2, 0] = 1.0                      # c: a sliver, no instance
    arrays = (np.zeros(3, dtype=int), np.array([[1], [1], [0]]), np.zeros((3, 1), dtype=int),
              routing)
    reserved, on_demand, spot, moved = _serve_every_load(problem, arrays)
    assert on_demand[:, 0].tolist() == [1, 1, 0]  # nothing bought
    assert moved[0, 0, 0] == 1.0 and moved[1, 1, 0] == 1.0  # the 0.3 moved, the 1.0 stayed
    assert moved[3, 2, 0] == 0.0 and moved[3, :2, 0].sum() == 1.0
    # a full plan: the sliver rides on a full option within tolerance, still nothing bought
    full = np.zeros((4, 3, 1))
    full[0, 0, 0] = full[1, 1, 0] = full[2, 1, 0] = 1.0
    full[3, 2, 0] = 1.0
    rates_full = np.array([[1.0], [0.5], [0.5], [1e-8]])
    problem = CoverProblem(opts, cap, rates_full)
    got = _serve_every_load(problem, (np.zeros(3, dtype=int), np.array([[1], [1], [0]]),
                                      np.zeros((3, 1), dtype=int), full))
    assert got[1][:, 0].tolist() == [1, 1, 0] and got[3][3, 2, 0] == 0.0


def test_a_bound_above_a_cover_in_hand_is_discarded(monkeypatch):
    """A Lagrangian bound above the cover the decomposition holds is a solver's bad proof:
    the plan keeps the LP's bound and does not claim optimality."""
    import solvers.binpack as bp
    import solvers.cover_periods as cp

    problem = _random_periods_problem(1)
    monkeypatch.setattr(bp, "DECOMPOSE_COLUMNS", 0)
    monkeypatch.setattr(cp, "WHOLE_MILP_COLUMNS", 0)
    monkeypatch.setattr(cp, "LAGRANGIAN_FIRST_COLUMNS", 10**9)
    calls = []
    monkeypatch.setattr(cp, "_lagrangian_bound",
                        lambda relax, slice_s, workers: calls.append(slice_s) or 1e6)
    sol = solve_cover(problem, time_limit_s=20)
    assert calls  # the (wrong) bound was offered
    relax = cp._solve_lp_arrays(problem, 10.0, None)
    assert sol.result.bound == pytest.approx(relax.value, rel=1e-6)
    assert sol.result.status != "optimal" and sol.result.gap > 0


def test_greedy_cover_is_feasible_with_multi_gpu_replicas_and_headroom():
    """The greedy cover counts loads at max_utilisation whatever the replicas' GPU counts (a
    loop variable once shadowed it with the quota units: TP 8 loads came out 8x too light, and
    such a plan, cheaper than the bound, replaced a repaired MILP plan)."""
    from solvers.binpack import cover_violation

    opts = [CoverOption("tp8", "g", 8, {"on_demand": 8.0}), CoverOption("tp2", "h", 2, {"on_demand": 2.5})]
    cap = np.array([[40.0, 8.0], [30.0, 0.0], [20.0, 5.0]])
    rates = np.array([[100.0, 40.0], [50.0, 90.0], [30.0, 10.0]])
    problem = CoverProblem(opts, cap, rates, quotas={"g": 400, "h": 400}, max_utilisation=0.8)
    greedy = greedy_cover(problem)
    assert cover_violation(problem, greedy) is None
    sol = solve_cover(problem, time_limit_s=10)
    assert cover_violation(problem, (sol.reserved, sol.on_demand, sol.spot, sol.routing)) is None
    assert sol.result.bound <= sol.cost_per_hour + 1e-9
    assert objective_of(problem, *greedy[:3]) >= sol.cost_per_hour - 1e-9


def test_cover_violation_names_what_breaks():
    from solvers.binpack import cover_violation

    opts = [CoverOption("a", "g", 2, {"on_demand": 1.0, "spot": 0.3})]
    problem = CoverProblem(opts, np.array([[1.0]]), np.array([[1.5]]), quotas={"g": 4},
                           spot_max_fraction=0.5)
    routing = np.ones((1, 1, 1))
    ok = (np.zeros(1, dtype=int), np.array([[2]]), np.zeros((1, 1), dtype=int), routing)
    assert cover_violation(problem, ok) is None
    assert cover_violation(problem, (ok[0], np.array([[1]]), ok[2], routing)) == \
        "a load above its option's capacity"
    assert cover_violation(problem, (ok[0], np.array([[3]]), ok[2], routing)) == "the quota of g"
    assert cover_violation(problem, (ok[0], np.array([[0]]), np.array([[2]]), routing)) == "the spot cap"
    assert cover_violation(problem, (*ok[:3], 0.5 * routing)) == "a demand not routed in full"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reserved_level_estimate_prices_the_lps_own_level_at_the_lps_value(seed):
    """The estimate that ranks a pass's reserved levels is the LP's own cost at the LP's
    reserved counts, and grows as a level moves away from them in either direction (more
    reserved than the LP holds is paid idle; less, bought back on demand or spot)."""
    import solvers.cover_periods as cp

    problem = _random_periods_problem(seed, T=6)
    relax = cp._solve_lp_arrays(problem, 10.0, None)
    at_lp = cp._level_estimate(problem, relax, relax.reserved)
    assert at_lp == pytest.approx(relax.value, rel=1e-9)
    up, down = np.ceil(relax.reserved + 1.0), np.maximum(np.floor(relax.reserved - 1.0), 0)
    assert cp._level_estimate(problem, relax, up) > at_lp
    if np.any(relax.reserved > 1e-6):
        assert cp._level_estimate(problem, relax, down) > at_lp


def test_a_restricted_period_milp_keeps_slots_for_the_options_the_lp_opens():
    """Per demand: its LP support and the cheapest columns by reduced cost, with
    OPEN_OPTION_COLUMNS of the PERIOD_COLUMNS slots held for options the LP uses elsewhere
    (small demands ride on their spare room), and slots those leave empty go to the next
    cheapest; missing columns (inf) are never kept."""
    import solvers.cover_periods as cp

    inf = np.inf
    reduced = np.array([[-inf, 0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 1.0],
                        [0.1, -inf, 0.2, 0.3, inf, inf, inf, inf],
                        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, inf]])
    used = np.array([True, True, False, False, False, False, True, True])
    kept = cp._kept_columns(reduced, used)
    assert cp.PERIOD_COLUMNS == 5 and cp.OPEN_OPTION_COLUMNS == 2
    # demand 0: its support, the two cheapest others, then the two used options left (6, 7)
    assert np.nonzero(kept[0])[0].tolist() == [0, 1, 2, 6, 7]
    # demand 1: only four columns exist
    assert np.nonzero(kept[1])[0].tolist() == [0, 1, 2, 3]
    # demand 2: options 0 and 1 are among the three cheapest already; one used option is left,
    # and the slot it leaves goes to the next cheapest (3)
    assert np.nonzero(kept[2])[0].tolist() == [0, 1, 2, 3, 6]


def test_passes_go_on_to_other_reserved_levels_while_time_lasts(monkeypatch):
    """Without a whole MILP after them, passes run while the time lasts: each from a reserved
    level not passed over yet (the best cover's settled levels first, then the candidates),
    never the same level twice; the cheapest cover is kept."""
    import solvers.cover_periods as cp

    problem = _random_periods_problem(3, D=6, T=4)
    monkeypatch.setattr(cp, "WHOLE_MILP_COLUMNS", 0)
    monkeypatch.setattr(cp, "LAGRANGIAN_FIRST_COLUMNS", 0)
    levels, costs = [], []
    real = cp._period_rounding

    def recorded(problem, relax, time_limit_s, threads, gap_rel=1e-4, reserved=None, workers=1):
        levels.append(tuple(int(v) for v in reserved))
        got = real(problem, relax, time_limit_s, threads, gap_rel, reserved, workers)
        costs.append(None if got is None else objective_of(problem, *got[0][:3]))
        return got

    monkeypatch.setattr(cp, "_period_rounding", recorded)
    sol = cp._solve_by_periods(problem, 20.0, 1e-9, None)
    assert len(levels) >= 2 and len(set(levels)) == len(levels)
    assert sol.cost_per_hour == pytest.approx(min(c for c in costs if c is not None))
    _assert_feasible(problem, sol)
