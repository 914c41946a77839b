"""End-to-end latency SLOs: checked on their own in the capacity model, not split into TTFT and
TPOT shares (a split by e2e / (out + 1) made long prompts with short answers infeasible)."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from costmodels.model import load_model
from costmodels.serving import max_rate_disaggregated, max_rate_under_slo, split_e2e
from hardware.catalog import get_accelerator
from hardware.errors import InfeasibleError
from planner import fleet as fl
from planner.fleet.options import slo_checks
from tests.conftest import one_error_line, run_cli

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "planner" / "schemas"
                     / "fleet_plan.schema.json").read_text())
M8B = load_model("llama-3.1-8b")
H100 = get_accelerator("H100-SXM")


def _rag_request(slo: dict, **model) -> dict:
    """The reviewer's case: 8-16k token prompts, <= 64 output tokens, 1 req/s."""
    return {"models": [{"name": "rag", "model": "llama-3.1-8b",
                        "workload": {"histogram": {"input_edges": [8192, 16384],
                                                   "output_edges": [0, 64],
                                                   "shares": [[1.0]]},
                                     "rate_rps": 1},
                        "slo": {**slo, "percentile": 90}, **model}],
            "gpus": [{"name": "H100-SXM", "quota": 16}, {"name": "H200-SXM", "quota": 16}],
            "solver": {"time_limit_s": 5}}


def _old_split(e2e: float, out: int) -> tuple[float, float]:
    """The (TTFT, TPOT) limits the former ``effective_slo`` made of an e2e target alone."""
    share = e2e / (out + 1.0)
    return share, share


def test_long_prompt_short_answer_is_feasible_and_binds_on_e2e():
    plan = fl.plan_fleet(_rag_request({"e2e_s": 3.0}))
    jsonschema.validate(plan, SCHEMA)
    assert plan["cost_per_hour"] > 0 and plan["pools"]
    head = plan["pools"][0]["slo_headroom"]
    assert head["binding"] == "e2e" and head["slo_s"] == 3.0
    assert 0 < head["predicted_s"] <= 3.0 + 1e-9


def test_e2e_that_cannot_be_met_names_e2e_s(tmp_path, capsys):
    # 16k tokens of prefill alone take far longer than 50 ms on any of these GPUs
    with pytest.raises(InfeasibleError) as err:
        fl.plan_fleet(_rag_request({"e2e_s": 0.05}))
    assert err.value.field == "models[0].slo.e2e_s" and err.value.binding == "e2e"
    assert "E2E SLO" in err.value.message and "TTFT" not in err.value.message
    path = tmp_path / "req.yaml"
    path.write_text(yaml.safe_dump(_rag_request({"e2e_s": 0.05})))
    code, _, err_text = run_cli(["fleet", path, "-o", tmp_path / "plan.yaml"], capsys)
    line = one_error_line(err_text)
    assert code == 2 and "models[0].slo.e2e_s" in line and "E2E" in line


@pytest.mark.parametrize("input_len,output_len,e2e", [
    (16384, 64, 3.0), (512, 128, 5.0), (2048, 512, 20.0), (128, 2048, 30.0), (8192, 1, 1.0),
    (4096, 256, 4.0)])
def test_e2e_alone_allows_at_least_the_old_split(input_len, output_len, e2e):
    kw = dict(tp=1, input_len=input_len, output_len=output_len)
    ttft, tpot = _old_split(e2e, output_len)
    old = max_rate_under_slo(M8B, H100, ttft_slo_s=ttft, tpot_slo_s=tpot, **kw)
    new = max_rate_under_slo(M8B, H100, e2e_slo_s=e2e, **kw)
    assert new.rate_rps >= old.rate_rps * (1 - 1e-9) and new.rate_rps > 0
    # the modelled end-to-end time, TTFT + (out - 1) TPOT as `estimate` defines it
    assert new.e2e_s == pytest.approx(new.ttft_s + (output_len - 1) * new.tpot_s)
    assert new.e2e_s <= e2e * (1 + 1e-9)
    if new.binding == "e2e":  # the rate stops near the target (a percentile latency steps
        assert new.e2e_s >= 0.9 * e2e  # with the Poisson count of prompts met on the way)
    else:
        assert new.binding in ("memory", "max_num_seqs", "throughput")


def test_e2e_binds_where_the_split_was_infeasible():
    kw = dict(tp=1, input_len=16384, output_len=64)
    old = max_rate_under_slo(M8B, H100, **dict(zip(("ttft_slo_s", "tpot_slo_s"),
                                                    _old_split(3.0, 64))), **kw)
    new = max_rate_under_slo(M8B, H100, e2e_slo_s=3.0, **kw)
    assert old.rate_rps == 0.0 and old.binding == "ttft"
    assert new.rate_rps > 1.0 and new.binding == "e2e"


