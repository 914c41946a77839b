"""``planner fleet`` on inputs found by auditing it: numbers out of range, broken trace cells
and profiles, loads far too small or too large, files the request reads.  Each gives one
clear error line and exit 2, or a correct plan; no input file is overwritten."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import one_error_line, run_cli as run

HIST = {"input_edges": [0, 1024, 4096], "output_edges": [0, 256, 1024],
        "shares": [[0.4, 0.2], [0.3, 0.1]]}


def _request(tmp_path: Path, *, workload=None, gpus=None, **model) -> Path:
    entry = {"name": "chat", "model": "llama-3.1-8b",
             "workload": workload or {"histogram": HIST, "rate_rps": 5},
             "slo": {"ttft_s": 1.0, "tpot_s": 0.05}, **model}
    req = {"models": [entry], "gpus": gpus or [{"name": "L4", "quota": 16},
                                               {"name": "A100-80GB", "quota": 8}]}
    path = tmp_path / "req.yaml"
    path.write_text(yaml.safe_dump(req))
    return path


def _fails(tmp_path, capsys, path: Path, *needles: str, args=()) -> str:
    code, _, err = run(["fleet", path, "--time-limit", "5", *args], capsys)
    line = one_error_line(err)
    assert code == 2
    for needle in needles:
        assert needle in line, line
    return line


@pytest.mark.parametrize("where,value,field", [
    (("gpus", 0, "price_per_hour"), float("inf"), "gpus[0].price_per_hour"),
    (("gpus", 0, "reserved_price_per_hour"), float("inf"), "gpus[0].reserved_price_per_hour"),
    (("models", 0, "workload", "rate_scale"), float("inf"), "workload.rate_scale"),
    (("models", 0, "workload", "histogram", "input_edges"), [0, float("nan"), 4096],
     "histogram.input_edges[1]"),
    (("models", 0, "slo", "ttft_s"), float("inf"), "slo.ttft_s"),
])
def test_no_inf_or_nan_in_a_request(tmp_path, capsys, where, value, field):
    path = _request(tmp_path)
    req = yaml.safe_load(path.read_text())
    node = req
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    path.write_text(yaml.safe_dump(req))
    _fails(tmp_path, capsys, path, field, "finite")


@pytest.mark.parametrize("rate", [1e9, 1e300])
def test_a_load_beyond_any_pool_is_named(tmp_path, capsys, rate):
    path = _request(tmp_path, workload={"histogram": HIST, "rate_rps": rate})
    _fails(tmp_path, capsys, path, "models[0].workload", "instances of its fastest option")


@pytest.mark.parametrize("rate", [3e-6, 1e-12])
def test_a_sliver_of_load_still_gets_one_instance(tmp_path, capsys, rate):
    """Loads below the MILP's feasibility tolerance (1e-6 instance) once gave a plan with no
    pool and a routing table naming one; now: the cheapest instance that serves them, proven."""
    path = _request(tmp_path, workload={"histogram": HIST, "rate_rps": rate})
    out = tmp_path / "plan.yaml"
    code, stdout, err = run(["fleet", path, "-o", out, "--time-limit", "5"], capsys)
    assert code == 0, err
    plan = yaml.safe_load(out.read_text())
    assert [p["count"] for p in plan["pools"]] == [1]
    assert plan["solver"]["status"] == "optimal" and plan["cost_per_hour"] > 0
    groups = {p["group"] for p in plan["pools"]}  # routing names pools by group
    assert all(set(r["pools"]) <= groups for r in plan["routing"])


def test_trace_edges_are_checked_like_histogram_edges(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,100,10\n30,2000,300\n")
    for edges in ([0, 4096, 1024], [8192], [-100, 64, 4096]):
        path = _request(tmp_path, workload={"trace": "t.csv", "input_edges": edges})
        _fails(tmp_path, capsys, path, "models[0].workload.input_edges", "increasing")


@pytest.mark.parametrize("row,needle", [
    ("nan,100,10", "not finite"),
    ("inf,100,10", "not finite"),
    ("1,1e30,10", "above 100,000,000"),
])
def test_trace_cells_out_of_range(tmp_path, capsys, row, needle):
    (tmp_path / "t.csv").write_text(f"TIMESTAMP,ContextTokens,GeneratedTokens\n0,100,10\n{row}\n")
    path = _request(tmp_path, workload={"trace": "t.csv"})
    _fails(tmp_path, capsys, path, "t.csv", needle)


def test_trace_with_a_byte_order_mark_is_read(tmp_path, capsys):
    (tmp_path / "t.csv").write_bytes(
        "\ufeffTIMESTAMP,ContextTokens,GeneratedTokens\n0,100,10\n30,200,20\n".encode("utf-8"))
    path = _request(tmp_path, workload={"trace": "t.csv", "rate_rps": 2})
    code, _, err = run(["fleet", path, "--json", "--time-limit", "5"], capsys)
    assert code == 0, err


def test_too_many_periods_are_refused(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,100,10\n236,200,20\n")
    path = _request(tmp_path, workload={"trace": "t.csv", "period_s": 1e-3})
    _fails(tmp_path, capsys, path, "models[0].workload.period_s", "more than 2016")
    path = _request(tmp_path, workload={"histogram": HIST, "rate_rps": [1.0] * 3000})
    _fails(tmp_path, capsys, path, "models[0].workload.rate_rps", "more than 2016")


@pytest.mark.parametrize("model,field", [({"dtype": "int3"}, "models[0].dtype"),
                                         ({"kv_dtype": "fp7"}, "models[0].kv_dtype")])
def test_unknown_dtype_is_named(tmp_path, capsys, model, field):
    _fails(tmp_path, capsys, _request(tmp_path, **model), field, "unknown dtype")


def _aibrix(tmp_path: Path, indexes) -> Path:
    prof = {"gpu": "A100-80GB", "cost": 3.67, "tputs": [[5.0, 4.0], [3.0, 2.0]],
            "indexes": indexes}
    (tmp_path / "prof.json").write_text(json.dumps(prof))
    return _request(tmp_path, profiles=[{"gpu": "A100-80GB", "file": "prof.json"}],
                    gpus=[{"name": "A100-80GB", "price_per_hour": 3.67}])


@pytest.mark.parametrize("indexes,needle", [
    ([[1024, 256], [1024, 4096]], "do not increase"),
    ([[4, 8], "ab"], "not numbers"),
    ([None, None], "finite"),
])
def test_profile_ticks_are_checked(tmp_path, capsys, indexes, needle):
    _fails(tmp_path, capsys, _aibrix(tmp_path, indexes), "prof.json", "indexes[", needle)


def test_benchmark_rows_with_broken_numbers_serve_nothing(tmp_path, capsys):
    rows = [{"input_tokens": 1024, "output_tokens": 256, "request_rate": r, "metric": m,
             "mean": v, "P90": v} for r in (1, 2) for m, v in (("TPUT", float("inf")),
                                                               ("TPOT", float("nan")))]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    path = _request(tmp_path, profiles=[{"gpu": "A100-80GB", "file": "rows.jsonl"}],
                    gpus=[{"name": "A100-80GB", "price_per_hour": 3.67}])
    _fails(tmp_path, capsys, path, "zero throughput")


def _melange(tmp_path: Path, **change) -> Path:
    cfg = {"gpu_info": {"A10G": {"cost": 1.01, "tputs": [[2, 1], [5, 2]]},
                        "A100": {"cost": 3.67, "tputs": [[20, 20], [40, 20]]}},
           "workload_distribution": [[0.2, 0.1], [0.5, 0.2]], "total_request_rate": 30,
           "slice_factor": 1}
    cfg.update(change)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("change,field,needle", [
    ({"normalise_shares": "false"}, "normalise_shares", "true or false"),
    ({"gpu_info": {"a": {"cost": 1, "tputs": [[1, 1], [1, 1]]},
                   "A": {"cost": 2, "tputs": [[1, 1], [1, 1]]}}}, "gpu_info.A", "repeats 'a'"),
    ({"gpu_info": {"A10G": {"cost": 1, "tputs": [[True, 1], [1, 1]]}}}, "gpu_info.A10G.tputs",
     "not numbers"),
])
def test_melange_config_fields(tmp_path, capsys, change, field, needle):
    code, _, err = run(["fleet", "--melange", _melange(tmp_path, **change)], capsys)
    line = one_error_line(err)
    assert code == 2 and f"'{field}'" in line and needle in line, line


def test_melange_infinite_cost(tmp_path, capsys):
    path = _melange(tmp_path)
    path.write_text(path.read_text().replace('"cost": 1.01', '"cost": Infinity'))
    code, _, err = run(["fleet", "--melange", path], capsys)
    assert code == 2 and "gpu_info.A10G.cost" in one_error_line(err)


def test_a_vanishing_capacity_counts_as_cannot_serve(tmp_path, capsys):
    """A profile of 1e-300 req/s once overflowed the LP's coefficients."""
    path = _melange(tmp_path, gpu_info={"A10G": {"cost": 1.0, "tputs": [[1e-300] * 2] * 2},
                                        "A100": {"cost": 3.7, "tputs": [[8, 4], [20, 9]]}},
                    total_request_rate=10)
    code, stdout, err = run(["fleet", "--melange", path, "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["melange_result"]["A10G"] == 0


def test_files_the_request_reads_are_not_overwritten(tmp_path, capsys):
    config = tmp_path / "models" / "tiny" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text((Path(__file__).parent.parent / "costmodels" / "configs" /
                       "llama-3.1-8b.json").read_text())
    before = config.read_bytes()
    path = _request(tmp_path, model="models/tiny/config.json")
    for target in (config, tmp_path / "models" / "tiny"):
        target = target / "config.json" if target.is_dir() else target
        _fails(tmp_path, capsys, path, "refusing to overwrite", args=["-o", target])
    assert config.read_bytes() == before
    prof = _aibrix(tmp_path, [[256, 1024], [1024, 4096]])
    _fails(tmp_path, capsys, prof, "refusing to overwrite", args=["-o", tmp_path / "prof.json"])


def test_a_model_path_is_read_beside_the_request(tmp_path, capsys, monkeypatch):
    """From any folder: ``model: models/x/config.json`` is the request's neighbour; a missing
    one is named on the request's field."""
    config = tmp_path / "models" / "x" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text((Path(__file__).parent.parent / "costmodels" / "configs" /
                       "llama-3.1-8b.json").read_text())
    path = _request(tmp_path, model="models/x/config.json")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, stdout, err = run(["fleet", path, "--json", "--time-limit", "5"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["cost_per_hour"] > 0
    missing = _request(tmp_path, model="models/y/config.json")
    _fails(tmp_path, capsys, missing, "req.yaml", "models[0].model", "not found")


def test_greedy_and_repair_serve_every_load():
    """Solver level: a load under the MILP tolerance gets an instance (not a pool-less
    routing), and the one-instance bound proves it."""
    from solvers.binpack import CoverOption, CoverProblem, one_instance_bound, solve_cover

    opts = [CoverOption("a", "A", 1, {"on_demand": 1.0}),
            CoverOption("b", "B", 1, {"on_demand": 3.0})]
    problem = CoverProblem(opts, np.array([[10.0, 20.0], [5.0, 30.0]]), np.array([3e-13, 1e-13]))
    sol = solve_cover(problem, time_limit_s=5)
    assert sol.on_demand.ravel().tolist() == [1, 0]
    assert sol.result.status == "optimal" and one_instance_bound(problem) == 1.0
