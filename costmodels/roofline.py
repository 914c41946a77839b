"""Time of one op on one accelerator: roofline with size-dependent efficiencies.

    t = overhead + max( FLOPs / (peak(dtype) * e_c(FLOPs)),  bytes / (HBM_bw * e_m(bytes)) )

for compute-side ops, and the alpha-beta model of :mod:`costmodels.comm` for collectives.
The efficiencies come from one of three fidelity layers (recorded on every result):

* ``analytical``: the catalog's uncalibrated per-architecture priors;
* ``calibrated``: curves fitted to measured tables by :mod:`costmodels.calibration`;
* ``measured``: a direct lookup in a measured table (when one is given and covers the op).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

from costmodels.comm import LinkModel, collective_time_s
from costmodels.ops import Op
from hardware.accelerator import Accelerator, EfficiencyCurve

FIDELITY_LAYERS = ("analytical", "calibrated", "measured")
COMPUTE_KINDS = ("gemm", "attention", "elementwise")


@dataclass(frozen=True)
class KindEfficiency:
    """Efficiencies of one op kind on one accelerator.

    ``compute`` is indexed by FLOPs, ``memory`` by bytes; ``overhead_s`` is the fixed time per
    kernel; ``fidelity`` says where the numbers came from.  ``roofline_p`` (set by calibration)
    replaces max(t_compute, t_memory) with the soft roofline (t_c^p + t_m^p)^(1/p): real kernels
    near the ridge point are slower than either side alone (p = 2 fits Vidur's GEMMs best).
    """

    compute: EfficiencyCurve
    memory: EfficiencyCurve
    overhead_s: float
    fidelity: str = "analytical"
    roofline_p: float | None = None


@dataclass(frozen=True)
class DeviceEfficiency:
    """Per-op-kind efficiencies for one accelerator (kinds: gemm, attention, elementwise).

    ``by_op`` optionally refines single op names (e.g. ``mlp_up_gate``) after calibration.
    """

    by_kind: Mapping[str, KindEfficiency]
    by_op: Mapping[str, KindEfficiency] = field(default_factory=dict)

    def for_op(self, op: Op) -> KindEfficiency:
        return self.by_op.get(op.name) or self.by_kind[op.kind]


def default_efficiency(accel: Accelerator) -> DeviceEfficiency:
    """The analytical layer: the catalog's priors for every compute op kind."""
    k = KindEfficiency(accel.matmul_efficiency, accel.memory_efficiency, accel.kernel_overhead_s)
    by_kind = {kind: k for kind in COMPUTE_KINDS}
    if accel.elementwise_memory_efficiency is not None:
        by_kind["elementwise"] = KindEfficiency(accel.matmul_efficiency, accel.elementwise_memory_efficiency,
                                                accel.kernel_overhead_s)
    return DeviceEfficiency(by_kind)


class MeasuredTable(Protocol):
    """A measured-time oracle: returns seconds for an op, or None when it does not cover it."""

    def lookup(self, op: Op, *, tp: int) -> float | None: ...


@dataclass(frozen=True)
class OpTime:
    """Time of an op over all its instances on the latency path.

    ``time_s`` = ``count`` x ``instance_s``; ``bound`` is "compute", "memory",
    "communication" or "overhead"; ``fidelity`` is one of :data:`FIDELITY_LAYERS`.
    """

    name: str
    kind: str
    time_s: float
    instance_s: float
    count: int
    bound: str
    fidelity: str
    flops: float
    bytes: float


def compute_op_time(op: Op, accel: Accelerator, eff: KindEfficiency, dtype: str) -> tuple[float, str]:
    """(seconds for one instance, bound) of a compute-side op."""
    peak = accel.peak_flops(dtype if op.kind == "gemm" else "bf16")
    t_c = op.flops / (peak * eff.compute.at(max(op.flops, 1.0))) if op.flops > 0 else 0.0
    t_m = op.bytes / (accel.hbm_bandwidth_bytes_per_s * eff.memory.at(max(op.bytes, 1.0))) if op.bytes > 0 else 0.0
    p = eff.roofline_p
    body = max(t_c, t_m) if p is None else (t_c ** p + t_m ** p) ** (1.0 / p)
    bound = "compute" if t_c >= t_m else "memory"
    if eff.overhead_s > body:
        bound = "overhead"
    return eff.overhead_s + body, bound


def op_time(op: Op, accel: Accelerator, *, dtype: str = "bf16", eff: DeviceEfficiency | None = None,
            links: Mapping[str, LinkModel] | None = None, measured: MeasuredTable | None = None,
            tp: int = 1) -> OpTime:
    """Time of ``op`` (all ``op.count`` instances) on ``accel``.

    Args:
        dtype: compute dtype of GEMMs ("bf16", "fp8"...).
        eff: efficiencies (defaults to the analytical layer).
        links: link model per comm scope ("tp", "ep", "pp"), required for comm ops.
        measured: an optional measured table, consulted first.
        tp: tensor-parallel degree (measured tables are keyed by it).
    """
    if op.kind == "comm":
        if not links or op.scope not in links:
            raise ValueError(f"no link model for the {op.scope!r} group of op {op.name}")
        link = links[op.scope]
        t = collective_time_s(op.collective, op.bytes, op.group_size, link)
        fidelity = "calibrated" if link.efficiency_curve is not None else "analytical"
        return OpTime(op.name, op.kind, t * op.count, t, op.count, "communication", fidelity, 0.0, op.bytes)
    if measured is not None:
        t = measured.lookup(op, tp=tp)
        if t is not None:
            return OpTime(op.name, op.kind, t * op.count, t, op.count, _bound_hint(op, accel, dtype),
                          "measured", op.flops, op.bytes)
    k_eff = (eff or default_efficiency(accel)).for_op(op)
    t, bound = compute_op_time(op, accel, k_eff, dtype)
    return OpTime(op.name, op.kind, t * op.count, t, op.count, bound, k_eff.fidelity, op.flops, op.bytes)


def _bound_hint(op: Op, accel: Accelerator, dtype: str) -> str:
    """Which roofline side an op sits on (for measured ops, whose time carries no bound)."""
    peak = accel.peak_flops(dtype if op.kind == "gemm" else "bf16")
    return "compute" if op.flops / peak >= op.bytes / accel.hbm_bandwidth_bytes_per_s else "memory"
