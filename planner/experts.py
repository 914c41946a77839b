"""MoE expert placement: how many replicas each expert gets and which GPU holds each one.

Beyond DeepSeek's EPLB (greedy, duplicates on one GPU, no bound) and MoETuner (cross-layer
affinity, no replication): water-filling replica counts, anti-affine placement with swap
descent (never two copies of one expert on a GPU), EPLB's hierarchy (expert groups pinned to
nodes), a proven lower bound per layer, a migration budget against a previous plan, a
cross-layer / co-activation secondary objective from routing traces, redundant slots chosen
against a memory budget, and maps for every engine.  The math lives in
:mod:`solvers.assignment` (items = experts, bins = GPUs, domains = nodes, rows = layers).

Load model (the one EPLB uses): an expert's tokens split evenly over its replicas, so a GPU's
load is the sum of ``load[e] / replicas[e]`` over the replicas it holds; ``max/mean GPU load``
is its busiest GPU over the average GPU, per layer.

Engine formats, checked against their documentation / source on 2025-11-21 (search tool):
* EPLB (github.com/deepseek-ai/EPLB, eplb.py ``rebalance_experts``): ``phy2log`` [layers,
  physical slots], ``log2phy`` [layers, logical, max replicas] padded with -1, ``logcnt``
  [layers, logical]; physical slot ``i`` lives on GPU ``i // slots_per_gpu``.
* SGLang (``python/sglang/srt/managers/expert_location.py``,
  ``compute_initial_expert_location_metadata``): ``--init-expert-location`` takes a ``.json``
  (or ``.pt``, or inline JSON) with ``physical_to_logical_map`` [num_layers, num_physical]
  (``init_by_mapping``) or ``logical_count`` (SGLang then runs its own EPLB);
  ``--ep-num-redundant-experts`` must equal physical - logical.  Its layer axis covers every
  decoder layer (dense ones included), so dense layers get an identity row.
* vLLM (docs.vllm.ai, ``vllm.config.parallel.EPLBConfig`` and ``eplb_state.EplbState``):
  ``--enable-eplb --eplb-config '{"num_redundant_experts": R}'``; its state holds
  ``physical_to_logical_map`` [moe layers, physical], ``logical_to_physical_map`` [moe layers,
  logical, redundant + 1] padded with -1 and ``logical_replica_count``.  vLLM documents no flag
  that loads an initial map (only ``expert_placement_strategy`` linear / round_robin), so we
  write the state in its shapes for a custom loader and the flags that size it.
* TensorRT-LLM (``MoeLoadBalancerConfig`` in ``tensorrt_llm/llmapi/llm_args.py`` and the
  wide-EP example README): YAML ``{num_slots, initial_global_assignments: {layer: [expert per
  slot]}, layer_updates_per_iter: 0}``, keyed by the model's decoder layer index (MoE layers
  only; the test suite starts at ``first_k_dense_replace``), every ``num_slots / ep_size``
  successive slots on one rank; referenced as ``moe_config: {load_balancer: FILE}``.

Size limits (README, "MoE expert placement"), checked before any array is sized: ids in load
files and traces beyond :data:`MAX_LAYERS` / :data:`MAX_EXPERTS` (or the named model's own
counts) are refused while the file is read; requests beyond :data:`MAX_GPUS`,
:data:`MAX_SLOTS` and the products below are refused before solving.  Within them the time
limit covers the whole search (bound, improvement stages, migration, affinity); reading the
inputs and the first placement of every layer always complete (a few seconds at the limits;
writing a plan of a million-entry table takes longer in YAML than in JSON).
Loads are relative: they are scaled by a power of two (exact) before solving, so a matrix and
the same matrix times any factor get the same placement, status and gap.
"""
from __future__ import annotations

import csv
import json
import math
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from hardware.errors import InputError, from_validation_error
from planner.plan import json_lines
from solvers import assignment as asg

KIND = "ExpertPlacement"

#: MoE layers of a load matrix (rows)
MAX_LAYERS = 4096
#: experts per layer (columns)
MAX_EXPERTS = 65536
#: layers x experts of a load matrix
MAX_LOAD_ENTRIES = 1 << 22
#: entries of a ``[records, layers, experts]`` dump (summed over records when read)
MAX_DUMP_ENTRIES = 1 << 26
#: layers x experts x experts of the pair counts derived from routing traces
MAX_PAIR_ENTRIES = 1 << 24
#: GPUs of one expert-parallel group
MAX_GPUS = 4096
#: physical expert slots per layer (all GPUs together)
MAX_SLOTS = 65536
#: layers x slots: the placement table written to the plan
MAX_TABLE_ENTRIES = 1 << 20
#: layers x GPUs x experts: which expert each GPU holds, per layer
MAX_CELLS = 1 << 25
#: layers x slots x GPUs: the work of the first placement (LPT over every GPU per copy)
MAX_PACK_WORK = 1 << 30
#: slots per layer up to which the affinity pass swaps copies (it compares every slot pair)
MAX_AFFINITY_SLOTS = 2048
#: seconds (time_limit_s, cpsat_s)
MAX_TIME_S = 86400.0


# ============================================================================ loads and traces
@dataclass
class LoadData:
    """Loads per (layer, expert) and, from traces, pair weights.

    Attributes:
        weights: ``[layers, experts]`` float, >= 0.
        source: file the loads came from.
        transitions: ``[layers - 1, E, E]`` token counts from expert e at layer l to f at l + 1.
        coactivation: ``[layers, E, E]`` token counts with e and f both among a token's top-k.
    """

    weights: np.ndarray
    source: str = ""
    transitions: Optional[np.ndarray] = None
    coactivation: Optional[np.ndarray] = None


@dataclass(frozen=True)
class IdLimits:
    """The most layers and experts per layer a load file or trace may have: the planner's
    documented maxima, or a named model's own counts (``owner``: the model's name)."""

    layers: int = MAX_LAYERS
    experts: int = MAX_EXPERTS
    owner: str = ""

    def why(self, kind: str) -> str:
        limit = self.layers if kind == "layer" else self.experts
        noun = "layers" if kind == "layer" else "experts per layer"
        return (f"{self.owner} has {limit:,} {noun}" if self.owner
                else f"at most {limit:,} {noun}, the planner's limit")

    def check_id(self, kind: str, value: int, *, file: str, field: str, where: str) -> None:
        """Refuse a layer / expert id outside ``0..limit - 1`` (``where``: "line 5: ")."""
        limit = self.layers if kind == "layer" else self.experts
        if not 0 <= value < limit:
            raise InputError(f"{where}{kind} id {value} is out of range", file=file, field=field,
                             expected=f"{kind} ids 0..{limit - 1}: {self.why(kind)}")

    def check_shape(self, shape: tuple, *, file: str, field: str) -> None:
        """Refuse a ``[layers, experts]`` (or ``[records, layers, experts]``) shape beyond the
        limits, before the array is read or summed."""
        if len(shape) not in (2, 3):
            return   # _check_matrix names the wrong shape
        L, E = int(shape[-2]), int(shape[-1])
        if L > self.layers:
            raise InputError(f"load matrix has {L:,} layers", file=file, field=field,
                             expected=self.why("layer"))
        if E > self.experts:
            raise InputError(f"load matrix has {E:,} experts per layer", file=file, field=field,
                             expected=self.why("expert"))
        if L * E > MAX_LOAD_ENTRIES:
            raise InputError(f"load matrix has {L:,} layers x {E:,} experts", file=file,
                             field=field, expected=f"at most {MAX_LOAD_ENTRIES:,} entries "
                                                   "(layers x experts), the planner's limit")
        if len(shape) == 3 and int(np.prod(shape, dtype=object)) > MAX_DUMP_ENTRIES:
            raise InputError(f"the dump holds {int(shape[0]):,} records of {L} x {E}", file=file,
                             field=field, expected=f"at most {MAX_DUMP_ENTRIES:,} entries in all "
                                                   "(sum the records first)")


