"""Fit efficiency curves and link models to measured tables; report residuals.

In the spirit of Calculon, achievable throughput is peak x an efficiency that depends on the
op's size.  For every accelerator we fit, from measured per-op times (Vidur ``mlp.csv``):

* per op name (``qkv_proj``, ``o_proj``, ``mlp_up_gate``, ``mlp_down``, ``mlp_act``,
  ``input_norm``, ``post_attn_norm``) and pooled per op kind (``gemm``, ``elementwise``; the
  kind curve prices ops the tables lack, e.g. MoE expert GEMMs or the LM head):
  a compute-efficiency curve over FLOPs, a memory-efficiency curve over bytes and a fixed
  per-kernel overhead, so that ``overhead + (t_c^p + t_m^p)^(1/p)`` with
  ``t_c = F / (peak e_c(F))``, ``t_m = B / (bw e_m(B))`` and p = 2 (a soft roofline: kernels
  near the ridge point are slower than either side alone) matches the measured times.  Curves
  are piecewise linear in log(size) with knots every half decade over the data's range (held
  constant beyond it); the fit minimises a robust (soft-L1) loss of the relative errors,
  i.e. close to the MAPE, with a smoothness penalty, bounded to efficiencies in (0, 1]
  (``scipy.optimize.least_squares``, analytic Jacobian);
* per link tier (``intra-node``, ``inter-node``), per collective and per group size: the
  collective launch overhead, the per-hop latency and a size-dependent bandwidth efficiency,
  from NCCL tables (Vidur, APEX, nccl-tests), with the catalog's wire rate as the bandwidth
  (raised to the measured bus bandwidth where in-network reduction beats it).

Attention has no measured table here, so it keeps the catalog prior (fidelity "analytical").
:class:`Calibration` serialises to plain data (``to_dict``) with ``apiVersion: planner/v1`` and
``kind: Calibration``; :func:`load_calibration` reads it back.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Mapping, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from costmodels.comm import LinkModel, _factors
from costmodels.model import ModelSpec
from costmodels.ops import Iteration, Op, Parallel, layer_ops
from costmodels.roofline import COMPUTE_KINDS, DeviceEfficiency, KindEfficiency, default_efficiency
from hardware.accelerator import Accelerator, EfficiencyCurve
from hardware.errors import InputError, from_validation_error
from hardware.profiles import MAX_OP_TIME_MS, CommSample, ModelShape, OpSample, VidurMeasuredTable

API_VERSION = "planner/v1"
KIND = "Calibration"
MIN_EFFICIENCY = 0.005
#: knot spacing of fitted curves, in decades of the size
KNOT_STEP_DECADES = 0.5
#: weight of the second-difference smoothness penalty on knot efficiencies
SMOOTHNESS = 1.0
#: the same for link efficiency curves (fewer, cleaner points)
LINK_SMOOTHNESS = 0.3
MIN_SAMPLES = 8
#: fitted op times combine the compute and memory sides as (t_c^p + t_m^p)^(1/p) (see
#: roofline.KindEfficiency.roofline_p); p = 2 gave the lowest leave-one-model-out error on
#: Vidur's H100 GEMMs (8.2 % vs 9.5 % with max(), p = 3: 8.4 %, p = 4: 8.7 %)
ROOFLINE_P = 2.0
#: robust loss of the fits: soft-L1, close to L1 beyond F_SCALE, so a few outlier kernels
#: (timer quantisation at 1 us, algorithm switches) do not pull the curve; on relative errors
#: for op fits, close to minimising the MAPE itself
LOSS = "soft_l1"
F_SCALE = 0.1
TIERS = ("intra-node", "inter-node")


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Residuals:
    """Fit quality: mean absolute percentage error and worst error, both as fractions."""

    samples: int
    mape: float
    max_error: float

    @classmethod
    def of(cls, predicted: np.ndarray, measured: np.ndarray) -> "Residuals":
        if len(measured) == 0:
            return cls(0, math.nan, math.nan)
        err = np.abs(np.asarray(predicted) - measured) / measured
        return cls(int(len(measured)), float(err.mean()), float(err.max()))


@dataclass(frozen=True)
class OpFit:
    """A fitted efficiency for one op name (``scope="op"``) or one op kind (``scope="kind"``)."""

    name: str
    scope: str
    efficiency: KindEfficiency
    residuals: Residuals


@dataclass(frozen=True)
class LinkFit:
    """A link tier (``intra-node`` / ``inter-node``) fitted to one collective's measurements.

    ``group_size`` None: pooled over every group size measured; else fitted to that size only.
    """

    tier: str
    collective: str
    link: LinkModel
    residuals: Residuals
    residuals_ge_1mb: Residuals | None
    group_size: int | None = None

    @property
    def key(self) -> str:
        return link_key(self.tier, self.collective, self.group_size)


def link_key(tier: str, collective: str, group_size: int | None = None) -> str:
    """Key of a link fit: ``intra-node:all_reduce`` (pooled) or ``intra-node:all_reduce/8``."""
    base = f"{tier}:{collective}"
    return base if group_size is None else f"{base}/{group_size}"


#: the collective each comm scope of the op list runs (costmodels/ops.py)
SCOPE_COLLECTIVE = {"tp": "all_reduce", "ep": "all_to_all", "pp": "p2p"}


@dataclass
class DeviceCalibration:
    """Everything fitted for one accelerator."""

    accelerator: str
    op_fits: dict[str, OpFit] = field(default_factory=dict)     # by op name
    kind_fits: dict[str, OpFit] = field(default_factory=dict)   # by op kind
    link_fits: dict[str, LinkFit] = field(default_factory=dict)  # by link_key(tier, collective, size)


@dataclass
class Calibration:
    """Fitted efficiencies and link models for one or more accelerators."""

    devices: dict[str, DeviceCalibration] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    file: str | None = None

    def device(self, accel_name: str) -> DeviceCalibration:
        """The fits for one accelerator (catalog name or alias)."""
        from hardware.catalog import get_accelerator
        accel_name = get_accelerator(accel_name).name
        if accel_name not in self.devices:
            raise InputError(f"the calibration has no entry for {accel_name}", file=self.file,
                             field="accelerators",
                             expected=f"one of {', '.join(sorted(self.devices)) or '(none)'}; "
                                      f"run `planner calibrate --gpu {accel_name} ...`")
        return self.devices[accel_name]

    def efficiency_for(self, accel_name: str) -> DeviceEfficiency:
        """Calibrated efficiencies for ``accel_name``; kinds without a fit keep the catalog prior."""
        from hardware.catalog import get_accelerator
        dev = self.device(accel_name)
        prior = default_efficiency(get_accelerator(accel_name))
        by_kind = {k: (dev.kind_fits[k].efficiency if k in dev.kind_fits else prior.by_kind[k])
                   for k in COMPUTE_KINDS}
        return DeviceEfficiency(by_kind, {name: f.efficiency for name, f in dev.op_fits.items()})

    def link_models(self, accel_name: str) -> dict[str, LinkModel]:
        """Calibrated link model per :func:`link_key` (possibly empty)."""
        if accel_name not in self.devices:
            return {}
        return {k: f.link for k, f in self.devices[accel_name].link_fits.items()}

    def link_for(self, accel_name: str, tier: str, collective: str, group_size: int) -> LinkModel | None:
        """The fit for this tier, collective and group size, else the pooled one, else None."""
        fitted = self.link_models(accel_name)
        return fitted.get(link_key(tier, collective, group_size)) or fitted.get(link_key(tier, collective))

    def links_for(self, accel: Accelerator, par: Parallel, node=None) -> dict[str, LinkModel] | None:
        """Link model per comm scope ("tp", "ep", "pp") with calibrated tiers substituted.

        Each scope takes the fit of the collective it runs (tp: all-reduce, ep: all-to-all,
        pp: p2p) on the tier its group crosses, for its group size when measured.  Returns None
        when this calibration has no link fit for ``accel`` (the catalog's links then apply).
        Groups are placed as :func:`costmodels.serving.links_for` places them.
        """
        fitted = self.link_models(accel.name)
        if not fitted:
            return None
        from hardware.catalog import default_node_for
        from hardware.topology import Cluster, NodeType
        if node is None:
            try:
                node = default_node_for(accel)
            except InputError:
                node = NodeType(name=f"{accel.name}-1", accelerator=accel.name, gpus_per_node=max(8, par.tp),
                                scale_out=accel.host_link)
        nodes = max(1, -(-par.tp * par.pp // node.gpus_per_node))
        cluster = Cluster(node, nodes, accel.scale_up)
        groups = {"tp": par.tp, "ep": par.ep, "pp": par.tp * par.pp if par.pp > 1 else par.tp}
        out = {}
        for scope, size in groups.items():
            tier = cluster.tier_for_group(size)
            name = "intra-node" if tier.name in ("intra-node", "local") else tier.name
            ranks = 2 if scope == "pp" else max(size, 2)  # a pipeline hand-off is one send/recv pair
            out[scope] = self.link_for(accel.name, name, SCOPE_COLLECTIVE[scope], ranks) or \
                LinkModel.from_link(tier.link)
        return out

    def residual_rows(self) -> list[dict[str, Any]]:
        """One row per fitted op / op kind / tier x collective: samples, MAPE, max error."""
        rows = []
        for acc in sorted(self.devices):
            dev = self.devices[acc]
            for fits in (dev.op_fits, dev.kind_fits):
                for name in sorted(fits):
                    f = fits[name]
                    rows.append({"accelerator": acc, "what": f"{f.scope}:{name}", "samples": f.residuals.samples,
                                 "mape": f.residuals.mape, "max_error": f.residuals.max_error})
            for key in sorted(dev.link_fits, key=_link_order):
                lf = dev.link_fits[key]
                r, r1 = lf.residuals, lf.residuals_ge_1mb
                rows.append({"accelerator": acc, "what": f"link:{key}", "samples": r.samples,
                             "mape": r.mape, "max_error": r.max_error,
                             "mape_ge_1mb": None if r1 is None else r1.mape})
        return rows

    # ---- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (the body of a ``kind: Calibration`` file, without the envelope)."""
        accs = []
        for name in sorted(self.devices):
            dev = self.devices[name]
            accs.append({
                "name": name,
                "ops": [_opfit_dict(dev.op_fits[k]) for k in sorted(dev.op_fits)],
                "kinds": [_opfit_dict(dev.kind_fits[k]) for k in sorted(dev.kind_fits)],
                "links": [_linkfit_dict(dev.link_fits[k]) for k in sorted(dev.link_fits, key=_link_order)],
            })
        return {"sources": list(self.sources), "accelerators": accs}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, file: str | None = None) -> "Calibration":
        """A calibration from its file's data (as :meth:`to_dict` writes it, in the envelope).

        Every field is checked (types, finite numbers, ranges, no unknown fields, a fit or more
        per accelerator); raises :class:`InputError` naming ``file`` and the field."""
        from hardware.catalog import get_accelerator
        if not isinstance(data, Mapping):
            raise InputError("calibration file is not a mapping", file=file, expected="a YAML/JSON object")
        if data.get("apiVersion", API_VERSION) != API_VERSION:
            raise InputError(f"unsupported apiVersion {data.get('apiVersion')!r}", file=file, field="apiVersion",
                             expected=repr(API_VERSION))
        if data.get("kind", KIND) != KIND:
            raise InputError(f"not a calibration file (kind {data.get('kind')!r})", file=file, field="kind",
                             expected=repr(KIND))
        try:
            doc = _CalibrationFile.model_validate(dict(data))
        except ValidationError as exc:
            raise _file_error(exc, file) from None
        calib = cls(sources=list(doc.sources), file=file)
        for i, a in enumerate(doc.accelerators):
            where = f"accelerators[{i}]"
            dev = DeviceCalibration(get_accelerator(a.name, field=f"{where}.name", file=file).name)
            if dev.accelerator in calib.devices:
                first = next(j for j, b in enumerate(doc.accelerators)
                             if get_accelerator(b.name).name == dev.accelerator)
                raise InputError(f"a second entry for {dev.accelerator} (accelerators[{first}] is one)", file=file,
                                 field=f"{where}.name", expected="one entry per accelerator")
            for section, scope, fits in (("ops", "op", dev.op_fits), ("kinds", "kind", dev.kind_fits)):
                for j, o in enumerate(getattr(a, section)):
                    if scope == "kind" and o.name not in COMPUTE_KINDS:
                        raise InputError(f"unknown op kind {o.name!r}", file=file,
                                         field=f"{where}.{section}[{j}].name", expected=" | ".join(COMPUTE_KINDS))
                    if o.name in fits:
                        raise InputError(f"a second fit of {scope} {o.name!r}", file=file,
                                         field=f"{where}.{section}[{j}].name", expected=f"one fit per {scope}")
                    fits[o.name] = o.fit(scope)
            for j, lk in enumerate(a.links):
                lf = lk.fit()
                if lf.key in dev.link_fits:
                    raise InputError(f"a second fit of link {lf.key!r}", file=file, field=f"{where}.links[{j}]",
                                     expected="one fit per tier, collective and group size")
                dev.link_fits[lf.key] = lf
            calib.devices[dev.accelerator] = dev
        return calib


