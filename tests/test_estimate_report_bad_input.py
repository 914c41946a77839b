"""Bad input to ``planner estimate`` / ``calibrate`` / ``catalog`` / ``report`` (an audit's
findings): each is one ``error:`` line on stderr naming the file and the field, exit status 2,
never a traceback, a null in the output or a silent fall-back; valid inputs keep working."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO, one_error_line, run_cli

EXAMPLES = REPO / "examples"
VIDUR = next((EXAMPLES / "calibration" / "compute").rglob("mlp.csv"))
ESTIMATE = ["estimate", "--model", "llama-3.1-8b", "--gpu", "H100", "--tp", "2", "--input-len", "512",
            "--output-len", "128"]


def _bad(argv, capsys, *needles: str) -> str:
    """Run ``argv``: exit 2 and one error line holding every needle."""
    code, out, err = run_cli(argv, capsys)
    line = one_error_line(err)
    assert code == 2, (code, out, err)
    for needle in needles:
        assert needle in line, (needle, line)
    return line


# ------------------------------------------------------------------------------ calibration
@pytest.fixture(scope="module")
def calib_text(tmp_path_factory) -> str:
    """A calibration file written by ``planner calibrate`` on the example tables."""
    from planner.calibrate import run_calibrate, write_calibration
    out = tmp_path_factory.mktemp("calib") / "calib.yaml"
    calib = run_calibrate(vidur=[EXAMPLES / "calibration" / "compute"],
                          nccl=[str(EXAMPLES / "calibration" / "h100_all_reduce_perf.txt")])
    write_calibration(calib, out, ["examples"])
    return out.read_text()


def _once(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize("edit, field, needle", [
    (lambda t: _once(t, "bandwidth_bytes_per_s: 450000000000.0", "bandwidth_bytes_per_s: .nan"),
     "accelerators[0].links[0].bandwidth_bytes_per_s", "finite"),
    (lambda t: t.replace("\n    latency_s: ", "\n    latency_s: .inf #", 1),
     "accelerators[0].links[0].latency_s", "finite"),
    (lambda t: t.replace("\n    overhead_s: ", "\n    overhead_s: .nan #", 1),
     "accelerators[0].ops[0].overhead_s", "finite"),
    (lambda t: t.replace("\n    overhead_s: ", "\n    overhead_s: 1.0e+300 #", 1),
     "accelerators[0].ops[0].overhead_s", "less than or equal to 3600"),
    (lambda t: t.replace("\n    roofline_p: ", "\n    roofline_q: ", 1),
     "accelerators[0].ops[0].roofline_q", "unknown field"),
])
def test_calibration_values_must_be_finite_and_known(calib_text, tmp_path, capsys, edit, field, needle):
    path = tmp_path / "calib.yaml"
    path.write_text(edit(calib_text))
    _bad([*ESTIMATE, "--calibration", path], capsys, str(path), f"field '{field}'", needle)


@pytest.mark.parametrize("tail, field, needle", [
    ("  ops:\n", "accelerators[0].ops", "truncated"),              # cut after 'ops:'
    ("  ops: null\n  kinds: []\n  links: []\n", "accelerators[0].ops", "truncated"),
    ("  ops: []\n", "accelerators[0].kinds", "truncated"),          # later sections lost
    ("  ops: []\n  kinds: []\n  links: []\n", "accelerators[0]", "calibrates nothing"),
])
def test_calibration_entry_that_calibrates_nothing_is_refused(calib_text, tmp_path, capsys, tail, field, needle):
    path = tmp_path / "calib.yaml"
    path.write_text(calib_text[:calib_text.index("  ops:")] + tail)
    _bad([*ESTIMATE, "--calibration", path], capsys, str(path), f"field '{field}'", needle)


@pytest.mark.parametrize("edit, reason", [
    (lambda t: t.replace("efficiencies:\n      - ", "efficiencies:\n      - 1.5 #", 1),
     "efficiencies must lie in (0, 1]"),
    (lambda t: t.replace("sizes_flops:\n      - ", "sizes_flops:\n      - 1.0e+30 #", 1),
     "sizes must be strictly increasing"),
])
def test_bad_efficiency_curve_says_why(calib_text, tmp_path, capsys, edit, reason):
    path = tmp_path / "calib.yaml"
    path.write_text(edit(calib_text))
    line = _bad([*ESTIMATE, "--calibration", path], capsys, str(path),
                "field 'accelerators[0].ops[0].compute_efficiency'", reason)
    assert "pydantic.dev" not in line and "further information" not in line


def test_valid_calibration_still_calibrates(calib_text, tmp_path, capsys):
    path = tmp_path / "calib.yaml"
    path.write_text(calib_text)
    code, out, err = run_cli([*ESTIMATE, "--calibration", path, "--json"], capsys)
    assert code == 0, err
    est = json.loads(out)
    assert est["fidelity"] == "calibrated" and est["ttft_s"] > 0 and est["tpot_s"] > 0


# ------------------------------------------------------------------------ estimate options
@pytest.mark.parametrize("input_len, output_len", [(200_000, 128), (1_000_000_000_000, 128), (131_000, 73)])
def test_prompt_beyond_the_context_is_refused(capsys, input_len, output_len):
    _bad(["estimate", "--model", "llama-3.1-8b", "--gpu", "H100", "--input-len", input_len,
          "--output-len", output_len], capsys, str(input_len), str(output_len), "131072", "input_len")


def test_prompt_filling_the_context_is_fine(capsys):
    code, out, err = run_cli(["estimate", "--model", "llama-3.1-8b", "--gpu", "H100", "--input-len", 131_000,
                              "--output-len", 72, "--json"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("gpu, node, names", [
    ("A100-80GB", "dgx-h100", ("A100-80GB-SXM", "H100-SXM", "dgx-h100")),
    ("L4", "hgx-h100", ("L4", "H100-SXM", "hgx-h100")),
])
def test_node_of_another_gpu_is_refused(capsys, gpu, node, names):
    _bad(["estimate", "--model", "llama-3.1-8b", "--gpu", gpu, "--node", node, "--input-len", 512,
          "--output-len", 128], capsys, "field 'node'", *names)


# ---------------------------------------------------------------------- user catalog entries
@pytest.fixture
def user_catalog(tmp_path, monkeypatch):
    """A $PLANNER_CATALOG folder (caches cleared before and after)."""
    from hardware import catalog
    folder = tmp_path / "catalog"
    (folder / "accelerators").mkdir(parents=True)
    (folder / "nodes").mkdir()
    monkeypatch.setenv("PLANNER_CATALOG", str(folder))
    catalog.clear_cache()
    yield folder
    monkeypatch.delenv("PLANNER_CATALOG")
    catalog.clear_cache()


def _builtin(sub: str, name: str) -> dict:
    from hardware.catalog import CATALOG_DIR
    return yaml.safe_load((CATALOG_DIR / sub / f"{name}.yaml").read_text())


def _new_gpu(**changes) -> dict:
    data = _builtin("accelerators", "h100-sxm")
    data.update(name="MY-GPU", aliases=["my-gpu-alias"])
    data.update(changes)
    return data


@pytest.mark.parametrize("sub, data, argv, field, needles", [
    ("accelerators", _new_gpu(hbm_bandwidth_bytes_per_s=float("inf")), ["catalog", "gpus", "--json"],
     "hbm_bandwidth_bytes_per_s", ("finite",)),
    ("accelerators", _new_gpu(tdp_w=float("nan")), ["catalog", "gpus"], "tdp_w", ("finite",)),
    ("accelerators", _new_gpu(aliases=["h100"]), [*ESTIMATE, "--json"], "aliases",
     ("'h100'", "H100-SXM", "name the entry 'H100-SXM'")),
    ("accelerators", _new_gpu(name="h100-sxm5", aliases=[]), ["catalog", "gpus"], "name",
     ("'h100-sxm5'", "H100-SXM")),
    ("nodes", {**_builtin("nodes", "hgx-h100"), "name": "my-node", "aliases": [], "accelerator": "NOPE"},
     ["catalog", "nodes"], "accelerator", ("unknown GPU 'NOPE'",)),
    ("nodes", {**_builtin("nodes", "hgx-h100"), "name": "my-node", "aliases": [], "accelerator": "H100-SXN"},
     ["catalog", "nodes", "--json"], "accelerator", ("Did you mean", "H100-SXM")),
    ("nodes", {**_builtin("nodes", "hgx-h100"), "name": "my-node", "aliases": ["dgx-h100"]},
     ["catalog", "nodes"], "aliases", ("'dgx-h100'", "hgx-h100")),
])
def test_bad_user_catalog_entries_are_refused(user_catalog, capsys, sub, data, argv, field, needles):
    path = user_catalog / sub / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    _bad(argv, capsys, str(path), f"field '{field}'", *needles)


def test_user_entry_replaces_the_builtin_of_its_name(user_catalog, capsys):
    data = _builtin("accelerators", "h100-sxm")
    data["price"] = dict(data["price"], usd_per_hour=1.23, source="my contract")
    (user_catalog / "accelerators" / "h100.yaml").write_text(yaml.safe_dump(data))
    node = {**_builtin("nodes", "hgx-h100"), "name": "my-box", "aliases": [], "accelerator": "h100"}
    (user_catalog / "nodes" / "box.yaml").write_text(yaml.safe_dump(node))
    code, out, err = run_cli(["catalog", "gpus", "--json"], capsys)
    assert code == 0, err
    h100 = [g for g in json.loads(out) if g["name"] == "H100-SXM"]
    assert len(h100) == 1 and h100[0]["price"]["usd_per_hour"] == 1.23
    code, out, err = run_cli(["catalog", "nodes", "--json"], capsys)
    assert code == 0, err
    assert {n["name"]: n["accelerator"] for n in json.loads(out)}["my-box"] == "H100-SXM"  # as the catalog spells it


# ----------------------------------------------------------------------------- op profiles
def _profile(tmp_path: Path, value: str, row: int = 1, column: str = "time_stats.mlp_up_proj.median") -> Path:
    """A copy of the example Vidur profile with one cell changed (data row ``row``)."""
    folder = tmp_path / "compute" / "h100" / "example" / "m"
    folder.mkdir(parents=True)
    with VIDUR.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[row - 1][column] = value
    with (folder / "mlp.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "mlp.csv"


@pytest.mark.parametrize("command", ["estimate", "calibrate"])
@pytest.mark.parametrize("value", ["0", "0.0", "1e300", "3600001"])
def test_op_times_out_of_range_are_refused(tmp_path, capsys, command, value):
    path = _profile(tmp_path, value, row=2)
    argv = ([*ESTIMATE, "--profile", path] if command == "estimate"
            else ["calibrate", "--vidur", tmp_path / "compute", "-o", tmp_path / "c.yaml"])
    _bad(argv, capsys, str(path), "field 'time_stats.mlp_up_proj.median'", "row 3", value)
    assert not (tmp_path / "c.yaml").exists()


def test_calibrate_refuses_tables_too_small_to_fit(tmp_path, capsys):
    folder = tmp_path / "compute" / "h100" / "example" / "m"
    folder.mkdir(parents=True)
    lines = VIDUR.read_text().splitlines(keepends=True)
    (folder / "mlp.csv").write_text("".join(lines[:2]))  # one row: 7 samples, too few for any fit
    _bad(["calibrate", "--vidur", tmp_path / "compute", "-o", tmp_path / "c.yaml"], capsys,
         "nothing could be fitted for H100-SXM", "at least 8")
    assert not (tmp_path / "c.yaml").exists()


# --------------------------------------------------------------------------------- reports
@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, Path]:
    from test_report import make_plans  # real plans of every kind, made once per session
    return make_plans(tmp_path_factory.mktemp("plans"))


def _report(path: Path, tmp_path: Path, capsys, *needles: str) -> None:
    out = tmp_path / "r.html"
    _bad(["report", path, "-o", out], capsys, str(path), *needles)
    assert not out.exists()


def _cut_yaml(text: str, before_key: str) -> str:
    """The plan text up to (not including) the top-level line ``before_key:``."""
    return text[:text.index(f"\n{before_key}:") + 1]


@pytest.mark.parametrize("kind, make, field, needles", [
    ("parallel", lambda t, p: _cut_yaml(t, "cluster"), "cluster", ("no 'cluster' section", "truncated")),
    ("parallel", lambda t, p: yaml.safe_dump({**p, "plans": "x"}), "plans", ("valid list",)),
    ("parallel", lambda t, p: yaml.safe_dump({**p, "plans": []}), "plans", ("at least 1",)),
    ("parallel", lambda t, p: yaml.safe_dump({**p, "plans": [dict(p["plans"][0], ttft_s="fast")]}),
     "plans[0].ttft_s", ("number",)),
    ("parallel", lambda t, p: yaml.safe_dump({**p, "plans": [{k: v for k, v in p["plans"][0].items()
                                                              if k != "why"}]}),
     "plans[0].why", ("truncated",)),
    ("parallel", lambda t, p: yaml.safe_dump({**p, "kind": "ExpertPlacement"}), "spec",
     ("sections of a ParallelPlan",)),
    ("experts", lambda t, p: t[:400], None, ()),
    # cut two bytes into 'metrics:' (metrics reads as the string 'm': an AttributeError before)
    ("experts", lambda t, p: t[:t.index("\nmetrics:\n") + len("\nmetrics:\n  m")], "solver", ("truncated",)),
    ("experts", lambda t, p: _cut_yaml(t, "placement"), "placement", ("no 'placement' section", "truncated")),
    ("experts", lambda t, p: yaml.safe_dump({**p, "placement": None}), "placement", ("truncated",)),
    ("experts", lambda t, p: yaml.safe_dump({**p, "placement": {**p["placement"],
                                                                "phy2log": p["placement"]["phy2log"][:-1]}}),
     "placement.phy2log", ("layer(s)", "truncated")),
    ("experts", lambda t, p: yaml.safe_dump({**p, "placement": {**p["placement"], "phy2log": [
        [99] + r[1:] for r in p["placement"]["phy2log"]]}}), "placement.phy2log[0]", ("expert 99",)),
    ("experts", lambda t, p: yaml.safe_dump({**p, "per_layer": p["per_layer"][:1]}), "per_layer",
     ("truncated",)),
    ("step", lambda t, p: yaml.safe_dump({**p, "kind": "SequencePlan"}), "distribution",
     ("sections of a StepPlan",)),
    ("step", lambda t, p: _cut_yaml(t, "solver"), "solver", ("truncated",)),
    ("step", lambda t, p: t[:t.index("\n  fidelity:") + 1], "cost_model.source", ("truncated",)),
    ("seqplan", lambda t, p: yaml.safe_dump({**p, "kind": "StepPlan"}), "cost_preset",
     ("sections of a SequencePlan",)),
    ("seqplan", lambda t, p: yaml.safe_dump({**p, "strategies": {"x": 1}}), "strategies", ("valid list",)),
    ("fleet", lambda t, p: _cut_yaml(t, "baseline_single_gpu"), "baseline_single_gpu", ("truncated",)),
    ("fleet", lambda t, p: yaml.safe_dump({**p, "pools": p["pools"][:-1]}), None, ("truncated",)),  # a pool lost
    ("fleet", lambda t, p: yaml.safe_dump({**p, "periods": [dict(q, changes={"x": 0.5}) for q in p["periods"]]}),
     "periods[0].changes.x", ("integer",)),
    ("fleet", lambda t, p: yaml.safe_dump({**p, "kind": "ParallelPlan"}), "model", ("sections of a FleetPlan",)),
])
def test_plans_the_schemas_reject_are_refused(plans, tmp_path, capsys, kind, make, field, needles):
    text = plans[kind].read_text()
    path = tmp_path / plans[kind].name
    path.write_text(make(text, yaml.safe_load(text)))
    if kind == "experts":  # the loads file the plan names, beside it
        loads = yaml.safe_load(text)["spec"]["loads"]
        if loads and (plans[kind].parent / Path(loads).name).exists():
            shutil.copy(plans[kind].parent / Path(loads).name, tmp_path)
    _report(path, tmp_path, capsys, *((f"field '{field}'",) if field else ()), *needles)


def _sweep_csv(path: Path, rows: int = 4) -> str:
    """A small sweep results table in the form ``planner sweep`` writes."""
    axes = json.dumps({"rate": "models.0.workload.rate_rps"}, sort_keys=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["point", "kind", "status", "message", "axis.rate", "cost_per_hour", "axes", "tool_version",
                    "sweep_sha256"])
        for i in range(rows):
            w.writerow([i, "fleet", "ok", "", 5.0 * (i + 1), 1.5 * (i + 1), axes, "0.1.0", "ab" * 32])
    return path.read_text()


def test_sweep_table_in_planner_form_reports(tmp_path, capsys):
    path = tmp_path / "sweep.csv"
    _sweep_csv(path)
    code, _, err = run_cli(["report", path, "-o", tmp_path / "r.html"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("cut, field", [
    (lambda t: t[:t.index('"{""rate')], "axes"),                 # cut before the first row's axes
    (lambda t: t[:-40], "sweep_sha256"),                         # the last row cut mid-hash
    (lambda t: t[:t.rindex("\n", 0, len(t) - 1) + 15], "axes"),  # the last row cut mid-row
    (lambda t: t.replace("ok", "okay", 1), "status"),
    (lambda t: t.replace('""rate""', '""speed""'), "axis.speed"),
    (lambda t: t.replace('{""rate"": ""models.0.workload.rate_rps""}', "not json"), "axes"),
    (lambda t: t.splitlines(keepends=True)[0], "point"),         # the header only
])
def test_cut_or_edited_sweep_table_is_refused(tmp_path, capsys, cut, field):
    path = tmp_path / "sweep.csv"
    path.write_text(cut(_sweep_csv(path)))
    _report(path, tmp_path, capsys, f"field '{field}'")