def _npz_shape(z: Any, key: str) -> tuple | None:
    """The shape of array ``key`` of an open npz, from its header (None when unreadable)."""
    try:
        with z.zip.open(key + ".npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            return tuple(read(fh)[0])
    except Exception:  # noqa: BLE001 - np.load reports a broken member itself
        return None


def _whole_number(value: Any) -> int | None:
    """An integer from an int, an integral float or their text ("3", "3.0", "1e9"); else None
    (True / False are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def read_loads(path: str | Path, *, field_name: str = "loads",
               limits: IdLimits = IdLimits()) -> LoadData:
    """Read a load matrix from .npy / .npz / .csv / .json / .pt / .jsonl (traces).

    * ``.npy``: ``[layers, experts]`` or ``[records, layers, experts]`` (summed over records);
    * ``.npz``: the array named ``weight``, else ``logical_count``, else the only array;
    * ``.csv``: header ``layer_id,expert_id,count`` (rows for one pair are summed);
    * ``.json``: a matrix, or an object with ``weight`` / ``loads`` / ``logical_count``
      (SGLang's expert-distribution dump converted to JSON is accepted as is);
    * ``.pt``: SGLang's dump (``logical_count`` [records, layers, experts]) when torch is
      installed;
    * ``.jsonl``: routing traces, see :func:`read_traces`.

    Shapes and ids beyond ``limits`` are refused before the matrix is built.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("load file not found", file=str(p), field=field_name)
    if p.is_dir():
        raise InputError("load file is a folder", file=str(p), field=field_name)
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return read_traces(p, limits=limits, field_name=field_name)
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False, mmap_mode="r")   # the header first
            limits.check_shape(arr.shape, file=str(p), field=field_name)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
                key = next((k for k in ("weight", "logical_count") if k in keys), None)
                if key is None and len(keys) == 1:
                    key = keys[0]
                if key is None:
                    raise InputError(f"npz holds {keys}; cannot tell which is the load matrix",
                                     file=str(p), field=field_name,
                                     expected="an array named 'weight' or a single array")
                shape = _npz_shape(z, key)
                if shape is not None:
                    limits.check_shape(shape, file=str(p), field=field_name)
                arr = z[key]
        elif suffix == ".csv":
            arr = _read_csv(p, limits)
        elif suffix == ".json":
            arr = _from_json(json.loads(p.read_text(encoding="utf-8")), p)
        elif suffix == ".pt":
            arr = _read_torch(p)
        else:
            raise InputError(f"unknown load file type '{suffix}'", file=str(p), field=field_name,
                             expected=".npy, .npz, .csv, .json, .pt or .jsonl")
    except InputError:
        raise
    except (ValueError, OSError, EOFError, RecursionError, json.JSONDecodeError,
            zipfile.BadZipFile) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot read the load file: {first}", file=str(p),
                         field=field_name) from None
    return LoadData(_check_matrix(arr, p, limits, field_name), str(p))


def _from_json(data: Any, p: Path) -> np.ndarray:
    if isinstance(data, dict):
        for key in ("weight", "loads", "logical_count"):
            if key in data:
                return np.asarray(data[key], dtype=float)
        raise InputError("JSON object has no load matrix", file=str(p),
                         expected="keys 'weight', 'loads' or 'logical_count'")
    try:
        return np.asarray(data, dtype=float)
    except (TypeError, ValueError):
        raise InputError("JSON is not a numeric matrix", file=str(p),
                         expected="a [layers][experts] list of numbers") from None


def _read_csv(p: Path, limits: IdLimits = IdLimits()) -> np.ndarray:
    """``layer_id,expert_id,count`` rows; each id checked against ``limits`` as it is read."""
    file = str(p)
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"layer_id", "expert_id", "count"}
        if reader.fieldnames is None or not need <= {f.strip() for f in reader.fieldnames if f}:
            raise InputError(f"CSV header is {reader.fieldnames}", file=file,
                             expected="columns layer_id,expert_id,count")
        layers, experts, counts = [], [], []
        for i, row in enumerate(reader, start=2):
            row = {k.strip(): v for k, v in row.items() if k is not None}
            ids = []
            for column, kind in (("layer_id", "layer"), ("expert_id", "expert")):
                value = _whole_number(row.get(column))
                if value is None:
                    raise InputError(f"line {i}: {column} {row.get(column)!r} is not a whole "
                                     "number", file=file, field=column,
                                     expected=f"integer {kind} ids")
                limits.check_id(kind, value, file=file, field=column, where=f"line {i}: ")
                ids.append(value)
            try:
                count = float(row.get("count"))
            except (TypeError, ValueError):
                count = math.nan
            if not (math.isfinite(count) and count >= 0):
                raise InputError(f"line {i}: count {row.get('count')!r}", file=file, field="count",
                                 expected="a finite number >= 0")
            layers.append(ids[0])
            experts.append(ids[1])
            counts.append(count)
    if not counts:
        raise InputError("CSV has no rows", file=file, expected="one row per (layer, expert)")
    shape = (max(layers) + 1, max(experts) + 1)
    limits.check_shape(shape, file=file, field="expert_id")
    out = np.zeros(shape)
    np.add.at(out, (np.asarray(layers), np.asarray(experts)), np.asarray(counts))
    return out


def _read_torch(p: Path) -> np.ndarray:
    try:
        import torch
    except ImportError:
        raise InputError("reading a .pt dump needs torch, which is not installed", file=str(p),
                         hint="convert it where torch is: python -c \"import torch, numpy; "
                              "d = torch.load('DUMP.pt'); numpy.savez('loads.npz', "
                              "logical_count=d['logical_count'].numpy())\"") from None
    data = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(data, dict):
        if "logical_count" not in data:
            raise InputError("torch dump has no 'logical_count'", file=str(p),
                             expected="SGLang's expert-distribution dump")
        data = data["logical_count"]
    return np.asarray(data.numpy() if hasattr(data, "numpy") else data, dtype=float)


def _check_matrix(arr: np.ndarray, p: Path | str, limits: IdLimits = IdLimits(),
                  field: str | None = None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iufb":
        raise InputError(f"load matrix has dtype {arr.dtype}", file=str(p), field=field,
                         expected="numbers")
    limits.check_shape(arr.shape, file=str(p), field=field)
    arr = arr.astype(float)
    if arr.ndim == 3:  # SGLang logical_count [records, layers, experts]: total over records
        arr = arr.sum(0)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"load matrix has shape {list(arr.shape)}", file=str(p), field=field,
                         expected="[layers, experts] (or [records, layers, experts])")
    if not np.all(np.isfinite(arr)):
        raise InputError("load matrix holds NaN or infinite values", file=str(p), field=field,
                         expected="finite counts")
    if np.any(arr < 0):
        layer, expert = map(int, np.argwhere(arr < 0)[0])
        raise InputError(f"negative count {arr[layer, expert]:g} at layer {layer}, expert {expert}",
                         file=str(p), field=field, expected="counts >= 0")
    with np.errstate(over="ignore"):
        total = float(arr.sum(dtype=float))
    if not math.isfinite(total):
        raise InputError("the loads add up to more than the largest float", file=str(p), field=field,
                         expected="counts whose total is finite (loads are relative: scale them "
                                  "down)")
    return arr


def read_traces(path: str | Path, *, limits: IdLimits = IdLimits(),
                field_name: str = "traces") -> LoadData:
    """Token routing traces, JSONL, one object per (token, layer):
    ``{"request": R, "token": T, "layer": L, "experts": [top-k expert ids]}``.

    Derives loads (tokens per expert), co-activation within a layer (pairs among one token's
    top-k) and transitions between consecutive layers (every expert of layer l to every expert
    of layer l + 1 for the same token, weighted 1 / k^2 so each token-step counts once).
    Layer and expert ids beyond ``limits`` are refused at their line, and traces whose pair
    counts would exceed :data:`MAX_PAIR_ENTRIES` before those are sized.
    """
    p = Path(path)
    file = str(p)
    if not p.is_file():
        raise InputError("routing trace not found" if not p.exists() else "routing trace is a folder",
                         file=file, field=field_name)
    recs: dict[tuple, dict[int, list[int]]] = {}
    max_layer = max_expert = -1
    record = '{"request", "token", "layer", "experts": [ids]}'
    for i, obj in json_lines(p, what="routing trace", expected=record):
        where = f"line {i}: "
        if "token" not in obj or "layer" not in obj or "experts" not in obj:
            missing = next(k for k in ("token", "layer", "experts") if k not in obj)
            raise InputError(f"{where}no '{missing}'", file=file, field=missing, expected=record)
        key = (obj.get("request", 0), obj["token"])
        if not all(k is None or (isinstance(k, (str, int, float)) and not isinstance(k, bool))
                   for k in key):
            raise InputError(f"{where}request / token {list(key)} are not ids", file=file,
                             field="token", expected="a number or a string each")
        layer = _whole_number(obj["layer"])
        if layer is None or isinstance(obj["layer"], str):
            raise InputError(f"{where}layer {obj['layer']!r} is not a whole number", file=file,
                             field="layer", expected="an integer layer id")
        limits.check_id("layer", layer, file=file, field="layer", where=where)
        raw = obj["experts"]
        experts = [_whole_number(e) for e in raw] if isinstance(raw, list) else None
        if not experts or any(e is None or isinstance(x, str) for e, x in zip(experts, raw)):
            raise InputError(f"{where}experts {raw!r}"[:120], file=file, field="experts",
                             expected="a non-empty list of integer expert ids (the token's top-k)")
        for e in experts:
            limits.check_id("expert", e, file=file, field="experts", where=where)
        recs.setdefault(key, {})[layer] = experts
        max_layer, max_expert = max(max_layer, layer), max(max_expert, max(experts))
    if max_layer < 0:
        raise InputError("trace file has no records", file=file, field=field_name)
    L, E = max_layer + 1, max_expert + 1
    limits.check_shape((L, E), file=file, field="experts")
    if L * E * E > MAX_PAIR_ENTRIES:
        raise InputError(f"traces over {L:,} layers x {E:,} experts need {L * E * E:,} pair counts",
                         file=file, field="experts",
                         expected=f"layers x experts^2 <= {MAX_PAIR_ENTRIES:,} (pass the loads "
                                  "as a matrix instead)")
    loads = np.zeros((L, E))
    co = np.zeros((L, E, E))
    tr = np.zeros((max(L - 1, 0), E, E))
    for layers in recs.values():
        for layer, ex in layers.items():
            ex = np.asarray(ex)
            np.add.at(loads[layer], ex, 1.0)
            if ex.size > 1:
                a, b = np.meshgrid(ex, ex, indexing="ij")
                m = a != b
                np.add.at(co[layer], (a[m], b[m]), 1.0)
            nxt = layers.get(layer + 1)
            if nxt is not None:
                a, b = np.meshgrid(ex, np.asarray(nxt), indexing="ij")
                np.add.at(tr[layer], (a.ravel(), b.ravel()), 1.0 / (ex.size * len(nxt)))
    return LoadData(loads, str(p), tr, co)


