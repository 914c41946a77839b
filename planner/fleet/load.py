"""One model's load: its bucket histogram and rate per period, from a trace or a histogram."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hardware.errors import InputError
from planner import workload as wl
from planner.fleet.request import ModelEntry


@dataclass
class ModelLoad:
    """One model's load after reading: bucket histogram and per-period rates.

    ``shares[t]`` is the bucket share in period t (a trace's own mix per period, or the fixed
    histogram); ``rates_rps[t]`` the total rate; ``mean_tokens`` the mean input + output tokens
    per request (for $ per million tokens; 0 where lengths are unknown, as in a Mélange config,
    whose buckets are grid indices); ``requests[p]`` each bucket's representative
    request at percentile ``p`` of its lengths, for every percentile an SLO is met at, as flat
    ``(input tokens, output tokens)`` arrays (``hist`` holds the SLOs' default percentile's)."""

    hist: wl.Histogram
    rates_rps: np.ndarray
    shares: np.ndarray  # [T, I*J]
    period_s: float
    mean_tokens: float
    summary: dict[str, Any]
    requests: dict[float, tuple[np.ndarray, np.ndarray]]


def _field(i: int, name: str) -> str:
    return f"models[{i}].workload.{name}"


def build_load(entry: ModelEntry, index: int, file: str | None = None) -> ModelLoad:
    """Read the workload of one model entry."""
    w = entry.workload
    if (w.trace is None) == (w.histogram is None):
        raise InputError("give exactly one of trace or histogram", file=file,
                         field=_field(index, "trace"), expected="a trace file or a histogram")
    if w.trace is not None:
        trace = wl.read_trace(w.trace, fmt=w.format)
        grid = wl.default_grid(trace)
        if w.input_edges or w.output_edges:
            grid = wl.BucketGrid(*(wl.check_edges(given, file=file, field=_field(index, name))
                                   if given else default
                                   for name, given, default in (
                                       ("input_edges", w.input_edges, grid.input_edges),
                                       ("output_edges", w.output_edges, grid.output_edges))))
            # the edges must cover the trace, or long requests would hide in the last bucket
            if grid.input_edges[-1] < trace.input_tokens.max() or \
                    grid.output_edges[-1] < trace.output_tokens.max():
                grid = wl.BucketGrid(grid.input_edges[:-1] + (max(grid.input_edges[-1], float(trace.input_tokens.max())),),
                                     grid.output_edges[:-1] + (max(grid.output_edges[-1], float(trace.output_tokens.max())),))
        hist = wl.histogram(trace, grid, percentile=entry.slo.percentile)
        at = {p: hist if p == entry.slo.percentile else wl.histogram(trace, grid, percentile=p)
              for p in entry.slo.percentiles()}
        if w.rate_rps is not None:
            rates = wl.check_rates(w.rate_rps, file=file, field=_field(index, "rate_rps"))
            shares = np.tile(hist.shares.ravel(), (len(rates), 1))
        else:
            wl.period_count(trace, w.period_s, file=file, field=_field(index, "period_s"))
            rates = wl.rate_series(trace, w.period_s)
            masks = wl.period_masks(trace, w.period_s)
            shares = np.stack([
                wl.histogram(trace, grid, mask=mk).shares.ravel() if mk.any() else hist.shares.ravel()
                for mk in masks])
        mean_tokens = float((trace.input_tokens + trace.output_tokens).mean())
        summary = {"trace": Path(w.trace).name, **wl.summarise(trace, min(w.period_s, 60.0))}
    else:
        h = w.histogram
        hist = wl.histogram_from_shares(h.shares, h.input_edges, h.output_edges,
                                        normalise=w.normalise_shares, file=file,
                                        field=_field(index, "histogram.shares"))
        if w.rate_rps is None:
            raise InputError("a histogram needs a rate", file=file, field=_field(index, "rate_rps"),
                             expected="requests per second, or a list of them per period")
        rates = wl.check_rates(w.rate_rps, file=file, field=_field(index, "rate_rps"))
        shares = np.tile(hist.shares.ravel(), (len(rates), 1))
        mid_in = (np.asarray(hist.grid.input_edges[:-1]) + np.asarray(hist.grid.input_edges[1:])) / 2
        mid_out = (np.asarray(hist.grid.output_edges[:-1]) + np.asarray(hist.grid.output_edges[1:])) / 2
        mean_tokens = float((hist.shares * (mid_in[:, None] + mid_out[None, :])).sum())
        summary = {"histogram_buckets": list(hist.grid.shape)}
        at = {p: hist for p in entry.slo.percentiles()}  # upper edges, whatever the percentile
    # one place for every workload form (a trace's own series, rate_rps with a trace or a
    # histogram): rate_scale multiplies whatever rates were read
    with np.errstate(over="ignore"):
        rates = np.asarray(rates, dtype=float) * w.rate_scale
    if not np.all(np.isfinite(rates)):
        raise InputError(f"rate_scale {w.rate_scale:g} times the rates overflows", file=file,
                         field=_field(index, "rate_scale"),
                         expected="a factor that keeps the rates finite (requests per second)")
    if w.periods == "peak" and len(rates) > 1:
        t = int(np.argmax(rates))
        rates, shares = rates[t:t + 1], shares[t:t + 1]
    elif w.periods == "mean" and len(rates) > 1:
        shares = (shares * rates[:, None]).sum(axis=0, keepdims=True) / rates.sum()
        rates = np.array([rates.mean()])
    summary["rates_rps"] = [float(r) for r in rates]
    requests = {p: (h.input_len.ravel(), h.output_len.ravel()) for p, h in at.items()}
    return ModelLoad(hist, np.asarray(rates, dtype=float), shares, w.period_s, mean_tokens, summary,
                     requests)


def bucket_dict(load: ModelLoad, b: int) -> dict[str, Any]:
    """Bucket ``b`` (flat index) as plan data: label, token edges, representative request."""
    g = load.hist.grid
    i, j = divmod(b, load.hist.shares.shape[1])
    return {"label": g.label(i, j), "input_tokens": [g.input_edges[i], g.input_edges[i + 1]],
            "output_tokens": [g.output_edges[j], g.output_edges[j + 1]],
            "representative": [int(load.hist.input_len[i, j]), int(load.hist.output_len[i, j])]}
