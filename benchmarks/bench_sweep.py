"""Sweep backends side by side: the 200-point fleet sweep (examples/sweep_fleet.yaml) on the
local process backend and on a local Ray cluster, with identical results checked, wall times
and the per-point overhead of each backend.

Overhead per point is measured two ways: a ``noop`` sweep of the same size (the machinery alone:
spawning, shipping each point's request, collecting rows), and for the real sweep
``(wall - sum(point compute) / workers) / points``.

    python -m benchmarks.bench_sweep [--workers 2] [--quick]
"""
from __future__ import annotations

import argparse
import time

from benchmarks.common import REPO, print_table
from planner.sweep import comparable, load_sweep, results_frame, run_sweep, sweep_from_data


def _noop(points: int):
    return sweep_from_data({"kind": "noop", "base": {"x": 0},
                            "axes": [{"name": "x", "field": "x", "range": {"start": 1, "stop": points, "num": points}}]})


def _measure(sweep, backend: str, workers: int) -> tuple[dict, object]:
    t0 = time.perf_counter()
    rows = run_sweep(sweep, backend=backend, workers=workers)
    wall = time.perf_counter() - t0
    frame = results_frame(sweep, rows)
    compute = float(frame["point_time_s"].sum())
    n = len(frame)
    return {"sweep": sweep.kind, "backend": backend, "points": n, "workers": workers, "wall_s": wall,
            "compute_s": compute, "wall_per_point_ms": 1e3 * wall / n,
            "overhead_per_point_ms": 1e3 * max(0.0, wall - compute / workers) / n,
            "ok": int((frame["status"] == "ok").sum())}, frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="first 40 points only")
    args = ap.parse_args()
    sweep = load_sweep(REPO / "examples" / "sweep_fleet.yaml")
    if args.quick:
        import dataclasses
        a0 = sweep.axes[0]
        sweep = dataclasses.replace(sweep, axes=(dataclasses.replace(a0, values=a0.values[:2], labels=a0.labels[:2]),
                                                 *sweep.axes[1:]))
    noop = _noop(sweep.size)
    # warm-up (not timed): the first plans in a fresh machine state run slower whichever backend
    # goes first (file cache, catalog and model loading), which would bias the comparison
    import dataclasses
    a0 = sweep.axes[0]
    run_sweep(dataclasses.replace(sweep, axes=(dataclasses.replace(a0, values=a0.values[:1], labels=a0.labels[:1]),
                                               *sweep.axes[1:])), backend="local", workers=args.workers)
    rows = []
    local, local_frame = _measure(sweep, "local", args.workers)
    rows.append(local)
    rows.append(_measure(noop, "local", args.workers)[0])
    try:
        import ray
    except ImportError:
        print("Ray not installed: pip install 'llm-placement-planner[ray]' to compare the ray backend")
        print_table(rows, f"sweep backends, {sweep.size} points")
        return
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    init_s = time.perf_counter() - t0
    try:
        on_ray, ray_frame = _measure(sweep, "ray", args.workers)
        rows.append(on_ray)
        rows.append(_measure(noop, "ray", args.workers)[0])
    finally:
        ray.shutdown()
    same = comparable(local_frame).equals(comparable(ray_frame))
    print_table(rows, f"sweep backends, {sweep.size} points (examples/sweep_fleet.yaml), {args.workers} workers")
    print(f"\nlocal Ray cluster start-up: {init_s:.2f} s (not in the ray rows' wall_s)")
    print(f"ray and local tables identical (timing columns aside): {same}")
    statuses = local_frame["status"].value_counts().to_dict()
    print(f"point status counts: {statuses}")


if __name__ == "__main__":
    main()
