"""Where results go (``-o``) and numeric options, the same way in every planning command:
the output is checked before any work, by its suffix, and never lands on an input, a folder or
a missing folder; NaN and infinite numbers are refused; every refusal is one line and exit 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from hardware.errors import InputError
from planner.plan import check_output, dump_plan, envelope, write_atomic
from conftest import one_error_line as one_line, run_cli as run

REPO = Path(__file__).resolve().parents[1]


# every command that writes a result with -o; the inputs need not exist: -o is checked first
COMMANDS = {
    "fleet": lambda d: ["fleet", d / "request.yaml"],
    "fleet --melange": lambda d: ["fleet", "--melange", d / "config.json"],
    "parallel": lambda d: ["parallel", d / "request.yaml"],
    "experts": lambda d: ["experts", d / "request.yaml"],
    "seqpar step": lambda d: ["seqpar", "step", "--lengths", d / "lengths.txt", "--gpus", "8"],
    "seqpar plan": lambda d: ["seqpar", "plan", "--lengths", d / "lengths.txt", "--gpus", "8"],
    "calibrate": lambda d: ["calibrate", "--vidur", d / "vidur"],
    "report": lambda d: ["report", d / "plan.yaml"],
    "sweep": lambda d: ["sweep", d / "sweep.yaml"],
}
SUFFIX = {"report": ".html", "sweep": ".csv"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_existing_folder_as_output_is_one_error_before_any_work(tmp_path, capsys, command):
    folder = tmp_path / f"out{SUFFIX.get(command, '.yaml')}"
    folder.mkdir()
    code, _, err = run([*COMMANDS[command](tmp_path), "-o", folder], capsys)
    line = one_line(err)
    # the output is named, not the missing input: nothing was read or solved first
    assert code == 2 and "-o/--output" in line and "existing folder" in line, line


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_missing_output_folder_is_one_error_before_any_work(tmp_path, capsys, command):
    target = tmp_path / "nowhere" / f"out{SUFFIX.get(command, '.yaml')}"
    code, _, err = run([*COMMANDS[command](tmp_path), "-o", target], capsys)
    assert code == 2 and "does not exist" in one_line(err) and "nowhere" in err


def test_fleet_output_checked_before_solving_and_chosen_by_suffix(tmp_path, capsys):
    request = tmp_path / "request.yaml"
    request.write_text("models: not-a-list\n")  # would fail if it were read first
    for target, needle in ((tmp_path / "plan.txt", "unknown plan format '.txt'"),
                           (tmp_path / "plan", "unknown plan format 'plan'"),
                           (request, "refusing to overwrite the input file")):
        code, _, err = run(["fleet", request, "-o", target], capsys)
        assert code == 2 and needle in one_line(err)
    assert request.read_text() == "models: not-a-list\n"
    link = tmp_path / "link.yaml"
    link.symlink_to(request)
    code, _, err = run(["fleet", request, "-o", link], capsys)
    assert code == 2 and "refusing to overwrite" in one_line(err)


def test_dump_plan_writes_the_format_its_suffix_names(tmp_path):
    plan = envelope("FleetPlan", {"pools": []})
    assert (dump_plan(plan, tmp_path / "p.json").read_text()).startswith("{")
    assert (dump_plan(plan, tmp_path / "p.YML").read_text()).startswith("apiVersion: planner/v1")
    with pytest.raises(InputError, match="unknown plan format '.txt'"):
        dump_plan(plan, tmp_path / "p.txt")
    assert not (tmp_path / "p.txt").exists()


def test_write_atomic_onto_a_folder_is_an_input_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="existing folder"):
        write_atomic(tmp_path / "d", "x")
    with pytest.raises(InputError, match="does not exist"):
        write_atomic(tmp_path / "missing" / "f.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temp file left behind
    with pytest.raises(InputError, match="not a regular file"):
        check_output("/dev/null", suffixes=None)


@pytest.mark.parametrize("argv,flag", [
    (["fleet", REPO / "examples/fleet_request.yaml", "--time-limit", "nan"], "--time-limit"),
    (["fleet", REPO / "examples/fleet_request.yaml", "--time-limit", "inf"], "--time-limit"),
    (["fleet", REPO / "examples/fleet_request.yaml", "--slo-factor", "inf"], "--slo-factor"),
    (["fleet", REPO / "examples/fleet_request.yaml", "--previous", "p.yaml",
      "--keep-within", "nan"], "--keep-within"),
    (["experts", REPO / "examples/experts_request.yaml", "--time-limit", "nan"], "--time-limit"),
    (["experts", REPO / "examples/experts_request.yaml", "--memory-gib", "inf"], "--memory-gib"),
    (["parallel", REPO / "examples/parallel_request.yaml", "--rate", "inf"], "--rate"),
    (["parallel", REPO / "examples/parallel_request.yaml", "--tpot-slo", "nan"], "--tpot-slo"),
    (["seqpar", "step", "--lengths", REPO / "examples/seqpar_lengths.txt", "--gpus", "8",
      "--time-limit", "nan"], "--time-limit"),
    (["seqpar", "plan", "--lengths", REPO / "examples/seqpar_lengths.txt", "--gpus", "8",
      "--time-limit", "nan"], "--time-limit"),
])
def test_non_finite_numbers_are_refused(capsys, argv, flag):
    code, _, err = run(argv, capsys)
    line = one_line(err)
    assert code == 2 and f"field '{flag}'" in line and "finite" in line


def test_spinner_only_where_stderr_is_a_terminal_and_never_on_stdout(monkeypatch, capsys):
    import contextlib
    import sys

    from rich.status import Status

    from planner.commands.common import working

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert isinstance(working("planning"), contextlib.nullcontext)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    spinner = working("planning")
    assert isinstance(spinner, Status)
    with spinner:
        pass
    assert capsys.readouterr().out == ""
