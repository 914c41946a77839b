"""`planner seqpar`: every bad input is one ``error:`` line naming the file and the field, exit 2
(no traceback, no hang, no silently wrong plan, no input overwritten)."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import one_error_line, run_cli
from planner import seqpar as sp
from planner.workload import MAX_TOKENS

REPO = Path(__file__).resolve().parents[1]
LENGTHS = REPO / "examples" / "seqpar_lengths.txt"
FLEX = ["--cost-preset", "flexsp"]
OWN = ["--model", "llama-3.1-8b"]
SMALL_PLAN = ["--batches", "1", "--batch-size", "16", "--time-limit", "0.2"]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(argv, capsys) -> str:
    code, out, err = run_cli(argv, capsys)
    line = one_error_line(err)
    assert code == 2, (code, err)
    return line


# ---------------------------------------------------------------------------------------------
# 1. values that used to end in a traceback (overflow, YAML strings, NaN / inf, bad flags)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("name, text, field", [
    ("big.json", "[1e300]", "lengths[0]"),
    ("big2.json", '{"lengths": [100, 100000000000000000000000]}', "lengths[1]"),
    ("big.txt", "100\n100000000000000000000000\n", "lengths"),
    ("nan.json", "[100, NaN]", "lengths[1]"),
    ("over.txt", f"{MAX_TOKENS + 1}\n", "lengths"),
])
def test_lengths_out_of_range_are_one_line(tmp_path, capsys, name, text, field):
    path = _write(tmp_path, name, text)
    line = _error(["seqpar", "step", "--lengths", path, "--gpus", "16", *FLEX], capsys)
    assert str(path) in line and f"field '{field}'" in line and f"{MAX_TOKENS:,}" in line


@pytest.mark.parametrize("memory, preset, words", [
    ("1e-300", FLEX, "leave no memory"),  # PyYAML reads it as a string: a number, far too small
    ("1e-300", OWN, "leave no room"),
    ("abc", OWN, "not a number"),
    ("abc", FLEX, "not a number"),
    (".inf", OWN, "got inf"),
    (".nan", FLEX, "got nan"),
    ("0", FLEX, "got 0"),
    ("-3", OWN, "got -3"),
    ("true", OWN, "not a memory size"),
    ("1e300", OWN, "not a memory size"),
])
def test_cluster_memory_is_validated_and_named(tmp_path, capsys, memory, preset, words):
    cluster = _write(tmp_path, "cluster.yaml", f"gpus: 16\nmemory_gb: {memory}\n")
    line = _error(["seqpar", "step", "--lengths", LENGTHS, "--cluster", cluster, *preset], capsys)
    assert str(cluster) in line and "field 'memory_gb'" in line and words in line


@pytest.mark.parametrize("argv, field", [
    (["--max-length", "-10"], "--max-length"),
    (["--max-length", "0"], "--max-length"),  # not "no cap"
    (["--max-length", str(MAX_TOKENS + 1)], "--max-length"),
    (["--seed", "-1"], "--seed"),
    (["--time-limit", "nan"], "--time-limit"),
    (["--time-limit", "0"], "--time-limit"),
    (["--time-limit", "1e9"], "--time-limit"),
    (["--memory-gb", "0"], "--memory-gb"),
    (["--memory-gb", "inf"], "--memory-gb"),
    (["--seq-limit-k", "0"], "--seq-limit-k"),
])
def test_bad_plan_flags_are_one_line(capsys, argv, field):
    line = _error(["seqpar", "plan", "--lengths", LENGTHS, "--gpus", "16", *FLEX, *SMALL_PLAN,
                   *argv], capsys)
    assert f"field '{field}'" in line


# ---------------------------------------------------------------------------------------------
# histograms: NaN / inf / huge values, inverted or broken bins (1, 3, 4)

BINNED = "bin_lo_exclusive,bin_hi_inclusive,num_seqs\n"


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("name, text, field", [
    ("inf.csv", "length,count\n100,inf\n200,1\n", "count"),
    ("nan.csv", "length,count\n100,nan\n200,1\n", "count"),  # used to drop the row silently
    ("neg.csv", "length,count\n100,-1\n200,1\n", "count"),
    ("big.csv", "length,count\n1e300,1\n200,1\n", "length"),
    ("frac.csv", "length,count\n100.5,1\n", "length"),
    ("sum.csv", "length,count\n100,1e308\n200,1e308\n", "count"),  # sum overflows to inf
    ("nan.json", '{"lengths": [100, 200], "counts": [NaN, 1]}', "counts[0]"),
    ("inf.yaml", "lengths: [100, 200]\ncounts: [1, .inf]\n", "counts[1]"),
    ("str.yaml", "lengths: [100, 200]\ncounts: [1, nan]\n", "counts[1]"),
    ("huge.yaml", "lengths: [100, 1.0e+300]\ncounts: [1, 1]\n", "lengths[1]"),
    ("binnan.csv", BINNED + "0,512,nan\n512,1024,1\n", "num_seqs"),
    ("bininf.csv", BINNED + "0,512,inf\n", "num_seqs"),
    ("inverted.csv", BINNED + "500,100,1\n", "bin_hi_inclusive"),  # used to be accepted
    ("empty_bin.csv", BINNED + "100,100,1\n", "bin_hi_inclusive"),
    ("lo_nan.csv", BINNED + "nan,100,1\n", "bin_lo_exclusive"),
    ("lo_neg.csv", BINNED + "-5,-1,1\n", "bin_lo_exclusive"),
    ("hi_huge.csv", BINNED + "0,1e300,1\n", "bin_hi_inclusive"),
    ("hi_nan.csv", BINNED + "0,nan,1\n", "bin_hi_inclusive"),
    ("lo_inf.csv", BINNED + "inf,inf,1\n", "bin_lo_exclusive"),
    ("missing.csv", BINNED + "0,512\n", "num_seqs"),
])
def test_bad_histograms_are_one_line(tmp_path, capsys, name, text, field):
    hist = _write(tmp_path, name, text)
    line = _error(["seqpar", "plan", "--histogram", hist, "--gpus", "16", *FLEX, *SMALL_PLAN],
                  capsys)
    assert str(hist) in line and f"field '{field}'" in line
    assert "Warning" not in line and "-9223372036854775808" not in line


def test_valid_histograms_still_read(tmp_path):
    from planner.commands.seqpar import read_histogram
    binned = _write(tmp_path, "b.csv", BINNED + "0,128,3\n128,inf,1\n256,512,0\n")
    vals, wts = read_histogram(binned)
    assert vals.min() >= 1 and vals.max() <= 256 and np.isclose(wts.sum(), 4.0)
    plain = _write(tmp_path, "p.csv", "length, count\n100.0,2\n300,0\n500,1\n")  # spaced header
    vals, wts = read_histogram(plain)
    assert vals.tolist() == [100, 500] and wts.tolist() == [2.0, 1.0]


# ---------------------------------------------------------------------------------------------
# 2. sizes that used to hang: refused up front at documented maxima


@pytest.mark.parametrize("argv, field", [
    (["step", "--gpus", "1000000000"], "--gpus"),
    (["step", "--gpus", "100000"], "--gpus"),
    (["step", "--gpus", str(sp.MAX_GPUS * 2), *OWN], "--gpus"),
    (["step", "--gpus", "16", "--gpus-per-node", "0"], "--gpus-per-node"),
    (["step", "--gpus", "16", "--micro-batches", "1000000000"], "--micro-batches"),
    (["plan", "--gpus", "16", "--batch-size", "1000000000"], "--batch-size"),
    (["plan", "--gpus", "16", "--batches", "1000000000"], "--batches"),
    (["plan", "--gpus", "16", "--batches", str(sp.MAX_BATCHES + 1)], "--batches"),
    # within every single bound, but 256 batches x ~23 solves each: over MAX_PLAN_SOLVE_S
    (["plan", "--gpus", "32", "--batches", "256", *OWN], "--batches"),
])
def test_sizes_past_the_maxima_are_refused_up_front(capsys, argv, field):
    preset = [] if "--model" in argv else FLEX
    line = _error(["seqpar", argv[0], "--lengths", LENGTHS, *argv[1:], *preset], capsys)
    assert f"field '{field}'" in line


@pytest.mark.parametrize("text, field", [
    ("gpus: 1000000000\n", "gpus"),
    ("num_gpus: 4096\n", "num_gpus"),
    ("gpus: 16\ngpus_per_node: 100000\n", "gpus_per_node"),
    ("gpus: 16.0\n", "gpus"),
    ("gpus: true\n", "gpus"),
    ("gpus: 16\nnum_gpus: 16\n", "num_gpus"),
    ("gpus: 16\nspeed: 3\n", "speed"),
    ("gpus_per_node: 8\n", "gpus"),
    ("gpus: 12\n", "gpus"),  # FlexSP needs a power of two: the file's field, not --gpus
    ("gpus: 16\ngpu: 7\n", "gpu"),
])
def test_cluster_file_fields_are_named(tmp_path, capsys, text, field):
    cluster = _write(tmp_path, "cluster.yaml", text)
    line = _error(["seqpar", "step", "--lengths", LENGTHS, "--cluster", cluster, *FLEX], capsys)
    assert str(cluster) in line and f"field '{field}'" in line


def test_too_many_sequences_for_one_step(tmp_path, capsys):
    path = _write(tmp_path, "many.txt", "100\n" * (sp.MAX_BATCH_SEQUENCES + 1))
    line = _error(["seqpar", "step", "--lengths", path, "--gpus", "16", *FLEX], capsys)
    assert str(path) in line and f"{sp.MAX_BATCH_SEQUENCES:,}" in line


# ---------------------------------------------------------------------------------------------
# 5. errors about a cluster file's values name that file


@pytest.mark.parametrize("text, preset, field", [
    ("gpus: 16\nmemory_gb: 2\n", FLEX, "memory_gb"),  # FlexSP 7b states need ~6.5 GB
    ("gpus: 16\nmemory_gb: 5\n", OWN, "memory_gb"),
    ("gpus: 16\ngpu: h999\n", OWN, "gpu"),
    ("gpus: 16\naccelerator: h999\n", OWN, "accelerator"),
])
def test_infeasible_cluster_values_name_the_file(tmp_path, capsys, text, preset, field):
    cluster = _write(tmp_path, "cluster.yaml", text)
    line = _error(["seqpar", "step", "--lengths", LENGTHS, "--cluster", cluster, *preset], capsys)
    assert str(cluster) in line and f"field '{field}'" in line


def test_flags_override_the_file_and_are_named_as_flags(tmp_path, capsys):
    cluster = _write(tmp_path, "cluster.yaml", "gpus: 16\nmemory_gb: 80\n")
    line = _error(["seqpar", "step", "--lengths", LENGTHS, "--cluster", cluster, "--memory-gb", "2",
                   *FLEX], capsys)
    assert "field '--memory-gb'" in line and str(cluster) not in line


# ---------------------------------------------------------------------------------------------
# 6. a model config read by path is an input: -o never overwrites it


@pytest.mark.parametrize("command", ["step", "plan"])
@pytest.mark.parametrize("as_folder", [False, True])
def test_model_config_is_protected_from_output(tmp_path, capsys, command, as_folder):
    from costmodels.model import aliases
    folder = tmp_path / "model"
    folder.mkdir()
    config = folder / "config.json"
    config.write_text(aliases()["llama-3.1-8b"].read_text())
    before = hashlib.sha256(config.read_bytes()).hexdigest()
    extra = ["--batches", "1", "--batch-size", "8"] if command == "plan" else []
    line = _error(["seqpar", command, "--lengths", LENGTHS, "--gpus", "8",
                   "--model", folder if as_folder else config, *extra, "-o", config], capsys)
    assert "refusing to overwrite" in line
    assert hashlib.sha256(config.read_bytes()).hexdigest() == before


# ---------------------------------------------------------------------------------------------
# library edge and the exact fast paths


@pytest.mark.parametrize("call", [
    lambda: sp.plan_step([100, 200], 2048, cost_preset="flexsp"),
    lambda: sp.plan_step([100, 1e300], 8, cost_preset="flexsp"),
    lambda: sp.plan_step([100, 200], 8, cost_preset="flexsp", time_limit_s=float("nan")),
    lambda: sp.plan_offline([100, 200], 8, cost_preset="flexsp", weights=[1, float("nan")]),
    lambda: sp.plan_offline([100, 200], 8, cost_preset="flexsp", max_length=0),
    lambda: sp.plan_offline([100, 200], 8, cost_preset="flexsp", seed=-1),
    lambda: sp.FlexSPPreset("7b", 16, float("nan"), 32),
    lambda: sp.OwnPreset("llama-3.1-8b", num_gpus=16, memory_gb=-1.0),
])
def test_library_refuses_the_same_values(call):
    with pytest.raises(sp.InputError):
        call()


def test_cluster_file_keeps_memory_as_written(tmp_path):
    spec = sp.load_cluster(_write(tmp_path, "c.yaml", "gpus: 16\nmemory_gb: 60\n"))
    assert spec.memory_gb == 60 and isinstance(spec.memory_gb, int)  # plans record it as given
    spec = sp.load_cluster(_write(tmp_path, "d.yaml", "gpus: 16\nmemory_gb: 1e2\n"))
    assert spec.memory_gb == 100.0


def test_device_filling_fast_path_matches_the_plain_recurrence():
    """Large clusters have hundreds of group kinds: the vectorised coin change must pick exactly
    the kinds the plain per-kind loop picks (same counts, same first-listed kind on ties)."""
    from solvers import partition as pt

    def plain(x, kinds, devices):
        inf = x + 1
        best, parent = [0] + [inf] * x, [-1] * (x + 1)
        for v in range(1, x + 1):
            for k in kinds:
                d = int(devices[k])
                if d <= v and best[v - d] + 1 < best[v]:
                    best[v], parent[v] = best[v - d] + 1, k
        if best[x] >= inf:
            return None
        out, v = [], x
        while v > 0:
            out.append(parent[v])
            v -= int(devices[parent[v]])
        return out

    rng = random.Random(3)
    for _ in range(12):
        devices = np.array([rng.randint(2, 900) for _ in range(rng.randint(300, 500))])
        kinds = list(range(len(devices)))
        rng.shuffle(kinds)
        x = rng.randint(600, 1200)
        assert pt._coin_change(x, kinds, devices) == plain(x, kinds, devices)


def test_help_states_the_maxima():
    """The flags' help quotes the documented maxima (kept in planner.seqpar)."""
    from planner.commands import seqpar as cmd
    assert f"{sp.MAX_GPUS:,}" in cmd._GPUS_HELP
    assert f"{sp.MAX_MEMORY_GB:,.0f}" in cmd._MEMORY_HELP
    assert f"{sp.MAX_TIME_LIMIT_S:,.0f}" in cmd._STEP_TIME_HELP
    assert f"{sp.MAX_BATCH_SEQUENCES:,}" in cmd._STEP_TIME_HELP
    import inspect
    src = inspect.getsource(cmd.plan)
    for text in (f"1 to {sp.MAX_BATCH_SEQUENCES:,}", f"1 to {sp.MAX_BATCHES}",
                 f"more than {sp.MAX_PLAN_SOLVE_S:,.0f} s", f"{sp.MAX_DISTRIBUTION_VALUES:,}",
                 f"{sp.STATIC_TIME_LIMIT_S:g} s"):
        assert text in src, text