# ============================================================================ request
class _Spec(BaseModel):
    # no inf / nan anywhere: every number of a request is a finite quantity
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class MemorySpec(_Spec):
    """Redundant slots chosen against memory: each slot holds one expert of every MoE layer."""

    budget_gib_per_gpu: float = Field(gt=0, le=2 ** 20,
                                      description="GiB per GPU for routed-expert weights")
    expert_bytes: Optional[float] = Field(default=None, ge=1, le=2 ** 50,
                                          description="bytes of one expert in one layer "
                                                      "(default: from the model)")
    expert_dtype: Optional[str] = Field(default=None, description="default: the model's dtype")
    kv_dtype_bytes: float = Field(default=2.0, gt=0, le=64)
    tolerance: float = Field(default=0.01, ge=0, le=1,
                             description="stop adding slots once the bound is within this of "
                                         "the best the budget allows")


class AffinitySpec(_Spec):
    enabled: bool = True
    slack: float = Field(default=0.0, ge=0, le=10,
                         description="max/mean GPU load that may be given up "
                                     "(fraction of the load-only plan's)")


class ExpertRequest(_Spec):
    """``planner experts`` request (YAML / JSON, or built from CLI flags).

    Counts are bounded by the documented maxima (:data:`MAX_GPUS`, :data:`MAX_SLOTS`, ...);
    errors about a field name the request file, or the flag that gave the value."""

    apiVersion: Optional[str] = None
    kind: Optional[str] = None
    loads: Optional[str] = Field(default=None, description="load file (see read_loads)")
    traces: Optional[str] = Field(default=None, description="JSONL routing traces")
    model: Optional[str] = Field(default=None, description="model alias or config.json")
    gpus: int = Field(gt=0, le=MAX_GPUS)
    nodes: int = Field(default=1, gt=0, le=MAX_GPUS)
    slots: Optional[int] = Field(default=None, gt=0, le=MAX_SLOTS,
                                 description="physical slots in total")
    slots_per_gpu: Optional[int] = Field(default=None, gt=0, le=MAX_SLOTS)
    redundant: Optional[int] = Field(default=None, ge=0, le=MAX_SLOTS,
                                     description="slots beyond one per expert")
    groups: Optional[int] = Field(default=None, gt=0, le=MAX_EXPERTS,
                                  description="contiguous expert groups, each kept on one node")
    max_replicas: Optional[int] = Field(default=None, gt=0, le=MAX_GPUS,
                                        description="cap per expert")
    gpu_slots: Optional[list[Annotated[int, Field(ge=1, le=MAX_SLOTS)]]] = Field(
        default=None, max_length=MAX_GPUS, description="mixed GPUs: slots per GPU")
    gpu_speeds: Optional[list[Annotated[float, Field(ge=1e-6, le=1e6)]]] = Field(
        default=None, max_length=MAX_GPUS, description="mixed GPUs: relative speed (ratios matter)")
    gpu: Optional[str] = Field(default=None, description="GPU type (for the memory report)")
    memory: Optional[MemorySpec] = None
    previous: Optional[str] = Field(default=None, description="previous ExpertPlacement plan or npz")
    max_moves: Optional[int] = Field(default=None, ge=0, le=MAX_TABLE_ENTRIES,
                                     description="copies that may be loaded")
    affinity: AffinitySpec = AffinitySpec()
    time_limit_s: float = Field(default=30.0, gt=0, le=MAX_TIME_S)
    cpsat_s: float = Field(default=0.0, ge=0, le=MAX_TIME_S,
                           description="CP-SAT refinement time (0: off)")
    tolerance: float = Field(default=1e-3, ge=0, le=1, description="stop improving a layer this "
                                                                  "close to its bound")
    _file: Optional[str] = PrivateAttr(default=None)
    _flags: dict = PrivateAttr(default_factory=dict)

    def where(self, field: str) -> dict:
        """``file=`` / ``field=`` for an :class:`InputError` about ``field``: the request file
        and the field, or (a value given on the command line) the flag alone."""
        flag = self._flags.get(field) or self._flags.get(field.split(".")[0])
        if flag:
            return {"file": None, "field": flag}
        return {"file": self._file, "field": field}

    def slots_field(self) -> str:
        """The field that set the slot count (for errors about it)."""
        return next((k for k in ("slots", "slots_per_gpu", "redundant", "gpu_slots")
                     if getattr(self, k) is not None), "slots")


def load_request(path: str | Path) -> ExpertRequest:
    """Read and validate a request file.  Relative paths in it (loads, traces, previous, a
    model's config.json) are read from the request's folder (else as given)."""
    from costmodels.model import model_beside
    from planner.plan import read_structured

    data = read_structured(path, what="request")
    if not isinstance(data, dict):
        raise InputError("request is not a mapping", file=str(path), expected="a YAML/JSON object")
    req = validate_request(data, file=str(path))
    base = Path(path).resolve().parent
    updates = {}
    for key in ("loads", "traces", "previous"):
        v = getattr(req, key)
        if v and not Path(v).is_absolute() and ((base / v).exists() or not Path(v).exists()):
            updates[key] = str(base / v)
    if req.model:
        updates["model"] = model_beside(req.model, base)
    return req.model_copy(update=updates)


def validate_request(data: dict, *, file: str | None = None,
                     flags: dict[str, str] | None = None) -> ExpertRequest:
    """The request from ``data`` (read from ``file``).  ``flags``: which fields came from the
    command line (``{"gpus": "--gpus", "memory.budget_gib_per_gpu": "--memory-gib"}``), so that
    an error about one names the flag rather than the file."""
    flags = dict(flags or {})

    def at(field: str) -> dict:
        flag = flags.get(field) or flags.get(field.split(".")[0].split("[")[0])
        return {"file": None, "field": flag} if flag else {"file": file, "field": field}

    if data.get("kind") not in (None, "ExpertRequest", "ExpertPlacementRequest"):
        raise InputError(f"unexpected kind {data.get('kind')!r}", **at("kind"),
                         expected="ExpertRequest")
    try:
        req = ExpertRequest.model_validate(data)
    except ValidationError as exc:
        err = from_validation_error(exc, file=file)
        if err.field is None:
            raise err from None
        raise InputError(err.message, expected=err.expected, hint=err.hint,
                         **at(err.field)) from None
    req._file = None if file is None else str(file)
    req._flags = flags
    return req


# ============================================================================ problem
@dataclass
class Problem:
    """What the solver needs, derived from a request."""

    weights: np.ndarray              # [layers, experts]
    bins: asg.Bins                   # one bin per GPU
    num_nodes: int
    groups: Optional[int]
    cap: int
    model: Any = None
    loads: LoadData | None = None
    memory_report: Optional[dict] = None
    notes: list[str] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def num_experts(self) -> int:
        return self.weights.shape[1]

    @property
    def node_of_gpu(self) -> np.ndarray:
        return np.arange(self.bins.count) // (self.bins.count // self.num_nodes)


