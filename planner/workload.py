"""Workloads: request traces, bucket histograms and rate series (pure functions, numpy).

A trace is a list of requests with an arrival time and input / output token counts, read from
the Azure LLM inference CSV (``TIMESTAMP, ContextTokens, GeneratedTokens``), BurstGPT's CSV
(``Timestamp, Model, Request tokens, Response tokens, ...``) or JSON lines.  The planners see
a workload as a grid of request-size buckets (input length x output length) with the share of
requests in each, and a request rate per period.  Used by the fleet and the parallel planners.

Units: times in seconds (relative to the first request), rates in requests per second, lengths
in tokens.  Every malformed input raises :class:`hardware.errors.InputError`.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from hardware.errors import InputError
from planner.plan import json_lines

#: trace formats :func:`read_trace` understands
TRACE_FORMATS = ("azure", "burstgpt", "jsonl")

_EPOCH = datetime(1970, 1, 1)

#: the longest request (input or output tokens) a workload may hold: far beyond any model's
#: context, so a larger count is a broken file rather than a request
MAX_TOKENS = 100_000_000

#: the columns (time, input tokens, output tokens) a CSV trace of a named format must have
#: (case-insensitive); ``format: auto`` also takes the variants below
CSV_COLUMNS = {"azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
               "burstgpt": ("Timestamp", "Request tokens", "Response tokens")}

# column name variants (lower-cased) per role
_TIME_COLS = ("timestamp", "time", "arrival_time", "arrival_time_s", "ts")
_IN_COLS = ("contexttokens", "request tokens", "input_tokens", "prompt_tokens", "input_len",
            "num_prefill_tokens", "input")
_OUT_COLS = ("generatedtokens", "response tokens", "output_tokens", "completion_tokens",
             "output_len", "num_decode_tokens", "output")


@dataclass(frozen=True)
class Trace:
    """Requests of one workload, sorted by arrival.

    Attributes:
        arrival_s: ``[N]`` arrival times in seconds since the first request.
        input_tokens: ``[N]`` prompt lengths.
        output_tokens: ``[N]`` generated lengths.
        source: the file it came from, for messages.
    """

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    source: str = "<trace>"

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def span_s(self) -> float:
        """Seconds from the first to the last arrival (0 for one request)."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0

    @property
    def duration_s(self) -> float:
        """:attr:`span_s`, at least 1 s so that a rate is defined for summaries; rates the
        planners use come from :func:`rate_series`, which refuses a trace spanning 0 s."""
        return max(self.span_s, 1.0)

    @property
    def mean_rate_rps(self) -> float:
        return len(self) / self.duration_s


@dataclass(frozen=True)
class BucketGrid:
    """A grid of request sizes: bucket (i, j) holds input lengths in
    ``(input_edges[i], input_edges[i + 1]]`` and output lengths in
    ``(output_edges[j], output_edges[j + 1]]``."""

    input_edges: tuple[float, ...]
    output_edges: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.input_edges) - 1, len(self.output_edges) - 1

    def label(self, i: int, j: int) -> str:
        """A readable name, e.g. ``in(512,1024]xout(64,128]``."""
        a, b = self.input_edges[i], self.input_edges[i + 1]
        c, d = self.output_edges[j], self.output_edges[j + 1]
        return f"in({_num(a)},{_num(b)}]xout({_num(c)},{_num(d)}]"


@dataclass(frozen=True)
class Histogram:
    """Bucket shares and a representative request size per bucket.

    Attributes:
        grid: the bucket edges.
        shares: ``[I, J]`` share of requests per bucket (sums to 1).
        input_len: ``[I, J]`` representative input length per bucket (tokens).
        output_len: ``[I, J]`` representative output length per bucket (tokens).
    """

    grid: BucketGrid
    shares: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# ---------------------------------------------------------------------------------------- reading

def _parse_time(text: str, path: str, line: int, column: str) -> float:
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise InputError(f"line {line}: time {text!r} is not finite", file=path, field=column,
                             expected="seconds or an ISO date-time like 2023-11-16 18:17:03.98")
        return value
    try:
        # Azure writes 7 fractional digits; datetime takes at most 6
        if "." in text:
            head, frac = text.rsplit(".", 1)
            text = f"{head}.{frac[:6]}"
        stamp = datetime.fromisoformat(text)
        if stamp.tzinfo is not None:
            return stamp.timestamp()
        # naive times: seconds since a naive epoch, so the local time zone (and its DST
        # jumps) never shifts arrivals
        return (stamp - _EPOCH).total_seconds()
    except ValueError:
        raise InputError(f"line {line}: cannot read time {text!r}", file=path, field=column,
                         expected="seconds or an ISO date-time like 2023-11-16 18:17:03.98") from None


