"""Fleet planner benchmarks, side by side with Mélange's published / measured numbers.

Run: ``python -m benchmarks.bench_fleet [melange|scale|traces|replan|disagg|starts|all]`` (default all).

1. Mélange's toy example: expect exactly 3 x A10G + 1 x A100-80GB = $6.70/h.
2. The 4-type 10x10-bucket instance at slice factors 1, 4, 16: $196.19/h, proven optimal, each
   under 2 s (Mélange's own solver: 1.35 s at k=1, no answer after 300 s at k=4 and k=16).
3. Scale: 8 GPU types, 20x20 buckets, 3 models, 24 hourly periods, quotas and spot; solve time
   against problem size.  Target: proven optimal or gap <= 0.5% within 30 s on 2 cores.
   Synthetic capacity tables (``bucket``, ``option``) and the planner's own path from a request
   (``cost-model``: capacities from the serving cost model; ``capacity_s`` is their build).
4. Real traces (Azure LLM inference 2023, code and conversation): Llama-3.1-8B and -70B under
   TPOT 50 ms / TTFT 1 s at p90 across the catalog's GPUs, from the cost models: savings against
   the best single GPU type, and the per-period plan against provisioning for the peak.  With
   on-demand prices alone the periods are independent; a third table adds reserved and spot
   prices (the scale benchmark's recipe), which tie them together.
5. Re-planning (``replan``): the same traces cut into one-minute windows, each planned as it
   comes, AIBrix's loop.  Re-optimising every window from scratch (what AIBrix's optimizer does)
   against planning each window against the plan in place (``--previous``) with a cost
   allowance: GPUs moved over the hour against the extra $/h.
6. Disaggregation (``disagg``): the traces' fleets with prefill/decode bundles offered against
   plain replicas only, at TPOT 50 and 30 ms: bundles on one GPU type, and across types
   (prefill on one, decode on another), on the NVIDIA catalog with and without B200.
7. Replica starts (``starts``): ``scaling.start_cost_s`` priced against free on the traces in
   one-minute periods: starts, running $/h and total.
8. Simulated SLOs (``simulate``): the traces' plans replayed in the iteration-level serving
   simulator (Poisson arrivals, the trace's length mix, continuous batching with chunked
   prefill): the worst simulated p90 against each target, and the cost of the plan re-made
   until every pool meets them (``planner fleet --simulate``).
"""
from __future__ import annotations

import copy
import json
import sys
import time

import numpy as np

from benchmarks.common import print_table, shared_data_dir

# ------------------------------------------------------------------------------ 1 + 2: Mélange


def bench_melange() -> None:
    from planner.fleet import plan_melange

    data = shared_data_dir() / "fleet_bench"
    rows = []
    expected = {"melange_toy_example.json": (6.70, "1.0 s"),
                "synth_4gpu_10x10_sf1.json": (196.19, "1.35 s"),
                "synth_4gpu_10x10_sf4.json": (196.19, "no answer after 300 s"),
                "synth_4gpu_10x10_sf16.json": (196.19, "no answer after 300 s")}
    for name, (want, theirs) in expected.items():
        cfg = json.loads((data / name).read_text())
        start = time.perf_counter()
        plan = plan_melange(data / name, time_limit_s=30)
        wall = time.perf_counter() - start
        mix = {k: v for k, v in plan["melange_result"].items() if k != "cost" and v}
        rows.append({"instance": name, "k": cfg.get("slice_factor", 1),
                     "cost_$/h": round(plan["cost_per_hour"], 4), "expected_$/h": want,
                     "match": abs(plan["cost_per_hour"] - want) < 1e-6,
                     "status": plan["solver"]["status"], "gap": plan["solver"]["gap"],
                     "solve_s": round(plan["solver"]["time_s"], 3), "plan_wall_s": round(wall, 2),
                     "mix": " ".join(f"{v}x{k}" for k, v in sorted(mix.items())),
                     "melange_solver": theirs})
    print_table(rows, "Mélange inputs: ours (aggregated MILP, HiGHS) vs the known optimum and "
                      "Mélange's own solver time (plan_wall_s includes the single-GPU baselines)")


# ------------------------------------------------------------------------------------ 3: scale