def _link_order(key: str) -> tuple:
    base, _, size = key.partition("/")
    tier, _, coll = base.partition(":")
    return (TIERS.index(tier) if tier in TIERS else 9, coll, int(size) if size else 0)


def _curve_dict(c: EfficiencyCurve, unit: str) -> dict[str, Any]:
    return {f"sizes_{unit}": [float(x) for x in c.sizes], "efficiencies": [round(float(e), 6) for e in c.efficiencies]}


def _res_dict(r: Residuals) -> dict[str, Any]:
    return {"samples": r.samples, "mape": None if math.isnan(r.mape) else round(r.mape, 6),
            "max_error": None if math.isnan(r.max_error) else round(r.max_error, 6)}


def _opfit_dict(f: OpFit) -> dict[str, Any]:
    return {"name": f.name, "compute_efficiency": _curve_dict(f.efficiency.compute, "flops"),
            "memory_efficiency": _curve_dict(f.efficiency.memory, "bytes"),
            "overhead_s": float(f.efficiency.overhead_s), "roofline_p": f.efficiency.roofline_p,
            "residuals": _res_dict(f.residuals)}


def _linkfit_dict(f: LinkFit) -> dict[str, Any]:
    lm = f.link
    return {"tier": f.tier, "collective": f.collective, "group_size": f.group_size,
            "bandwidth_bytes_per_s": float(lm.bandwidth_bytes_per_s),
            "latency_s": float(lm.latency_s), "efficiency": round(float(lm.efficiency), 6),
            "collective_overhead_s": float(lm.collective_overhead_s),
            "efficiency_curve": _curve_dict(lm.efficiency_curve, "bytes") if lm.efficiency_curve else None,
            "residuals": _res_dict(f.residuals),
            "residuals_ge_1mb": None if f.residuals_ge_1mb is None else _res_dict(f.residuals_ge_1mb)}


