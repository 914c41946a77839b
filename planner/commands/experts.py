"""``planner experts``: MoE expert replication and placement, with engine-ready maps."""
from __future__ import annotations

import io
import os
from pathlib import Path

import typer

from hardware.errors import InputError


def experts(
    request: Path = typer.Argument(None, help="Expert request (YAML or JSON); flags override it."),
    output: Path = typer.Option(None, "-o", "--output", help="Write the ExpertPlacement plan (.yaml/.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics and solver facts as JSON only."),
    loads: Path = typer.Option(None, "--loads", help="Loads: .npy/.npz/.csv/.json/.pt or .jsonl traces."),
    traces: Path = typer.Option(None, "--traces", help="JSONL routing traces (affinity)."),
    gpus: int = typer.Option(None, "--gpus", help="GPUs (expert-parallel ranks)."),
    nodes: int = typer.Option(None, "--nodes", help="Nodes (GPUs split evenly)."),
    slots: int = typer.Option(None, "--slots", help="Physical expert slots in total."),
    slots_per_gpu: int = typer.Option(None, "--slots-per-gpu", help="Slots per GPU."),
    redundant: int = typer.Option(None, "--redundant", help="Slots beyond one per expert."),
    groups: int = typer.Option(None, "--groups", help="Keep each of N contiguous expert groups on one node."),
    max_replicas: int = typer.Option(None, "--max-replicas", help="Most copies of one expert."),
    model: str = typer.Option(None, "--model", help="Model alias or config.json (layers, experts, size)."),
    gpu: str = typer.Option(None, "--gpu", help="GPU type (memory report)."),
    memory_gib: float = typer.Option(None, "--memory-gib", help="GiB per GPU for expert weights: "
                                                                 "choose the redundant slots."),
    previous: Path = typer.Option(None, "--previous", help="Previous ExpertPlacement plan or npz."),
    max_moves: int = typer.Option(None, "--max-moves", help="Most expert copies to load vs --previous."),
    time_limit: float = typer.Option(None, "--time-limit", help="Overall time limit in seconds: "
                                     "the bound, the improvement stages, migration and affinity "
                                     "(reading the inputs and a first placement of every layer "
                                     "always complete)."),
    cpsat: float = typer.Option(None, "--cpsat-s", help="Seconds of CP-SAT refinement (0: off)."),
    out_npz: Path = typer.Option(None, "--out-npz", help="Write phy2log, logcnt, log2phy (.npz)."),
    out_eplb_json: Path = typer.Option(None, "--out-eplb-json", help="Write the EPLB arrays as JSON."),
    out_sglang: Path = typer.Option(None, "--out-sglang", help="Write SGLang's --init-expert-location JSON."),
    out_vllm: Path = typer.Option(None, "--out-vllm", help="Write vLLM EPLB state arrays + flags (JSON)."),
    out_trtllm: Path = typer.Option(None, "--out-trtllm", help="Write TensorRT-LLM's load-balancer YAML."),
) -> None:
    """Replicate and place MoE experts on GPUs: balanced, duplicate-free, with a proven bound
    (the command's help, with its limits, is :data:`HELP`)."""
    from planner import experts as ex
    from planner.commands.common import echo_json, require_finite, working, write_output
    from planner.plan import envelope, to_json, write_atomic

    require_finite(memory_gib=memory_gib, time_limit=time_limit, cpsat_s=cpsat)
    # every output, with its flag and formats; each engine map has one format
    outputs = [(target, suffixes, flag) for target, suffixes, flag in (
        (output, (".yaml", ".yml", ".json"), "-o/--output"),
        (out_npz, (".npz",), "--out-npz"),
        (out_eplb_json, (".json",), "--out-eplb-json"),
        (out_sglang, (".json",), "--out-sglang"),
        (out_vllm, (".json",), "--out-vllm"),
        (out_trtllm, (".yaml", ".yml"), "--out-trtllm")) if target is not None]
    # first against the files named on the command line, before anything is read
    _check_outputs(outputs, [request, loads, traces, previous])
    data: dict = {}
    if request is not None:
        req0 = ex.load_request(request)
        data = req0.model_dump(exclude_none=True)
    values = {"loads": loads, "traces": traces, "gpus": gpus, "nodes": nodes, "slots": slots,
              "slots_per_gpu": slots_per_gpu, "redundant": redundant, "groups": groups,
              "max_replicas": max_replicas, "model": model, "gpu": gpu, "previous": previous,
              "max_moves": max_moves, "time_limit_s": time_limit, "cpsat_s": cpsat}
    if any(values[k] is not None for k in ("slots", "slots_per_gpu", "redundant")):
        for k in ("slots", "slots_per_gpu", "redundant", "gpu_slots"):  # flags replace the file's
            data.pop(k, None)
    flags = {}   # request field -> the flag that set it (errors name the flag, not the file)
    for k, v in values.items():
        if v is not None:
            data[k] = str(v) if isinstance(v, Path) else v
            flags[k] = FLAGS[k]
    if memory_gib is not None:
        data["memory"] = {**data.get("memory", {}), "budget_gib_per_gpu": memory_gib}
        flags["memory.budget_gib_per_gpu"] = "--memory-gib"
    if "gpus" not in data:
        if request is not None:
            raise InputError("the number of GPUs is not given", file=str(request), field="gpus",
                             expected="gpus in the request or --gpus G")
        raise InputError("the number of GPUs is not given", field="--gpus",
                         expected="planner experts REQUEST.yaml or --loads FILE --gpus G --slots S")
    req = ex.validate_request(data, file=str(request) if request else None, flags=flags)
    # then against every file the request reads (its loads, traces, previous plan, a model's
    # config.json) and each other, still before anything is solved or written
    inputs = ex.input_files(req)
    _check_outputs(outputs, inputs)
    engines = [flag for target, _, flag in outputs if flag not in ("-o/--output", "--out-npz")]
    if engines and req.gpu_slots is not None and len(set(req.gpu_slots)) > 1:
        raise InputError(f"{engines[0]} needs the same number of slots on every GPU",
                         **req.where("gpu_slots"),
                         expected="equal slots per GPU for engine maps (the .npz carries "
                                  "slot_to_gpu)")
    with working("placing experts"):
        pl = ex.plan_experts(req)
    plan = envelope(ex.KIND, ex.plan_body(pl, req), inputs=_hash_inputs(req, pl))
    # every file's content first, then the writes (an error never leaves half the outputs)
    contents = []
    if out_npz is not None:
        import numpy as np

        buf = io.BytesIO()
        np.savez(buf, **ex.npz_arrays(pl))
        contents.append((out_npz, buf.getvalue()))
    if out_eplb_json is not None:
        contents.append((out_eplb_json, to_json(ex.eplb_json(pl))))
    if out_sglang is not None:
        contents.append((out_sglang, to_json(ex.sglang_json(pl))))
    if out_vllm is not None:
        contents.append((out_vllm, to_json(ex.vllm_json(pl))))
    if out_trtllm is not None:
        import yaml  # own dump: layer keys stay integers, each slot list on one line

        contents.append((out_trtllm, yaml.safe_dump(ex.trtllm_yaml(pl), sort_keys=False,
                                                    default_flow_style=None, width=100000)))
    write_output(plan, output, inputs)
    protect = [str(p) for p in inputs]
    for target, content in contents:
        write_atomic(target, content, protect=protect)
    if as_json:
        keep = ("spec", "metrics", "solver", "migration", "affinity", "memory", "notes")
        echo_json({k: plan[k] for k in ("apiVersion", "kind") + keep if k in plan})
        return
    m, s = pl.metrics, pl.solver
    spec = plan["spec"]
    typer.echo(f"{spec['layers']} layers x {spec['experts']} experts on {spec['gpus']} GPUs / "
               f"{spec['nodes']} nodes, {spec['slots']} slots ({spec['redundant']} redundant)"
               + (f", {spec['groups']} groups pinned to nodes" if spec["groups"] else ""))
    typer.echo(f"max/mean GPU load {m['max_mean_gpu_load_mean']:.4f} mean, "
               f"{m['max_mean_gpu_load_worst']:.4f} worst layer; node {m['max_mean_node_load_mean']:.4f}; "
               f"lower bound {m['lower_bound_mean']:.4f}; duplicates {m['duplicate_pairs']}")
    gap = "" if s["gap"] is None else f", gap {100 * s['gap']:.3f}%"
    typer.echo(f"solver {s['status']} ({s['backend']}{gap}, {s['time_s']:.2f} s)")
    if pl.migration:
        mg = pl.migration
        typer.echo(f"migration: {mg['experts_moved']} copies moved (fresh plan {mg['moves_for_fresh_plan']}); "
                   f"max/mean {mg['max_mean_gpu_load_before']:.4f} -> {mg['max_mean_gpu_load_after']:.4f}")
    if pl.affinity and "cross_gpu_transitions" in pl.affinity:
        a = pl.affinity
        base = a.get("load_only", {}).get("cross_gpu_transitions")
        typer.echo(f"cross-GPU transitions {a['cross_gpu_transitions']:.4f}"
                   + (f" (load-only {base:.4f})" if base is not None else ""))
    for note in pl.problem.notes:
        typer.echo(f"note: {note}", err=True)