#: (name, $/GPU-h on demand, speed factor, memory GB)
SCALE_GPUS = [("L4", 0.80, 0.35, 24), ("A10G", 1.01, 0.45, 24), ("L40S", 1.86, 0.9, 48),
              ("A100-40GB", 1.84, 1.1, 40), ("A100-80GB", 3.67, 1.6, 80),
              ("H100", 4.92, 3.0, 80), ("H200", 5.41, 3.6, 141), ("MI300X", 3.00, 2.6, 192)]
#: (name, speed scale, weight GB, total peak req/s per unit of rate_scale)
SCALE_MODELS = [("8b", 1.0, 16, 300.0), ("70b", 0.12, 140, 80.0), ("8x7b", 0.25, 94, 120.0)]
#: GPUs per type available (at rate_scale 1)
SCALE_QUOTAS = {"L4": 256, "A10G": 256, "L40S": 128, "A100-40GB": 128, "A100-80GB": 128,
                "H100": 64, "H200": 48, "MI300X": 128}


def scale_instance(n_buckets: int = 20, n_periods: int = 24, n_models: int = 3,
                   rate_scale: float = 1.0, seed: int = 0, routing: str = "auto",
                   noise: str = "bucket"):
    """A synthetic planning instance in the spirit of fleet_bench's generator: per-bucket
    capacity 100 / 1.25^i / 1.2^j (scaled to a 10 x 10 span whatever the grid), times a GPU speed
    factor, a model factor and a random factor; two TP shapes per (model, GPU) where the
    weights fit, the larger one 1.5-2.3x faster per replica depending on the bucket (more KV room
    helps long requests); diurnal load; reserved (0.6x), spot (0.35x, 90% capacity, at most 30%
    of GPUs) and quotas."""
    from solvers.binpack import CoverOption, CoverProblem

    rng = np.random.default_rng(seed)
    models = SCALE_MODELS[:n_models]
    B = n_buckets * n_buckets
    D = B * len(models)
    ii, jj = np.meshgrid(np.arange(n_buckets), np.arange(n_buckets), indexing="ij")
    base = 20.0 / 1.25 ** (ii * 10 / n_buckets) / 1.2 ** (jj * 10 / n_buckets)
    opts, cols = [], []
    for mi, (mname, mscale, mem_gb, _) in enumerate(models):
        for gname, price, speed, gmem in SCALE_GPUS:
            fits = [tp for tp in (1, 2, 4, 8) if gmem * tp * 0.9 >= mem_gb * 1.2]
            if not fits:
                continue
            t0 = fits[0]
            # noise "bucket": an independent factor per bucket (fleet_bench's recipe: every
            # bucket has its own best GPU); "option": one factor per option (smooth tables)
            shape = base.shape if noise == "bucket" else (1, 1)
            cap0 = base * speed * mscale * t0 * rng.uniform(1.0, 1.3, shape)
            for tp, cap in ((t0, cap0), (2 * t0, cap0 * 2 * rng.uniform(0.75, 1.15, shape))):
                if tp > 8:
                    continue
                col = np.zeros(D)
                col[mi * B:(mi + 1) * B] = cap.ravel()
                cols.append(col)
                opts.append(CoverOption(f"{mname}/{gname}/tp{tp}", gname, tp,
                                        {"on_demand": price * tp, "reserved": 0.6 * price * tp,
                                         "spot": 0.35 * price * tp}))
    cap = np.stack(cols, axis=1)
    curve = 0.55 + 0.45 * np.sin(np.linspace(0, 2 * np.pi, n_periods, endpoint=False) - 1.2)
    if n_periods == 1:
        curve = np.ones(1)
    rates = []
    for _, _, _, peak in models:
        shares = rng.dirichlet(np.full(B, 0.5))
        rates.append(np.outer(shares * peak * rate_scale, curve))
    rates = np.concatenate(rates, axis=0)
    quotas = {g: int(q * rate_scale) for g, q in SCALE_QUOTAS.items()}
    if routing == "auto":  # the planner's rule (planner.fleet.AUTO_SHARED_COLUMNS)
        columns = int((cap > 0).sum(axis=1) @ (rates > 0).sum(axis=1))
        routing = "shared" if columns > 600_000 and n_periods > 1 else "per_period"
    return CoverProblem(opts, cap, rates, quotas=quotas, spot_max_fraction=0.3,
                        spot_capacity_factor=0.9, routing=routing)


