"""Parallel-plan search: request parsing, pruning, ranking, plan output, launch commands, bad input."""
import json
import shlex
from pathlib import Path

import pytest

from hardware.errors import InfeasibleError, InputError
from conftest import run_cli
from planner.parallel import (build_pools, enumerate_shapes, parse_request, phase_capacity, run_parallel,
                              search_plans)
from costmodels.model import load_model
from solvers.search import SearchLog

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "planner/schemas/parallel_plan.schema.json").read_text())


def _req(**over):
    base = {"model": "llama-3.1-70b", "gpu": "H100-SXM", "cluster": {"nodes": 1},
            "workload": {"input_len": 1024, "output_len": 256, "rate_rps": 5, "num_requests": 200},
            "slo": {"ttft_s": 1.0, "tpot_s": 0.05}, "search": {"disaggregation": "off"}}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return base


@pytest.fixture(scope="module")
def llama_doc():
    return run_parallel(_req(search={"disaggregation": "auto", "top_k": 6}))


def test_plan_document_has_stable_names_and_validates(llama_doc):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(llama_doc, SCHEMA)
    assert llama_doc["kind"] == "ParallelPlan" and llama_doc["apiVersion"] == "planner/v1"
    best = llama_doc["plans"][0]
    for key in ("tp", "pp", "dp", "ep", "disaggregated", "ttft_s", "tpot_s", "goodput_rps", "cost_per_hour", "launch"):
        assert key in best
    assert set(best["launch"]) == {"vllm", "sglang"}
    assert llama_doc["search"]["plans_evaluated"] > 10 and llama_doc["search"]["time_s"] > 0


def test_best_plan_meets_slo_and_rate_and_fits_cluster(llama_doc):
    for p in llama_doc["plans"]:
        assert p["ttft_s"] <= 1.0 and p["tpot_s"] <= 0.05
        assert p["gpus"] <= 8
    best = llama_doc["plans"][0]
    assert best["meets_rate"] and best["goodput_rps"] >= 5
    assert best["tp"] * best["pp"] * best["dp"] <= 8
    # a 70B bf16 model does not fit one H100: every plan shards it
    assert best["tp"] * best["pp"] >= 2
    scores = [p["goodput_per_dollar"] for p in llama_doc["plans"] if p["meets_rate"]]
    assert scores == sorted(scores, reverse=True)


def test_disaggregated_plans_carry_phases_transfer_and_engine_flags(llama_doc):
    dis = [p for p in llama_doc["plans"] if p["disaggregated"]]
    assert dis, "auto disaggregation should rank at least one P/D plan in the top 6"
    p = dis[0]
    assert p["prefill"]["count"] >= 1 and p["decode"]["count"] >= 1
    assert p["prefill"]["gpus"] * p["prefill"]["count"] + p["decode"]["gpus"] * p["decode"]["count"] == p["gpus"]
    assert p["kv_transfer"]["tier"] in ("intra-node", "inter-node") and p["kv_transfer"]["p50_s"] > 0
    assert "--disaggregation-mode prefill" in "\n".join(p["launch"]["sglang"]["prefill"])
    assert "--disaggregation-mode decode" in "\n".join(p["launch"]["sglang"]["decode"])
    assert "NixlConnector" in "\n".join(p["launch"]["vllm"]["prefill"])
    # vLLM's router names every prefill and decode instance on the port its command serves
    router = shlex.split(p["launch"]["vllm"]["router"])
    assert router[:2] == ["vllm-router", "--vllm-pd-disaggregation"]
    for role in ("prefill", "decode"):
        urls = [router[i + 1] for i, a in enumerate(router) if a == f"--{role}"]
        cmds = [c for c in p["launch"]["vllm"][role] if "vllm serve" in c]
        assert len(urls) == len(cmds) == p[role]["count"]
        for i, (url, cmd) in enumerate(zip(urls, cmds)):
            assert url.endswith(":" + cmd.split("--port ")[1].split()[0])
            if "CUDA_VISIBLE_DEVICES=" in cmd:  # one node: NIXL's handshake host is the URL's
                host = url.split("//")[1].split(":")[0]
                assert host == f"{role.upper()}_{i}" and f"VLLM_NIXL_SIDE_CHANNEL_HOST={host} " in cmd


