"""Capacity from measured profiles: AIBrix GPU-optimizer tables and Mélange ``tputs`` grids
(zero throughput means "cannot serve")."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hardware.errors import InputError
from planner import workload as wl
from planner.fleet.load import ModelLoad
from planner.fleet.options import Option
from planner.fleet.request import GPUEntry, ModelEntry, ProfileSpec, SLOSpec
from planner.plan import json_lines, read_structured


#: an offered rate counts as sustained when the benchmark achieved at least this share of it:
#: below, requests queue without bound and a finite benchmark understates their latency (the
#: tolerance AIBrix's gen_profile.py applies, TPUT_TOLERANCE)
SUSTAINED_FRACTION = 0.9
#: the benchmark rows' metric for each SLO target
BENCHMARK_METRICS = {"ttft_s": "TTFT", "tpot_s": "TPOT", "e2e_s": "E2E"}


@dataclass(frozen=True)
class ProfileTable:
    """A measured max-rate table: ``tputs[out_idx][in_idx]`` at tick lengths (AIBrix layout);
    ``measured_at``: the SLO its rates meet, in words."""

    output_ticks: tuple[float, ...]
    input_ticks: tuple[float, ...]
    tputs: np.ndarray  # [len(output_ticks), len(input_ticks)], req/s; 0 = cannot serve
    cost: float | None
    source: str
    measured_at: str = "an SLO the profile does not record"

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


def _slo_words(slos: Any) -> str:
    """An AIBrix profile's ``slos`` record (``{"percentile": 99, "e2e": 5.0}``) in words."""
    if not isinstance(slos, dict):
        return "an SLO the profile does not record"
    pct = slos.get("percentile")
    targets = [f"{k.upper()} {v:g} s" for k, v in slos.items()
               if k != "percentile" and isinstance(v, (int, float))]
    at = f"p{pct:g}" if isinstance(pct, (int, float)) and pct > 0 else "the mean"
    if not targets:
        return "no SLO (the profile's slos)"
    return f"{', '.join(targets)} at {at} (the profile's slos)"


def benchmark_table(spec: ProfileSpec, slo: SLOSpec) -> ProfileTable:
    """AIBrix benchmark rows (one JSON object per input_tokens x output_tokens x request_rate x
    metric, with ``mean`` / ``P50`` / ``P90`` / ``P99``) as a capacity table at ``slo``: a cell's
    rate (req/s) is the achieved throughput (metric TPUT) at the largest offered rate that was
    sustained (:data:`SUSTAINED_FRACTION`) and at which every SLO target's measured latency at
    its percentile is within the target; 0 when no measured rate is (cannot serve)."""
    file = spec.file
    cells: dict[tuple[float, float, float], dict[str, dict]] = {}
    for n, row in json_lines(file, what="benchmark rows", expected=(
            '{"input_tokens", "output_tokens", "request_rate", "metric", "mean", "P90", ...}')):
        try:
            key = (float(row["input_tokens"]), float(row["output_tokens"]), float(row["request_rate"]))
            metric = str(row["metric"])
        except (KeyError, TypeError, ValueError):
            key, metric = (), ""
        if len(key) != 3 or not all(math.isfinite(x) and x >= 0 for x in key):
            raise InputError(f"line {n} lacks a finite number >= 0 in input_tokens, "
                             "output_tokens or request_rate, or a metric", file=file,
                             expected="AIBrix gpu_benchmark.py rows")
        cells.setdefault(key, {})[metric] = row
    if not any("TPUT" in c for c in cells.values()):
        raise InputError("no TPUT (throughput) rows", file=file,
                         expected="AIBrix gpu_benchmark.py rows with metric TPUT")
    targets = {k: getattr(slo, k) for k in BENCHMARK_METRICS if getattr(slo, k) is not None}
    columns = {}
    for k in targets:
        col = f"P{slo.percentile_of(k):g}"
        if not any(col in r for c in cells.values() for r in c.values()):
            raise InputError(f"the benchmark rows have no {col} column for {k} at percentile "
                             f"{slo.percentile_of(k):g}", file=file,
                             expected="percentile 50, 90 or 99 (the columns AIBrix measures)")
        columns[k] = col
    ins = sorted({c[0] for c in cells})
    outs = sorted({c[1] for c in cells})

    def measured(value: Any) -> bool:  # a finite number (a missing or broken cell is not)
        return isinstance(value, (int, float)) and math.isfinite(value)

    def meets(rate_rows: dict, rate: float) -> bool:
        tput = rate_rows.get("TPUT", {}).get("mean")
        if not measured(tput) or tput < SUSTAINED_FRACTION * rate:
            return False
        for k, limit in targets.items():
            value = rate_rows.get(BENCHMARK_METRICS[k], {}).get(columns[k])
            if not measured(value) or value > limit:
                return False
        return True

    tputs = np.zeros((len(outs), len(ins)))
    for (i, o, rate), rate_rows in sorted(cells.items()):
        if meets(rate_rows, rate):  # ascending rates: the largest sustained one wins
            tputs[outs.index(o), ins.index(i)] = float(rate_rows["TPUT"]["mean"])
    words = ", ".join(f"{BENCHMARK_METRICS[k]} {v:g} s at {columns[k].lower()}"
                      for k, v in targets.items()) or "no latency target"
    return ProfileTable(tuple(outs), tuple(ins), tputs, None, Path(file).name,
                        f"the request's SLOs ({words}), derived from benchmark rows "
                        f"(offered rates sustained to {SUSTAINED_FRACTION:.0%})")