# ---- reading calibration files: every field typed, finite and in range (pydantic), so that a
# hand-edited or cut-short file is refused with its field instead of giving null times or a
# silent fall-back to the analytical layer
#: the longest fixed time (s) a fit may hold: an hour, as for measured op times
MAX_FIT_TIME_S = MAX_OP_TIME_MS / 1e3
_FILE = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
Seconds = Annotated[float, Field(ge=0, le=MAX_FIT_TIME_S)]


def _curve(sizes: list[float], efficiencies: list[float]) -> EfficiencyCurve:
    try:
        return EfficiencyCurve(sizes=tuple(sizes), efficiencies=tuple(efficiencies))
    except ValidationError as exc:  # the reason only (a ValueError here names the curve's field)
        raise ValueError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None


class _FlopsCurveFile(BaseModel):
    model_config = _FILE
    sizes_flops: list[Annotated[float, Field(gt=0)]]
    efficiencies: list[float]
    _curve: EfficiencyCurve = PrivateAttr()

    @model_validator(mode="after")
    def _valid(self) -> "_FlopsCurveFile":
        self._curve = _curve(self.sizes_flops, self.efficiencies)
        return self


class _BytesCurveFile(BaseModel):
    model_config = _FILE
    sizes_bytes: list[Annotated[float, Field(gt=0)]]
    efficiencies: list[float]
    _curve: EfficiencyCurve = PrivateAttr()

    @model_validator(mode="after")
    def _valid(self) -> "_BytesCurveFile":
        self._curve = _curve(self.sizes_bytes, self.efficiencies)
        return self


