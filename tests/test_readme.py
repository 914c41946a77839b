"""The README's Python snippets run as written, and its CLI lines parse."""
import re
import shlex
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("code", python_blocks())
def test_python_snippet_runs(code, capsys):
    exec(compile(code, "README.md", "exec"), {})


def cli_lines():
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("planner "):
                lines.append(line)
    return lines


@pytest.mark.parametrize("line", cli_lines())
def test_cli_line_runs(line, tmp_path, monkeypatch, capsys):
    from planner.cli import main
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    args = shlex.split(line)[1:]
    # outputs go to a temporary folder, never into the checkout
    out_flags = ("-o", "--output", "--out-npz")
    args = [str(tmp_path / Path(a).name) if i and args[i - 1] in out_flags else a for i, a in enumerate(args)]
    try:
        main(args)
    except SystemExit as exc:
        assert not exc.code, f"`{line}` exited with {exc.code}: {capsys.readouterr().err}"
