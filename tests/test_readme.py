"""The README's Python snippets run as written, and every `planner ...` line in it runs."""
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
OUT_FLAGS = ("-o", "--output", "--out-npz", "--out-sglang", "--out-vllm", "--out-trtllm", "--out-eplb-json")


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("code", python_blocks())
def test_python_snippet_runs(code, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    exec(compile(code, "README.md", "exec"), {})


def cli_lines():
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("planner "):
                lines.append(line)
    return lines


def test_readme_has_cli_lines():
    assert len(cli_lines()) >= 5


def test_every_cli_line_runs_in_order(tmp_path, monkeypatch, capsys):
    """Lines run top to bottom, as a reader would; outputs land in a temporary folder and later
    lines that read an earlier output (a plan file, a calibration) get that file."""
    from planner.cli import main
    monkeypatch.chdir(REPO)
    written: dict[str, str] = {}
    for line in cli_lines():
        args = shlex.split(line)[1:]
        mapped = []
        for i, a in enumerate(args):
            if i and args[i - 1] in OUT_FLAGS:
                written[a] = str(tmp_path / Path(a).name)
                mapped.append(written[a])
            else:
                mapped.append(written.get(a, a))
        try:
            main(mapped)
        except SystemExit as exc:
            assert not exc.code, f"`{line}` exited with {exc.code}: {capsys.readouterr().err}"
        capsys.readouterr()
