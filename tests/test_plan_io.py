"""Plan envelope, canonical output, atomic writes, and refusing to overwrite inputs."""
import pytest

from hardware.errors import InputError
from planner.plan import API_VERSION, dump_plan, envelope, inputs_hash, load_plan, read_structured, to_yaml


def test_envelope_and_roundtrip(tmp_path):
    plan = envelope("FleetPlan", {"cost_per_hour": 1.5, "pools": [{"gpu": "L4", "count": 2}]}, inputs={"a": 1})
    assert plan["apiVersion"] == API_VERSION and plan["kind"] == "FleetPlan"
    assert plan["metadata"]["inputs_sha256"] == inputs_hash({"a": 1})
    for name in ("p.yaml", "p.json"):
        path = dump_plan(plan, tmp_path / name)
        assert load_plan(path) == plan


def test_same_input_same_bytes(tmp_path):
    body = {"b": [1.0, 2.5], "a": {"z": 1, "y": None}}
    assert to_yaml(envelope("StepPlan", body, inputs=body)) == to_yaml(envelope("StepPlan", body, inputs=body))
    assert inputs_hash({"x": 1, "y": 2}) == inputs_hash({"y": 2, "x": 1})


def test_floats_keep_twelve_digits_without_last_bit_noise():
    noisy = 1.835 + 3.1  # 4.9350000000000005 in binary floating point
    plan = envelope("FleetPlan", {"cost_per_hour": noisy, "share": 1 / 3, "tiny": 2.300374835062513e-08})
    assert plan["cost_per_hour"] == 4.935 and "4.935\n" in to_yaml(plan)
    assert plan["share"] == 0.333333333333 and plan["tiny"] == 2.30037483506e-08


def test_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / "request.yaml"
    src.write_text("x: 1\n")
    with pytest.raises(InputError, match="refusing to overwrite"):
        dump_plan(envelope("FleetPlan", {}), src, protect=[src])
    assert src.read_text() == "x: 1\n"


def test_atomic_write_leaves_no_temp_files_and_normal_permissions(tmp_path):
    import os
    path = dump_plan(envelope("FleetPlan", {"k": 1}), tmp_path / "out.yaml")
    assert [p.name for p in tmp_path.iterdir()] == ["out.yaml"]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_bad_plan_files(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("apiVersion: planner/v0\nkind: FleetPlan\n")
    with pytest.raises(InputError, match="apiVersion"):
        load_plan(p)
    p.write_text("apiVersion: planner/v1\nkind: Nope\n")
    with pytest.raises(InputError, match="kind"):
        load_plan(p)
    p.write_text("a: [1, 2\n")
    with pytest.raises(InputError, match="malformed"):
        read_structured(p)
    with pytest.raises(InputError, match="not found"):
        read_structured(tmp_path / "missing.yaml")