def test_deterministic_apart_from_timings():
    a = run_parallel(_req())
    b = run_parallel(_req())
    a["search"].pop("time_s")
    b["search"].pop("time_s")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_shape_enumeration_prunes_heads_cluster_and_offers_uneven_pp():
    req = parse_request(_req(model="qwen2.5-7b"))  # 28 attention heads: TP 8 cannot divide them
    pool = build_pools(req)[0]
    log = SearchLog()
    shapes = enumerate_shapes(load_model("qwen2.5-7b"), pool, req.search, log)
    rules = log.counts_by_rule()
    assert rules.get("heads", 0) >= 1 and rules.get("cluster", 0) >= 1
    assert all(s.tp in (1, 2, 4) for s in shapes)
    pp2 = [s.pp_layers for s in shapes if s.pp == 2 and s.tp == 1]
    assert (14, 14) in pp2 and any(a > b for a, b in pp2)  # even and lighter-last-stage splits


def test_moe_search_offers_expert_and_attention_data_parallel_shapes():
    req = parse_request(_req(model="deepseek-v3", gpu="H200-SXM", dtype="fp8", cluster={"nodes": 2}))
    shapes = enumerate_shapes(load_model("deepseek-v3"), build_pools(req)[0], req.search, SearchLog())
    assert any(s.attn_dp == 16 and s.ep == 16 and s.tp == 16 for s in shapes)
    assert any(s.attn_dp == 2 and s.attn_tp == 8 for s in shapes)
    assert any(s.ep == s.tp > 1 and s.attn_dp == 1 for s in shapes)


def test_memory_bound_decode_prefers_replicas_and_long_prompts_prefer_tp():
    common = {"model": "llama-3.1-8b", "search": {"disaggregation": "off"}}
    decode_heavy = search_plans(parse_request(_req(**common, workload={"input_len": 128, "output_len": 1024,
                                                                       "rate_rps": None, "num_requests": 200},
                                                   slo={"ttft_s": 5.0, "tpot_s": 0.05})))
    long_prompt = search_plans(parse_request(_req(**common, workload={"input_len": 16384, "output_len": 128,
                                                                      "rate_rps": None, "num_requests": 200},
                                                  slo={"ttft_s": 0.5, "tpot_s": 0.05})))
    a, b = decode_heavy.plans[0], long_prompt.plans[0]
    assert a.n_prefill >= 4 and a.prefill.shape.tp == 1          # many small replicas
    assert b.prefill.shape.tp >= 4                               # wide TP for the prefill latency


def test_attention_dp_plan_launches_with_dp_attention_flags():
    doc = run_parallel(_req(model="deepseek-v3", gpu="H200-SXM", dtype="fp8", cluster={"nodes": 1},
                            workload={"input_len": 1024, "output_len": 256, "rate_rps": 10, "num_requests": 200},
                            slo={"ttft_s": 2.0, "tpot_s": 0.1}, search={"disaggregation": "off", "top_k": 8}))
    adp = [p for p in doc["plans"] if (p.get("attention_dp") or 1) > 1]
    assert adp
    sg = "\n".join(adp[0]["launch"]["sglang"]["commands"])
    assert "--enable-dp-attention" in sg and "--dp-size 8" in sg and "--ep-size 8" in sg
    vl = "\n".join(adp[0]["launch"]["vllm"]["commands"])
    assert "--data-parallel-size 8" in vl and "--enable-expert-parallel" in vl


def test_model_that_fits_nowhere_says_how_many_gpus():
    with pytest.raises(InfeasibleError) as exc:
        search_plans(parse_request(_req(model="llama-3.1-405b", cluster={"nodes": 1, "gpus_per_node": 4})))
    assert "16 x H100-SXM" in str(exc.value) and exc.value.binding == "memory"


def test_unreachable_slo_names_the_closest_plan_and_the_miss():
    with pytest.raises(InfeasibleError) as exc:
        search_plans(parse_request(_req(slo={"ttft_s": 1.0, "tpot_s": 0.005})))
    msg = str(exc.value)
    assert "closest" in msg and "TP8" in msg and "missing by" in msg and exc.value.binding == "slo"


@pytest.mark.parametrize("bad,field", [
    ({"workload": {"input_len": 10, "output_len": 10, "rate_rps": -1}}, "workload.rate_rps"),
    ({"engine": "tgi"}, "engine"),
    ({"colour": 1}, "colour"),
    ({"workload": {"rate_rps": 2}}, "workload"),
])
def test_malformed_request_names_the_field(bad, field):
    data = _req()
    if "workload" in bad and "input_len" not in bad["workload"]:
        data["workload"] = bad["workload"]
    else:
        data.update(bad)
    with pytest.raises(InputError) as exc:
        parse_request(data, file="req.yaml")
    assert exc.value.field == field and "req.yaml" in str(exc.value)


