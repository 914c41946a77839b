"""Fleet request checks on workloads: rate_scale on every workload form, period lengths across
models, trace formats' columns, Mélange configs' infeasibility in their own terms, GPU-name
suggestions."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from hardware.catalog import accelerator_names, get_accelerator
from hardware.errors import InfeasibleError, InputError
from planner import workload as wl
from planner.fleet.load import build_load
from planner.fleet.problem import build_problem
from planner.fleet.request import FleetRequest, ModelEntry
from conftest import one_error_line, run_cli

BURST = ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
         "0,ChatGPT,341,118,459,Conversation log\n"
         "4,ChatGPT,451,231,682,Conversation log\n"
         "9,ChatGPT,120,40,160,Conversation log\n")
AZURE = ("TIMESTAMP,ContextTokens,GeneratedTokens\n"
         "2023-11-16 18:17:03.9799600,4808,10\n"
         "2023-11-16 18:17:04.0319600,3180,8\n")
HIST = {"input_edges": [0, 512, 2048], "output_edges": [0, 128, 512],
        "shares": [[0.4, 0.3], [0.2, 0.1]]}


def _entry(workload: dict, **extra) -> ModelEntry:
    return ModelEntry.model_validate({"name": "chat", "model": "llama-3.1-8b",
                                      "workload": workload, **extra})


# ------------------------------------------------------------------------------- rate_scale

def test_rate_scale_applies_to_trace_with_rate_rps(tmp_path):
    trace = tmp_path / "burst.csv"
    trace.write_text(BURST)
    with_trace = build_load(_entry({"trace": str(trace), "rate_rps": [1, 2], "rate_scale": 10}), 0)
    with_hist = build_load(_entry({"histogram": HIST, "rate_rps": [1, 2], "rate_scale": 10}), 0)
    assert list(with_trace.rates_rps) == [10.0, 20.0]
    assert list(with_hist.rates_rps) == [10.0, 20.0]
    assert with_trace.summary["rates_rps"] == [10.0, 20.0]


def test_rate_scale_applies_to_trace_series_once(tmp_path):
    trace = tmp_path / "burst.csv"
    trace.write_text(BURST)
    base = build_load(_entry({"trace": str(trace), "period_s": 5}), 0).rates_rps
    scaled = build_load(_entry({"trace": str(trace), "period_s": 5, "rate_scale": 3}), 0).rates_rps
    assert len(base) == 2
    np.testing.assert_allclose(scaled, 3 * base)


def test_rate_scale_overflow_is_an_input_error():
    with pytest.raises(InputError) as err:
        build_load(_entry({"histogram": HIST, "rate_rps": 1e300, "rate_scale": 1e300}), 0)
    assert err.value.field == "models[0].workload.rate_scale"


# ---------------------------------------------------------------------------------- periods

def _profiled_request(tmp_path, workloads: list[dict]) -> FleetRequest:
    prof = tmp_path / "prof.json"
    prof.write_text(json.dumps({"gpu_info": {"L4": {"cost": 1.0, "tputs": [[5, 4], [3, 2]]}}}))
    return FleetRequest.model_validate({
        "models": [{"name": f"m{i}", "model": "llama-3.1-8b", "workload": w,
                    "profiles": [{"gpu": "L4", "file": str(prof), "format": "melange"}]}
                   for i, w in enumerate(workloads)],
        "gpus": [{"name": "L4", "price_per_hour": 1.0}]})


def test_different_period_lengths_are_refused(tmp_path):
    req = _profiled_request(tmp_path, [
        {"histogram": HIST, "rate_rps": [2, 4, 8, 4], "period_s": 900},
        {"histogram": HIST, "rate_rps": [1, 1, 6, 1], "period_s": 3600}])
    with pytest.raises(InputError) as err:
        build_problem(req, file="req.yaml")
    text = str(err.value)
    assert "m0 (models[0]) period_s 900" in text and "m1 (models[1]) period_s 3600" in text
    assert err.value.field == "models[1].workload.period_s"


def test_constant_model_joins_the_varying_models_period(tmp_path):
    req = _profiled_request(tmp_path, [
        {"histogram": HIST, "rate_rps": 12},  # default period_s 3600, one period
        {"histogram": HIST, "rate_rps": [1, 3], "period_s": 600}])
    fp = build_problem(req)
    assert fp.period_s == 600.0
    assert fp.rates.shape[1] == 2
    first = [r for r, (mi, _) in zip(fp.rates, fp.demand_index) if mi == 0]
    assert all(r[0] == r[1] > 0 for r in first)  # the constant rate in every period


def test_peak_model_joins_any_period_length(tmp_path):
    req = _profiled_request(tmp_path, [
        {"histogram": HIST, "rate_rps": [2, 9, 3], "period_s": 900, "periods": "peak"},
        {"histogram": HIST, "rate_rps": [1, 3], "period_s": 600}])
    fp = build_problem(req)
    assert (fp.period_s, fp.rates.shape[1]) == (600.0, 2)


def test_different_series_lengths_are_refused(tmp_path):
    req = _profiled_request(tmp_path, [
        {"histogram": HIST, "rate_rps": [1, 2, 3], "period_s": 600},
        {"histogram": HIST, "rate_rps": [1, 3], "period_s": 600}])
    with pytest.raises(InputError) as err:
        build_problem(req)
    assert "m0 (models[0]) 3 periods" in str(err.value)
    assert "m1 (models[1]) 2 periods" in str(err.value)


def test_period_mismatch_cli_one_line(tmp_path, capsys):
    req = {"models": [
        {"name": "a", "model": "llama-3.1-8b",
         "workload": {"histogram": HIST, "rate_rps": [2, 4], "period_s": 900}},
        {"name": "b", "model": "llama-3.1-8b",
         "workload": {"histogram": HIST, "rate_rps": [1, 6], "period_s": 3600}}],
        "gpus": [{"name": "L4", "quota": 8}]}
    path = tmp_path / "req.yaml"
    path.write_text(yaml.safe_dump(req))
    code, _, err = run_cli(["fleet", path, "--json"], capsys)
    line = one_error_line(err)
    assert code == 2
    assert "period_s 900" in line and "period_s 3600" in line and "workload.period_s" in line


# ------------------------------------------------------------------------------ CSV formats

def test_azure_format_refuses_burstgpt_header(tmp_path):
    p = tmp_path / "burst.csv"
    p.write_text(BURST)
    with pytest.raises(InputError) as err:
        wl.read_trace(p, fmt="azure")
    e = err.value
    assert e.file == str(p)
    assert "ContextTokens" in e.message and "Request tokens" in e.message  # missing, found
    assert "TIMESTAMP, ContextTokens, GeneratedTokens" in e.expected
    assert e.hint and "burstgpt" in e.hint


def test_burstgpt_format_refuses_azure_header(tmp_path):
    p = tmp_path / "azure.csv"
    p.write_text(AZURE)
    with pytest.raises(InputError) as err:
        wl.read_trace(p, fmt="burstgpt")
    assert "Request tokens" in err.value.expected
    assert err.value.hint and "azure" in err.value.hint


def test_named_format_other_header_has_no_format_hint(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("timestamp,input_tokens,output_tokens\n0,10,10\n")
    with pytest.raises(InputError) as err:
        wl.read_trace(p, fmt="azure")
    assert "input_tokens" in err.value.message and err.value.hint is None
    assert len(wl.read_trace(p)) == 1  # auto still reads the variants


def test_named_formats_read_their_own_headers(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(AZURE)
    b.write_text(BURST)
    assert list(wl.read_trace(a, fmt="azure").input_tokens) == [4808, 3180]
    assert list(wl.read_trace(b, fmt="burstgpt").input_tokens) == [341, 451, 120]


def test_format_mismatch_cli_one_line(tmp_path, capsys):
    (tmp_path / "burst.csv").write_text(BURST)
    path = tmp_path / "req.yaml"
    path.write_text(yaml.safe_dump({
        "models": [{"name": "chat", "model": "llama-3.1-8b",
                    "workload": {"trace": "burst.csv", "format": "azure"}}],
        "gpus": [{"name": "L4", "quota": 8}]}))
    code, _, err = run_cli(["fleet", path, "--json"], capsys)
    line = one_error_line(err)
    assert code == 2 and "burst.csv" in line and "burstgpt" in line


# ---------------------------------------------------------------------------------- Mélange

def _melange(tmp_path, tputs, shares, rate=3) -> str:
    p = tmp_path / "mel.json"
    p.write_text(json.dumps({"gpu_info": {"A10G": {"cost": 1.0, "tputs": tputs}},
                             "workload_distribution": shares, "total_request_rate": rate}))
    return str(p)


def test_melange_unservable_bucket_in_config_terms(tmp_path, capsys):
    path = _melange(tmp_path, [[1, 0], [3, 4]], [[0.5, 0.5], [0, 0]])
    code, _, err = run_cli(["fleet", "--melange", path, "--json"], capsys)
    line = one_error_line(err)
    assert code == 2
    assert "mel.json" in line and "gpu_info.A10G.tputs[0][1]" in line
    assert "row 0, column 1" in line
    assert "models[0]" not in line and "model model" not in line


def test_melange_oversized_bucket_names_total_request_rate(tmp_path):
    from planner.fleet.melange import melange_request
    path = _melange(tmp_path, [[1e-9, 1], [1, 1]], [[0.5, 0.5], [0, 0]], rate=1000)
    with pytest.raises(InfeasibleError) as err:
        melange_request(path)
    assert err.value.field == "total_request_rate"
    assert "row 0, column 0" in err.value.message and "models[" not in str(err.value)


# ------------------------------------------------------------------------------- GPU names

@pytest.mark.parametrize("typo", ["H100-SXMM", "a1", "A10x", "h100-sxm6", "a100-8", "mi300"])
def test_gpu_suggestions_are_catalog_names_once(typo):
    with pytest.raises(InputError) as err:
        get_accelerator(typo)
    hint = err.value.hint
    assert hint and hint.startswith("Did you mean ")
    names = hint[len("Did you mean "):].rstrip("?").split(", ")
    assert names and all(n in accelerator_names() for n in names), names
    assert len(names) == len(set(names))