def _parse_count(text: str, path: str, line: int, column: str) -> int:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise InputError(f"line {line}: {text!r} is not a number", file=path, field=column,
                         expected="a non-negative token count") from None
    if not (0 <= value <= MAX_TOKENS):  # also NaN
        raise InputError(f"line {line}: token count {text!r} is negative, not finite or above "
                         f"{MAX_TOKENS:,}", file=path, field=column,
                         expected="a non-negative token count")
    return int(round(value))


def _pick(header: Sequence[str], names: Iterable[str]) -> str | None:
    lowered = {h.strip().lower(): h for h in header}
    for n in names:
        if n in lowered:
            return lowered[n]
    return None


def _finish(times: list[float], ins: list[int], outs: list[int], path: str) -> Trace:
    if not times:
        raise InputError("the trace has no requests", file=path,
                         expected="at least one row with a time and token counts")
    t = np.asarray(times, dtype=float)
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order][0]
    if not np.isfinite(t[-1]):
        raise InputError("the arrival times span more seconds than a float holds", file=path,
                         field="timestamps", expected="times in seconds or ISO date-times")
    return Trace(t, np.asarray(ins, dtype=np.int64)[order], np.asarray(outs, dtype=np.int64)[order],
                 str(path))


def _read_csv(path: Path, fmt: str | None) -> Trace:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:  # BOM or not
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        if fmt in CSV_COLUMNS:
            # a named format reads its own columns only: another format's header is an error,
            # not a guess
            want = CSV_COLUMNS[fmt]
            tcol, icol, ocol = (_pick(header, (w.lower(),)) for w in want)
            if tcol is None or icol is None or ocol is None:
                missing = [w for w, c in zip(want, (tcol, icol, ocol)) if c is None]
                other = [f for f, cols in CSV_COLUMNS.items()
                         if f != fmt and all(_pick(header, (c.lower(),)) for c in cols)]
                raise InputError(
                    f"the header is not {fmt}'s: missing column(s) {', '.join(missing)}; "
                    f"columns found: {', '.join(h.strip() for h in header) or 'none'}",
                    file=str(path), field="header",
                    expected=f"{fmt} columns {', '.join(want)}",
                    hint=(f"The header is {other[0]}'s: set the workload's format to "
                          f"{other[0]} (or auto)") if other else None)
        else:
            tcol, icol, ocol = _pick(header, _TIME_COLS), _pick(header, _IN_COLS), _pick(header, _OUT_COLS)
            want = ("a time column", "an input-token column", "an output-token column")
        if tcol is None or icol is None or ocol is None:
            missing = [w for w, c in zip(want, (tcol, icol, ocol)) if c is None]
            raise InputError(f"missing column(s) {', '.join(missing)}; header is {header}",
                             file=str(path), field="header",
                             expected="Azure (TIMESTAMP,ContextTokens,GeneratedTokens) or BurstGPT "
                                      "(Timestamp,Model,Request tokens,Response tokens,...) columns")
        failed = _pick(header, ("log type",))
        times, ins, outs = [], [], []
        for n, row in enumerate(reader, start=2):
            if row.get(tcol) in (None, "") and row.get(icol) in (None, ""):
                continue  # blank line
            if failed and "fail" in str(row.get(failed, "")).lower():
                continue  # BurstGPT's failed requests generate nothing
            times.append(_parse_time(row.get(tcol) or "", str(path), n, tcol))
            ins.append(_parse_count(row.get(icol) or "", str(path), n, icol))
            outs.append(_parse_count(row.get(ocol) or "", str(path), n, ocol))
    return _finish(times, ins, outs, str(path))


def _read_jsonl(path: Path) -> Trace:
    times, ins, outs = [], [], []
    for n, row in json_lines(path, what="trace file",
                             expected='{"timestamp": s, "input_tokens": n, "output_tokens": n}'):
        keys = {k.lower(): k for k in row}
        tk, ik, ok = (next((keys[c] for c in cols if c in keys), None)
                      for cols in (_TIME_COLS, _IN_COLS, _OUT_COLS))
        if tk is None or ik is None or ok is None:
            raise InputError(f"line {n} lacks a time or token-count key", file=str(path),
                             expected="keys timestamp, input_tokens, output_tokens")
        times.append(_parse_time(str(row[tk]), str(path), n, tk))
        ins.append(_parse_count(row[ik], str(path), n, ik))
        outs.append(_parse_count(row[ok], str(path), n, ok))
    return _finish(times, ins, outs, str(path))