class _ResidualsFile(BaseModel):
    model_config = _FILE
    samples: Annotated[int, Field(ge=0)]
    mape: Optional[Annotated[float, Field(ge=0)]] = None
    max_error: Optional[Annotated[float, Field(ge=0)]] = None

    def residuals(self) -> Residuals:
        nan = math.nan
        return Residuals(self.samples, nan if self.mape is None else self.mape,
                         nan if self.max_error is None else self.max_error)


class _OpFitFile(BaseModel):
    model_config = _FILE
    name: Annotated[str, Field(min_length=1)]
    compute_efficiency: _FlopsCurveFile
    memory_efficiency: _BytesCurveFile
    overhead_s: Seconds
    roofline_p: Optional[Annotated[float, Field(ge=1)]] = None
    residuals: Optional[_ResidualsFile] = None

    def fit(self, scope: str) -> OpFit:
        eff = KindEfficiency(self.compute_efficiency._curve, self.memory_efficiency._curve, float(self.overhead_s),
                             "calibrated", None if self.roofline_p is None else float(self.roofline_p))
        return OpFit(self.name, scope, eff, _residuals(self.residuals))


class _LinkFitFile(BaseModel):
    model_config = _FILE
    tier: Literal["intra-node", "inter-node"]
    collective: Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p"]
    group_size: Optional[Annotated[int, Field(ge=1)]] = None
    bandwidth_bytes_per_s: Annotated[float, Field(gt=0)]
    latency_s: Seconds
    efficiency: Annotated[float, Field(gt=0, le=1)]
    collective_overhead_s: Seconds
    efficiency_curve: Optional[_BytesCurveFile] = None
    residuals: Optional[_ResidualsFile] = None
    residuals_ge_1mb: Optional[_ResidualsFile] = None

    def fit(self) -> LinkFit:
        curve = None if self.efficiency_curve is None else self.efficiency_curve._curve
        link = LinkModel(float(self.bandwidth_bytes_per_s), float(self.latency_s), float(self.efficiency),
                         float(self.collective_overhead_s), curve)
        res1 = None if self.residuals_ge_1mb is None else _residuals(self.residuals_ge_1mb)
        return LinkFit(self.tier, self.collective, link, _residuals(self.residuals), res1, self.group_size)


class _DeviceFile(BaseModel):
    model_config = _FILE
    name: str
    ops: list[_OpFitFile]
    kinds: list[_OpFitFile]
    links: list[_LinkFitFile]

    @model_validator(mode="after")
    def _something(self) -> "_DeviceFile":
        if not (self.ops or self.kinds or self.links):
            raise ValueError("the entry calibrates nothing (no op, op kind or link fit)")
        return self


class _CalibrationFile(BaseModel):
    model_config = _FILE
    apiVersion: str = API_VERSION
    kind: str = KIND
    metadata: Optional[dict[str, Any]] = None
    sources: list[str] = []
    accelerators: list[_DeviceFile]


def _residuals(r: _ResidualsFile | None) -> Residuals:
    return Residuals(0, math.nan, math.nan) if r is None else r.residuals()


#: what each field of a calibration file holds (the ``expected`` of its error), by field name
_EXPECTED = {
    "accelerators": "a list of accelerator entries (name, ops, kinds, links)",
    "ops": "a list of per-op fits (may be empty, not null)",
    "kinds": "a list of per-op-kind fits (may be empty, not null)",
    "links": "a list of link fits (may be empty, not null)",
    "name": "a name",
    "overhead_s": f"seconds, at least 0 and at most {MAX_FIT_TIME_S:g}",
    "latency_s": f"seconds, at least 0 and at most {MAX_FIT_TIME_S:g}",
    "collective_overhead_s": f"seconds, at least 0 and at most {MAX_FIT_TIME_S:g}",
    "bandwidth_bytes_per_s": "a finite number of bytes/s above 0",
    "efficiency": "a finite number in (0, 1]",
    "roofline_p": "a number >= 1, or null for max(compute, memory)",
    "group_size": "an integer >= 1 or null",
    "tier": " | ".join(TIERS),
    "collective": "all_reduce | all_gather | reduce_scatter | all_to_all | p2p",
    "compute_efficiency": "a curve: increasing sizes_flops above 0, efficiencies in (0, 1], equal lengths",
    "memory_efficiency": "a curve: increasing sizes_bytes above 0, efficiencies in (0, 1], equal lengths",
    "efficiency_curve": "a curve: increasing sizes_bytes above 0, efficiencies in (0, 1], equal lengths",
    "residuals": "samples, mape and max_error (finite numbers >= 0, or null)",
    "residuals_ge_1mb": "samples, mape and max_error (finite numbers >= 0, or null)",
}


#: the model of each section of a calibration file, by the section's field name
_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "accelerators": _DeviceFile, "ops": _OpFitFile, "kinds": _OpFitFile, "links": _LinkFitFile,
    "compute_efficiency": _FlopsCurveFile, "memory_efficiency": _BytesCurveFile,
    "efficiency_curve": _BytesCurveFile, "residuals": _ResidualsFile, "residuals_ge_1mb": _ResidualsFile}


