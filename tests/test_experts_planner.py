"""planner.experts and `planner experts`: readers, bad input, formats, plans, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hardware.errors import InputError
from planner import experts as ex
from planner.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "experts_request.yaml"
LOADS = REPO / "examples" / "expert_loads_small.npz"


def run_cli(args, capsys):
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def small_loads(layers=4, experts=16, seed=0):
    rng = np.random.default_rng(seed)
    base = np.round(1000 / np.arange(1, experts + 1))
    return np.stack([rng.permutation(base) for _ in range(layers)])


# ----------------------------------------------------------------------------- readers
def test_readers_agree(tmp_path):
    w = small_loads()
    np.save(tmp_path / "a.npy", w)
    np.savez(tmp_path / "b.npz", weight=w, other=np.zeros(3))
    np.savez(tmp_path / "c.npz", logical_count=np.stack([w / 2, w / 2]))   # SGLang-like dump
    (tmp_path / "d.json").write_text(json.dumps(w.tolist()))
    (tmp_path / "e.json").write_text(json.dumps({"logical_count": [w.tolist()]}))
    rows = ["layer_id,expert_id,count"] + [f"{l},{e},{w[l, e]}" for l in range(4) for e in range(16)]
    (tmp_path / "f.csv").write_text("\n".join(rows) + "\n")
    for name in ("a.npy", "b.npz", "c.npz", "d.json", "e.json", "f.csv"):
        got = ex.read_loads(tmp_path / name).weights
        assert np.allclose(got, w), name


def test_trace_reader_derives_pairs(tmp_path):
    lines = [{"request": 0, "token": 0, "layer": 0, "experts": [1, 2]},
             {"request": 0, "token": 0, "layer": 1, "experts": [3, 0]},
             {"request": 1, "token": 0, "layer": 0, "experts": [1, 3]}]
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    d = ex.read_traces(p)
    assert d.weights.shape == (2, 4)
    assert d.weights[0].tolist() == [0, 2, 1, 1]
    assert d.coactivation[0, 1, 2] == 1 and d.coactivation[0, 2, 1] == 1
    assert d.transitions.shape == (1, 4, 4)
    assert d.transitions[0].sum() == pytest.approx(1.0)       # one token-step, weight 1
    assert d.transitions[0, 1, 3] == pytest.approx(0.25)


def test_torch_dump_without_torch_explains_conversion(tmp_path):
    p = tmp_path / "dump.pt"
    p.write_bytes(b"not really")
    try:
        import torch  # noqa: F401
        pytest.skip("torch installed")
    except ImportError:
        pass
    with pytest.raises(InputError, match="convert it"):
        ex.read_loads(p)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args,match", [
    (["--gpus", 8, "--slots", 36], "do not divide evenly"),
    (["--gpus", 8, "--slots", 24], "fewer than the 32 experts"),
    (["--gpus", 8, "--slots", 40, "--model", "deepseek-v3"], "58 MoE layers x 256 experts"),
    (["--gpus", 8, "--memory-gib", 0.001], "expert size unknown"),
    (["--gpus", 8, "--slots", 40, "--groups", 3], "equal groups"),
    (["--gpus", 8, "--nodes", 3, "--slots", 48], "do not split evenly"),
])
def test_bad_inputs_give_one_clear_line(args, match, capsys):
    args = [a for a in args if a is not None]
    code, out, err = run_cli(["experts", "--loads", LOADS] + args, capsys)
    assert code == 2
    assert match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_negative_counts_rejected(tmp_path, capsys):
    w = small_loads()
    w[2, 5] = -1
    np.save(tmp_path / "neg.npy", w)
    code, _, err = run_cli(["experts", "--loads", tmp_path / "neg.npy", "--gpus", 4, "--slots", 16],
                           capsys)
    assert code == 2 and "negative count -1 at layer 2, expert 5" in err


def test_memory_budget_too_small_for_one_copy_each(tmp_path):
    np.save(tmp_path / "w.npy", small_loads())
    req = ex.ExpertRequest(loads=str(tmp_path / "w.npy"), gpus=4,
                           memory={"budget_gib_per_gpu": 1.0, "expert_bytes": 2 ** 30})
    with pytest.raises(InputError, match="one copy of each of the 16 experts on 4 GPUs needs 4 per GPU"):
        ex.build_problem(req)


def test_memory_budget_chooses_slots_and_reports_tradeoff(tmp_path):
    np.save(tmp_path / "w.npy", small_loads(experts=16))
    req = ex.ExpertRequest(loads=str(tmp_path / "w.npy"), gpus=4,
                           memory={"budget_gib_per_gpu": 4.0, "expert_bytes": 2 ** 28})
    pb = ex.build_problem(req)
    rep = pb.memory_report
    assert rep["slots_per_gpu_fit"] == 4        # 4 GiB / (4 layers x 0.25 GiB)
    rows = rep["tradeoff"]
    assert [r["slots_per_gpu"] for r in rows] == [4]
    req = ex.ExpertRequest(loads=str(tmp_path / "w.npy"), gpus=4,
                           memory={"budget_gib_per_gpu": 12.0, "expert_bytes": 2 ** 28})
    rows = ex.build_problem(req).memory_report["tradeoff"]
    bounds = [r["lower_bound_mean"] for r in rows]
    assert bounds == sorted(bounds, reverse=True) and bounds[-1] < bounds[0]


def test_memory_with_model_reports_kv_tokens_lost():
    from costmodels.model import load_model
    m = load_model("deepseek-v3")
    rng = np.random.default_rng(0)
    w = rng.integers(0, 100, size=(m.num_moe_layers, 256)).astype(float)
    pb = ex.problem_from_arrays(w, gpus=32, slots_per_gpu=8)
    req = ex.ExpertRequest(gpus=32, model="deepseek-v3", memory={"budget_gib_per_gpu": 30})
    rep, chosen = ex._memory(req, w, 32, 1, None, 32, m, None)
    per_slot = m.num_moe_layers * m.expert_parameters() * 1.0     # fp8 weights
    assert rep["slot_bytes_per_gpu"] == pytest.approx(per_slot)
    assert rep["kv_tokens_lost_per_extra_slot"] == int(per_slot // m.kv_bytes_per_token(2.0))
    assert 8 <= chosen <= rep["slots_per_gpu_fit"]
    del pb


# ----------------------------------------------------------------------------- plans / formats
def test_example_request_end_to_end(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    npz = tmp_path / "p.npz"
    code, out, err = run_cli(["experts", EXAMPLE, "-o", plan, "--out-npz", npz,
                              "--out-sglang", tmp_path / "sg.json", "--out-trtllm",
                              tmp_path / "trt.yaml", "--out-vllm", tmp_path / "v.json",
                              "--out-eplb-json", tmp_path / "e.json"], capsys)
    assert code == 0, err
    doc = yaml.safe_load(plan.read_text())
    assert doc["kind"] == "ExpertPlacement" and doc["apiVersion"] == "planner/v1"
    ex.ExpertPlacementPlan.model_validate(doc)
    import jsonschema
    jsonschema.validate(doc, json.loads(ex.SCHEMA_PATH.read_text()))
    z = np.load(npz)
    phy = np.asarray(doc["placement"]["phy2log"])
    assert np.array_equal(z["phy2log"], phy)
    assert z["phy2log"].shape == (8, 40)
    assert np.array_equal(z["logcnt"], np.stack([np.bincount(r, minlength=32) for r in phy]))
    for l in range(8):                                   # log2phy inverts phy2log
        for e in range(32):
            slots = z["log2phy"][l, e][z["log2phy"][l, e] >= 0]
            assert sorted(slots.tolist()) == np.nonzero(phy[l] == e)[0].tolist()
    m = doc["metrics"]
    assert m["duplicate_pairs"] == 0
    assert m["max_mean_gpu_load_mean"] >= m["lower_bound_mean"] - 1e-12
    # groups stay on their node: group g = experts 8g..8g+7; node = slot // 20
    for l in range(8):
        for g in range(4):
            assert len(set((np.nonzero(phy[l] // 8 == g)[0] // 20).tolist())) == 1
    sg = json.loads((tmp_path / "sg.json").read_text())
    assert np.array_equal(np.asarray(sg["physical_to_logical_map"]), phy)
    trt = yaml.safe_load((tmp_path / "trt.yaml").read_text())
    assert trt["num_slots"] == 40 and trt["layer_updates_per_iter"] == 0
    assert trt["initial_global_assignments"][3] == phy[3].tolist()
    v = json.loads((tmp_path / "v.json").read_text())
    assert np.asarray(v["logical_to_physical_map"]).shape == (8, 32, 9)
    assert json.loads(v["engine_flags"][-1]) == {"num_redundant_experts": 8}


def test_json_output_has_the_stable_names(capsys):
    code, out, _ = run_cli(["experts", "--loads", LOADS, "--gpus", 8, "--slots", 40, "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    for k in ("max_mean_gpu_load_mean", "max_mean_gpu_load_worst", "max_mean_node_load_mean",
              "duplicate_pairs", "lower_bound_mean", "experts_moved"):
        assert k in doc["metrics"]
    for k in ("status", "bound", "gap", "time_s"):
        assert k in doc["solver"]
    assert doc["solver"]["status"] in ("optimal", "heuristic", "feasible")


def test_plans_are_deterministic(tmp_path, capsys):
    outs = []
    for i in range(2):
        p = tmp_path / f"p{i}.json"
        assert run_cli(["experts", EXAMPLE, "-o", p], capsys)[0] == 0
        doc = json.loads(p.read_text())
        doc["solver"].pop("time_s")
        outs.append(json.dumps(doc, sort_keys=True))
    assert outs[0] == outs[1]


def test_schema_file_matches_the_model():
    assert json.loads(ex.SCHEMA_PATH.read_text()) == ex.expert_placement_schema()


def test_trtllm_and_sglang_use_model_layer_ids():
    from costmodels.model import load_model
    m = load_model("deepseek-v3")
    w = np.random.default_rng(0).integers(1, 50, size=(m.num_moe_layers, 256)).astype(float)
    pb = ex.problem_from_arrays(w, gpus=32, slots_per_gpu=9)
    pb.model = m
    req = ex.ExpertRequest(gpus=32, slots_per_gpu=9)
    pl = ex.solve(pb, req)
    trt = ex.trtllm_yaml(pl)
    assert sorted(trt["initial_global_assignments"]) == list(range(3, 61))
    sg = np.asarray(ex.sglang_json(pl)["physical_to_logical_map"])
    assert sg.shape == (61, 288)
    assert np.array_equal(sg[3:], pl.phy2log) and np.array_equal(sg[0], np.arange(288) % 256)


# ----------------------------------------------------------------------------- migration / traces
def test_previous_plan_and_move_budget(tmp_path, capsys):
    rng = np.random.default_rng(3)
    w = small_loads(layers=6, experts=32, seed=1)
    np.save(tmp_path / "a.npy", w)
    np.save(tmp_path / "b.npy", w * rng.lognormal(0, 0.4, size=w.shape))
    first = tmp_path / "first.yaml"
    assert run_cli(["experts", "--loads", tmp_path / "a.npy", "--gpus", 8, "--slots", 48, "-o", first],
                   capsys)[0] == 0
    code, out, err = run_cli(["experts", "--loads", tmp_path / "b.npy", "--gpus", 8, "--slots", 48,
                              "--previous", first, "--max-moves", 12, "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    mg = doc["migration"]
    assert doc["metrics"]["experts_moved"] == mg["experts_moved"] <= 12
    assert mg["max_mean_gpu_load_after"] < mg["max_mean_gpu_load_before"]
    code, _, err = run_cli(["experts", "--loads", tmp_path / "b.npy", "--gpus", 8, "--slots", 56,
                            "--previous", first], capsys)
    assert code == 2 and "previous phy2log is [6, 48]" in err


def test_traces_report_traffic_and_affinity_helps(tmp_path, capsys):
    from benchmarks.bench_experts import synthetic_traces
    loads, tr, co = synthetic_traces(layers=4, experts=32, paths=4, topk=2, tokens=400)
    pb = ex.problem_from_arrays(loads, gpus=4, slots_per_gpu=9, nodes=2, transitions=tr,
                                coactivation=co)
    pl = ex.solve(pb, ex.ExpertRequest(gpus=4, nodes=2, slots_per_gpu=9,
                                       affinity={"slack": 0.05}))
    a = pl.affinity
    assert a["cross_gpu_transitions"] < a["load_only"]["cross_gpu_transitions"]
    assert 0 <= a["cross_node_transitions"] <= a["cross_gpu_transitions"] <= 1
    assert a["max_mean_gpu_load_given_up"] <= 0.05 * pl.metrics["max_mean_gpu_load_mean"] + 1e-9
    assert pl.metrics["duplicate_pairs"] == 0


# ----------------------------------------------------------------------------- the anchor's data
def test_beats_eplb_on_its_hierarchical_zipf_case(shared_data):
    base = shared_data / "moe" / "eplb_zipf_baseline"
    z = np.load(base / "zipf1.2_58x256.npz")
    w = z["weight"].astype(float)
    pb = ex.problem_from_arrays(w, gpus=32, slots_per_gpu=9, nodes=8, groups=8)
    pl = ex.solve(pb, ex.ExpertRequest(gpus=32, nodes=8, slots_per_gpu=9, groups=8))
    theirs, _ = ex.evaluate(pb, z["hier_g8_n8_gpu32_R288__phy2log"].astype(np.int64),
                            pl.solution.bound)
    m = pl.metrics
    assert m["duplicate_pairs"] == 0 and theirs["duplicate_pairs"] > 0
    assert m["max_mean_gpu_load_mean"] < theirs["max_mean_gpu_load_mean"]
    assert m["max_mean_gpu_load_worst"] <= theirs["max_mean_gpu_load_worst"]
    assert m["max_mean_gpu_load_mean"] <= 1.01 * m["lower_bound_mean"]


def test_mixed_gpus_and_cpsat_refinement(tmp_path, capsys):
    np.save(tmp_path / "w.npy", small_loads(layers=2, experts=12))
    req = tmp_path / "r.yaml"
    req.write_text(yaml.safe_dump({"loads": "w.npy", "gpus": 4, "gpu_slots": [4, 4, 3, 3],
                                   "gpu_speeds": [2.0, 2.0, 1.0, 1.0], "cpsat_s": 0.5}))
    npz = tmp_path / "p.npz"
    code, out, err = run_cli(["experts", req, "--json", "--out-npz", npz], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["metrics"]["duplicate_pairs"] == 0
    assert doc["metrics"]["max_mean_gpu_load_mean"] >= doc["metrics"]["lower_bound_mean"] - 1e-9
    assert np.load(npz)["slot_to_gpu"].tolist() == [0] * 4 + [1] * 4 + [2] * 3 + [3] * 3
    code, _, err = run_cli(["experts", req, "--out-sglang", tmp_path / "s.json"], capsys)
    assert code == 2 and "same number of slots on every GPU" in err


def test_cli_memory_budget_below_one_copy_each(tmp_path, capsys):
    np.save(tmp_path / "w.npy", small_loads(layers=4, experts=16))
    req = tmp_path / "r.yaml"
    req.write_text(yaml.safe_dump({"loads": "w.npy", "gpus": 4,
                                   "memory": {"budget_gib_per_gpu": 1.0, "expert_bytes": 2 ** 28}}))
    code, _, err = run_cli(["experts", req], capsys)
    assert code == 2 and "one copy of each of the 16 experts on 4 GPUs needs 4 per GPU" in err
    assert "budget_gib_per_gpu" in err
