"""What ``planner emit`` reads of a FleetPlan, checked once before anything is rendered.

Plans are data people edit by hand (a count bumped, a pool dropped) and files get cut short
(a copy interrupted); emitting a broken plan gives tracebacks or, worse, manifests that apply
(``replicas: -3``, a node selector no node has).  :func:`check_fleet_plan` holds every field the
emitters read to what the fleet planner writes (``planner/fleet/assemble.py``): the types and
ranges as strict pydantic ``TypedDict`` s, then the rules between fields (GPUs per replica =
tp x pp, one length of ``counts_by_period``, unique ids, catalog GPUs where the cost model sized
the pool, routing shares that sum to 1 per bucket), and for a plan
the planner wrote, that nothing was lost (its sections, the pools against the plan's own cost
and routing).  Each failure is one :class:`~hardware.errors.InputError` naming the file, the
field and what was expected.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Callable, Literal, Optional

from pydantic import (BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError,
                      with_config)
from typing_extensions import NotRequired, TypedDict

from hardware.errors import InputError, from_validation_error
from solvers.cover_model import CoverProblem

#: most instances of one role in a prefill/decode bundle (the largest side of
#: ``planner.fleet.bundles.PD_RATIOS``; a test keeps the two in step)
MAX_ROLE_INSTANCES = 3
#: the largest replica count a plan can hold: the cover MILP bounds each option's count at
#: ``CoverProblem.max_instances`` (a bundle's), and a role pool holds up to
#: :data:`MAX_ROLE_INSTANCES` replicas per bundle
MAX_COUNT = int(CoverProblem.max_instances) * MAX_ROLE_INSTANCES
#: tensor- / pipeline-parallel sizes a plan may hold (fleet requests' ``shapes`` bounds)
MAX_PARALLEL = 64
#: sections ``planner fleet`` always writes (planner/schemas/fleet_plan.schema.json's required
#: list): one missing from a plan whose metadata says the planner wrote it means the file was
#: cut short or edited.  ``baseline_single_gpu`` comes after every section emit reads.
PLANNER_SECTIONS = ("cost_per_hour", "pools", "routing", "solver", "baseline_single_gpu")
#: ``metadata.tool`` of a plan the planner wrote (:func:`planner.plan.envelope`)
PLANNER_TOOL = "llm-placement-planner"

_STRICT = ConfigDict(strict=True)


def _whole(value: Any) -> Any:
    """A float that is a whole number (``3.0``) as an int; a fraction or NaN refused here, so
    the message says why (strict int validation would only say "not an integer")."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        if not value.is_integer():
            raise ValueError("not a whole number")
        return int(value)
    return value


Whole = Annotated[int, BeforeValidator(_whole)]
Count = Annotated[Whole, Field(ge=0, le=MAX_COUNT)]
Positive = Annotated[Whole, Field(ge=1)]
Size = Annotated[Whole, Field(ge=1, le=MAX_PARALLEL)]
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Number = Annotated[float, Field(allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1)]
Role = Literal["prefill", "decode"]


