"""One spelling for error messages: fields as ``models[0].slo.tpot_s`` with the value given,
whether pydantic or a hand-written check found the problem."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hardware.errors import InputError, field_path, from_validation_error
from conftest import one_error_line as one_line, run_cli as run

REPO = Path(__file__).resolve().parents[1]
HIST = {"histogram": {"input_edges": [0, 1024], "output_edges": [0, 256], "shares": [[1.0]]},
        "rate_rps": 2}






def _request(tmp_path: Path, model: dict) -> Path:
    path = tmp_path / "req.yaml"
    entry = {"name": "chat", "model": "llama-3.1-8b", "workload": HIST,
             "slo": {"ttft_s": 1.0, "tpot_s": 0.05}, **model}
    path.write_text(yaml.safe_dump({"models": [entry], "gpus": [{"name": "H100-SXM"}]}))
    return path


def test_field_paths_use_brackets_for_list_indices():
    assert field_path("models.0.slo.tpot_s") == "models[0].slo.tpot_s"
    assert field_path("gpus.12") == "gpus[12]"
    assert field_path("models[0].workload.rate_rps") == "models[0].workload.rate_rps"
    assert field_path("gpu_info.A10G.tputs") == "gpu_info.A10G.tputs"
    assert InputError("x", field="axes.1.values").field == "axes[1].values"


@pytest.mark.parametrize("change,expected_line", [
    ({"slo": {"ttft_s": 1.0, "tpot_s": -0.05}},
     "field 'models[0].slo.tpot_s': Input should be greater than 0 (got -0.05)"),
    ({"slo": {"ttft_s": 1.0, "tpot_s": "fast"}}, "field 'models[0].slo.tpot_s': Input should be a "
                                                 "valid number, unable to parse string as a number "
                                                 "(got 'fast')"),
    ({"colour": "red"}, "field 'models[0].colour': unknown field (expected only the fields "
                        "documented in examples/fleet_request.yaml)"),
])
def test_fleet_request_errors_name_the_path_and_the_value(tmp_path, capsys, change, expected_line):
    req = _request(tmp_path, change)
    code, _, err = run(["fleet", req], capsys)
    assert code == 2 and one_line(err) == f"error: {req}, {expected_line}"


def test_a_one_request_trace_says_it_gives_no_rate(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                    "2023-11-16 18:00:04.7168620,961,57\n")
    req = _request(tmp_path, {"workload": {"trace": "t.csv", "period_s": 900}})
    code, _, err = run(["fleet", req], capsys)
    line = one_line(err)
    assert code == 2 and "t.csv, field 'timestamps'" in line and "workload.rate_rps" in line


def test_every_pydantic_conversion_shows_path_and_value(tmp_path):
    from planner.experts import validate_request
    from planner.parallel import parse_request

    data = yaml.safe_load((REPO / "examples" / "parallel_request.yaml").read_text())
    data["workload"]["rate_rps"] = -1
    with pytest.raises(InputError) as exc:
        parse_request(data, file="p.yaml")
    assert exc.value.field == "workload.rate_rps" and "(got -1)" in exc.value.message
    with pytest.raises(InputError) as exc:
        validate_request({"gpus": [8, "x"]}, file="e.yaml")
    assert exc.value.field == "gpus" and "(got [8, 'x'])" in exc.value.message

    from pydantic import BaseModel, ValidationError

    class Item(BaseModel):
        size: int

    class Outer(BaseModel):
        items: list[Item]
        share: float | list[float] = 1.0

    for data, field, shown in (({"items": [{"size": 1}, {"size": "big"}]}, "items[1].size", "'big'"),
                               ({"items": [], "share": "x"}, "share", "'x'")):  # union member dropped
        try:
            Outer.model_validate(data)
        except ValidationError as e:
            err = from_validation_error(e, file="f.yaml")
        assert err.field == field and f"(got {shown})" in err.message and err.file == "f.yaml"
