"""Generic enumeration / pruning / bisection (solvers.search)."""
from solvers.search import SearchLog, best_first, bisect_max, enumerate_space


def test_enumerate_space_records_the_first_rule_that_fires():
    log = SearchLog()
    kept = enumerate_space({"a": [1, 2, 3], "b": [1, 2]},
                           [("odd", lambda c: "a is odd" if c["a"] % 2 else None),
                            ("big", lambda c: "too big" if c["a"] * c["b"] > 3 else None)], log=log)
    assert kept == [{"a": 2, "b": 1}]
    assert log.generated == 6
    assert log.counts_by_rule() == {"big": 1, "odd": 4}


def test_best_first_skips_candidates_whose_bound_cannot_win():
    cands = [{"x": x} for x in range(10)]
    calls = []

    def ev(c):
        calls.append(c["x"])
        return (float(c["x"]), None)

    log = SearchLog()
    top = best_first(cands, lambda c: c["x"] + 0.5, ev, keep=2, log=log)
    assert [t[2]["x"] for t in top] == [9, 8]
    assert calls == [9, 8]  # everything else is bounded away
    assert log.counts_by_rule() == {"bound": 8} and log.evaluated == 2


def test_bisect_max_finds_threshold():
    x, calls = bisect_max(lambda r: r <= 3.7, 0.1, 100.0, rel_tol=0.01)
    assert 3.7 / 1.011 <= x <= 3.7 and calls < 20
    assert bisect_max(lambda r: False, 1, 2)[0] == 0.0
    assert bisect_max(lambda r: True, 1, 2)[0] == 2