def test_cli_one_off_flags_json_and_bad_input_exit_2(capsys):
    # main() returns on success and raises SystemExit(2) on bad input: run_cli reads both
    code, out, _ = run_cli(["parallel", "--model", "llama-3.1-70b", "--gpu", "H100-SXM", "--nodes", "1",
                            "--gpus-per-node", "8", "--input-len", "1024", "--output-len", "256", "--rate", "5",
                            "--ttft-slo", "1.0", "--tpot-slo", "0.05", "--num-requests", "200",
                            "--disaggregation", "off", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["plans"][0]["goodput_rps"] >= 5 and "plans_evaluated" in doc["search"]
    code, _, err = run_cli(["parallel", "--model", "llama-3.1-70b", "--gpu", "H100-SXM", "--input-len", "100",
                            "--output-len", "10", "--ttft-slo", "-1"], capsys)
    assert code == 2
    assert "slo.ttft_s" in err and "Traceback" not in err


def test_example_request_runs_and_writes_plan(tmp_path, capsys):
    out = tmp_path / "plan.yaml"
    code, _, _ = run_cli(["parallel", str(REPO / "examples/parallel_request.yaml"), "-o", str(out), "--top", "2",
                          "--num-requests", "200", "--disaggregation", "off"], capsys)
    assert code == 0 and out.exists()
    import yaml
    assert yaml.safe_load(out.read_text())["kind"] == "ParallelPlan"


def test_fleet_capacity_api_per_gpu_shape_and_phase():
    kw = dict(model="llama-3.1-70b", gpu="H100-SXM", input_len=1024, output_len=256, ttft_slo_s=1.0,
              tpot_slo_s=0.05, num_requests=200)
    agg = phase_capacity(tp=4, phase="both", **kw)
    dec = phase_capacity(tp=4, phase="decode", **kw)
    none = phase_capacity(tp=1, phase="both", **kw)
    assert agg.rate_rps > 1.0 and dec.rate_rps > agg.rate_rps
    assert none.rate_rps == 0.0 and none.binding == "fit"
    assert agg.rate_per_dollar == pytest.approx(agg.rate_rps / (4 * agg.price_per_hour))


def test_trace_file_workload_is_read_and_rescaled(tmp_path):
    from planner.parallel import load_workload, WorkloadSpec
    p = tmp_path / "t.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:15:{i:02d}.000000,{100 + i},{10 + i}\n" for i in range(40)))
    tr = load_workload(WorkloadSpec(trace=str(p), rate_rps=8.0))
    assert len(tr) == 40 and tr.input_len[0] == 100 and tr.output_len[-1] == 49
    assert tr.mean_rate_rps == pytest.approx(8.0)
    doc = run_parallel(_req(model="llama-3.1-8b", workload={"trace": str(p), "rate_rps": 2.0, "num_requests": 40}))
    assert doc["workload"]["requests"] == 40 and doc["plans"][0]["meets_rate"]
    with pytest.raises(InputError):
        load_workload(WorkloadSpec(trace=str(tmp_path / "missing.csv")))


def test_capacity_curves_cover_shapes_and_phases_for_the_fleet_planner():
    from planner.parallel import capacity_curves
    rows = capacity_curves(model="llama-3.1-8b", gpu="H100-SXM", input_len=512, output_len=128, ttft_slo_s=1.0,
                           tpot_slo_s=0.05, num_requests=100, phases=("both", "decode"))
    shapes = {(r.tp, r.pp, r.phase) for r in rows}
    assert (1, 1, "both") in shapes and (1, 1, "decode") in shapes and (8, 1, "both") in shapes
    assert all(r.rate_rps > 0 for r in rows)


def test_several_gpu_types_compete_in_one_search():
    doc = run_parallel(_req(model="llama-3.1-8b", gpu=None, gpus=["H100-SXM", {"type": "A100-80GB-SXM"}],
                            search={"disaggregation": "off", "top_k": 10}))
    assert {p["gpu"] for p in doc["plans"]} == {"H100-SXM", "A100-80GB-SXM"}
    assert len(doc["cluster"]) == 2


def test_prefill_and_decode_may_use_different_gpu_types():
    res = search_plans(parse_request(_req(model="llama-3.1-8b", gpu=None, gpus=["H100-SXM", "A100-80GB-SXM"],
                                          workload={"input_len": 2048, "output_len": 256, "rate_rps": None,
                                                    "num_requests": 100},
                                          search={"disaggregation": "on", "top_k": 50})))
    cross = [p for p in res.plans if p.decode_pool and p.decode_pool != p.pool]
    assert cross
    p = cross[0]
    assert p.kv_transfer_tier == "inter-node"
    expect = (p.n_prefill * p.prefill.shape.gpus * p.price_per_hour
              + p.n_decode * p.decode.shape.gpus * p.decode_price_per_hour)
    assert p.cost_per_hour == pytest.approx(expect)