def read_trace(path: str | Path, *, fmt: str = "auto") -> Trace:
    """Read a trace file (Azure CSV, BurstGPT CSV or JSONL; ``fmt="auto"`` guesses from the
    suffix and header)."""
    path = Path(path)
    if fmt not in ("auto", *TRACE_FORMATS):
        raise InputError(f"unknown trace format {fmt!r}", field="format",
                         expected="auto, " + ", ".join(TRACE_FORMATS))
    if not path.is_file():
        raise InputError("trace file not found", file=str(path))
    if path.stat().st_size == 0:
        raise InputError("the trace file is empty", file=str(path),
                         expected="a header and at least one request")
    if fmt == "jsonl" or (fmt == "auto" and path.suffix.lower() in (".jsonl", ".ndjson")):
        return _read_jsonl(path)
    return _read_csv(path, None if fmt == "auto" else fmt)


# ------------------------------------------------------------------------------------- histograms

def log2_edges(max_value: float, *, start: float = 0.0, first: float = 16.0) -> tuple[float, ...]:
    """Bucket edges ``start, first, 2*first, 4*first, ...`` up to at least ``max_value``."""
    edges = [start, first]
    while edges[-1] < max_value:
        edges.append(edges[-1] * 2)
    return tuple(float(e) for e in edges)


def default_grid(trace: Trace) -> BucketGrid:
    """Power-of-two input / output edges covering the trace (inputs from 128, outputs from 16)."""
    return BucketGrid(log2_edges(max(int(trace.input_tokens.max()), 1), first=128.0),
                      log2_edges(max(int(trace.output_tokens.max()), 1), first=16.0))


