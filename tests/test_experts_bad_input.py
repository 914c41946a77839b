"""``planner experts`` on inputs found by auditing it: ids and sizes far beyond any model,
outputs over inputs or over each other, loads at extreme scales, unknown GPUs and models,
errors that must name the request file.  Each gives one clear error line and exit 2 (before
any array is sized or anything is written), or the right result."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import one_error_line, run_cli as run

REPO = Path(__file__).resolve().parents[1]
LOADS = REPO / "examples" / "expert_loads_small.npz"
TRACES = REPO / "examples" / "expert_traces_small.jsonl"


def _loads(tmp_path: Path, name: str = "w.npy", layers: int = 4, experts: int = 16) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / name
    np.save(path, rng.integers(1, 100, size=(layers, experts)).astype(float))
    return path


def _request(tmp_path: Path, **fields) -> Path:
    """A valid request (4 layers x 16 experts on 4 GPUs) with ``fields`` changed."""
    _loads(tmp_path)
    req = {"loads": "w.npy", "gpus": 4, "slots_per_gpu": 5, "time_limit_s": 5, **fields}
    path = tmp_path / "req.yaml"
    path.write_text(yaml.safe_dump(req))
    return path


def _fails(capsys, args, *needles: str) -> str:
    code, _, err = run(["experts", *args], capsys)
    line = one_error_line(err)
    assert code == 2, line
    for needle in needles:
        assert needle in line, line
    return line


def _trace(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ----------------------------------------------------------------------------- ids and shapes
@pytest.mark.parametrize("rows,field,needle", [
    ("0,0,5\n0,100000000000,3\n", "expert_id", "line 3: expert id 100000000000"),
    ("0,0,5\n0,1e11,3\n", "expert_id", "line 3: expert id 100000000000"),
    ("0,0,5\n0,1e9,3\n", "expert_id", "line 3: expert id 1000000000"),
    ("0,0,5\n5000,1,3\n", "layer_id", "line 3: layer id 5000"),
    ("0,-1,5\n", "expert_id", "line 2: expert id -1"),
    ("0,x,5\n", "expert_id", "line 2: expert_id 'x'"),
    ("0,1,nan\n", "count", "line 2: count 'nan'"),
    ("0,1,-4\n", "count", "line 2: count '-4'"),
    ("0,0,1\n4095,60000,1\n", "expert_id", "4,096 layers x 60,001 experts"),
])
def test_csv_ids_are_bounded_while_reading(tmp_path, capsys, rows, field, needle):
    path = tmp_path / "loads.csv"
    path.write_text("layer_id,expert_id,count\n" + rows)
    _fails(capsys, ["--loads", path, "--gpus", 4, "--slots", 8],
           str(path), f"field '{field}'", needle)


def test_csv_ids_beyond_the_named_model(tmp_path, capsys):
    path = tmp_path / "loads.csv"
    path.write_text("layer_id,expert_id,count\n0,0,5\n1,8,3\n")
    _fails(capsys, ["--loads", path, "--model", "mixtral-8x7b", "--gpus", 4, "--slots", 8],
           str(path), "field 'expert_id'", "line 3: expert id 8", "mixtral-8x7b has 8 experts")


@pytest.mark.parametrize("as_flag", ["--loads", "--traces"])
@pytest.mark.parametrize("record,field,needle", [
    ({"token": 1, "layer": 0, "experts": [1, 1000000000]}, "experts", "line 2: expert id 1000000000"),
    ({"token": 1, "layer": 0, "experts": [1, 1e9]}, "experts", "line 2: expert id 1000000000"),
    ({"token": 1, "layer": 10 ** 6, "experts": [1]}, "layer", "line 2: layer id 1000000"),
    ({"token": 1, "layer": 0, "experts": "12"}, "experts", "line 2: experts '12'"),
    ({"token": 1, "layer": 0, "experts": [1.5]}, "experts", "line 2"),
    ({"token": [1], "layer": 0, "experts": [1]}, "token", "line 2"),
    ({"token": 1, "layer": 0}, "experts", "line 2: no 'experts'"),
    ({"token": 1, "layer": 1, "experts": [4000]}, "experts", "pair counts"),
])
def test_trace_ids_are_bounded_while_reading(tmp_path, capsys, as_flag, record, field, needle):
    path = _trace(tmp_path / "t.jsonl", [{"token": 0, "layer": 0, "experts": [1, 2]}, record])
    args = ["--loads", path] if as_flag == "--loads" else ["--loads", LOADS, "--traces", path]
    _fails(capsys, [*args, "--gpus", 8, "--slots", 40], str(path), f"field '{field}'", needle)


@pytest.mark.parametrize("shape,needle", [
    ((5000, 2), "5,000 layers"),
    ((2, 70000), "70,000 experts per layer"),
    ((2048, 4096), "2,048 layers x 4,096 experts"),
])
@pytest.mark.parametrize("fmt", ["npy", "npz"])
def test_matrix_shapes_are_checked_before_reading(tmp_path, capsys, shape, needle, fmt):
    arr = np.lib.stride_tricks.as_strided(np.zeros(1, dtype=np.int8), shape=shape, strides=(0, 0))
    path = tmp_path / f"w.{fmt}"
    if fmt == "npy":
        np.save(path, arr)
    else:
        np.savez(path, weight=arr)
    _fails(capsys, ["--loads", path, "--gpus", 4, "--slots", 8], str(path), "field 'loads'", needle)


def test_json_matrix_shape_is_bounded(tmp_path, capsys):
    path = tmp_path / "w.json"
    path.write_text(json.dumps([[1] * 70000]))
    _fails(capsys, ["--loads", path, "--gpus", 4, "--slots", 8], str(path), "70,000 experts")


def test_loads_whose_total_overflows(tmp_path, capsys):
    path = tmp_path / "w.npy"
    np.save(path, np.full((2, 4), 1e308))
    _fails(capsys, ["--loads", path, "--gpus", 4, "--slots", 8], str(path), "largest float")


# ----------------------------------------------------------------------------- request bounds
@pytest.mark.parametrize("fields,field", [
    ({"gpus": 100000}, "gpus"),
    ({"gpus": 1000000000}, "gpus"),
    ({"gpus": 1e9}, "gpus"),
    ({"nodes": 10 ** 6}, "nodes"),
    ({"slots_per_gpu": 10 ** 9}, "slots_per_gpu"),
    ({"slots_per_gpu": None, "slots": 10 ** 7}, "slots"),
    ({"slots_per_gpu": None, "redundant": 10 ** 9}, "redundant"),
    ({"slots_per_gpu": None, "gpu_slots": [5, 5, 5, 10 ** 9]}, "gpu_slots[3]"),
    ({"gpu_speeds": [1, 1, 1, 1e12]}, "gpu_speeds[3]"),
    ({"gpu_speeds": [1, 1, 1, 0]}, "gpu_speeds[3]"),
    ({"time_limit_s": 1e12}, "time_limit_s"),
    ({"time_limit_s": float("nan")}, "time_limit_s"),
    ({"cpsat_s": float("inf")}, "cpsat_s"),
    ({"max_replicas": 10 ** 9}, "max_replicas"),
    ({"tolerance": float("inf")}, "tolerance"),
    ({"affinity": {"slack": float("nan")}}, "affinity.slack"),
    ({"memory": {"budget_gib_per_gpu": 1e300, "expert_bytes": 1}}, "memory.budget_gib_per_gpu"),
    # products of the counts: refused up front, before anything is solved
    ({"gpus": 4096, "slots_per_gpu": 1, "loads": "big.npy"}, "gpus"),
    ({"gpus": 8, "slots_per_gpu": 4096, "loads": "wide.npy"}, "slots_per_gpu"),
    ({"gpus": 4, "slots_per_gpu": None, "slots": 65540}, "slots"),
])
def test_counts_beyond_the_documented_maxima(tmp_path, capsys, fields, field):
    _loads(tmp_path, "big.npy", layers=64, experts=1024)      # 64 x 1024 on 4096 GPUs: too large
    _loads(tmp_path, "wide.npy", layers=64, experts=4096)     # 64 layers x 32768 slots: too large
    path = _request(tmp_path, **fields)
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
    _fails(capsys, [path], str(path), f"field '{field}'")


@pytest.mark.parametrize("flag,value", [("--gpus", 100000), ("--slots", 10 ** 7),
                                        ("--slots-per-gpu", 10 ** 9), ("--time-limit", 1e12),
                                        ("--max-replicas", 10 ** 9)])
def test_flag_values_beyond_the_maxima_name_the_flag(tmp_path, capsys, flag, value):
    path = _request(tmp_path)
    line = _fails(capsys, [path, flag, value], f"field '{flag}'")
    assert str(path) not in line          # the value came from the flag, not the file


# ----------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("args,flag", [
    (["-o", "{d}/d.json", "--out-vllm", "{d}/d.json"], "--out-vllm"),
    (["-o", "{d}/d.json", "--out-sglang", "{d}/./d.json"], "--out-sglang"),
    (["--out-eplb-json", "{d}/e.json", "--out-vllm", "{d}/sub/../e.json"], "--out-vllm"),
    (["-o", "{d}/p.yaml", "--out-trtllm", "{d}/p.yaml"], "--out-trtllm"),
    (["-o", "{d}/a.yaml", "--out-npz", "{d}/w.npy"], "--out-npz"),
    (["-o", "{d}/a.yaml", "--out-sglang", "{d}/req.yaml"], "--out-sglang"),
    (["-o", "{d}/a.yaml", "--out-npz", "{d}/prev.npz", "--previous", "{d}/prev.npz"], "--out-npz"),
])
def test_outputs_never_land_on_inputs_or_each_other(tmp_path, capsys, args, flag):
    (tmp_path / "sub").mkdir()
    path = _request(tmp_path)
    assert run(["experts", path, "--out-npz", tmp_path / "prev.npz"], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    args = [a.format(d=tmp_path) for a in args]
    _fails(capsys, [path, *args], f"field '{flag}'")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before                # nothing written, no input changed


def test_the_loads_named_by_the_request_are_protected(tmp_path, capsys):
    path = _request(tmp_path)
    shutil.copy(LOADS, tmp_path / "expert_loads_small.npz")
    path.write_text(yaml.safe_dump({"loads": "expert_loads_small.npz", "gpus": 8, "nodes": 2,
                                    "slots_per_gpu": 5, "groups": 4}))
    data = (tmp_path / "expert_loads_small.npz").read_bytes()
    _fails(capsys, [path, "-o", tmp_path / "a.yaml", "--out-npz",
                    tmp_path / "expert_loads_small.npz"], "field '--out-npz'", "input file")
    assert not (tmp_path / "a.yaml").exists()
    assert (tmp_path / "expert_loads_small.npz").read_bytes() == data


def test_engine_maps_of_mixed_gpus_are_refused_before_solving(tmp_path, capsys):
    path = _request(tmp_path, slots_per_gpu=None, gpu_slots=[5, 5, 4, 6])
    _fails(capsys, [path, "-o", tmp_path / "a.yaml", "--out-vllm", tmp_path / "v.json"],
           str(path), "field 'gpu_slots'", "--out-vllm needs the same number of slots")
    assert not (tmp_path / "a.yaml").exists()


# ----------------------------------------------------------------------------- model files
def _model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(REPO / "costmodels" / "configs" / "mixtral-8x7b.json", folder / "config.json")
    _loads(folder, layers=32, experts=8)
    (folder / "r.yaml").write_text(yaml.safe_dump({"loads": "w.npy", "model": "config.json",
                                                   "gpus": 4, "slots_per_gpu": 3}))
    return folder


def test_a_relative_model_path_is_read_beside_the_request(tmp_path, capsys, monkeypatch):
    folder = _model_dir(tmp_path)
    monkeypatch.chdir(tmp_path)           # config.json is not in the working folder
    code, out, err = run(["experts", folder / "r.yaml", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["spec"]["layers"] == 32


@pytest.mark.parametrize("flag", ["-o", "--out-sglang", "--out-vllm", "--out-eplb-json"])
def test_the_model_config_is_a_protected_input(tmp_path, capsys, flag):
    folder = _model_dir(tmp_path)
    config = folder / "config.json"
    data = config.read_bytes()
    named = "-o/--output" if flag == "-o" else flag
    _fails(capsys, [folder / "r.yaml", flag, config], f"field '{named}'", "input file")
    _fails(capsys, ["--loads", folder / "w.npy", "--model", folder, "--gpus", 4,
                    "--slots-per-gpu", 3, flag, config], f"field '{named}'", "input file")
    assert config.read_bytes() == data


def test_loads_beside_the_request_win_over_the_working_folder(tmp_path, capsys, monkeypatch):
    path = _request(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    np.save(other / "w.npy", np.ones((3, 16)))    # same name, other shape
    monkeypatch.chdir(other)
    code, out, err = run(["experts", path, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["spec"]["layers"] == 4


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize("fields,field,needle", [
    ({"gpu": "H999"}, "gpu", "unknown GPU 'H999'"),
    ({"gpu": "H1000"}, "gpu", "Did you mean"),
    ({"groups": 3}, "groups", "do not split into 3 equal groups"),
    ({"nodes": 3}, "gpus", "do not split evenly over 3 nodes"),
    ({"groups": 2, "nodes": 4}, "groups", "cannot be spread"),
    ({"slots_per_gpu": 3}, "slots_per_gpu", "fewer than the 16 experts"),
    ({"slots_per_gpu": None, "slots": 18}, "slots", "do not divide evenly"),
    ({"slots": 20}, "slots_per_gpu", "give only one of"),
    ({"max_replicas": 1}, "slots_per_gpu", "exceed what 16 experts"),
    ({"slots_per_gpu": None, "gpu_slots": [5, 5]}, "gpu_slots", "2 entries"),
    ({"gpu_speeds": [1, 2]}, "gpu_speeds", "2 entries"),
    ({"max_moves": 3}, "max_moves", "--max-moves needs --previous"),
    ({"slots_per_gpu": None, "memory": {"budget_gib_per_gpu": 4}}, "memory.expert_bytes",
     "expert size unknown"),
    ({"slots_per_gpu": None, "memory": {"budget_gib_per_gpu": 1e-6, "expert_bytes": 2 ** 20}},
     "memory.budget_gib_per_gpu", "needs 4 per GPU"),
    ({"model": "mixtral-8x7c"}, "model", "unknown model"),
    ({"model": "llama-3.1-8b"}, "model", "no routed experts"),
    ({"model": "mixtral-8x7b"}, "loads", "mixtral-8x7b has 8 experts"),
    ({"kind": "FleetRequest"}, "kind", "unexpected kind"),
    ({"loads": None}, "loads", "no loads given"),
])
def test_errors_about_a_request_field_name_the_request(tmp_path, capsys, fields, field, needle):
    path = _request(tmp_path, **fields)
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
    line = _fails(capsys, [path], f"field '{field}'", needle)
    if field != "loads" or "no loads" in needle:
        assert str(path) in line, line
    else:                                 # a shape mismatch names the load file
        assert str(tmp_path / "w.npy") in line, line


def test_an_unknown_gpu_flag_names_the_flag(tmp_path, capsys):
    _fails(capsys, [_request(tmp_path), "--gpu", "H999"], "field '--gpu'", "unknown GPU 'H999'")


def test_a_request_without_gpus_names_the_request(tmp_path, capsys):
    path = _request(tmp_path)
    data = yaml.safe_load(path.read_text())
    del data["gpus"]
    path.write_text(yaml.safe_dump(data))
    _fails(capsys, [path], str(path), "field 'gpus'")


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04broken"])
def test_a_broken_previous_npz(tmp_path, capsys, content):
    (tmp_path / "prev.npz").write_bytes(content)
    _fails(capsys, [_request(tmp_path), "--previous", tmp_path / "prev.npz"],
           str(tmp_path / "prev.npz"), "field 'previous'")


@pytest.mark.parametrize("table", [[["a"] * 20] * 4, [[0.5] * 20] * 4, [[0] * 20] * 3, "x"])
def test_a_previous_plan_with_a_bad_table(tmp_path, capsys, table):
    path = _request(tmp_path)
    first = tmp_path / "first.yaml"
    assert run(["experts", path, "-o", first], capsys)[0] == 0
    plan = yaml.safe_load(first.read_text())
    plan["placement"]["phy2log"] = table
    first.write_text(yaml.safe_dump(plan))
    _fails(capsys, [path, "--previous", first], str(first), "field 'previous'")


# ----------------------------------------------------------------------------- right results
def test_the_scale_of_the_loads_changes_neither_status_nor_gap(tmp_path, capsys):
    with np.load(LOADS) as z:
        w = z[list(z.keys())[0]].astype(float)
    docs = {}
    for name, factor in (("normal", 1.0), ("tiny", 1e-300), ("huge", 1e300), ("pow2", 2.0 ** -900)):
        np.save(tmp_path / f"{name}.npy", w * factor)
        code, out, err = run(["experts", "--loads", tmp_path / f"{name}.npy", "--gpus", 8,
                              "--nodes", 2, "--slots-per-gpu", 5, "--groups", 4, "--json"], capsys)
        assert code == 0, err
        docs[name] = json.loads(out)
    base = docs["normal"]["solver"]
    assert base["status"] == "heuristic" and base["gap"] > 1e-4
    for name, doc in docs.items():
        assert doc["solver"]["status"] == base["status"], name
        assert doc["solver"]["gap"] == pytest.approx(base["gap"], rel=1e-9), name
        assert doc["metrics"]["max_mean_gpu_load_mean"] == pytest.approx(
            docs["normal"]["metrics"]["max_mean_gpu_load_mean"], rel=1e-9), name
    # a power of two is exact: the same plan, objective and bound scaled (as printed)
    assert docs["pow2"]["solver"]["objective"] == pytest.approx(base["objective"] * 2.0 ** -900,
                                                                rel=1e-11)
    assert docs["pow2"]["solver"]["bound"] == pytest.approx(base["bound"] * 2.0 ** -900, rel=1e-11)
    assert docs["pow2"]["metrics"] == docs["normal"]["metrics"]


def test_optimal_only_when_proven_at_any_scale(tmp_path, capsys):
    w = np.array([[8.0, 1, 1, 1, 1, 1, 1, 1]])     # the heavy expert alone on a GPU: optimal
    for factor in (1.0, 1e-300):
        np.save(tmp_path / "w.npy", w * factor)
        code, out, err = run(["experts", "--loads", tmp_path / "w.npy", "--gpus", 2,
                              "--slots", 8, "--max-replicas", 1, "--json"], capsys)
        assert code == 0, err
        solver = json.loads(out)["solver"]
        assert solver["status"] == "optimal" and solver["gap"] == 0.0


def _greedy_counts(w: np.ndarray, total: int, cap: int) -> np.ndarray:
    """The classic one-copy-at-a-time water-filling greedy (reference for the fast version)."""
    c = np.ones_like(w, dtype=np.int64)
    for _ in range(total - w.size):
        share = np.where(c < cap, w / c, -np.inf) - 1e-300 * c
        c[int(np.argmax(share))] += 1
    return c


@pytest.mark.parametrize("seed", range(6))
def test_water_filling_in_rounds_matches_the_greedy(seed):
    from solvers.assignment import min_max_share, water_fill

    rng = np.random.default_rng(seed)
    for _ in range(40):
        E, cap = int(rng.integers(1, 30)), int(rng.integers(1, 8))
        w = (rng.integers(0, 4, E) * rng.choice([1, 2, 3, 6], E)).astype(float) if seed % 2 \
            else rng.zipf(1.5, E).astype(float)
        total = int(rng.integers(E, E * cap + 1))
        got = water_fill(w[None, :], total, cap)[0]
        assert got.sum() == total and got.max() <= cap
        # the same largest share as the greedy (its optimum), and the greedy's own counts
        # whenever the greedy starts from every item's first copy
        assert (w / got).max() == pytest.approx((w / _greedy_counts(w, total, cap)).max())
        assert min_max_share(w[None, :], total, cap)[0] == pytest.approx((w / got).max())


def test_the_help_states_the_limits_the_code_checks():
    from planner import experts as ex
    from planner.commands.experts import HELP

    for value in (ex.MAX_LAYERS, ex.MAX_EXPERTS, ex.MAX_GPUS, ex.MAX_SLOTS, ex.MAX_LOAD_ENTRIES,
                  ex.MAX_TABLE_ENTRIES, ex.MAX_CELLS, ex.MAX_PAIR_ENTRIES):
        assert f"{value:,}" in HELP, value
    assert ex.MAX_PACK_WORK == 2 ** 30 and "2^30" in HELP
