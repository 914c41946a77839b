"""A fleet request: models with their workloads and SLOs, candidate GPUs with prices and
quotas, spot, solver and scaling settings (pydantic, closed to unknown fields)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      field_validator, model_validator)

from hardware.errors import InputError, from_validation_error
from planner.plan import read_structured


class _Spec(BaseModel):
    # no inf / nan anywhere: a request's every number is a finite quantity
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


#: the latency targets an SLO section may set, each with an optional percentile of its own
SLO_KEYS = ("ttft_s", "tpot_s", "e2e_s")


def _own_percentile(key: str) -> str:
    """The field holding target ``key``'s own percentile: ``"ttft_s"`` -> ``"ttft_percentile"``."""
    return key[:-len("_s")] + "_percentile"


class SLOSpec(_Spec):
    """Latency targets, each met at a percentile: a bucket's replicas are checked on the
    bucket's representative request at that percentile of its requests' lengths (in a trace;
    a histogram's buckets are represented by their upper edges).  ``percentile`` applies to
    every target without a ``<target>_percentile`` of its own (``ttft_percentile: 99`` with
    ``percentile: 90``: TTFT on each bucket's p99 request, TPOT on its p90 one)."""

    ttft_s: float | None = Field(None, gt=0)
    tpot_s: float | None = Field(None, gt=0)
    e2e_s: float | None = Field(None, gt=0)
    percentile: float = Field(90.0, gt=0, le=100)
    ttft_percentile: float | None = Field(None, gt=0, le=100)
    tpot_percentile: float | None = Field(None, gt=0, le=100)
    e2e_percentile: float | None = Field(None, gt=0, le=100)

    @model_validator(mode="after")
    def _percentile_needs_its_target(self) -> "SLOSpec":
        for key in SLO_KEYS:
            own = _own_percentile(key)
            if getattr(self, own) is not None and getattr(self, key) is None:
                raise ValueError(f"{own} is set but {key} is not (a percentile for no target)")
        return self

    def percentile_of(self, key: str) -> float:
        """The percentile target ``key`` (``"ttft_s"``, ...) is met at."""
        own = getattr(self, _own_percentile(key))
        return self.percentile if own is None else own

    def percentiles(self) -> list[float]:
        """The distinct percentiles the set targets are met at (``[percentile]`` when none is
        set), ascending."""
        found = {self.percentile_of(k) for k in SLO_KEYS if getattr(self, k) is not None}
        return sorted(found or {self.percentile})

    def summary(self) -> dict[str, Any]:
        """The targets and the default percentile, and a target's own percentile where set."""
        return {k: v for k, v in self.model_dump().items()
                if v is not None or k in SLO_KEYS or k == "percentile"}

    def at(self, percentile: float) -> "SLOSpec":
        """Only the targets met at ``percentile``."""
        return SLOSpec(**{k: getattr(self, k) for k in SLO_KEYS
                          if getattr(self, k) is not None and self.percentile_of(k) == percentile},
                       percentile=percentile)


class ShapeSpec(_Spec):
    tp: int = Field(1, ge=1, le=64)
    pp: int = Field(1, ge=1, le=64)


class ProfileSpec(_Spec):
    """A measured capacity table for one GPU type (and shape)."""

    gpu: str
    file: str
    #: "aibrix": a GPU profile (max req/s per input x output tick, at the SLO it was made for);
    #: "aibrix-benchmark": the benchmark rows such profiles are made from (JSON lines), from
    #: which the planner derives the table at the request's own SLOs; "melange": a Mélange
    #: config's ``gpu_info`` entry.  "auto": ``.jsonl`` files are benchmark rows, a JSON with
    #: ``gpu_info`` is Mélange's, any other JSON an AIBrix profile
    format: Literal["auto", "aibrix", "aibrix-benchmark", "melange"] = "auto"
    key: str | None = Field(None, description="gpu_info key inside a Mélange config")
    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)

    def follows_slo(self) -> bool:
        """Whether the capacities are derived at the request's SLOs (benchmark rows) rather
        than measured at a fixed one."""
        return self.format == "aibrix-benchmark" or (
            self.format == "auto" and Path(self.file).suffix.lower() in (".jsonl", ".ndjson"))