#: the cost-model flavour: (model alias, peak req/s at rate x1, (mu, sigma) of log input and of
#: log output tokens of its bucket histogram)
COSTMODEL_MODELS = [("llama-3.1-8b", 3000.0, (6.0, 0.9, 5.0, 0.8)),
                    ("llama-3.1-70b", 600.0, (6.5, 1.0, 5.5, 0.9)),
                    ("mixtral-8x7b", 1200.0, (7.0, 1.1, 4.5, 0.9))]
#: its GPUs (catalog names and prices; reserved 0.6x, spot 0.35x) and quotas at rate x1
COSTMODEL_QUOTAS = {"L4": 2560, "A10G": 2560, "L40S": 1280, "A100-40GB": 1280, "A100-80GB": 1280,
                    "H100-SXM": 640, "H200-SXM": 480, "MI300X": 1280}


def costmodel_request(n_buckets: int = 20, n_periods: int = 24, seed: int = 0):
    """The scale instance as a user would give it to ``planner fleet``: three catalog models,
    a bucket histogram per model (log-normal in input and output length, times a random factor
    in [0.5, 1.5]) over geometric edges (inputs 32..8,192 tokens, outputs 8..4,096), a diurnal
    rate series of ``n_periods`` hourly periods, TTFT 1 s / TPOT 50 ms at p90, eight catalog GPU
    types with quotas, reserved and spot prices; capacities from the serving cost model."""
    from hardware.catalog import get_accelerator
    from planner.fleet import FleetRequest

    rng = np.random.default_rng(seed)
    ie = [0] + [int(x) for x in np.geomspace(32, 8192, n_buckets)]
    oe = [0] + [int(x) for x in np.geomspace(8, 4096, n_buckets)]
    mid_in = (np.array(ie[:-1]) + np.array(ie[1:])) / 2
    mid_out = (np.array(oe[:-1]) + np.array(oe[1:])) / 2
    curve = 0.55 + 0.45 * np.sin(np.linspace(0, 2 * np.pi, n_periods, endpoint=False) - 1.2)
    models = []
    for name, peak, (mu_in, s_in, mu_out, s_out) in COSTMODEL_MODELS:
        shares = np.outer(np.exp(-(np.log(mid_in) - mu_in) ** 2 / (2 * s_in ** 2)),
                          np.exp(-(np.log(mid_out) - mu_out) ** 2 / (2 * s_out ** 2)))
        shares *= rng.uniform(0.5, 1.5, shares.shape)
        models.append({"name": name, "model": name, "slo": {"ttft_s": 1.0, "tpot_s": 0.05,
                                                           "percentile": 90},
                       "workload": {"histogram": {"input_edges": ie, "output_edges": oe,
                                                  "shares": (shares / shares.sum()).tolist()},
                                    "normalise_shares": True, "period_s": 3600,
                                    "rate_rps": [float(r) for r in peak * curve]}})
    gpus = [{"name": g, "quota": q, "reserved_price_per_hour": 0.6 * get_accelerator(g).price_per_hour,
             "spot_price_per_hour": 0.35 * get_accelerator(g).price_per_hour}
            for g, q in COSTMODEL_QUOTAS.items()]
    return FleetRequest.model_validate({"models": models, "gpus": gpus,
                                        "spot": {"max_fraction": 0.3, "capacity_factor": 0.9}})


def costmodel_instance(fp, rate_scale: float, routing: str = "auto"):
    """The planner's cover problem of ``fp`` (:func:`costmodel_request`, built) with rates
    scaled by ``rate_scale`` and quotas by it where it is above 1 (a TP 8 replica of a 70B
    model must stay within them)."""
    from planner.fleet.problem import cover_problem

    problem, _ = cover_problem(fp, rates=fp.rates * rate_scale, routing=routing)
    problem.quotas = {g: int(q * max(rate_scale, 1.0)) for g, q in problem.quotas.items()}
    return problem


#: instance flavours: (capacity noise, rate scale).  "bucket": an independent random factor per
#: (bucket, option), fleet_bench's recipe (every bucket has its own best GPU: the hard case);
#: "option": one factor per option, so a model's capacity rows are proportional across GPUs
#: (the presolve merges them into one demand per model: what is left is the integer mix).
#: Rate x1 peaks at ~500 GPUs, x10 at ~4,000.  "cost-model": :func:`costmodel_request` through
#: the planner's own path (capacities from the serving cost model, its pruning and routing
#: rule); x1 peaks at ~660 GPUs, x0.1 is a small fleet of ~30 (where whole replicas, not the
#: mix, decide the cost).
SCALE_FLAVOURS = [("bucket", 1.0), ("bucket", 10.0), ("option", 1.0), ("option", 10.0),
                  ("cost-model", 0.1), ("cost-model", 1.0), ("cost-model", 10.0)]
