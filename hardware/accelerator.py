"""Accelerator descriptions (pydantic at the edge; plain floats inside).

Modelled after Calculon's schema: peak numbers are *dense* (no 2:4 sparsity), and achievable
throughput is peak x an efficiency that depends on the op's size, so a 1-token GEMM and a
4096-token GEMM are not assumed to run at the same fraction of peak.  Every number carries a
source in the catalog file it came from.
"""
from __future__ import annotations

import bisect
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

LinkKind = Literal["nvlink", "nvswitch", "pcie", "infiniband", "roce", "ethernet", "xgmi",
                   "ici", "gaudi-roce"]


class EfficiencyCurve(BaseModel):
    """Efficiency (0..1] as a function of op size, interpolated linearly in log(size).

    ``sizes`` are in the op's natural unit (FLOPs for compute, bytes for memory traffic and
    messages); below the first point the first efficiency holds, above the last the last.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    sizes: tuple[float, ...]
    efficiencies: tuple[float, ...]
    _log_sizes: tuple[float, ...] = PrivateAttr(default=())  # precomputed: ``at`` runs in hot loops

    @model_validator(mode="after")
    def _check(self) -> "EfficiencyCurve":
        if len(self.sizes) != len(self.efficiencies) or not self.sizes:
            raise ValueError("sizes and efficiencies must be non-empty and of equal length")
        if any(b <= a for a, b in zip(self.sizes, self.sizes[1:])):
            raise ValueError("sizes must be strictly increasing")
        if any(not (0.0 < e <= 1.0) for e in self.efficiencies):
            raise ValueError("efficiencies must lie in (0, 1]")
        self._log_sizes = tuple(math.log(x) for x in self.sizes)
        return self

    @classmethod
    def constant(cls, value: float) -> "EfficiencyCurve":
        return cls(sizes=(1.0,), efficiencies=(value,))

    def at(self, size: float) -> float:
        """Efficiency at ``size`` (same unit as ``sizes``)."""
        xs, ys = self.sizes, self.efficiencies
        if size <= xs[0] or len(xs) == 1:
            return ys[0]
        if size >= xs[-1]:
            return ys[-1]
        i = bisect.bisect_right(xs, size)
        lx = self.__pydantic_private__["_log_sizes"]  # not self._log_sizes: pydantic's slow path
        t = (math.log(size) - lx[i - 1]) / (lx[i] - lx[i - 1])
        return ys[i - 1] + t * (ys[i] - ys[i - 1])


class Link(BaseModel):
    """One network tier as seen by one GPU.

    ``bandwidth_bytes_per_s`` is per GPU, per direction (NVLink 4: 450e9, i.e. "900 GB/s
    bidirectional"); ``latency_s`` is the per-message floor (alpha); ``efficiency`` is the
    fraction of the wire rate that collectives reach at large sizes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    kind: LinkKind
    bandwidth_bytes_per_s: float = Field(gt=0)
    latency_s: float = Field(ge=0)
    efficiency: float = Field(gt=0, le=1)
    domain_size: int = Field(default=1, ge=1, description="GPUs reachable over this tier at full rate")
    description: str = ""


class Price(BaseModel):
    """An hourly price per GPU, with where and when it was read."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    usd_per_hour: float = Field(ge=0)
    source: str
    date: str
    confidence: Literal["high", "medium", "low"] = "medium"


DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")


class Accelerator(BaseModel):
    """One accelerator type.  All quantities in SI units (bytes, bytes/s, FLOP/s, W, $/h);
    every number finite (a ``.inf`` bandwidth in a user catalog entry is refused, not listed as
    null and used as infinitely fast)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    name: str
    vendor: str
    architecture: str
    form_factor: str
    aliases: tuple[str, ...] = ()
    memory_bytes: float = Field(gt=0)
    hbm_bandwidth_bytes_per_s: float = Field(gt=0)
    flops_per_s: dict[str, float] = Field(description="dense FLOP/s (or OP/s for int8) per dtype")
    scale_up: Link
    host_link: Link
    tdp_w: float = Field(gt=0)
    price: Price | None = None
    spot_price: Price | None = None
    reserved_price: Price | None = None
    matmul_efficiency: EfficiencyCurve
    memory_efficiency: EfficiencyCurve
    elementwise_memory_efficiency: EfficiencyCurve | None = Field(
        default=None, description="memory efficiency of norms / activations (defaults to memory_efficiency)")
    kernel_overhead_s: float = Field(ge=0, description="fixed time per kernel (launch, tail)")
    sources: tuple[str, ...] = ()
    notes: str = ""

    @field_validator("flops_per_s")
    @classmethod
    def _dtypes(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if k not in DTYPES:
                raise ValueError(f"unknown dtype {k!r} (expected one of {', '.join(DTYPES)})")
            if x <= 0:
                raise ValueError(f"flops_per_s[{k}] must be positive")
        if "bf16" not in v and "fp16" not in v:
            raise ValueError("flops_per_s needs bf16 or fp16")
        return v

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; bf16/fp16 stand in for each other."""
        if dtype in self.flops_per_s:
            return self.flops_per_s[dtype]
        if dtype in ("bf16", "fp16"):
            return self.flops_per_s.get("bf16") or self.flops_per_s["fp16"]
        from hardware.errors import InputError
        raise InputError(f"{self.name} has no {dtype} support",
                         field="dtype", expected=" or ".join(sorted(self.flops_per_s)))

    def supports(self, dtype: str) -> bool:
        return dtype in self.flops_per_s or (dtype in ("bf16", "fp16"))

    @property
    def price_per_hour(self) -> float | None:
        return None if self.price is None else self.price.usd_per_hour

    def with_price(self, usd_per_hour: float, *, source: str = "user override",
                   price_class: str = "on_demand") -> "Accelerator":
        """A copy with one price replaced (user overrides win over the catalog)."""
        field = {"on_demand": "price", "spot": "spot_price", "reserved": "reserved_price"}[price_class]
        return self.model_copy(update={field: Price(usd_per_hour=usd_per_hour, source=source,
                                                    date="user", confidence="high")})
