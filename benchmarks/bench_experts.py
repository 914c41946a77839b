"""MoE expert placement against DeepSeek's EPLB, plus migration and affinity trade-offs.

    python -m benchmarks.bench_experts [--quick]

1. The 12 (Zipf s, configuration) cases of ../shared/data/moe/eplb_zipf_baseline: EPLB's own
   placements (phy2log in the npz) and ours, both scored by the same code (planner.experts
   .evaluate: max/mean GPU and node load, duplicate copies on one GPU, our proven bound);
   EPLB's solve times come from its results.json (2-core CPU), ours are the median of 3 runs.
2. Migration: from our placement for the Zipf 1.0 snapshot to a drifted snapshot (every
   expert's load times a log-normal factor, sigma 0.15, seed 1), experts moved vs balance.
3. Affinity: synthetic routing traces with planted cross-layer structure (tokens follow one of
   8 paths; at each layer a path prefers its own 8 experts); cross-GPU / cross-node transitions
   of a load-only placement vs the affinity pass, and the max/mean load given up.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from benchmarks.common import print_table, shared_data_dir
from planner import experts as ex
from planner.experts import ExpertRequest
from solvers import assignment as asg

CASES = {  # name: (slots, groups, nodes, gpus)
    "hier_g8_n8_gpu32_R288": (288, 8, 8, 32),
    "global_gpu32_R288": (288, None, 8, 32),
    "hier_g8_n8_gpu32_R256": (256, 8, 8, 32),
    "global_gpu64_R320": (320, None, 8, 64),
}


def _solve(w, slots, groups, nodes, gpus):
    bins = asg.Bins.make([slots // gpus] * gpus)
    if groups:
        return asg.solve_hierarchical(w, bins, num_domains=nodes, num_groups=groups,
                                      cpsat_time_s=0.0)
    return asg.solve_flat(w, bins)


def eplb_cases(runs: int = 3) -> list[dict]:
    base = shared_data_dir() / "moe" / "eplb_zipf_baseline"
    ref = {(r["zipf_s"], r["case"]): r for r in json.loads((base / "results.json").read_text())}
    rows = []
    for s in (0.8, 1.0, 1.2):
        z = np.load(base / f"zipf{s}_58x256.npz")
        w = z["weight"].astype(float)
        for case, (slots, groups, nodes, gpus) in CASES.items():
            times, cpu = [], []
            for _ in range(runs):
                t0, c0 = time.perf_counter(), time.process_time()
                sol = _solve(w, slots, groups, nodes, gpus)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            pb = ex.problem_from_arrays(w, gpus=gpus, slots_per_gpu=slots // gpus, nodes=nodes,
                                        groups=groups)
            ours, _ = ex.evaluate(pb, sol.slot_item, sol.bound, sol.domain_bound)
            theirs, their_layers = ex.evaluate(pb, z[f"{case}__phy2log"].astype(np.int64), sol.bound)
            mean = w.sum(1) / gpus
            simple = np.maximum(asg.min_max_share(w, slots, gpus), mean) / mean
            issue_bound = simple if not groups else np.maximum(simple, sol.domain_bound / mean)
            r = ref[(s, case)]
            rows.append({
                "s": s, "case": case,
                "eplb_mean": theirs["max_mean_gpu_load_mean"],
                "ours_mean": ours["max_mean_gpu_load_mean"],
                "eplb_worst": theirs["max_mean_gpu_load_worst"],
                "ours_worst": ours["max_mean_gpu_load_worst"],
                "issue_bound": float(issue_bound.mean()),
                "gap_issue_%": 100 * (ours["max_mean_gpu_load_mean"] / issue_bound.mean() - 1),
                "proven_lb": ours["lower_bound_mean"],
                "gap_lb_%": 100 * (ours["max_mean_gpu_load_mean"] / ours["lower_bound_mean"] - 1),
                "eplb_dup_%": 100 * theirs["duplicate_pairs"] / (58 * gpus),
                "ours_dup": ours["duplicate_pairs"],
                "eplb_node": theirs["max_mean_node_load_mean"],
                "ours_node": ours["max_mean_node_load_mean"],
                "eplb_s": r["seconds"], "ours_s": float(np.median(times)),
                "ours_cpu_s": float(np.median(cpu)),
                # sanity check of the bound on an independent placement: layers where EPLB
                # (duplicates and all) would beat our proven bound; must be 0
                "eplb_under_lb": sum(x["max_mean_gpu_load"] < x["lower_bound"] * (1 - 1e-9)
                                     for x in their_layers),
                # node-level bound (max/mean node load of the best group-to-node map)
                "node_bound": float((sol.domain_bound / mean).mean()) if groups else None,
            })
    return rows


def node_target(rows: list[dict], slack: float = 0.01) -> list[dict]:
    """Issue 5 (hierarchical, spare copies): is "within 1% of the node-level bound" reachable?

    ``proven_floor_above_node_%`` = mean proven bound / mean node bound - 1: when above 1%, no
    placement (ours or anyone's) can meet the target; ``ours_above_proven_%`` is what we leave.
    """
    out = []
    for r in rows:
        if r["node_bound"] is None or CASES[r["case"]][0] <= 256:   # no spare copies (256 experts)
            continue
        floor = 100 * (r["proven_lb"] / r["node_bound"] - 1)
        out.append({"s": r["s"], "case": r["case"], "node_bound": r["node_bound"],
                    "proven_lb": r["proven_lb"], "ours": r["ours_mean"], "eplb": r["eplb_mean"],
                    "proven_floor_above_node_%": floor,
                    "ours_above_proven_%": r["gap_lb_%"],
                    "ours_above_node_%": 100 * (r["ours_mean"] / r["node_bound"] - 1),
                    "target": "unreachable (proven)" if floor > 100 * slack else
                              ("met" if r["ours_mean"] <= r["node_bound"] * (1 + slack) else "open"),
                    "ours_s": r["ours_s"], "eplb_s": r["eplb_s"]})
    return out


def migration(sigma: float = 0.15) -> list[dict]:
    base = shared_data_dir() / "moe" / "eplb_zipf_baseline"
    w = np.load(base / "zipf1.0_58x256.npz")["weight"].astype(float)
    gpus, slots = 32, 288
    bins = asg.Bins.make([slots // gpus] * gpus)
    prev = asg.solve_flat(w, bins).slot_item
    rng = np.random.default_rng(1)
    w2 = w * rng.lognormal(0.0, sigma, size=w.shape)
    fresh = asg.solve_flat(w2, bins).slot_item
    full = asg.align_bins(prev, fresh, bins, 256)
    rows = []
    mean = w2.sum(1) / gpus
    for frac in (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, None, "fresh"):
        budget = None if frac in (None, "fresh") else int(frac * 58 * slots)
        t0 = time.perf_counter()
        if frac == "fresh":
            table = full
        else:
            table, _ = asg.replan(w2, prev, bins, budget, fresh=fresh)
        dt = time.perf_counter() - t0
        r = asg.bin_times(w2, table, bins).max(1) / mean
        rows.append({"budget": {None: "unlimited", "fresh": "fresh plan"}.get(frac, budget),
                     "moved": int(asg.moved_copies(prev, table, bins, 256).sum()),
                     "moved_%_of_slots": 100 * asg.moved_copies(prev, table, bins, 256).sum() / (58 * slots),
                     "max_mean_mean": float(r.mean()), "max_mean_worst": float(r.max()),
                     "duplicates": asg.duplicate_pairs(table, bins), "time_s": dt})
    return rows


def synthetic_traces(layers=12, experts=64, paths=8, topk=4, tokens=4000, p_follow=0.8, seed=3):
    """Pair matrices and loads from synthetic routing: token t follows path c; at layer l the
    path's experts are ``perm_l[c*8:(c+1)*8]``; each of its top-k picks comes from its path's set
    with probability ``p_follow``, else from all experts (Zipf-weighted)."""
    rng = np.random.default_rng(seed)
    per = experts // paths
    perms = [rng.permutation(experts) for _ in range(layers)]
    pop = 1.0 / np.arange(1, experts + 1) ** 0.8
    pop /= pop.sum()
    path_w = rng.dirichlet(np.ones(paths) * 2)
    loads = np.zeros((layers, experts))
    co = np.zeros((layers, experts, experts))
    tr = np.zeros((layers - 1, experts, experts))
    path = rng.choice(paths, size=tokens, p=path_w)
    prev = None
    for l in range(layers):
        own = perms[l].reshape(paths, per)
        picks = np.empty((tokens, topk), dtype=np.int64)
        for t in range(tokens):
            chosen = []
            while len(chosen) < topk:
                e = int(rng.choice(own[path[t]])) if rng.random() < p_follow else \
                    int(rng.choice(experts, p=pop))
                if e not in chosen:
                    chosen.append(e)
            picks[t] = chosen
        np.add.at(loads[l], picks.ravel(), 1)
        a = np.repeat(picks, topk, axis=1)
        b = np.tile(picks, (1, topk))
        m = a != b
        np.add.at(co[l], (a[m], b[m]), 1)
        if prev is not None:
            a = np.repeat(prev, topk, axis=1)
            b = np.tile(picks, (1, topk))
            np.add.at(tr[l - 1], (a.ravel(), b.ravel()), 1.0 / topk ** 2)
        prev = picks
    return loads, tr, co


def affinity() -> list[dict]:
    loads, tr, co = synthetic_traces()
    rows = []
    for slack in (0.0, 0.02, 0.05, 0.1):
        pb = ex.problem_from_arrays(loads, gpus=8, slots_per_gpu=9, nodes=2, transitions=tr,
                                    coactivation=co)
        req = ExpertRequest(gpus=8, nodes=2, slots_per_gpu=9, affinity={"slack": slack})
        t0 = time.perf_counter()
        pl = ex.solve(pb, req)
        dt = time.perf_counter() - t0
        a = pl.affinity
        lo = a["load_only"]
        rows.append({"slack": slack,
                     "xgpu_trans_load_only": lo["cross_gpu_transitions"],
                     "xgpu_trans_affinity": a["cross_gpu_transitions"],
                     "saved_%": 100 * (1 - a["cross_gpu_transitions"] / lo["cross_gpu_transitions"]),
                     "xnode_load_only": lo["cross_node_transitions"],
                     "xnode_affinity": a["cross_node_transitions"],
                     "xgpu_coact_load_only": lo["cross_gpu_coactivation"],
                     "xgpu_coact_affinity": a["cross_gpu_coactivation"],
                     "max_mean": pl.metrics["max_mean_gpu_load_mean"],
                     "max_mean_given_up": a["max_mean_gpu_load_given_up"],
                     "dups": pl.metrics["duplicate_pairs"], "time_s": dt})
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    runs = 1 if "--quick" in argv else 3
    rows = eplb_cases(runs)
    print_table([{k: v for k, v in r.items() if k != "node_bound"} for r in rows],
                "EPLB cases: max/mean GPU load (mean over 58 layers, worst layer), bounds, "
                "duplicates, solve time per 58x256 call")
    print_table(node_target(rows), "Hierarchical with spare copies (issue 5): within 1% of the "
                                   "node-level bound? (means over 58 layers)")
    print_table(migration(), "Migration: Zipf 1.0, 288 slots / 32 GPUs, drifted snapshot "
                             "(log-normal sigma 0.15); budget = copies that may be loaded")
    print_table(affinity(), "Affinity: synthetic traces (12 layers x 64 experts, top-4, 8 planted "
                            "paths), 8 GPUs / 2 nodes x 9 slots")


if __name__ == "__main__":
    main()
