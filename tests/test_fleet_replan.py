"""Fleet plan extras: re-planning against the plan in place (``--previous``), break-even prices
(``--break-even``) and what an SLO costs (``--slo-factor``)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from hardware.errors import InputError
from planner import fleet as fl
from test_fleet import _strip_times  # drops the recorded timings
from test_fleet_cli import run as _run  # the CLI runner the fleet CLI tests use

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "planner" / "schemas" / "fleet_plan.schema.json").read_text())


def _request(rate=6.0, gpus=("A10G", "L4", "A100-80GB", "H100-SXM")):
    """One period (the re-planning loop's case: a live window), four GPU types."""
    return {
        "models": [{
            "name": "m8b", "model": "llama-3.1-8b",
            "workload": {"histogram": {"input_edges": [0, 512, 2048, 8192],
                                       "output_edges": [0, 128, 512],
                                       "shares": [[0.3, 0.2], [0.2, 0.15], [0.1, 0.05]]},
                         "rate_rps": rate},
            "slo": {"ttft_s": 1.0, "tpot_s": 0.05},
        }],
        "gpus": [{"name": g} for g in gpus],
        "solver": {"time_limit_s": 10},
    }


def _pools(plan):
    return {p["id"]: p["count"] for p in plan["pools"]}


def test_replan_on_unchanged_load_changes_nothing():
    before = fl.plan_fleet(_request())
    again = fl.plan_fleet(_request(), previous=before)
    jsonschema.validate(again, SCHEMA)
    rp = again["replan"]
    assert rp["gpus_changed"] == 0 and rp["solver"]["status"] == "optimal"
    assert _pools(again) == _pools(before)
    assert rp["transition"]["grow_first"] == [] and rp["transition"]["shrink_after"] == []


@pytest.mark.parametrize("rate0, rate1", [(20.0, 23.0), (25.0, 22.0), (6.0, 7.5)])
def test_replan_moves_no_more_than_the_cheapest_and_stays_within_the_allowance(rate0, rate1):
    before = fl.plan_fleet(_request(rate0))
    cheapest = fl.plan_fleet(_request(rate1))
    plan = fl.plan_fleet(_request(rate1), previous=before, keep_within=0.1)
    jsonschema.validate(plan, SCHEMA)
    rp = plan["replan"]
    assert rp["cheapest_cost_per_hour"] == pytest.approx(cheapest["cost_per_hour"])
    assert plan["cost_per_hour"] <= 1.1 * cheapest["cost_per_hour"] + 1e-9
    assert rp["gpus_changed"] <= rp["gpus_changed_by_cheapest"] + 1e-9
    # the cost facts stay honest: the bound is the cheapest search's, the gap says the extra
    assert plan["solver"]["bound"] <= plan["cost_per_hour"] + 1e-9
    if plan["cost_per_hour"] > cheapest["cost_per_hour"] + 1e-9:
        assert plan["solver"]["status"] == "feasible" and plan["solver"]["gap"] > 0
    # the transition turns the plan in place into this one, growing before shrinking
    counts = _pools(before)
    tr = rp["transition"]
    assert all(s["to"] > s["from"] for s in tr["grow_first"])
    assert all(s["to"] < s["from"] for s in tr["shrink_after"])
    for step in tr["grow_first"] + tr["shrink_after"]:
        assert counts.get(step["pool"], 0) == step["from"]
        counts[step["pool"]] = step["to"]
    assert {k: v for k, v in counts.items() if v} == _pools(plan)
    moved = sum(abs(s["to"] - s["from"]) * int(s["pool"].split("/tp")[1].split("-")[0])
                for s in tr["grow_first"] + tr["shrink_after"])
    assert moved == pytest.approx(rp["gpus_changed"])
    if (rate0, rate1) == (20.0, 23.0):
        # on this load step the allowance buys stability: 2 x H100 stay, one replica joins
        # (the cheapest plan would add three GPUs across two new pools)
        assert rp["gpus_changed"] < rp["gpus_changed_by_cheapest"]


def test_replan_retires_pools_whose_gpu_is_gone():
    before = fl.plan_fleet(_request(gpus=("L4", "H100-SXM")))
    plan = fl.plan_fleet(_request(gpus=("A10G", "A100-80GB")), previous=before)
    retired = {r["pool"] for r in plan["replan"]["retired_pools"]}
    assert retired == set(_pools(before))
    shrink = {s["pool"]: s["to"] for s in plan["replan"]["transition"]["shrink_after"]}
    assert all(shrink[p] == 0 for p in retired)
    assert plan["replan"]["gpus_changed"] >= sum(p["gpus"] for p in before["pools"])


def test_replan_is_deterministic():
    before = fl.plan_fleet(_request(20.0))
    a = fl.plan_fleet(_request(23.0), previous=before)
    b = fl.plan_fleet(_request(23.0), previous=copy.deepcopy(before))
    assert _strip_times(a) == _strip_times(b)


def test_bad_previous_plans_are_one_clear_error():
    before = fl.plan_fleet(_request())
    broken = copy.deepcopy(before)
    broken["pools"][0].pop("count")
    with pytest.raises(InputError, match="pool 0"):
        fl.plan_fleet(_request(), previous=broken)
    with pytest.raises(InputError, match="no pools"):
        fl.plan_fleet(_request(), previous={"kind": "FleetPlan"})
    with pytest.raises(InputError, match="keep-within"):
        fl.plan_fleet(_request(), previous=before, keep_within=1.5)


def test_cli_previous_and_keep_within(tmp_path, capsys):
    req0, req1 = tmp_path / "now.yaml", tmp_path / "next.yaml"
    req0.write_text(yaml.safe_dump(_request()))
    req1.write_text(yaml.safe_dump(_request(7.5)))
    plan0, plan1 = tmp_path / "plan0.yaml", tmp_path / "plan1.yaml"
    assert _run(["fleet", req0, "-o", plan0], capsys)[0] == 0
    code, out, err = _run(["fleet", req1, "-o", plan1, "--previous", plan0, "--keep-within",
                           "0.05"], capsys)
    assert code == 0, err
    assert "re-plan:" in out and yaml.safe_load(plan1.read_text())["replan"]["keep_within"] == 0.05
    # bad uses: one line on stderr, exit 2, nothing written over the plan in place
    for argv, needle in (([req1, "--keep-within", "0.05"], "--previous"),
                         ([req1, "--previous", plan0, "--keep-within", "2"], "keep-within"),
                         ([req1, "--previous", req0], "apiVersion"),
                         ([req1, "--previous", plan0, "-o", plan0], "refusing to overwrite")):
        code, _, err = _run(["fleet", *argv], capsys)
        assert code == 2 and needle in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


def test_report_shows_the_transition():
    from planner.report.fleet import render

    plan = fl.plan_fleet(_request(23.0), previous=fl.plan_fleet(_request(20.0)))
    html = render(plan, "plan.yaml")
    assert "Re-plan against the plan in place" in html
    steps = plan["replan"]["transition"]["grow_first"] + plan["replan"]["transition"]["shrink_after"]
    assert steps
    for step in steps:
        assert step["pool"] in html
    assert "switch routing" in html


def test_report_shows_break_even_prices():
    from planner.report.fleet import render

    req = _request(20.0)
    req["solver"]["break_even"] = True
    plan = fl.plan_fleet(req)
    html = render(plan, "plan.yaml")
    assert "Break-even prices per GPU type" in html
    assert all(b["gpu"] in html for b in plan["break_even_prices"])


def test_report_shows_what_slos_cost():
    from planner.report.fleet import render

    req = _request(20.0)
    req["solver"]["slo_factors"] = [0.8]
    html = render(fl.plan_fleet(req), "plan.yaml")
    assert "What a tighter or looser SLO costs" in html