#: (buckets per side, periods) as the problem grows (3 models each)
SCALE_SIZES = [(5, 1), (10, 1), (10, 6), (20, 6), (20, 24)]


def bench_scale(time_limit_s: float = 30.0, noise: str | None = None) -> None:
    """Solve time and gap against problem size, per flavour; the 20 x 20 x 24 instance also
    with shared routing (the formulation the planner used for it before the per-period
    decomposition)."""
    from solvers.binpack import CoverInfeasible, dominated_options, parallel_workers, solve_cover

    from planner.fleet import build_problem

    rows, built = [], {}
    for flavour, scale in SCALE_FLAVOURS:
        if noise is not None and flavour != noise:
            continue
        runs = [(nb, T, "auto") for nb, T in SCALE_SIZES] + [(20, 24, "shared")]
        for nb, T, routing in runs:
            capacity_s = None
            if flavour == "cost-model":
                if (nb, T) not in built:  # capacities do not depend on the rate scale
                    start = time.perf_counter()
                    built[nb, T] = (build_problem(costmodel_request(nb, T)),
                                    time.perf_counter() - start)
                fp, capacity_s = built[nb, T]
                problem = costmodel_instance(fp, scale, routing)
            else:
                problem = scale_instance(nb, T, 3, rate_scale=scale, noise=flavour,
                                         routing=routing)
            D, J, _ = problem.shape
            columns = int((problem.capacity > 0).sum(axis=1) @ (problem.rates > 0).sum(axis=1))
            start = time.perf_counter()
            try:
                sol = solve_cover(problem, time_limit_s=time_limit_s, gap_rel=0.005,
                                  workers=parallel_workers(None))
            except CoverInfeasible as exc:  # reported as measured, the other rows still run
                print(f"{flavour} x{scale:g} {nb}x{nb}x{T} {routing}: {exc.result.status}",
                      file=sys.stderr, flush=True)
                continue
            wall = time.perf_counter() - start
            r = sol.result
            print(f"{flavour} x{scale:g} {nb}x{nb}x{T} {routing}: {sol.cost_per_hour:.2f} "
                  f"gap {r.gap}", file=sys.stderr, flush=True)
            rows.append({"noise": flavour, "rate_x": scale, "buckets": f"{nb}x{nb}",
                         "periods": T, "demands": D, "options": J,
                         "dominated": len(dominated_options(problem)),
                         "routing": problem.routing, "columns": columns,
                         "cost_$/h": round(sol.cost_per_hour, 2),
                         "bound_$/h": None if r.bound is None else round(r.bound, 2),
                         "gap_%": None if r.gap is None else round(100 * r.gap, 3),
                         "target_met": r.gap is not None and r.gap <= 0.005 + 1e-12,
                         "status": r.status, "method": sol.method, "solve_s": round(wall, 2),
                         "capacity_s": None if capacity_s is None else round(capacity_s, 1),
                         "gpus_peak": int(max((sol.counts(t) * [o.units for o in problem.options]).sum()
                                              for t in range(T)))})
    print_table(rows, f"Scale: solve time and gap against problem size (HiGHS, stop at gap 0.5%, "
                      f"{parallel_workers(None)} worker processes for per-period solves, "
                      f"limit {time_limit_s:g} s, 2 cores shared; target: gap <= 0.5% in 30 s)")


# --------------------------------------------------------------------------------- 4: traces

TRACE_GPUS = ["L4", "A10G", "L40S", "A100-40GB", "A100-80GB", "H100-PCIE", "H100-SXM", "H200-SXM",
              "B200", "MI300X"]


NVIDIA_GPUS = [g for g in TRACE_GPUS if g != "MI300X"]


