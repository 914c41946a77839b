"""Malformed command lines (a bad option value, an unknown option or command, a missing
argument) give one ``error:`` line naming the command and exit 2, like bad files do; help and
version still print and exit 0."""
from __future__ import annotations

import pytest

from conftest import one_error_line, run_cli as run


@pytest.mark.parametrize("argv,needle", [
    (["estimate", "--input-len", "abc"], "'--input-len'"),
    (["estimate", "--bogus"], "No such option: --bogus"),
    (["catalog", "foo"], "No such command 'foo'"),
    (["nonexistentcmd"], "No such command 'nonexistentcmd'"),
    (["emit"], "Missing argument"),
])
def test_usage_errors_are_one_line(capsys, argv, needle):
    code, out, err = run(argv, capsys)
    line = one_error_line(err)
    assert code == 2 and needle in line and "--help" in line, line
    assert out == ""


@pytest.mark.parametrize("argv,needle", [(["--help"], "Usage"), (["--version"], "planner "),
                                         (["fleet", "--help"], "fleet")])
def test_help_and_version_exit_0(capsys, argv, needle):
    code, out, _ = run(argv, capsys)
    assert code == 0 and needle in out
