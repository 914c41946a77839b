"""Versioned plan files: ``apiVersion: planner/v1``, one ``kind`` per planner.

Plans are data other tools consume, so this module owns their envelope (apiVersion, kind,
metadata with tool version and inputs' hash), their YAML / JSON serialisation and atomic
writes.  Serialisation is canonical (sorted keys where the plan is a dict, floats as Python
repr) so that the same input gives a byte-identical file; timings live under keys named
``time_s`` / ``*_time_s`` and are the only fields allowed to differ between runs.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml
from pydantic import BaseModel

from hardware.errors import InputError

API_VERSION = "planner/v1"
KINDS = ("Estimate", "FleetPlan", "ParallelPlan", "ExpertPlacement", "SequencePlan",
         "StepPlan", "Calibration", "SweepResult")


def tool_version() -> str:
    from planner import __version__
    return __version__


#: significant digits kept of every float in a plan (far below any model's accuracy)
PLAN_DIGITS = 12


def _plain(obj: Any) -> Any:
    """Convert pydantic models, numpy scalars/arrays, tuples and paths into plain JSON data
    (floats to :data:`PLAN_DIGITS` significant digits, NaN and infinity to ``None``)."""
    if isinstance(obj, BaseModel):
        return _plain(obj.model_dump(mode="python"))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalar / array
        return _plain(obj.tolist())
    if isinstance(obj, float):
        if math.isnan(obj) or math.isinf(obj):
            return None
        # 12 significant digits: sums' last-bit noise (4.9350000000000005) stays out of plans
        return float(f"{obj:.{PLAN_DIGITS}g}")
    return obj


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text (sorted keys, no NaN) used for hashing and comparison."""
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def inputs_hash(*parts: Any) -> str:
    """sha256 (hex) of the canonical JSON of the inputs; recorded in every plan."""
    h = hashlib.sha256()
    for part in parts:
        h.update(canonical_json(part).encode())
    return h.hexdigest()


def envelope(kind: str, body: dict[str, Any], *, inputs: Any = None) -> dict[str, Any]:
    """Wrap a plan body in the versioned envelope (apiVersion, kind, metadata)."""
    if kind not in KINDS:
        raise ValueError(f"unknown plan kind {kind!r}")
    meta = {"tool": "llm-placement-planner", "tool_version": tool_version()}
    if inputs is not None:
        meta["inputs_sha256"] = inputs_hash(inputs)
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, **_plain(body)}


def to_json(plan: Any) -> str:
    """Plan as pretty JSON text (insertion order kept, so plans read top-down)."""
    return json.dumps(_plain(plan), indent=2, allow_nan=False) + "\n"


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(plan: Any) -> str:
    """Plan as YAML text (insertion order kept)."""
    return yaml.dump(_plain(plan), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=100)


#: plan file suffixes and the format each is written in
PLAN_SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through links, ``./`` or a relative path)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (),
                 suffixes: Iterable[str] | None = tuple(PLAN_SUFFIXES),
                 field: str = "-o/--output", what: str = "plan") -> Path:
    """Check an output file before any work is done, so that a long solve never ends in an
    error about where its result goes.

    Refused: a suffix not in ``suffixes`` (None: any), an existing folder or other non-regular
    file, a missing parent folder, and any of the user's ``inputs`` (the file itself, through a
    link or another spelling).  Returns the path.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"the {what} output is an existing folder", file=str(path), field=field,
                         expected="a file path, not a folder")
    if path.exists() and not path.is_file():
        raise InputError(f"the {what} output exists and is not a regular file", file=str(path),
                         field=field, expected="a new file or a plain file to replace")
    if suffixes is not None:
        allowed = tuple(suffixes)
        if path.suffix.lower() not in allowed:
            raise InputError(f"unknown {what} format '{path.suffix or path.name}'", file=str(path),
                             field=field, expected="a file ending in " + ", ".join(allowed))
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist", file=str(path), field=field,
                         expected="a file in an existing folder")
    for p in inputs:
        if p is not None and _same_file(Path(p), path):
            raise InputError(f"refusing to overwrite the input file {p} with output", file=str(path),
                             field=field, expected="an output path that is not an input")
    return path


def write_atomic(path: str | os.PathLike, data: str | bytes, *,
                 protect: Iterable[str | os.PathLike] = ()) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename).

    ``protect`` lists the user's input files: writing over one of them is refused, and so is a
    path that is a folder or whose folder is missing (see :func:`check_output`).
    """
    path = check_output(path, inputs=protect, suffixes=None, what="output")
    parent = path.parent if str(path.parent) else Path(".")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise InputError(f"cannot write in {parent}: {exc.strerror}", file=str(path),
                         field="-o/--output", expected="a folder you can write to") from None
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except OSError as exc:  # a folder appeared at path meanwhile, disk full, ...
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise InputError(f"cannot write: {exc.strerror or exc}", file=str(path),
                         field="-o/--output") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dump_plan(plan: Any, path: str | os.PathLike, *,
              protect: Iterable[str | os.PathLike] = ()) -> Path:
    """Write a plan as YAML (``.yaml``/``.yml``) or JSON (``.json``), atomically; any other
    suffix is refused (a ``plan.txt`` holding JSON would surprise whoever reads it)."""
    path = check_output(path, inputs=protect)
    text = to_yaml(plan) if PLAN_SUFFIXES[path.suffix.lower()] == "yaml" else to_json(plan)
    return write_atomic(path, text, protect=protect)


def read_structured(path: str | os.PathLike, *, what: str = "file") -> Any:
    """Read a YAML or JSON file; a clear InputError when missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found", file=str(path))
    if path.is_dir():
        raise InputError(f"{what} is a folder, not a file", file=str(path))
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        line = getattr(exc, "lineno", None) or getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" near line {line + 1 if isinstance(exc, yaml.YAMLError) else line}" if line is not None else ""
        raise InputError(f"malformed {what}{where}: {str(exc).splitlines()[0]}", file=str(path),
                         expected="valid YAML or JSON") from None


def json_lines(path: str | os.PathLike, *, what: str = "file",
               expected: str = "one JSON object per line") -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` per non-blank line of a JSON-lines file; one clear
    :class:`InputError` for a missing file or a line that is not a JSON object."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", file=str(path))
    with path.open(encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"line {n} is not JSON ({exc.msg})", file=str(path),
                                 expected=expected) from None
            if not isinstance(row, dict):
                raise InputError(f"line {n} is not a JSON object", file=str(path),
                                 expected=expected)
            yield n, row


def load_plan(path: str | os.PathLike, *, kinds: Iterable[str] | None = None) -> dict[str, Any]:
    """Read a plan file and check its apiVersion and kind."""
    data = read_structured(path, what="plan file")
    if not isinstance(data, dict):
        raise InputError("plan file is not a mapping", file=str(path), expected="a YAML/JSON object")
    if data.get("apiVersion") != API_VERSION:
        raise InputError(f"unsupported apiVersion {data.get('apiVersion')!r}", file=str(path),
                         field="apiVersion", expected=repr(API_VERSION))
    allowed = tuple(kinds) if kinds is not None else KINDS
    if data.get("kind") not in allowed:
        raise InputError(f"unsupported plan kind {data.get('kind')!r}", file=str(path),
                         field="kind", expected=" or ".join(allowed))
    return data