def _trace_request(trace: str, model: str, period_s: float, rate_scale: float, gpus: list[dict],
                   tpot_s: float = 0.05, disaggregation: str = "off", **extra):
    """Fleet request for an Azure 2023 trace ("code" or "conv"): TPOT ``tpot_s`` / TTFT 1 s at
    p90, a 5 x 4 bucket grid; ``extra``: further top-level sections (spot, solver)."""
    from planner.fleet import FleetRequest

    data = shared_data_dir() / "azure-llm-inference-2023"
    return FleetRequest.model_validate({
        "models": [{"name": model, "model": model, "disaggregation": disaggregation,
                    "workload": {"trace": str(data / f"AzureLLMInferenceTrace_{trace}.csv"),
                                 "period_s": period_s, "rate_scale": rate_scale,
                                 "input_edges": [0, 512, 1024, 2048, 4096, 8192],
                                 "output_edges": [0, 32, 128, 512, 2048]},
                    "slo": {"ttft_s": 1.0, "tpot_s": tpot_s, "percentile": 90}}],
        "gpus": gpus, **extra})


def bench_traces(period_s: float = 300.0, rate_scale: float = 10.0, gpus: list[str] | None = None,
                 label: str = "all catalog GPUs", price_classes: bool = False) -> None:
    """``price_classes``: add reserved (0.6x) and spot (0.35x, 90% capacity, at most 30% of
    GPUs) prices to every type, the scale benchmark's recipe: the reserved baseline then ties
    the periods together (with on-demand prices alone they are independent problems)."""
    gpus = gpus or TRACE_GPUS
    from hardware.catalog import get_accelerator
    from planner.fleet import build_problem, plan_from_problem

    def gpu_entry(name: str) -> dict:
        if not price_classes:
            return {"name": name}
        od = get_accelerator(name).price_per_hour
        return {"name": name, "reserved_price_per_hour": 0.6 * od,
                "spot_price_per_hour": 0.35 * od}

    rows = []
    for trace in ("code", "conv"):
        for model in ("llama-3.1-8b", "llama-3.1-70b"):
            req = _trace_request(trace, model, period_s, rate_scale, [gpu_entry(g) for g in gpus],
                                 spot={"max_fraction": 0.3, "capacity_factor": 0.9} if price_classes else {},
                                 solver={"time_limit_s": 30})
            start = time.perf_counter()
            fp = build_problem(req)
            cap_s = time.perf_counter() - start
            plan = plan_from_problem(fp)
            wall = time.perf_counter() - start
            base = plan["baseline_single_gpu"]
            peak = plan.get("peak_provisioning") or {}
            mix = ", ".join(f"{p['count']}x{p['gpu']}/tp{p['shape']['tp']}" for p in plan["pools"])
            rows.append({"trace": trace, "model": model, "periods": len(fp.period_weights),
                         "mean_rps": round(float(fp.rates.sum(axis=0).mean()), 2),
                         "cost_$/h": round(plan["cost_per_hour"], 2),
                         "$/Mtok": round(plan["cost_per_million_tokens"], 3),
                         "mix_at_peak": mix,
                         "best_single": base["gpu"],
                         "single_$/h": None if base["cost_per_hour"] is None else round(base["cost_per_hour"], 2),
                         "single_status": base.get("status"),
                         "save_vs_single_%": None if base["savings_fraction"] is None else round(100 * base["savings_fraction"], 1) + 0.0,
                         "peak_prov_$/h": None if not peak.get("feasible") else round(peak["cost_per_hour"], 2),
                         "save_vs_peak_%": None if not peak.get("feasible") else round(100 * peak["savings_fraction"], 1),
                         "status": plan["solver"]["status"], "gap": plan["solver"]["gap"],
                         "capacity_s": round(cap_s, 1), "total_s": round(wall, 1)})
    prices = ("catalog on-demand prices with reserved 0.6x and spot 0.35x (spot at most 30% of the GPUs the load needs)"
              if price_classes else "catalog on-demand prices")
    print_table(rows, f"Azure 2023 traces x{rate_scale:g} rate, {period_s:g}-s periods, TPOT 50 ms / "
                      f"TTFT 1 s at p90, cost-model capacity, {prices}, {label}")


