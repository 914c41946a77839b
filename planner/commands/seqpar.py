"""``planner seqpar step|plan``: sequence-parallel groups per training step, and offline plans.

``step`` plans one step's batch (``kind: StepPlan``); ``plan`` scores static strategies
against the adaptive per-step planner over batches sampled from a length distribution
(``kind: SequencePlan``) and recommends one with Megatron-LM / DeepSpeed arguments.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:
    import numpy as np

from hardware.errors import InputError
from planner.commands.common import echo_json, print_table, require_finite, working, write_output

_PRESET_HELP = "Cost model: 'own' (costmodels/training.py) or 'flexsp' (FlexSP's, exactly)."


def register(app: typer.Typer) -> None:
    sp = typer.Typer(help="Sequence-parallel planning for variable-length training.",
                     no_args_is_help=True)
    sp.command("step")(step)
    sp.command("plan")(plan)
    app.add_typer(sp, name="seqpar")


# ----------------------------------------------------------------------------------------------
# inputs shared by both commands


def _types(value: str) -> tuple[str, ...]:
    from planner.seqpar import GROUP_TYPES
    out = tuple(t.strip().lower() for t in value.split(",") if t.strip())
    bad = [t for t in out if t not in GROUP_TYPES]
    if bad or not out:
        raise InputError(f"unknown group type '{bad[0] if bad else value}'", field="--group-types",
                         expected="a comma list of " + ", ".join(GROUP_TYPES))
    return out


def _sizes(value: Optional[str]) -> Optional[list[int]]:
    if not value:
        return None
    out = []
    for tok in value.split(","):
        try:
            out.append(int(tok))
        except ValueError:
            raise InputError(f"'{tok}' is not an integer", field="--sizes",
                             expected="a comma list of group sizes, e.g. 2,4,8") from None
    return out


def _cluster(gpus: Optional[int], gpus_per_node: Optional[int], cluster_file: Optional[Path]
             ) -> tuple[int, int, dict[str, Any]]:
    """(gpus, gpus per node, extra settings from the cluster file: gpu, memory_gb)."""
    extra: dict[str, Any] = {}
    if cluster_file is not None:
        from planner.plan import read_structured
        data = read_structured(cluster_file, what="cluster file")
        if not isinstance(data, dict):
            raise InputError("cluster file is not a mapping", file=str(cluster_file),
                             expected="gpus, gpus_per_node[, gpu, memory_gb]")
        known = {"gpus", "num_gpus", "gpus_per_node", "gpu", "accelerator", "memory_gb"}
        for key in data:
            if key not in known:
                raise InputError(f"unknown key '{key}'", file=str(cluster_file), field=key,
                                 expected=", ".join(sorted(known)))
        if gpus is None:
            gpus = data.get("gpus", data.get("num_gpus"))
        if gpus_per_node is None:
            gpus_per_node = data.get("gpus_per_node")
        if data.get("gpu") or data.get("accelerator"):
            extra["accelerator"] = data.get("gpu") or data.get("accelerator")
        if data.get("memory_gb"):
            extra["memory_gb"] = data["memory_gb"]
        where = str(cluster_file)
    else:
        where = None
    for name, v in (("gpus", gpus), ("gpus_per_node", 8 if gpus_per_node is None else gpus_per_node)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"{name} is {v!r}", file=where, field=f"--{name.replace('_', '-')}",
                             expected="a positive integer")
    return int(gpus), int(8 if gpus_per_node is None else gpus_per_node), extra


def _preset_kw(cost_preset: str, model: Optional[str], gpu: str, model_size: str,
               memory_gb: Optional[float], seq_limit_k: int, group_types: str,
               sizes: Optional[str], zero_stage: int, recompute: str, allow_single: bool,
               extra: dict[str, Any]) -> dict[str, Any]:
    if cost_preset == "flexsp":
        return {"model_size": model_size, "memory_gb": memory_gb or extra.get("memory_gb") or 30.0,
                "seq_limit_k": seq_limit_k, "allow_single": allow_single}
    if cost_preset == "own":
        if not model:
            raise InputError("the own cost preset needs a model", field="--model",
                             expected="a model name (planner catalog models) or a config.json path")
        return {"accelerator": extra.get("accelerator", gpu), "group_types": _types(group_types),
                "memory_gb": memory_gb or extra.get("memory_gb"), "zero_stage": zero_stage,
                "recompute": recompute, "sizes": _sizes(sizes)}
    raise InputError(f"unknown cost preset '{cost_preset}'", field="--cost-preset",
                     expected="own | flexsp")


def read_histogram(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A length histogram as (values, weights).

    Accepted CSV headers: ``length,count`` (or ``weight`` / ``fraction``), or binned
    ``bin_lo_exclusive,bin_hi_inclusive,num_seqs`` (``frac_seqs`` also accepted); each bin is
    spread over 16 log-spaced lengths inside it.  YAML / JSON: ``{lengths: [...], counts: [...]}``.
    """
    import numpy as np
    import csv

    if not path.exists():
        raise InputError("histogram file not found", file=str(path))
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        from planner.plan import read_structured
        data = read_structured(path, what="histogram file")
        if not isinstance(data, dict) or "lengths" not in data or "counts" not in data:
            raise InputError("histogram needs 'lengths' and 'counts' lists", file=str(path),
                             expected="{lengths: [...], counts: [...]}")
        vals, cnts = data["lengths"], data["counts"]
        if not isinstance(vals, list) or not isinstance(cnts, list) or len(vals) != len(cnts):
            raise InputError("'lengths' and 'counts' must be lists of equal length", file=str(path))
        rows = list(zip(vals, cnts))
        return _hist_arrays(rows, path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows_raw = list(reader)
    if {"length"} <= set(header):
        wkey = next((k for k in ("count", "weight", "fraction") if k in header), None)
        if wkey is None:
            raise InputError("histogram CSV has no count column", file=str(path),
                             expected="columns length,count (or weight / fraction)")
        return _hist_arrays([(r["length"], r[wkey]) for r in rows_raw], path)
    if {"bin_lo_exclusive", "bin_hi_inclusive"} <= set(header):
        wkey = "num_seqs" if "num_seqs" in header else "frac_seqs" if "frac_seqs" in header else None
        if wkey is None:
            raise InputError("binned histogram CSV has no num_seqs column", file=str(path),
                             expected="bin_lo_exclusive,bin_hi_inclusive,num_seqs")
        vals, wts = [], []
        for i, r in enumerate(rows_raw):
            try:
                lo = float(r["bin_lo_exclusive"])
                hi = float(r["bin_hi_inclusive"])
                w = float(r[wkey])
            except (TypeError, ValueError):
                raise InputError(f"row {i + 2}: not a number", file=str(path),
                                 expected="numeric bins and counts") from None
            if w <= 0:
                continue
            if math.isinf(hi):
                hi = max(2 * lo, lo + 1)
            pts = np.unique(np.round(np.geomspace(max(lo + 1, 1), hi, 16)).astype(np.int64))
            vals.extend(pts.tolist())
            wts.extend([w / len(pts)] * len(pts))
        if not vals:
            raise InputError("histogram has no non-empty bin", file=str(path))
        return np.asarray(vals, dtype=np.int64), np.asarray(wts, dtype=float)
    raise InputError("unrecognised histogram columns " + ",".join(header), file=str(path),
                     expected="length,count or bin_lo_exclusive,bin_hi_inclusive,num_seqs")


def _hist_arrays(rows: list, path: Path) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np
    vals, wts = [], []
    for i, (v, w) in enumerate(rows):
        try:
            fv, fw = float(v), float(w)
        except (TypeError, ValueError):
            raise InputError(f"entry {i + 1}: '{v}', '{w}' are not numbers", file=str(path),
                             expected="integer lengths and non-negative counts") from None
        if not fv.is_integer() or fv <= 0 or fw < 0:
            raise InputError(f"entry {i + 1}: length {v} / count {w}", file=str(path),
                             expected="positive integer lengths and non-negative counts")
        if fw > 0:
            vals.append(int(fv))
            wts.append(fw)
    if not vals:
        raise InputError("histogram is empty", file=str(path), expected="at least one count > 0")
    return np.asarray(vals, dtype=np.int64), np.asarray(wts, dtype=float)


# ----------------------------------------------------------------------------------------------
# planner seqpar step


def step(
    lengths: Path = typer.Option(..., "--lengths", help="Length file: integers (tokens), one per "
                                 "line / comma separated, or a JSON list."),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="GPUs in the cluster."),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", help="GPUs per node (8)."),
    cluster: Optional[Path] = typer.Option(None, "--cluster", help="Cluster file (YAML/JSON): gpus, "
                                           "gpus_per_node, gpu, memory_gb."),
    cost_preset: str = typer.Option("own", "--cost-preset", help=_PRESET_HELP),
    model: Optional[str] = typer.Option(None, "--model", help="Model name or config.json (own preset)."),
    gpu: str = typer.Option("h100", "--gpu", help="Accelerator (own preset)."),
    model_size: str = typer.Option("7b", "--model-size", help="FlexSP model row: 7b, 13b, 30b."),
    memory_gb: Optional[float] = typer.Option(None, "--memory-gb", help="Per-GPU memory to plan for, GB."),
    seq_limit_k: int = typer.Option(32, "--seq-limit-k", help="FlexSP length cap k (its parameter count)."),
    group_types: str = typer.Option("ulysses,ring,hybrid", "--group-types", help="Allowed group types."),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="Allowed group sizes, e.g. 2,4,8 (own preset)."),
    zero_stage: int = typer.Option(3, "--zero-stage", help="ZeRO stage 0-3 (own preset)."),
    recompute: str = typer.Option("selective", "--recompute", help="none | selective | full (own preset)."),
    allow_single: bool = typer.Option(False, "--allow-single", help="FlexSP preset: also allow groups of one."),
    micro_batches: Optional[int] = typer.Option(None, "--micro-batches", help="Fix the micro-batch count."),
    time_limit: float = typer.Option(0.8, "--time-limit", help="Planning budget, seconds."),
    method: str = typer.Option("auto", "--method", help="auto | milp | heuristic (fast path)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the plan (YAML/JSON)."),
) -> None:
    """Plan one training step: micro-batches, SP groups (size, type, ranks) and their sequences."""
    from planner.plan import check_output, envelope
    from planner.seqpar import plan_step, read_lengths

    require_finite(memory_gb=memory_gb, time_limit=time_limit)
    if output is not None:
        check_output(output, inputs=[lengths, cluster])
    if method not in ("auto", "milp", "heuristic"):
        raise InputError(f"unknown method '{method}'", field="--method", expected="auto | milp | heuristic")
    if time_limit <= 0:
        raise InputError(f"time limit {time_limit}", field="--time-limit", expected="a positive number of seconds")
    n, gpn, extra = _cluster(gpus, gpus_per_node, cluster)
    arr = read_lengths(lengths)
    kw = _preset_kw(cost_preset, model, gpu, model_size, memory_gb, seq_limit_k, group_types,
                    sizes, zero_stage, recompute, allow_single, extra)
    with working("planning the step"):
        sp = plan_step(arr, (n, gpn), model, cost_preset=cost_preset, time_limit_s=time_limit,
                       method=method, micro_batches=micro_batches, lengths_file=str(lengths), **kw)
    body = sp.model_dump(mode="python")
    doc = envelope("StepPlan", body, inputs={"lengths": arr.tolist(), "gpus": n, "gpus_per_node": gpn,
                                             "cost_preset": cost_preset, "model": model, **kw})
    write_output(doc, output, [lengths, cluster])
    if as_json:
        echo_json(doc)
        return
    s = sp.solver
    typer.echo(f"step {sp.step_time_s:.4f} s over {len(sp.micro_batches)} micro-batch(es); "
               f"lower bound {sp.lower_bound_s:.4f} s (gap {100 * (s.gap or 0):.2f}%); "
               f"{sp.tokens_per_s_per_gpu:.0f} tokens/s/GPU; solver {s.status} via {s.method} "
               f"in {s.time_s:.3f} s")
    rows = []
    for i, mb in enumerate(sp.micro_batches):
        from collections import Counter
        shapes = Counter(f"{g.type}{g.size}" for g in mb.groups)
        rows.append((i, mb.time_s, mb.tokens, len(mb.groups),
                     ", ".join(f"{c} x {k}" for k, c in sorted(shapes.items()))))
    print_table("Micro-batches", ["#", "time s", "tokens", "groups", "shapes"], rows)


