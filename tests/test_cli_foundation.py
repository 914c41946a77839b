"""The CLI as a user runs it: version, help, catalog, estimate, and one-line errors."""
import json
import subprocess
import sys

import pytest

from planner.cli import main


def run(args, capsys):
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_and_help(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith("planner ")
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "estimate" in out and "catalog" in out


@pytest.mark.parametrize("what", ["gpus", "nodes", "models"])
def test_catalog_json(capsys, what):
    code, out, _ = run(["catalog", what, "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert isinstance(data, list) and data


def test_catalog_models_stable_names(capsys):
    _, out, _ = run(["catalog", "models", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    ds = rows["deepseek-v3"]
    assert {"layers", "experts", "parameters", "active_parameters", "kv_bytes_per_token"} <= set(ds)
    assert ds["experts"] == 256


def test_catalog_tables_render(capsys):
    code, out, _ = run(["catalog", "gpus"], capsys)
    assert code == 0 and "H100-SXM" in out and "MI300X" in out


def test_estimate_json_stable_names(capsys):
    code, out, _ = run(["estimate", "--model", "llama-3.1-70b", "--gpu", "H100", "--tp", "4", "--input-len", "1024",
                        "--output-len", "256", "--batch", "8", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    for key in ("ttft_s", "tpot_s", "output_tokens_per_s", "memory_bytes", "max_batch", "ops"):
        assert key in d
    assert set(d["memory_bytes"]) >= {"weights", "kv_cache", "activations", "reserved"}
    names = {o["name"] for o in d["ops"]}
    assert {"qkv_proj", "attention", "o_proj", "mlp_up_gate", "mlp_act", "mlp_down", "tp_allreduce"} <= names
    assert all(o["fidelity"] in ("analytical", "calibrated", "measured") for o in d["ops"])
    assert all(o["bound"] in ("compute", "memory", "communication", "overhead") for o in d["ops"])
    assert 0 < d["tpot_s"] < d["ttft_s"]


def test_estimate_table_output(capsys):
    code, out, _ = run(["estimate", "-m", "mixtral-8x7b", "-g", "h100", "--tp", "2", "--ep", "2", "--input-len", "512",
                        "--output-len", "64"], capsys)
    assert code == 0 and "moe_dispatch" in out and "Memory per GPU" in out


@pytest.mark.parametrize("args,needle", [
    (["--model", "llama-3.1-70b", "--gpu", "H100-SMX"], "Did you mean H100-SXM"),
    (["--model", "llama-9", "--gpu", "H100"], "unknown model"),
    (["--model", "llama-3.1-70b", "--gpu", "H100", "--tp", "3"], "does not divide"),
    (["--model", "llama-3.1-70b", "--gpu", "L4"], "at least 8 x L4"),
    (["--model", "/nonexistent/config.json", "--gpu", "H100"], "not found"),
    (["--model", "llama-3.1-8b", "--gpu", "A100", "--dtype", "fp8"], "fp8"),
])
def test_estimate_bad_input_one_line_exit_2(capsys, args, needle):
    code, out, err = run(["estimate", *args, "--input-len", "100", "--output-len", "10"], capsys)
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_no_traceback(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama"}')
    proc = subprocess.run([sys.executable, "-m", "planner.cli", "estimate", "--model", str(bad), "--gpu", "H100",
                           "--input-len", "10", "--output-len", "10"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(bad) in proc.stderr and "hidden_size" in proc.stderr