def bucket_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bucket of each value for edges ``e0 < e1 < ...``: bucket k holds ``(e_k, e_k+1]``; values
    at or below ``e0`` go to bucket 0 and above the last edge to the last bucket."""
    idx = np.searchsorted(np.asarray(edges, dtype=float), values, side="left") - 1
    return np.clip(idx, 0, len(edges) - 2)


def histogram(trace: Trace, grid: BucketGrid, *, percentile: float = 100.0,
              mask: np.ndarray | None = None) -> Histogram:
    """Shares per bucket, and per bucket the ``percentile`` of its requests' lengths as the
    representative size (100: the longest request in the bucket, conservative).  Empty buckets
    get their upper edges."""
    ii = bucket_index(trace.input_tokens, grid.input_edges)
    jj = bucket_index(trace.output_tokens, grid.output_edges)
    if mask is not None:
        ii, jj = ii[mask], jj[mask]
        tin, tout = trace.input_tokens[mask], trace.output_tokens[mask]
    else:
        tin, tout = trace.input_tokens, trace.output_tokens
    shape = grid.shape
    counts = np.zeros(shape)
    np.add.at(counts, (ii, jj), 1.0)
    total = counts.sum()
    shares = counts / total if total > 0 else counts
    rep_in = np.tile(np.asarray(grid.input_edges[1:], dtype=float)[:, None], (1, shape[1]))
    rep_out = np.tile(np.asarray(grid.output_edges[1:], dtype=float)[None, :], (shape[0], 1))
    flat = ii * shape[1] + jj
    order = np.argsort(flat, kind="stable")
    flat_sorted = flat[order]
    bounds = np.searchsorted(flat_sorted, np.arange(shape[0] * shape[1] + 1))
    for cell in range(shape[0] * shape[1]):
        lo, hi = bounds[cell], bounds[cell + 1]
        if hi > lo:
            sel = order[lo:hi]
            i, j = divmod(cell, shape[1])
            rep_in[i, j] = max(1.0, float(np.percentile(tin[sel], percentile)))
            rep_out[i, j] = max(1.0, float(np.percentile(tout[sel], percentile)))
    return Histogram(grid, shares, np.ceil(rep_in), np.ceil(rep_out))


def histogram_from_shares(shares: Sequence[Sequence[float]], input_edges: Sequence[float],
                          output_edges: Sequence[float], *, normalise: bool = False,
                          file: str | None = None, field: str = "shares") -> Histogram:
    """A histogram given as shares on a grid; representative sizes are the upper edges.

    Shares must be non-negative and sum to 1 (within 1e-6); with ``normalise`` they are scaled
    to sum to 1 instead.
    """
    arr = check_shares(shares, normalise=normalise, file=file, field=field)
    # the edges sit beside the shares: "models[0].workload.histogram.shares" -> "...input_edges"
    where = field.rpartition(".")[0]
    grid = BucketGrid(*(check_edges(edges, file=file, field=f"{where}.{name}" if where else name)
                        for name, edges in (("input_edges", input_edges),
                                            ("output_edges", output_edges))))
    if arr.shape != grid.shape:
        raise InputError(f"shares are {arr.shape[0]} x {arr.shape[1]} but the edges give "
                         f"{grid.shape[0]} x {grid.shape[1]} buckets", file=file, field=field,
                         expected="one row per input bucket, one column per output bucket")
    rep_in = np.tile(np.asarray(grid.input_edges[1:])[:, None], (1, grid.shape[1]))
    rep_out = np.tile(np.asarray(grid.output_edges[1:])[None, :], (grid.shape[0], 1))
    return Histogram(grid, arr, rep_in, rep_out)


def check_edges(edges: Sequence[float], *, file: str | None = None, field: str = "edges"
                ) -> tuple[float, ...]:
    """Bucket edges as a tuple: at least two increasing, non-negative token counts of at most
    :data:`MAX_TOKENS`, or one :class:`InputError`."""
    try:
        values = tuple(float(e) for e in edges)
    except (TypeError, ValueError):
        values = ()
    if (len(values) < 2 or any(not (0 <= e <= MAX_TOKENS) for e in values)
            or any(b <= a for a, b in zip(values, values[1:]))):
        given = ", ".join(_num(e) if isinstance(e, (int, float)) else repr(e) for e in edges)
        raise InputError(f"bucket edges [{given}] are not at least two increasing token counts "
                         f"in [0, {MAX_TOKENS:,}]", file=file, field=field,
                         expected="e.g. [0, 512, 1024, 2048]")
    return values


def _holds_bool(raw: Any) -> bool:
    """Whether a number, or a (nested) list of them, holds a bool."""
    if isinstance(raw, (list, tuple)):
        return any(_holds_bool(x) for x in raw)
    return isinstance(raw, (bool, np.bool_))


def finite_nonnegative(raw: Any, *, ndim: int, what: str, shape: str, values: str,
                       file: str | None = None, field: str = "", promote: bool = False
                       ) -> np.ndarray:
    """``raw`` as a float array of ``ndim`` (1 or 2) dimensions, not empty, every entry finite
    and >= 0, or one :class:`InputError` saying which of these fails.  ``what``: the values'
    name in messages ("rates"); ``shape`` / ``values``: what was expected of the layout ("a
    list of rows of req/s") and of each value ("rates >= 0 requests per second");
    ``promote``: a flat list is one row of a 2-D grid."""
    try:
        if _holds_bool(raw):  # true / false would pass as 1 / 0
            raise TypeError
        arr = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{what} are not numbers", file=file, field=field, expected=shape) from None
    if ndim == 1 or (promote and arr.ndim == 1):
        arr = np.atleast_1d(arr).reshape((-1,) if ndim == 1 else (1, -1))
    if arr.size == 0:
        raise InputError(f"no {what} given", file=file, field=field, expected=shape)
    if arr.ndim != ndim:
        layout = "a number or a flat list" if ndim == 1 else "a 2-D grid"
        raise InputError(f"{what} are not {layout}", file=file, field=field, expected=shape)
    bad = arr[~np.isfinite(arr) | (arr < 0)]
    if bad.size:
        raise InputError(f"{what} must be finite and non-negative: found {bad[0]:g}", file=file,
                         field=field, expected=values)
    return arr


def check_shares(shares, *, normalise: bool = False, file: str | None = None,
                 field: str = "shares") -> np.ndarray:
    """Shares as a 2-D array: non-negative, finite, summing to 1 (or scaled when asked)."""
    arr = finite_nonnegative(shares, ndim=2, what="shares", shape="a list of rows of numbers",
                             values="shares >= 0", file=file, field=field, promote=True)
    total = float(arr.sum())
    if total <= 0:
        raise InputError("shares sum to 0", file=file, field=field, expected="shares summing to 1")
    if abs(total - 1.0) > 1e-6:
        if not normalise:
            raise InputError(f"shares sum to {total:.6g}, not 1", file=file, field=field,
                             expected="shares summing to 1",
                             hint="Set normalise_shares: true to scale them")
        arr = arr / total
    return arr


# ------------------------------------------------------------------------------------ rate series

#: most periods a load curve may have (a week of 5-minute periods): every period is a block of
#: the planners' models, and far more would outgrow any time limit
MAX_PERIODS = 2016


def period_count(trace: Trace, period_s: float, *, file: str | None = None,
                 field: str = "period_s") -> int:
    """Periods of ``period_s`` seconds a trace spans (at least 1), or an :class:`InputError`
    (on ``file`` / ``field``, where the period was given) when ``period_s`` is not a positive
    number or gives more than :data:`MAX_PERIODS`."""
    if not (math.isfinite(period_s) and period_s > 0):
        raise InputError(f"period of {period_s:g} s", file=file, field=field,
                         expected="seconds > 0")
    n = max(1.0, math.ceil(trace.duration_s / period_s - 1e-9))
    if n > MAX_PERIODS:
        raise InputError(f"the trace {Path(trace.source).name} spans {trace.duration_s:.6g} s: "
                         f"{n:.6g} periods of {period_s:g} s, more than {MAX_PERIODS}", file=file,
                         field=field, expected=f"a period of at least "
                         f"{math.ceil(trace.duration_s / MAX_PERIODS):.6g} s for this trace")
    return int(n)


def require_span(trace: Trace) -> None:
    """An :class:`InputError` (on the trace's file, field ``timestamps``) when the arrivals span
    0 s (one request, or all at one time): such a trace says nothing about a request rate."""
    if trace.span_s <= 0:
        what = "the trace has one request" if len(trace) == 1 else \
            f"all {len(trace)} requests arrive at one time"
        raise InputError(f"{what}, so it gives no request rate", file=trace.source, field="timestamps",
                         expected="a trace spanning more than 0 s",
                         hint="Give workload.rate_rps to use the trace for its request sizes only")


def rate_series(trace: Trace, period_s: float) -> np.ndarray:
    """Mean request rate (req/s) in consecutive periods of ``period_s`` from the first request;
    the last, partial period is averaged over its own length (at least 1 s).

    Raises:
        InputError: ``period_s`` not positive, or a trace whose arrivals span 0 s (one request,
            or all at one time): it says nothing about a rate.
    """
    require_span(trace)
    n = period_count(trace, period_s)
    idx = np.minimum((trace.arrival_s // period_s).astype(int), n - 1)
    counts = np.bincount(idx, minlength=n).astype(float)
    lengths = np.full(n, float(period_s))
    lengths[-1] = max(trace.duration_s - (n - 1) * period_s, 1.0)
    return counts / lengths


def peak_rate(trace: Trace, window_s: float) -> float:
    """Highest mean rate (req/s) over aligned windows of ``window_s`` (a last, partial window
    shorter than half a window is left out: a few requests over a few seconds are noise)."""
    rates = rate_series(trace, window_s)
    tail_s = trace.duration_s - (len(rates) - 1) * window_s
    if len(rates) > 1 and tail_s < window_s / 2:
        rates = rates[:-1]
    return float(rates.max())


def period_masks(trace: Trace, period_s: float) -> list[np.ndarray]:
    """Boolean mask of the requests arriving in each period (as in :func:`rate_series`)."""
    n = period_count(trace, period_s)
    idx = np.minimum((trace.arrival_s // period_s).astype(int), n - 1)
    return [idx == p for p in range(n)]


def check_rates(rates, *, file: str | None = None, field: str = "rate_rps") -> np.ndarray:
    """A rate or rate series as a 1-D array of finite, non-negative req/s (not all zero)."""
    arr = finite_nonnegative(rates, ndim=1, what="rates", values="rates >= 0 requests per second",
                             shape="requests per second (a number or a flat list)", file=file,
                             field=field)
    if not np.any(arr > 0):
        raise InputError("all rates are zero", file=file, field=field,
                         expected="at least one positive rate")
    if len(arr) > MAX_PERIODS:
        raise InputError(f"{len(arr)} periods, more than {MAX_PERIODS}", file=file, field=field,
                         expected=f"a rate series of at most {MAX_PERIODS} periods")
    return arr


def percentiles(values: np.ndarray, qs: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": ..., "p90": ..., "mean": ...}`` of a 1-D array."""
    values = np.asarray(values, dtype=float)
    out = {f"p{q:g}": float(np.percentile(values, q)) for q in qs}
    out["mean"] = float(values.mean())
    return out


def summarise(trace: Trace, period_s: float = 60.0) -> dict:
    """Counts, span, rates and length percentiles of a trace, for plans and reports; a trace
    spanning 0 s (used only for its sizes) has no rates: ``duration_s`` 0, rates None."""
    timed = trace.span_s > 0
    return {
        "requests": len(trace),
        "duration_s": trace.duration_s if timed else 0.0,
        "mean_rate_rps": trace.mean_rate_rps if timed else None,
        "peak_rate_rps": peak_rate(trace, period_s) if timed else None,
        "peak_window_s": period_s,
        "input_tokens": percentiles(trace.input_tokens),
        "output_tokens": percentiles(trace.output_tokens),
    }
