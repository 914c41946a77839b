"""What-if sweeps: a grid of planner runs over request fields, as one results table.

A sweep spec (YAML / JSON) names a planner ``kind``, a base request (a file or inline) and
``axes``; each axis addresses one request field by dotted path (``models.0.workload.rate_rps``,
``gpus``, ``slo.tpot_s``) and lists its values.  Every point of the grid (the cartesian product,
first axis slowest) is one run of the planner's library function; its plan is flattened into one
row.  Backends: ``local`` (processes, :mod:`concurrent.futures`) and ``ray`` (a Ray cluster by
address, or a local Ray); both return rows in point order, so results are identical whichever
ran them (timing columns, named ``*time_s``, aside).

Example spec: ``examples/sweep_fleet.yaml``.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import os
import socket
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hardware.errors import InfeasibleError, InputError, field_path, from_validation_error, nearest
from planner.plan import canonical_json, inputs_hash, read_structured, tool_version, write_atomic

#: columns every results table starts with; axis columns are ``axis.<name>``
LEAD_COLUMNS = ("point", "kind", "status", "message")
AXIS_PREFIX = "axis."
#: the most points a grid may have (the product of its axes' lengths; as many as one range
#: axis may hold): a larger grid is refused before any point is built
MAX_POINTS = 100_000


# ------------------------------------------------------------------------------------ the spec

class _Spec(BaseModel):
    # closed to unknown fields; no inf / nan in ranges or limits
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RangeSpec(_Spec):
    """``num`` values from ``start`` to ``stop`` inclusive, evenly or log-spaced."""

    start: float
    stop: float
    num: int = Field(ge=1, le=100_000)
    log: bool = False
    integer: bool = False


class AxisSpec(_Spec):
    name: Optional[str] = None
    field: str = Field(min_length=1, description="dotted path of a request field")
    values: Optional[list[Any]] = None
    range: Optional[RangeSpec] = None
    labels: Optional[list[str]] = None

    @model_validator(mode="after")
    def _one_source(self) -> "AxisSpec":
        if (self.values is None) == (self.range is None):
            raise ValueError("give exactly one of 'values' or 'range'")
        if self.values is not None and not self.values:
            raise ValueError("'values' is empty")
        return self


class SweepFile(_Spec):
    """The sweep spec file's content."""

    kind: str
    request: Optional[str] = Field(None, description="base request file, relative to the spec")
    base: Optional[dict[str, Any]] = Field(None, description="inline base request")
    axes: list[AxisSpec] = Field(min_length=1)
    time_limit_s: Optional[float] = Field(None, gt=0, description="solver limit per point")

    @model_validator(mode="after")
    def _one_base(self) -> "SweepFile":
        if (self.request is None) == (self.base is None):
            raise ValueError("give exactly one of 'request' (a file) or 'base' (inline)")
        return self