def bench_simulate(period_s: float = 300.0, rate_scale: float = 10.0) -> None:
    """The trace fleets' plans replayed in the iteration-level serving simulator
    (``planner fleet --simulate``): how far the analytical capacity model's plan is from its
    SLOs under Poisson arrivals and the trace's own length mix, and what a plan whose every pool
    meets them in simulation costs (capacities of missing pools scaled, re-planned)."""
    from planner.fleet import build_problem, plan_from_problem
    from planner.fleet.simulate import plan_with_simulation, simulate_plan

    rows = []
    for trace in ("code", "conv"):
        for model in ("llama-3.1-8b", "llama-3.1-70b"):
            req = _trace_request(trace, model, period_s, rate_scale, [{"name": g} for g in TRACE_GPUS],
                                 solver={"time_limit_s": 30})
            fp = build_problem(req)
            plan = plan_from_problem(fp)
            start = time.perf_counter()
            sim = simulate_plan(fp, plan)
            sim_s = time.perf_counter() - start

            def worst(section: dict, metric: str) -> float:
                return max((float("inf") if t["simulated_s"] is None else t["simulated_s"]) / t["slo_s"]
                           for g in section["groups"] for t in g["targets"] if t["metric"] == f"{metric}_s")

            start = time.perf_counter()
            checked = plan_with_simulation(copy.deepcopy(fp))  # it corrects the capacities in place
            loop_s = time.perf_counter() - start
            cs = checked["simulation"]
            base = checked["baseline_single_gpu"]
            rows.append({"trace": trace, "model": model,
                         "model_$/h": round(plan["cost_per_hour"], 2),
                         "groups_missing": f"{sum(not g['meets_slo'] for g in sim['groups'])}/{len(sim['groups'])}",
                         "worst_ttft/slo": round(worst(sim, "ttft"), 2),
                         "worst_tpot/slo": round(worst(sim, "tpot"), 2),
                         "sim_s": round(sim_s, 1),
                         "checked_$/h": round(checked["cost_per_hour"], 2),
                         "status": checked["solver"]["status"],
                         "plans": cs["rounds"], "meets": cs["meets_slo"],
                         "checked_worst_tpot/slo": round(worst(cs, "tpot"), 2),
                         "single_$/h": None if base["cost_per_hour"] is None else round(base["cost_per_hour"], 2),
                         "save_vs_single_%": None if base["savings_fraction"] is None
                         else round(100 * base["savings_fraction"], 1) + 0.0,
                         "loop_s": round(loop_s, 1)})
    print_table(rows, f"Azure 2023 traces x{rate_scale:g}, {period_s:g}-s periods, TPOT 50 ms / TTFT 1 s "
                      "at p90, all catalog GPUs: the cost-model plan replayed in the simulator "
                      "(300 s per period, seed 0), and the plan re-made until every pool meets its "
                      "SLOs there (planner fleet --simulate)")


# ------------------------------------------------------------------------------- 5: re-planning


def _window(fp, t: int):
    """The fleet problem of period ``t`` alone (one live window)."""
    from dataclasses import replace

    loads = [replace(ld, rates_rps=ld.rates_rps[[min(t, len(ld.rates_rps) - 1)]],
                     shares=ld.shares[[min(t, len(ld.shares) - 1)]]) for ld in fp.loads]
    return replace(fp, rates=fp.rates[:, [t]], period_weights=np.ones(1), loads=loads)


def _gpus_moved(a: dict, b: dict) -> int:
    """GPUs added plus removed between two plans' pools (per pool and price class)."""
    count = lambda plan: {p["id"]: p["count"] * p["gpus_per_replica"] for p in plan["pools"]}  # noqa: E731
    ca, cb = count(a), count(b)
    return sum(abs(ca.get(k, 0) - cb.get(k, 0)) for k in set(ca) | set(cb))


