"""The Ray backend gives the same table as the local backend (on a local Ray started for the
test).  Skips when Ray, an optional extra, is not installed."""
from __future__ import annotations

import copy

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'llm-placement-planner[ray]')")

from planner.sweep import comparable, results_frame, run_sweep, sweep_from_data  # noqa: E402
from test_sweep import REPO, SMALL  # noqa: E402


def test_ray_and_local_backends_give_identical_tables():
    noop = sweep_from_data({"kind": "noop", "base": {"a": 1, "b": {"c": 0}},
                            "axes": [{"name": "a", "field": "a", "range": {"start": 1, "stop": 40, "num": 40}},
                                     {"name": "c", "field": "b.c", "values": [0, 1, 2, 3, 4]}]})
    fleet = sweep_from_data(copy.deepcopy(SMALL), file="small-sweep", base_dir=str(REPO / "examples"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:  # one local Ray for both sweeps (run_ray leaves a Ray it did not start running)
        for sweep in (noop, fleet):
            via_ray = results_frame(sweep, run_sweep(sweep, backend="ray"))
            local = results_frame(sweep, run_sweep(sweep, backend="local", workers=2))
            assert comparable(via_ray).equals(comparable(local))
            assert list(via_ray["point"]) == list(range(sweep.size))
    finally:
        ray.shutdown()
    assert len(via_ray) == 6 and set(via_ray["status"]) == {"ok"}