@dataclass(frozen=True)
class Axis:
    name: str
    field: str
    values: tuple[Any, ...]
    labels: tuple[Any, ...]


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: kind, base request, axes; ``base_dir`` resolves relative paths."""

    kind: str
    base: dict[str, Any]
    axes: tuple[Axis, ...]
    base_dir: str
    file: str | None = None
    request_file: str | None = None
    time_limit_s: float | None = None

    @property
    def size(self) -> int:
        return math.prod(len(a.values) for a in self.axes)

    def iter_points(self) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
        """(index, request, axis labels) for every grid point, first axis slowest, built one
        at a time (a point's request is a copy of the base with the axis values set)."""
        for i, combo in enumerate(itertools.product(*(range(len(a.values)) for a in self.axes))):
            req = copy.deepcopy(self.base)
            labels = {}
            for axis, j in zip(self.axes, combo):
                set_path(req, axis.field, copy.deepcopy(axis.values[j]))
                labels[axis.name] = axis.labels[j]
            yield i, req, labels

    def points(self) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
        """:meth:`iter_points` as a list."""
        return list(self.iter_points())

    def sha256(self) -> str:
        return inputs_hash({"kind": self.kind, "base": self.base,
                            "axes": [[a.name, a.field, list(a.values)] for a in self.axes],
                            "time_limit_s": self.time_limit_s})


# --------------------------------------------------------------------------- kinds of planner

@dataclass(frozen=True)
class Kind:
    """How to validate, run and flatten one planner kind inside a sweep."""

    request_model: Callable[[], type[BaseModel] | None]
    validate: Callable[[dict[str, Any], str | None], None]
    run: Callable[[dict[str, Any], str, str | None, float | None], dict[str, Any]]
    row: Callable[[dict[str, Any]], dict[str, Any]]
    #: the files a request (as data, paths relative to the folder given) reads: inputs that
    #: the results must never be written over
    inputs: Callable[[dict[str, Any], str], list[Path]] = lambda req, base_dir: []


def _fleet_paths(req: dict[str, Any], base_dir: str) -> dict[str, Any]:
    """Make a fleet request's trace / profile paths absolute (relative to ``base_dir``), and read
    a relative model config path from there where it exists (as ``planner fleet`` does)."""
    from costmodels.model import model_beside
    for m in req.get("models") or []:
        if not isinstance(m, dict):
            continue
        w = m.get("workload") or {}
        if isinstance(w, dict) and isinstance(w.get("trace"), str) and not Path(w["trace"]).is_absolute():
            w["trace"] = str(Path(base_dir) / w["trace"])
        for p in m.get("profiles") or []:
            if isinstance(p, dict) and isinstance(p.get("file"), str) and not Path(p["file"]).is_absolute():
                p["file"] = str(Path(base_dir) / p["file"])
        if isinstance(m.get("model"), str) and m["model"].strip():
            m["model"] = model_beside(m["model"], Path(base_dir).resolve())
    return req


def _fleet_inputs(req: dict[str, Any], base_dir: str) -> list[Path]:
    """The traces, profiles and model configs a fleet request reads (existing files), as
    ``planner fleet`` lists them (:func:`planner.fleet.input_files`); a request that does not
    validate reads nothing (its point is refused first)."""
    from pydantic import ValidationError

    from planner.fleet import FleetRequest, input_files
    try:
        parsed = FleetRequest.model_validate(_fleet_paths(copy.deepcopy(req), base_dir))
    except ValidationError:
        return []
    return [p for paths in input_files(parsed).values() for p in paths]


def _fleet_model():
    from planner.fleet import FleetRequest
    return FleetRequest


def _fleet_validate(req: dict[str, Any], file: str | None) -> None:
    from planner.fleet import FleetRequest, validation_error
    try:
        FleetRequest.model_validate(req)
    except ValidationError as exc:  # the fleet's wording of what is expected, the shared form
        raise validation_error(exc, file) from None


def _fleet_run(req: dict[str, Any], base_dir: str, file: str | None, limit: float | None) -> dict[str, Any]:
    from planner.fleet import plan_fleet
    return plan_fleet(_fleet_paths(req, base_dir), file=file, time_limit_s=limit)


def _fleet_row(plan: dict[str, Any]) -> dict[str, Any]:
    solver = plan.get("solver") or {}
    base = plan.get("baseline_single_gpu") or {}
    gpus = plan.get("gpus") or {}
    row: dict[str, Any] = {
        "cost_per_hour": plan.get("cost_per_hour"),
        "peak_cost_per_hour": plan.get("peak_cost_per_hour"),
        "cost_per_million_tokens": plan.get("cost_per_million_tokens"),
        "gpus_total": sum(int(v) for v in gpus.values()),
        "pools": "; ".join(f"{p.get('count')}x{p.get('gpu')}/tp{(p.get('shape') or {}).get('tp')}"
                           f"-pp{(p.get('shape') or {}).get('pp')}/{p.get('price_class')}"
                           for p in plan.get("pools") or []),
        "solver.status": solver.get("status"),
        "solver.objective": solver.get("objective"),
        "solver.bound": solver.get("bound"),
        "solver.gap": solver.get("gap"),
        "solver.time_s": solver.get("time_s"),
        "baseline.gpu": base.get("gpu"),
        "baseline.cost_per_hour": base.get("cost_per_hour"),
        "baseline.savings_fraction": base.get("savings_fraction"),
        "fidelity": ",".join(sorted({s for v in (plan.get("capacity") or {}).values() for s in v or []})),
    }
    for g, n in sorted(gpus.items()):
        row[f"gpus.{g}"] = int(n)
    for g in base.get("per_gpu") or []:
        row[f"single.{g.get('gpu')}.cost_per_hour"] = g.get("cost_per_hour") if g.get("feasible", True) else None
    return row


def _parallel_model():
    from planner.parallel import ParallelRequest
    return ParallelRequest


def _parallel_validate(req: dict[str, Any], file: str | None) -> None:
    from planner.parallel import parse_request
    parse_request(req, file=file)


def _parallel_run(req: dict[str, Any], base_dir: str, file: str | None, limit: float | None) -> dict[str, Any]:
    from planner.parallel import run_parallel
    w = req.get("workload") or {}
    if isinstance(w, dict) and isinstance(w.get("trace"), str) and not Path(w["trace"]).is_absolute():
        w["trace"] = str(Path(base_dir) / w["trace"])
    return run_parallel(req, file=file)


def _parallel_inputs(req: dict[str, Any], base_dir: str) -> list[Path]:
    from planner.parallel import input_files
    return input_files(req, base_dir)


def _parallel_row(plan: dict[str, Any]) -> dict[str, Any]:
    best = (plan.get("plans") or [{}])[0]
    search = plan.get("search") or {}
    row = {k: best.get(k) for k in ("label", "gpu", "gpus", "tp", "pp", "dp", "ep", "disaggregated", "ttft_s",
                                     "tpot_s", "goodput_rps", "meets_rate", "cost_per_hour",
                                     "cost_per_million_tokens", "goodput_per_dollar")}
    row["plans_evaluated"] = search.get("plans_evaluated")
    row["search.time_s"] = search.get("time_s")
    row["fidelity"] = plan.get("fidelity")
    return row


def _noop_run(req: dict[str, Any], base_dir: str, file: str | None, limit: float | None) -> dict[str, Any]:
    return {"request_sha256": inputs_hash(req)}


#: planner kinds a sweep can run.  ``noop`` plans nothing: it measures the sweep's own overhead.
KINDS: dict[str, Kind] = {
    "fleet": Kind(_fleet_model, _fleet_validate, _fleet_run, _fleet_row, _fleet_inputs),
    "parallel": Kind(_parallel_model, _parallel_validate, _parallel_run, _parallel_row, _parallel_inputs),
    "noop": Kind(lambda: None, lambda req, file: None, _noop_run, lambda plan: dict(plan)),
}


# ----------------------------------------------------------------------------- dotted paths

def _options(tp: Any) -> list[Any]:
    """The alternatives of a type annotation (Optional / Union / Annotated unwrapped)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _options(typing.get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [a for arg in typing.get_args(tp) for a in _options(arg) if a is not type(None)]
    return [tp]


def check_field(model: type[BaseModel] | None, base: dict[str, Any], path: str) -> str | None:
    """None when ``path`` names a field of the request model (and list indices exist in the base
    request), otherwise the reason it does not."""
    if model is None:
        return None
    tp: Any = model
    data: Any = base
    walked = []
    for seg in path.split("."):
        if seg == "":
            return "empty path segment"
        found = None
        names: list[str] = []
        for opt in _options(tp):
            origin = typing.get_origin(opt)
            if seg.isdigit() and origin in (list, tuple):
                args = typing.get_args(opt)
                found = args[0] if args else Any
                break
            if isinstance(opt, type) and issubclass(opt, BaseModel):
                if seg in opt.model_fields:
                    found = opt.model_fields[seg].annotation
                    break
                names += list(opt.model_fields)
            elif origin is dict or opt is Any:
                args = typing.get_args(opt)
                found = args[1] if len(args) == 2 else Any
                break
        if found is None:
            where = ".".join(walked) or "the request"
            if seg.isdigit():
                return f"{where} is not a list"
            near = nearest(seg, names) if names else []
            hint = f"; did you mean {', '.join(near)}?" if near else \
                (f"; fields there: {', '.join(sorted(names))}" if names else "")
            return f"{where} has no field '{seg}'{hint}"
        if seg.isdigit():
            if not isinstance(data, list) or int(seg) >= len(data):
                have = len(data) if isinstance(data, list) else 0
                return f"{'.'.join(walked) or 'the request'} has {have} item(s) in the base request, no index {seg}"
            data = data[int(seg)]
        else:
            data = data.get(seg) if isinstance(data, dict) else None
        tp = found
        walked.append(seg)
    return None


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at dotted ``path`` (list indices as numbers), creating missing mappings."""
    segs = path.split(".")
    cur: Any = data
    for seg, nxt in zip(segs[:-1], segs[1:]):
        key: Any = int(seg) if seg.isdigit() and isinstance(cur, list) else seg
        child = cur[key] if (isinstance(cur, list) or key in cur) else None
        if child is None:
            child = {}
            cur[key] = child
        cur = child
    last = segs[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value


# ------------------------------------------------------------------------------------ loading

def _label(value: Any) -> Any:
    """A table cell for an axis value: scalars as they are, lists of names joined with '+'."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "+".join(value)
    if isinstance(value, list) and all(isinstance(v, dict) and ("name" in v or "type" in v) for v in value):
        return "+".join(str(v.get("name", v.get("type"))) for v in value)
    return canonical_json(value)


def _range_values(r: RangeSpec) -> list[float]:
    import numpy as np
    if r.log and (r.start <= 0 or r.stop <= 0):
        raise ValueError("a log range needs positive start and stop")
    if not math.isfinite(r.stop - r.start):  # also what numpy would warn about
        raise ValueError(f"the range from {r.start:g} to {r.stop:g} is wider than a float holds")
    vals = np.geomspace(r.start, r.stop, r.num) if r.log else np.linspace(r.start, r.stop, r.num)
    if r.integer:
        return sorted({int(round(v)) for v in vals})
    return [float(f"{v:.6g}") for v in vals]


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and validate a sweep spec; every axis must name a field of the kind's request."""
    path = Path(path)
    file = str(path)
    data = read_structured(path, what="sweep spec")
    return sweep_from_data(data, file=file, base_dir=str(path.resolve().parent))


def sweep_from_data(data: Any, *, file: str | None = None, base_dir: str | None = None) -> Sweep:
    """Validate a sweep spec given as data (``base_dir`` resolves relative file names)."""
    if not isinstance(data, dict):
        raise InputError("the sweep spec is not a mapping", file=file, expected="a YAML object with kind and axes")
    try:
        spec = SweepFile.model_validate(data)
    except ValidationError as exc:
        extra = exc.errors()[0]["type"] == "extra_forbidden"
        raise from_validation_error(exc, file=file, expected="the fields of examples/sweep_fleet.yaml"
                                    if extra else None) from None
    if spec.kind not in KINDS:
        raise InputError(f"unknown planner kind '{spec.kind}'", file=file, field="kind",
                         expected=" or ".join(KINDS))
    base_dir = base_dir or os.getcwd()
    kind = KINDS[spec.kind]
    request_file = None
    if spec.request is not None:
        rp = Path(spec.request)
        rp = rp if rp.is_absolute() else Path(base_dir) / rp
        request_file = str(rp)
        base = read_structured(rp, what=f"{spec.kind} request")
        if not isinstance(base, dict):
            raise InputError("the base request is not a mapping", file=request_file, expected="a YAML object")
        req_dir = str(rp.resolve().parent)
    else:
        base = copy.deepcopy(spec.base or {})
        req_dir = base_dir
    model = kind.request_model()
    axes = []
    names = set()
    fields: dict[tuple[str, ...], int] = {}
    for i, a in enumerate(spec.axes):
        reason = check_field(model, base, a.field)
        if reason is not None:
            raise InputError(f"axis names no field of a {spec.kind} request: '{a.field}' ({reason})",
                             file=file, field=f"axes[{i}].field", expected=f"a dotted path into the {spec.kind} request")
        segs = tuple(a.field.split("."))
        for other, j in fields.items():  # one field, one axis: else one axis' values overwrite the other's
            if segs[:len(other)] == other or other[:len(segs)] == segs:
                same = "the same field" if segs == other else "overlapping fields"
                raise InputError(f"axes {j} and {i} set {same} ('{'.'.join(other)}' and '{a.field}')",
                                 file=file, field=f"axes[{i}].field",
                                 expected="each request field swept by one axis (list its values in that axis)")
        fields[segs] = i
        try:
            values = list(a.values) if a.values is not None else _range_values(a.range)
        except ValueError as exc:
            raise InputError(str(exc), file=file, field=f"axes[{i}].range") from None
        labels = list(a.labels) if a.labels is not None else [_label(v) for v in values]
        if len(labels) != len(values):
            raise InputError(f"{len(labels)} labels for {len(values)} values", file=file,
                             field=f"axes[{i}].labels", expected="one label per value")
        name = a.name or a.field
        if name in names:
            raise InputError(f"two axes are named '{name}'", file=file, field=f"axes[{i}].name",
                             expected="unique axis names")
        names.add(name)
        axes.append(Axis(name, a.field, tuple(values), tuple(labels)))
    size = math.prod(len(a.values) for a in axes)
    if size > MAX_POINTS:
        raise InputError(f"the grid has {size:,} points ({' x '.join(str(len(a.values)) for a in axes)}), "
                         f"more than {MAX_POINTS:,}", file=file, field="axes",
                         expected=f"at most {MAX_POINTS:,} points (fewer values per axis, or fewer axes)")
    sweep = Sweep(spec.kind, base, tuple(axes), req_dir, file, request_file, spec.time_limit_s)
    # every point's request must validate before anything runs: a bad value names its axis here
    for index, req, labels in sweep.iter_points():
        try:
            kind.validate(req, request_file or file)
        except InputError as exc:
            raise _point_error(sweep, index, labels, exc) from None
    return sweep


def _point_error(sweep: Sweep, index: int, labels: dict[str, Any], exc: InputError) -> InputError:
    """A point's request error: on the sweep file and the axis when an axis set the bad field
    (its value named), else on the base request's field."""
    where = f"point {index} ({', '.join(f'{k}={v}' for k, v in labels.items())})"
    bad = tuple(field_path(exc.field).replace("[", ".").replace("]", "").split(".")) if exc.field else ()
    for i, axis in enumerate(sweep.axes):
        segs = tuple(axis.field.split("."))
        if bad and (bad[:len(segs)] == segs or segs[:len(bad)] == bad):
            return InputError(f"{where}: {exc.message}" + (f" (on {exc.field})" if bad != segs else ""),
                              file=sweep.file, field=f"axes[{i}].values",
                              expected=exc.expected or f"values {axis.field} accepts")
    return InputError(f"{where}: {exc.message}", file=exc.file, field=exc.field, expected=exc.expected)


# ------------------------------------------------------------------------------------ running

def run_point(kind: str, index: int, request: dict[str, Any], labels: dict[str, Any], base_dir: str,
              file: str | None, time_limit_s: float | None) -> dict[str, Any]:
    """Run one grid point; returns its row.  Never raises for bad or infeasible input: the row's
    ``status`` says ``ok``, ``infeasible`` or ``error`` and ``message`` says why."""
    k = KINDS[kind]
    t0 = time.perf_counter()
    row: dict[str, Any] = {"point": index, "kind": kind, "status": "ok", "message": ""}
    row.update({AXIS_PREFIX + n: v for n, v in labels.items()})
    try:
        plan = k.run(request, base_dir, file, time_limit_s)
        row.update(k.row(plan))
    except InfeasibleError as exc:
        row.update(status="infeasible", message=exc.render(), binding=exc.binding)
    except InputError as exc:
        row.update(status="error", message=exc.render())
    except (ArithmeticError, ValueError) as exc:  # a value the planner's checks let through: this
        # point fails, not the whole grid
        row.update(status="error", message=f"the planner failed on this point: {type(exc).__name__}: "
                                           f"{str(exc).splitlines()[0] if str(exc) else ''}")
    row["point_time_s"] = time.perf_counter() - t0
    return row


def _point_args(sweep: Sweep) -> Iterator[tuple]:
    """The arguments of :func:`run_point` for every point, built one at a time."""
    for i, req, labels in sweep.iter_points():
        yield (sweep.kind, i, req, labels, sweep.base_dir, sweep.request_file or sweep.file, sweep.time_limit_s)


def input_files(sweep: Sweep) -> list[Path]:
    """Every file the sweep reads: the spec, the base request, and the files the base request
    reads with each axis value set (traces, profiles, model configs); outputs must never be
    written over them.  Axes of plain numbers change no path and are skipped."""
    kind = KINDS[sweep.kind]
    found: list[Path] = [Path(p) for p in (sweep.file, sweep.request_file) if p]
    found += kind.inputs(copy.deepcopy(sweep.base), sweep.base_dir)
    for axis in sweep.axes:
        if all(v is None or isinstance(v, (bool, int, float)) for v in axis.values):
            continue
        for v in axis.values:
            req = copy.deepcopy(sweep.base)
            try:
                set_path(req, axis.field, copy.deepcopy(v))
            except (TypeError, ValueError, IndexError, KeyError):
                continue
            found += kind.inputs(req, sweep.base_dir)
    unique: dict[str, Path] = {}
    for p in found:
        unique.setdefault(str(p), p)
    return list(unique.values())


def _run_point_args(args: tuple) -> dict[str, Any]:
    return run_point(*args)


def run_local(sweep: Sweep, *, workers: int | None = None,
              progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Run every point in worker processes (in this process when ``workers`` is 1); rows come
    back in point order."""
    args = _point_args(sweep)
    workers = max(1, min(workers or os.cpu_count() or 1, sweep.size))
    rows: list[dict[str, Any] | None] = [None] * sweep.size
    if workers == 1:
        for a in args:
            rows[a[1]] = run_point(*a)
            if progress:
                progress(1)
        return rows  # type: ignore[return-value]
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from solvers.milp import die_with_parent

    with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent) as pool:
        # a few points per worker in flight: the points' requests are built as they are needed
        futures: dict[Any, int] = {}
        for a in itertools.chain(args, [None]):
            if a is not None:
                futures[pool.submit(_run_point_args, a)] = a[1]
            while futures and (len(futures) >= 4 * workers or a is None):
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    rows[futures.pop(fut)] = fut.result()
                    if progress:
                        progress(1)
    return rows  # type: ignore[return-value]


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """A clear InputError when a ``host:port`` / ``ray://host:port`` address does not answer."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"Ray address '{address}' is not host:port", field="--ray-address",
                         expected="auto, local, host:port or ray://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}",
                         field="--ray-address", expected="the address of a running Ray head node",
                         hint="Start one with `ray start --head`, or leave --ray-address out for a local Ray") from None


def check_ray_backend(address: str | None = None):
    """The ``ray`` module, after checking it is installed and ``address`` (if any) answers."""
    try:
        import ray
    except ImportError:
        raise InputError("the ray backend needs Ray, which is not installed", field="--backend",
                         expected="pip install 'llm-placement-planner[ray]', or --backend local") from None
    if address:
        _check_reachable(address)
    return ray


def run_ray(sweep: Sweep, *, address: str | None = None, workers: int | None = None,
            progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Run every point as a Ray task, on the cluster at ``address`` or on a local Ray started
    (and stopped) here with ``workers`` CPUs; rows come back in point order."""
    ray = check_ray_backend(address)
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address and address != "local":
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                         log_to_driver=False, logging_level="ERROR")
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
            raise InputError(f"cannot start or join Ray at {address or 'local'}: {str(exc).splitlines()[0]}",
                             field="--ray-address", expected="a reachable Ray cluster address") from None
    try:
        remote = ray.remote(num_cpus=1)(_run_point_args)
        refs = [remote.remote(a) for a in _point_args(sweep)]
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            if progress:
                progress(len(done))
        return list(ray.get(refs))
    finally:
        if started_here:
            ray.shutdown()


def run_sweep(sweep: Sweep, *, backend: Literal["local", "ray"] = "local", workers: int | None = None,
              ray_address: str | None = None, progress: Callable[[int], None] | None = None
              ) -> list[dict[str, Any]]:
    """Run a sweep on a backend; rows in point order."""
    if backend == "local":
        return run_local(sweep, workers=workers, progress=progress)
    if backend == "ray":
        return run_ray(sweep, address=ray_address, workers=workers, progress=progress)
    raise InputError(f"unknown backend '{backend}'", field="--backend", expected="local or ray")


# ------------------------------------------------------------------------------------ results

def results_frame(sweep: Sweep, rows: list[dict[str, Any]]):
    """The rows as a pandas DataFrame: lead columns, axes, then the rest sorted; plus the
    columns that make the table self-describing (``axes``: name -> field, tool version, spec hash)."""
    import pandas as pd
    axes_json = json.dumps({a.name: a.field for a in sweep.axes}, sort_keys=True)
    meta = {"axes": axes_json, "tool_version": tool_version(), "sweep_sha256": sweep.sha256()}
    rows = [{**r, **meta} for r in rows]
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    axis_cols = [AXIS_PREFIX + a.name for a in sweep.axes]
    rest = sorted(k for k in keys if k not in LEAD_COLUMNS and k not in axis_cols and k not in meta)
    cols = list(LEAD_COLUMNS) + axis_cols + rest + list(meta)
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)


def _need_pyarrow(what: str) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise InputError(f"{what} .parquet needs pyarrow, which is not installed",
                         expected="pip install 'llm-placement-planner[parquet]', or a .csv file") from None


def write_results(frame, path: str | os.PathLike, *, protect: Iterable[str | os.PathLike] = ()) -> Path:
    """Write the table as .csv or .parquet, atomically, never over an input file."""
    import io
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        buf = io.StringIO()
        frame.to_csv(buf, index=False, lineterminator="\n")
        return write_atomic(path, buf.getvalue(), protect=protect)
    if suffix in (".parquet", ".pq"):
        _need_pyarrow("writing")
        out = io.BytesIO()
        frame.to_parquet(out, index=False)
        return write_atomic(path, out.getvalue(), protect=protect)
    raise InputError(f"unknown results format '{suffix or path.name}'", file=str(path), field="-o/--output",
                     expected="a file ending in .csv or .parquet")


def read_results(path: str | os.PathLike):
    """Read a sweep's results table (.csv or .parquet) as a DataFrame; checks it is one."""
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise InputError("sweep results not found", file=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            _need_pyarrow("reading")
            frame = pd.read_parquet(path)
        else:
            raise InputError(f"unknown results format '{suffix}'", file=str(path), expected=".csv or .parquet")
    except InputError:
        raise
    except Exception as exc:  # malformed CSV / parquet
        raise InputError(f"cannot read the results table: {str(exc).splitlines()[0]}", file=str(path),
                         expected="a table written by `planner sweep`") from None
    missing = [c for c in (*LEAD_COLUMNS, "axes") if c not in frame.columns]
    if missing:
        raise InputError(f"not a sweep results table (no column {missing[0]!r})", file=str(path),
                         expected="a table written by `planner sweep`")
    return frame


def comparable(frame) -> Any:
    """The table without timing columns (``*time_s``), for comparing runs."""
    return frame[[c for c in frame.columns if not c.endswith("time_s")]]
