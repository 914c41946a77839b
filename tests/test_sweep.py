"""Sweeps: spec validation (axes must name request fields), grid order, local backend (processes
and in-process give the same table), CSV / parquet round trips, the CLI, the sweep report and
the bad-input messages."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hardware.errors import InputError
from planner.cli import app
from planner.sweep import (check_field, comparable, load_sweep, read_results, results_frame, run_sweep,
                           set_path, sweep_from_data, write_results)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "sweep_fleet.yaml"

#: a small fleet sweep: 3 rates x 2 GPU sets = 6 points, one histogram period each
SMALL = {
    "kind": "fleet",
    "time_limit_s": 5,
    "base": yaml.safe_load(EXAMPLE.read_text())["base"],
    "axes": [
        {"name": "rate_rps", "field": "models.0.workload.rate_rps", "values": [1.0, 4.0, 16.0]},
        {"name": "gpu_set", "field": "gpus", "values": [[{"name": "L4"}, {"name": "A10G"}, {"name": "A100-80GB"},
                                                         {"name": "H100-SXM"}], [{"name": "H100-SXM"}]],
         "labels": ["all", "H100-only"]},
    ],
}

_CACHE: dict[str, Path] = {}


def make_results(folder: Path) -> Path:
    """A real sweep results table (the small fleet sweep, run in this process), once per session."""
    if "csv" not in _CACHE:
        folder.mkdir(parents=True, exist_ok=True)
        sweep = sweep_from_data(copy.deepcopy(SMALL), file="small-sweep", base_dir=str(REPO / "examples"))
        rows = run_sweep(sweep, backend="local", workers=1)
        _CACHE["csv"] = write_results(results_frame(sweep, rows), folder / "results.csv")
    return _CACHE["csv"]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("sweep"))


def test_example_is_a_200_point_grid_first_axis_slowest():
    sweep = load_sweep(EXAMPLE)
    assert sweep.size >= 200
    points = sweep.points()
    assert [p[0] for p in points] == list(range(sweep.size))
    names = [a.name for a in sweep.axes]
    # the last axis varies fastest
    first, second = points[0][2], points[1][2]
    assert first[names[0]] == second[names[0]] and first[names[-1]] != second[names[-1]]
    # values land in the request at their dotted path
    _, req, labels = points[-1]
    assert req["models"][0]["workload"]["rate_rps"] == labels["rate_rps"]
    assert req["models"][0]["slo"]["tpot_s"] == labels["tpot_slo_s"]
    assert [g["name"] for g in req["gpus"]] == ["H100-SXM"] and labels["gpu_set"] == "H100-only"
    # the base request is not modified by building points
    assert sweep.base["models"][0]["workload"]["rate_rps"] == 10


@pytest.mark.parametrize("field, needle", [
    ("models.0.workload.rate_rpz", "did you mean rate_rps"),
    ("models.3.slo.tpot_s", "no index 3"),
    ("gpus.0.price", "has no field 'price'"),
    ("solver.time_limit_s.x", "no field 'x'"),
    ("nonsense", "the request has no field 'nonsense'"),
])
def test_axis_naming_no_field_is_one_input_error(field, needle):
    spec = copy.deepcopy(SMALL)
    spec["axes"][0]["field"] = field
    with pytest.raises(InputError, match=needle) as exc:
        sweep_from_data(spec, file="s.yaml")
    assert exc.value.field == "axes[0].field" and exc.value.file == "s.yaml"


def test_fields_absent_from_the_base_but_in_the_request_model_are_accepted():
    from planner.fleet import FleetRequest
    base = SMALL["base"]
    assert check_field(FleetRequest, base, "spot.max_fraction") is None
    assert check_field(FleetRequest, base, "gpus.1.spot_price_per_hour") is None
    assert check_field(FleetRequest, base, "models.0.workload.histogram.shares") is None
    req = copy.deepcopy(base)
    set_path(req, "spot.max_fraction", 0.2)
    set_path(req, "gpus.1.quota", 3)
    assert req["spot"] == {"max_fraction": 0.2} and req["gpus"][1]["quota"] == 3


@pytest.mark.parametrize("mutate, needle", [
    (lambda s: s.update(kind="warp"), "unknown planner kind"),
    (lambda s: s["axes"][0].update(values=["fast"]), "point 0 .rate_rps=fast"),
    (lambda s: s["axes"][0].update(values=[]), "empty"),
    (lambda s: s.update(request="x.yaml"), "exactly one of"),
    (lambda s: s["axes"][1].update(labels=["only-one"]), "labels"),
])
def test_bad_spec_is_one_input_error(mutate, needle):
    spec = copy.deepcopy(SMALL)
    mutate(spec)
    with pytest.raises(InputError, match=needle):
        sweep_from_data(spec, file="s.yaml")


def test_a_point_the_planner_rejects_becomes_an_error_row():
    spec = copy.deepcopy(SMALL)
    spec["axes"] = [spec["axes"][0] | {"values": [-1.0]}]
    sweep = sweep_from_data(spec, file="s.yaml")  # the type is right; the planner says what is wrong
    row = run_sweep(sweep, workers=1)[0]
    assert row["status"] == "error" and "rate" in row["message"]


def test_processes_and_in_process_give_the_same_table():
    spec = {"kind": "noop", "base": {"a": 1, "b": {"c": 2}},
            "axes": [{"name": "a", "field": "a", "range": {"start": 1, "stop": 100, "num": 12, "log": True}},
                     {"name": "c", "field": "b.c", "values": [1, 2, 3]}]}
    sweep = sweep_from_data(spec)
    one = comparable(results_frame(sweep, run_sweep(sweep, workers=1)))
    two = comparable(results_frame(sweep, run_sweep(sweep, workers=2)))
    assert one.equals(two) and len(one) == 36
    assert one["request_sha256"].nunique() == 36  # every point a different request


def test_fleet_results_table(results):
    frame = read_results(results)
    assert list(frame["point"]) == list(range(6))
    assert set(frame["status"]) == {"ok"}
    assert {"axis.rate_rps", "axis.gpu_set", "cost_per_hour", "solver.status", "solver.gap",
            "single.H100-SXM.cost_per_hour"} <= set(frame.columns)
    # cost never falls as the rate grows, for a fixed GPU set
    for _, g in frame.groupby("axis.gpu_set"):
        costs = g.sort_values("axis.rate_rps")["cost_per_hour"].tolist()
        assert costs == sorted(costs)
    # H100-only costs at least as much as the free mix at the same rate
    pivot = frame.pivot(index="axis.rate_rps", columns="axis.gpu_set", values="cost_per_hour")
    assert (pivot["H100-only"] >= pivot["all"] - 1e-9).all()
    assert json.loads(frame["axes"][0]) == {"rate_rps": "models.0.workload.rate_rps", "gpu_set": "gpus"}


def test_csv_and_parquet_round_trip(results, tmp_path):
    frame = read_results(results)
    pytest.importorskip("pyarrow", reason="parquet needs pyarrow (optional extra)")
    path = write_results(frame, tmp_path / "r.parquet")
    back = read_results(path)
    assert comparable(back).equals(comparable(frame))


def test_parquet_without_pyarrow_is_a_clear_error(results, tmp_path, monkeypatch):
    frame = read_results(results)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(InputError, match="pyarrow"):
        write_results(frame, tmp_path / "r.parquet")


def test_a_table_that_is_not_a_sweep_is_refused(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a sweep results table"):
        read_results(bad)


def test_sweep_report_draws_sensitivity_curves(results, tmp_path):
    out = tmp_path / "sweep.html"
    res = CliRunner().invoke(app, ["report", str(results), "-o", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    for plot in ("sweep-cost-rate", "sweep-break-even"):
        assert f'data-plot="{plot}"' in html
    assert "<script" not in html
    assert "models.0.workload.rate_rps" in html  # the inputs: every axis and its field


def test_break_even_rates_come_from_sign_changes():
    import pandas as pd
    from planner.report.sweep import break_even
    frame = pd.DataFrame({"status": ["ok"] * 3, "axis.rate": [1.0, 2.0, 4.0],
                          "single.A.cost_per_hour": [1.0, 3.0, 5.0], "single.B.cost_per_hour": [2.0, 2.0, 2.0]})
    rows = break_even(frame, "rate", [])
    assert len(rows) == 1
    r = rows[0]
    assert r["rate_low"] == 1.0 and r["rate_high"] == 2.0 and r["break_even_rate"] == pytest.approx(1.5)
    assert r["cheaper_below"] == "A" and r["cheaper_above"] == "B"


def test_cli_sweep_writes_table_and_json(tmp_path):
    spec = copy.deepcopy(SMALL)
    spec["axes"][0]["values"] = [2.0]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    res = CliRunner().invoke(app, ["sweep", str(path), "-o", str(tmp_path / "r.csv"), "--quiet", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert len(read_results(tmp_path / "r.csv")) == 2
    res = CliRunner().invoke(app, ["sweep", str(path), "--json", "--workers", "1"])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)  # nothing but JSON on stdout
    assert doc["summary"]["points"] == 2 and doc["summary"]["ok"] == 2 and len(doc["rows"]) == 2


def test_cli_bad_axis_is_one_line_exit_2(tmp_path, capsys):
    from planner.cli import main
    spec = copy.deepcopy(SMALL)
    spec["axes"][1]["field"] = "gpu_list"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(path), "-o", str(tmp_path / "r.csv")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "axes[1].field" in err[0] and "gpu_list" in err[0]
    assert not (tmp_path / "r.csv").exists()


def test_ray_backend_errors_are_input_errors(tmp_path, monkeypatch):
    from planner.sweep import _check_reachable, run_ray
    sweep = sweep_from_data({"kind": "noop", "base": {"a": 1}, "axes": [{"field": "a", "values": [1, 2]}]})
    # an address nothing listens on: one clear error, quickly, before Ray is even started
    with pytest.raises(InputError, match="cannot reach the Ray cluster at 127.0.0.1:9"):
        _check_reachable("127.0.0.1:9", timeout_s=2)
    with pytest.raises(InputError, match="not host:port"):
        _check_reachable("nowhere")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(InputError, match="needs Ray"):
        run_ray(sweep, address="127.0.0.1:9")


def test_prices_example_reads_its_base_request_and_trace_relative_to_the_files():
    from planner.sweep import run_point
    sweep = load_sweep(REPO / "examples" / "sweep_fleet_prices.yaml")
    assert sweep.size == 4 and Path(sweep.request_file).name == "fleet_request.yaml"
    index, req, labels = sweep.points()[3]
    assert req["gpus"][3]["spot_price_per_hour"] == 2.5 and req["spot"]["max_fraction"] == 0.3
    row = run_point(sweep.kind, index, req, labels, sweep.base_dir, sweep.request_file, sweep.time_limit_s)
    assert row["status"] == "ok", row["message"]
    assert row["axis.h100_spot_price"] == 2.5 and row["cost_per_hour"] > 0