def _load_model(req: ExpertRequest):
    """The request's model; an unknown name or unreadable config names the request's field."""
    try:
        from costmodels.model import load_model
    except ImportError:  # pragma: no cover - the cost models land separately
        raise InputError("model specs are not available in this installation",
                         **req.where("model")) from None
    try:
        return load_model(req.model)
    except InputError as exc:
        if exc.file is not None and Path(exc.file).is_file():
            raise   # about the config file's content: that file is named
        raise InputError(exc.message, expected=exc.expected, hint=exc.hint,
                         **req.where("model")) from None


def _located(req: ExpertRequest, exc: InputError, field: str) -> InputError:
    """``exc`` (raised without a file) placed at the request's ``field``."""
    if exc.file is not None:
        return exc
    return InputError(exc.message, expected=exc.expected, hint=exc.hint, **req.where(field))


def check_gpu(req: ExpertRequest):
    """The request's GPU type from the catalog (an unknown name is refused with the catalog's
    suggestions), or None."""
    if not req.gpu:
        return None
    from hardware.catalog import get_accelerator

    return get_accelerator(req.gpu, **req.where("gpu"))


def input_files(req: ExpertRequest) -> list[Path]:
    """Every file the request reads (loads, traces, previous plan, a model's config.json):
    none of them may be overwritten by an output."""
    from costmodels.model import model_config_file

    files = [Path(p) for p in (req.loads, req.traces, req.previous) if p]
    if req.model:
        config = model_config_file(req.model)
        if config is not None:
            files.append(config)
    if req._file:
        files.insert(0, Path(req._file))
    return files


