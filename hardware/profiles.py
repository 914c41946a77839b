"""Readers for measured tables: per-op GPU timings and collective timings.

Every reader returns plain dataclasses in SI units (seconds, bytes) and raises one
:class:`InputError` naming the file and the column when a table is malformed.  Formats:

* Vidur per-op ``mlp.csv`` (``time_stats.<op>.{min,max,mean,median,std}`` in **ms**, one layer,
  one GPU, for the TP shard; shape columns ``n_head, n_kv_head, n_embd, n_expanded_embd,
  vocab_size, use_gated_mlp, num_tokens, num_tensor_parallel_workers``);
* Vidur NCCL ``all_reduce.csv`` / ``send_recv.csv`` (``size`` = fp16 **elements**, time in ms);
* APEX comm CSVs (``gpu, num_nodes, num_gpus_per_node, dtype, size(kb), time(us)``; the
  collective comes from the file name);
* nccl-tests text output (the ``#  size  count  type  redop  root  time  algbw  busbw  #wrong``
  table; out-of-place time is used) and the CSV forms of such tables found in the shared data;
* measured GEMM tables (``gpu, M, N, K, latency_ms`` or APEX ``gpu, dtype, m, k, n, time(us)``).

Only the standard library is used here (``hardware`` sits at the bottom of the import graph).
"""
from __future__ import annotations

import bisect
import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from hardware.errors import InputError

#: Vidur op name -> the cost model's op name (costmodels/ops.py)
VIDUR_OP_NAMES: dict[str, str] = {
    "attn_pre_proj": "qkv_proj",
    "attn_post_proj": "o_proj",
    "mlp_up_proj": "mlp_up_gate",
    "mlp_act": "mlp_act",
    "mlp_down_proj": "mlp_down",
    "input_layernorm": "input_norm",
    "post_attention_layernorm": "post_attn_norm",
}
VIDUR_SHAPE_COLUMNS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp",
                       "num_tokens", "num_tensor_parallel_workers")
VIDUR_STATS = ("min", "max", "mean", "median", "std")
#: the longest per-op time (ms) a Vidur profile may hold: one layer's op on one GPU takes
#: microseconds to seconds, so an hour is no measurement (a unit slip, a corrupted cell); a time
#: of 0 is none either (the op was not timed), and fitting or looking either up gives nonsense
MAX_OP_TIME_MS = 3_600_000.0

#: collective names as they appear in file names / tables -> the cost model's names
COLLECTIVE_ALIASES: dict[str, str] = {
    "all_reduce": "all_reduce", "allreduce": "all_reduce",
    "all_gather": "all_gather", "allgather": "all_gather",
    "reduce_scatter": "reduce_scatter", "reducescatter": "reduce_scatter",
    "alltoall": "all_to_all", "all_to_all": "all_to_all",
    "sendrecv": "p2p", "send_recv": "p2p", "p2p": "p2p",
}


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    """The shape columns of one Vidur profile (one model)."""

    n_head: int
    n_kv_head: int
    n_embd: int
    n_expanded_embd: int
    vocab_size: int
    gated_mlp: bool

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass(frozen=True)
class OpSample:
    """One measured op time: one layer, one GPU, ``tokens`` rows, TP degree ``tp``.

    ``op`` is the cost model's op name (``qkv_proj``...), ``source_op`` the name in the file.
    """

    accelerator: str | None
    model: str
    shape: ModelShape
    op: str
    source_op: str
    tokens: int
    tp: int
    time_s: float


@dataclass(frozen=True)
class CommSample:
    """One measured collective: ``message_bytes`` per rank on ``num_gpus`` ranks.

    ``gpus_per_node < num_gpus`` means the group spans nodes.
    """

    collective: str
    num_gpus: int
    gpus_per_node: int
    message_bytes: float
    time_s: float
    source: str = ""

    @property
    def cross_node(self) -> bool:
        return self.gpus_per_node < self.num_gpus


@dataclass(frozen=True)
class GemmSample:
    """One measured GEMM [M x K] @ [K x N] (M = tokens)."""

    gpu: str
    m: int
    n: int
    k: int
    time_s: float
    dtype: str = "fp16"

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k


