"""Sequence-parallel planner against FlexSP and baselines (run: python -m benchmarks.bench_seqpar).

1. FlexSP's own terms (visible.json, 64 GPUs, gpt-7b, 30 GB, Wikipedia <= 32K, 512 sequences):
   modelled step time per iteration vs FlexSP, its homogeneous (adaptive) and static baselines;
   planning time; our lower bound (the issue's, and our refined one) and the gap to it.
2. Our own cost models on the same batches, 64 H100 (8 per node), Llama-2-7B (the gpt-7b shape):
   Ulysses-only vs ring-only vs hybrid vs adaptive (all types), step time and tokens/s.
3. Scale: 1,024 GPUs, 1,024 .. 8,192 Wikipedia sequences per step (FlexSP preset): planning time
   as the batch grows.
4. Offline planning on the three saved length distributions (Wikipedia, ProLong, WLB-LLM):
   best static strategy vs the adaptive planner.

Options: ``--quick`` (fewer batches in part 4), ``--parts 1,2`` (run some parts only).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.common import print_table, shared_data_dir

SETTING = "a_64gpu_gpt7b_30gb_wiki32k_gbs512"


def _visible():
    path = shared_data_dir() / "seqlen" / "flexsp_bench" / "visible.json"
    return json.loads(path.read_text())["settings"][SETTING]


def part1_flexsp() -> None:
    from planner import seqpar as sp

    setting = _visible()
    preset = sp.FlexSPPreset("7b", 64, 30, 32)
    single = sp.FlexSPPreset("7b", 64, 30, 32, allow_single=True)
    rows, extra = [], []
    for it in setting["iterations"]:
        lengths = it["lengths"]
        t0 = time.perf_counter()
        plan = sp.plan_step(lengths, 64, cost_preset=preset, time_limit_s=0.8)
        wall = time.perf_counter() - t0
        mbs = [[(g.size, g.sequences) for g in mb.groups] for mb in plan.micro_batches]
        ev = sp.flexsp_step_time_ms(preset, lengths, mbs)
        assert ev["valid"], ev["violations"]
        fx = it["flexsp"]["step_time_ms"]
        lb = plan.solver.simple_lower_bound_s * 1e3
        base = sp.homogeneous_baselines(lengths, preset, exclude_sizes=[32])
        rows.append({
            "iter": it["iteration"], "ours ms": ev["step_time_ms"], "FlexSP ms": fx,
            "vs FlexSP": f"{100 * (ev['step_time_ms'] / fx - 1):+.2f}%",
            "bound ms": lb, "our gap": f"{100 * (ev['step_time_ms'] / lb - 1):.2f}%",
            "FlexSP gap": f"{100 * (fx / lb - 1):.2f}%",
            "plan s": wall, "FlexSP s": it["flexsp"]["search_time_s"],
            "# mb": len(plan.micro_batches), "method": plan.solver.method,
            "adaptive ms (FlexSP / ours)": f"{it['adaptive']['step_time_ms']:.1f} / "
                                           f"{base['best']['step_time_s'] * 1e3:.1f}",
            "static64 ms": it["static"]["step_time_ms"],
        })
        plan1 = sp.plan_step(lengths, 64, cost_preset=single, time_limit_s=0.8)
        extra.append({"iter": it["iteration"], "ours ms (groups of 1 allowed)": plan1.step_time_s * 1e3,
                      "its bound ms": plan1.solver.simple_lower_bound_s * 1e3,
                      "gap": f"{100 * plan1.solver.gap:.2f}%",
                      "refined bound ms (FlexSP rules)": plan.solver.lower_bound_s * 1e3})
    print_table(rows, "1. FlexSP preset on visible.json (modelled ms; plan time in wall s)")
    gaps = [float(r["our gap"].rstrip("%")) for r in rows]
    print(f"mean gap to the bound: {np.mean(gaps):.2f}% (FlexSP: "
          f"{np.mean([float(r['FlexSP gap'].rstrip('%')) for r in rows]):.2f}%); "
          f"max plan time {max(r['plan s'] for r in rows):.3f} s")
    print_table(extra, "1b. Variant beside it: groups of one allowed (not a FlexSP rule)")


def part2_own() -> None:
    from planner import seqpar as sp

    setting = _visible()
    sets = {"ulysses": ("ulysses",), "ring": ("ring",), "hybrid": ("hybrid",),
            "adaptive": ("ulysses", "ring", "hybrid")}
    presets = {name: sp.OwnPreset("llama-2-7b", num_gpus=64, gpus_per_node=8, group_types=t)
               for name, t in sets.items()}
    rows = []
    for it in setting["iterations"]:
        row = {"iter": it["iteration"], "tokens": int(sum(it["lengths"]))}
        for name, preset in presets.items():
            t0 = time.perf_counter()
            plan = sp.plan_step(it["lengths"], (64, 8), cost_preset=preset, time_limit_s=0.8)
            row[f"{name} s"] = plan.step_time_s
            row[f"{name} tok/s/GPU"] = plan.tokens_per_s_per_gpu
            row[f"{name} plan s"] = time.perf_counter() - t0
        full = presets["adaptive"]
        best_static = None
        for k, kind in enumerate(full.kinds):
            st = sp.static_plan(it["lengths"], full, k)
            if st and (best_static is None or st["step_time_s"] < best_static[1]):
                best_static = (kind.label, st["step_time_s"])
        row["best static"] = f"{best_static[0]} {best_static[1]:.3f} s"
        rows.append(row)
    print_table(rows, "2. Own cost model (Llama-2-7B, 64 x H100, 8 per node, ZeRO-3, selective "
                      "recompute): per-step planner with each group-type set")


def part3_scale(max_seqs: int = 8192) -> None:
    from planner import seqpar as sp

    raw = np.loadtxt(shared_data_dir() / "seqlen" / "flexsp_wikipedia_seqlens.txt", dtype=np.int64)
    rows = []
    n = 512
    while n <= max_seqs:
        batch = sp.flexsp_batches(raw, n, 32, [0])[0]
        t0 = time.perf_counter()
        plan = sp.plan_step(batch, 1024, cost_preset="flexsp", model_size="7b", memory_gb=30,
                            seq_limit_k=32, time_limit_s=4.0)
        wall = time.perf_counter() - t0
        rows.append({"sequences": n, "tokens": int(batch.sum()), "# mb": len(plan.micro_batches),
                     "groups": sum(len(mb.groups) for mb in plan.micro_batches),
                     "step ms": plan.step_time_s * 1e3,
                     "bound ms (issue / refined)": f"{plan.solver.simple_lower_bound_s * 1e3:.1f} / "
                                                   f"{plan.lower_bound_s * 1e3:.1f}",
                     "gap (refined)": f"{100 * plan.solver.gap:.2f}%", "method": plan.solver.method,
                     "plan s": wall})
        n *= 2
    print_table(rows, "3. Scale: 1,024 GPUs, FlexSP preset (7b, 30 GB, Wikipedia <= 32K), "
                      "planning time as the batch grows (limit 5 s)")


def part4_offline(quick: bool) -> None:
    from planner import seqpar as sp

    data = shared_data_dir() / "seqlen"
    dists = {
        "wikipedia": np.loadtxt(data / "flexsp_wikipedia_seqlens.txt", dtype=np.int64),
        "prolong": np.asarray(json.loads((data / "distca_dist_prolong.json").read_text()), dtype=np.int64),
        "wlbllm": np.asarray(json.loads((data / "distca_dist_wlbllm.json").read_text()), dtype=np.int64),
    }
    batches = 2 if quick else 4
    rows = []
    for name, dist in dists.items():
        t0 = time.perf_counter()
        body = sp.plan_offline(dist, (64, 8), "llama-2-7b", batch_size=512, num_batches=batches,
                               seed=0, time_limit_s=0.8, source=name)
        strat = {s["name"]: s for s in body["strategies"]}
        best = strat.get(body["best_static"]) if body["best_static"] else None
        ad = strat["adaptive"]
        rows.append({
            "distribution": name, "median": body["distribution"]["median"],
            "p99": body["distribution"]["p99"], "capped at": body["distribution"]["capped_at"],
            "tokens/step": body["batches"]["mean_tokens"],
            "best static": body["best_static"], "static s": best["step_time_s"] if best else None,
            "adaptive s": ad["step_time_s"],
            "ulysses/ring/hybrid-only s": "/".join(
                f"{strat[k]['step_time_s']:.3f}" if strat.get(k) and strat[k]["step_time_s"] else "-"
                for k in ("adaptive-ulysses", "adaptive-ring", "adaptive-hybrid")),
            "adaptive gain": None if body["adaptive_gain_vs_best_static"] is None
            else f"{100 * body['adaptive_gain_vs_best_static']:.1f}%",
            "tok/s/GPU (adaptive)": ad["tokens_per_s_per_gpu"], "choice": body["recommendation"]["choice"],
            "wall s": time.perf_counter() - t0,
        })
    print_table(rows, f"4. Offline plans, Llama-2-7B on 64 x H100, 512 sequences per step, "
                      f"{batches} sampled batches (seed 0): static vs adaptive")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--parts", default="1,2,3,4")
    args = ap.parse_args(argv)
    parts = {int(x) for x in args.parts.split(",")}
    if 1 in parts:
        part1_flexsp()
    if 2 in parts:
        part2_own()
    if 3 in parts:
        part3_scale()
    if 4 in parts:
        part4_offline(args.quick)


if __name__ == "__main__":
    main()
