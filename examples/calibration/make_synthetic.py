"""Regenerate the synthetic example tables in this folder (fixed seed; not measured data).

    python examples/calibration/make_synthetic.py

* ``compute/h100/example/llama-3.1-8b-shape/mlp.csv``: Vidur-format per-op times for a model with
  Llama-3.1-8B's shape, generated from the (soft, p = 2) roofline with fixed "true"
  efficiencies plus 3 % multiplicative noise;
* ``h100_all_reduce_perf.txt``: nccl-tests-format all-reduce output on 8 GPUs from an
  alpha-beta link (10 us launch, 450 GB/s x 0.8 at large sizes) plus 2 % noise.
"""
from __future__ import annotations

import random
from pathlib import Path

from costmodels.calibration import OpBuilder
from costmodels.comm import LinkModel, collective_time_s
from costmodels.roofline import DeviceEfficiency, KindEfficiency, op_time
from hardware.accelerator import EfficiencyCurve
from hardware.catalog import get_accelerator
from hardware.profiles import VIDUR_OP_NAMES, ModelShape, OpSample

HERE = Path(__file__).resolve().parent
OPS = ("emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
       "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
SHAPE = ModelShape(n_head=32, n_kv_head=8, n_embd=4096, n_expanded_embd=14336, vocab_size=128256, gated_mlp=True)
TRUE = KindEfficiency(EfficiencyCurve(sizes=(1e6, 1e9, 1e12), efficiencies=(0.05, 0.5, 0.72)),
                      EfficiencyCurve(sizes=(1e4, 1e6, 1e9), efficiencies=(0.04, 0.45, 0.82)), 6e-6, "calibrated",
                      2.0)


def main() -> None:
    rng = random.Random(0)
    h100 = get_accelerator("H100-SXM")
    eff = DeviceEfficiency({k: TRUE for k in ("gemm", "attention", "elementwise")})
    builder = OpBuilder()
    cols = [f"time_stats.{o}.{s}" for o in OPS for s in ("min", "max", "mean", "median", "std")]
    cols += ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp", "num_tokens",
             "num_tensor_parallel_workers"]
    lines = [",".join(cols)]
    for tp in (1, 2, 4, 8):
        for tokens in (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096):
            row = []
            for o in OPS:
                if o in VIDUR_OP_NAMES:
                    op = builder.op(OpSample("h100", "x", SHAPE, VIDUR_OP_NAMES[o], o, tokens, tp, 0.0))
                    ms = op_time(op, h100, eff=eff).instance_s * 1e3 * rng.uniform(0.97, 1.03)
                else:
                    ms = 0.002 + 1e-6 * tokens
                row += [f"{0.95 * ms:.5f}", f"{1.1 * ms:.5f}", f"{ms:.5f}", f"{ms:.5f}", f"{0.02 * ms:.5f}"]
            row += [str(SHAPE.n_head), str(SHAPE.n_kv_head), str(SHAPE.n_embd), str(SHAPE.n_expanded_embd),
                    str(SHAPE.vocab_size), "True", str(tokens), str(tp)]
            lines.append(",".join(row))
    out = HERE / "compute" / "h100" / "example" / "llama-3.1-8b-shape" / "mlp.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")

    link = LinkModel(450e9, 2e-6, 0.8, 10e-6)
    text = ["# nThread 1 nGpus 8 minBytes 1024 maxBytes 1073741824 step: 4(factor) warmup iters: 5 iters: 20",
            "# Synthetic example (planner examples/calibration/make_synthetic.py), not a measurement",
            "#", "# Using devices"]
    text += [f"#  Rank  {r} Group  0 Pid  {1000 + r} on    node0 device  {r} [0x00] NVIDIA H100 80GB HBM3"
             for r in range(8)]
    text += ["#", "#                                                              out-of-place                       "
             "in-place",
             "#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   "
             "busbw #wrong",
             "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  "
             "(GB/s)"]
    size = 1024
    while size <= 1 << 30:
        t_us = collective_time_s("all_reduce", size, 8, link) * 1e6 * rng.uniform(0.98, 1.02)
        alg = size / t_us / 1e3
        text.append(f"{size:>12} {size // 2:>13}      half     sum      -1 {t_us:8.2f} {alg:7.2f} {alg * 1.75:7.2f}"
                    f"      0 {t_us:8.2f} {alg:7.2f} {alg * 1.75:7.2f}      0")
        size *= 4
    text += ["# Out of bounds values : 0 OK", ""]
    (HERE / "h100_all_reduce_perf.txt").write_text("\n".join(text))


if __name__ == "__main__":
    main()