def _file_error(exc: ValidationError, file: str | None) -> InputError:
    """The one-line error of a calibration file that fails :class:`_CalibrationFile`: the field,
    pydantic's reason and, for a missing or null section, that the file looks cut short."""
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not str(p).startswith("function-")]
    if err.get("type") == "extra_forbidden":
        model = _CalibrationFile
        for p in loc[:-1]:  # the model the unknown field sits in
            if isinstance(p, str):
                model = _SECTION_MODELS.get(p, model)
        expected = "only the fields planner calibrate writes: " + ", ".join(model.model_fields)
    elif len(loc) == 2 and loc[0] == "accelerators" and err.get("type") == "value_error":
        expected = "an entry with at least one op, op kind or link fit"
    else:
        names = [p for p in loc if isinstance(p, str) and p in _EXPECTED]
        expected = _EXPECTED[names[-1]] if names else None
    out = from_validation_error(exc, file=file, expected=expected)
    if err.get("type") == "missing" or (err.get("input", 0) is None and err.get("type", "").endswith("_type")):
        out = InputError(out.message + ": the calibration file looks truncated or edited", file=out.file,
                         field=out.field, expected=out.expected,
                         hint="Write it again with planner calibrate, or restore what was lost")
    return out


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file written by ``planner calibrate`` (YAML or JSON)."""
    import yaml
    path = Path(path)
    if not path.exists():
        raise InputError("calibration file not found", file=str(path))
    if path.is_dir():
        raise InputError("calibration path is a folder", file=str(path), expected="a YAML or JSON file")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        # the C loader when PyYAML has it: a calibration file holds a few thousand numbers
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=loader)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"malformed calibration file: {str(exc).splitlines()[0]}", file=str(path),
                         expected="valid YAML or JSON") from None
    return Calibration.from_dict(data, file=str(path))


# ---------------------------------------------------------------------------------------------
# op samples -> (FLOPs, bytes) through the cost model's own op list
# ---------------------------------------------------------------------------------------------
def shape_model(shape: ModelShape, name: str = "profiled") -> ModelSpec:
    """A one-layer dense ModelSpec with a Vidur profile's shape."""
    return ModelSpec(name=name, family="llama", hidden_size=shape.n_embd, num_layers=1,
                     num_attention_heads=shape.n_head, num_kv_heads=shape.n_kv_head, head_dim=shape.head_dim,
                     intermediate_size=shape.n_expanded_embd, vocab_size=shape.vocab_size,
                     gated_mlp=shape.gated_mlp)