def bench_replan(window_s: float = 60.0, rate_scale: float = 10.0,
                 allowances: tuple = (0.0, 0.02, 0.05)) -> None:
    """Plan every window of the traces in turn: from scratch (AIBrix's loop: the cheapest plan
    for each window, whatever ran before) or against the plan in place within an allowance."""
    from planner.fleet import build_problem, plan_from_problem

    rows = []
    for trace in ("code", "conv"):
        for model in ("llama-3.1-8b", "llama-3.1-70b"):
            req = _trace_request(trace, model, window_s, rate_scale,
                                 [{"name": g} for g in NVIDIA_GPUS],
                                 solver={"time_limit_s": 10, "baseline": False})
            fp = build_problem(req)
            windows = [_window(fp, t) for t in range(fp.rates.shape[1])]
            start = time.perf_counter()
            cheapest = [plan_from_problem(w) for w in windows]
            scratch_s = time.perf_counter() - start
            policies = [("from scratch (AIBrix's loop)", cheapest, scratch_s)]
            for allowance in allowances:
                start = time.perf_counter()
                plans = [cheapest[0]]
                for w in windows[1:]:
                    plans.append(plan_from_problem(w, previous=plans[-1], keep_within=allowance))
                policies.append((f"against the plan in place, within {100 * allowance:g}%",
                                 plans, time.perf_counter() - start))
            for name, plans, wall in policies:
                moved = [_gpus_moved(a, b) for a, b in zip(plans, plans[1:])]
                extra = [p["cost_per_hour"] / c["cost_per_hour"] - 1 if c["cost_per_hour"] > 0
                         else 0.0 for p, c in zip(plans, cheapest)]
                rows.append({"trace": trace, "model": model, "windows": len(plans), "policy": name,
                             "gpus_moved": sum(moved),
                             "windows_with_moves": sum(1 for m in moved if m),
                             "mean_$/h": round(float(np.mean([p["cost_per_hour"] for p in plans])), 3),
                             "mean_extra_%": round(100 * float(np.mean(extra)), 2),
                             "max_extra_%": round(100 * float(np.max(extra)), 2),
                             # the re-plan MILP's status where there is one, else the cost's
                             "proven_windows": sum(
                                 1 for p in plans
                                 if (p.get("replan") or p)["solver"]["status"] == "optimal"),
                             "plan_s_per_window": round(wall / len(plans), 3)})
    print_table(rows, f"Re-planning one-minute windows of the Azure 2023 traces x{rate_scale:g}, "
                      f"NVIDIA GPUs, on-demand prices, TPOT 50 ms / TTFT 1 s at p90: GPUs moved over "
                      f"the hour against the extra cost over each window's cheapest plan")


# ------------------------------------------------------------------- 6: disaggregated bundles


#: NVIDIA types without B200 (which, at catalog prices, is the cheapest for prefill and decode
#: alike, leaving nothing to pair): where splitting the phases across types can pay
NO_B200_GPUS = ["L40S", "A100-80GB", "H100-PCIE", "H100-SXM", "H200-SXM"]


def bench_disagg(period_s: float = 300.0, rate_scale: float = 10.0) -> None:
    """The traces' fleets with prefill/decode bundles offered against plain replicas only, at
    TPOT 50 and 30 ms (TTFT 1 s, p90), on-demand prices: bundles on one GPU type
    (``disaggregation: same_gpu``) and also across types (``auto``: prefill on one type, decode
    on another), on the NVIDIA catalog and on it without B200."""
    from planner.fleet import build_problem, plan_from_problem

    rows = []
    for label, gpus in (("NVIDIA", NVIDIA_GPUS), ("NVIDIA w/o B200", NO_B200_GPUS)):
        for trace in ("code", "conv"):
            for model in ("llama-3.1-8b", "llama-3.1-70b"):
                for tpot in (0.05, 0.03):
                    costs = {}
                    for dis in ("off", "same_gpu", "auto"):
                        req = _trace_request(trace, model, period_s, rate_scale,
                                             [{"name": g} for g in gpus], tpot_s=tpot,
                                             disaggregation=dis,
                                             solver={"time_limit_s": 30, "baseline": False})
                        start = time.perf_counter()
                        fp = build_problem(req)
                        plan = plan_from_problem(fp)
                        costs[dis] = (plan, time.perf_counter() - start, len(fp.options))
                    off, same, auto = (costs[k][0] for k in ("off", "same_gpu", "auto"))
                    roles = sorted({p["group"].split("/", 1)[1] for p in auto["pools"]
                                    if p.get("role")})
                    rows.append({
                        "gpus": label, "trace": trace, "model": model, "tpot_ms": round(1000 * tpot),
                        "replicas_$/h": round(off["cost_per_hour"], 2),
                        "same_gpu_$/h": round(same["cost_per_hour"], 2),
                        "cross_$/h": round(auto["cost_per_hour"], 2),
                        "status": "/".join(costs[k][0]["solver"]["status"][:3]
                                           for k in ("off", "same_gpu", "auto")),
                        "gap_auto": auto["solver"]["gap"],
                        "same_%": round(100 * (1 - same["cost_per_hour"] / off["cost_per_hour"]), 1) + 0.0,
                        "cross_%": round(100 * (1 - auto["cost_per_hour"] / off["cost_per_hour"]), 1) + 0.0,
                        "bundles_used (auto)": ", ".join(roles) or "-",
                        "options": "/".join(str(costs[k][2]) for k in ("off", "same_gpu", "auto")),
                        "plan_s": "/".join(f"{costs[k][1]:.1f}" for k in ("off", "same_gpu", "auto"))})
    print_table(rows, f"Prefill/decode bundles chosen jointly with the mix: Azure 2023 traces "
                      f"x{rate_scale:g}, {period_s:g}-s periods, on-demand prices, TTFT 1 s at "
                      f"p90, analytical capacities; saving against plain replicas, bundles on one "
                      f"GPU type (same_gpu) and across types (cross)")


