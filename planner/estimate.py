"""Library entry for single-layout estimates (what ``planner estimate`` calls)."""
from __future__ import annotations

from pathlib import Path

from costmodels.model import load_model
from costmodels.serving import Estimate, estimate
from hardware.catalog import get_accelerator, get_node


def run_estimate(*, model: str, gpu: str, tp: int = 1, pp: int = 1, ep: int = 1, input_len: int,
                 output_len: int, batch: int = 1, dtype: str = "bf16", kv_dtype: str | None = None,
                 node: str | None = None, calibration: str | Path | None = None) -> Estimate:
    """Resolve names (model alias, GPU, node, calibration file) and run :func:`costmodels.serving.estimate`.

    Raises :class:`hardware.errors.InputError` for anything the user got wrong.
    """
    spec = load_model(model)
    accel = get_accelerator(gpu)
    node_type = get_node(node) if node else None
    efficiency = links = None
    if calibration is not None:
        from costmodels.calibration import load_calibration
        calib = load_calibration(calibration)
        efficiency = calib.efficiency_for(accel.name)
    return estimate(spec, accel, tp=tp, pp=pp, ep=ep, input_len=input_len, output_len=output_len, batch=batch,
                    dtype=dtype, kv_dtype=kv_dtype, node=node_type, efficiency=efficiency, links=links)