class HistogramSpec(_Spec):
    input_edges: list[float]
    output_edges: list[float]
    shares: list[list[float]]


class WorkloadSpec(_Spec):
    """One model's load: a trace, or a histogram with a rate (or a rate series)."""

    trace: str | None = None
    format: Literal["auto", "azure", "burstgpt", "jsonl"] = "auto"
    histogram: HistogramSpec | None = None
    rate_rps: float | list[float] | None = None
    period_s: float = Field(3600.0, gt=0, description=(
        "seconds per period of the rate series (rate_rps list, or the trace's own series); "
        "models whose loads have more than one period must share it"))
    rate_scale: float = Field(1.0, gt=0, description=(
        "multiplies the model's rates, whatever their source: rate_rps (with a trace or a "
        "histogram) or the trace's own rate series"))
    input_edges: list[float] | None = None
    output_edges: list[float] | None = None
    normalise_shares: bool = False
    periods: Literal["series", "peak", "mean"] = "series"


class ModelEntry(_Spec):
    name: str | None = None
    #: a model alias, or a config.json (or its folder): a relative path is read from the
    #: request's folder where it exists there (:func:`load_request`), else from the current one
    model: str
    workload: WorkloadSpec
    slo: SLOSpec = SLOSpec()
    profiles: list[ProfileSpec] = []
    serve_model: str | None = Field(None, description="Hugging Face id used by emitted commands")
    dtype: str = "bf16"
    kv_dtype: str | None = None
    max_num_seqs: int | None = Field(None, ge=1)
    #: the model's config file as read (set by :func:`load_request`); None: ``model`` as given
    _config_path: str | None = PrivateAttr(None)
    disaggregation: Literal["off", "auto", "same_gpu"] = Field("off", description=(
        "auto: also offer prefill/decode disaggregated bundles (a ratio of prefill to decode "
        "instances, KV moved between them), chosen jointly with the mix: on one GPU type, or "
        "prefill on one type and decode on another of the same vendor; same_gpu: one GPU type "
        "per bundle only"))

    @property
    def source(self) -> str:
        """What to load the model from: the config path resolved against the request's
        folder, else ``model`` as given (an alias or a path)."""
        return self._config_path or self.model


class GPUEntry(_Spec):
    name: str
    price_per_hour: float | None = Field(None, gt=0)
    reserved_price_per_hour: float | None = Field(None, gt=0)
    spot_price_per_hour: float | None = Field(None, gt=0)
    quota: int | None = Field(None, ge=0, description="GPUs of this type available")
    shapes: list[ShapeSpec] | None = None
    max_tp: int = Field(8, ge=1)


class SpotSpec(_Spec):
    max_fraction: float = Field(0.0, ge=0, le=1, description="largest share on spot of the GPUs each period's load needs when served the cheapest way on demand")
    capacity_factor: float = Field(1.0, gt=0, le=1,
                                   description="share of spot capacity counted on (interruptions)")


class SolverSpec(_Spec):
    time_limit_s: float = Field(30.0, gt=0)
    slice_factor: int | None = Field(None, ge=1)
    routing: Literal["auto", "per_period", "shared"] = "auto"
    gap_rel: float = Field(1e-6, ge=0, lt=1)
    baseline: bool = True
    workers: int | None = Field(None, ge=1, description=(
        "processes for the per-period solves of large multi-period problems "
        "(default: one per available core, at most 4)"))
    break_even: bool = Field(False, description=(
        "also find, per GPU type, the price at which it enters or leaves the cheapest plan "
        "(a few more MILPs per type)"))
    slo_factors: list[float] = Field(default_factory=list, description=(
        "also plan with every SLO multiplied by each factor (0.8 = 20% tighter) and report "
        "the cost: what a tighter or looser SLO costs (capacities recomputed per factor)"))

    @field_validator("slo_factors")
    @classmethod
    def _factors(cls, v: list[float]) -> list[float]:
        if any(not (0 < f <= 10) for f in v):
            raise ValueError("SLO factors must be in (0, 10]")
        return sorted(set(v))