# ---------------------------------------------------------------------------------------------
# CSV plumbing
# ---------------------------------------------------------------------------------------------
def _open_rows(path: Path, what: str) -> tuple[list[str], list[dict[str, str]]]:
    if not path.exists():
        raise InputError(f"{what} not found", file=str(path))
    if path.is_dir():
        raise InputError(f"{what} is a folder, expected a CSV file", file=str(path))
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items() if k is not None}
                    for r in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"malformed {what}: {exc}", file=str(path), expected="a CSV text file") from None
    if not header:
        raise InputError(f"empty {what}", file=str(path), field="header", expected="a CSV header line")
    return header, rows


def _require(header: Iterable[str], columns: Iterable[str], path: Path, what: str) -> None:
    have = set(header)
    for c in columns:
        if c not in have:
            raise InputError(f"{what} lacks column '{c}'", file=str(path), field=c,
                             expected=f"columns {', '.join(columns)}")


def _num(row: dict[str, str], col: str, path: Path, line: int) -> float:
    """A finite, non-negative number from column ``col`` of data row ``line`` (1 = header)."""
    raw = row.get(col, "")
    try:
        v = float(raw)
    except ValueError:
        raise InputError(f"row {line}: '{raw}' is not a number", file=str(path), field=col,
                         expected="a number") from None
    if math.isnan(v) or math.isinf(v) or v < 0:
        raise InputError(f"row {line}: {raw} out of range", file=str(path), field=col,
                         expected="a finite number >= 0")
    return v


def _int(row: dict[str, str], col: str, path: Path, line: int) -> int:
    v = _num(row, col, path, line)
    if v != int(v) or v < 1:
        raise InputError(f"row {line}: {row.get(col)} is not a positive integer", file=str(path), field=col,
                         expected="an integer >= 1")
    return int(v)


def _bool(row: dict[str, str], col: str, path: Path, line: int) -> bool:
    raw = row.get(col, "").lower()
    if raw in ("true", "1", "1.0", "yes"):
        return True
    if raw in ("false", "0", "0.0", "no"):
        return False
    raise InputError(f"row {line}: '{row.get(col)}' is not a boolean", file=str(path), field=col,
                     expected="True or False")


# ---------------------------------------------------------------------------------------------
# Vidur per-op CSV
# ---------------------------------------------------------------------------------------------
def read_vidur_op_csv(path: str | Path, *, accelerator: str | None = None, model: str | None = None,
                      stat: str = "median") -> list[OpSample]:
    """Read one Vidur ``mlp.csv``: one :class:`OpSample` per (row, op) for the ops we model.

    Args:
        accelerator: the SKU the file was measured on (default: guessed from the path,
            ``.../compute/<sku>/<org>/<model>/mlp.csv``).
        model: model name (default: ``<org>/<model>`` from the path).
        stat: which statistic to read (``median`` is robust to stragglers).
    """
    path = Path(path)
    if stat not in VIDUR_STATS:
        raise InputError(f"unknown statistic {stat!r}", field="stat", expected=" | ".join(VIDUR_STATS))
    header, rows = _open_rows(path, "Vidur per-op profile")
    _require(header, VIDUR_SHAPE_COLUMNS, path, "Vidur per-op profile")
    ops = [o for o in VIDUR_OP_NAMES if f"time_stats.{o}.{stat}" in header]
    if not ops:
        raise InputError("Vidur per-op profile has no op timing columns", file=str(path),
                         field=f"time_stats.<op>.{stat}",
                         expected="at least one of " + ", ".join(f"time_stats.{o}.{stat}" for o in VIDUR_OP_NAMES))
    guess_acc, guess_model = _vidur_path_parts(path)
    accelerator = accelerator or guess_acc
    model = model or guess_model
    out: list[OpSample] = []
    for i, row in enumerate(rows, start=2):
        shape = ModelShape(_int(row, "n_head", path, i), _int(row, "n_kv_head", path, i), _int(row, "n_embd", path, i),
                           _int(row, "n_expanded_embd", path, i), _int(row, "vocab_size", path, i),
                           _bool(row, "use_gated_mlp", path, i))
        tokens = _int(row, "num_tokens", path, i)
        tp = _int(row, "num_tensor_parallel_workers", path, i)
        for o in ops:
            col = f"time_stats.{o}.{stat}"
            if row.get(col, "") == "":
                continue  # op not profiled at this point
            ms = _num(row, col, path, i)
            if not 0 < ms <= MAX_OP_TIME_MS:
                raise InputError(f"row {i}: {row[col]} ms is not a measured op time", file=str(path), field=col,
                                 expected=f"milliseconds above 0 and at most {MAX_OP_TIME_MS:.0f} (one hour: "
                                          "one layer's op for one GPU takes microseconds to seconds)")
            out.append(OpSample(accelerator, model, shape, VIDUR_OP_NAMES[o], o, tokens, tp, ms * 1e-3))
    if not out:
        raise InputError("Vidur per-op profile has no rows", file=str(path), expected="at least one data row")
    return out