def test_a_higher_percentile_tightens_the_e2e_check():
    kw = dict(tp=1, input_len=2048, output_len=512, e2e_slo_s=20.0)
    median = max_rate_under_slo(M8B, H100, percentile=50, **kw)
    tail = max_rate_under_slo(M8B, H100, percentile=99, **kw)
    assert 0 < tail.rate_rps < median.rate_rps
    assert tail.e2e_s <= 20.0 * (1 + 1e-9)


def test_one_output_token_caps_the_load_by_e2e():
    # one output token: its end-to-end time is its TTFT, the prompts' queue sets the load
    from costmodels.serving import estimate
    kw = dict(tp=1, input_len=8192, output_len=1)
    t_pf = estimate(M8B, H100, **kw).prefill_time_s
    est = max_rate_under_slo(M8B, H100, e2e_slo_s=2 * t_pf, percentile=90, **kw)
    assert est.binding == "e2e" and est.tpot_s == 0.0
    assert 0.3 / t_pf < est.rate_rps < 1.0 / t_pf  # the prefill busy a good part of the time
    assert est.e2e_s == pytest.approx(est.ttft_s) and est.e2e_s <= 2 * t_pf
    never = max_rate_under_slo(M8B, H100, e2e_slo_s=0.5 * t_pf, **kw)
    assert never.rate_rps == 0.0 and never.binding == "e2e" and never.e2e_s > 0.5 * t_pf


def test_explicit_ttft_is_still_enforced():
    kw = dict(tp=1, input_len=4096, output_len=256)
    both = max_rate_under_slo(M8B, H100, ttft_slo_s=0.15, e2e_slo_s=40.0, **kw)
    alone = max_rate_under_slo(M8B, H100, e2e_slo_s=40.0, **kw)
    assert both.binding == "ttft" and both.ttft_s <= 0.15 + 1e-9
    assert both.rate_rps < alone.rate_rps
    # in the fleet: a TTFT below the 16k prefill fails as TTFT, even with a generous e2e
    with pytest.raises(InfeasibleError) as err:
        fl.plan_fleet(_rag_request({"e2e_s": 30.0, "ttft_s": 0.02}))
    assert err.value.field == "models[0].slo.ttft_s" and err.value.binding == "ttft"


def test_slo_checks_carry_e2e_unsplit():
    req = fl.FleetRequest.model_validate(_rag_request({"e2e_s": 3.0, "tpot_s": 0.05}))
    fp = fl.build_problem(req)
    (check,), = slo_checks(req.models[0].slo, fp.loads[0].requests)
    assert (check.ttft_s, check.tpot_s, check.e2e_s) == (None, 0.05, 3.0)


def test_disaggregated_sides_share_the_e2e_target():
    kw = dict(tp=1, input_len=16384, output_len=64, e2e_slo_s=3.0)
    first = split_e2e(3.0, 64, 1.0, 0.01)
    assert first == pytest.approx(3.0 * 1.0 / (1.0 + 63 * 0.01))
    pre = max_rate_disaggregated(M8B, H100, phase="prefill", e2e_ttft_s=first, **kw)
    dec = max_rate_disaggregated(M8B, H100, phase="decode", e2e_ttft_s=first, **kw)
    assert pre.binding == dec.binding == "e2e" and pre.rate_rps > 0 and dec.rate_rps > 0
    # first token (queue, prefill, KV move, join wait) + 63 decode steps within the target
    assert pre.ttft_s + dec.tpot_s / 2 + 63 * dec.tpot_s <= 3.0 + 1e-9
    assert dec.tpot_s <= (3.0 - first) / 63 * (1 + 1e-9)
    # a side's own tighter target moves the split: TPOT 10 ms leaves the rest to the first token
    assert split_e2e(3.0, 64, 1.0, 0.01, tpot_s=0.01) == pytest.approx(3.0 - 63 * 0.01)
    assert split_e2e(3.0, 64, 1.0, 0.01, ttft_s=0.5) == 0.5


def test_disaggregated_plan_meets_e2e():
    req = _rag_request({"e2e_s": 3.0}, disaggregation="same_gpu")
    req["gpus"] = [{"name": "H100-SXM", "quota": 16}]
    fp = fl.build_problem(fl.FleetRequest.model_validate(req))
    bundles = [o for o in fp.options if o.roles]
    assert bundles and max(o.capacity.max() for o in bundles) > 0
    for o in bundles:
        for det in o.details:
            if det and o.capacity.max() > 0:
                assert det["e2e_slo_s"] == 3.0 and det["e2e_s"] <= 3.0 + 1e-9
