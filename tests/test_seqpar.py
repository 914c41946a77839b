"""planner/seqpar.py and `planner seqpar`: FlexSP preset, plans, placement, CLI, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hardware.errors import InfeasibleError, InputError
from planner import seqpar as sp

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "seqpar_lengths.txt"
SETTING = "a_64gpu_gpt7b_30gb_wiki32k_gbs512"


def _run(argv, capsys):
    from planner.cli import main
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _strip_times(obj):
    if isinstance(obj, dict):
        return {k: _strip_times(v) for k, v in obj.items()
                if not (k == "time_s" or k.endswith("_time_s")) or k in ("step_time_s",)}
    if isinstance(obj, list):
        return [_strip_times(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# FlexSP preset: constants and worked checks of COSTMODEL.md


def test_flexsp_memory_rule_matches_costmodel_examples():
    p = sp.FlexSPPreset("7b", 64, 30, 32)
    assert p.params_b == 6.5070953369140625
    assert p.states_mb == pytest.approx(1665.81640625)
    assert p.capacity_per_device == 6484
    assert sp.FlexSPPreset("7b", 64, 30, 16).params_b == 6.4460601806640625
    assert sp.FlexSPPreset("7b", 16, 30, 16).capacity_per_device == 9037
    assert sp.FlexSPPreset("13b", 64, 30, 32).params_b == 12.35311508178711
    assert sp.FlexSPPreset("13b", 64, 30, 32).capacity_per_device == 6529
    assert [k.size for k in p.kinds] == [2, 4, 8, 16, 32, 64]
    assert [k.size for k in sp.FlexSPPreset("7b", 64, 30, 32, allow_single=True).kinds][0] == 1


def test_flexsp_time_model_worked_checks():
    p = sp.FlexSPPreset("7b", 64, 30, 32)
    assert p.model.beta_ms + p.time_ms(np.array([4096]), 8)[0] == pytest.approx(744.908186, abs=1e-6)
    group = [2304, 2944, 3456, 5376, 17280]
    ev = sp.flexsp_step_time_ms(p, group, [[(8, [0, 1, 2, 3, 4]), (56, [])]])
    assert ev["group_times_ms"][0][0] == pytest.approx(1658.2553635400623, rel=1e-12)
    assert not ev["valid"]  # the second group is empty and too large for FlexSP's sizes
    with pytest.raises(InputError):
        sp.FlexSPPreset("70b", 64, 30, 32)
    with pytest.raises(InputError):
        sp.FlexSPPreset("7b", 48, 30, 32)


@pytest.fixture
def visible(shared_data):
    path = shared_data / "seqlen" / "flexsp_bench" / "visible.json"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return json.loads(path.read_text())["settings"][SETTING]


def test_evaluator_reproduces_every_stored_plan(visible):
    p = sp.FlexSPPreset("7b", 64, 30, 32)
    assert p.capacity_per_device == visible["cost_model"]["device_token_capacity"]
    for it in visible["iterations"]:
        for key in ("flexsp", "adaptive", "static", "flexsp_cpu_clock_variant"):
            plan = it[key]
            mbs = [[(g["sp"], g["seq_ids"]) for g in mb["groups"]] for mb in plan["microbatches"]]
            ev = sp.flexsp_step_time_ms(p, it["lengths"], mbs)
            assert ev["step_time_ms"] == pytest.approx(plan["step_time_ms"], rel=1e-12)
            if key.startswith("flexsp"):
                assert ev["valid"], ev["violations"]


def test_homogeneous_baseline_reproduces_flexsp_adaptive(visible):
    p = sp.FlexSPPreset("7b", 64, 30, 32)
    for it in visible["iterations"]:
        base = sp.homogeneous_baselines(it["lengths"], p, exclude_sizes=[32])
        assert base["best"]["step_time_s"] * 1e3 == pytest.approx(it["adaptive"]["step_time_ms"], rel=1e-12)


def test_plans_beat_flexsp_within_three_percent_of_the_bound(visible):
    p = sp.FlexSPPreset("7b", 64, 30, 32)
    gaps = []
    for it in visible["iterations"]:
        plan = sp.plan_step(it["lengths"], 64, cost_preset=p, time_limit_s=0.8)
        mbs = [[(g.size, g.sequences) for g in mb.groups] for mb in plan.micro_batches]
        ev = sp.flexsp_step_time_ms(p, it["lengths"], mbs)
        assert ev["valid"], ev["violations"]  # FlexSP's plan rules hold
        assert ev["step_time_ms"] == pytest.approx(plan.step_time_s * 1e3, rel=1e-9)
        assert ev["step_time_ms"] <= it["flexsp"]["step_time_ms"]
        assert plan.lower_bound_s <= plan.step_time_s
        gaps.append(plan.solver.gap)
        assert plan.solver.time_s < 3.0  # < 1 s in the benchmark; slack for a busy CI box
    assert np.mean(gaps) < 0.03


def test_flexsp_batches_rule(visible):
    raw = [int(x) for it in visible["iterations"] for x in it["raw_lengths"]]
    # the raw lengths are the kept documents in file order: re-padding them gives the batches
    padded = sp.flexsp_batches(raw, 512, 32, [0, 1, 2])
    for b, it in zip(padded, visible["iterations"]):
        assert b.tolist() == it["lengths"]


# ---------------------------------------------------------------------------------------------
# plans with our own cost model, placement, group-type rules


def test_own_preset_plan_is_valid_and_placed_on_nodes():
    lengths = sp.read_lengths(EXAMPLE)
    plan = sp.plan_step(lengths, (32, 8), "llama-3.1-8b", time_limit_s=0.8)
    seen = sorted(i for mb in plan.micro_batches for g in mb.groups for i in g.sequences)
    assert seen == list(range(len(lengths)))
    for mb in plan.micro_batches:
        ranks = [r for g in mb.groups for r in g.ranks]
        assert sorted(ranks) == list(range(32))  # every GPU busy, none twice
        for g in mb.groups:
            assert len(g.ranks) == g.size
            if g.size <= 8 and g.type != "hybrid":
                assert len({r // 8 for r in g.ranks}) == 1 and g.link_tier in ("intra-node", "local")
        assert mb.time_s == pytest.approx(max(g.time_s for g in mb.groups))
    assert plan.step_time_s == pytest.approx(sum(mb.time_s for mb in plan.micro_batches))
    assert plan.lower_bound_s <= plan.step_time_s
    assert plan.cost_model["preset"] == "own"


def test_place_groups_keeps_small_groups_inside_nodes():
    ranks = sp.place_groups([3, 5, 6, 2, 16], 32, 8)
    assert sorted(r for g in ranks for r in g) == list(range(32))
    for g, size in zip(ranks, [3, 5, 6, 2, 16]):
        assert len(g) == size
        if size <= 8:
            assert len({r // 8 for r in g}) == 1
    assert {r // 8 for r in ranks[4]} == {0, 1} or len({r // 8 for r in ranks[4]}) == 2


def test_ulysses_head_rules():
    from costmodels.model import load_model
    m = load_model("llama-3.1-8b")  # 32 heads, 8 KV heads
    assert sp.ulysses_degree_ok(m, 8) and sp.ulysses_degree_ok(m, 16)
    assert not sp.ulysses_degree_ok(m, 16, replicate_kv_heads=False)
    assert not sp.ulysses_degree_ok(m, 3) and not sp.ulysses_degree_ok(m, 64)
    pre = sp.OwnPreset(m, num_gpus=16, gpus_per_node=8)
    labels = [k.label for k in pre.kinds]
    assert "ulysses16" in labels and "ring3" in labels and "hybrid8x2" in labels
    assert "ulysses3" not in labels


def test_offline_plan_compares_static_and_adaptive():
    lengths = sp.read_lengths(EXAMPLE)
    body = sp.plan_offline(lengths, (16, 8), "llama-3.1-8b", batch_size=64, num_batches=2,
                           time_limit_s=0.3, source=str(EXAMPLE))
    names = {s["name"] for s in body["strategies"]}
    assert {"static-ulysses8", "static-ring4", "adaptive", "adaptive-ring"} <= names
    adaptive = next(s for s in body["strategies"] if s["name"] == "adaptive")
    best_static = next(s for s in body["strategies"] if s["name"] == body["best_static"])
    assert adaptive["step_time_s"] <= best_static["step_time_s"] * 1.001
    assert body["adaptive_gain_vs_best_static"] >= -0.001
    rec = body["recommendation"]
    assert rec["choice"] and "--context-parallel-size" in " ".join(rec["static"]["megatron_lm"])


def test_launch_args_per_type():
    a = sp.launch_args(sp.GroupKind("ulysses", 8, 8, 1))
    assert a["megatron_lm"][:4] == ["--context-parallel-size", "8", "--cp-comm-type", "a2a"]
    assert a["deepspeed"][:2] == ["--ds-sequence-parallel-size", "8"]
    r = sp.launch_args(sp.GroupKind("ring", 4, 1, 4))
    assert "p2p" in r["megatron_lm"] and r["deepspeed"] is None
    h = sp.launch_args(sp.GroupKind("hybrid", 16, 8, 2), recompute="full", zero_stage=1)
    assert "--hierarchical-context-parallel-sizes" in h["megatron_lm"] and "full" in h["megatron_lm"]


# ---------------------------------------------------------------------------------------------
# bad input: one clear error each


def test_bad_lengths(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(InputError, match="holds no lengths"):
        sp.read_lengths(empty)
    bad = tmp_path / "bad.txt"
    bad.write_text("100\n2.5\n")
    with pytest.raises(InputError, match="line 2: '2.5' is not an integer"):
        sp.read_lengths(bad)
    with pytest.raises(InputError, match="not found"):
        sp.read_lengths(tmp_path / "missing.txt")
    with pytest.raises(InputError):
        sp.check_lengths([])
    with pytest.raises(InputError):
        sp.check_lengths([10, -3])


def test_sequence_longer_than_the_cluster_names_the_limit():
    p = sp.FlexSPPreset("7b", 64, 30, 32)
    with pytest.raises(InfeasibleError, match=r"at most 414976 tokens") as exc:
        sp.plan_step([1000, 500_000], 64, cost_preset=p)
    assert exc.value.binding == "memory"


def test_heads_rule_out_every_ulysses_degree():
    # qwen2.5-7b: 28 heads, 4 KV heads: neither 8 nor 16 divides 28
    with pytest.raises(InputError, match="no Ulysses degree"):
        sp.OwnPreset("qwen2.5-7b", num_gpus=16, gpus_per_node=8, group_types=("ulysses",),
                     sizes=[8, 16])


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("12\nabc\n")
    code, out, err = _run(["seqpar", "step", "--lengths", str(bad), "--gpus", "8",
                           "--cost-preset", "flexsp"], capsys)
    assert code == 2 and "not an integer" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = _run(["seqpar", "step", "--lengths", str(empty), "--gpus", "8",
                         "--cost-preset", "flexsp"], capsys)
    assert code == 2 and "no lengths" in err
    long_ = tmp_path / "long.txt"
    long_.write_text("100\n2000000\n")
    code, _, err = _run(["seqpar", "step", "--lengths", str(long_), "--gpus", "64",
                         "--cost-preset", "flexsp"], capsys)
    assert code == 2 and "at most 414976 tokens" in err
    code, _, err = _run(["seqpar", "step", "--lengths", str(EXAMPLE), "--gpus", "16",
                         "--model", "qwen2.5-7b", "--group-types", "ulysses", "--sizes", "8,16"], capsys)
    assert code == 2 and "no Ulysses degree" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# CLI, plan files, schema


def test_cli_step_json_stable_names_schema_and_determinism(tmp_path, capsys):
    import jsonschema
    args = ["seqpar", "step", "--lengths", str(EXAMPLE), "--gpus", "64", "--gpus-per-node", "8",
            "--cost-preset", "flexsp", "--model-size", "7b", "--memory-gb", "30",
            "--seq-limit-k", "32", "--json"]
    code, out, _ = _run(args, capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["kind"] == "StepPlan" and doc["apiVersion"] == "planner/v1"
    mb = doc["micro_batches"][0]
    assert {"time_s", "groups"} <= set(mb)
    assert {"size", "type", "ranks", "sequences", "time_s"} <= set(mb["groups"][0])
    assert {"status", "gap", "time_s"} <= set(doc["solver"]) and "step_time_s" in doc
    schema = json.loads(sp.SCHEMA_PATH.read_text())
    jsonschema.validate(doc, schema)
    code, out2, _ = _run(args, capsys)
    assert _strip_times(json.loads(out2)) == _strip_times(doc)
    plan_file = tmp_path / "step.yaml"
    code, _, err = _run(args[:-1] + ["-o", str(plan_file)], capsys)
    assert code == 0 and plan_file.exists() and "wrote" in err


def test_cli_plan_with_histogram_and_cluster_file(tmp_path, capsys):
    import jsonschema
    hist = tmp_path / "hist.csv"
    hist.write_text("bin_lo_exclusive,bin_hi_inclusive,num_seqs\n0,512,60\n512,4096,30\n4096,16384,10\n")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("gpus: 16\ngpus_per_node: 8\ngpu: h100\n")
    code, out, err = _run(["seqpar", "plan", "--histogram", str(hist), "--cluster", str(cluster),
                           "--model", "llama-3.1-8b", "--batch-size", "64", "--batches", "2",
                           "--time-limit", "0.3", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kind"] == "SequencePlan" and doc["cluster"]["num_gpus"] == 16
    jsonschema.validate(doc, json.loads(sp.SCHEMA_PATH.read_text()))
    code, _, err = _run(["seqpar", "plan", "--gpus", "8", "--model", "llama-3.1-8b"], capsys)
    assert code == 2 and "exactly one of --lengths or --histogram" in err


def test_schema_file_is_in_sync_with_the_models():
    assert json.loads(sp.SCHEMA_PATH.read_text()) == json.loads(json.dumps(sp.sequence_plan_schema()))


def test_tiny_batches_still_use_every_gpu():
    for lengths, n in (([5000], 64), ([5000, 3, 4], 64), ([100], 8)):
        plan = sp.plan_step(lengths, (n, 8), "llama-3.1-8b")
        for mb in plan.micro_batches:
            assert sum(g.size for g in mb.groups) == n and all(g.sequences for g in mb.groups)
    flex = sp.plan_step([100, 200], 8, cost_preset="flexsp")
    assert sum(g.size for g in flex.micro_batches[0].groups) == 8


def test_bad_cluster_and_micro_batch_options(capsys):
    code, _, err = _run(["seqpar", "step", "--lengths", str(EXAMPLE), "--gpus", "8",
                         "--gpus-per-node", "0", "--cost-preset", "flexsp"], capsys)
    assert code == 2 and "--gpus-per-node" in err
    with pytest.raises(InputError, match="positive integer"):
        sp.plan_step([100, 200], 8, cost_preset="flexsp", micro_batches=0)
    with pytest.raises(InfeasibleError, match="at least 4"):  # 8 x 3882 tokens per round
        sp.plan_step([5000] * 20, 8, cost_preset="flexsp", micro_batches=1)
