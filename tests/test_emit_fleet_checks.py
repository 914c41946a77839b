"""Fleet plans into engines: ``max_num_seqs`` at the planned mix, GPUs outside the catalog, and
routing shares that must sum to 1 (``planner/fleet/assemble.py``, ``planner/emit/``)."""
from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from conftest import one_error_line, run_cli
from planner import fleet as fl
from planner.emit.kubernetes import FALLBACK_NODE_GPUS, fleet_kubernetes_files
from planner.emit.plan_check import SHARE_SUM_TOLERANCE, check_fleet_plan
from planner.emit.vllm import fleet_vllm_files, slug
from planner.fleet.assemble import _max_num_seqs, _pools
from planner.fleet.problem import build_problem, solve_problem
from planner.fleet.request import FleetRequest
from test_emit_fleet import _schema_plan


def _seqs(args: list[str]) -> int | None:
    return int(args[args.index("--max-num-seqs") + 1]) if "--max-num-seqs" in args else None


# ------------------------------------------------------------------ max_num_seqs at the mix

#: 99% short chat requests, 1% long prompts (whose batch is small), one GPU type
MIXED = {"models": [{"name": "chat", "model": "llama-3.1-8b",
                     "serve_model": "meta-llama/Llama-3.1-8B-Instruct",
                     "workload": {"histogram": {"input_edges": [0, 512, 16384],
                                                "output_edges": [0, 256],
                                                "shares": [[0.99], [0.01]]},
                                  "rate_rps": 40},
                     "slo": {"ttft_s": 1.0, "tpot_s": 0.05, "percentile": 90}}],
         "gpus": [{"name": "H100-SXM", "quota": 16}], "solver": {"time_limit_s": 5}}


def test_max_num_seqs_is_the_load_weighted_batch_not_the_rarest_buckets():
    fp = build_problem(FleetRequest.model_validate(copy.deepcopy(MIXED)))
    problem, keep, sol = solve_problem(fp)
    pools = _pools(fp, problem, keep, sol)
    assert len(pools) == 1
    col = next(c for c in range(len(keep)) if sol.load[c].max() > 0)
    o = fp.options[keep[col]]
    batches = [o.details[b]["max_batch"] for _, b in fp.demand_index]
    loads = [float(sol.routing[d, col, 0] * problem.rates[d, 0] / problem.capacity[d, col])
             for d in range(len(batches))]
    want = math.ceil(sum(x * b for x, b in zip(loads, batches)) / sum(loads))
    seqs = pools[0]["engine"]["max_num_seqs"]
    assert seqs == want
    # the rare long-prompt bucket's small batch no longer caps the pool
    assert min(batches) < seqs <= max(batches) and seqs > 100


def test_max_num_seqs_takes_the_busiest_mix_over_periods_and_stays_in_range():
    # two buckets, two periods: (0.75, 0.25) replicas then (0.1, 0.9), an idle third period
    fp = SimpleNamespace(demand_index=[(0, 0), (0, 1)])
    o = SimpleNamespace(details=[{"max_batch": 256}, {"max_batch": 12}])
    problem = SimpleNamespace(capacity=np.array([[40.0], [2.0]]),
                              rates=np.array([[30.0, 4.0, 0.0], [0.5, 1.8, 0.0]]))
    sol = SimpleNamespace(routing=np.ones((2, 1, 3)))
    # period 0: (0.75 * 256 + 0.25 * 12) / 1 = 195; period 1: (0.1 * 256 + 0.9 * 12) = 36.4
    assert _max_num_seqs(fp, problem, sol, 0, o, [0, 1]) == 195
    # one bucket: its own batch; no load anywhere: the largest batch; no batches: no cap
    assert _max_num_seqs(fp, problem, sol, 0, o, [1]) == 12
    idle = SimpleNamespace(capacity=problem.capacity, rates=np.zeros((2, 3)))
    assert _max_num_seqs(fp, idle, sol, 0, o, [0, 1]) == 256
    assert _max_num_seqs(fp, problem, sol, 0, SimpleNamespace(details=None), [0, 1]) is None
    # a bucket below one sequence (batch 1) alone: never below 1
    tiny = SimpleNamespace(details=[{"max_batch": 1}, {"max_batch": 0}])
    assert _max_num_seqs(fp, problem, sol, 0, tiny, [0, 1]) == 1


