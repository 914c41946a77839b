"""A fleet plan replayed in the iteration-level serving simulator (``--simulate``): the verdict
follows the load, is deterministic, and the re-plan loop scales the capacities of pools that
miss until the simulated plan meets its SLOs."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from planner import fleet as fl
from planner.fleet.assemble import plan_from_problem
from planner.fleet.simulate import plan_with_simulation, simulate_plan
from tests.conftest import one_error_line, run_cli

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "planner" / "schemas"
                     / "fleet_plan.schema.json").read_text())
WINDOW_S = 60.0  # short windows keep the tests fast; the CLI replays 300 s


def _request(rate_rps: float = 4.0, **solver) -> dict:
    return {"models": [{"name": "chat", "model": "llama-3.1-8b",
                        "workload": {"histogram": {"input_edges": [0, 512, 2048],
                                                   "output_edges": [0, 128, 512],
                                                   "shares": [[0.4, 0.3], [0.2, 0.1]]},
                                     "rate_rps": rate_rps},
                        "slo": {"ttft_s": 1.0, "tpot_s": 0.05, "percentile": 90}}],
            "gpus": [{"name": "L4", "quota": 32}, {"name": "H100-SXM", "quota": 8}],
            "solver": {"time_limit_s": 5, **solver}}


def _problem(rate_rps: float = 4.0):
    return fl.build_problem(fl.FleetRequest.model_validate(_request(rate_rps)))


def test_simulation_is_deterministic_and_names_every_target():
    fp = _problem()
    plan = plan_from_problem(fp)
    a = simulate_plan(fp, plan, window_s=WINDOW_S, seed=3)
    b = simulate_plan(fp, plan, window_s=WINDOW_S, seed=3)
    assert a == b
    groups = {p["group"] for p in plan["pools"]}
    assert {g["group"] for g in a["groups"]} == groups
    for g in a["groups"]:
        assert g["requests"] > 0 and g["replicas"] >= 1
        assert [t["metric"] for t in g["targets"]] == ["ttft_s", "tpot_s"]
        assert all(t["percentile"] == 90 for t in g["targets"])
        meets = all(t["simulated_s"] is not None and t["simulated_s"] <= t["slo_s"] for t in g["targets"])
        # the worst period is the only one here: its targets decide the verdict
        assert g["meets_slo"] == meets


def test_a_plan_for_a_quarter_of_the_load_misses_at_the_full_load():
    light = _problem(4.0)
    plan = plan_from_problem(light)
    heavy = _problem(16.0)
    sim = simulate_plan(heavy, plan, window_s=WINDOW_S)
    assert not sim["meets_slo"]
    missed = [g for g in sim["groups"] if not g["meets_slo"]]
    assert missed and all(g["periods_missed"] == [0] for g in missed)
    # four times the load it was sized for queues requests: TTFT is what breaks
    ttft = [t for g in missed for t in g["targets"] if t["metric"] == "ttft_s"]
    assert any(t["simulated_s"] is None or t["simulated_s"] > 1.0 for t in ttft)
    assert any(g["planned_utilisation"] > 2.0 for g in missed)


def test_overstated_capacities_are_scaled_until_the_plan_meets_its_slos():
    fp = _problem(8.0)
    honest = plan_from_problem(fp)["cost_per_hour"]
    for o in fp.options:  # a model that promises three times what the engine delivers
        o.capacity[:] = o.capacity * 3.0
    plan = plan_with_simulation(fp, window_s=WINDOW_S)
    jsonschema.validate(plan, SCHEMA)
    sim = plan["simulation"]
    assert sim["rounds"] >= 2 and sim["capacity_factors"]
    assert all(0 < f < 1 for f in sim["capacity_factors"].values())
    assert sim["meets_slo"], sim
    # the scaled plan pays for the capacity the overstated one only promised
    assert plan["cost_per_hour"] > plan_from_problem(_overstated(3.0))["cost_per_hour"]
    assert plan["cost_per_hour"] >= 0.5 * honest


def _overstated(factor: float):
    fp = _problem(8.0)
    for o in fp.options:
        o.capacity[:] = o.capacity * factor
    return fp


def test_plan_with_simulation_is_reproducible():
    a = plan_with_simulation(_problem(), window_s=WINDOW_S)
    b = plan_with_simulation(_problem(), window_s=WINDOW_S)
    strip = lambda p: {k: v for k, v in p.items() if k != "solver"}  # noqa: E731 (times)
    assert strip(a) == strip(b)


def test_cli_simulate_writes_the_section_and_prints_the_verdict(tmp_path, capsys):
    req = tmp_path / "req.yaml"
    req.write_text(yaml.safe_dump(_request(2.0)))
    out = tmp_path / "plan.yaml"
    code, stdout, err = run_cli(["fleet", req, "--simulate", "-o", out], capsys)
    assert code == 0, err
    plan = yaml.safe_load(out.read_text())
    jsonschema.validate(plan, SCHEMA)
    assert plan["simulation"]["window_s"] == 300.0
    assert "simulated (1 period(s), 300 s each, seed 0" in stdout
    verdict = "every pool meets its SLOs" if plan["simulation"]["meets_slo"] else "some pools miss"
    assert verdict in stdout
    # the engines are deployed with the token budget they were simulated with
    assert all(p["engine"]["max_num_batched_tokens"] == 8192 for p in plan["pools"])
    code, _, err = run_cli(["emit", out, "--format", "vllm", "-o", tmp_path / "vllm"], capsys)
    assert code == 0, err
    script = "\n".join(f.read_text() for f in sorted((tmp_path / "vllm").iterdir()) if f.is_file())
    assert "--max-num-batched-tokens 8192" in script


def test_cli_simulate_refuses_a_replan_and_melange(tmp_path, capsys):
    req = tmp_path / "req.yaml"
    req.write_text(yaml.safe_dump(_request(2.0)))
    code, _, err = run_cli(["fleet", req, "--simulate", "--previous", req], capsys)
    assert code == 2 and "--previous" in one_error_line(err)
    code, _, err = run_cli(["fleet", "--melange", req, "--simulate"], capsys)
    assert code == 2 and "--melange" in one_error_line(err)


def test_pools_from_measured_profiles_are_listed_as_not_simulated():
    fp = _problem()
    plan = plan_from_problem(fp)
    for o in fp.options:
        o.source = "profile:measured.json"
    sim = simulate_plan(fp, plan, window_s=WINDOW_S)
    assert sim["groups"] == [] and sim["meets_slo"] is None
    assert {s["group"] for s in sim["not_simulated"]} == {p["group"] for p in plan["pools"]}
    assert all("measured profile" in s["why"] for s in sim["not_simulated"])