class OpBuilder:
    """Cost-model ops for measured samples (cached per shape, TP and tokens)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, dict[str, Op]] = {}

    def op(self, s: OpSample) -> Op | None:
        key = (s.shape, s.tp, s.tokens)
        ops = self._cache.get(key)
        if ops is None:
            model = shape_model(s.shape)
            if model.num_attention_heads % s.tp:
                ops = {}
            else:
                ops = {o.name: o for o in layer_ops(model, Parallel(tp=s.tp), Iteration(tokens=s.tokens),
                                                    moe_layer=False)}
            self._cache[key] = ops
        return ops.get(s.op)


@dataclass(frozen=True)
class OpArrays:
    """Measured samples of one op group as arrays: FLOPs, bytes, seconds, model, tokens, tp."""

    flops: np.ndarray
    bytes: np.ndarray
    time_s: np.ndarray
    model: np.ndarray
    tokens: np.ndarray
    tp: np.ndarray
    op: np.ndarray

    def subset(self, mask: np.ndarray) -> "OpArrays":
        return OpArrays(*(getattr(self, f)[mask] for f in ("flops", "bytes", "time_s", "model", "tokens", "tp", "op")))

    def __len__(self) -> int:
        return len(self.time_s)


def op_arrays(samples: Iterable[OpSample], builder: OpBuilder | None = None) -> OpArrays:
    builder = builder or OpBuilder()
    rows = []
    for s in samples:
        o = builder.op(s)
        if o is not None:
            rows.append((o.flops, o.bytes, s.time_s, s.model, s.tokens, s.tp, s.op, o.kind))
    if not rows:
        e = np.zeros(0)
        return OpArrays(e, e, e, np.array([], dtype=object), e, e, np.array([], dtype=object))
    f, b, t, m, tok, tp, op, _ = zip(*rows)
    return OpArrays(np.array(f, float), np.array(b, float), np.array(t, float), np.array(m, dtype=object),
                    np.array(tok, float), np.array(tp, float), np.array(op, dtype=object))


# ---------------------------------------------------------------------------------------------
# curve fitting
# ---------------------------------------------------------------------------------------------
def _knots(x: np.ndarray, step: float = KNOT_STEP_DECADES) -> np.ndarray:
    """Knots at the data's smallest and largest size and every ``step`` decades in between.

    Ending at the data's extremes matters: beyond the last knot a curve is held constant, so a
    model larger than the fitted ones inherits the efficiency measured at the largest size
    instead of an extrapolated (unsupported) knot value.
    """
    lx = np.log10(np.maximum(x, 1.0))
    lo, hi = float(lx.min()), float(lx.max())
    if hi - lo < 1e-9:
        return np.array([10.0 ** lo])
    inner = np.arange(math.ceil(lo / step) * step, hi, step)
    inner = inner[(inner - lo > step / 4) & (hi - inner > step / 4)]
    return 10.0 ** np.concatenate([[lo], inner, [hi]])


def _interp_matrix(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """W with W @ values = piecewise-linear-in-log interpolation at x (clamped at the ends)."""
    lk, lx = np.log(knots), np.log(np.maximum(x, 1.0))
    w = np.zeros((len(x), len(knots)))
    if len(knots) == 1:
        w[:, 0] = 1.0
        return w
    lxc = np.clip(lx, lk[0], lk[-1])
    i = np.clip(np.searchsorted(lk, lxc, side="right") - 1, 0, len(knots) - 2)
    t = (lxc - lk[i]) / (lk[i + 1] - lk[i])
    rows = np.arange(len(x))
    w[rows, i] = 1.0 - t
    w[rows, i + 1] += t
    return w


def _second_diff(n: int) -> np.ndarray:
    if n < 3:
        return np.zeros((0, n))
    d = np.zeros((n - 2, n))
    for r in range(n - 2):
        d[r, r:r + 3] = (1.0, -2.0, 1.0)
    return d


def fit_efficiency(arr: OpArrays, accel: Accelerator, *, dtype: str = "bf16", kind: str = "gemm",
                   prior: KindEfficiency | None = None, smoothness: float = SMOOTHNESS,
                   knot_step: float = KNOT_STEP_DECADES,
                   roofline_p: float | None = ROOFLINE_P) -> KindEfficiency:
    """Fit (compute curve, memory curve, overhead) so the roofline matches measured times.

    Minimises sum(rho(predicted / measured - 1)) + smoothness^2 |second differences|^2 (rho:
    soft-L1, so close to the mean absolute percentage error) with efficiencies in
    [MIN_EFFICIENCY, 1] and overhead in [0, 100 us]; starts from ``prior`` (default: the
    catalog's analytical prior).
    """
    from scipy.optimize import least_squares

    if len(arr) < MIN_SAMPLES:
        raise InputError(f"too few samples ({len(arr)}) to fit an efficiency curve", field="samples",
                         expected=f"at least {MIN_SAMPLES}")
    prior = prior or default_efficiency(accel).by_kind.get(kind) or default_efficiency(accel).by_kind["gemm"]
    peak = accel.peak_flops(dtype if kind == "gemm" else "bf16")
    bw = accel.hbm_bandwidth_bytes_per_s
    F, B, t = np.maximum(arr.flops, 1.0), np.maximum(arr.bytes, 1.0), arr.time_s
    kf, kb = _knots(F, knot_step), _knots(B, knot_step)
    nf, nb = len(kf), len(kb)
    wf, wb = _interp_matrix(F, kf), _interp_matrix(B, kb)
    has_flops = bool(np.any(arr.flops > 0))
    d2f, d2b = _second_diff(nf) * smoothness, _second_diff(nb) * smoothness
    reg = np.zeros((d2f.shape[0] + d2b.shape[0], 1 + nf + nb))
    reg[:d2f.shape[0], 1:1 + nf] = d2f
    reg[d2f.shape[0]:, 1 + nf:] = d2b

    p = roofline_p

    def parts(x):
        o = x[0] * 1e-6
        ec, em = wf @ x[1:1 + nf], wb @ x[1 + nf:]
        tc = F / (peak * ec) if has_flops else np.zeros_like(F)
        tm = B / (bw * em)
        if p is None:
            core = np.maximum(tc, tm)
        elif p == 2.0:
            core = np.hypot(tc, tm)  # the common case, much cheaper than general powers
        else:
            core = (tc ** p + tm ** p) ** (1.0 / p)
        return o, ec, em, tc, tm, core

    def residuals(x):
        o, _, _, _, _, core = parts(x)
        return np.concatenate([(o + core) / t - 1.0, reg @ x])

    def jac(x):
        _, ec, em, tc, tm, core = parts(x)
        if p is None:  # max(): only the binding side moves the time
            gc = (tc >= tm).astype(float)
            gm = 1.0 - gc
        elif p == 2.0:
            gc, gm = tc / core, tm / core
        else:  # d core / d t_side = (t_side / core)^(p - 1)
            gc = (tc / core) ** (p - 1)
            gm = (tm / core) ** (p - 1)
        j = np.empty((len(t), 1 + nf + nb))
        j[:, 0] = 1e-6 / t
        j[:, 1:1 + nf] = (gc * -tc / (ec * t))[:, None] * wf
        j[:, 1 + nf:] = (gm * -tm / (em * t))[:, None] * wb
        return np.vstack([j, reg])

    x0 = np.concatenate([[prior.overhead_s * 1e6], [prior.compute.at(k) for k in kf], [prior.memory.at(k) for k in kb]])
    lo = np.concatenate([[0.0], np.full(nf + nb, MIN_EFFICIENCY)])
    hi = np.concatenate([[100.0], np.ones(nf + nb)])
    x0 = np.clip(x0, lo + 1e-6, hi - 1e-6)
    # lsmr: no dense SVD of the (samples x knots) Jacobian per step, ~10x faster here
    sol = least_squares(residuals, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=200,
                        tr_solver="lsmr", loss=LOSS, f_scale=F_SCALE)
    x = sol.x
    comp = EfficiencyCurve(sizes=tuple(float(k) for k in kf), efficiencies=tuple(float(v) for v in x[1:1 + nf]))
    mem = EfficiencyCurve(sizes=tuple(float(k) for k in kb), efficiencies=tuple(float(v) for v in x[1 + nf:]))
    return KindEfficiency(comp, mem, float(x[0] * 1e-6), "calibrated", p)


def predict_times(arr: OpArrays, accel: Accelerator, eff: KindEfficiency, *, dtype: str = "bf16",
                  kind: str = "gemm") -> np.ndarray:
    """Roofline time per sample (seconds) under ``eff`` (vectorised :func:`compute_op_time`)."""
    peak = accel.peak_flops(dtype if kind == "gemm" else "bf16")
    F, B = np.maximum(arr.flops, 1.0), np.maximum(arr.bytes, 1.0)
    ec = np.interp(np.log(F), np.log(eff.compute.sizes), eff.compute.efficiencies)
    em = np.interp(np.log(B), np.log(eff.memory.sizes), eff.memory.efficiencies)
    tc = np.where(arr.flops > 0, F / (peak * ec), 0.0)
    tm = np.where(arr.bytes > 0, B / (accel.hbm_bandwidth_bytes_per_s * em), 0.0)
    p = eff.roofline_p
    return eff.overhead_s + (np.maximum(tc, tm) if p is None else (tc ** p + tm ** p) ** (1.0 / p))


OP_KIND = {"qkv_proj": "gemm", "o_proj": "gemm", "mlp_up_gate": "gemm", "mlp_down": "gemm",
           "mlp_act": "elementwise", "input_norm": "elementwise", "post_attn_norm": "elementwise"}


def fit_device_ops(arr: OpArrays, accel: Accelerator, *, dtype: str = "bf16",
                   kinds: bool = True) -> DeviceCalibration:
    """Per-op-name fits (and, with ``kinds``, pooled per-kind fits) for one accelerator."""
    dev = DeviceCalibration(accel.name)
    names = sorted(set(arr.op.tolist()))
    for name in names:
        sub = arr.subset(arr.op == name)
        if len(sub) < MIN_SAMPLES:
            continue
        kind = OP_KIND.get(name, "gemm")
        eff = fit_efficiency(sub, accel, dtype=dtype, kind=kind)
        dev.op_fits[name] = OpFit(name, "op", eff, Residuals.of(predict_times(sub, accel, eff, dtype=dtype, kind=kind),
                                                                sub.time_s))
    for kind in ("gemm", "elementwise") if kinds else ():
        mask = np.array([OP_KIND.get(o, "gemm") == kind for o in arr.op.tolist()], dtype=bool)
        sub = arr.subset(mask)
        if len(sub) < MIN_SAMPLES:
            continue
        eff = fit_efficiency(sub, accel, dtype=dtype, kind=kind)
        dev.kind_fits[kind] = OpFit(kind, "kind", eff, Residuals.of(predict_times(sub, accel, eff, dtype=dtype,
                                                                                  kind=kind), sub.time_s))
    return dev


# ---------------------------------------------------------------------------------------------
# link fitting
# ---------------------------------------------------------------------------------------------
def _comm_arrays(samples: Sequence[CommSample]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(message bytes, latency hops, bandwidth factor, seconds) per sample."""
    m = np.array([s.message_bytes for s in samples], float)
    if not len(m):
        return m, m.copy(), m.copy(), m.copy()
    hops, factor = zip(*(_factors(s.collective, max(s.num_gpus, 2)) for s in samples))
    return m, np.array(hops, float), np.array(factor, float), np.array([s.time_s for s in samples], float)


def predict_comm(samples: Sequence[CommSample], link: LinkModel) -> np.ndarray:
    """Alpha-beta time per sample (vectorised :func:`costmodels.comm.collective_time_s`)."""
    m, hops, factor, _ = _comm_arrays(samples)
    if link.efficiency_curve is not None:
        c = link.efficiency_curve
        eff = np.interp(np.log(np.maximum(m, 1.0)), np.log(c.sizes), c.efficiencies)
    else:
        eff = np.full_like(m, link.efficiency)
    return link.collective_overhead_s + hops * link.latency_s + factor * m / (link.bandwidth_bytes_per_s * eff)


def fit_link(samples: Sequence[CommSample], bandwidth_bytes_per_s: float, *, tier: str,
             group_size: int | None = None, prior: LinkModel | None = None,
             smoothness: float = LINK_SMOOTHNESS) -> LinkFit:
    """Fit overhead, per-hop latency and a size-dependent efficiency curve for one tier and
    one collective (``samples`` must all be of one collective).  When the measured
    bus bandwidth beats the catalog's wire rate (NVSwitch in-network reduction, NVLS), the
    fitted bandwidth is raised to 1.1 x the best measured bus bandwidth so that efficiencies
    stay in (0, 1]; the bandwidth then reads as an effective rate, not a wire rate.
    """
    from scipy.optimize import least_squares

    if len(samples) < MIN_SAMPLES:
        raise InputError(f"too few collective samples ({len(samples)}) for the {tier} tier", field="samples",
                         expected=f"at least {MIN_SAMPLES}")
    colls = sorted({s.collective for s in samples})
    if len(colls) != 1:
        raise ValueError(f"fit_link needs samples of one collective, got {colls}")
    m, hops, factor, t = _comm_arrays(samples)
    km = _knots(m)
    nk = len(km)
    w = _interp_matrix(m, km)
    reg = np.zeros((max(nk - 2, 0), 2 + nk))
    reg[:, 2:] = _second_diff(nk) * smoothness
    bw = max(bandwidth_bytes_per_s, 1.1 * float(np.max(factor * m / t)))

    def pred(x):
        eff = w @ x[2:]
        tb = factor * m / (bw * eff)
        return x[0] * 1e-6 + hops * x[1] * 1e-6 + tb, eff, tb

    def residuals(x):
        p, _, _ = pred(x)
        return np.concatenate([np.log(p / t), reg @ x])

    def jac(x):
        p, eff, tb = pred(x)
        j = np.empty((len(t), 2 + nk))
        j[:, 0] = 1e-6 / p
        j[:, 1] = hops * 1e-6 / p
        j[:, 2:] = (-tb / (eff * p))[:, None] * w
        return np.vstack([j, reg])

    prior = prior or LinkModel(bw, 3e-6, 0.8)
    scale = prior.bandwidth_bytes_per_s / bw  # the prior's efficiency, relative to the fitted rate
    x0 = np.concatenate([[prior.collective_overhead_s * 1e6, prior.latency_s * 1e6],
                         [scale * (prior.efficiency_curve.at(k) if prior.efficiency_curve else prior.efficiency)
                          for k in km]])
    lo = np.concatenate([[0.0, 0.0], np.full(nk, MIN_EFFICIENCY)])
    hi = np.concatenate([[1000.0, 100.0], np.ones(nk)])
    x0 = np.clip(x0, lo + 1e-6, hi - 1e-6)
    # lsmr: no dense SVD of the (samples x knots) Jacobian per step, ~10x faster here
    sol = least_squares(residuals, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=200,
                        tr_solver="lsmr", loss=LOSS, f_scale=F_SCALE)
    x = sol.x
    curve = EfficiencyCurve(sizes=tuple(float(k) for k in km), efficiencies=tuple(float(v) for v in x[2:]))
    link = LinkModel(bw, float(x[1] * 1e-6), float(x[-1]), float(x[0] * 1e-6), curve)
    res = Residuals.of(predict_comm(samples, link), t)
    big = [s for s in samples if s.message_bytes >= 1 << 20]
    res1 = Residuals.of(predict_comm(big, link), np.array([s.time_s for s in big])) if big else None
    return LinkFit(tier, colls[0], link, res, res1, group_size)


def tier_of(sample: CommSample) -> str:
    return "inter-node" if sample.cross_node else "intra-node"


def fit_links(samples: Sequence[CommSample], accel: Accelerator, node=None) -> dict[str, LinkFit]:
    """Link fits per (tier, collective) present in ``samples``: one pooled over group sizes and
    one per group size.  Wire rates come from the catalog (the scale-up fabric; the node's NIC
    for cross-node groups).  Keys are :func:`link_key` values (``intra-node:all_reduce/8``...).
    """
    from hardware.catalog import default_node_for
    out = {}
    for tier in TIERS:
        in_tier = [s for s in samples if tier_of(s) == tier]
        if tier == "intra-node":
            link = accel.scale_up
        else:
            try:
                link = (node or default_node_for(accel)).scale_out
            except InputError:
                link = accel.host_link
        prior = LinkModel.from_link(link)
        for coll in sorted({s.collective for s in in_tier}):
            group = [s for s in in_tier if s.collective == coll]
            if len(group) < MIN_SAMPLES:
                continue
            pooled = fit_link(group, link.bandwidth_bytes_per_s, tier=tier, prior=prior)
            out[pooled.key] = pooled
            sizes = sorted({s.num_gpus for s in group})
            for n in sizes if len(sizes) > 1 else ():
                sub = [s for s in group if s.num_gpus == n]
                if len(sub) >= MIN_SAMPLES:
                    f = fit_link(sub, link.bandwidth_bytes_per_s, tier=tier, group_size=n, prior=prior)
                    out[f.key] = f
    return out


# ---------------------------------------------------------------------------------------------
# whole calibration
# ---------------------------------------------------------------------------------------------
def calibrate(op_samples: Mapping[str, Sequence[OpSample]] | None = None,
              comm_samples: Mapping[str, Sequence[CommSample]] | None = None, *,
              sources: Iterable[str] = ()) -> Calibration:
    """Fit every accelerator named in ``op_samples`` / ``comm_samples`` (keys: catalog names)."""
    from hardware.catalog import get_accelerator
    calib = Calibration(sources=[str(s) for s in sources])
    builder = OpBuilder()
    for name in sorted(set(op_samples or {}) | set(comm_samples or {})):
        accel = get_accelerator(name)
        dev = DeviceCalibration(accel.name)
        ops = (op_samples or {}).get(name) or []
        if ops:
            arr = op_arrays(ops, builder)
            dev = fit_device_ops(arr, accel)
        comms = (comm_samples or {}).get(name) or []
        if comms:
            dev.link_fits = fit_links(comms, accel)
        calib.devices[accel.name] = dev
    return calib


def measured_table_for(samples: Iterable[OpSample], model: ModelSpec, accel: Accelerator, *,
                       source: str = "") -> VidurMeasuredTable:
    """The measured-table layer for ``model`` on ``accel`` from Vidur samples.

    Raises InputError when the samples hold no profile of this model shape on this accelerator.
    """
    from hardware.catalog import get_accelerator
    want = (model.num_attention_heads, model.num_kv_heads, model.hidden_size, model.intermediate_size)
    mine, accs, shapes = [], set(), set()
    for s in samples:
        try:
            acc = get_accelerator(s.accelerator).name if s.accelerator else None
        except InputError:
            acc = None
        accs.add(str(acc or s.accelerator))
        if acc is not None and acc != accel.name:
            continue
        sh = s.shape
        shapes.add(f"{s.model} (h={sh.n_embd}, heads={sh.n_head}/{sh.n_kv_head}, ffn={sh.n_expanded_embd})")
        if (sh.n_head, sh.n_kv_head, sh.n_embd, sh.n_expanded_embd) == want:
            mine.append(s)
    if not mine:
        raise InputError(f"the profile has no per-op table for {model.name} (h={model.hidden_size}, heads="
                         f"{model.num_attention_heads}/{model.num_kv_heads}, ffn={model.intermediate_size}) on "
                         f"{accel.name}", file=source or None, field="profile",
                         expected=f"a profile of this shape; it holds: {', '.join(sorted(shapes)) or 'nothing'} "
                                  f"on {', '.join(sorted(accs))}")
    return VidurMeasuredTable(mine, mine[0].shape, source)


__all__ = ["Calibration", "DeviceCalibration", "OpFit", "LinkFit", "Residuals", "load_calibration", "calibrate",
           "fit_efficiency", "fit_link", "fit_links", "fit_device_ops", "op_arrays", "OpArrays", "OpBuilder",
           "predict_times", "predict_comm", "measured_table_for", "shape_model", "tier_of"]