def test_a_requested_max_num_seqs_still_caps_the_engine():
    req = copy.deepcopy(MIXED)
    plain = fl.plan_fleet(copy.deepcopy(req))["pools"][0]["engine"]["max_num_seqs"]
    req["models"][0]["max_num_seqs"] = 40
    capped = fl.plan_fleet(req)["pools"][0]["engine"]["max_num_seqs"]
    assert plain > 40 and 1 <= capped <= 40


def test_emitted_engines_carry_the_plans_max_num_seqs(tmp_path):
    """vLLM scripts and Kubernetes pods alike run with the plan's engine.max_num_seqs (the only
    emitters of a FleetPlan: SGLang launch lines are written for single-model plans only)."""
    plan = fl.plan_fleet(copy.deepcopy(MIXED))
    want = plan["pools"][0]["engine"]["max_num_seqs"]
    name = slug(plan["pools"][0]["id"])
    script = fleet_vllm_files(plan)[f"{name}.sh"].text
    assert f"--max-num-seqs {want} " in script
    pod = yaml.safe_load(fleet_kubernetes_files(plan)[f"{name}.yaml"].text)
    assert _seqs(pod["spec"]["template"]["spec"]["containers"][0]["args"]) == want


def test_disaggregated_decode_pools_get_the_cap_and_prefill_pools_none():
    from test_fleet_disagg import _request

    plan = fl.plan_fleet(_request("auto", 0.03))
    roles = [p for p in plan["pools"] if p.get("role")]
    assert roles
    for p in roles:
        seqs = (p.get("engine") or {}).get("max_num_seqs")
        if p["role"] == "prefill":
            assert seqs is None
        else:
            assert isinstance(seqs, int) and seqs >= 1


# ------------------------------------------------------------------ GPUs outside the catalog

def _a40_plan(gpus_per_replica: int = 1, gpu: str = "A40") -> dict:
    """A plan by hand whose second pool runs on a GPU the catalog does not know, its capacity
    measured (a profile): what ``planner fleet`` writes for a profiled GPU."""
    plan = _schema_plan()
    plan["pools"] = plan["pools"][:1] + [
        {"id": f"m/{gpu}/tp{gpus_per_replica}-pp1/spot", "group": f"m/{gpu}/tp{gpus_per_replica}-pp1",
         "model": "m", "serve_model": "llama-3.1-8b", "gpu": gpu,
         "shape": {"tp": gpus_per_replica, "pp": 1}, "gpus_per_replica": gpus_per_replica,
         "count": 2, "price_class": "spot", "cost_per_hour": 1.2,
         "counts_by_period": [2] * 24, "capacity_source": "profile:simulator-llama2-7b-a40.json",
         "engine": {"dtype": "bf16"}}]
    return plan


def _validate_strictly(files: dict) -> list[dict]:
    """Every object of the emitted manifests against the Kubernetes schemas, strictly (as
    tests/test_emit_fleet.py does)."""
    kv = pytest.importorskip("kubernetes_validate", reason="the test extra installs kubernetes-validate")
    docs = []
    for path, artifact in sorted(files.items()):
        if not path.endswith(".yaml") or path.startswith("keda/"):
            continue
        for doc in yaml.safe_load_all(artifact.text):
            docs.append(doc)
            for version in sorted({"1.25.0", kv.latest_version()}):
                try:
                    kv.validate(doc, version, strict=True)
                except kv.ValidationError as exc:
                    pytest.fail(f"{path} against Kubernetes {version}: {exc.message}")
    return docs


def test_a_profiled_gpu_outside_the_catalog_emits_for_vllm_and_kubernetes(tmp_path, capsys):
    plan = _a40_plan()
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    code, _, err = run_cli(["emit", path, "--format", "vllm", "-o", tmp_path / "v"], capsys)
    assert code == 0, err
    assert (tmp_path / "v" / f"{slug('m/A40/tp1-pp1/spot')}.sh").exists()
    code, _, err = run_cli(["emit", path, "--format", "kubernetes", "-o", tmp_path / "k"], capsys)
    assert code == 0, err
    assert "note: GPU A40 is not in the catalog" in err and "NVIDIA-A40" in err
    text = (tmp_path / "k" / f"{slug('m/A40/tp1-pp1/spot')}.yaml").read_text()
    assert text.startswith("# NOTE: GPU A40 is not in the catalog")
    files = fleet_kubernetes_files(plan)
    docs = {d["metadata"]["name"]: d for d in _validate_strictly(files)}
    dep = docs[slug("m/A40/tp1-pp1/spot")]
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A40"}
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert "each replica on one node" in dep["metadata"]["annotations"]["planner/gpu-fallback"]
    # catalog GPUs carry no fallback note
    assert "planner/gpu-fallback" not in docs[slug(plan["pools"][0]["id"])]["metadata"]["annotations"]


