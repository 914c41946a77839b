"""``planner fleet`` on the command line: files, --json, --melange, clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_cli as run

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "fleet_request.yaml"




def test_example_request_writes_plan(tmp_path, capsys):
    out = tmp_path / "plan.yaml"
    code, stdout, err = run(["fleet", EXAMPLE, "-o", out, "--time-limit", "10"], capsys)
    assert code == 0, err
    plan = yaml.safe_load(out.read_text())
    assert plan["kind"] == "FleetPlan" and plan["cost_per_hour"] > 0
    assert "cost" in stdout and "$/h" in stdout


def test_json_stdout_only_json(capsys):
    code, stdout, err = run(["fleet", EXAMPLE, "--json", "--time-limit", "10"], capsys)
    assert code == 0, err
    plan = json.loads(stdout)
    assert plan["solver"]["status"] in ("optimal", "feasible")


def test_melange_flag(shared_data, tmp_path, capsys):
    code, stdout, err = run(["fleet", "--melange", shared_data / "fleet_bench" / "melange_toy_example.json",
                             "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["melange_result"] == {"A10G": 3, "A100-80GB": 1, "cost": 6.7}


def _request(tmp_path, text: str) -> Path:
    p = tmp_path / "req.yaml"
    p.write_text(text)
    return p


BASE = """
models:
  - model: llama-3.1-8b
    workload:
      trace: {trace}
    slo: {{tpot_s: 0.05}}
gpus:
  - name: H100-SXM
"""


@pytest.mark.parametrize("trace_text,needle", [
    ("", "empty"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no requests"),
    ("a,b\n1,2\n", "missing column"),
])
def test_bad_trace_one_line_exit_2(tmp_path, capsys, trace_text, needle):
    (tmp_path / "t.csv").write_text(trace_text)
    req = _request(tmp_path, BASE.format(trace="t.csv"))
    code, stdout, err = run(["fleet", req], capsys)
    assert code == 2
    assert err.startswith("error: ") and needle in err and "t.csv" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unservable_and_bad_args(tmp_path, capsys):
    req = _request(tmp_path, """
models:
  - model: llama-3.1-8b
    workload: {histogram: {input_edges: [0, 1024], output_edges: [0, 128], shares: [[1.0]]}, rate_rps: 3}
    slo: {tpot_s: 0.001}
gpus: [{name: L4}]
""")
    code, _, err = run(["fleet", req], capsys)
    assert code == 2 and "TPOT" in err and "bucket in(0,1024]xout(0,128]" in err
    code, _, err = run(["fleet"], capsys)
    assert code == 2 and "--melange" in err
    code, _, err = run(["fleet", tmp_path / "missing.yaml"], capsys)
    assert code == 2 and "not found" in err
    code, _, err = run(["fleet", EXAMPLE, "--time-limit", "-1"], capsys)
    assert code == 2 and "--time-limit" in err


def test_refuses_to_overwrite_input(tmp_path, capsys):
    req = tmp_path / "r.yaml"
    req.write_text(EXAMPLE.read_text().replace("trace_small.csv", str(REPO / "examples" / "trace_small.csv")))
    code, _, err = run(["fleet", req, "-o", req], capsys)
    assert code == 2 and "refusing to overwrite" in err


def test_break_even_flag(capsys):
    code, stdout, err = run(["fleet", EXAMPLE, "--json", "--break-even", "--time-limit", "10"], capsys)
    assert code == 0, err
    plan = json.loads(stdout)
    gpus = {b["gpu"] for b in plan["break_even_prices"]}
    assert gpus == {g["gpu"] for g in plan["baseline_single_gpu"]["per_gpu"]}


def test_slo_factor_flag(capsys):
    code, stdout, err = run(["fleet", EXAMPLE, "--json", "--slo-factor", "0.8", "--time-limit", "10"],
                            capsys)
    assert code == 0, err
    assert [v["factor"] for v in json.loads(stdout)["slo_sensitivity"]] == [0.8]
    code, _, err = run(["fleet", EXAMPLE, "--slo-factor", "-1"], capsys)
    assert code == 2 and "--slo-factor" in err and len(err.strip().splitlines()) == 1
