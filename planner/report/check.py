"""What each report reads of a plan, checked once before anything is drawn.

Plans are data people edit by hand and files get cut short (a copy interrupted); a report of a
broken plan gave tracebacks or, worse, a page that says "no plan" or "? layers x ? experts" and
exits 0.  :func:`check_plan` holds the sections every report kind reads to what its planner
writes (``planner/schemas/*.schema.json``): the sections as strict pydantic ``TypedDict`` s
(required where the planner always writes them and the report reads them, of the right type,
numbers finite), then the rules between fields that keep the drawing in range (an expert
placement's tables against its spec, a step's ranks against its GPUs).  FleetPlans go through
the checks ``planner emit`` runs (:mod:`planner.emit.plan_check`), less the emit-only ones
(servable model ids, catalog GPU names: a Mélange plan has a report but no deployment).  Each
failure is one :class:`~hardware.errors.InputError` naming the file and the field, saying the
plan looks truncated or edited where a section or field is missing.

The schemas themselves are test-only (jsonschema is not a runtime dependency); these models
read the same fields.
"""
from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from hardware.errors import InputError, from_validation_error

_STRICT = ConfigDict(strict=True, allow_inf_nan=False)

Num = Annotated[float, Field(allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Int = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Mapping = dict[str, Any]


# ------------------------------------------------------------------------------ ParallelPlan
class _ParSlo(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    ttft_s: Optional[Num]
    tpot_s: Optional[Num]
    ttft_percentile: Num
    tpot_percentile: Num


class _ParWorkload(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    requests: Int
    mean_input_len: Num
    mean_output_len: Num
    rate_rps: NotRequired[Optional[Num]]


class _ParCluster(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    gpu: str
    nodes: Positive
    gpus_per_node: Positive
    gpus: Positive
    price_per_gpu_hour: Optional[NonNeg]


class _Phase(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    memory_per_gpu_bytes: dict[str, Optional[Num]]


class _LaunchSpec(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    commands: list[str]


class _ParPlanEntry(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    rank: Positive
    label: str
    gpu: NotRequired[str]
    gpus: Positive
    tp: Optional[Positive]
    pp: Optional[Positive]
    dp: Optional[Positive]
    ep: Optional[Positive]
    disaggregated: bool
    ttft_s: Optional[Num]
    tpot_s: Optional[Num]
    goodput_rps: Optional[Num]
    cost_per_hour: Optional[NonNeg]
    cost_per_million_tokens: NotRequired[Optional[Num]]
    launch: dict[str, Union[_LaunchSpec, None]]
    why: str
    characteristics: NotRequired[Optional[Mapping]]
    replica: NotRequired[Optional[_Phase]]
    prefill: NotRequired[Optional[_Phase]]
    decode: NotRequired[Optional[_Phase]]


class _ParSearch(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    plans_evaluated: Int
    time_s: Num
    pruned: NotRequired[Int]
    pruned_by_rule: NotRequired[dict[str, Int]]


class _Pruned(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    candidate: Mapping
    rule: str
    reason: str


class _ParallelPlan(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    metadata: NotRequired[Mapping]
    model: str
    engine: str
    objective: str
    slo: _ParSlo
    workload: _ParWorkload
    cluster: list[_ParCluster]
    plans: Annotated[list[_ParPlanEntry], Field(min_length=1)]
    search: _ParSearch
    pruned: NotRequired[list[_Pruned]]
    fidelity: NotRequired[Optional[str]]
    assumptions: NotRequired[Optional[list[Any]]]
    solver: NotRequired[Optional[Mapping]]


# --------------------------------------------------------------------------- ExpertPlacement
class _ExpSpec(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    layers: Positive
    experts: Positive
    gpus: Positive
    slots: NotRequired[Positive]
    slots_per_gpu: Optional[Positive]
    loads: Optional[str]


class _ExpLayer(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    layer: Int
    max_mean_gpu_load: Optional[Num]
    max_mean_node_load: Optional[Num]
    lower_bound: Optional[Num]
    node_bound: Optional[Num]


class _ExpPlacement(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    slot_to_gpu: Union[str, list[Int]]
    phy2log: Annotated[list[Annotated[list[Int], Field(min_length=1)]], Field(min_length=1)]
    gpu_speeds: NotRequired[Optional[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]]]


class _ExpAffinity(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    load_only: Optional[Mapping]
    max_mean_gpu_load_given_up: Optional[Num]


class _ExpSolver(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    gap: Optional[Num]
    objective_meaning: str
    bound_meaning: str


class _ExpMetrics(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    max_mean_gpu_load_mean: Optional[Num]
    max_mean_gpu_load_worst: Optional[Num]
    lower_bound_mean: Optional[Num]
    gap_to_bound_mean: Optional[Num]
    duplicate_pairs: Optional[Int]
    experts_moved: Optional[Int]


class _ExpertPlacement(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    metadata: NotRequired[Mapping]
    spec: _ExpSpec
    metrics: _ExpMetrics
    solver: _ExpSolver
    per_layer: list[_ExpLayer]
    placement: _ExpPlacement
    affinity: NotRequired[Optional[_ExpAffinity]]
    migration: NotRequired[Optional[Mapping]]
    memory: NotRequired[Optional[Mapping]]
    notes: NotRequired[Optional[list[Any]]]


# ------------------------------------------------------------------- StepPlan / SequencePlan
class _SeqGroup(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    size: Positive
    type: str
    ranks: Annotated[list[Int], Field(min_length=1)]
    sequences: list[Int]
    tokens: Int
    time_s: Num
    link_tier: NotRequired[Optional[str]]


class _MicroBatch(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    time_s: Num
    tokens: Int
    groups: list[_SeqGroup]


class _SeqSolver(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    status: str
    gap: Optional[Num]
    milp: Optional[Mapping]


class _CostModel(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    notes: Optional[list[Any]]
    assumptions: Optional[list[Any]]


class _StepPlan(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    metadata: NotRequired[Mapping]
    cost_preset: str
    num_gpus: Positive
    gpus_per_node: Positive
    num_sequences: Int
    total_tokens: Int
    longest_sequence: Int
    step_time_s: Num
    lower_bound_s: Num
    tokens_per_s_per_gpu: Num
    micro_batches: Annotated[list[_MicroBatch], Field(min_length=1)]
    solver: _SeqSolver
    cost_model: _CostModel


class _Strategy(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    name: str
    mode: str
    type: str
    size: Optional[Positive]
    feasible_batches: Int
    step_time_s: Optional[Num]
    step_time_s_max: Optional[Num]
    tokens_per_s_per_gpu: Optional[Num]
    memory_headroom: Optional[Num]
    micro_batches_mean: Optional[Num]
    per_batch_step_time_s: list[Optional[Num]]
    planning_time_s: NotRequired[Optional[Num]]


class _Recommendation(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    static: Optional[Mapping]
    adaptive: Optional[Mapping]


class _SequencePlan(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    metadata: NotRequired[Mapping]
    distribution: Mapping
    cluster: Mapping
    cost_model: _CostModel
    batches: Mapping
    strategies: Annotated[list[_Strategy], Field(min_length=1)]
    best_static: Optional[str]
    adaptive_gain_vs_best_static: Optional[Num]
    recommendation: _Recommendation
    solver: NotRequired[Optional[Mapping]]


# -------------------------------------------------------- FleetPlan (beyond what emit checks)
class _FleetPoolExtra(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    utilisation: Optional[Num]
    rate_headroom_fraction: Optional[Num]
    slo_headroom: Optional[Mapping]
    capacity_source: Optional[str]
    gpus: Optional[Int]


class _FleetPeriod(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    index: Int
    start_s: Num
    cost_per_hour: Optional[NonNeg]
    gpus: Int
    rate_rps: dict[str, Optional[Num]]
    pools: dict[str, Num]
    changes: dict[str, int]


class _FleetBaseline(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    gpu: Optional[str]
    cost_per_hour: Optional[Num]
    savings_fraction: Optional[Num]
    per_gpu: list[Mapping]


class _FleetSolver(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    status: str
    gap: Optional[Num]
    formulation: Optional[Mapping]


class _FleetPeak(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    cost_per_hour: Optional[Num]
    note: Optional[str]


class _FleetWhatIf(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    delta_fraction: Optional[Num]


class _FleetReplan(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    keep_within: Optional[Num]


class _FleetReport(TypedDict, total=False):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    metadata: Mapping
    pools: list[_FleetPoolExtra]
    periods: Optional[list[_FleetPeriod]]
    baseline_single_gpu: Optional[_FleetBaseline]
    solver: Optional[_FleetSolver]
    peak_provisioning: Optional[_FleetPeak]
    workload: Optional[dict[str, Optional[Mapping]]]
    slo: Optional[dict[str, Optional[Mapping]]]
    capacity: Optional[dict[str, Optional[list[Any]]]]
    explanations: Optional[list[Any]]
    cost_by_model: Optional[dict[str, Mapping]]
    break_even_prices: Optional[list[Mapping]]
    slo_sensitivity: Optional[list[_FleetWhatIf]]
    replan: Optional[_FleetReplan]


#: plan kind -> (the checked sections, the command that writes it)
_KINDS: dict[str, tuple[Any, str]] = {
    "ParallelPlan": (_ParallelPlan, "planner parallel"),
    "ExpertPlacement": (_ExpertPlacement, "planner experts"),
    "StepPlan": (_StepPlan, "planner seqpar step"),
    "SequencePlan": (_SequencePlan, "planner seqpar plan"),
}
#: sections (and fields of sections, dotted) a plan the planner wrote always holds beyond the
#: required ones: the last it writes, which a plan cut short loses first
_PLANNER_WRITES = {"ParallelPlan": ("fidelity", "assumptions"), "FleetPlan": ("explanations",),
                   "StepPlan": ("cost_model.source",),
                   "SequencePlan": ("cost_model.source", "recommendation.choice")}
_ADAPTERS: dict[Any, TypeAdapter] = {}


def _adapter(model: Any) -> TypeAdapter:
    if model not in _ADAPTERS:
        _ADAPTERS[model] = TypeAdapter(model)
    return _ADAPTERS[model]


def _command(kind: str) -> str:
    return _KINDS[kind][1] if kind in _KINDS else "planner fleet"


def _required(kind: str) -> list[str]:
    """The sections a ``kind`` plan must hold (its model's required keys)."""
    if kind not in _KINDS:
        from planner.emit.plan_check import PLANNER_SECTIONS
        return list(PLANNER_SECTIONS)
    schema = _adapter(_KINDS[kind][0]).core_schema
    schema = schema["schema"] if schema["type"] == "definitions" else schema
    return [k for k, f in schema["fields"].items() if f.get("required", True)]


def _other_kind(plan: dict[str, Any], kind: str) -> str | None:
    """The plan kind whose sections this plan holds when they are not its own kind's (a kind
    edited by hand), else None."""
    for other in (*_KINDS, "FleetPlan"):
        if other != kind and all(k in plan for k in _required(other)):
            return other
    return None


def _truncated(message: str, *, plan: dict[str, Any], kind: str, file: str | None, field: str | None,
               expected: str | None) -> InputError:
    other = _other_kind(plan, kind)
    if other is not None:
        article = "an" if kind[0] in "AEIOU" else "a"
        return InputError(f"{message}: the plan holds the sections of a {other}, not {article} {kind}", file=file,
                          field=field, expected=expected,
                          hint=f"Was its kind edited? A {other}'s report needs kind: {other}")
    return InputError(f"{message}: the plan looks truncated or edited", file=file, field=field,
                      expected=expected, hint=f"Write it again with {_command(kind)}, or restore what was lost")


def _sections(plan: dict[str, Any], kind: str, file: str | None) -> None:
    """Every section a ``kind`` plan holds, and those its planner always writes when the
    metadata says the planner wrote it."""
    from planner.emit.plan_check import PLANNER_TOOL
    meta = plan.get("metadata")
    written = isinstance(meta, dict) and meta.get("tool") == PLANNER_TOOL
    need = _required(kind) + ([k for k in _PLANNER_WRITES.get(kind, ()) if "." not in k] if written else [])
    for key in need:
        if key not in plan:
            raise _truncated(f"no '{key}' section", plan=plan, kind=kind, file=file, field=key,
                             expected=f"the sections {_command(kind)} writes: " + ", ".join(need))
    for path in _PLANNER_WRITES.get(kind, ()) if written else ():
        section, _, key = path.partition(".")
        if key and isinstance(plan.get(section), dict) and key not in plan[section]:
            raise _truncated(f"no '{key}' in '{section}'", plan=plan, kind=kind, file=file, field=path,
                             expected=f"the fields {_command(kind)} writes in {section}, {key} last")


def _validate(model: Any, plan: dict[str, Any], kind: str, file: str | None) -> None:
    """``plan`` against ``model``: the first failure as one InputError (a missing or empty
    section or field says the plan looks truncated or edited)."""
    try:
        _adapter(model).validate_python(plan)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err.get("type") == "missing" or ("input" in err and err["input"] is None):
            base = from_validation_error(exc)
            what = "a required field is missing" if err.get("type") == "missing" else "empty (null)"
            raise _truncated(what, plan=plan, kind=kind, file=file, field=base.field,
                             expected=_expected(err) or "the fields its planner writes there") from None
        raise from_validation_error(exc, file=file, expected=_expected(err)) from None


def _expected(err: dict[str, Any]) -> str | None:
    kind = err.get("type", "")
    if kind == "finite_number" or kind.startswith("float"):
        return "a finite number"
    if kind.startswith(("greater", "less")):
        return "a number " + str(err.get("msg", "")).removeprefix("Input should be ")
    if kind.startswith("int"):
        return "a whole number"
    if kind in ("list_type", "too_short"):
        return "a list" + (" with at least one entry" if kind == "too_short" else "")
    if kind in ("dict_type", "model_type", "typed_dict_type"):
        return "a mapping"
    if kind.startswith("string"):
        return "a string"
    if kind.startswith("bool"):
        return "true or false"
    return None


# ------------------------------------------------------------------------------ the checks
def check_plan(plan: dict[str, Any], *, file: str | None = None) -> None:
    """Check the sections the report of ``plan``'s kind reads (its kind already checked).

    Raises:
        InputError: the first problem found, naming ``file`` and the field.
    """
    kind = plan.get("kind")
    if kind == "FleetPlan":
        _check_fleet(plan, file)
        return
    _sections(plan, kind, file)
    _validate(_KINDS[kind][0], plan, kind, file)
    if kind == "ExpertPlacement":
        _check_experts(plan, file)
    elif kind == "StepPlan":
        _check_step(plan, file)
    elif kind == "ParallelPlan":
        _check_parallel(plan, file)


def _check_parallel(plan: dict[str, Any], file: str | None) -> None:
    """The pruned candidates a plan lists (``--explain``) against the search's count of them."""
    pruned, count = plan.get("pruned"), plan["search"].get("pruned")
    if pruned is not None and count is not None and len(pruned) != count:
        raise _truncated(f"{len(pruned)} pruned candidate(s) listed, the search pruned {count}", plan=plan,
                         kind="ParallelPlan", file=file, field="pruned",
                         expected=f"every pruned candidate: {count}, as search.pruned says")


def _check_experts(plan: dict[str, Any], file: str | None) -> None:
    """The placement's tables against its spec: layers, slots, expert ids, GPUs of slots."""
    spec, pl = plan["spec"], plan["placement"]
    table = pl["phy2log"]
    layers, experts, gpus = spec["layers"], spec["experts"], spec["gpus"]
    if len(table) != layers:
        raise _truncated(f"placement.phy2log has {len(table)} layer(s), spec.layers says {layers}", plan=plan,
                         kind="ExpertPlacement", file=file, field="placement.phy2log",
                         expected=f"one row per layer: {layers}")
    slots = spec.get("slots", len(table[0]))
    for layer, row in enumerate(table):
        if len(row) != slots:
            raise _truncated(f"layer {layer} has {len(row)} slot(s), not {slots}", plan=plan,
                             kind="ExpertPlacement", file=file, field=f"placement.phy2log[{layer}]",
                             expected=f"{slots} slots per layer (spec.slots)")
        bad = next((e for e in row if e >= experts), None)
        if bad is not None:
            raise InputError(f"expert {bad} in layer {layer}, but the spec has {experts} experts", file=file,
                             field=f"placement.phy2log[{layer}]", expected=f"expert ids 0 to {experts - 1}")
    s2g = pl["slot_to_gpu"]
    if isinstance(s2g, list):
        if len(s2g) != slots:
            raise InputError(f"{len(s2g)} slot(s) mapped to GPUs for {slots} slots", file=file,
                             field="placement.slot_to_gpu", expected=f"one GPU per slot: {slots}")
        bad = next((g for g in s2g if g >= gpus), None)
        if bad is not None:
            raise InputError(f"a slot on GPU {bad}, but the spec has {gpus} GPUs", file=file,
                             field="placement.slot_to_gpu", expected=f"GPU numbers 0 to {gpus - 1}")
    else:
        spg = spec.get("slots_per_gpu")
        if spg is None or spg * gpus != slots:
            raise InputError(f"slots follow the rule '{s2g}', but {spg} slot(s) per GPU x {gpus} GPUs is not "
                             f"{slots} slots", file=file, field="spec.slots_per_gpu",
                             expected=f"slots_per_gpu x gpus = {slots}, or placement.slot_to_gpu listing "
                                      "each slot's GPU")
    speeds = pl.get("gpu_speeds")
    if speeds is not None and len(speeds) != gpus:
        raise InputError(f"{len(speeds)} GPU speed(s) for {gpus} GPUs", file=file, field="placement.gpu_speeds",
                         expected=f"one speed per GPU: {gpus}")
    rows = plan["per_layer"]
    if len(rows) != layers:
        raise _truncated(f"per_layer has {len(rows)} row(s) for {layers} layer(s)", plan=plan,
                         kind="ExpertPlacement", file=file, field="per_layer", expected=f"one row per layer: {layers}")


def _check_step(plan: dict[str, Any], file: str | None) -> None:
    """Every group's ranks among the step's GPUs."""
    n = plan["num_gpus"]
    for k, mb in enumerate(plan["micro_batches"]):
        for j, g in enumerate(mb["groups"]):
            bad = next((r for r in g["ranks"] if r >= n), None)
            if bad is not None:
                raise InputError(f"rank {bad}, but the step runs on {n} GPUs", file=file,
                                 field=f"micro_batches[{k}].groups[{j}].ranks", expected=f"ranks 0 to {n - 1}")


def _check_fleet(plan: dict[str, Any], file: str | None) -> None:
    """What any reader of a FleetPlan relies on (:func:`planner.emit.plan_check.check_fleet_fields`:
    its sections, pools, routing, periods and totals), then the further sections the report
    reads."""
    from planner.emit.plan_check import check_fleet_fields

    check_fleet_fields(plan, file=file)
    _validate(_FleetReport, plan, "FleetPlan", file)


__all__ = ["check_plan"]
