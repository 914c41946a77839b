"""Mélange's own config JSON (gpu_info, workload_distribution, total_request_rate,
slice_factor) solved as a one-period fleet problem."""
from __future__ import annotations

from pathlib import Path
from typing import Any
import math

import numpy as np

from hardware.errors import InfeasibleError, InputError
from planner import workload as wl
from planner.fleet.assemble import plan_from_problem
from planner.fleet.problem import FleetProblem, build_problem
from planner.fleet.profiles import read_tputs
from planner.fleet.request import FleetRequest
from planner.plan import read_structured
from solvers.binpack import CoverProblem


def melange_request(path: str | Path) -> tuple[dict[str, Any], FleetProblem]:
    """Read a Mélange config JSON (gpu_info, workload_distribution, total_request_rate,
    slice_factor) as a fleet problem over one period."""
    path = Path(path)
    data = read_structured(path, what="Mélange config")
    file = str(path)
    if not isinstance(data, dict):
        raise InputError("not a JSON object", file=file, expected="a Mélange config object")
    for key in ("gpu_info", "workload_distribution", "total_request_rate"):
        if key not in data:
            raise InputError("required field is missing", file=file, field=key)
    info = data["gpu_info"]
    if not isinstance(info, dict) or not info:
        raise InputError("gpu_info must map GPU names to {cost, tputs}", file=file, field="gpu_info")
    rate = data["total_request_rate"]
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0:
        raise InputError(f"total_request_rate is {rate!r}", file=file, field="total_request_rate",
                         expected="a positive number of requests per second")
    k = data.get("slice_factor", 1)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InputError(f"slice_factor is {k!r}", file=file, field="slice_factor",
                         expected="a positive integer")
    normalise = data.get("normalise_shares", False)
    if not isinstance(normalise, bool):
        raise InputError(f"normalise_shares is {normalise!r}", file=file, field="normalise_shares",
                         expected="true or false")
    shares = wl.check_shares(data["workload_distribution"], file=file, field="workload_distribution",
                             normalise=normalise)
    I, J = shares.shape
    gpus, seen, grids = [], {}, {}
    for name, entry in info.items():
        if not name.strip() or name.lower() in seen:
            raise InputError(f"GPU name {name!r} " + ("is empty" if not name.strip() else
                             f"repeats {seen[name.lower()]!r} (names are case-insensitive)"),
                             file=file, field=f"gpu_info.{name}", expected="distinct GPU names")
        seen[name.lower()] = name
        if not isinstance(entry, dict) or "cost" not in entry or "tputs" not in entry:
            raise InputError("each GPU needs cost and tputs", file=file, field=f"gpu_info.{name}",
                             expected="{cost: $/h, tputs: [[req/s]]}")
        cost = entry["cost"]
        if (not isinstance(cost, (int, float)) or isinstance(cost, bool)
                or not math.isfinite(cost) or cost <= 0):
            raise InputError(f"cost is {cost!r}", file=file, field=f"gpu_info.{name}.cost",
                             expected="a positive $ per hour")
        tputs = read_tputs(entry["tputs"], file, f"gpu_info.{name}.tputs")
        if tputs.shape != shares.shape:
            raise InputError(f"tputs is {tputs.shape[0]} x {tputs.shape[1]} but the workload grid is "
                             f"{I} x {J}", file=file, field=f"gpu_info.{name}.tputs",
                             expected="the same grid as workload_distribution")
        gpus.append({"name": name, "price_per_hour": float(cost)})
        grids[name] = tputs
    _check_servable(shares, float(rate), grids, file)
    request = {
        "models": [{"name": "model", "model": "melange",
                    "workload": {"histogram": {"input_edges": list(range(I + 1)),
                                               "output_edges": list(range(J + 1)),
                                               "shares": shares.tolist()},
                                 "rate_rps": float(rate)},
                    "profiles": [{"gpu": g["name"], "file": file, "format": "melange"}
                                 for g in gpus]}],
        "gpus": gpus,
        "solver": {"slice_factor": k, "routing": "per_period"},
    }
    req = FleetRequest.model_validate(request)
    fp = build_problem(req, file=file)
    # the buckets are grid indices, not token lengths: no tokens to price per million
    for ld in fp.loads:
        ld.mean_tokens = 0.0
    return data, fp


def _check_servable(shares: np.ndarray, rate: float, grids: dict[str, np.ndarray],
                    file: str) -> None:
    """Infeasible configs in the config's own terms (bucket = row i, column j of
    ``workload_distribution`` and of each ``gpu_info`` entry's ``tputs``): a bucket with
    requests that no GPU serves (every tputs 0 there), or one whose load needs more instances
    of its fastest GPU than a pool may hold."""
    names = list(grids)
    where = names[0] if len(names) == 1 else "*"
    best = np.max(np.stack([grids[g] for g in names]), axis=0)
    for i, j in zip(*np.nonzero(shares > 0)):
        i, j, share = int(i), int(j), float(shares[i, j])
        cell = f"workload_distribution[{i}][{j}] (row {i}, column {j})"
        if best[i, j] <= 0:
            raise InfeasibleError(
                f"bucket {cell} holds {share:.3g} of the requests but every GPU's tputs is 0 "
                f"there ({', '.join(f'gpu_info.{g}.tputs[{i}][{j}] = 0' for g in names)}): "
                f"no GPU can serve it", binding="slo", file=file,
                field=f"gpu_info.{where}.tputs[{i}][{j}]",
                expected="a positive throughput (req/s) for this bucket on at least one GPU, "
                         "or share 0 for it in workload_distribution")
        need = rate * share / best[i, j]
        if need > CoverProblem.max_instances:
            fastest = max(names, key=lambda g: grids[g][i, j])
            raise InfeasibleError(
                f"bucket {cell}: total_request_rate {rate:g} x share {share:.3g} = "
                f"{rate * share:.3g} req/s needs {need:.3g} instances of its fastest GPU "
                f"{fastest} (gpu_info.{fastest}.tputs[{i}][{j}] = {best[i, j]:.3g} req/s; at "
                f"most {CoverProblem.max_instances:,} per pool)", binding="load", file=file,
                field="total_request_rate",
                expected="total_request_rate and tputs in the same unit (requests per second)")


def plan_melange(path: str | Path, *, time_limit_s: float | None = None) -> dict[str, Any]:
    """Solve a Mélange config; the plan adds ``melange_result`` in Mélange's own output format
    ({gpu: count, "cost": $/h})."""
    data, fp = melange_request(path)
    plan = plan_from_problem(fp, time_limit_s=time_limit_s, inputs=data)
    result = {g: 0 for g in data["gpu_info"]}
    for p in plan["pools"]:
        result[p["gpu"]] += p["count"]
    result["cost"] = round(plan["cost_per_hour"], 6)
    plan["melange_result"] = result
    plan["explanations"].append("Mélange input: bucket in(i,i+1]xout(j,j+1] is row i, column j "
                                "of workload_distribution and tputs; capacities are the "
                                "config's measured tputs (0 = cannot serve)")
    return plan