def test_an_unknown_gpu_name_becomes_a_valid_label_value():
    plan = _a40_plan(gpu="RTX 6000 Ada (48GB)")
    docs = _validate_strictly(fleet_kubernetes_files(plan))
    selectors = [d["spec"]["template"]["spec"]["nodeSelector"] for d in docs if d["kind"] == "Deployment"]
    assert {"nvidia.com/gpu.product": "NVIDIA-RTX-6000-ADA-48GB"} in selectors


def test_a_replica_of_an_unknown_gpu_larger_than_a_node_is_one_clear_error(tmp_path, capsys):
    plan = _a40_plan(gpus_per_replica=FALLBACK_NODE_GPUS * 2)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    code, _, err = run_cli(["emit", path, "--format", "kubernetes", "-o", tmp_path / "k"], capsys)
    line = one_error_line(err)
    assert code == 2 and f"{path}, field 'pools[1].gpus_per_replica'" in line
    assert "no node type of A40" in line and "PLANNER_CATALOG" in line
    assert not (tmp_path / "k").exists()
    code, _, err = run_cli(["emit", path, "--format", "vllm", "-o", tmp_path / "v"], capsys)
    assert code == 0, err  # vLLM needs only the shape


def test_an_unknown_gpu_the_cost_model_sized_is_still_refused(tmp_path, capsys):
    plan = _a40_plan()
    plan["pools"][1]["capacity_source"] = "cost-model:analytical"
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    code, _, err = run_cli(["emit", path, "--format", "vllm", "-o", tmp_path / "v"], capsys)
    line = one_error_line(err)
    assert code == 2 and "field 'pools[1].gpu'" in line and "unknown GPU 'A40'" in line


def test_a_checked_plan_with_gpu_aliases_passes_the_check_again():
    plan = _a40_plan()
    plan["pools"][0]["gpu"] = "h100"  # an alias: respelled H100-SXM, and so are the totals
    plan["gpus"] = {"h100": 4 * 6, "A40": 2}
    checked = check_fleet_plan(plan)
    assert checked["pools"][0]["gpu"] == "H100-SXM" and checked["gpus"] == {"H100-SXM": 24, "A40": 2}
    assert check_fleet_plan(checked) == checked
    assert fleet_vllm_files(checked) and fleet_kubernetes_files(checked)


def test_fleet_then_emit_with_a_profiled_gpu_outside_the_catalog(shared_data, tmp_path, capsys):
    req = {"models": [{"name": "code7b", "model": "llama-2-7b",
                       "serve_model": "meta-llama/Llama-2-7b-chat-hf",
                       "workload": {"histogram": {"input_edges": [0, 256, 1024],
                                                  "output_edges": [0, 64, 256],
                                                  "shares": [[0.5, 0.2], [0.2, 0.1]]},
                                    "rate_rps": 3},
                       "slo": {"e2e_s": 5.0, "percentile": 99},
                       "profiles": [{"gpu": "A40", "file": str(shared_data / "aibrix-gpu-optimizer"
                                                               / "simulator-llama2-7b-a40.json")}]}],
           "gpus": [{"name": "A40", "price_per_hour": 1.28, "quota": 16}]}
    (tmp_path / "req.yaml").write_text(yaml.safe_dump(req))
    code, _, err = run_cli(["fleet", tmp_path / "req.yaml", "-o", tmp_path / "plan.yaml"], capsys)
    assert code == 0, err
    for fmt in ("vllm", "kubernetes"):
        code, _, err = run_cli(["emit", tmp_path / "plan.yaml", "--format", fmt, "-o",
                                tmp_path / fmt], capsys)
        assert code == 0, err


# ------------------------------------------------------------------ routing shares

