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
_GPUS_HELP = ("GPUs in the cluster, 1 to 1,024 (the largest cluster one step is planned over: "
              "plan a larger job per data-parallel replica).")
_MEMORY_HELP = "Per-GPU memory to plan for, GB (above 0, at most 10,000)."
_STEP_TIME_HELP = ("Planning budget, seconds (at most 3,600).  Plans are reproducible, so the "
                   "search's fixed phases always run: it starts no new phase past the budget, a "
                   "MILP phase may use up to one more budget, and reading and pricing the batch "
                   "come on top (a few seconds at 16,384 sequences on 1,024 GPUs).")


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


def _cluster(gpus: Optional[int], gpus_per_node: Optional[int], cluster_file: Optional[Path],
             memory_gb: Optional[float] = None
             ) -> tuple[int, int, dict[str, Any], dict[str, tuple[str, str]]]:
    """(gpus, gpus per node, extra settings from the cluster file: accelerator, memory_gb, and
    where each setting a file gave came from: ``{"--gpus": (file, "gpus"), ...}``).  Flags
    override the file; every value is checked here, before any file is read or plan made."""
    from planner.seqpar import check_gpu_count, check_memory_gb, load_cluster

    require_finite(memory_gb=memory_gb)
    check_memory_gb(memory_gb)
    extra: dict[str, Any] = {}
    sources: dict[str, tuple[str, str]] = {}
    where = None
    if cluster_file is not None:
        spec = load_cluster(cluster_file)
        where = str(cluster_file)
        key = "gpus" if spec.gpus is not None else "num_gpus"
        if gpus is None and getattr(spec, key) is not None:
            gpus = getattr(spec, key)
            sources["--gpus"] = (where, key)
        if gpus_per_node is None and spec.gpus_per_node is not None:
            gpus_per_node = spec.gpus_per_node
            sources["--gpus-per-node"] = (where, "gpus_per_node")
        if spec.gpu or spec.accelerator:
            extra["accelerator"] = spec.gpu or spec.accelerator
            sources["--gpu"] = (where, "gpu" if spec.gpu else "accelerator")
        if spec.memory_gb is not None:
            extra["memory_gb"] = spec.memory_gb
            if memory_gb is None:
                sources["--memory-gb"] = (where, "memory_gb")
    if gpus is None:
        raise InputError("no GPU count given", file=where, field="gpus" if where else "--gpus",
                         expected="--gpus N or 'gpus: N' in the cluster file")
    n = check_gpu_count(gpus, **_named(sources, "--gpus"))
    gpn = check_gpu_count(8 if gpus_per_node is None else gpus_per_node,
                          **_named(sources, "--gpus-per-node"))
    return n, gpn, extra, sources


def _named(sources: dict[str, tuple[str, str]], flag: str) -> dict[str, Optional[str]]:
    """``file`` / ``field`` for an error about ``flag``: the file's field when a file gave it."""
    file, field = sources.get(flag, (None, flag))
    return {"file": file, "field": field}


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


def _model_file(model: Optional[str]) -> Optional[Path]:
    """The config.json ``--model`` reads (a path's, or an alias's checked-in one): an input
    ``-o`` must not overwrite."""
    from costmodels.model import aliases, model_config_file
    if not model:
        return None
    return model_config_file(model) or aliases().get(str(model).strip().lower())


_COUNT = "a finite number >= 0 (sequences or a share of them)"


def _weight(text: Any, *, path: Path, field: str, where: str) -> float:
    """One histogram weight: a finite number >= 0 (NaN, infinities and negatives refused)."""
    try:
        w = float(text) if not isinstance(text, bool) else math.nan
    except (TypeError, ValueError):
        w = math.nan
    if not 0 <= w < math.inf:  # also NaN
        raise InputError(f"{where}: count {text!r}", file=str(path), field=field, expected=_COUNT)
    return w