class _Shape(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    tp: Size
    pp: NotRequired[Size]


class _Engine(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    dtype: Optional[Name]
    kv_cache_dtype: Optional[Name]
    max_num_seqs: Optional[Positive]
    max_model_len: Optional[Positive]
    kv_transfer: Optional[Role]


class _Pool(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    id: Name
    model: Name
    serve_model: NotRequired[Optional[Name]]
    group: NotRequired[Name]
    role: NotRequired[Role]
    gpu: Name
    shape: _Shape
    gpus_per_replica: Annotated[Whole, Field(ge=1, le=MAX_PARALLEL ** 2)]
    count: Count
    counts_by_period: NotRequired[list[Count]]
    price_class: Literal["reserved", "on_demand", "spot"]
    cost_per_hour: Money
    price_per_replica_hour: NotRequired[Optional[Money]]
    engine: NotRequired[Optional[_Engine]]


class _Bucket(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    label: str
    input_tokens: Annotated[list[Money], Field(min_length=2, max_length=2)]
    output_tokens: Annotated[list[Money], Field(min_length=2, max_length=2)]


class _Route(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    model: str
    bucket: _Bucket
    rate_rps: Money
    pools: dict[str, Money]
    pools_by_period: list[dict[str, Money]]


#: one step of a re-plan's transition (``from`` is a keyword: the functional form)
_Step = with_config(_STRICT)(TypedDict("_Step", {"pool": Name, "from": Count, "to": Count}))


class _Transition(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    period: Annotated[Whole, Field(ge=0)]
    grow_first: list[_Step]
    shrink_after: list[_Step]
    cost_per_hour_during_switch: Money


class _Retired(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    pool: Name
    gpu: NotRequired[str]
    gpus_per_replica: NotRequired[Annotated[Whole, Field(ge=1, le=MAX_PARALLEL ** 2)]]


class _Replan(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    gpus_changed: Number
    retired_pools: NotRequired[list[_Retired]]
    transition: _Transition


class _Scaling(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    start_cost_per_hour: Money


class _Plan(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    pools: list[_Pool]
    period_s: Optional[Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    periods: Optional[list[Any]]
    routing: Optional[list[_Route]]
    replan: Optional[_Replan]
    cost_per_hour: Optional[Money]
    gpus: Optional[dict[str, Count]]
    scaling: Optional[_Scaling]


_PLAN = TypeAdapter(_Plan)

_COUNT = f"a whole number of replicas from 0 to {MAX_COUNT}, the most a plan can hold"
_SIZE = f"a whole number from 1 to {MAX_PARALLEL}"
_MONEY = "a finite number of $/h, at least 0"
#: what each field should hold, by (section, field) or field: the ``expected`` of its error
_EXPECTED = {
    "id": "a non-empty string: the pool's id",
    "model": "a non-empty string: the model's name",
    "serve_model": "a Hugging Face model id or a local model folder",
    "group": "a non-empty string: the pool's group (its bundle, for a role pool)",
    "role": "prefill or decode",
    "kv_transfer": "prefill or decode",
    "gpu": "a GPU name from the catalog",
    "shape": f"a mapping with tp and pp, each {_SIZE}",
    "tp": _SIZE,
    "pp": _SIZE,
    "gpus_per_replica": "a whole number of GPUs, at least 1: tp x pp",
    "count": _COUNT,
    "counts_by_period": f"one whole number of replicas per period, each from 0 to {MAX_COUNT}",
    "price_class": "reserved, on_demand or spot",
    "cost_per_hour": _MONEY,
    "price_per_replica_hour": _MONEY,
    "cost_per_hour_during_switch": _MONEY,
    "engine": "a mapping of engine settings (dtype, kv_cache_dtype, max_num_seqs, max_model_len)",
    "dtype": "a dtype name such as bf16",
    "kv_cache_dtype": "a dtype name such as fp8",
    "max_num_seqs": "a whole number, at least 1",
    "max_model_len": "a whole number of tokens, at least 1",
    "period_s": "a finite number of seconds, above 0: the length of one period",
    "periods": "a list, one entry per period",
    "routing": "a list of routing entries (mappings of model, bucket and pools)",
    ("routing", "model"): "a model name",
    ("routing", "bucket"): "a mapping with label, input_tokens and output_tokens",
    ("routing", "label"): "a string",
    ("routing", "input_tokens"): "[low, high]: two finite token counts, at least 0",
    ("routing", "output_tokens"): "[low, high]: two finite token counts, at least 0",
    ("routing", "pools"): "a mapping of pool group to a share of the bucket's load (0 to 1)",
    ("routing", "pools_by_period"): "a list, one mapping of pool group to a share of the "
                                    "bucket's load (0 to 1) per period",
    ("routing", "rate_rps"): "a finite number of requests per second, at least 0",
    "replan": "the re-plan section planner fleet --previous writes (gpus_changed, transition)",
    "transition": "a mapping of period, grow_first, shrink_after and cost_per_hour_during_switch",
    "grow_first": "a list of steps (pool, from, to)",
    "shrink_after": "a list of steps (pool, from, to)",
    "pool": "a pool id",
    "from": _COUNT,
    "to": _COUNT,
    "period": "a whole number, at least 0: the period the transition happens in",
    "gpus_changed": "a finite number of GPUs",
    "retired_pools": "a list of the retired pools (pool, gpu, gpus_per_replica)",
    ("retired_pools", "gpu"): "a GPU name",
    "gpus": "a mapping of GPU name to the plan's number of GPUs of that type",
    "scaling": "a mapping (start_cost_s, start_cost_per_hour)",
    "pools": "a list of pools (mappings of id, model, gpu, shape, count...)",
}


def _expected(loc: tuple) -> str | None:
    """The ``expected`` text of the field at ``loc`` (pydantic's location of an error): the
    innermost named field that :data:`_EXPECTED` knows, as a field of its section
    (``("routing", "pools")``) before as a field anywhere (``"pools"``)."""
    names = [p for p in loc if isinstance(p, str)]
    for at in range(len(names) - 1, -1, -1):
        for section in reversed(names[:at]):
            if (section, names[at]) in _EXPECTED:
                return _EXPECTED[(section, names[at])]
        if names[at] in _EXPECTED:
            return _EXPECTED[names[at]]
    return None


def _truncated(message: str, *, file: str | None, field: str, expected: str) -> InputError:
    return InputError(f"{message}: the plan looks truncated or edited", file=file, field=field,
                      expected=expected,
                      hint="Write it again with planner fleet, or restore what was lost")


def check_fleet_fields(plan: dict[str, Any], *, file: str | None = None,
                       before_totals: Callable[[list[dict[str, Any]]], None] | None = None
                       ) -> list[dict[str, Any]]:
    """Check what any reader of a FleetPlan relies on (emit and the report alike): the
    planner's sections (a plan it wrote and that lost one was cut short), the pools' types and
    ranges, tp x pp, unique ids, one count per period, and the pools against the plan's own
    routing, GPU totals and cost.  Returns the pools with counts and sizes as ints.
    ``before_totals(pools)``: a reader's own checks of the pools (it may respell their GPU
    names), run before the totals are compared.

    Raises:
        InputError: the first problem found, with ``file`` and the field.
    """
    meta = plan.get("metadata")
    if isinstance(meta, dict) and meta.get("tool") == PLANNER_TOOL:
        for key in PLANNER_SECTIONS:
            if key not in plan:
                raise _truncated(f"no '{key}' section", file=file, field=key,
                                 expected="the sections planner fleet writes: "
                                          + ", ".join(PLANNER_SECTIONS))
    if plan.get("pools") in (None, []):
        raise InputError("the plan has no pools", file=file, field="pools",
                         expected="a FleetPlan with at least one pool")
    try:
        _PLAN.validate_python({k: plan[k] for k in _Plan.__annotations__ if k in plan})
    except ValidationError as exc:
        loc = tuple(exc.errors()[0]["loc"])
        raise from_validation_error(exc, file=file, expected=_expected(loc)) from None

    pools = [dict(p) for p in plan["pools"]]
    ids: dict[str, int] = {}
    for i, pool in enumerate(pools):
        where = f"pools[{i}]"
        tp, pp = pool["shape"]["tp"], pool["shape"].get("pp", 1)
        if pool["gpus_per_replica"] != tp * pp:
            raise InputError(f"{pool['gpus_per_replica']:g} GPUs per replica, but shape tp {tp:g} x "
                             f"pp {pp:g} runs on {tp * pp:g}", file=file,
                             field=f"{where}.gpus_per_replica",
                             expected=f"tp x pp = {tp * pp:g} (or a shape that matches)")
        if pool.get("role") and not pool.get("group"):
            raise InputError(f"a {pool['role']} pool without its bundle", file=file,
                             field=f"{where}.group",
                             expected="the bundle (group) this role pool belongs to")
        if pool["id"] in ids:
            raise InputError(f"pool id '{pool['id']}' also names pools[{ids[pool['id']]}]",
                             file=file, field=f"{where}.id", expected="a different id per pool")
        ids[pool["id"]] = i
        pool["shape"] = dict(pool["shape"], tp=int(tp))
        if "pp" in pool["shape"]:
            pool["shape"]["pp"] = int(pp)
        pool["count"] = int(pool["count"])
        pool["gpus_per_replica"] = int(pool["gpus_per_replica"])
        if "counts_by_period" in pool:
            pool["counts_by_period"] = [int(c) for c in pool["counts_by_period"]]
    _check_periods(plan, pools, file)
    if before_totals is not None:
        before_totals(pools)
    _check_totals(plan, pools, file)
    return pools


def check_fleet_plan(plan: dict[str, Any], *, file: str | None = None) -> dict[str, Any]:
    """Check every field emit reads of a FleetPlan (as read by :func:`planner.plan.load_plan`):
    :func:`check_fleet_fields`, then what a deployment needs besides (pool ids that stay
    distinct as artifact names, servable model ids, GPUs the catalog knows where the cost model
    sized the pool: a measured GPU may be outside it), then :func:`check_routing_shares`, and
    return the plan with its pools normalised (counts as ints, GPU names as the catalog spells
    them); the plan given is not changed.  A valid plan comes back equal to itself apart from those
    spellings.

    Raises:
        InputError: the first problem found, with ``file`` and the field.
    """
    from hardware.catalog import get_accelerator
    from planner.emit.vllm import check_servable, slug

    def deployable(pools: list[dict[str, Any]]) -> None:
        names: dict[str, int] = {}
        for i, pool in enumerate(pools):
            name = slug(pool["id"])
            if name in names:
                raise InputError(f"pools[{names[name]}] and pools[{i}] would both be named "
                                 f"'{name}' (ids '{pools[names[name]]['id']}' and "
                                 f"'{pool['id']}')", file=file, field=f"pools[{i}].id",
                                 expected="pool ids that differ in letters or digits")
            names[name] = i
        check_servable({"pools": pools}, file=file)
        for i, pool in enumerate(pools):
            try:
                pool["gpu"] = get_accelerator(pool["gpu"], field=f"pools[{i}].gpu", file=file).name
            except InputError:
                # a GPU outside the catalog is deployable (vLLM needs only the shape; the
                # Kubernetes emitter falls back, see planner.emit.kubernetes.gpu_fallback)
                # where its capacity was measured (profiles); the cost model sizes only
                # catalog GPUs, so there the name was edited or mistyped
                if str(pool.get("capacity_source") or "").startswith("cost-model"):
                    raise

    checked = {**plan, "pools": check_fleet_fields(plan, file=file, before_totals=deployable)}
    if isinstance(plan.get("gpus"), dict):  # the totals spelled as the pools now are: a
        spelled = {p["gpu"]: q["gpu"] for p, q in zip(plan["pools"], checked["pools"])}
        gpus: dict[str, Any] = {}  # checked plan passes this check again (emitters re-check)
        for gpu, n in plan["gpus"].items():
            gpus[spelled.get(gpu, gpu)] = gpus.get(spelled.get(gpu, gpu), 0) + n
        checked["gpus"] = gpus
    check_routing_shares(checked, file=file)
    return checked


#: how far a bucket's routing shares may sum from 1: plans round each share to 6 decimals
SHARE_SUM_TOLERANCE = 1e-4


def check_routing_shares(plan: dict[str, Any], *, file: str | None = None) -> None:
    """Each routing entry sends all of its bucket's load somewhere: its ``pools`` shares sum
    to 1 (within :data:`SHARE_SUM_TOLERANCE`), or the mapping is empty for a bucket with
    ``rate_rps`` 0 (or none given); so does each period's mapping of an optional
    ``pools_by_period`` (one per period), where a period with no load for the bucket may be
    empty.  The per-period mappings name only the plan's pool groups.

    Raises:
        InputError: the first entry whose shares do not add up, naming its field."""
    periods = plan.get("periods")
    n_periods = len(periods) if isinstance(periods, list) and periods else None
    groups = {p.get("group") for p in plan.get("pools") or []}

    def check(shares: dict[str, float], field: str, what: str, may_be_empty: bool) -> None:
        total = float(sum(shares.values()))
        if may_be_empty and not any(v > 0 for v in shares.values()):
            return
        if abs(total - 1.0) > SHARE_SUM_TOLERANCE:
            raise InputError(f"{what}'s routing shares sum to {total:.6g}, not 1: "
                             + ("its load goes to no pool" if total == 0 else
                                "the pools would get more than all of it" if total > 1 else
                                "part of its load goes to no pool"),
                             file=file, field=field,
                             expected=f"shares (pool group -> fraction) that sum to 1, within "
                                      f"{SHARE_SUM_TOLERANCE:g}"
                                      + (" (none for a bucket with rate_rps 0)" if what == "the bucket"
                                         else " (or none in a period with no load)"))

    for k, route in enumerate(plan.get("routing") or []):
        rate = route.get("rate_rps")
        check(route.get("pools") or {}, f"routing[{k}].pools", "the bucket",
              may_be_empty=rate is None or rate == 0)
        by_period = route.get("pools_by_period")
        if by_period is None:
            continue
        if n_periods is not None and len(by_period) != n_periods:
            raise InputError(f"{len(by_period)} routing mapping(s) for {n_periods} periods",
                             file=file, field=f"routing[{k}].pools_by_period",
                             expected=f"one mapping per period: {n_periods}, as the plan's "
                                      "periods section lists")
        for t, shares in enumerate(by_period):
            for group, share in shares.items():
                if share > 0 and group not in groups:
                    raise _truncated(f"routes load in period {t} to pool group '{group}', which "
                                     "no pool has", file=file,
                                     field=f"routing[{k}].pools_by_period[{t}]",
                                     expected="groups of the plan's pools")
            check(shares, f"routing[{k}].pools_by_period[{t}]", f"the bucket in period {t}",
                  may_be_empty=True)


def _check_periods(plan: dict[str, Any], pools: list[dict[str, Any]], file: str | None) -> None:
    """Every ``counts_by_period`` as long as the plan has periods (its ``periods`` section, else
    the solver's count, else the first such pool's), and ``period_s`` where they are."""
    varying = [(i, p) for i, p in enumerate(pools) if "counts_by_period" in p]
    if not varying:
        return
    periods = plan.get("periods")
    formulation = (plan.get("solver") or {}).get("formulation") if isinstance(plan.get("solver"), dict) else None
    if isinstance(periods, list) and periods:
        n, source = len(periods), "as the plan's periods section lists"
    elif isinstance(formulation, dict) and isinstance(formulation.get("periods"), int):
        n = formulation["periods"]
        source = "as solver.formulation.periods says"
    else:
        first, pool = varying[0]
        n = len(pool["counts_by_period"])
        source = f"as pools[{first}].counts_by_period holds"
    for i, pool in varying:
        if len(pool["counts_by_period"]) != n:
            raise InputError(f"{len(pool['counts_by_period'])} count(s) for {n} periods", file=file,
                             field=f"pools[{i}].counts_by_period",
                             expected=f"one count per period: {n}, {source}")
    if n > 1 and plan.get("period_s") is None:
        raise InputError(f"the pools' counts change over {n} periods but the plan does not say "
                         "how long a period lasts", file=file, field="period_s",
                         expected=_EXPECTED["period_s"])


def _check_totals(plan: dict[str, Any], pools: list[dict[str, Any]], file: str | None) -> None:
    """The pools against what the plan says of them as a whole: routing names only pools'
    groups, ``gpus`` only GPU types some pool runs on, and the pools' costs add up to the plan's
    ``cost_per_hour`` (with the replica start costs of ``scaling``).  A pool lost from the end of
    a file cut short, or deleted by hand, fails one of these."""
    groups = {p.get("group") for p in pools}
    for k, route in enumerate(plan.get("routing") or []):
        for group, share in (route.get("pools") or {}).items():
            if share > 0 and group not in groups:
                raise _truncated(f"routes load to pool group '{group}', which no pool has", file=file,
                                 field=f"routing[{k}].pools",
                                 expected="groups of the plan's pools")
    gpus = {p["gpu"] for p in pools} | {p["gpu"] for p in plan["pools"]}  # as written, as known
    for gpu, n in (plan.get("gpus") or {}).items():
        if n > 0 and gpu not in gpus:
            raise _truncated(f"counts {n} {gpu} GPU(s), but no pool runs on {gpu}", file=file,
                             field=f"gpus.{gpu}", expected="GPU types of the plan's pools")
    cost = plan.get("cost_per_hour")
    if cost is None:
        return
    starts = (plan.get("scaling") or {}).get("start_cost_per_hour") or 0.0
    total = sum(p["cost_per_hour"] for p in pools) + starts
    if abs(total - cost) > 1e-6 * max(1.0, abs(cost)):
        raise _truncated(f"the pools' costs add up to {total:.6g} $/h, not the plan's "
                         f"cost_per_hour {cost:.6g}", file=file, field="pools",
                         expected="pools whose cost_per_hour sum to the plan's"
                                  + (" (with scaling.start_cost_per_hour)" if starts else ""))