def _routed(**route) -> dict:
    """A hand plan over two periods: pools of two groups, one routing entry (``route``)."""
    pools = [{"id": f"chat/L4/{g}/on_demand", "group": f"chat/L4/{g}", "model": "chat",
              "serve_model": "llama-3.1-8b", "gpu": "L4", "shape": {"tp": 1, "pp": 1},
              "gpus_per_replica": 1, "price_class": "on_demand", "count": 1,
              "cost_per_hour": 0.8, "counts_by_period": [1, 1]} for g in ("a", "b")]
    entry = {"model": "chat", "bucket": {"label": "in(0,512]xout(0,256]",
                                         "input_tokens": [0.0, 512.0], "output_tokens": [0.0, 256.0]},
             "rate_rps": 2.0, "pools": {"chat/L4/a": 0.25, "chat/L4/b": 0.75}}
    entry.update(route)
    return {"apiVersion": "planner/v1", "kind": "FleetPlan", "period_s": 3600.0,
            "periods": [{"index": 0}, {"index": 1}], "pools": pools, "routing": [entry]}


def _emit(tmp_path: Path, capsys, plan: dict, fmt: str = "vllm") -> tuple[int, str, Path]:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    out = tmp_path / f"out-{fmt}"
    code, _, err = run_cli(["emit", path, "--format", fmt, "-o", out], capsys)
    if code == 0:
        import shutil
        shutil.rmtree(out)
    return code, err, path


@pytest.mark.parametrize("fmt", ["vllm", "kubernetes"])
@pytest.mark.parametrize("shares,needle", [
    ({"chat/L4/a": 0.3}, "sum to 0.3, not 1: part of its load goes to no pool"),
    ({"chat/L4/a": 0.5, "chat/L4/b": 0.7}, "more than all of it"),
    ({}, "goes to no pool"),
    ({"chat/L4/a": 0.0}, "goes to no pool"),
])
def test_a_buckets_shares_must_sum_to_one(tmp_path, capsys, fmt, shares, needle):
    code, err, path = _emit(tmp_path, capsys, _routed(pools=shares), fmt)
    line = one_error_line(err)
    assert code == 2 and f"{path}, field 'routing[0].pools'" in line and needle in line
    assert "sum to 1, within 0.0001" in line


def test_shares_rounded_by_the_plan_and_idle_buckets_pass(tmp_path, capsys):
    eps = SHARE_SUM_TOLERANCE / 2
    for route in ({"pools": {"chat/L4/a": 0.333333, "chat/L4/b": 0.666667 + eps}},
                  {"rate_rps": 0.0, "pools": {}},  # a bucket with no load may go nowhere
                  {"rate_rps": 0.0}):
        code, err, _ = _emit(tmp_path, capsys, _routed(**route))
        assert code == 0, (route, err)


def test_the_audits_edited_routing_is_refused(tmp_path, capsys):
    plan = _routed()
    plan["routing"].append(copy.deepcopy(plan["routing"][0]))
    plan["routing"][1]["pools"] = {"chat/L4/a": 0.3}
    code, err, path = _emit(tmp_path, capsys, plan)
    assert code == 2 and "field 'routing[1].pools'" in one_error_line(err)


def test_each_periods_routing_must_sum_to_one_or_be_empty(tmp_path, capsys):
    good = [{"chat/L4/a": 1.0}, {"chat/L4/a": 0.4, "chat/L4/b": 0.6}]
    for by_period in (good, [{}, {"chat/L4/b": 1.0}]):  # no load in period 0: nothing routed
        code, err, _ = _emit(tmp_path, capsys, _routed(pools_by_period=by_period))
        assert code == 0, err
    for by_period, field, needle in (
            ([{"chat/L4/a": 1.0}, {"chat/L4/a": 0.5}], "routing[0].pools_by_period[1]",
             "in period 1's routing shares sum to 0.5"),
            ([{"chat/L4/a": 1.0}], "routing[0].pools_by_period", "1 routing mapping(s) for 2 periods"),
            ([{"chat/L4/a": 1.0}, {"chat/L4/z": 1.0}], "routing[0].pools_by_period[1]",
             "pool group 'chat/L4/z', which no pool has"),
            ([{"chat/L4/a": 1.0}, {"chat/L4/a": -1.0}], "routing[0].pools_by_period[1].chat/L4/a",
             "greater than or equal to 0"),
            ("all", "routing[0].pools_by_period", "valid list")):
        code, err, path = _emit(tmp_path, capsys, _routed(pools_by_period=by_period))
        line = one_error_line(err)
        assert code == 2 and f"{path}, field '{field}'" in line and needle in line, line


def test_plans_the_planner_writes_pass_the_routing_check():
    for req in (MIXED,):
        check_fleet_plan(fl.plan_fleet(copy.deepcopy(req)))