def read_histogram(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A length histogram as (values, weights).

    Accepted CSV headers: ``length,count`` (or ``weight`` / ``fraction``), or binned
    ``bin_lo_exclusive,bin_hi_inclusive,num_seqs`` (``frac_seqs`` also accepted); each bin is
    spread over 16 log-spaced lengths inside it.  YAML / JSON: ``{lengths: [...], counts: [...]}``.
    Lengths are integers from 1 to ``planner.workload.MAX_TOKENS``; bin edges integers with
    ``0 <= lo < hi <= MAX_TOKENS`` (the last ``hi`` may be ``inf``: an open bin, read as up to
    twice its ``lo``); counts finite and >= 0, not all 0.  Every value is checked before any
    numpy conversion.
    """
    import numpy as np
    import csv

    from planner.seqpar import MAX_DISTRIBUTION_VALUES, check_weights
    from planner.workload import MAX_TOKENS

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
            raise InputError("'lengths' and 'counts' must be lists of equal length", file=str(path),
                             field="lengths/counts", expected="two lists of equal length")
        rows = [(v, w, f"entry {i + 1}", f"lengths[{i}]", f"counts[{i}]")
                for i, (v, w) in enumerate(zip(vals, cnts))]
        return _hist_arrays(rows, path)
    if path.is_dir():
        raise InputError("histogram file is a folder", file=str(path))
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        rows_raw = list(reader)
    if len(rows_raw) > MAX_DISTRIBUTION_VALUES:
        raise InputError(f"more than {MAX_DISTRIBUTION_VALUES:,} rows", file=str(path),
                         expected=f"at most {MAX_DISTRIBUTION_VALUES:,} histogram rows")
    if {"length"} <= set(header):
        wkey = next((k for k in ("count", "weight", "fraction") if k in header), None)
        if wkey is None:
            raise InputError("histogram CSV has no count column", file=str(path),
                             expected="columns length,count (or weight / fraction)")
        return _hist_arrays([(r["length"], r[wkey], f"line {i + 2}", "length", wkey)
                             for i, r in enumerate(rows_raw)], path)
    if {"bin_lo_exclusive", "bin_hi_inclusive"} <= set(header):
        wkey = "num_seqs" if "num_seqs" in header else "frac_seqs" if "frac_seqs" in header else None
        if wkey is None:
            raise InputError("binned histogram CSV has no num_seqs column", file=str(path),
                             expected="bin_lo_exclusive,bin_hi_inclusive,num_seqs")
        vals, wts = [], []
        for i, r in enumerate(rows_raw):
            line = f"line {i + 2}"
            lo, hi = _bin_edges(r.get("bin_lo_exclusive"), r.get("bin_hi_inclusive"), path, line)
            w = _weight(r.get(wkey), path=path, field=wkey, where=line)
            if w <= 0:
                continue
            if math.isinf(hi):
                hi = min(max(2 * lo, lo + 1), MAX_TOKENS)
            pts = np.unique(np.round(np.geomspace(max(lo + 1, 1), hi, 16)).astype(np.int64))
            vals.extend(pts.tolist())
            wts.extend([w / len(pts)] * len(pts))
        if not vals:
            raise InputError("histogram has no non-empty bin", file=str(path), field=wkey,
                             expected="at least one count > 0")
        return np.asarray(vals, dtype=np.int64), check_weights(wts, len(vals), file=str(path),
                                                               field=wkey)
    raise InputError("unrecognised histogram columns " + ",".join(header), file=str(path),
                     expected="length,count or bin_lo_exclusive,bin_hi_inclusive,num_seqs")


def _bin_edges(lo_text: Any, hi_text: Any, path: Path, line: str) -> tuple[int, float]:
    """A bin's (lo, hi): integers with ``0 <= lo < hi <= MAX_TOKENS``; hi may be ``inf``."""
    from planner.workload import MAX_TOKENS
    expected = (f"integer token counts with 0 <= bin_lo_exclusive < bin_hi_inclusive <= "
                f"{MAX_TOKENS:,} (the last bin_hi_inclusive may be inf)")
    edges = []
    for text, field in ((lo_text, "bin_lo_exclusive"), (hi_text, "bin_hi_inclusive")):
        try:
            v = float(text)
        except (TypeError, ValueError):
            v = math.nan
        open_top = field == "bin_hi_inclusive" and v == math.inf
        if not open_top and not (0 <= v <= MAX_TOKENS and v.is_integer()):  # also NaN
            raise InputError(f"{line}: {field} {text!r}", file=str(path), field=field,
                             expected=expected)
        edges.append(v if open_top else int(v))
    lo, hi = edges
    if hi <= lo:
        raise InputError(f"{line}: bin ({lo_text}, {hi_text}] is empty or inverted", file=str(path),
                         field="bin_hi_inclusive", expected=expected)
    return lo, hi


def _hist_arrays(rows: list, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, weights) from ``(length, count, where, length field, count field)`` rows, each
    checked before any conversion; rows with count 0 are dropped."""
    import numpy as np

    from planner.seqpar import MAX_DISTRIBUTION_VALUES, check_token_count, check_weights
    if len(rows) > MAX_DISTRIBUTION_VALUES:
        raise InputError(f"more than {MAX_DISTRIBUTION_VALUES:,} rows", file=str(path),
                         expected=f"at most {MAX_DISTRIBUTION_VALUES:,} histogram rows")
    vals, wts = [], []
    wfield = "counts"
    for v, w, where, vfield, wfield in rows:
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                pass  # refused below, as given
        length = check_token_count(v, file=str(path), field=vfield, what=f"{where}: length")
        fw = _weight(w, path=path, field=wfield, where=where)
        if fw > 0:
            vals.append(length)
            wts.append(fw)
    if not vals:
        raise InputError("histogram is empty", file=str(path), expected="at least one count > 0")
    return np.asarray(vals, dtype=np.int64), check_weights(wts, len(vals), file=str(path),
                                                           field=wfield.split("[")[0])


# ----------------------------------------------------------------------------------------------
# planner seqpar step


def step(
    lengths: Path = typer.Option(..., "--lengths", help="Length file: integers (tokens, 1 to "
                                 "100,000,000), one per line / comma separated, or a JSON list; "
                                 "at most 16,384 sequences."),
    gpus: Optional[int] = typer.Option(None, "--gpus", help=_GPUS_HELP),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", help="GPUs per node (8)."),
    cluster: Optional[Path] = typer.Option(None, "--cluster", help="Cluster file (YAML/JSON): gpus, "
                                           "gpus_per_node, gpu, memory_gb."),
    cost_preset: str = typer.Option("own", "--cost-preset", help=_PRESET_HELP),
    model: Optional[str] = typer.Option(None, "--model", help="Model name or config.json (own preset)."),
    gpu: str = typer.Option("h100", "--gpu", help="Accelerator (own preset)."),
    model_size: str = typer.Option("7b", "--model-size", help="FlexSP model row: 7b, 13b, 30b."),
    memory_gb: Optional[float] = typer.Option(None, "--memory-gb", help=_MEMORY_HELP),
    seq_limit_k: int = typer.Option(32, "--seq-limit-k", help="FlexSP length cap k (its parameter count)."),
    group_types: str = typer.Option("ulysses,ring,hybrid", "--group-types", help="Allowed group types."),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="Allowed group sizes, e.g. 2,4,8 (own preset)."),
    zero_stage: int = typer.Option(3, "--zero-stage", help="ZeRO stage 0-3 (own preset)."),
    recompute: str = typer.Option("selective", "--recompute", help="none | selective | full (own preset)."),
    allow_single: bool = typer.Option(False, "--allow-single", help="FlexSP preset: also allow groups of one."),
    micro_batches: Optional[int] = typer.Option(None, "--micro-batches", help="Fix the micro-batch "
                                                "count (1 to the number of sequences)."),
    time_limit: float = typer.Option(0.8, "--time-limit", help=_STEP_TIME_HELP),
    method: str = typer.Option("auto", "--method", help="auto | milp | heuristic (fast path)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the plan (YAML/JSON)."),
) -> None:
    """Plan one training step: micro-batches, SP groups (size, type, ranks) and their sequences."""
    from planner.plan import check_output, envelope
    from planner.seqpar import MAX_BATCH_SEQUENCES, check_time_limit, plan_step, read_lengths

    require_finite(memory_gb=memory_gb, time_limit=time_limit)
    inputs = [lengths, cluster, _model_file(model)]
    if output is not None:
        check_output(output, inputs=inputs)
    if method not in ("auto", "milp", "heuristic"):
        raise InputError(f"unknown method '{method}'", field="--method", expected="auto | milp | heuristic")
    check_time_limit(time_limit)
    n, gpn, extra, sources = _cluster(gpus, gpus_per_node, cluster, memory_gb)
    arr = read_lengths(lengths, max_count=MAX_BATCH_SEQUENCES)
    kw = _preset_kw(cost_preset, model, gpu, model_size, memory_gb, seq_limit_k, group_types,
                    sizes, zero_stage, recompute, allow_single, extra)
    with working("planning the step"):
        sp = plan_step(arr, (n, gpn), model, cost_preset=cost_preset, time_limit_s=time_limit,
                       method=method, micro_batches=micro_batches, lengths_file=str(lengths),
                       sources=sources, **kw)
    body = sp.model_dump(mode="python")
    doc = envelope("StepPlan", body, inputs={"lengths": arr.tolist(), "gpus": n, "gpus_per_node": gpn,
                                             "cost_preset": cost_preset, "model": model, **kw})
    write_output(doc, output, inputs)
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
                                           "per document (text or JSON list; integers 1 to "
                                           "100,000,000, at most 10,000,000 documents)."),
    histogram: Optional[Path] = typer.Option(None, "--histogram", help="Length histogram (CSV "
                                             "length,count or binned; YAML/JSON lengths+counts)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name or config.json (own preset)."),
    gpus: Optional[int] = typer.Option(None, "--gpus", help=_GPUS_HELP),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", help="GPUs per node (8)."),
    cluster: Optional[Path] = typer.Option(None, "--cluster", help="Cluster file (YAML/JSON)."),
    cost_preset: str = typer.Option("own", "--cost-preset", help=_PRESET_HELP),
    gpu: str = typer.Option("h100", "--gpu", help="Accelerator (own preset)."),
    model_size: str = typer.Option("7b", "--model-size", help="FlexSP model row: 7b, 13b, 30b."),
    memory_gb: Optional[float] = typer.Option(None, "--memory-gb", help=_MEMORY_HELP),
    seq_limit_k: int = typer.Option(32, "--seq-limit-k", help="FlexSP length cap k."),
    group_types: str = typer.Option("ulysses,ring,hybrid", "--group-types", help="Allowed group types."),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="Allowed group sizes (own preset)."),
    zero_stage: int = typer.Option(3, "--zero-stage", help="ZeRO stage 0-3 (own preset)."),
    recompute: str = typer.Option("selective", "--recompute", help="none | selective | full."),
    batch_size: int = typer.Option(512, "--batch-size", help="Sequences per step, 1 to 16,384."),
    batches: int = typer.Option(4, "--batches", help="Batches to sample, 1 to 256."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (an integer >= 0)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Truncate documents to "
                                             "this many tokens (1 to 100,000,000; default: the "
                                             "longest sequence the cluster can hold)."),
    time_limit: float = typer.Option(0.8, "--time-limit", help="Budget per solve, seconds (at "
                                     "most 3,600).  Each sampled batch is solved once per "
                                     "adaptive set (this budget each; see `seqpar step "
                                     "--time-limit`) and once per static strategy (min(budget, "
                                     "0.3 s) each): a run takes about batches x (static "
                                     "strategies x min(budget, 0.3) + adaptive sets x budget) "
                                     "seconds, and runs scheduling more than 600 s are refused "
                                     "up front."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the plan (YAML/JSON)."),
) -> None:
    """Offline plan: static SP strategies vs the adaptive planner over sampled batches."""
    from planner.plan import check_output, envelope
    from planner.seqpar import MAX_DISTRIBUTION_VALUES, check_plan_options, plan_offline, read_lengths

    require_finite(memory_gb=memory_gb, time_limit=time_limit)
    check_plan_options(batch_size=batch_size, num_batches=batches, seed=seed,
                       max_length=max_length, time_limit_s=time_limit)
    inputs = [lengths, histogram, cluster, _model_file(model)]
    if output is not None:
        check_output(output, inputs=inputs)
    if (lengths is None) == (histogram is None):
        raise InputError("give exactly one of --lengths or --histogram", field="--lengths/--histogram",
                         expected="a length file or a histogram file")
    n, gpn, extra, sources = _cluster(gpus, gpus_per_node, cluster, memory_gb)
    kw = _preset_kw(cost_preset, model, gpu, model_size, memory_gb, seq_limit_k, group_types,
                    sizes, zero_stage, recompute, False, extra)
    if lengths is not None:
        dist, weights = read_lengths(lengths, max_count=MAX_DISTRIBUTION_VALUES), None
        src = str(lengths)
    else:
        dist, weights = read_histogram(histogram)
        src = str(histogram)
    with working("planning the batches"):
        body = plan_offline(dist, (n, gpn), model, cost_preset=cost_preset, batch_size=batch_size,
                            num_batches=batches, seed=seed, max_length=max_length, weights=weights,
                            time_limit_s=time_limit, source=src, sources=sources, **kw)
    doc = envelope("SequencePlan", body, inputs={"source": src, "sha": _sha(dist, weights),
                                                 "gpus": n, "gpus_per_node": gpn,
                                                 "cost_preset": cost_preset, "model": model,
                                                 "batch_size": batch_size, "batches": batches,
                                                 "seed": seed, **kw})
    write_output(doc, output, inputs)
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