def _vidur_path_parts(path: Path) -> tuple[str | None, str]:
    parts = path.resolve().parts
    if "compute" in parts:
        i = len(parts) - 1 - parts[::-1].index("compute")
        rest = parts[i + 1:-1]
        if len(rest) >= 2:
            return rest[0], "/".join(rest[1:])
    return None, path.parent.name or path.stem


def find_vidur_op_csvs(path: str | Path) -> list[Path]:
    """A Vidur ``mlp.csv`` itself, or every ``mlp.csv`` below a folder (sorted)."""
    path = Path(path)
    if not path.exists():
        raise InputError("profile path not found", file=str(path), expected="a Vidur mlp.csv or a folder of them")
    if path.is_file():
        return [path]
    found = sorted(path.rglob("mlp.csv"))
    if not found:
        raise InputError("no Vidur mlp.csv below this folder", file=str(path),
                         expected="a folder like vidur/profiling/compute/<sku>/<org>/<model>/mlp.csv")
    return found


def read_vidur_profiles(path: str | Path, *, stat: str = "median") -> list[OpSample]:
    """All op samples of one ``mlp.csv`` or of every ``mlp.csv`` below a folder."""
    out: list[OpSample] = []
    for p in find_vidur_op_csvs(path):
        out.extend(read_vidur_op_csv(p, stat=stat))
    return out


# ---------------------------------------------------------------------------------------------
# collective tables
# ---------------------------------------------------------------------------------------------
def _collective_from_name(name: str, path: Path) -> str:
    key = name.lower().replace("-", "_").replace("_perf", "")
    if key in COLLECTIVE_ALIASES:
        return COLLECTIVE_ALIASES[key]
    raise InputError(f"unknown collective '{name}'", file=str(path), field="collective",
                     expected=" | ".join(sorted(set(COLLECTIVE_ALIASES))))


def read_vidur_comm_csv(path: str | Path, *, stat: str = "median") -> list[CommSample]:
    """Vidur NCCL ``all_reduce.csv`` / ``send_recv.csv`` (``size`` in fp16 elements, ms)."""
    path = Path(path)
    header, rows = _open_rows(path, "Vidur collective profile")
    tcols = [h for h in header if h.startswith("time_stats.") and h.endswith("." + stat)]
    if not tcols:
        raise InputError("Vidur collective profile has no timing column", file=str(path),
                         field=f"time_stats.<collective>.{stat}", expected="e.g. time_stats.all_reduce.median")
    _require(header, ("num_workers", "size", "devices_per_node"), path, "Vidur collective profile")
    tcol = tcols[0]
    default_coll = tcol.split(".")[1]
    out = []
    for i, row in enumerate(rows, start=2):
        coll = _collective_from_name(row.get("collective") or default_coll, path)
        n = _int(row, "num_workers", path, i)
        gpn = _int(row, "devices_per_node", path, i)
        size = _num(row, "size", path, i)
        ms = _num(row, tcol, path, i)
        if ms <= 0 or size <= 0:
            continue
        out.append(CommSample(coll, n, min(gpn, n), 2.0 * size, ms * 1e-3, str(path)))
    return _median_by_key(out)


