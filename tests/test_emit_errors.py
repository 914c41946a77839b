"""``planner emit`` on hand-edited, cut-short and otherwise broken FleetPlans: each problem is one
error line naming the plan file and the field, exit status 2, and no output folder."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from conftest import REPO, one_error_line, run_cli
from hardware.errors import InputError
from planner.emit.plan_check import MAX_COUNT, MAX_ROLE_INSTANCES, check_fleet_plan
from planner.plan import dump_plan

FORMATS = ("vllm", "kubernetes")


@pytest.fixture(scope="module")
def example_plan() -> dict:
    """The README's plan (examples/fleet_request.yaml): pools over four periods."""
    from planner import fleet as fl

    plan = fl.plan_fleet(fl.load_request(REPO / "examples" / "fleet_request.yaml"))
    assert len(plan["pools"]) >= 2 and all(len(p["counts_by_period"]) == 4 for p in plan["pools"])
    return plan


def _write(tmp_path: Path, plan: dict, name: str = "plan.yaml") -> Path:
    """The plan as a hand-edited file would hold it (plain YAML, any value kept as given)."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def _refused(tmp_path: Path, capsys, path: Path, fmt: str, field: str, *needles: str,
             argv: tuple = ()) -> str:
    """Emit ``path``: exit 2, one error line naming the file and ``field`` (and ``needles``),
    and no output folder."""
    out = tmp_path / f"out-{fmt}"
    code, stdout, err = run_cli(["emit", path, "--format", fmt, "-o", out, *argv], capsys)
    line = one_error_line(err)
    assert code == 2, err
    assert f"{path}, field '{field}'" in line, line
    for needle in needles:
        assert needle in line, line
    assert not out.exists() and "wrote" not in stdout
    return line


def _tp_pp(pool: dict) -> int:
    return pool["shape"]["tp"] * pool["shape"].get("pp", 1)


#: (edit of pools[1]: key, value), the field named, words the line holds
POOL_EDITS = [
    # tracebacks before
    ("count", "three", "count", "valid integer", f"0 to {MAX_COUNT}"),
    ("count", None, "count", "valid integer"),
    ("gpu", 5, "gpu", "valid string"),
    ("shape", "tp2", "shape", "valid dictionary", "tp and pp"),
    ("shape", {"tp": 0}, "shape.tp", "greater than or equal to 1"),
    ("shape", {"tp": -2}, "shape.tp", "greater than or equal to 1"),
    ("shape", {"pp": 1}, "shape.tp", "required field is missing"),
    ("gpus_per_replica", 0, "gpus_per_replica", "greater than or equal to 1"),
    ("id", 42, "id", "valid string"),
    ("engine", "x", "engine", "valid dictionary"),
    ("engine", {"max_num_seqs": "many"}, "engine.max_num_seqs", "valid integer"),
    ("counts_by_period", "abc", "counts_by_period", "valid list"),
    ("counts_by_period", [None, 1, 1, 1], "counts_by_period[0]", "valid integer"),
    ("price_class", "cheap", "price_class", "reserved, on_demand or spot"),
    ("cost_per_hour", "x", "cost_per_hour", "valid number"),
    # broken artifacts written before
    ("count", -3, "count", "greater than or equal to 0"),
    ("count", 1e20, "count", f"less than or equal to {MAX_COUNT}", "the most a plan can hold"),
    ("count", MAX_COUNT + 1, "count", f"less than or equal to {MAX_COUNT}"),
    ("count", 2.5, "count", "not a whole number"),
    ("count", True, "count", "valid integer"),
    ("counts_by_period", [-1, 2, 1, 0], "counts_by_period[0]", "greater than or equal to 0"),
    ("counts_by_period", [1], "counts_by_period", "1 count(s) for 4 periods"),
    ("counts_by_period", [1, 2, 1, 0, 1], "counts_by_period", "5 count(s) for 4 periods"),
    ("gpu", "Z9000", "gpu", "unknown GPU 'Z9000'", "catalog"),
    ("gpu", "H100X", "gpu", "unknown GPU 'H100X'", "Did you mean"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("key,value,field,needles", [(k, v, f, n) for k, v, f, *n in POOL_EDITS],
                         ids=[f"{k}={v!r}" for k, v, *_ in POOL_EDITS])
def test_a_bad_pool_field_is_one_error_naming_file_and_field(example_plan, tmp_path, capsys,
                                                             fmt, key, value, field, needles):
    plan = copy.deepcopy(example_plan)
    plan["pools"][1][key] = value
    _refused(tmp_path, capsys, _write(tmp_path, plan), fmt, f"pools[1].{field}", *needles)


@pytest.mark.parametrize("fmt", FORMATS)
def test_gpus_per_replica_must_be_the_shapes_tp_times_pp(example_plan, tmp_path, capsys, fmt):
    plan = copy.deepcopy(example_plan)
    pool = plan["pools"][1]
    pool["gpus_per_replica"] = _tp_pp(pool) + 5
    _refused(tmp_path, capsys, _write(tmp_path, plan), fmt, "pools[1].gpus_per_replica",
             f"tp x pp = {_tp_pp(pool)}")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("edit,field,needle", [
    ({"period_s": "x"}, "period_s", "valid number"),
    ({"period_s": float("nan")}, "period_s", "finite"),
    ({"period_s": 0}, "period_s", "greater than 0"),
    ({"period_s": -900}, "period_s", "greater than 0"),
    ({"period_s": None}, "period_s", "how long a period lasts"),
    ({"routing": "x"}, "routing", "valid list"),
    ({"routing": ["x"]}, "routing[0]", "valid dictionary"),
    ({"cost_per_hour": "x"}, "cost_per_hour", "valid number"),
    ({"pools": "x"}, "pools", "valid list"),
    ({"pools": []}, "pools", "no pools"),
])
def test_a_bad_plan_field_is_one_error_naming_file_and_field(example_plan, tmp_path, capsys, fmt,
                                                             edit, field, needle):
    line = _refused(tmp_path, capsys, _write(tmp_path, {**example_plan, **edit}), fmt, field, needle)
    assert "--lead-s" not in line  # the plan's period is the plan's fault, not the option's


def test_a_routing_bucket_edge_must_be_finite(example_plan, tmp_path, capsys):
    plan = copy.deepcopy(example_plan)
    plan["routing"][0]["bucket"]["output_tokens"] = [0, float("inf")]
    _refused(tmp_path, capsys, _write(tmp_path, plan), "vllm",
             "routing[0].bucket.output_tokens[1]", "finite")


# ------------------------------------------------------------------ cut short or pools lost

def _cuts(text: str) -> dict[str, int]:
    """Where a copy of the plan's text may have stopped."""
    pools_at = text.index("\npools:")
    starts = [i for i in range(pools_at, text.index("\nrouting:")) if text.startswith("\n- id: ", i)]
    # about 1500 characters, at a line's end (a cut inside a key is a YAML error, not a plan's)
    return {"1500 characters": text.rindex("\n", 0, 1500) + 1, "after one pool": starts[1] + 1,
            "inside routing": text.index("\nrouting:") + 400, "before solver": text.index("\nsolver:") + 1}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cut", ["1500 characters", "after one pool", "inside routing",
                                 "before solver"])
