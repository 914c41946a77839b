"""Library entry for single-layout estimates (what ``planner estimate`` calls)."""
from __future__ import annotations

import numbers
from pathlib import Path

from costmodels.model import load_model
from costmodels.ops import Parallel
from costmodels.serving import Estimate, estimate
from hardware.catalog import get_accelerator, get_node
from hardware.errors import InputError


def run_estimate(*, model: str, gpu: str, tp: int = 1, pp: int = 1, ep: int = 1, input_len: int,
                 output_len: int, batch: int = 1, dtype: str = "bf16", kv_dtype: str | None = None,
                 node: str | None = None, calibration: str | Path | None = None,
                 profile: str | Path | None = None) -> Estimate:
    """Resolve names (model alias, GPU, node, calibration file) and run :func:`costmodels.serving.estimate`.

    ``calibration``: a file from ``planner calibrate`` (calibrated efficiencies and, where it has
    them, calibrated link tiers).  ``profile``: a Vidur per-op ``mlp.csv`` or a folder of them;
    ops it covers for this model shape and GPU are looked up (the measured fidelity layer).

    Raises :class:`hardware.errors.InputError` for anything the user got wrong.
    """
    spec = load_model(model)
    accel = get_accelerator(gpu)
    node_type = get_node(node) if node else None
    if node_type is not None and node_type.accelerator != accel.name:
        named = f"{node} ({node_type.name})" if isinstance(node, str) and node.lower() != node_type.name.lower() \
            else node_type.name
        raise InputError(f"node type {named} holds {node_type.accelerator} GPUs, not {accel.name}",
                         field="node", expected=f"a node type of {accel.name} (see `planner catalog nodes`), "
                                                f"or the GPU {node_type.accelerator}")
    _check_context(spec, input_len, output_len)
    efficiency = links = None
    if calibration is not None:
        from costmodels.calibration import load_calibration
        calib = load_calibration(calibration)
        efficiency = calib.efficiency_for(accel.name)
        links = calib.links_for(accel, Parallel(tp, pp, ep), node_type)
    measured = None
    if profile is not None:
        from costmodels.calibration import measured_table_for
        from hardware.profiles import read_vidur_profiles
        if dtype not in ("bf16", "fp16"):
            raise InputError(f"per-op profiles are measured in 16-bit; --dtype {dtype} is not covered",
                             field="dtype", expected="bf16 or fp16 with --profile")
        measured = measured_table_for(read_vidur_profiles(profile), spec, accel, source=str(profile))
    return estimate(spec, accel, tp=tp, pp=pp, ep=ep, input_len=input_len, output_len=output_len, batch=batch,
                    dtype=dtype, kv_dtype=kv_dtype, node=node_type, efficiency=efficiency, links=links,
                    measured=measured)


def _check_context(spec, input_len: int, output_len: int) -> None:
    """Refuse a request longer than the model's context window (``max_position_embeddings``):
    no engine serves it, so its times and memory would describe nothing.  Models whose config
    states no window are not checked."""
    limit = spec.max_position_embeddings
    if limit > 0 and all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in (input_len, output_len)) \
            and input_len + output_len > limit:
        raise InputError(f"{input_len} input + {output_len} output tokens = {input_len + output_len}, beyond "
                         f"{spec.name}'s context of {limit} tokens", field="input_len/output_len",
                         expected=f"input + output tokens at most {limit} (the model's max_position_embeddings)")