def read_apex_comm_csv(path: str | Path, *, collective: str | None = None) -> list[CommSample]:
    """APEX ``comm/<GPU>/<collective>.csv`` (``size(kb)`` in KiB, ``time(us)``)."""
    path = Path(path)
    header, rows = _open_rows(path, "APEX collective profile")
    _require(header, ("num_nodes", "num_gpus_per_node", "size(kb)", "time(us)"), path, "APEX collective profile")
    coll = _collective_from_name(collective or path.stem, path)
    out = []
    for i, row in enumerate(rows, start=2):
        nodes = _int(row, "num_nodes", path, i)
        gpn = _int(row, "num_gpus_per_node", path, i)
        kb = _num(row, "size(kb)", path, i)
        us = _num(row, "time(us)", path, i)
        if kb <= 0 or us <= 0:
            continue
        out.append(CommSample(coll, nodes * gpn, gpn, kb * 1024.0, us * 1e-6, str(path)))
    return _median_by_key(out)


_NCCL_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\w+)\s+(\w+)\s+(-?\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)")
_NCCL_ROW_NOROOT = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\w+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)")


def read_nccl_tests(path: str | Path, *, collective: str | None = None, num_gpus: int | None = None,
                    gpus_per_node: int | None = None) -> list[CommSample]:
    """nccl-tests text output (``all_reduce_perf -b 8 -e 8G -f 2 -g 8`` and friends).

    The collective is taken from ``collective``, else from a ``*_perf`` word in the file or
    its name; the rank count from ``num_gpus``, else from the ``nGpus``/``Rank`` header lines.
    The out-of-place time column is used (microseconds in the file).
    """
    path = Path(path)
    if not path.exists():
        raise InputError("nccl-tests output not found", file=str(path))
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read nccl-tests output: {exc}", file=str(path)) from None
    if collective is None:
        m = re.search(r"(all_reduce|all_gather|reduce_scatter|alltoall|sendrecv)(_perf)?", text) or \
            re.search(r"(all_reduce|all_gather|reduce_scatter|alltoall|sendrecv)", path.name.lower())
        if not m:
            raise InputError("cannot tell which collective this nccl-tests output measured", file=str(path),
                             field="collective", expected="a '<collective>_perf' line or pass the collective")
        collective = m.group(1)
    coll = _collective_from_name(collective, path)
    if num_gpus is None:
        ranks = re.findall(r"#\s+Rank\s+\d+", text)
        m = re.search(r"nGpus\s+(\d+)", text)
        m_threads = re.search(r"nThread\s+(\d+)", text)
        num_gpus = len(ranks) or (int(m.group(1)) * (int(m_threads.group(1)) if m_threads else 1) if m else 0)
        if not num_gpus:
            raise InputError("cannot tell how many GPUs this nccl-tests output used", file=str(path),
                             field="nGpus", expected="'# Rank N ...' header lines or pass num_gpus")
    out = []
    saw_header = False
    for line_no, line in enumerate(text.splitlines(), start=1):
        if re.match(r"^#\s+size\s+count\s+type", line):
            saw_header = True
            continue
        if line.startswith("#") or not line.strip():
            continue
        m = _NCCL_ROW.match(line)
        if m:
            size, t_us = float(m.group(1)), float(m.group(6))
        else:
            m2 = _NCCL_ROW_NOROOT.match(line)
            if not m2:
                continue  # nccl-tests prints banners and warnings between rows
            size, t_us = float(m2.group(1)), float(m2.group(4))
        if size > 0 and t_us > 0:
            out.append(CommSample(coll, num_gpus, gpus_per_node or num_gpus, size, t_us * 1e-6, str(path)))
    if not out:
        raise InputError("no measurement rows in nccl-tests output" + ("" if saw_header else
                         " (no '#  size  count  type ...' header)"), file=str(path), field="size",
                         expected="rows 'size count type redop root time algbw busbw #wrong ...'")
    return out