def build_problem(req: ExpertRequest, *, deadline: float | None = None) -> Problem:
    """Check the request against the loads and the model; choose the slot count.

    ``deadline`` (``time.perf_counter()``) cuts the memory budget's slot sweep short."""
    if not req.loads and not req.traces:
        raise InputError("no loads given", **req.where("loads"), expected="a load file or traces")
    check_gpu(req)
    model = _load_model(req) if req.model else None
    if model is not None and model.moe is None:
        raise InputError(f"model {model.name} has no routed experts", **req.where("model"),
                         expected="a MoE model")
    limits = IdLimits() if model is None else \
        IdLimits(min(model.num_layers, MAX_LAYERS), min(model.moe.num_experts, MAX_EXPERTS),
                 model.name)
    data = read_loads(req.loads, field_name="loads", limits=limits) if req.loads \
        else read_traces(req.traces, limits=limits)
    if req.loads and req.traces:
        tr = read_traces(req.traces, limits=limits)
        if tr.weights.shape[1] > data.weights.shape[1] or tr.weights.shape[0] > data.weights.shape[0]:
            raise InputError(f"traces cover {list(tr.weights.shape)} (layers, experts), more than "
                             f"the loads {list(data.weights.shape)}", file=req.traces, field="traces")
        L, E = data.weights.shape
        if L * E * E > MAX_PAIR_ENTRIES:
            raise InputError(f"pair counts over the loads' {L:,} layers x {E:,} experts would take "
                             f"{L * E * E:,} entries", file=req.traces, field="traces",
                             expected=f"layers x experts^2 <= {MAX_PAIR_ENTRIES:,}")
        data = LoadData(data.weights, data.source, _pad_pairs(tr.transitions, data.weights, -1),
                        _pad_pairs(tr.coactivation, data.weights, 0))
    w = data.weights
    notes = []
    if model is not None:
        L, E = model.num_moe_layers, model.moe.num_experts
        if w.shape == (model.num_layers, E) and model.num_layers != L:
            dense = [i for i in range(model.num_layers) if not model.is_moe_layer(i)]
            if np.any(w[dense] > 0):
                raise InputError(f"loads have counts on dense layers {dense[:5]} of {model.name}",
                                 file=data.source, field="loads")
            keep = [i for i in range(model.num_layers) if model.is_moe_layer(i)]
            w = w[keep]
            consecutive = bool(np.all(np.diff(keep) == 1))
            data = LoadData(w, data.source,
                            data.transitions[keep[:-1]] if data.transitions is not None and
                            consecutive else None,
                            None if data.coactivation is None else data.coactivation[keep])
            notes.append(f"dropped {len(dense)} dense layers from the load matrix")
        elif w.shape != (L, E):
            raise InputError(f"load matrix is {list(w.shape)} (layers, experts) but {model.name} "
                             f"has {L} MoE layers x {E} experts", file=data.source, field="loads",
                             expected=f"[{L}, {E}] or [{model.num_layers}, {E}]")
    L, E = w.shape
    G, N = req.gpus, req.nodes
    if G % N:
        raise InputError(f"{G} GPUs do not split evenly over {N} nodes", **req.where("gpus"),
                         expected="a multiple of nodes")
    if L * G * E > MAX_CELLS:
        raise InputError(f"{L:,} layers x {E:,} experts on {G:,} GPUs is too large",
                         **req.where("gpus"),
                         expected=f"layers x GPUs x experts <= {MAX_CELLS:,}, the planner's limit")
    groups = req.groups
    if groups is None and model is not None and model.moe.num_expert_groups > 1 and N > 1 \
            and model.moe.num_expert_groups % N == 0:
        notes.append(f"{model.name} routes within {model.moe.num_expert_groups} expert groups; "
                     f"pass --groups {model.moe.num_expert_groups} to keep each on one node")
    if groups is not None:
        if E % groups:
            raise InputError(f"{E} experts do not split into {groups} equal groups",
                             **req.where("groups"), expected=f"a divisor of {E}")
        if groups % N:
            raise InputError(f"{groups} groups cannot be spread equally over {N} nodes",
                             **req.where("groups"), expected=f"a multiple of nodes ({N})")
    cap = req.max_replicas or G
    slots_per_gpu, bins = _slots(req, E, G)
    memory_report = None
    if req.memory is not None:
        memory_report, chosen = _memory(req, w, G, N, groups, cap, model, slots_per_gpu,
                                        deadline=deadline)
        if memory_report.pop("cut_short", False):
            notes.append("the memory trade-off stopped at half the time limit: more slots per "
                         "GPU than those listed were not tried")
        if slots_per_gpu is None and req.gpu_slots is None:
            slots_per_gpu = chosen
            bins = asg.Bins.make([chosen] * G, req.gpu_speeds)
    if bins is None:
        raise InputError("the number of slots is not given", **req.where("slots"),
                         expected="--slots, --slots-per-gpu, --redundant or a memory budget")
    R = bins.total_slots
    given = any(getattr(req, k) is not None for k in ("slots", "slots_per_gpu", "redundant",
                                                      "gpu_slots"))
    at_slots = req.where(req.slots_field() if given else "memory.budget_gib_per_gpu")
    if R < E:
        raise InputError(f"{R} slots are fewer than the {E} experts", **at_slots,
                         expected=f"at least {E} slots ({math.ceil(E / G)} per GPU)")
    _check_slot_limits(L, G, R, at_slots)
    eff_cap = min(cap, G if groups is None else G // N)
    if groups is not None:
        per_node = R // N
        if bins.count % N or R % N or not _identical_nodes(bins, N):
            raise InputError("with --groups every node needs the same GPUs and slots",
                             **req.where("groups"))
        if per_node < E // N:
            raise InputError(f"{per_node} slots per node cannot hold the {E // N} experts of "
                             f"its groups", **at_slots, expected=f">= {E} slots")
        if per_node > (E // N) * eff_cap:
            raise InputError(f"{per_node} slots per node exceed what {E // N} experts with at "
                             f"most {eff_cap} copies each (one per GPU) can fill", **at_slots)
    elif R > E * eff_cap:
        raise InputError(f"{R} slots exceed what {E} experts with at most {eff_cap} copies each "
                         f"can fill without two copies on one GPU", **at_slots,
                         expected=f"<= {E * eff_cap} slots or a larger --max-replicas")
    return Problem(w, bins, N, groups, cap, model, data, memory_report, notes)


def _check_slot_limits(L: int, G: int, R: int, at: dict) -> None:
    """Refuse slot counts beyond the documented maxima (before anything is solved)."""
    if R > MAX_SLOTS:
        raise InputError(f"{R:,} slots per layer", **at,
                         expected=f"at most {MAX_SLOTS:,}, the planner's limit")
    if L * R > MAX_TABLE_ENTRIES:
        raise InputError(f"{L:,} layers x {R:,} slots is too large a placement table", **at,
                         expected=f"layers x slots <= {MAX_TABLE_ENTRIES:,}, the planner's limit")
    if L * R * G > MAX_PACK_WORK:
        raise InputError(f"{L:,} layers x {R:,} slots on {G:,} GPUs is too large", **at,
                         expected=f"layers x slots x GPUs <= {MAX_PACK_WORK:,}, the planner's limit")


def _pad_pairs(pairs, w, extra):
    if pairs is None:
        return None
    L, E = w.shape
    out = np.zeros((L + extra, E, E))
    out[:pairs.shape[0], :pairs.shape[1], :pairs.shape[2]] = pairs
    return out


def _identical_nodes(bins: asg.Bins, N: int) -> bool:
    kd = bins.count // N
    return bool(np.all(bins.slots.reshape(N, kd) == bins.slots[:kd]) and
                np.all(bins.speed.reshape(N, kd) == bins.speed[:kd]))


def _slots(req: ExpertRequest, E: int, G: int):
    given = [k for k in ("slots", "slots_per_gpu", "redundant", "gpu_slots")
             if getattr(req, k) is not None]
    if len(given) > 1:
        raise InputError(f"give only one of {', '.join(given)}", **req.where(given[1]))
    if req.gpu_speeds is not None:
        if len(req.gpu_speeds) != G:
            raise InputError(f"gpu_speeds has {len(req.gpu_speeds)} entries",
                             **req.where("gpu_speeds"), expected=f"{G} positive numbers")
    if req.gpu_slots is not None:
        if len(req.gpu_slots) != G:
            raise InputError(f"gpu_slots has {len(req.gpu_slots)} entries",
                             **req.where("gpu_slots"), expected=f"{G} integers >= 1")
        return None, asg.Bins.make(req.gpu_slots, req.gpu_speeds)
    total = req.slots if req.slots is not None else \
        (E + req.redundant if req.redundant is not None else
         (req.slots_per_gpu * G if req.slots_per_gpu is not None else None))
    if total is None:
        return None, None
    if total % G:
        field = "redundant" if req.redundant is not None else \
            ("slots_per_gpu" if req.slots_per_gpu is not None else "slots")
        raise InputError(f"{total} slots do not divide evenly over {G} GPUs", **req.where(field),
                         expected=f"a multiple of {G} (e.g. {math.ceil(total / G) * G})")
    if total > MAX_SLOTS:
        raise InputError(f"{total:,} slots per layer", **req.where(req.slots_field()),
                         expected=f"at most {MAX_SLOTS:,}, the planner's limit")
    return total // G, asg.Bins.make([total // G] * G, req.gpu_speeds)


def expert_bytes(req: ExpertRequest, model) -> float:
    mem = req.memory
    if mem is not None and mem.expert_bytes is not None:
        return float(mem.expert_bytes)
    if model is None:
        raise InputError("expert size unknown", **req.where("memory.expert_bytes"),
                         expected="memory.expert_bytes or --model")
    from costmodels.model import dtype_bytes

    dtype = (mem.expert_dtype if mem is not None and mem.expert_dtype else model.weight_dtype)
    try:
        size = dtype_bytes(dtype, field_name="memory.expert_dtype")
    except InputError as exc:
        raise _located(req, exc, "memory.expert_dtype") from None
    return float(model.expert_parameters()) * size


def _memory(req, w, G, N, groups, cap, model, slots_per_gpu, deadline=None):
    """Slots per GPU against the memory budget, with the KV-cache cost of every extra slot.

    The sweep over slot counts stops at half the time left before ``deadline`` (the report
    says ``cut_short``); the slot counts it reaches stay within the size limits."""
    mem = req.memory
    L, E = w.shape
    w = np.ldexp(w, load_exponent(w))   # relative loads: the ratios do not depend on the scale
    eb = expert_bytes(req, model)
    layer_bytes = eb * L                         # one slot holds one expert of every MoE layer
    budget = mem.budget_gib_per_gpu * 2 ** 30
    s_min = math.ceil(E / G)
    s_fit = int(budget // layer_bytes)
    at = req.where("memory.budget_gib_per_gpu")
    if s_fit < s_min:
        raise InputError(f"a budget of {mem.budget_gib_per_gpu:g} GiB per GPU holds {s_fit} expert "
                         f"slot(s) ({layer_bytes / 2 ** 30:.3f} GiB each: one expert of every MoE "
                         f"layer), but one copy of each of the {E} experts on {G} GPUs needs "
                         f"{s_min} per GPU", **at,
                         expected=f">= {s_min * layer_bytes / 2 ** 30:.2f} GiB per GPU")
    eff_cap = min(cap, G if groups is None else G // N)
    s_top = min(s_fit, (E * eff_cap) // G)
    # the size limits hold for every slot count the sweep may choose
    s_top = min(s_top, MAX_SLOTS // G, MAX_TABLE_ENTRIES // (L * G), MAX_PACK_WORK // (L * G * G))
    _check_slot_limits(L, G, s_min * G, at)
    kv = model.kv_bytes_per_token(mem.kv_dtype_bytes) if model is not None else None
    sweep_end = None if deadline is None else \
        time.perf_counter() + 0.5 * max(0.0, deadline - time.perf_counter())
    rows = []
    cut_short = False
    for s in range(s_min, s_top + 1):
        if (s * G) % (N if groups else 1):
            continue
        if rows and sweep_end is not None and time.perf_counter() > sweep_end:
            cut_short = True
            break
        bins = asg.Bins.make([s] * G)
        lb = _bound(w, bins, N, groups, eff_cap, deadline=sweep_end)
        extra = (s - s_min) * layer_bytes
        rows.append({"slots_per_gpu": s, "redundant": s * G - E,
                     "lower_bound_mean": float(np.mean(lb / (w.sum(1) / G + 1e-300))),
                     "expert_gib_per_gpu": s * layer_bytes / 2 ** 30,
                     "extra_gib_per_gpu": extra / 2 ** 30,
                     "kv_tokens_lost_per_gpu": None if kv is None else int(extra // kv)})
    if not rows:
        raise InputError(f"no slot count from {s_min} per GPU up fits {N} nodes with {groups} "
                         "groups within the budget", **at,
                         expected="a larger budget, or --slots-per-gpu")
    best = min(r["lower_bound_mean"] for r in rows)
    chosen = next(r for r in rows if r["lower_bound_mean"] <= best * (1 + mem.tolerance))
    report = {"expert_bytes": eb, "slot_bytes_per_gpu": layer_bytes,
              "budget_gib_per_gpu": mem.budget_gib_per_gpu, "slots_per_gpu_fit": s_fit,
              "chosen_slots_per_gpu": slots_per_gpu or chosen["slots_per_gpu"],
              "kv_bytes_per_token": kv,
              "kv_tokens_lost_per_extra_slot": None if kv is None else int(layer_bytes // kv),
              "assumption": "each GPU holds the whole KV cache of its own requests "
                            "(data-parallel attention); with TP attention divide by TP",
              "tradeoff": rows}
    if cut_short:
        report["cut_short"] = True
    acc = check_gpu(req)
    if acc is not None:
        report["gpu"] = acc.name
        report["gpu_memory_gib"] = acc.memory_bytes / 2 ** 30
    if slots_per_gpu is not None and slots_per_gpu > s_fit:
        raise InputError(f"{slots_per_gpu} slots per GPU need "
                         f"{slots_per_gpu * layer_bytes / 2 ** 30:.2f} GiB, over the budget", **at)
    return report, chosen["slots_per_gpu"]


def _bound(w, bins, N, groups, cap, deadline=None):
    if groups is None:
        return asg.lower_bound(w, bins, cap, deadline=deadline)
    kd = bins.count // N
    layout = asg.Bins.make(bins.slots[:kd], bins.speed[:kd])
    gsize = w.shape[1] // groups
    gw = w.reshape(w.shape[0], groups, gsize).sum(-1)
    dom = asg.lower_bound(gw, asg.Bins.make([groups // N] * N, [layout.speed.sum()] * N), 1,
                          deadline=deadline)
    return np.maximum(dom, asg.lower_bound(w, bins, min(cap, kd), deadline=deadline))


def load_exponent(weights: np.ndarray, speed: np.ndarray | None = None) -> int:
    """``k`` such that ``np.ldexp(weights, k)`` brings the largest load per unit of the fastest
    GPU's speed into [0.5, 1): loads are relative, and scaling by a power of two is exact, so
    the solver sees the same numbers for a matrix at any scale (no underflow, no absolute
    tolerance biting)."""
    top = float(np.max(weights)) if np.size(weights) else 0.0
    if speed is not None:
        top /= float(np.max(speed))
    if not (top > 0 and math.isfinite(top)):
        return 0
    return -math.frexp(top)[1]


# ============================================================================ solve
@dataclass
class ExpertPlacement:
    """A solved placement and everything reported about it."""

    problem: Problem
    phy2log: np.ndarray               # [layers, slots]
    solution: asg.Solution
    metrics: dict
    per_layer: list[dict]
    solver: dict
    migration: Optional[dict] = None
    affinity: Optional[dict] = None

    @property
    def logcnt(self) -> np.ndarray:
        return asg.item_counts(self.phy2log, self.problem.num_experts)

    @property
    def log2phy(self) -> np.ndarray:
        return log2phy(self.phy2log, self.problem.num_experts)


def log2phy(phy2log: np.ndarray, num_experts: int) -> np.ndarray:
    """``[layers, experts, max replicas]`` slot ids, -1 padded (EPLB / vLLM layout)."""
    L, R = phy2log.shape
    cnt = asg.item_counts(phy2log, num_experts)
    out = -np.ones((L, num_experts, max(int(cnt.max()), 1)), dtype=np.int64)
    fill = np.zeros((L, num_experts), dtype=np.int64)
    for r in range(R):
        e = phy2log[:, r]
        out[np.arange(L), e, fill[np.arange(L), e]] = r
        fill[np.arange(L), e] += 1
    return out


def solve(problem: Problem, req: ExpertRequest, previous: np.ndarray | None = None, *,
          deadline: float | None = None) -> ExpertPlacement:
    """Place every layer; then migration against ``previous`` and the affinity pass.

    Everything runs on the loads scaled by :func:`load_exponent` (exact: a power of two), so the
    status and gap do not depend on the loads' scale; objective and bound are reported in the
    loads' own units.  ``deadline`` (``time.perf_counter()``, default now + the request's time
    limit) bounds the whole search: with a migration or affinity pass to follow, the placement
    gets 60% of the time left."""
    start = time.perf_counter()
    if deadline is None:
        deadline = start + req.time_limit_s
    k = load_exponent(problem.weights, problem.bins.speed)
    raw = problem
    problem = replace(problem, weights=np.ldexp(problem.weights, k))
    w, bins = problem.weights, problem.bins
    cap = problem.cap
    pairs = problem.loads is not None and (problem.loads.transitions is not None or
                                           problem.loads.coactivation is not None)
    share = 0.6 if previous is not None or pairs else 1.0
    left = max(0.0, deadline - start)
    kw = dict(time_limit_s=share * left, tol=req.tolerance, cpsat_time_s=req.cpsat_s)
    if problem.groups is not None:
        sol = asg.solve_hierarchical(w, bins, num_domains=problem.num_nodes,
                                     num_groups=problem.groups, cap=cap, **kw)
    else:
        sol = asg.solve_flat(w, bins, cap=cap, **kw)
    table = sol.slot_item
    migration = None
    if previous is not None:
        table, migration = _migrate(problem, req, previous, table, sol, deadline)
    aff = None
    if pairs:
        # with a previous plan the move budget rules: report the traffic, do not reshuffle
        table, aff = (_affinity(problem, req, table, deadline) if previous is None
                      else (table, traffic(problem, table)))
    elapsed = time.perf_counter() - start
    metrics, per_layer = evaluate(problem, table, sol.bound, sol.domain_bound, sol.method)
    if migration is not None:
        metrics["experts_moved"] = migration["experts_moved"]
        for row, moved in zip(per_layer, asg.moved_copies(previous, table, bins, problem.num_experts)):
            row["experts_moved"] = int(moved)
    if aff is not None:
        metrics.update({k: aff[k] for k in aff if k.startswith("cross_")})
        for key, values in layer_traffic(problem, table).items():
            for row, v in zip(per_layer, values):
                row[key] = v
    res = sol.result
    obj = float(asg.bin_times(w, table, bins).max(1).sum())
    gap = asg.relative_gap(obj, res.bound)    # scale-free: both on the scaled loads
    status = "optimal" if gap is not None and gap <= 1e-9 else \
        ("feasible" if res.backend.startswith("cp-sat") else "heuristic")
    def unscaled(x):
        return None if x is None else float(np.ldexp(x, -k))

    bound = unscaled(res.bound)
    solver = {"status": status, "objective": unscaled(obj), "bound": bound, "gap": gap,
              "time_s": elapsed, "backend": res.backend, "time_limit_s": req.time_limit_s,
              "objective_meaning": "sum over layers of the busiest GPU's load / speed",
              "bound_meaning": "sum over layers of a proven lower bound on it"}
    # the solution in the loads' own units (dividing by a power of two is exact)
    sol = asg.Solution(sol.slot_item, sol.bins, np.ldexp(sol.bound, -k),
                       None if sol.domain_bound is None else np.ldexp(sol.domain_bound, -k),
                       sol.method, None if res is None else
                       replace(res, objective=unscaled(res.objective), bound=bound))
    return ExpertPlacement(raw, table, sol, metrics, per_layer, solver, migration, aff)


def _allowed_from(problem: Problem, table: np.ndarray) -> np.ndarray | None:
    """Hierarchy: item e may only live on the node that holds its group in ``table``."""
    if problem.groups is None:
        return None
    L, E = problem.weights.shape
    K = problem.bins.count
    node = problem.node_of_gpu[problem.bins.bin_of_slot]                 # node of each slot
    gsize = E // problem.groups
    allowed = np.zeros((L, E, K), dtype=bool)
    for l in range(L):
        for g in range(problem.groups):
            slots = np.isin(table[l], np.arange(g * gsize, (g + 1) * gsize))
            n = np.bincount(node[slots], minlength=problem.num_nodes).argmax()
            allowed[l, g * gsize:(g + 1) * gsize] = (problem.node_of_gpu == n)[None, :]
    return allowed


def _bin_class(problem: Problem) -> np.ndarray:
    base = asg.default_bin_classes(problem.bins)
    if problem.groups is None:
        return base
    return base * problem.num_nodes + problem.node_of_gpu


def _migrate(problem, req, previous, fresh, sol, deadline=None):
    """From ``previous`` towards the new loads: greedy moves within ``max_moves`` (or, without
    a budget, whichever of the greedy result and the fresh plan balances better)."""
    w, bins, E = problem.weights, problem.bins, problem.num_experts
    stale_obj = asg.bin_times(w, previous, bins).max(1)
    mean = w.sum(1) / bins.speed.sum()
    aligned = asg.align_bins(previous, fresh, bins, E, _bin_class(problem), deadline=deadline)
    full_moves = int(asg.moved_copies(previous, aligned, bins, E).sum())
    allowed = _allowed_from(problem, previous)
    table, _ = asg.replan(w, previous, bins, req.max_moves, cap=min(problem.cap, bins.count),
                          tol=req.tolerance, allowed=allowed, fresh=fresh,
                          bin_class=_bin_class(problem),
                          time_limit_s=None if deadline is None else
                          max(0.0, deadline - time.perf_counter()))
    moved = int(asg.moved_copies(previous, table, bins, E).sum())
    new_obj = asg.bin_times(w, table, bins).max(1)
    return table, {"experts_moved": moved, "max_moves": req.max_moves,
                   "moves_for_fresh_plan": full_moves,
                   "max_mean_gpu_load_before": float(np.mean(stale_obj / mean)),
                   "max_mean_gpu_load_after": float(np.mean(new_obj / mean)),
                   "max_mean_gpu_load_fresh_plan": float(np.mean(
                       asg.bin_times(w, aligned, bins).max(1) / mean))}


def _affinity(problem, req, table, deadline=None):
    data, bins, w = problem.loads, problem.bins, problem.weights
    before = traffic(problem, table)
    if not req.affinity.enabled:
        return table, before
    if bins.total_slots > MAX_AFFINITY_SLOTS:
        problem.notes.append(f"no affinity pass: {bins.total_slots:,} slots per layer, over the "
                             f"{MAX_AFFINITY_SLOTS:,} it handles; traffic is the load-only plan's")
        return table, before
    cap = asg.bin_times(w, table, bins).max(1) * (1 + req.affinity.slack)
    if problem.num_nodes > 1 and data.transitions is not None and _identical_nodes(bins, problem.num_nodes):
        # free first: which node holds which block (groups move with their whole node)
        table = asg.relabel_domains(table, bins, problem.num_nodes, data.transitions)
    new = asg.improve_affinity(w, table, bins, between=data.transitions, within=data.coactivation,
                               cap_time=cap, bin_class=_bin_class(problem),
                               allowed=_allowed_from(problem, table), deadline=deadline)
    after = traffic(problem, new)
    out = dict(after)
    out["load_only"] = before
    mean = w.sum(1) / bins.speed.sum()
    out["max_mean_gpu_load_given_up"] = float(np.mean(asg.bin_times(w, new, bins).max(1) / mean) -
                                              np.mean(asg.bin_times(w, table, bins).max(1) / mean))
    return new, out


def traffic(problem: Problem, table: np.ndarray) -> dict:
    """Expected cross-GPU / cross-node token traffic (fractions of the trace's pair weight)."""
    data, bins, E = problem.loads, problem.bins, problem.num_experts
    X = asg.copy_fractions(table, bins, E)
    node = problem.node_of_gpu
    out = {}
    if data.transitions is not None and data.transitions.sum() > 0:
        T = data.transitions
        tot = T.sum()
        gpu = sum(asg.split_pair_weight(X[l], X[l + 1], T[l]) for l in range(T.shape[0]))
        nod = sum(asg.split_pair_weight(X[l], X[l + 1], T[l], node) for l in range(T.shape[0]))
        out["cross_gpu_transitions"] = gpu / tot
        out["cross_node_transitions"] = nod / tot
    if data.coactivation is not None and data.coactivation.sum() > 0:
        C = data.coactivation
        tot = C.sum()
        out["cross_gpu_coactivation"] = sum(asg.split_pair_weight(X[l], X[l], C[l])
                                            for l in range(C.shape[0])) / tot
        out["cross_node_coactivation"] = sum(asg.split_pair_weight(X[l], X[l], C[l], node)
                                             for l in range(C.shape[0])) / tot
    return out


def layer_traffic(problem: Problem, table: np.ndarray) -> dict[str, list]:
    """Per layer: the fraction of its transitions to the next layer (and of its co-activated
    pairs) that cross a GPU / node boundary (None for the last layer's transitions)."""
    data, bins, E = problem.loads, problem.bins, problem.num_experts
    X = asg.copy_fractions(table, bins, E)
    node = problem.node_of_gpu
    L = problem.num_layers
    out: dict[str, list] = {}
    if data.transitions is not None:
        T = data.transitions
        for key, grp in (("cross_gpu_transitions", None), ("cross_node_transitions", node)):
            out[key] = [asg.split_pair_weight(X[l], X[l + 1], T[l], grp) / T[l].sum()
                        if l < T.shape[0] and T[l].sum() > 0 else None for l in range(L)]
    if data.coactivation is not None:
        C = data.coactivation
        for key, grp in (("cross_gpu_coactivation", None), ("cross_node_coactivation", node)):
            out[key] = [asg.split_pair_weight(X[l], X[l], C[l], grp) / C[l].sum()
                        if C[l].sum() > 0 else None for l in range(L)]
    return out


def evaluate(problem: Problem, table: np.ndarray, bound: np.ndarray,
             domain_bound: np.ndarray | None = None, method: list[str] | None = None):
    """Per-layer and overall metrics of a slot table (any table, e.g. EPLB's)."""
    w, bins = problem.weights, problem.bins
    L, E = w.shape
    t = asg.bin_times(w, table, bins)
    mean = w.sum(1) / bins.speed.sum()
    safe = np.where(mean > 0, mean, 1.0)
    gpu_ratio = np.where(mean > 0, t.max(1) / safe, 1.0)
    node_load = np.zeros((L, problem.num_nodes))
    node_speed = np.zeros(problem.num_nodes)
    np.add.at(node_speed, problem.node_of_gpu, bins.speed)
    np.add.at(node_load, (slice(None), problem.node_of_gpu), asg.bin_loads(w, table, bins))
    node_ratio = np.where(mean > 0, (node_load / node_speed).max(1) / safe, 1.0)
    lb_ratio = np.where(mean > 0, bound / safe, 1.0)
    dups = asg.duplicate_rows(table, bins)
    per_layer = []
    for l in range(L):
        row = {"layer": l, "max_mean_gpu_load": float(gpu_ratio[l]),
               "max_mean_node_load": float(node_ratio[l]), "lower_bound": float(lb_ratio[l]),
               "gap": float(gpu_ratio[l] / lb_ratio[l] - 1) if lb_ratio[l] > 0 else 0.0,
               "duplicate_gpus": int(dups[l])}
        if domain_bound is not None:
            row["node_bound"] = float(domain_bound[l] / safe[l])
        if method:
            row["method"] = method[l]
        per_layer.append(row)
    metrics = {"max_mean_gpu_load_mean": float(gpu_ratio.mean()),
               "max_mean_gpu_load_worst": float(gpu_ratio.max()),
               "max_mean_node_load_mean": float(node_ratio.mean()),
               "duplicate_pairs": int(dups.sum()),
               "lower_bound_mean": float(lb_ratio.mean()),
               "lower_bound_worst": float(lb_ratio.max()),
               "gap_to_bound_mean": float(np.mean(gpu_ratio / np.maximum(lb_ratio, 1e-300) - 1)),
               "max_replicas": int(asg.item_counts(table, E).max()),
               "experts_moved": 0}
    if domain_bound is not None:
        metrics["node_bound_mean"] = float(np.mean(domain_bound / safe))
    return metrics, per_layer


# ============================================================================ plans and formats
def read_previous(path: str | Path, problem: Problem) -> np.ndarray:
    """phy2log of a previous plan (ExpertPlacement YAML/JSON or an npz with ``phy2log``)."""
    p = Path(path)
    L, E = problem.weights.shape
    want = (L, problem.bins.total_slots)
    expected = f"[{L}, {problem.bins.total_slots}] (same layers and slots)"
    if p.suffix.lower() == ".npz":
        if not p.is_file():
            raise InputError("previous plan not found" if not p.exists() else
                             "previous plan is a folder", file=str(p), field="previous")
        try:
            with np.load(p, allow_pickle=False) as z:
                if "phy2log" not in z:
                    raise InputError("npz has no 'phy2log'", file=str(p), field="previous")
                shape = _npz_shape(z, "phy2log")
                if shape is not None and tuple(shape) != want:
                    raise InputError(f"previous phy2log is {list(shape)}", file=str(p),
                                     field="previous", expected=expected)
                table = np.asarray(z["phy2log"])
        except InputError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise InputError(f"cannot read the previous plan: {first}", file=str(p),
                             field="previous") from None
    else:
        from planner.plan import load_plan

        plan = load_plan(p, kinds=[KIND])
        try:
            raw = plan["placement"]["phy2log"]
            if not (isinstance(raw, list) and len(raw) == want[0] and
                    all(isinstance(r, list) and len(r) == want[1] for r in raw)):
                shape = [len(raw)] if isinstance(raw, list) else []
                if isinstance(raw, list) and raw and isinstance(raw[0], list):
                    shape.append(len(raw[0]))
                raise InputError(f"previous phy2log is {shape}", file=str(p), field="previous",
                                 expected=expected)
            table = np.asarray(raw)
        except (KeyError, TypeError):
            raise InputError("plan has no placement.phy2log", file=str(p), field="previous") from None
    if table.shape != want:
        raise InputError(f"previous phy2log is {list(table.shape)}", file=str(p), field="previous",
                         expected=expected)
    whole = table.dtype.kind in "iu" or (table.dtype.kind == "f" and bool(np.all(np.isfinite(table)))
                                          and bool(np.all(table == np.round(table))))
    if not whole or table.min() < 0 or table.max() >= E or \
            np.any(asg.item_counts(table.astype(np.int64), E) == 0):
        raise InputError("previous phy2log has expert ids out of range or experts without a copy",
                         file=str(p), field="previous", expected=f"integer ids 0..{E - 1}, each present")
    return table.astype(np.int64)


def plan_body(pl: ExpertPlacement, req: ExpertRequest) -> dict:
    """The ``kind: ExpertPlacement`` body (before :func:`planner.plan.envelope`)."""
    pb = pl.problem
    bins = pb.bins
    equal = bool(np.all(bins.slots == bins.slots[0]))
    spec = {"layers": pb.num_layers, "experts": pb.num_experts, "gpus": bins.count,
            "nodes": pb.num_nodes, "slots": bins.total_slots,
            "slots_per_gpu": int(bins.slots[0]) if equal else None,
            "redundant": bins.total_slots - pb.num_experts, "groups": pb.groups,
            "max_replicas": min(pb.cap, bins.count if pb.groups is None else bins.count // pb.num_nodes),
            "model": pb.model.name if pb.model is not None else None,
            "loads": _display_path(pb.loads.source) if pb.loads is not None else None,
            "hierarchical": pb.groups is not None}
    body = {"spec": spec, "metrics": pl.metrics, "solver": pl.solver}
    if pl.migration:
        body["migration"] = pl.migration
    if pl.affinity:
        body["affinity"] = pl.affinity
    if pb.memory_report:
        body["memory"] = pb.memory_report
    if pb.notes:
        body["notes"] = pb.notes
    body["per_layer"] = pl.per_layer
    placement = {"slot_to_gpu": "slot i lives on GPU i // slots_per_gpu" if equal else
                 asg.Bins.make(bins.slots).bin_of_slot.tolist(),
                 "phy2log": pl.phy2log.tolist()}
    if not np.all(bins.speed == 1):
        placement["gpu_speeds"] = bins.speed.tolist()
    body["placement"] = placement
    return body


def _display_path(path: str) -> str:
    """The path relative to the working folder when inside it (plans stay machine-independent)."""
    import os

    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def npz_arrays(pl: ExpertPlacement) -> dict[str, np.ndarray]:
    out = {"phy2log": pl.phy2log.astype(np.int64), "logcnt": pl.logcnt.astype(np.int64),
           "log2phy": pl.log2phy.astype(np.int64)}
    if not _equal_slots(pl):   # mixed GPUs: slot i's GPU is not i // slots_per_gpu
        out["slot_to_gpu"] = pl.problem.bins.bin_of_slot.astype(np.int64)
    return out


def _equal_slots(pl: ExpertPlacement) -> bool:
    return bool(np.all(pl.problem.bins.slots == pl.problem.bins.slots[0]))


def _engine_check(pl: ExpertPlacement, engine: str) -> None:
    if not _equal_slots(pl):
        raise InputError(f"{engine} needs the same number of slots on every GPU", field="gpu_slots",
                         expected="equal slots per GPU for engine maps (the .npz carries slot_to_gpu)")


def eplb_json(pl: ExpertPlacement) -> dict:
    _engine_check(pl, "EPLB's layout")
    return {k: v.tolist() for k, v in npz_arrays(pl).items()} | \
        {"slots_per_gpu": int(pl.problem.bins.slots[0])}


def _full_layers(pl: ExpertPlacement) -> tuple[np.ndarray, list[int]]:
    """phy2log over every decoder layer (dense ones: identity rows) and the MoE layer ids."""
    m = pl.problem.model
    if m is None:
        return pl.phy2log, list(range(pl.problem.num_layers))
    ids = [i for i in range(m.num_layers) if m.is_moe_layer(i)]
    R, E = pl.phy2log.shape[1], pl.problem.num_experts
    full = np.tile(np.arange(R) % E, (m.num_layers, 1))
    full[ids] = pl.phy2log
    return full, ids


def sglang_json(pl: ExpertPlacement) -> dict:
    """``--init-expert-location`` file: ``{"physical_to_logical_map": [layers][physical]}``."""
    _engine_check(pl, "SGLang")
    full, _ = _full_layers(pl)
    return {"physical_to_logical_map": full.tolist()}


def vllm_json(pl: ExpertPlacement) -> dict:
    _engine_check(pl, "vLLM")
    R, E = pl.phy2log.shape[1], pl.problem.num_experts
    l2p = pl.log2phy
    width = R - E + 1
    pad = -np.ones((l2p.shape[0], E, width), dtype=np.int64)
    pad[:, :, :l2p.shape[2]] = l2p[:, :, :width]
    return {"engine_flags": ["--enable-expert-parallel", "--enable-eplb", "--eplb-config",
                             json.dumps({"num_redundant_experts": R - E})],
            "note": "vLLM documents no flag that loads an initial placement; these arrays use "
                    "EplbState's shapes for a custom loader",
            "physical_to_logical_map": pl.phy2log.tolist(),
            "logical_to_physical_map": pad.tolist(),
            "logical_replica_count": pl.logcnt.tolist()}


def trtllm_yaml(pl: ExpertPlacement) -> dict:
    _engine_check(pl, "TensorRT-LLM")
    _, ids = _full_layers(pl)
    return {"num_slots": int(pl.phy2log.shape[1]),
            "initial_global_assignments": {int(i): pl.phy2log[j].tolist() for j, i in enumerate(ids)},
            "layer_updates_per_iter": 0}


def plan_experts(req: ExpertRequest) -> ExpertPlacement:
    """Library entry point: request -> solved placement.  The request's time limit counts
    from here (reading the inputs included); reading and the first placement of every layer
    are never cut short, everything after them stops at the limit."""
    deadline = time.perf_counter() + req.time_limit_s
    if req.max_moves is not None and not req.previous:
        raise InputError("--max-moves needs --previous", **req.where("max_moves"),
                         expected="a previous plan to count moves against")
    problem = build_problem(req, deadline=deadline)
    prev = read_previous(req.previous, problem) if req.previous else None
    return solve(problem, req, prev, deadline=deadline)


# ============================================================================ plan schema
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class PlanSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: int
    experts: int
    gpus: int
    nodes: int
    slots: int
    slots_per_gpu: Optional[int]
    redundant: int
    groups: Optional[int]
    max_replicas: int
    model: Optional[str]
    loads: Optional[str]
    hierarchical: bool


class PlanMetrics(_Open):
    """Stable names (issue 5); more keys may follow (cross_* traffic when traces are given)."""

    max_mean_gpu_load_mean: float
    max_mean_gpu_load_worst: float
    max_mean_node_load_mean: float
    duplicate_pairs: int
    lower_bound_mean: float
    lower_bound_worst: float
    gap_to_bound_mean: float
    max_replicas: int
    experts_moved: int
    node_bound_mean: Optional[float] = None
    cross_gpu_transitions: Optional[float] = None
    cross_node_transitions: Optional[float] = None
    cross_gpu_coactivation: Optional[float] = None
    cross_node_coactivation: Optional[float] = None


class PlanSolver(_Open):
    status: str = Field(description="optimal | feasible | heuristic (never optimal unless proven)")
    objective: float
    bound: Optional[float]
    gap: Optional[float]
    time_s: float
    backend: str
    time_limit_s: Optional[float]


class PlanLayer(_Open):
    layer: int
    max_mean_gpu_load: float
    max_mean_node_load: float
    lower_bound: float
    gap: float
    duplicate_gpus: int
    node_bound: Optional[float] = None
    method: Optional[str] = None
    experts_moved: Optional[int] = None
    cross_gpu_transitions: Optional[float] = None
    cross_node_transitions: Optional[float] = None
    cross_gpu_coactivation: Optional[float] = None
    cross_node_coactivation: Optional[float] = None


class PlanPlacement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slot_to_gpu: str | list[int] = Field(description="a rule (equal slots) or the GPU of each slot")
    phy2log: list[list[int]] = Field(description="[layers][slots] logical expert in each slot")
    gpu_speeds: Optional[list[float]] = None


class ExpertPlacementPlan(BaseModel):
    """A ``kind: ExpertPlacement`` plan file."""

    model_config = ConfigDict(extra="forbid")
    apiVersion: str
    kind: str
    metadata: dict[str, Any]
    spec: PlanSpec
    metrics: PlanMetrics
    solver: PlanSolver
    migration: Optional[dict[str, Any]] = None
    affinity: Optional[dict[str, Any]] = None
    memory: Optional[dict[str, Any]] = None
    notes: Optional[list[str]] = None
    per_layer: list[PlanLayer]
    placement: PlanPlacement


SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "expert_placement.schema.json"


def expert_placement_schema() -> dict:
    """JSON Schema of ExpertPlacement plans, generated from :class:`ExpertPlacementPlan`."""
    sch = ExpertPlacementPlan.model_json_schema(ref_template="#/$defs/{model}")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://llm-placement-planner/schemas/expert_placement.schema.json",
            **sch}


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    """Regenerate the schema file (run after changing the plan models)."""
    path.write_text(json.dumps(expert_placement_schema(), indent=2) + "\n", encoding="utf-8")
    return path


def problem_from_arrays(weights: np.ndarray, *, gpus: int, slots_per_gpu: int, nodes: int = 1,
                        groups: int | None = None, max_replicas: int | None = None,
                        transitions: np.ndarray | None = None,
                        coactivation: np.ndarray | None = None) -> Problem:
    """A :class:`Problem` straight from arrays (benchmarks, tests, library users)."""
    w = _check_matrix(np.asarray(weights), "<array>")
    data = LoadData(w, "<array>", transitions, coactivation)
    return Problem(w, asg.Bins.make([slots_per_gpu] * gpus), nodes, groups,
                   max_replicas or gpus, None, data)