#: request field -> the flag that sets it
FLAGS = {"loads": "--loads", "traces": "--traces", "gpus": "--gpus", "nodes": "--nodes",
         "slots": "--slots", "slots_per_gpu": "--slots-per-gpu", "redundant": "--redundant",
         "groups": "--groups", "max_replicas": "--max-replicas", "model": "--model",
         "gpu": "--gpu", "previous": "--previous", "max_moves": "--max-moves",
         "time_limit_s": "--time-limit", "cpsat_s": "--cpsat-s"}


def _check_outputs(outputs: list, inputs: list) -> None:
    """Each output (path, suffixes, flag): its format, its folder, none of ``inputs``, and no
    two outputs the same file; the error names the output's own flag."""
    from planner.plan import check_output

    inputs = [p for p in inputs if p is not None]
    for i, (target, suffixes, flag) in enumerate(outputs):
        check_output(target, inputs=inputs, suffixes=suffixes, field=flag, what="output")
        for other, _, other_flag in outputs[:i]:
            if _same_path(Path(target), Path(other)):
                raise InputError(f"{flag} and {other_flag} name the same file", file=str(target),
                                 field=flag, expected="a different file for each output")


def _same_path(a: Path, b: Path) -> bool:
    """Whether two output paths name one file (existing or not, through links or spellings)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _hash_inputs(req, pl) -> dict:
    """What the plan depends on: the request and a digest of the load matrix."""
    import hashlib

    w = pl.problem.weights
    return {"request": req.model_dump(exclude={"time_limit_s"}),
            "loads_sha256": hashlib.sha256(w.tobytes()).hexdigest()}


HELP = ("Replicate and place MoE experts on GPUs: balanced, duplicate-free, with a proven "
        "bound.\n\n"
        "Limits (refused before anything is solved, with one error line): 4,096 layers, 65,536 "
        "experts per layer, 4,096 GPUs, 65,536 slots per layer; layers x experts <= 4,194,304, "
        "layers x slots <= 1,048,576, layers x GPUs x experts <= 33,554,432, layers x slots x "
        "GPUs <= 2^30; traces: layers x experts^2 <= 16,777,216 (planner.experts.MAX_*).  "
        "Outputs must differ from every input (the request, its loads, traces, previous plan "
        "and model config.json) and from each other.")


def register(app: typer.Typer) -> None:
    app.command("experts", help=HELP)(experts)