class ScalingSpec(_Spec):
    start_cost_s: float = Field(0.0, ge=0, le=86_400, description=(
        "seconds of a replica's price each start costs (it loads weights before it serves; "
        "e.g. 600): the plan then keeps a pool up through a short dip when restarting it "
        "costs more; starts are counted as if the horizon repeated (a day); 0 = free"))


class FleetRequest(_Spec):
    """A fleet planning request (the YAML file's content)."""

    models: list[ModelEntry] = Field(min_length=1)
    gpus: list[GPUEntry] = Field(min_length=1)
    spot: SpotSpec = SpotSpec()
    scaling: ScalingSpec = ScalingSpec()
    solver: SolverSpec = SolverSpec()
    max_utilisation: float = Field(1.0, gt=0, le=1)

    @field_validator("models")
    @classmethod
    def _unique(cls, v: list[ModelEntry]) -> list[ModelEntry]:
        names = [m.name or m.model for m in v]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique (set 'name' to tell them apart)")
        return v


def validation_error(exc: ValidationError, file: str | None) -> InputError:
    """A malformed request as one :class:`InputError` (field path and the value given, as for
    every planner: :func:`hardware.errors.from_validation_error`)."""
    extra = exc.errors()[0]["type"] == "extra_forbidden"
    return from_validation_error(
        exc, file=file,
        expected="only the fields documented in examples/fleet_request.yaml" if extra else None)


def load_request(path: str | Path) -> FleetRequest:
    """Read and validate a request file; relative paths inside it are relative to the file."""
    path = Path(path)
    data = read_structured(path, what="fleet request")
    if not isinstance(data, dict):
        raise InputError("the request is not a mapping", file=str(path),
                         expected="a YAML object with models and gpus")
    try:
        req = FleetRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, str(path)) from None
    from costmodels.model import model_beside

    base = path.resolve().parent
    for m in req.models:
        if m.workload.trace and not Path(m.workload.trace).is_absolute():
            m.workload.trace = str(base / m.workload.trace)
        for p in m.profiles:
            if not Path(p.file).is_absolute():
                p.file = str(base / p.file)
        source = model_beside(m.model, base)
        if source != m.model:
            m._config_path = source
    return req


def input_files(req: FleetRequest) -> dict[str, list[Path]]:
    """The files a loaded request reads beside itself, by kind ("traces", "profiles",
    "model_configs"; existing files only): protected from being overwritten by output, and
    hashed into the plan's inputs."""
    from costmodels.model import model_config_file

    found: dict[str, list[Path]] = {"traces": [], "profiles": [], "model_configs": []}
    for m in req.models:
        if m.workload.trace:
            found["traces"].append(Path(m.workload.trace))
        found["profiles"] += [Path(p.file) for p in m.profiles]
        config = model_config_file(m.source)
        found["model_configs"] += [config] if config is not None else []
    return {kind: [p for p in paths if p.is_file()] for kind, paths in found.items()}


def request_from_file(path: str | Path) -> tuple[FleetRequest, Any]:
    """The validated request and the raw data that goes into the inputs' hash (the request
    and the contents of every file it reads)."""
    import hashlib

    req = load_request(path)
    raw = read_structured(path, what="fleet request")
    hashed = {"request": raw}
    for kind, paths in input_files(req).items():
        for p in paths:
            hashed.setdefault(kind, {})[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return req, hashed
