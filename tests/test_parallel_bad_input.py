"""Bad input to ``planner parallel`` and ``planner sweep``: one ``error:`` line naming the file
and the field, exit 2, no traceback, no input file written over; and the inputs that used to
give silently wrong plans."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import one_error_line, run_cli

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "costmodels" / "configs" / "llama-3.1-8b.json"

#: a small, fast request (llama-3.1-8b on one 8-GPU node, 20 requests, aggregated only)
BASE = {
    "model": "llama-3.1-8b",
    "gpu": "H100-SXM",
    "cluster": {"nodes": 1, "gpus_per_node": 8},
    "workload": {"input_len": 512, "output_len": 64, "rate_rps": 2, "num_requests": 20},
    "slo": {"ttft_s": 1.0, "tpot_s": 0.05},
    "search": {"disaggregation": "off", "top_k": 2},
}


def _merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _trace(path: Path, times: list[str]) -> Path:
    rows = "".join(f"{t},100,10\n" for t in times)
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + rows)
    return path


# ----------------------------------------------------------------------------- planner parallel

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("patch, field, needle", [
    # inf / nan / overflowing numbers used to end in tracebacks
    ({"workload": {"rate_rps": INF}}, "workload.rate_rps", "finite"),
    ({"workload": {"input_len": [[512, NAN], [1024, 1]]}}, "workload.input_len", "weight nan"),
    ({"workload": {"input_len": [[512, INF], [1024, 1]]}}, "workload.input_len", "weight inf"),
    ({"workload": {"input_len": [[INF, 1]]}}, "workload.input_len", "not a whole number"),
    ({"workload": {"input_len": [[1e300, 1]]}}, "workload.input_len", "outside 1..100,000,000"),
    ({"gpu": None, "gpus": [{"type": "H100-SXM", "price_per_hour": 0}]}, "gpus[0].price_per_hour", "greater than 0"),
    # silently wrong plans
    ({"gpu": None, "gpus": [{"type": "H100-SXM", "price_per_hour": INF}]}, "gpus[0].price_per_hour", "finite"),
    ({"workload": {"rate_rps": 1e-300}}, "workload.rate_rps", "1e-06"),
    ({"slo": {"ttft_s": INF}}, "slo.ttft_s", "finite"),
    ({"workload": {"input_len": 200000}}, "workload.input_len", "context of 131,072"),
    ({"workload": {"input_len": 130000, "output_len": [[64, 1], [4096, 1]]}}, "workload.output_len",
     "context of 131,072"),
    ({"workload": {"input_len": [[512.5, 1], [1024, 1]]}}, "workload.input_len", "not a whole number"),
    ({"workload": {"input_len": 512.7}}, "workload.input_len", "not a whole number"),
    # errors that left out the request file
    ({"workload": {"input_len": -100}}, "workload.input_len", "outside 1.."),
    ({"gpu": "H100-XYZ"}, "gpu", "unknown GPU"),
    ({"model": "llama-9"}, "model", "unknown model"),
    ({"slo": {"ttft_s": None, "tpot_s": None}}, "slo", "no SLO"),
    # numbers whose search would hang or run out of memory
    ({"workload": {"seed": -1}}, "workload.seed", "greater than or equal to 0"),
    ({"cluster": {"nodes": 100000}}, "cluster.nodes", "more than 4,096"),
    ({"search": {"max_num_seqs": 10 ** 9}}, "search.max_num_seqs", "less than or equal"),
])
def test_bad_request_field_is_one_line_naming_file_and_field(tmp_path, capsys, patch, field, needle):
    req = _write(tmp_path / "req.yaml", _merge(BASE, patch))
    code, out, err = run_cli(["parallel", req], capsys)
    line = one_error_line(err)
    assert code == 2 and out == ""
    assert f"{req}, field '{field}'" in line and needle in line, line


@pytest.mark.parametrize("via_request", [False, True])
def test_a_trace_spanning_zero_seconds_says_so(tmp_path, capsys, via_request):
    trace = _trace(tmp_path / "t.csv", ["2023-11-16 18:15:00.000000"] * 20)
    if via_request:
        req = _write(tmp_path / "req.yaml", _merge(BASE, {"workload": {"trace": "t.csv", "input_len": None,
                                                                        "output_len": None, "rate_rps": None}}))
        argv = ["parallel", req]
    else:
        argv = ["parallel", "--model", "llama-3.1-8b", "--gpu", "H100-SXM", "--trace", trace, "--ttft-slo", "1"]
    code, _, err = run_cli(argv, capsys)
    line = one_error_line(err)
    assert code == 2 and f"{trace}, field 'timestamps'" in line
    assert "arrive at one time" in line and "more than 0 s" in line and "rate_rps" in line


def test_trace_requests_longer_than_the_context_are_refused(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:15:{i:02d}.000000,{200000 if i == 3 else 100},10\n" for i in range(20)))
    code, _, err = run_cli(["parallel", "--model", "llama-3.1-8b", "--gpu", "H100-SXM", "--trace", trace,
                            "--ttft-slo", "1"], capsys)
    line = one_error_line(err)
    assert code == 2 and f"{trace}, field 'workload.trace'" in line and "1 of 20 requests" in line


@pytest.mark.parametrize("how", ["request", "flag"])
def test_output_over_the_model_config_is_refused(tmp_path, capsys, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "cfg.json"
    shutil.copy(CONFIG, cfg)
    before = cfg.read_bytes()
    if how == "request":
        argv = ["parallel", _write(tmp_path / "req.yaml", _merge(BASE, {"model": "cfg.json"})), "-o", "cfg.json"]
    else:
        argv = ["parallel", "--model", "cfg.json", "--gpu", "H100-SXM", "--input-len", "512", "--output-len", "64",
                "--ttft-slo", "1", "--num-requests", "20", "-o", "cfg.json"]
    code, _, err = run_cli(argv, capsys)
    line = one_error_line(err)
    assert code == 2 and "field '-o/--output'" in line and "refusing to overwrite the input file" in line
    assert cfg.read_bytes() == before


def test_model_path_is_read_beside_the_request_as_the_trace_is(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "req"
    folder.mkdir()
    shutil.copy(CONFIG, folder / "cfg.json")
    _trace(folder / "t.csv", [f"2023-11-16 18:15:{i:02d}.000000" for i in range(20)])
    req = _write(folder / "req.yaml", _merge(BASE, {"model": "cfg.json", "workload": {
        "trace": "t.csv", "input_len": None, "output_len": None}}))
    monkeypatch.chdir(tmp_path)  # neither cfg.json nor t.csv is here
    code, out, err = run_cli(["parallel", req, "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["model"] == json.loads(CONFIG.read_text())["_name_or_path"] and doc["workload"]["requests"] == 20
    # and the plan may not replace either file
    before = (folder / "cfg.json").read_bytes()
    code, _, err = run_cli(["parallel", req, "-o", folder / "cfg.json"], capsys)
    assert code == 2 and "refusing to overwrite" in one_error_line(err)
    assert (folder / "cfg.json").read_bytes() == before


def test_an_unreachable_tiny_slo_prints_a_short_number(tmp_path, capsys):
    req = _write(tmp_path / "req.yaml", _merge(BASE, {"slo": {"tpot_s": 1e-300, "ttft_s": None}}))
    code, _, err = run_cli(["parallel", req], capsys)
    line = one_error_line(err)
    assert code == 2 and f"{req}, field 'slo'" in line and "missing by" in line
    assert not re.search(r"\d{10}", line) and len(line) < 400, line


def test_tiny_rates_rank_plans_as_any_rate_that_one_replica_serves():
    from planner.parallel import MIN_RATE_RPS, run_parallel
    best = {rate: run_parallel(_merge(BASE, {"workload": {"rate_rps": rate}}))["plans"][0]["label"]
            for rate in (MIN_RATE_RPS, 1e-3, 1.0)}
    assert len(set(best.values())) == 1, best  # the cheapest plan, not the one with the most goodput


def test_histogram_lengths_are_whole_numbers_like_scalars():
    from planner.parallel import parse_request
    req = parse_request(_merge(BASE, {"workload": {"input_len": [[512.0, 1], [1024, 1]], "output_len": 64.0}}))
    assert req.workload.output_len == 64 and isinstance(req.workload.output_len, int)


# ---------------------------------------------------------------------------------- planner sweep

def _sweep(tmp_path: Path, axes: list, base: dict | None = None) -> Path:
    base = base or {**BASE, "gpu": None, "gpus": [{"type": "H100-SXM"}]}
    return _write(tmp_path / "sweep.yaml", {"kind": "parallel", "base": base, "axes": axes})


@pytest.mark.parametrize("axes, field, needle", [
    # 10^9 points: refused before any point is built
    ([{"field": "workload.rate_rps", "range": {"start": 1, "stop": 2, "num": 1000}},
      {"field": "slo.ttft_s", "range": {"start": 1, "stop": 2, "num": 1000}},
      {"field": "slo.tpot_s", "range": {"start": 0.1, "stop": 0.2, "num": 1000}}],
     "axes", "1,000,000,000 points"),
    # a value the planner cannot use: the sweep file, the axis and the value
    ([{"name": "rate", "field": "workload.rate_rps", "values": [1, INF]}], "axes[0].values", "rate=inf"),
    ([{"name": "len", "field": "workload.input_len", "values": [512, 512.5]}], "axes[0].values", "len=512.5"),
    ([{"name": "price", "field": "gpus.0.price_per_hour", "values": [2.0, 0]}], "axes[0].values", "price=0"),
    # two axes on one field: one's values would silently replace the other's
    ([{"name": "x", "field": "workload.rate_rps", "values": [1, 2]},
      {"name": "y", "field": "workload.rate_rps", "values": [3]}], "axes[1].field", "the same field"),
    ([{"name": "x", "field": "workload", "values": [{"input_len": 1, "output_len": 1}]},
      {"name": "y", "field": "workload.rate_rps", "values": [3]}], "axes[1].field", "overlapping fields"),
    # a range beyond floats: one line, no numpy warning
    ([{"field": "workload.rate_rps", "range": {"start": 1, "stop": INF, "num": 3}}], "axes[0].range.stop",
     "finite"),
    ([{"field": "workload.rate_rps", "range": {"start": -1e308, "stop": 1e308, "num": 3}}], "axes[0].range",
     "wider than a float"),
])
def test_bad_sweep_is_one_line_naming_the_sweep_file_and_axis(tmp_path, capsys, axes, field, needle):
    spec = _sweep(tmp_path, axes)
    code, _, err = run_cli(["sweep", spec, "-o", tmp_path / "r.csv", "--quiet"], capsys)
    line = one_error_line(err)
    assert code == 2 and f"{spec}, field '{field}'" in line and needle in line, line
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("where", ["base", "axis"])
def test_sweep_results_never_replace_a_file_the_requests_read(tmp_path, capsys, where):
    trace = _trace(tmp_path / "trace.csv", [f"2023-11-16 18:15:{i:02d}.000000" for i in range(20)])
    before = trace.read_bytes()
    workload = {"trace": "trace.csv", "num_requests": 20}
    if where == "base":
        req = _write(tmp_path / "req.yaml", {**BASE, "workload": workload})
        spec = _write(tmp_path / "sweep.yaml", {"kind": "parallel", "request": "req.yaml", "axes": [
            {"field": "workload.rate_rps", "values": [1, 2]}]})
    else:
        spec = _sweep(tmp_path, [{"field": "workload", "values": [{"input_len": 64, "output_len": 8}, workload]}])
    code, _, err = run_cli(["sweep", spec, "-o", trace, "--quiet"], capsys)
    line = one_error_line(err)
    assert code == 2 and "refusing to overwrite the input file" in line and "field '-o/--output'" in line
    assert trace.read_bytes() == before
    if where == "base":
        assert req.exists()


def test_a_big_grid_is_walked_point_by_point():
    from planner.sweep import MAX_POINTS, sweep_from_data
    sweep = sweep_from_data({"kind": "noop", "base": {"x": 0, "y": 0},
                             "axes": [{"field": "x", "range": {"start": 0, "stop": 1, "num": 1000}},
                                      {"field": "y", "range": {"start": 0, "stop": 1, "num": MAX_POINTS // 1000}}]})
    points = sweep.iter_points()
    assert next(points)[0] == 0 and next(points)[2] == {"x": 0.0, "y": pytest.approx(1 / (MAX_POINTS // 1000 - 1),
                                                                                        rel=1e-5)}