def test_a_plan_cut_short_is_refused_as_truncated(example_plan, tmp_path, capsys, fmt, cut):
    text = yaml.safe_dump(example_plan, sort_keys=False)
    path = tmp_path / "cut.yaml"
    path.write_text(text[:_cuts(text)[cut]])
    short = yaml.safe_load(path.read_text())
    assert isinstance(short, dict) and short.get("pools")  # still a plan with pools
    field = "routing" if "routing" not in short else "solver"
    _refused(tmp_path, capsys, path, fmt, field, "looks truncated or edited")


@pytest.mark.parametrize("fmt", FORMATS)
def test_pools_lost_are_found_by_the_plans_own_totals(example_plan, tmp_path, capsys, fmt):
    lost = {**example_plan, "pools": example_plan["pools"][:1]}
    _refused(tmp_path, capsys, _write(tmp_path, lost, "lost.yaml"), fmt, "routing[0].pools",
             "which no pool has", "truncated or edited")
    # without routing the GPUs the plan counts name a type no pool runs on
    gone = {p["gpu"] for p in example_plan["pools"][1:]} - {p["gpu"] for p in lost["pools"]}
    assert gone
    lost = {**lost, "routing": []}
    _refused(tmp_path, capsys, _write(tmp_path, lost, "lost.yaml"), fmt, f"gpus.{sorted(gone)[0]}",
             "no pool runs on", "truncated or edited")
    # and without either (nor metadata: a plan put together by hand) the pools' costs
    bare = {k: v for k, v in lost.items() if k not in ("gpus", "metadata")}
    _refused(tmp_path, capsys, _write(tmp_path, bare, "lost.yaml"), fmt, "pools",
             "the pools' costs add up to", "truncated or edited")


# ------------------------------------------------------------------ names, output, options