def load_profile(spec: ProfileSpec, slo: SLOSpec | None = None) -> ProfileTable | np.ndarray:
    """An AIBrix profile as a :class:`ProfileTable` (from AIBrix benchmark rows: derived at
    ``slo``, see :func:`benchmark_table`), or a Mélange ``tputs`` grid (aligned with the
    request's histogram) as an array."""
    if spec.follows_slo():
        return benchmark_table(spec, slo if slo is not None else SLOSpec())
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
        if not isinstance(info[key], dict):
            raise InputError("the entry is not an object", file=file, field=f"gpu_info.{key}",
                             expected="{cost: $/h, tputs: [[req/s]]}")
        return read_tputs(info[key].get("tputs"), file, f"gpu_info.{key}.tputs")
    if "tputs" not in data or "indexes" not in data:
        raise InputError("not an AIBrix GPU profile", file=file, field="tputs/indexes",
                         expected="keys gpu, cost, tputs[out][in], indexes [output ticks, input ticks]")
    tputs = read_tputs(data["tputs"], file, "tputs")
    idx = data["indexes"]
    if not (isinstance(idx, list) and len(idx) == 2):
        raise InputError("indexes must be [output ticks, input ticks]", file=file, field="indexes")
    out_t, in_t = (_ticks(a, file, f"indexes[{n}]") for n, a in enumerate(idx))
    if tputs.shape != (len(out_t), len(in_t)):
        raise InputError(f"tputs is {tputs.shape[0]} x {tputs.shape[1]} but indexes give "
                         f"{len(out_t)} x {len(in_t)}", file=file, field="tputs",
                         expected="one row per output tick, one column per input tick")
    cost = data.get("cost")
    return ProfileTable(out_t, in_t, tputs, float(cost) if isinstance(cost, (int, float)) else None,
                        Path(file).name, _slo_words(data.get("slos")))


def _ticks(raw: Any, file: str, field: str) -> tuple[float, ...]:
    """A profile's tick lengths (tokens): finite, >= 0 and increasing, as the lookup needs."""
    ticks = wl.finite_nonnegative(raw, ndim=1, what="ticks", shape="a list of token lengths",
                                  values="token lengths >= 0", file=file, field=field)
    if np.any(np.diff(ticks) <= 0):
        raise InputError(f"ticks {[float(x) for x in ticks]} do not increase", file=file,
                         field=field, expected="token lengths in increasing order")
    return tuple(float(x) for x in ticks)


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
        table = load_profile(p, entry.slo)
        if isinstance(table, np.ndarray):
            if table.shape != load.hist.shares.shape:
                raise InputError(f"tputs grid {table.shape} does not match the workload grid "
                                 f"{load.hist.shares.shape}", file=p.file, field="tputs",
                                 expected="the same bucket grid as workload_distribution")
            cap = table.ravel().copy()
            measured_at = "an SLO Mélange configs do not record"
        else:
            cap = np.array([table.lookup(a, b) for a, b in zip(rep_in, rep_out)])
            measured_at = table.measured_at
        options.append(Option(index, entry.name or entry.model, gname, p.tp, p.pp, cap,
                              f"profile:{Path(p.file).name}", measured_at=measured_at))
    return options