# ----------------------------------------------------------------------------------------------
# planner seqpar plan


def plan(
    lengths: Optional[Path] = typer.Option(None, "--lengths", help="Length distribution: one length "
                                           "per document (text or JSON list)."),
    histogram: Optional[Path] = typer.Option(None, "--histogram", help="Length histogram (CSV "
                                             "length,count or binned; YAML/JSON lengths+counts)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name or config.json (own preset)."),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="GPUs in the cluster."),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", help="GPUs per node (8)."),
    cluster: Optional[Path] = typer.Option(None, "--cluster", help="Cluster file (YAML/JSON)."),
    cost_preset: str = typer.Option("own", "--cost-preset", help=_PRESET_HELP),
    gpu: str = typer.Option("h100", "--gpu", help="Accelerator (own preset)."),
    model_size: str = typer.Option("7b", "--model-size", help="FlexSP model row: 7b, 13b, 30b."),
    memory_gb: Optional[float] = typer.Option(None, "--memory-gb", help="Per-GPU memory to plan for, GB."),
    seq_limit_k: int = typer.Option(32, "--seq-limit-k", help="FlexSP length cap k."),
    group_types: str = typer.Option("ulysses,ring,hybrid", "--group-types", help="Allowed group types."),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="Allowed group sizes (own preset)."),
    zero_stage: int = typer.Option(3, "--zero-stage", help="ZeRO stage 0-3 (own preset)."),
    recompute: str = typer.Option("selective", "--recompute", help="none | selective | full."),
    batch_size: int = typer.Option(512, "--batch-size", help="Sequences per step."),
    batches: int = typer.Option(4, "--batches", help="Batches to sample."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Truncate documents to this many tokens."),
    time_limit: float = typer.Option(0.8, "--time-limit", help="Planning budget per batch, seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the plan (YAML/JSON)."),
) -> None:
    """Offline plan: static SP strategies vs the adaptive planner over sampled batches."""
    from planner.plan import check_output, envelope
    from planner.seqpar import plan_offline, read_lengths

    require_finite(memory_gb=memory_gb, time_limit=time_limit)
    if time_limit <= 0:
        raise InputError(f"time limit {time_limit}", field="--time-limit", expected="a positive number of seconds")
    if output is not None:
        check_output(output, inputs=[lengths, histogram, cluster])
    if (lengths is None) == (histogram is None):
        raise InputError("give exactly one of --lengths or --histogram", field="--lengths/--histogram",
                         expected="a length file or a histogram file")
    n, gpn, extra = _cluster(gpus, gpus_per_node, cluster)
    kw = _preset_kw(cost_preset, model, gpu, model_size, memory_gb, seq_limit_k, group_types,
                    sizes, zero_stage, recompute, False, extra)
    if lengths is not None:
        dist, weights, src = read_lengths(lengths), None, str(lengths)
    else:
        dist, weights = read_histogram(histogram)
        src = str(histogram)
    with working("planning the batches"):
        body = plan_offline(dist, (n, gpn), model, cost_preset=cost_preset, batch_size=batch_size,
                            num_batches=batches, seed=seed, max_length=max_length, weights=weights,
                            time_limit_s=time_limit, source=src, **kw)
    doc = envelope("SequencePlan", body, inputs={"source": src, "sha": _sha(dist, weights),
                                                 "gpus": n, "gpus_per_node": gpn,
                                                 "cost_preset": cost_preset, "model": model,
                                                 "batch_size": batch_size, "batches": batches,
                                                 "seed": seed, **kw})
    write_output(doc, output, [lengths, histogram, cluster])
    if as_json:
        echo_json(doc)
        return
    rows = [(s["name"], s["step_time_s"], s["tokens_per_s_per_gpu"], s["memory_headroom"],
             f"{s['feasible_batches']}/{batches}") for s in body["strategies"]]
    print_table("Strategies (mean over sampled batches)",
                ["strategy", "step s", "tokens/s/GPU", "mem headroom", "fits"], rows)
    rec = body["recommendation"]
    gain = body["adaptive_gain_vs_best_static"]
    typer.echo(f"best static: {body['best_static']}; adaptive gain over it: "
               f"{'n/a' if gain is None else f'{100 * gain:.1f}%'}; choice: {rec.get('choice')}")
    if "static" in rec:
        typer.echo("Megatron-LM (static): " + " ".join(rec["static"]["megatron_lm"]))
        if rec["static"]["deepspeed"] is not None:
            typer.echo("DeepSpeed (static):   " + " ".join(rec["static"]["deepspeed"]))


def _sha(dist: np.ndarray, weights: Optional[np.ndarray]) -> str:
    import numpy as np
    import hashlib
    h = hashlib.sha256(np.asarray(dist, dtype=np.int64).tobytes())
    if weights is not None:
        h.update(np.asarray(weights, dtype=float).tobytes())
    return h.hexdigest()
