"""Capacity from measured profiles: AIBrix GPU-optimizer tables and Mélange ``tputs`` grids
(zero throughput means "cannot serve")."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hardware.errors import InputError
from planner import workload as wl
from planner.fleet.load import ModelLoad
from planner.fleet.options import Option
from planner.fleet.request import GPUEntry, ModelEntry, ProfileSpec
from planner.plan import read_structured


@dataclass(frozen=True)
class ProfileTable:
    """A measured max-rate table: ``tputs[out_idx][in_idx]`` at tick lengths (AIBrix layout)."""

    output_ticks: tuple[float, ...]
    input_ticks: tuple[float, ...]
    tputs: np.ndarray  # [len(output_ticks), len(input_ticks)], req/s; 0 = cannot serve
    cost: float | None
    source: str

    def lookup(self, input_len: float, output_len: float) -> float:
        """Rate for a request size: the table cell at the smallest ticks >= the lengths (a
        longer request never gets a shorter request's capacity); 0 beyond the table."""
        i = int(np.searchsorted(self.input_ticks, input_len - 1e-9))
        o = int(np.searchsorted(self.output_ticks, output_len - 1e-9))
        if i >= len(self.input_ticks) or o >= len(self.output_ticks):
            return 0.0
        return float(self.tputs[o, i])


def read_tputs(raw: Any, file: str, field: str) -> np.ndarray:
    """A throughput grid (req/s, rows by output length) checked: 2-D, finite, >= 0."""
    return wl.finite_nonnegative(raw, ndim=2, what="throughputs", shape="a list of rows of req/s",
                                 values="req/s >= 0 (0 means cannot meet the SLO)", file=file,
                                 field=field)


def load_profile(spec: ProfileSpec) -> ProfileTable | np.ndarray:
    """An AIBrix profile as a :class:`ProfileTable`, or a Mélange ``tputs`` grid (aligned with
    the request's histogram) as an array."""
    data = read_structured(spec.file, what="capacity profile")
    file = spec.file
    if not isinstance(data, dict):
        raise InputError("profile is not a JSON object", file=file, expected="{gpu, tputs, indexes}")
    fmt = spec.format
    if fmt == "auto":
        fmt = "melange" if "gpu_info" in data else "aibrix"
    if fmt == "melange":
        info = data.get("gpu_info")
        key = spec.key or spec.gpu
        if not isinstance(info, dict) or key not in info:
            raise InputError(f"no gpu_info entry {key!r}", file=file, field="gpu_info",
                             expected=f"one of {sorted(info) if isinstance(info, dict) else []}")
        return read_tputs(info[key].get("tputs"), file, f"gpu_info.{key}.tputs")
    if "tputs" not in data or "indexes" not in data:
        raise InputError("not an AIBrix GPU profile", file=file, field="tputs/indexes",
                         expected="keys gpu, cost, tputs[out][in], indexes [output ticks, input ticks]")
    tputs = read_tputs(data["tputs"], file, "tputs")
    idx = data["indexes"]
    if not (isinstance(idx, list) and len(idx) == 2):
        raise InputError("indexes must be [output ticks, input ticks]", file=file, field="indexes")
    out_t, in_t = (tuple(float(x) for x in a) for a in idx)
    if tputs.shape != (len(out_t), len(in_t)):
        raise InputError(f"tputs is {tputs.shape[0]} x {tputs.shape[1]} but indexes give "
                         f"{len(out_t)} x {len(in_t)}", file=file, field="tputs",
                         expected="one row per output tick, one column per input tick")
    cost = data.get("cost")
    return ProfileTable(out_t, in_t, tputs, float(cost) if isinstance(cost, (int, float)) else None,
                        Path(file).name)


def profile_options(entry: ModelEntry, index: int, load: ModelLoad, gpus: list[GPUEntry],
                    file: str | None) -> list[Option]:
    """Capacity from measured profiles (zero throughput = cannot serve)."""
    names = {g.name.lower(): g.name for g in gpus}
    options = []
    rep_in = load.hist.input_len.ravel()
    rep_out = load.hist.output_len.ravel()
    for pi, p in enumerate(entry.profiles):
        gname = names.get(p.gpu.lower())
        if gname is None:
            raise InputError(f"profile for GPU {p.gpu!r} which is not among the candidate gpus",
                             file=file, field=f"models[{index}].profiles[{pi}].gpu",
                             expected=f"one of {sorted(names.values())}")
        table = load_profile(p)
        if isinstance(table, np.ndarray):
            if table.shape != load.hist.shares.shape:
                raise InputError(f"tputs grid {table.shape} does not match the workload grid "
                                 f"{load.hist.shares.shape}", file=p.file, field="tputs",
                                 expected="the same bucket grid as workload_distribution")
            cap = table.ravel().copy()
        else:
            cap = np.array([table.lookup(a, b) for a, b in zip(rep_in, rep_out)])
        options.append(Option(index, entry.name or entry.model, gname, p.tp, p.pp, cap,
                              f"profile:{Path(p.file).name}"))
    return options
