"""Capacity from the serving cost model: the largest request rate per replica that meets the
SLOs with continuous batching, per (GPU type, shape, bucket)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hardware.errors import InputError
from planner.fleet.bundles import cross_gpu_bundles, same_gpu_bundles
from planner.fleet.load import ModelLoad
from planner.fleet.options import Option, gpu_shapes, multi_node_shapes, slo_checks
from planner.fleet.request import GPUEntry, ModelEntry


def cost_model_options(entry: ModelEntry, index: int, load: ModelLoad, gpus: list[GPUEntry],
                       file: str | None) -> list[Option]:
    """Capacity of every (GPU, shape) from the serving cost model (batching included)."""
    from costmodels.model import dtype_bytes, load_model
    from costmodels.serving import max_rate_under_slo
    from hardware.catalog import get_accelerator

    try:
        spec = load_model(entry.source)
    except InputError as exc:
        # a fault inside a config.json keeps that file's own field; else (no such model or
        # file) it is the request's
        inside = exc.file is not None and Path(exc.file).is_file()
        raise InputError(exc.message if inside or not exc.file else f"{exc.message}: {exc.file}",
                         file=exc.file if inside else file,
                         field=exc.field if inside else f"models[{index}].model",
                         expected=exc.expected, hint=exc.hint) from None
    for key in ("dtype", "kv_dtype"):  # named here, before any shape "does not fit"
        value = getattr(entry, key)
        if value is not None:
            try:
                dtype_bytes(value)
            except InputError as exc:
                raise InputError(exc.message, file=file, field=f"models[{index}].{key}",
                                 expected=exc.expected) from None
    name = entry.name or entry.model
    checks = slo_checks(entry.slo, load.requests)
    active = load.shares.max(axis=0) > 0
    kwargs = {"max_num_seqs": entry.max_num_seqs} if entry.max_num_seqs else {}
    def replica(accel, tp: int, pp: int) -> Option | None:
        """The option of one (GPU type, shape); None when the weights do not fit it."""
        if not active.any():
            return None
        cap = np.zeros(len(checks))
        details = [dict() for _ in range(cap.shape[0])]
        fidelity = "analytical"
        for b in np.nonzero(active)[0]:
            est, check = min(((max_rate_under_slo(
                spec, accel, tp=tp, pp=pp, input_len=c.input_len, output_len=c.output_len,
                ttft_slo_s=c.ttft_s, tpot_slo_s=c.tpot_s, e2e_slo_s=c.e2e_s, percentile=c.percentile,
                dtype=entry.dtype,
                kv_dtype=entry.kv_dtype, **kwargs), c) for c in checks[b]),
                key=lambda pair: pair[0].rate_rps)
            if est.binding == "fit":
                return None  # the weights do not fit this shape: no bucket will
            fidelity = est.fidelity
            cap[b] = max(est.rate_rps, 0.0)
            details[b] = {"binding": est.binding, "ttft_s": est.ttft_s, "tpot_s": est.tpot_s,
                          "max_batch": est.max_batch, "ttft_slo_s": check.ttft_s,
                          "tpot_slo_s": check.tpot_s, "e2e_s": est.e2e_s,
                          "e2e_slo_s": check.e2e_s, "percentile": check.percentile}
        return Option(index, name, accel.name, tp, pp, cap, f"cost-model:{fidelity}", details)

    options = []
    for gi, g in enumerate(gpus):
        accel = get_accelerator(g.name, field=f"gpus[{gi}].name", file=file)
        mine = [o for o in (replica(accel, tp, pp) for tp, pp in gpu_shapes(g)) if o is not None]
        if not mine and not g.shapes:
            # the weights fit no node of this type: pipeline stages over several nodes, the
            # fewest that hold them (vLLM over Ray; emit writes multi-node launches)
            for tp, pp in multi_node_shapes(g, accel):
                option = replica(accel, tp, pp)
                if option is not None:
                    mine = [option]
                    break
        options += mine
        if entry.disaggregation in ("auto", "same_gpu"):
            fitting = [(o.tp, o.pp) for o in options if o.gpu == accel.name and not o.roles]
            options += same_gpu_bundles(entry, index, name, spec, accel, fitting, checks, active)
    if entry.disaggregation == "auto" and len(gpus) > 1:
        accels = [get_accelerator(g.name) for g in gpus]
        fitting: dict[str, list[tuple[int, int]]] = {}
        for o in options:
            if not o.roles:
                fitting.setdefault(o.gpu, []).append((o.tp, o.pp))
        options += cross_gpu_bundles(entry, index, name, spec, accels, fitting, checks, active)
    return options