@pytest.mark.parametrize("fmt", FORMATS)
def test_duplicate_and_clashing_pool_ids_name_the_file(example_plan, tmp_path, capsys, fmt):
    plan = copy.deepcopy(example_plan)
    plan["pools"][1]["id"] = plan["pools"][0]["id"]
    _refused(tmp_path, capsys, _write(tmp_path, plan), fmt, "pools[1].id", "also names pools[0]")
    plan["pools"][1]["id"] = plan["pools"][0]["id"].replace("/", "_")  # the same slug
    _refused(tmp_path, capsys, _write(tmp_path, plan), fmt, "pools[1].id", "would both be named")


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_output_path_through_a_file_is_refused_before_anything_is_written(
        example_plan, tmp_path, capsys, fmt):
    path = _write(tmp_path, example_plan)
    (tmp_path / "eo").mkdir()
    (tmp_path / "eo" / "afile").write_text("mine\n")
    out = tmp_path / "eo" / "afile" / "sub"
    code, _, err = run_cli(["emit", path, "--format", fmt, "-o", out], capsys)
    line = one_error_line(err)
    assert code == 2 and f"{out}, field '-o/--output'" in line and "is not a folder" in line
    assert (tmp_path / "eo" / "afile").read_text() == "mine\n"
    assert sorted(p.name for p in (tmp_path / "eo").iterdir()) == ["afile"]


@pytest.mark.parametrize("namespace", ["Bad_NS!", "UPPER", "-lead", "a" * 64, "dots.are.not.ok"])
def test_namespace_must_be_a_dns_label(example_plan, tmp_path, capsys, namespace):
    path = _write(tmp_path, example_plan)
    out = tmp_path / "k"
    code, _, err = run_cli(["emit", path, "--format", "kubernetes", "-o", out,
                            "--namespace", namespace], capsys)
    line = one_error_line(err)
    assert code == 2 and "field '--namespace'" in line and "DNS-1123 label" in line
    assert not out.exists()


def test_the_default_lead_is_blamed_as_the_default_and_only_for_kubernetes(tmp_path, capsys):
    plan = _hand_plan(period_s=300.0)
    path = _write(tmp_path, plan)
    code, _, err = run_cli(["emit", path, "--format", "vllm", "-o", tmp_path / "v"], capsys)
    assert code == 0, err  # KEDA's lead is no concern of vLLM scripts
    code, _, err = run_cli(["emit", path, "--format", "kubernetes", "-o", tmp_path / "k"], capsys)
    line = one_error_line(err)
    assert code == 2 and "field '--lead-s'" in line and "the default lead" in line
    assert "300" in line and not (tmp_path / "k").exists()
    code, _, err = run_cli(["emit", path, "--format", "kubernetes", "-o", tmp_path / "k",
                            "--lead-s", "120"], capsys)
    assert code == 0, err


# ------------------------------------------------------------------ what stays accepted

def test_a_valid_plan_comes_back_unchanged_and_whole_floats_become_ints(example_plan, tmp_path,
                                                                        capsys):
    assert check_fleet_plan(example_plan) == example_plan
    plan = copy.deepcopy(example_plan)
    pool = plan["pools"][1]
    pool["count"] = float(pool["count"])
    pool["counts_by_period"] = [float(c) for c in pool["counts_by_period"]]
    pool["shape"] = {k: float(v) for k, v in pool["shape"].items()}
    checked = check_fleet_plan(plan)
    assert checked == example_plan and type(plan["pools"][1]["count"]) is float  # a copy
    assert all(type(c) is int for c in checked["pools"][1]["counts_by_period"])
    # the largest count a plan can hold is accepted (the limit is not off by one)
    plan = copy.deepcopy(example_plan)
    plan["pools"][1]["count"] = MAX_COUNT
    assert check_fleet_plan(plan)["pools"][1]["count"] == MAX_COUNT


def test_a_gpu_alias_is_deployed_as_the_catalog_names_it(example_plan, tmp_path, capsys):
    from planner.emit.kubernetes import GPU_PRODUCTS

    plan = copy.deepcopy(example_plan)
    pool = next(p for p in plan["pools"] if p["gpu"] == "H100-SXM")
    pool["gpu"] = "h100"
    out = tmp_path / "k"
    code, _, err = run_cli(["emit", _write(tmp_path, plan), "--format", "kubernetes", "-o", out],
                           capsys)
    assert code == 0, err
    docs = [yaml.safe_load(f.read_text()) for f in out.glob("*.yaml")]
    selectors = [d["spec"]["template"]["spec"]["nodeSelector"] for d in docs
                 if d["kind"] == "Deployment"]
    label = GPU_PRODUCTS["H100-SXM"]
    assert {label[1]: label[2]} in selectors


def test_the_count_limit_follows_the_planners_bundles():
    from planner.fleet.bundles import PD_RATIOS
    from solvers.cover_model import CoverProblem

    assert MAX_ROLE_INSTANCES == max(max(r) for r in PD_RATIOS)
    assert MAX_COUNT == CoverProblem.max_instances * MAX_ROLE_INSTANCES


# ------------------------------------------------------------------ role pools, re-plans

