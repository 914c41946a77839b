"""Cost-model accuracy and speed against measured tables.

    python -m benchmarks.bench_costmodel            # everything (~1-2 minutes on 2 cores)
    python -m benchmarks.bench_costmodel ops comm validation speed   # pick sections

1. ops: per-op times against ../shared/data/vidur (A100, H100; TP 1/2/4/8; 1-4096 tokens):
   MAPE of the analytical layer (catalog priors) and of the calibrated layer under
   leave-one-model-out (fit on the other models of the same GPU, predict this one).
2. comm: all-reduce against the measured NCCL tables (Vidur h100_dgx / a100_dgx, APEX, distca
   nccl-tests, LLMCompass 4xA100): analytical vs calibrated, messages >= 1 MB; plus a held-out
   check (fit on every other message size, predict the rest).
3. validation: predicted vs measured for ../shared/data/validation (GEMM on A100, all-reduce on
   4xA100 NVLink predicted from the Vidur A100 calibration, Megatron iteration times).
4. speed: `planner estimate` wall time for a 70B model, import time, library time per call.
5. capacity: the serving capacity under p90 SLOs (``max_rate_under_slo``) against the
   iteration-level simulator, per (model, GPU, request shape); needs no shared data.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import print_table, shared_data_dir
from costmodels.calibration import (OP_KIND, KindEfficiency, OpBuilder, fit_device_ops, fit_link, op_arrays,
                                    predict_comm, predict_times, tier_of)
from costmodels.comm import LinkModel
from costmodels.roofline import default_efficiency
from hardware.catalog import default_node_for, get_accelerator
from hardware.profiles import read_comm_csv, read_gemm_csv, read_vidur_profiles

SKUS = {"a100": "A100-80GB-SXM", "h100": "H100-SXM"}
PROJ_MLP = ("qkv_proj", "o_proj", "mlp_up_gate", "mlp_down")
OPS = PROJ_MLP + ("mlp_act", "input_norm", "post_attn_norm")


def _mape(pred: np.ndarray, meas: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - meas) / meas)) if len(meas) else float("nan")


def _prior(accel, kind: str = "gemm") -> KindEfficiency:
    """The analytical layer exactly as the planner uses it (catalog priors per op kind)."""
    return default_efficiency(accel).by_kind[kind]


# ---------------------------------------------------------------------------------------------
def bench_ops(data: Path) -> dict:
    samples = read_vidur_profiles(data / "vidur/profiling/compute")
    builder = OpBuilder()
    summary_rows, model_rows, out = [], [], {}
    for sku, name in SKUS.items():
        accel = get_accelerator(name)
        arr = op_arrays([s for s in samples if s.accelerator == sku], builder)
        test_mask = (arr.tokens >= 1) & (arr.tokens <= 4096) & np.isin(arr.tp, (1, 2, 4, 8))
        models = sorted(set(arr.model.tolist()))
        lomo_pred = np.full(len(arr), np.nan)
        t0 = time.perf_counter()
        for m in models:
            train = arr.subset(arr.model != m)
            dev = fit_device_ops(train, accel, kinds=False)  # the per-op fits are what is scored
            for op in OPS:
                mask = (arr.model == m) & (arr.op == op)
                if op in dev.op_fits and mask.any():
                    lomo_pred[mask] = predict_times(arr.subset(mask), accel, dev.op_fits[op].efficiency,
                                                    kind=OP_KIND[op])
        fit_s = time.perf_counter() - t0
        ana_pred = np.zeros(len(arr))
        for op in OPS:
            mask = arr.op == op
            ana_pred[mask] = predict_times(arr.subset(mask), accel, _prior(accel, OP_KIND[op]), kind=OP_KIND[op])
        for op in OPS + ("proj+MLP", "all"):
            sel = test_mask & (np.isin(arr.op, PROJ_MLP) if op == "proj+MLP" else
                               np.ones(len(arr), bool) if op == "all" else arr.op == op)
            a = _mape(ana_pred[sel], arr.time_s[sel])
            c = _mape(lomo_pred[sel], arr.time_s[sel])
            out[(name, op)] = (a, c)
            summary_rows.append({"gpu": name, "op": op, "samples": int(sel.sum()), "analytical MAPE %": 100 * a,
                                 "calibrated LOMO MAPE %": 100 * c,
                                 "calibrated p90 err %": 100 * float(np.percentile(
                                     np.abs(lomo_pred[sel] - arr.time_s[sel]) / arr.time_s[sel], 90))})
        for m in models:
            sel = test_mask & (arr.model == m) & np.isin(arr.op, PROJ_MLP)
            model_rows.append({"gpu": name, "held-out model": m, "samples": int(sel.sum()),
                               "analytical %": 100 * _mape(ana_pred[sel], arr.time_s[sel]),
                               "calibrated LOMO %": 100 * _mape(lomo_pred[sel], arr.time_s[sel])})
        print(f"[{name}] {len(models)} models, leave-one-model-out fits took {fit_s:.1f} s")
    print_table(summary_rows, "Per-op MAPE vs Vidur (1-4096 tokens, TP 1/2/4/8): analytical priors vs "
                              "calibrated (leave-one-model-out)")
    print_table(model_rows, "Projection + MLP GEMMs (qkv, o, up/gate, down) per held-out model")
    return out


# ---------------------------------------------------------------------------------------------
COMM_TABLES = [
    ("Vidur h100_dgx", "H100-SXM", "vidur/profiling/network/h100_dgx/all_reduce.csv"),
    ("Vidur a100_dgx", "A100-80GB-SXM", "vidur/profiling/network/a100_dgx/all_reduce.csv"),
    ("APEX H100-SXM", "H100-SXM", "apex_plus/comm/H100-SXM-80GB/all_reduce.csv"),
    ("APEX H200-SXM", "H200-SXM", "apex_plus/comm/H200-SXM-141GB/all_reduce.csv"),
    ("distca nccl-tests H100", "H100-SXM", "sp-profiles/distca_nccl_perf_H100.csv"),
    ("LLMCompass 4xA100", "A100-80GB-SXM", "validation/a100x4_nvlink_allreduce_measured.csv"),
    ("Vidur h100_pairwise_nvlink*", "H100-SXM", "vidur/profiling/network/h100_pairwise_nvlink/all_reduce.csv"),
    ("Vidur a100_pairwise_nvlink*", "A100-80GB-SXM", "vidur/profiling/network/a100_pairwise_nvlink/all_reduce.csv"),
]


def _catalog_link(accel, tier: str) -> LinkModel:
    return LinkModel.from_link(accel.scale_up if tier == "intra-node" else default_node_for(accel).scale_out)


def bench_comm(data: Path) -> list[dict]:
    rows = []
    for label, gpu, rel in COMM_TABLES:
        accel = get_accelerator(gpu)
        samples = [s for s in read_comm_csv(data / rel) if s.collective == "all_reduce"]
        for tier in ("intra-node", "inter-node"):
            for n in sorted({s.num_gpus for s in samples if tier_of(s) == tier}):
                group = sorted((s for s in samples if tier_of(s) == tier and s.num_gpus == n),
                               key=lambda s: s.message_bytes)
                big = [s for s in group if s.message_bytes >= 1 << 20]
                if len(group) < 8 or not big:
                    continue
                meas = np.array([s.time_s for s in big])
                prior = _catalog_link(accel, tier)
                fit = fit_link(group, prior.bandwidth_bytes_per_s, tier=tier, group_size=n, prior=prior)
                # held-out: fit on every other distinct size, predict the others
                sizes = sorted({s.message_bytes for s in group})
                train_sizes = set(sizes[::2])
                train = [s for s in group if s.message_bytes in train_sizes]
                test = [s for s in big if s.message_bytes not in train_sizes]
                held = fit_link(train, prior.bandwidth_bytes_per_s, tier=tier, group_size=n, prior=prior) \
                    if len(train) >= 8 else None
                rows.append({
                    "table": label, "gpu": gpu, "tier": tier, "ranks": n, ">=1MB samples": len(big),
                    "analytical MAPE %": 100 * _mape(predict_comm(big, prior), meas),
                    "calibrated MAPE %": 100 * _mape(predict_comm(big, fit.link), meas),
                    "calibrated max err %": 100 * float(np.max(np.abs(predict_comm(big, fit.link) - meas) / meas)),
                    "held-out sizes MAPE %": 100 * _mape(predict_comm(test, held.link),
                                                         np.array([s.time_s for s in test])) if test and held else None,
                })
    print_table(rows, "All-reduce, messages >= 1 MB: analytical (catalog link) vs calibrated (per tier and "
                      "group size); * = pairwise-NVLink boxes that are not catalog nodes")
    return rows


# ---------------------------------------------------------------------------------------------
def bench_validation(data: Path) -> None:
    from costmodels.calibration import calibrate
    from costmodels.ops import Op
    from costmodels.roofline import compute_op_time

    a100 = get_accelerator("A100-80GB-SXM")
    vidur_a100 = [s for s in read_vidur_profiles(data / "vidur/profiling/compute") if s.accelerator == "a100"]
    comm_a100 = read_comm_csv(data / "vidur/profiling/network/a100_dgx/all_reduce.csv")
    calib = calibrate({a100.name: vidur_a100}, {a100.name: comm_a100})
    gemm_cal = calib.devices[a100.name].kind_fits["gemm"].efficiency
    rows = []
    for g in read_gemm_csv(data / "validation/a100_mi210_gemm_measured.csv"):
        if g.gpu != "A100":
            continue
        op = Op("gemm", "gemm", g.flops, 2.0 * (g.m * g.k + g.k * g.n + g.m * g.n), gemm_mnk=(g.m, g.n, g.k))
        ta, _ = compute_op_time(op, a100, _prior(a100), "fp16")
        tc, _ = compute_op_time(op, a100, gemm_cal, "fp16")
        rows.append({"M": g.m, "N": g.n, "K": g.k, "measured ms": g.time_s * 1e3, "analytical ms": ta * 1e3,
                     "calibrated ms": tc * 1e3, "err analytical %": 100 * (ta / g.time_s - 1),
                     "err calibrated %": 100 * (tc / g.time_s - 1)})
    print_table(rows, "GEMM on A100 (LLMCompass measured, fp16) vs predicted; calibrated = the pooled GEMM curve "
                      "fitted to Vidur A100 (MI210: no catalog entry, skipped)")
    ea = [abs(r["err analytical %"]) for r in rows]
    ec = [abs(r["err calibrated %"]) for r in rows]
    print(f"GEMM A100: analytical MAPE {statistics.mean(ea):.1f}%, calibrated MAPE {statistics.mean(ec):.1f}%")

    link_cal = calib.link_for(a100.name, "intra-node", "all_reduce", 4)
    prior = _catalog_link(a100, "intra-node")
    meas = read_comm_csv(data / "validation/a100x4_nvlink_allreduce_measured.csv")
    rows = []
    for s in meas:
        if s.message_bytes < 1024 or int(np.log2(s.message_bytes)) % 2:
            continue
        pa = float(predict_comm([s], prior)[0])
        pc = float(predict_comm([s], link_cal)[0])
        rows.append({"bytes": int(s.message_bytes), "measured us": s.time_s * 1e6, "analytical us": pa * 1e6,
                     "calibrated (Vidur a100_dgx) us": pc * 1e6, "err analytical %": 100 * (pa / s.time_s - 1),
                     "err calibrated %": 100 * (pc / s.time_s - 1)})
    print_table(rows, "All-reduce on 4xA100 NVLink (LLMCompass measured) vs predicted; the calibrated link comes "
                      "from Vidur's a100_dgx table (another machine: a cross-source check)")
    big = [r for r in rows if r["bytes"] >= 1 << 20]
    ma = statistics.mean(abs(r["err analytical %"]) for r in big)
    mc = statistics.mean(abs(r["err calibrated %"]) for r in big)
    print(f"4xA100 all-reduce >= 1 MB: analytical MAPE {ma:.1f}%, calibrated-from-Vidur MAPE {mc:.1f}%")
    bench_megatron(data, a100)


MEGATRON = {  # Korthikanti et al. 2022 Table 3 (A100 80GB, Selene), seq 2048, vocab 51200
    "megatron-22B": dict(heads=64, hidden=6144, layers=48, tp=8, pp=1, batch=4, micro=4),
    "gpt3-175B": dict(heads=96, hidden=12288, layers=96, tp=8, pp=8, batch=64, micro=1),
    "turing-530B": dict(heads=128, hidden=20480, layers=105, tp=8, pp=35, batch=280, micro=1),
    "megatron-1T": dict(heads=160, hidden=25600, layers=128, tp=8, pp=64, batch=512, micro=1),
}


def bench_megatron(data: Path, a100) -> None:
    """Megatron iteration time: per micro-batch compute from costmodels.training plus the TP
    collectives (sequence parallel: all-gather + reduce-scatter of s x h per norm, i.e. the
    volume of 2 all-reduces per layer forward, 2 backward, 2 more with full recompute), scaled
    by the pipeline schedule ((m + pp - 1) micro-batch slots, 1F1B without interleaving)."""
    try:
        from costmodels import training
    except ImportError:
        print("Megatron: costmodels/training.py not available - not done")
        return
    import csv

    from costmodels.comm import collective_time_s
    from costmodels.model import ModelSpec
    ref = {}
    with open(data / "validation/megatron_seqpar_reference.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["metric"] == "iteration_time":
                ref[(r["model"], r["mode"])] = float(r["measured_value"])
    seq = 2048
    link = LinkModel.from_link(a100.scale_up)
    rows = []
    for name, c in MEGATRON.items():
        spec = ModelSpec(name=name, family="gpt", hidden_size=c["hidden"], num_layers=c["layers"],
                         num_attention_heads=c["heads"], num_kv_heads=c["heads"], head_dim=c["hidden"] // c["heads"],
                         intermediate_size=4 * c["hidden"], vocab_size=51200, gated_mlp=False)
        for mode, recompute in (("full_recompute", "full"), ("seq+selective", "selective")):
            per_seq = training.compute_time_s(spec, a100, seq, c["tp"], recompute=recompute)
            compute_micro = per_seq * c["micro"] / c["pp"]
            passes = 3 if recompute == "full" else 2
            msg = seq * c["micro"] * c["hidden"] * 2.0
            comm_micro = 2 * passes * (c["layers"] / c["pp"]) * collective_time_s("all_reduce", msg, c["tp"], link)
            m = c["batch"] // c["micro"]
            t = (m + c["pp"] - 1) * (compute_micro + comm_micro)
            meas = ref.get((name, mode))
            rows.append({"model": name, "mode": mode, "TPxPP": f"{c['tp']}x{c['pp']}", "measured s": meas,
                         "predicted s": t, "err %": None if meas is None else 100 * (t / meas - 1)})
    print_table(rows, "Megatron-LM iteration time (Korthikanti et al. 2022, A100) vs costmodels.training + TP "
                      "all-reduce + 1F1B bubble (analytical priors)")


# ---------------------------------------------------------------------------------------------
def bench_speed() -> None:
    cmd = [sys.executable, "-m", "planner.cli", "estimate", "--model", "llama-3.1-70b", "--gpu", "H100",
           "--tp", "4", "--input-len", "2048", "--output-len", "256", "--batch", "16", "--json"]
    exe = Path(sys.executable).with_name("planner")
    if exe.exists():
        cmd = [str(exe), *cmd[3:]]
    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        if r.returncode:
            print("estimate failed:", r.stderr.strip())
            return
    bares = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], capture_output=True)
        bares.append(time.perf_counter() - t0)
    bare = min(bares)
    lib_rows = []
    for mod in ("networkx", "numpy", "pydantic", "typer", "rich.table", "yaml", "scipy.optimize",
                "hardware.catalog", "costmodels.serving", "planner.cli"):
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True)
            ts.append(time.perf_counter() - t0)
        lib_rows.append({"python -c 'import X'": mod, "ms (min of 3, incl. interpreter)": 1e3 * min(ts),
                         "ms over bare interpreter": 1e3 * (min(ts) - bare)})
    imp = subprocess.run([sys.executable, "-X", "importtime", "-c", "import planner.cli"], capture_output=True,
                         text=True).stderr.splitlines()
    cum = []
    for line in imp:
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            cum.append((int(parts[1]), parts[2].rstrip()))
    top = sorted(cum, reverse=True)[:12]
    from costmodels.model import load_model
    from costmodels.ops import Iteration, Parallel
    from costmodels.serving import decode_step_s, iteration_time, make_context, prefill_time_s
    spec = load_model("llama-3.1-70b")
    ctx = make_context(spec, get_accelerator("H100-SXM"), Parallel(tp=4))
    n = 2000
    t0 = time.perf_counter()
    for i in range(n):
        decode_step_s(ctx, 1 + i % 64, 2048.0)
    per_decode = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n):
        iteration_time(ctx, Iteration.prefill(1, 128 + i % 512))
    per_iter = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(200):
        make_context(spec, get_accelerator("H100-SXM"), Parallel(tp=4))
    per_ctx = (time.perf_counter() - t0) / 200
    prefill_time_s(ctx, 1, 1024)
    from planner.estimates import run_estimate
    kw = dict(model="llama-3.1-70b", gpu="H100", tp=4, input_len=2048, output_len=256, batch=16)
    t0 = time.perf_counter()
    run_estimate(**kw).to_dict()
    first_est = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(50):
        run_estimate(**kw).to_dict()
    per_est = (time.perf_counter() - t0) / 50
    print_table([
        {"what": "planner estimate llama-3.1-70b (whole CLI, --json), median of 5",
         "ms": 1e3 * statistics.median(walls)},
        {"what": "  min of 5", "ms": 1e3 * min(walls)},
        {"what": "bare python -c pass (interpreter start)", "ms": 1e3 * bare},
        {"what": "run_estimate (70B, whole estimate incl. memory + per-op tables), first call in process",
         "ms": 1e3 * first_est},
        {"what": "run_estimate, later calls (config and catalog cached)", "ms": 1e3 * per_est},
        {"what": "library decode_step_s per call (context built)", "ms": 1e3 * per_decode},
        {"what": "library iteration_time (prefill) per call", "ms": 1e3 * per_iter},
        {"what": "make_context per call", "ms": 1e3 * per_ctx},
    ], "Speed")
    print_table(lib_rows, "Import cost of the libraries on the estimate path (each in a fresh interpreter)")
    print_table([{"cumulative import us": c, "module": m} for c, m in top],
                "python -X importtime -c 'import planner.cli' (largest cumulative)")


#: (model, GPU, TP) x request shapes (input, output tokens) of the capacity check
CAPACITY_ENGINES = (("llama-3.1-8b", "H100-SXM", 1), ("llama-3.1-8b", "A10G", 2), ("llama-3.1-8b", "L4", 2),
                    ("llama-3.1-70b", "H100-SXM", 4), ("llama-3.1-70b", "MI300X", 1))
CAPACITY_SHAPES = ((128, 32), (512, 256), (868, 554), (2048, 128), (4096, 32), (1024, 1024), (2048, 13),
                   (6000, 20))


def _simulated_capacity(engine, input_len: int, output_len: int, guess: float, seed: int = 0) -> float:
    """Largest Poisson rate (req/s) at which the iteration-level simulator's p90 TTFT <= 1 s and
    p90 TPOT <= 50 ms for one request shape (bisection, 12 steps on [0, 3 x guess])."""
    from costmodels.batching import Trace, percentile, simulate

    rng = np.random.default_rng(seed)

    def meets(rate: float) -> bool:
        n = int(max(600, rate * 300))
        arrival = np.cumsum(rng.exponential(1.0 / rate, n))
        res = simulate(Trace(arrival, np.full(n, input_len), np.full(n, output_len)), engine.cost,
                       engine.limits)
        kept = arrival > 0.1 * arrival[-1]
        tpot = percentile(res.tpot_s[kept], 90) if output_len > 1 else 0.0
        return percentile(res.ttft_s[kept], 90) <= 1.0 and tpot <= 0.05

    lo, hi = 0.0, 3.0 * max(guess, 0.01)
    for _ in range(12):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if meets(mid) else (lo, mid)
    return lo


def bench_capacity() -> None:
    """The capacity model (``max_rate_under_slo``, p90 TTFT 1 s / TPOT 50 ms) against the
    iteration-level simulator it abstracts (``costmodels.batching.simulate``, the same op-level
    iteration times, Poisson arrivals, vLLM-like chunked prefill), per request shape."""
    from costmodels.model import load_model
    from costmodels.serving import max_rate_under_slo
    from hardware.topology import Cluster
    from planner.parallel import Pool, SearchSpec, Shape, _default_node, build_shape_model

    rows = []
    for name, gpu, tp in CAPACITY_ENGINES:
        model, accel = load_model(name), get_accelerator(gpu)
        node = _default_node(accel)
        engine = build_shape_model(model, Pool(accel, node, Cluster(node, 1, accel.scale_up), 1.0),
                                   Shape(accel.name, tp, 1), dtype="bf16", kv_dtype=None,
                                   search=SearchSpec(), phase="both")
        for input_len, output_len in CAPACITY_SHAPES:
            start = time.perf_counter()
            cap = max_rate_under_slo(model, accel, tp=tp, input_len=input_len, output_len=output_len,
                                     ttft_slo_s=1.0, tpot_slo_s=0.05, percentile=90)
            model_ms = 1e3 * (time.perf_counter() - start)
            simulated = _simulated_capacity(engine, input_len, output_len, cap.rate_rps)
            rows.append({"model": name, "gpu": f"{gpu} tp{tp}", "in": input_len, "out": output_len,
                         "simulated_rps": round(simulated, 3), "model_rps": round(cap.rate_rps, 3),
                         "model/simulated": round(cap.rate_rps / simulated, 2) if simulated > 0 else None,
                         "binding": cap.binding, "model_ms": round(model_ms, 1)})
    ratios = [r["model/simulated"] for r in rows if r["model/simulated"]]
    print_table(rows, "Capacity at p90 TTFT 1 s / TPOT 50 ms: the model against the simulator "
                      f"(ratio min {min(ratios):.2f}, median {statistics.median(ratios):.2f}, "
                      f"max {max(ratios):.2f})")


def main(argv: list[str]) -> None:
    sections = set(argv) or {"ops", "comm", "validation", "speed", "capacity"}
    if "capacity" in sections:
        bench_capacity()
    if sections <= {"capacity"}:
        return
    data = shared_data_dir()
    if "ops" in sections:
        bench_ops(data)
    if "comm" in sections:
        bench_comm(data)
    if "validation" in sections:
        bench_validation(data)
    if "speed" in sections:
        bench_speed()


if __name__ == "__main__":
    main(sys.argv[1:])