def read_comm_csv(path: str | Path, *, collective: str | None = None) -> list[CommSample]:
    """Any collective table this module knows, told apart by its header.

    Vidur (``time_stats.*``), APEX (``size(kb)``), nccl-tests CSV (``op, ngpu, size_bytes,
    t_us_out``), a measured latency table (``num_gpus, size_bytes, latency_us``) or a summary
    (``collective, num_gpus, gpus_per_node, size_bytes, median_ms``).  Non-CSV text is read as
    nccl-tests output.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("collective profile not found", file=str(path))
    if path.suffix.lower() not in (".csv",):
        return read_nccl_tests(path, collective=collective)
    header, rows = _open_rows(path, "collective profile")
    if any(h.startswith("time_stats.") for h in header):
        return read_vidur_comm_csv(path)
    if "size(kb)" in header:
        return read_apex_comm_csv(path, collective=collective)
    out: list[CommSample] = []
    if "t_us_out" in header:
        _require(header, ("op", "ngpu", "size_bytes", "t_us_out"), path, "nccl-tests CSV")
        for i, row in enumerate(rows, start=2):
            n = _int(row, "ngpu", path, i)
            out.append(CommSample(_collective_from_name(row["op"], path), n, n, _num(row, "size_bytes", path, i),
                                  _num(row, "t_us_out", path, i) * 1e-6, str(path)))
    elif "latency_us" in header:
        _require(header, ("num_gpus", "size_bytes", "latency_us"), path, "collective latency table")
        coll = _collective_from_name(collective or ("all_reduce" if "allreduce" in path.name.lower().replace("_", "")
                                                    else path.stem), path)
        for i, row in enumerate(rows, start=2):
            n = _int(row, "num_gpus", path, i)
            out.append(CommSample(coll, n, n, _num(row, "size_bytes", path, i),
                                  _num(row, "latency_us", path, i) * 1e-6, str(path)))
    elif "median_ms" in header:
        _require(header, ("collective", "num_gpus", "gpus_per_node", "size_bytes", "median_ms"), path,
                 "collective summary")
        for i, row in enumerate(rows, start=2):
            out.append(CommSample(_collective_from_name(row["collective"], path), _int(row, "num_gpus", path, i),
                                  _int(row, "gpus_per_node", path, i), _num(row, "size_bytes", path, i),
                                  _num(row, "median_ms", path, i) * 1e-3, str(path)))
    else:
        raise InputError("unrecognised collective table", file=str(path), field="header",
                         expected="Vidur time_stats.*, APEX size(kb)/time(us), nccl-tests size_bytes/t_us_out, "
                                  "num_gpus/size_bytes/latency_us or collective/num_gpus/size_bytes/median_ms")
    return [s for s in out if s.message_bytes > 0 and s.time_s > 0]


def read_comm_tables(paths: Iterable[str | Path]) -> list[CommSample]:
    """Read several collective tables; a folder contributes every CSV / .txt / .log in it."""
    out: list[CommSample] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in (".csv", ".txt", ".log"))
            if not files:
                raise InputError("no collective tables in this folder", file=str(p),
                                 expected="*.csv or nccl-tests *.txt / *.log files")
            for f in files:
                out.extend(read_comm_csv(f))
        else:
            out.extend(read_comm_csv(p))
    return out


def _median_by_key(samples: list[CommSample]) -> list[CommSample]:
    """One sample per (collective, ranks, ranks per node, size): the median time over rows."""
    groups: dict[tuple, list[CommSample]] = {}
    for s in samples:
        groups.setdefault((s.collective, s.num_gpus, s.gpus_per_node, s.message_bytes), []).append(s)
    out = []
    for key in sorted(groups):
        g = sorted(groups[key], key=lambda s: s.time_s)
        out.append(g[len(g) // 2])
    return out


# ---------------------------------------------------------------------------------------------
# GEMM tables
# ---------------------------------------------------------------------------------------------
def read_gemm_csv(path: str | Path) -> list[GemmSample]:
    """Measured GEMMs: ``gpu, M, N, K, latency_ms[, dtype]`` or APEX ``gpu, dtype, m, k, n, time(us)``.

    APEX computes Y[m x n] = W[m x k] X[k x n] with n = tokens, so its (m, k, n) become
    (M=n, N=m, K=k) here.
    """
    path = Path(path)
    header, rows = _open_rows(path, "GEMM table")
    out = []
    if "latency_ms" in header:
        _require(header, ("gpu", "M", "N", "K", "latency_ms"), path, "GEMM table")
        for i, row in enumerate(rows, start=2):
            out.append(GemmSample(row["gpu"], _int(row, "M", path, i), _int(row, "N", path, i), _int(row, "K", path, i),
                                  _num(row, "latency_ms", path, i) * 1e-3, row.get("dtype") or "fp16"))
    elif "time(us)" in header:
        _require(header, ("gpu", "m", "k", "n", "time(us)"), path, "GEMM table")
        for i, row in enumerate(rows, start=2):
            out.append(GemmSample(row["gpu"], _int(row, "n", path, i), _int(row, "m", path, i), _int(row, "k", path, i),
                                  _num(row, "time(us)", path, i) * 1e-6, row.get("dtype") or "fp16"))
    else:
        raise InputError("GEMM table lacks a time column", file=str(path), field="latency_ms",
                         expected="columns gpu, M, N, K, latency_ms (or APEX gpu, dtype, m, k, n, time(us))")
    return [s for s in out if s.time_s > 0]


# ---------------------------------------------------------------------------------------------
# measured-table lookup for the cost model (the "measured" fidelity layer)
# ---------------------------------------------------------------------------------------------
@dataclass
class _Series:
    tokens: list[int] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)

    def at(self, tokens: float) -> float | None:
        """Linear interpolation in tokens; None outside the profiled range."""
        xs = self.tokens
        if not xs or tokens < xs[0] or tokens > xs[-1]:
            return None
        i = bisect.bisect_left(xs, tokens)
        if xs[i] == tokens:
            return self.times_s[i]
        x0, x1 = xs[i - 1], xs[i]
        t = (tokens - x0) / (x1 - x0)
        return self.times_s[i - 1] + t * (self.times_s[i] - self.times_s[i - 1])


class VidurMeasuredTable:
    """Vidur per-op samples of one model shape on one accelerator, as a MeasuredTable.

    ``lookup(op, tp=)`` returns seconds for one instance of ``qkv_proj``, ``o_proj``,
    ``mlp_up_gate``, ``mlp_act``, ``mlp_down``, ``input_norm`` and ``post_attn_norm``,
    interpolating linearly between profiled token counts, and None for anything else (other
    ops, a TP degree or token count outside the table), so the next fidelity layer answers.
    """

    def __init__(self, samples: Iterable[OpSample], shape: ModelShape, source: str = "") -> None:
        self.shape = shape
        self.source = source
        acc: dict[tuple[str, int], dict[int, list[float]]] = {}
        for s in samples:
            if s.shape == shape:
                acc.setdefault((s.op, s.tp), {}).setdefault(s.tokens, []).append(s.time_s)
        self._series: dict[tuple[str, int], _Series] = {}
        for key, by_tokens in acc.items():
            xs = sorted(by_tokens)
            self._series[key] = _Series(xs, [sorted(by_tokens[x])[len(by_tokens[x]) // 2] for x in xs])

    @property
    def tp_degrees(self) -> list[int]:
        return sorted({tp for _, tp in self._series})

    def __len__(self) -> int:
        return len(self._series)

    def tokens_of(self, op, tp: int) -> float | None:
        """Token count (GEMM rows) of a cost-model op of this shape, or None if not derivable."""
        if op.gemm_mnk is not None:
            return float(op.gemm_mnk[0])
        h = self.shape.n_embd
        if op.name in ("input_norm", "post_attn_norm"):
            return op.flops / (4.0 * h) if op.flops > 0 else None
        if op.name == "mlp_act":
            inter = self.shape.n_expanded_embd / tp
            return op.flops / (4.0 * inter) if op.flops > 0 else None
        return None

    def lookup(self, op, *, tp: int) -> float | None:
        series = self._series.get((op.name, tp))
        if series is None:
            return None
        tokens = self.tokens_of(op, tp)
        if tokens is None:
            return None
        return series.at(tokens)


def shapes_in(samples: Iterable[OpSample]) -> dict[ModelShape, list[str]]:
    """The model shapes a sample set covers, with the model names seen for each."""
    out: dict[ModelShape, list[str]] = {}
    for s in samples:
        names = out.setdefault(s.shape, [])
        if s.model not in names:
            names.append(s.model)
    return out


__all__ = ["ModelShape", "OpSample", "CommSample", "GemmSample", "VIDUR_OP_NAMES", "read_vidur_op_csv",
           "read_vidur_profiles", "find_vidur_op_csvs", "read_vidur_comm_csv", "read_apex_comm_csv",
           "read_nccl_tests", "read_comm_csv", "read_comm_tables", "read_gemm_csv", "VidurMeasuredTable",
           "shapes_in"]