def _replica_starts(plan: dict) -> int:
    """Replica starts over a plan's horizon (taken to repeat), from its pools' counts."""
    from solvers.binpack import starts_of

    counts = np.array([p["counts_by_period"] for p in plan["pools"] if p.get("counts_by_period")])
    return int(starts_of(counts, np.zeros_like(counts)).sum()) if counts.size else 0


def bench_starts(period_s: float = 60.0, rate_scale: float = 10.0,
                 start_costs_s: tuple = (0.0, 120.0, 300.0)) -> None:
    """Replica starts priced (``scaling.start_cost_s``) against free: the traces in one-minute
    periods, NVIDIA GPUs, on-demand prices.  Each start of a replica costs that many seconds of
    its price; the running $/h, the starts and the total (what the MILP minimises) per
    setting; the free plan's starts are also priced at each setting, for comparison."""
    from planner.fleet import build_problem, plan_from_problem

    rows = []
    for trace in ("code", "conv"):
        for model in ("llama-3.1-8b", "llama-3.1-70b"):
            free = None
            for cost_s in start_costs_s:
                req = _trace_request(trace, model, period_s, rate_scale,
                                     [{"name": g} for g in NVIDIA_GPUS],
                                     scaling={"start_cost_s": cost_s},
                                     solver={"time_limit_s": 30, "baseline": False})
                start = time.perf_counter()
                fp = build_problem(req)
                plan = plan_from_problem(fp)
                wall = time.perf_counter() - start
                free = plan if cost_s == 0 else free
                horizon_s = period_s * len(fp.period_weights)
                running = sum(p["cost_per_hour"] for p in plan["pools"])
                free_total = free["cost_per_hour"] + sum(
                    p["price_per_replica_hour"] * cost_s / horizon_s * _replica_starts({"pools": [p]})
                    for p in free["pools"])
                rows.append({"trace": trace, "model": model, "periods": len(fp.period_weights),
                             "start_cost_s": cost_s, "running_$/h": round(running, 3),
                             "replica_starts": _replica_starts(plan),
                             "total_$/h": round(plan["cost_per_hour"], 3),
                             "free_plan_priced_$/h": round(free_total, 3),
                             "status": plan["solver"]["status"], "gap": plan["solver"]["gap"],
                             "plan_s": round(wall, 1)})
    print_table(rows, f"Replica starts priced: Azure 2023 traces x{rate_scale:g}, {period_s:g}-s "
                      f"periods (the hour taken to repeat), NVIDIA GPUs, on-demand prices, TPOT "
                      f"50 ms / TTFT 1 s at p90; free_plan_priced = the plan that ignores starts, "
                      f"its starts priced at the row's start cost")


def main(argv: list[str]) -> None:
    what = argv[0] if argv else "all"
    if what in ("melange", "all"):
        bench_melange()
    if what in ("scale", "all"):
        bench_scale(noise=argv[1] if len(argv) > 1 else None)
    if what in ("starts", "all"):
        bench_starts()
    if what in ("traces", "all"):
        bench_traces()
        bench_traces(gpus=NVIDIA_GPUS, label="NVIDIA only")
        bench_traces(gpus=NVIDIA_GPUS, label="NVIDIA only", price_classes=True)
    if what in ("simulate", "all"):
        bench_simulate()
    if what in ("replan", "all"):
        bench_replan()
    if what in ("disagg", "all"):
        bench_disagg()


if __name__ == "__main__":
    main(sys.argv[1:])
