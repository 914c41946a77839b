"""Calibration: curve and link fits recover known parameters, files round-trip, the CLI works."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_profiles import VIDUR_OPS, write_vidur_csv

from costmodels.calibration import (Calibration, KindEfficiency, OpBuilder, fit_efficiency, fit_link, fit_links,
                                    load_calibration, measured_table_for, op_arrays, predict_comm, predict_times,
                                    shape_model)
from costmodels.comm import LinkModel, collective_time_s
from costmodels.model import load_model
from costmodels.ops import Parallel
from costmodels.roofline import op_time
from hardware.accelerator import EfficiencyCurve
from hardware.catalog import get_accelerator
from hardware.errors import InputError
from hardware.profiles import CommSample, ModelShape, OpSample, read_vidur_profiles
from planner.calibrate import calibration_document, guess_accelerator, run_calibrate, write_calibration

H100 = get_accelerator("H100-SXM")
VIDUR_TO_OP = {"attn_pre_proj": "qkv_proj", "attn_post_proj": "o_proj", "mlp_up_proj": "mlp_up_gate",
               "mlp_act": "mlp_act", "mlp_down_proj": "mlp_down", "input_layernorm": "input_norm",
               "post_attention_layernorm": "post_attn_norm"}
#: the "true" efficiencies the synthetic tables are generated from
TRUE = KindEfficiency(EfficiencyCurve(sizes=(1e6, 1e9, 1e12), efficiencies=(0.05, 0.45, 0.7)),
                      EfficiencyCurve(sizes=(1e4, 1e6, 1e9), efficiencies=(0.05, 0.5, 0.8)), 5e-6, "calibrated", 2.0)
SHAPES = [ModelShape(16, 16, 2048, 5504, 32000, True), ModelShape(32, 8, 4096, 14336, 32000, True),
          ModelShape(40, 40, 5120, 13824, 32000, True)]
POINTS = [(t, tp) for tp in (1, 2, 4) for t in (1, 4, 16, 64, 256, 1024, 4096)]
BUILDER = OpBuilder()


def _true_ms(shape: ModelShape):
    def f(vidur_op: str, tokens: int, tp: int) -> float:
        if vidur_op not in VIDUR_TO_OP:
            return 0.001
        op = BUILDER.op(OpSample("h100", "m", shape, VIDUR_TO_OP[vidur_op], vidur_op, tokens, tp, 0.0))
        return op_time(op, H100, eff=_device_eff()).instance_s * 1e3
    return f


def _device_eff():
    from costmodels.roofline import DeviceEfficiency
    return DeviceEfficiency({k: TRUE for k in ("gemm", "attention", "elementwise")})


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vidur") / "compute" / "h100"
    for i, shape in enumerate(SHAPES):
        write_vidur_csv(root / "acme" / f"m{i}" / "mlp.csv", shape, POINTS, _true_ms(shape))
    return root.parent


def test_fit_efficiency_recovers_synthetic_curve(synth_dir: Path) -> None:
    arr = op_arrays(read_vidur_profiles(synth_dir))
    sub = arr.subset(arr.op == "mlp_up_gate")
    prior_err = np.mean(np.abs(predict_times(sub, H100, _analytical()) - sub.time_s) / sub.time_s)
    eff = fit_efficiency(sub, H100)
    err = np.abs(predict_times(sub, H100, eff) - sub.time_s) / sub.time_s
    assert eff.fidelity == "calibrated"
    assert err.mean() < 0.03 < prior_err  # the fit beats the prior and reproduces the generator
    assert all(0 < e <= 1 for e in eff.compute.efficiencies + eff.memory.efficiencies)
    assert eff.roofline_p == 2.0
    # the classic max() roofline can be fitted too (it cannot reproduce a soft-roofline table as well)
    hard = fit_efficiency(sub, H100, roofline_p=None)
    assert hard.roofline_p is None
    assert np.mean(np.abs(predict_times(sub, H100, hard) - sub.time_s) / sub.time_s) < prior_err


def _analytical() -> KindEfficiency:
    return KindEfficiency(H100.matmul_efficiency, H100.memory_efficiency, H100.kernel_overhead_s)


def test_fit_efficiency_needs_samples() -> None:
    arr = op_arrays([])
    with pytest.raises(InputError):
        fit_efficiency(arr, H100)


def test_fit_link_recovers_alpha_beta() -> None:
    truth = LinkModel(450e9, 2e-6, 0.7, 12e-6,
                      EfficiencyCurve(sizes=(1e4, 1e6, 1e8), efficiencies=(0.1, 0.5, 0.8)))
    samples = [CommSample("all_reduce", n, 8, float(m), collective_time_s("all_reduce", m, n, truth))
               for n in (2, 4, 8) for m in 2.0 ** np.arange(10, 30)]
    fit = fit_link(samples, 450e9, tier="intra-node")
    err = np.abs(predict_comm(samples, fit.link) - [s.time_s for s in samples]) / [s.time_s for s in samples]
    assert err.mean() < 0.03 and fit.residuals.mape < 0.03 and fit.residuals_ge_1mb.mape < 0.03
    assert fit.link.efficiency_curve is not None and fit.collective == "all_reduce"
    # beyond the catalog's wire rate (in-network reduction) the fitted rate is raised, not clipped
    fast = [CommSample("all_reduce", 8, 8, s.message_bytes, s.time_s / 2) for s in samples if s.num_gpus == 8]
    assert fit_link(fast, 450e9, tier="intra-node").link.bandwidth_bytes_per_s > 450e9


def test_fit_links_per_collective_and_size() -> None:
    link = LinkModel(450e9, 3e-6, 0.8, 10e-6)
    samples = [CommSample(c, n, gpn, float(m), collective_time_s(c, m, n, link))
               for c in ("all_reduce", "p2p") for n, gpn in ((2, 2), (8, 8), (16, 8))
               for m in 2.0 ** np.arange(12, 28)]
    fits = fit_links(samples, H100)
    assert {"intra-node:all_reduce", "intra-node:all_reduce/2", "intra-node:all_reduce/8",
            "inter-node:all_reduce", "intra-node:p2p"} <= set(fits)
    assert fits["inter-node:all_reduce"].link.bandwidth_bytes_per_s >= 50e9  # the node's NIC rate


def _small_calibration(synth_dir: Path) -> Calibration:
    link = LinkModel(450e9, 3e-6, 0.8, 10e-6)
    comm = [CommSample("all_reduce", n, 8, float(m), 1.3 * collective_time_s("all_reduce", m, n, link))
            for n in (2, 4, 8) for m in 2.0 ** np.arange(12, 28)]
    from costmodels.calibration import calibrate
    return calibrate({"H100-SXM": read_vidur_profiles(synth_dir)}, {"H100-SXM": comm}, sources=["synthetic"])


@pytest.fixture(scope="module")
def calib(synth_dir: Path) -> Calibration:
    return _small_calibration(synth_dir)


def test_calibration_efficiencies_and_fidelity(calib: Calibration) -> None:
    eff = calib.efficiency_for("H100-SXM")
    assert eff.by_kind["gemm"].fidelity == "calibrated"
    assert eff.by_kind["attention"].fidelity == "analytical"  # no attention table: the prior stays
    assert set(eff.by_op) == {"qkv_proj", "o_proj", "mlp_up_gate", "mlp_act", "mlp_down", "input_norm",
                              "post_attn_norm"}
    rows = calib.residual_rows()
    assert all(r["mape"] < 0.1 for r in rows if r["what"].startswith("op:"))
    assert calib.efficiency_for("h100").by_op.keys() == eff.by_op.keys()  # aliases resolve
    with pytest.raises(InputError) as err:
        calib.efficiency_for("A100-80GB-SXM")
    assert "H100-SXM" in str(err.value)


def test_calibration_links_for_scopes(calib: Calibration) -> None:
    links = calib.links_for(H100, Parallel(tp=4))
    assert links["tp"].efficiency_curve is not None            # calibrated all-reduce, 4 ranks
    assert links["tp"] == calib.devices["H100-SXM"].link_fits["intra-node:all_reduce/4"].link
    assert links["pp"].efficiency_curve is None                # no p2p table: catalog link
    assert calib.links_for(get_accelerator("A100-80GB-SXM"), Parallel(tp=2)) is None


def test_calibration_file_round_trip_is_deterministic(calib: Calibration, tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.json"
    write_calibration(calib, a, ["synthetic"])
    write_calibration(calib, b, ["synthetic"])
    back = load_calibration(a)
    # plans keep 12 significant digits (planner.plan.PLAN_DIGITS): equal to that precision
    assert _close(back.to_dict(), calib.to_dict())
    assert load_calibration(b).residual_rows() == back.residual_rows()
    doc = calibration_document(calib, ["synthetic"])
    assert doc["apiVersion"] == "planner/v1" and doc["kind"] == "Calibration"
    write_calibration(calib, tmp_path / "c.yaml", ["synthetic"])
    assert (tmp_path / "c.yaml").read_bytes() == a.read_bytes()
    write_calibration(back, tmp_path / "d.yaml", ["synthetic"])  # a file read back writes as read
    assert (tmp_path / "d.yaml").read_bytes() == a.read_bytes()


def _close(x, y) -> bool:
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_close(a, b) for a, b in zip(x, y))
    if isinstance(x, float) or isinstance(y, float):
        return x == pytest.approx(y, rel=1e-11, abs=0.0)
    return x == y


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("accelerators"), "accelerators"),
    (lambda d: d.update(kind="FleetPlan"), "kind"),
    (lambda d: d["accelerators"][0]["ops"][0].pop("overhead_s"), "accelerators[0].ops[0].overhead_s"),
    (lambda d: d["accelerators"][0]["ops"][0]["compute_efficiency"]["efficiencies"].__setitem__(0, 1.5),
     "accelerators[0].ops[0].compute_efficiency"),
    (lambda d: d["accelerators"][0]["links"][0].update(tier="moon"), "accelerators[0].links[0].tier"),
    (lambda d: d["accelerators"][0].update(name="H1000"), "accelerators[0].name"),
    (lambda d: d["accelerators"][0]["kinds"][0].update(roofline_p=0.5), "accelerators[0].kinds[0].roofline_p"),
    (lambda d: d["accelerators"][0]["links"][0].update(latency_s="slow"), "accelerators[0].links[0].latency_s"),
])
def test_bad_calibration_file_names_the_field(calib: Calibration, tmp_path: Path, mutate, field) -> None:
    doc = json.loads(json.dumps(calibration_document(calib)))
    mutate(doc)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        load_calibration(p)
    assert err.value.field == field and err.value.file == str(p)


def test_malformed_and_missing_calibration_file(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("accelerators: [unclosed\n")
    with pytest.raises(InputError) as err:
        load_calibration(p)
    assert "malformed" in str(err.value)
    with pytest.raises(InputError):
        load_calibration(tmp_path / "missing.yaml")


def test_measured_table_for_model(synth_dir: Path) -> None:
    samples = read_vidur_profiles(synth_dir)
    spec = shape_model(SHAPES[1], "m1")
    table = measured_table_for(samples, spec, H100)
    assert table.shape == SHAPES[1]
    with pytest.raises(InputError) as err:
        measured_table_for(samples, load_model("llama-3.1-70b"), H100)
    assert err.value.field == "profile" and "h=8192" in str(err.value)


def test_guess_accelerator_from_paths() -> None:
    assert guess_accelerator("data/vidur/profiling/network/h100_dgx/all_reduce.csv") == "H100-SXM"
    assert guess_accelerator("apex_plus/comm/H100-SXM-80GB/all_reduce.csv") == "H100-SXM"
    assert guess_accelerator("somewhere/else/table.csv") is None


def test_run_calibrate_needs_input(synth_dir: Path) -> None:
    with pytest.raises(InputError):
        run_calibrate()
    with pytest.raises(InputError):
        run_calibrate(vidur=[synth_dir], gpu="A100-80GB-SXM")  # only H100 data there


def _planner(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_calibrate_then_estimate(synth_dir: Path, tmp_path: Path) -> None:
    nccl = tmp_path / "h100_all_reduce_perf.txt"
    from test_profiles import NCCL_OUT
    nccl.write_text(NCCL_OUT + "".join(f"  {2 ** k}  {2 ** k // 4}  float  sum  -1  {5 + 2 ** k / 2e5:.2f}  0  0  0  "
                                       f"{5 + 2 ** k / 2e5:.2f}  0  0  0\n" for k in range(10, 28)))
    out = tmp_path / "calib.yaml"
    r = _planner("calibrate", "--vidur", str(synth_dir), "--nccl", f"H100-SXM={nccl}", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["residuals"]
    assert any(row["what"] == "link:intra-node:all_reduce" for row in rows)
    r = _planner("estimate", "--model", "llama-3.1-8b", "--gpu", "H100", "--tp", "4", "--input-len", "256",
                 "--output-len", "32", "--calibration", str(out), "--json")
    assert r.returncode == 0, r.stderr
    est = json.loads(r.stdout)
    fid = {o["name"]: o["fidelity"] for o in est["ops"]}
    assert fid["mlp_up_gate"] == "calibrated" and fid["tp_allreduce"] == "calibrated"
    assert fid["attention"] == "analytical"


def test_cli_estimate_with_profile_uses_measured_layer(synth_dir: Path, tmp_path: Path) -> None:
    # a profile with Llama-3.1-8B's shape, so the lookup covers the real model's ops
    shape = ModelShape(32, 8, 4096, 14336, 128256, True)
    d = tmp_path / "compute" / "h100" / "meta-llama" / "Llama-3.1-8B"
    write_vidur_csv(d / "mlp.csv", shape, [(t, 2) for t in (1, 64, 512, 1024)], _true_ms(shape))
    r = _planner("estimate", "--model", "llama-3.1-8b", "--gpu", "H100", "--tp", "2", "--input-len", "256",
                 "--output-len", "32", "--batch", "2", "--profile", str(tmp_path / "compute"), "--json")
    assert r.returncode == 0, r.stderr
    ops = json.loads(r.stdout)["ops"]
    fid = {(o["phase"], o["name"]): o["fidelity"] for o in ops}
    assert fid[("prefill", "qkv_proj")] == "measured" and fid[("decode", "mlp_down")] == "measured"
    assert fid[("prefill", "attention")] == "analytical"


def test_cli_bad_profile_is_one_line(tmp_path: Path) -> None:
    bad = write_vidur_csv(tmp_path / "mlp.csv", SHAPES[0], [(1, 1)], lambda *a: 0.1, drop="n_embd")
    r = _planner("calibrate", "--vidur", str(bad), "--gpu", "H100")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "n_embd" in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr
    r = _planner("estimate", "--model", "llama-3.1-8b", "--gpu", "H100", "--input-len", "8", "--output-len", "8",
                 "--profile", str(bad))
    assert r.returncode == 2 and "n_embd" in r.stderr and "Traceback" not in r.stderr


def test_vidur_op_names_match_the_reader() -> None:
    from hardware.profiles import VIDUR_OP_NAMES
    assert VIDUR_TO_OP == VIDUR_OP_NAMES and set(VIDUR_TO_OP) <= set(VIDUR_OPS)


def test_cli_calibrate_on_the_example(tmp_path: Path) -> None:
    ex = Path(__file__).resolve().parents[1] / "examples" / "calibration"
    out = tmp_path / "calib.json"
    r = _planner("calibrate", "--vidur", str(ex / "compute"), "--nccl", str(ex / "h100_all_reduce_perf.txt"),
                 "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["what"]: row for row in json.loads(r.stdout)["residuals"]}
    assert rows["op:mlp_up_gate"]["mape"] < 0.05          # 3 % noise in the generator
    assert rows["link:intra-node:all_reduce"]["mape_ge_1mb"] < 0.05
    doc = json.loads(out.read_text())
    assert doc["kind"] == "Calibration" and doc["accelerators"][0]["name"] == "H100-SXM"


def test_comm_tables_are_attributed_by_path(tmp_path: Path) -> None:
    from planner.calibrate import collect_comm_samples
    rows = "gpu,num_nodes,num_gpus_per_node,dtype,size(kb),time(us)\n" + \
        "".join(f"X,1,8,half,{2 ** k},{10 + 2 ** k / 300:.1f}\n" for k in range(4, 16))
    for gpu in ("H100-SXM-80GB", "V100-PCIE-16GB", "H200-SXM-141GB"):
        (tmp_path / "comm" / gpu).mkdir(parents=True)
        (tmp_path / "comm" / gpu / "all_reduce.csv").write_text(rows)
    got = collect_comm_samples([str(tmp_path / "comm")])
    assert set(got) == {"H100-SXM", "H200-SXM"}        # V100 is not in the catalog: skipped
    assert set(collect_comm_samples([str(tmp_path / "comm")], gpu="H200")) == {"H200-SXM"}
    plain = tmp_path / "mine" / "all_reduce.csv"   # APEX names the collective by the file
    plain.parent.mkdir()
    plain.write_text(rows)
    assert set(collect_comm_samples([str(plain)], gpu="A100")) == {"A100-80GB-SXM"}
    assert set(collect_comm_samples([f"L40S={plain}"], gpu="A100")) == {"L40S"}
    with pytest.raises(InputError) as err:
        collect_comm_samples([str(plain)])
    assert err.value.field == "--nccl" and err.value.file == str(plain)


def test_soft_roofline_in_op_time() -> None:
    from costmodels.ops import Op
    from costmodels.roofline import compute_op_time
    flat = EfficiencyCurve.constant(1.0)
    op = Op("x", "gemm", H100.peak_flops("bf16") * 1e-3, H100.hbm_bandwidth_bytes_per_s * 1e-3)  # 1 ms each side
    hard, _ = compute_op_time(op, H100, KindEfficiency(flat, flat, 0.0), "bf16")
    soft, bound = compute_op_time(op, H100, KindEfficiency(flat, flat, 0.0, "calibrated", 2.0), "bf16")
    assert hard == pytest.approx(1e-3) and soft == pytest.approx(2 ** 0.5 * 1e-3) and bound == "compute"