def _hand_plan(period_s: float = 3600.0, **top) -> dict:
    """A FleetPlan put together by hand (no metadata): a plain pool and the two roles of a
    prefill/decode bundle, over four periods, and a re-plan's transition."""
    def pool(pid, **kw):
        return {"id": pid, "group": pid.rsplit("/", 1)[0], "model": "chat",
                "serve_model": "meta-llama/Llama-3.1-8B-Instruct", "gpu": "L4",
                "shape": {"tp": 1, "pp": 1}, "gpus_per_replica": 1, "price_class": "on_demand",
                "count": 2, "cost_per_hour": 1.0, "counts_by_period": [1, 2, 1, 1],
                "price_per_replica_hour": 0.8, **kw}

    bundle = "chat/H100-SXM/pd-1p-tp1-pp1-2d-tp1-pp1"
    pools = [pool("chat/L4/tp1-pp1/on_demand"),
             pool(f"{bundle}/prefill/on_demand", group=bundle, role="prefill", gpu="H100-SXM",
                  engine={"kv_transfer": "prefill"}),
             pool(f"{bundle}/decode/on_demand", group=bundle, role="decode", gpu="H100-SXM",
                  count=4, counts_by_period=[2, 4, 2, 2], engine={"kv_transfer": "decode"})]
    replan = {"gpus_changed": 2.0, "retired_pools": [
                  {"pool": "chat/A10G/tp1-pp1/on_demand", "gpu": "A10G", "gpus_per_replica": 1}],
              "transition": {"period": 0, "cost_per_hour_during_switch": 4.0,
                             "grow_first": [{"pool": pools[0]["id"], "from": 1, "to": 2}],
                             "shrink_after": [{"pool": "chat/A10G/tp1-pp1/on_demand",
                                               "from": 1, "to": 0}]}}
    return {"apiVersion": "planner/v1", "kind": "FleetPlan", "period_s": period_s,
            "pools": pools, "replan": replan, **top}


def test_the_hand_made_plan_emits(tmp_path, capsys):
    path = _write(tmp_path, _hand_plan())
    for fmt in FORMATS:
        code, _, err = run_cli(["emit", path, "--format", fmt, "-o", tmp_path / fmt], capsys)
        assert code == 0, err
    assert (tmp_path / "kubernetes" / "transition.sh").exists()
    assert any(p.name.startswith("router-") for p in (tmp_path / "vllm").iterdir())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("edit,field,needle", [
    (lambda p: p["pools"][1].update(role="both"), "pools[1].role", "'prefill' or 'decode'"),
    (lambda p: p["pools"][1].pop("group"), "pools[1].group", "without its bundle"),
    (lambda p: p["pools"][2].update(gpus_per_replica=2), "pools[2].gpus_per_replica", "tp x pp = 1"),
    (lambda p: p["pools"][2]["engine"].update(kv_transfer="x"), "pools[2].engine.kv_transfer",
     "prefill or decode"),
    (lambda p: p["replan"].update(transition="x"), "replan.transition", "valid dictionary"),
    (lambda p: p["replan"]["transition"]["grow_first"][0].update(to=-1),
     "replan.transition.grow_first[0].to", "greater than or equal to 0"),
    (lambda p: p["replan"]["transition"]["shrink_after"][0].pop("from"),
     "replan.transition.shrink_after[0].from", "required field is missing"),
    (lambda p: p["replan"]["retired_pools"][0].update(gpus_per_replica=0),
     "replan.retired_pools[0].gpus_per_replica", "greater than or equal to 1"),
    (lambda p: p["replan"].update(gpus_changed="x"), "replan.gpus_changed", "valid number"),
    (lambda p: p.update(cost_per_hour=99.0), "pools", "the pools' costs add up to 3"),
], ids=["role", "group", "gpus_per_replica", "kv_transfer", "transition", "step-to", "step-from",
        "retired", "gpus_changed", "cost"])
def test_role_pool_and_replan_edits_are_refused(tmp_path, capsys, fmt, edit, field, needle):
    plan = _hand_plan()
    edit(plan)
    _refused(tmp_path, capsys, _write(tmp_path, plan), fmt, field, needle)


def test_library_emitters_check_the_plan_too():
    from planner.emit.kubernetes import fleet_kubernetes_files
    from planner.emit.vllm import fleet_vllm_files

    plan = _hand_plan()
    plan["pools"][0]["count"] = -3
    for render in (fleet_vllm_files, fleet_kubernetes_files):
        with pytest.raises(InputError, match=r"pools\[0\]\.count"):
            render(plan)


def test_a_plan_dumped_by_the_planner_round_trips_through_emit(example_plan, tmp_path, capsys):
    """The check reads the plan as dump_plan writes it (floats to 12 digits): still whole."""
    path = tmp_path / "plan.yaml"
    dump_plan(example_plan, path)
    code, _, err = run_cli(["emit", path, "--format", "vllm", "-o", tmp_path / "v"], capsys)
    assert code == 0, err
