"""Sequence-parallel planner for variable-length training (FlexSP and beyond).

Per training step (``plan_step``): given the batch's sequence lengths and a cluster, choose the
micro-batches, the sequence-parallel groups of each micro-batch (size, type: Ulysses / ring /
hybrid, concrete ranks) and which sequences each group trains, so that the step (sum over
micro-batches of the slowest group) is as short as possible within device memory.  The
optimisation itself is :func:`solvers.partition.solve_partition`; this module turns lengths,
a model and a cluster into that generic problem through a *cost preset*:

* ``flexsp``: FlexSP's own cost model, memory rule and plan rules, reproduced exactly from
  ``shared/data/seqlen/flexsp_bench/COSTMODEL.md`` (times in modelled milliseconds there,
  seconds here), so results compare on FlexSP's terms;
* ``own``: our estimates from :mod:`costmodels.training` (a ModelSpec and a catalog
  accelerator), with Ulysses / ring / hybrid groups and the head-count rules.

Offline (``plan_offline``): sample batches from a length distribution, score static strategies
(each SP degree and type, homogeneous groups) against the adaptive per-step planner, and
recommend one with Megatron-LM / DeepSpeed arguments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from hardware.errors import InfeasibleError, InputError, from_validation_error
from planner.workload import MAX_TOKENS
from solvers.partition import (PartitionInfeasible, PartitionProblem, evaluate, lower_bound,
                               min_rounds, solve_partition)

GROUP_TYPES = ("ulysses", "ring", "hybrid")
COST_PRESETS = ("flexsp", "own")

# ---------------------------------------------------------------------------------------------
# the largest inputs planned, checked before any work (each a documented ceiling, not a guess
# at what fits: past them the planning time outgrows ``--time-limit``)

#: GPUs one step is planned over.  The planner prices every allowed group size for every
#: sequence (one size per node multiple: ~270 group kinds at 1,024 GPUs of 8 per node, ~1,000
#: with 1-GPU nodes) and ``plan`` scores every size as a static strategy; 1,024 is 16x FlexSP's
#: 64-GPU evaluation.  A larger job is planned per data-parallel replica (SP groups stay inside).
MAX_GPUS = 1024
#: sequences in one step's batch (``step --lengths``, ``plan --batch-size``): Llama 3's 16M-token
#: global batches are 16,384 sequences of 1k tokens; the step model holds one cost per sequence
#: and group kind, ~17M numbers at 16,384 sequences and 1,024 GPUs.
MAX_BATCH_SEQUENCES = 16_384
#: sampled batches in an offline plan: the means' standard error falls as 1/sqrt(batches), and
#: every batch is solved once per strategy
MAX_BATCHES = 256
#: documents in an offline plan's length distribution (``plan --lengths``): sample a larger
#: corpus first
MAX_DISTRIBUTION_VALUES = 10_000_000
#: per-GPU memory a plan may assume (GB): far above any accelerator's (288 GB), so a larger
#: value is a typo rather than a device
MAX_MEMORY_GB = 10_000.0
#: the longest planning budget per solve (seconds)
MAX_TIME_LIMIT_S = 3600.0
#: the most solver time an offline plan may schedule in all (seconds): batches x (static
#: strategies x min(budget, 0.3 s) + adaptive sets x budget), checked before sampling
MAX_PLAN_SOLVE_S = 600.0
#: static strategies are solved with at most this budget each
STATIC_TIME_LIMIT_S = 0.3


# ==============================================================================================
# group kinds and cost presets


@dataclass(frozen=True)
class GroupKind:
    """One kind of sequence-parallel group.

    Attributes:
        type: "ulysses" (all-to-all of heads), "ring" (p2p ring attention) or "hybrid"
            (Ulysses of degree ``ulysses_degree`` inside a node x ring of ``ring_degree``
            across nodes).
        size: devices in the group (= ulysses_degree * ring_degree).
    """

    type: str
    size: int
    ulysses_degree: int
    ring_degree: int

    @property
    def label(self) -> str:
        if self.type == "hybrid":
            return f"hybrid{self.ulysses_degree}x{self.ring_degree}"
        return f"{self.type}{self.size}"


class CostPreset:
    """What the planner needs from a cost model (all times in seconds, memory in tokens).

    Subclasses set ``name``, ``kinds``, ``num_gpus``, ``gpus_per_node`` and implement
    :meth:`cost_s` (per-sequence time in each kind), :meth:`capacity_tokens` (tokens one group
    of each kind may hold) and :meth:`fixed_s` (per-group constant per micro-batch).
    """

    name: str = "preset"
    kinds: list[GroupKind]
    num_gpus: int
    gpus_per_node: int
    #: FlexSP requires every group of a micro-batch to hold a sequence and all GPUs busy
    nonempty_groups: bool = True
    fill_devices: bool = True

    def cost_s(self, lengths: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def capacity_tokens(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fixed_s(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def crossing_cost_s(self, lengths: np.ndarray, kind: GroupKind) -> np.ndarray:
        """Per-sequence time when a group of ``kind`` had to be placed across nodes; presets
        whose times depend only on the size return :meth:`cost_s` unchanged."""
        k = self.kinds.index(kind)
        return self.cost_s(lengths)[:, k]

    def longest_fitting(self) -> int:
        """The longest single sequence any allowed group can hold (tokens)."""
        return int(np.max(self.capacity_tokens()))

    def problem(self, lengths: np.ndarray) -> PartitionProblem:
        return PartitionProblem(cost=self.cost_s(lengths), weight=lengths.astype(float),
                                devices=np.array([k.size for k in self.kinds]),
                                capacity=self.capacity_tokens(), fixed=self.fixed_s(),
                                num_devices=self.num_gpus, fill_devices=self.fill_devices,
                                nonempty_groups=self.nonempty_groups)


# ---------------------------------------------------------------------------------------------
# FlexSP's cost model (COSTMODEL.md), exact


@dataclass(frozen=True)
class FlexSPModel:
    """One row of COSTMODEL.md section 2 (times in ms, memory in MB = MiB)."""

    name: str
    hidden_size: int
    num_layers: int
    alpha1_ms_per_token2: float
    alpha2_ms_per_token: float
    beta_ms: float
    act_mb_per_token: float
    params_b_at_k: dict[int, float]
    act_mb_per_token_16gpus: float | None = None


FLEXSP_MODELS: dict[str, FlexSPModel] = {
    "7b": FlexSPModel("gpt-7b", 4096, 32, 5.128e-6, 0.1839576, 629.3563, 4.480441895,
                      {4: 6.51, 192: 7.1174468994140625, 384: 7.8498687744140625},
                      act_mb_per_token_16gpus=2.668764648),
    "13b": FlexSPModel("gpt-13b", 5120, 40, 9.2852e-6, 0.3060189, 1132.5632, 4.220439453,
                       {4: 12.3568, 192: 13.11605453491211, 384: 14.03158187866211}),
    "30b": FlexSPModel("gpt-30b", 6656, 60, 15.4262e-6, 0.8035742, 2789.3644, 3.417381836,
                       {4: 30.538, 192: 31.52513885498047, 384: 32.71532440185547}),
}

#: FlexSP's all-to-all bandwidth table by group size ("4k seq, 2 IB"; read as MiB per ms)
FLEXSP_A2A_BW: dict[int, float] = {1: 1e10, 2: 119.54, 4: 104.07, 8: 96.5, 16: 10.33, 32: 5.94,
                                   64: 4.87}


def flexsp_a2a_bandwidth(d: int) -> float:
    """BW(d) from FlexSP's table; sizes above 64 (not in FlexSP) reuse the 64 entry (our
    extension, for clusters larger than FlexSP's)."""
    if d in FLEXSP_A2A_BW:
        return FLEXSP_A2A_BW[d]
    if d > 64:
        return FLEXSP_A2A_BW[64]
    raise InputError(f"FlexSP's bandwidth table has no group size {d}", field="group size",
                     expected="a power of two")


class FlexSPPreset(CostPreset):
    """FlexSP's cost model and plan rules (COSTMODEL.md sections 2-5), times in seconds.

    Args:
        model_size: "7b", "13b" or "30b" (gpt-7b / 13b / 30b rows).
        num_gpus: N (a power of two for FlexSP's rules).
        memory_gb: per-device memory limit in GB (FlexSP's ``memory_limit_gb``).
        seq_limit_k: FlexSP's length cap k (thousands of tokens) used for the parameter count.
        allow_single: also allow groups of one device (not a FlexSP rule: a variant).
        gpus_per_node: for rank placement only (FlexSP's table implies 8).
    """

    name = "flexsp"

    def __init__(self, model_size: str = "7b", num_gpus: int = 64, memory_gb: float = 30.0,
                 seq_limit_k: int = 32, *, allow_single: bool = False, gpus_per_node: int = 8,
                 max_group_size: int | None = None) -> None:
        key = str(model_size).lower().removeprefix("gpt-")
        if key not in FLEXSP_MODELS:
            raise InputError(f"unknown FlexSP model size '{model_size}'", field="--model-size",
                             expected=" | ".join(FLEXSP_MODELS))
        if num_gpus < 2 or num_gpus & (num_gpus - 1):
            raise InputError(f"FlexSP's plan rules need a power-of-two GPU count, got {num_gpus}",
                             field="--gpus", expected="2, 4, 8, ... (FlexSP group sizes are powers of two)")
        check_memory_gb(memory_gb)
        if isinstance(seq_limit_k, bool) or not isinstance(seq_limit_k, (int, np.integer)) or \
                not 1 <= seq_limit_k <= MAX_TOKENS // 1000:
            raise InputError(f"FlexSP length cap k = {seq_limit_k!r}", field="--seq-limit-k",
                             expected=f"an integer from 1 to {MAX_TOKENS // 1000:,} (thousands of tokens)")
        self.model = FLEXSP_MODELS[key]
        self.num_gpus = int(num_gpus)
        self.gpus_per_node = int(gpus_per_node)
        self.memory_gb = float(memory_gb)
        self.seq_limit_k = int(seq_limit_k)
        self.allow_single = allow_single
        top = min(self.num_gpus, max_group_size or self.num_gpus)
        sizes = [1] if allow_single else []
        d = 2
        while d <= top:
            sizes.append(d)
            d *= 2
        self.kinds = [GroupKind("ulysses", d, d, 1) for d in sizes]
        if self.capacity_per_device < 1:
            raise InfeasibleError("model states leave no memory for activations",
                                  binding="memory", field="--memory-gb",
                                  expected=f"more than {self.states_mb / 1024:.1f} GB")

    # -- COSTMODEL.md section 4
    @property
    def params_b(self) -> float:
        """P(k): table value at k in {4, 192, 384}, else the line through 192 and 384."""
        p = self.model.params_b_at_k
        k = self.seq_limit_k
        if k in p:
            return p[k]
        return p[192] + (p[384] - p[192]) * (k - 192) / 192

    @property
    def act_mb_per_token(self) -> float:
        m = self.model
        if self.num_gpus == 16 and m.act_mb_per_token_16gpus is not None:
            return m.act_mb_per_token_16gpus
        return m.act_mb_per_token

    @property
    def states_mb(self) -> float:
        """ZeRO-3 mixed-precision model states per device: 16 bytes/param over N GPUs (MB)."""
        return self.params_b * 16 * 1024 / self.num_gpus

    @property
    def capacity_per_device(self) -> int:
        """C: tokens one device can hold = floor((1024 mem_GB - states_MB) / act)."""
        return int(math.floor((1024 * self.memory_gb - self.states_mb) / self.act_mb_per_token))

    # -- COSTMODEL.md section 3
    def time_ms(self, lengths: np.ndarray, d: int) -> np.ndarray:
        """T(s, d) in ms: (a1 s^2 + a2 s)/d + [d > 1] 16 L h s / (2^20 d BW(d))."""
        m = self.model
        s = np.asarray(lengths, dtype=float)
        t = (m.alpha1_ms_per_token2 * s * s + m.alpha2_ms_per_token * s) / d
        if d > 1:
            t = t + 16 * m.num_layers * m.hidden_size * s / (2 ** 20 * d * flexsp_a2a_bandwidth(d))
        return t

    def cost_s(self, lengths: np.ndarray) -> np.ndarray:
        return np.stack([self.time_ms(lengths, k.size) / 1e3 for k in self.kinds], axis=1)

    def capacity_tokens(self) -> np.ndarray:
        return np.array([self.capacity_per_device * k.size for k in self.kinds], dtype=float)

    def fixed_s(self) -> np.ndarray:
        return np.full(len(self.kinds), self.model.beta_ms / 1e3)

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {"preset": "flexsp", "model": m.name, "num_gpus": self.num_gpus,
                "memory_gb": self.memory_gb, "seq_limit_k": self.seq_limit_k,
                "params_b": self.params_b, "model_states_mb": self.states_mb,
                "device_token_capacity": self.capacity_per_device,
                "alpha1_ms_per_token2": m.alpha1_ms_per_token2,
                "alpha2_ms_per_token": m.alpha2_ms_per_token, "beta_ms": m.beta_ms,
                "act_mb_per_token": self.act_mb_per_token,
                "group_sizes": [k.size for k in self.kinds],
                "plan_rules": "COSTMODEL.md section 5" + (" + groups of one" if self.allow_single else ""),
                "source": "FlexSP (PKU-DAIR/Hetu-Galvatron, branch flexsp, b4666892) as described "
                          "in shared/data/seqlen/flexsp_bench/COSTMODEL.md"}


def flexsp_step_time_ms(preset: FlexSPPreset, lengths: Sequence[int],
                        microbatches: Iterable[Iterable[tuple[int, Sequence[int]]]]) -> dict[str, Any]:
    """Score a plan given as micro-batches of (group size, sequence ids) with FlexSP's formulas.

    Returns ``{"step_time_ms", "microbatch_times_ms", "group_times_ms", "valid", "violations"}``
    where ``valid`` applies FlexSP's plan rules (COSTMODEL.md section 5).
    """
    s = np.asarray(lengths, dtype=float)
    beta = preset.model.beta_ms
    C = preset.capacity_per_device
    seen = np.zeros(len(s), dtype=int)
    mb_times, g_times, violations = [], [], []
    for r, groups in enumerate(microbatches):
        used, times = 0, []
        for d, ids in groups:
            ids = np.asarray(list(ids), dtype=int)
            seen[ids] += 1
            used += d
            if d < (1 if preset.allow_single else 2) or d & (d - 1) or d > preset.num_gpus:
                violations.append(f"micro-batch {r}: group size {d} not allowed")
            if not len(ids):
                violations.append(f"micro-batch {r}: empty group")
            if s[ids].sum() > C * d:
                violations.append(f"micro-batch {r}: group of {d} over memory")
            ok_size = d in FLEXSP_A2A_BW or (d > 64 and not d & (d - 1))
            times.append(beta + float(preset.time_ms(s[ids], d).sum()) if ok_size else math.inf)
        if used != preset.num_gpus:
            violations.append(f"micro-batch {r}: groups use {used} of {preset.num_gpus} GPUs")
        mb_times.append(max(times))
        g_times.append(times)
    if np.any(seen != 1):
        violations.append("not a partition of the batch")
    return {"step_time_ms": float(sum(mb_times)), "microbatch_times_ms": mb_times,
            "group_times_ms": g_times, "valid": not violations, "violations": violations}


# ==============================================================================================
# plan models (stable JSON names)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeqGroup(_Model):
    """One group of one micro-batch."""

    size: int
    type: str
    ulysses_degree: int
    ring_degree: int
    ranks: list[int]
    link_tier: str
    sequences: list[int]
    tokens: int
    tokens_per_device: float
    time_s: float


class MicroBatch(_Model):
    """Groups that run at the same time on disjoint GPUs; lasts as long as the slowest."""

    time_s: float
    tokens: int
    groups: list[SeqGroup]


class SolverFacts(_Model):
    """How the plan was found: status is "optimal" only when the plan meets the lower bound."""

    status: str
    method: str
    objective_s: float
    lower_bound_s: float
    simple_lower_bound_s: float
    gap: float | None
    time_s: float
    time_limit_s: float | None
    min_micro_batches: int
    micro_batch_counts_tried: list[dict[str, Any]]
    milp: dict[str, Any] | None = None


class StepPlan(_Model):
    """The plan of one training step."""

    cost_preset: str
    num_gpus: int
    gpus_per_node: int
    num_sequences: int
    total_tokens: int
    longest_sequence: int
    step_time_s: float
    lower_bound_s: float
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    micro_batches: list[MicroBatch]
    solver: SolverFacts
    cost_model: dict[str, Any]


# ==============================================================================================
# placement on ranks


def place_groups(sizes: Sequence[int], num_gpus: int, gpus_per_node: int) -> list[list[int]]:
    """Concrete ranks for the groups of one micro-batch (returned in input order).

    Groups of at least a node take whole consecutive nodes; smaller groups go best-fit into one
    node (so they stay on the fast tier); a group that fits no single node's free ranks takes
    the lowest free ranks (it then crosses nodes, and the caller re-prices it).
    """
    gpn = max(1, gpus_per_node)
    n_nodes = -(-num_gpus // gpn)
    free_in_node = [min(gpn, num_gpus - i * gpn) for i in range(n_nodes)]
    next_in_node = [i * gpn for i in range(n_nodes)]
    out: list[list[int] | None] = [None] * len(sizes)
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    taken = np.zeros(num_gpus, dtype=bool)
    for i in order:
        d = int(sizes[i])
        ranks: list[int] = []
        if d >= gpn and d % gpn == 0:
            need = d // gpn
            whole = [n for n in range(n_nodes) if free_in_node[n] == gpn]
            # consecutive whole nodes when possible
            for start in range(len(whole) - need + 1):
                run = whole[start:start + need]
                if run[-1] - run[0] == need - 1:
                    break
            else:
                run = whole[:need] if len(whole) >= need else []
            if len(run) == need:
                for n in run:
                    ranks.extend(range(next_in_node[n], next_in_node[n] + gpn))
                    next_in_node[n] += gpn
                    free_in_node[n] = 0
        elif d < gpn:
            fits = [n for n in range(n_nodes) if free_in_node[n] >= d]
            if fits:
                n = min(fits, key=lambda n: (free_in_node[n], n))
                ranks = list(range(next_in_node[n], next_in_node[n] + d))
                next_in_node[n] += d
                free_in_node[n] -= d
        if not ranks:  # spread over the lowest free ranks
            ranks = [int(r) for r in np.flatnonzero(~taken)[:d]]
            for r in ranks:
                n = r // gpn
                free_in_node[n] -= 1
                next_in_node[n] = max(next_in_node[n], r + 1)
        taken[ranks] = True
        out[i] = ranks
    return [r or [] for r in out]


def _tier(ranks: Sequence[int], gpus_per_node: int) -> str:
    if len(ranks) <= 1:
        return "local"
    nodes = {r // gpus_per_node for r in ranks}
    return "intra-node" if len(nodes) == 1 else "inter-node"


# ==============================================================================================
# inputs


def check_token_count(value: Any, *, file: str | None = None, field: str | None = None,
                      what: str = "length") -> int:
    """``value`` as a sequence length in tokens: an integer (or a float with no fraction) from 1
    to :data:`planner.workload.MAX_TOKENS`, else one :class:`InputError` (checked before any
    numpy conversion, so 1e300 or 10**30 never overflows an int64)."""
    expected = f"an integer from 1 to {MAX_TOKENS:,} (tokens)"
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, np.integer, float, np.floating)) or \
            (isinstance(value, (float, np.floating)) and not float(value).is_integer()):
        shown = repr(value) if not isinstance(value, (float, np.floating)) else f"{float(value):g}"
        raise InputError(f"{what} is {shown}, not an integer", file=file, field=field,
                         expected=expected)
    v = int(value)
    if not 1 <= v <= MAX_TOKENS:
        shown = f"{v:,}" if abs(v) < 10 ** 15 else f"{float(value):.3g}"
        raise InputError(f"{what} is {shown}" + (", above the maximum" if v > 0 else ""),
                         file=file, field=field, expected=expected)
    return v


def check_lengths(lengths: Any, *, file: str | None = None,
                  max_count: int | None = None) -> np.ndarray:
    """Validate sequence lengths: a non-empty list of integers from 1 to
    :data:`planner.workload.MAX_TOKENS` (tokens), at most ``max_count`` of them."""
    if lengths is None:
        raise InputError("no sequence lengths given", file=file, field="lengths",
                         expected="a non-empty list of positive integers")
    arr = list(lengths)
    if not arr:
        raise InputError("the length list is empty", file=file, field="lengths",
                         expected="at least one positive integer")
    _check_count(len(arr), max_count, file)
    out = [check_token_count(v, file=file, field=f"lengths[{i}]", what=f"length #{i + 1}")
           for i, v in enumerate(arr)]
    return np.asarray(out, dtype=np.int64)


def _check_count(n: int, max_count: int | None, file: str | None) -> None:
    if max_count is not None and n > max_count:
        why = ("sequences in one step's batch" if max_count == MAX_BATCH_SEQUENCES
               else "documents in a length distribution")
        raise InputError(f"more than {max_count:,} lengths", file=file, field="lengths",
                         expected=f"at most {max_count:,} {why}")


def read_lengths(path: str | Path, *, max_count: int | None = None) -> np.ndarray:
    """Read a length file: integers separated by whitespace or commas (``#`` comments), or a
    JSON list, or a JSON object with a ``lengths`` list; each from 1 to
    :data:`planner.workload.MAX_TOKENS`, at most ``max_count`` of them."""
    p = Path(path)
    if not p.exists():
        raise InputError("length file not found", file=str(p))
    if p.is_dir():
        raise InputError("length file is a folder", file=str(p))
    text = p.read_text(encoding="utf-8", errors="replace")
    stripped = text.strip()
    if stripped.startswith("[") or stripped.startswith("{"):
        import json
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg} at line {exc.lineno}", file=str(p),
                             expected="a JSON list of integers") from None
        if isinstance(data, dict):
            data = data.get("lengths")
        if not isinstance(data, list):
            raise InputError("JSON has no list of lengths", file=str(p), field="lengths",
                             expected="a JSON list of integers or {\"lengths\": [...]}")
        return check_lengths(data, file=str(p), max_count=max_count)
    values: list[int] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0]
        for tok in line.replace(",", " ").split():
            try:
                v = int(tok)
            except ValueError:
                raise InputError(f"line {lineno}: '{tok}' is not an integer", file=str(p),
                                 field="lengths",
                                 expected="one positive integer per entry (tokens)") from None
            if v <= 0:
                raise InputError(f"line {lineno}: length {v} is not positive", file=str(p),
                                 field="lengths", expected="positive integers (tokens)")
            if v > MAX_TOKENS:
                raise InputError(f"line {lineno}: length {tok if len(tok) <= 24 else tok[:21] + '...'} "
                                 "is above the maximum", file=str(p), field="lengths",
                                 expected=f"an integer from 1 to {MAX_TOKENS:,} (tokens)")
            values.append(v)
        _check_count(len(values), max_count, str(p))
    if not values:
        raise InputError("the length file holds no lengths", file=str(p),
                         expected="at least one positive integer")
    return np.asarray(values, dtype=np.int64)


def check_memory_gb(value: Any, *, file: str | None = None, field: str = "--memory-gb") -> Any:
    """A per-GPU memory size in GB: a finite number in (0, :data:`MAX_MEMORY_GB`], or None (the
    preset's default); returned as given."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 < value <= MAX_MEMORY_GB:  # also NaN
        raise InputError(f"per-GPU memory {value!r} GB", file=file, field=field,
                         expected=f"a number of GB above 0 and at most {MAX_MEMORY_GB:,.0f}")
    return value


def check_gpu_count(value: Any, *, file: str | None = None, field: str = "--gpus") -> int:
    """A GPU count (``gpus`` or ``gpus_per_node``): an integer from 1 to :data:`MAX_GPUS`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or \
            not 1 <= value <= MAX_GPUS:
        raise InputError(f"{field.lstrip('-').replace('-', '_')} is {value!r}", file=file,
                         field=field, expected=f"an integer from 1 to {MAX_GPUS:,} (the largest "
                         "cluster one step is planned over: plan a larger job per data-parallel "
                         "replica)")
    return int(value)


def check_time_limit(value: Any, *, field: str = "--time-limit") -> float:
    """A planning budget: a finite number of seconds in (0, :data:`MAX_TIME_LIMIT_S`]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or \
            not 0 < value <= MAX_TIME_LIMIT_S:
        raise InputError(f"time limit {value!r}", field=field,
                         expected=f"a number of seconds above 0 and at most {MAX_TIME_LIMIT_S:,.0f}")
    return float(value)


def check_plan_options(*, batch_size: Any, num_batches: Any, seed: Any,
                       max_length: Any = None, time_limit_s: Any = 0.8) -> None:
    """The offline plan's scalar options, before any file is read or batch sampled: batch size
    1..:data:`MAX_BATCH_SEQUENCES`, batches 1..:data:`MAX_BATCHES`, a seed >= 0, a length cap
    1..MAX_TOKENS (None: the longest sequence the cluster holds), a valid time limit."""
    for value, field, top, what in ((batch_size, "--batch-size", MAX_BATCH_SEQUENCES,
                                     "sequences per step"),
                                    (num_batches, "--batches", MAX_BATCHES, "sampled batches")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= top:
            raise InputError(f"{field} {value!r}", field=field,
                             expected=f"an integer from 1 to {top:,} ({what})")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed {seed!r}", field="--seed", expected="an integer >= 0")
    if max_length is not None:
        check_token_count(max_length, field="--max-length", what="length cap")
    check_time_limit(time_limit_s)


class ClusterFile(BaseModel):
    """A ``--cluster`` file (YAML / JSON): ``gpus`` (or ``num_gpus``), ``gpus_per_node``, ``gpu``
    (or ``accelerator``) and ``memory_gb``, every one optional (flags fill or override them)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    gpus: Optional[StrictInt] = Field(None, ge=1, le=MAX_GPUS)
    num_gpus: Optional[StrictInt] = Field(None, ge=1, le=MAX_GPUS)
    gpus_per_node: Optional[StrictInt] = Field(None, ge=1, le=MAX_GPUS)
    gpu: Optional[StrictStr] = None
    accelerator: Optional[StrictStr] = None
    #: kept as written (an int stays an int): plans record it among their inputs
    memory_gb: Union[StrictInt, float, None] = None

    @field_validator("memory_gb", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        if isinstance(v, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                raise ValueError("not a number") from None
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not 0 < v <= MAX_MEMORY_GB):
            raise ValueError(f"not a memory size in GB above 0 and at most {MAX_MEMORY_GB:,.0f}")
        return v


_CLUSTER_EXPECTED = {
    "gpus": f"an integer from 1 to {MAX_GPUS:,} (the largest cluster one step is planned over)",
    "num_gpus": f"an integer from 1 to {MAX_GPUS:,} (the largest cluster one step is planned over)",
    "gpus_per_node": f"an integer from 1 to {MAX_GPUS:,}",
    "gpu": "an accelerator name from the catalog, e.g. h100",
    "accelerator": "an accelerator name from the catalog, e.g. h100",
    "memory_gb": f"a number of GB above 0 and at most {MAX_MEMORY_GB:,.0f}",
}


def load_cluster(path: str | Path) -> ClusterFile:
    """Read and validate a ``--cluster`` file; one :class:`InputError` naming the file and the
    field otherwise."""
    from planner.plan import read_structured
    data = read_structured(path, what="cluster file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError("cluster file is not a mapping", file=str(path),
                         expected="gpus, gpus_per_node[, gpu, memory_gb]")
    try:
        spec = ClusterFile.model_validate(data)
    except ValidationError as exc:
        loc = exc.errors()[0].get("loc") or ("",)
        expected = _CLUSTER_EXPECTED.get(str(loc[0]), "keys " + ", ".join(_CLUSTER_EXPECTED))
        raise from_validation_error(exc, file=str(path), expected=expected) from None
    for a, b in (("gpus", "num_gpus"), ("gpu", "accelerator")):
        if getattr(spec, a) is not None and getattr(spec, b) is not None:
            raise InputError(f"both '{a}' and '{b}' are set", file=str(path), field=b,
                             expected=f"one of '{a}' or '{b}' (the same setting)")
    return spec


def _check_fits(lengths: np.ndarray, preset: CostPreset, file: str | None = None) -> None:
    longest_ok = preset.longest_fitting()
    too_long = np.flatnonzero(lengths > longest_ok)
    if too_long.size:
        i = int(too_long[np.argmax(lengths[too_long])])
        raise InfeasibleError(
            f"sequence #{i} has {int(lengths[i])} tokens, more than the whole cluster can hold",
            binding="memory", file=file, field=f"lengths[{i}]",
            expected=f"at most {longest_ok} tokens per sequence on this cluster and memory")


# ==============================================================================================
# the per-step planner


def _make_preset(cost_preset: str | CostPreset, *, num_gpus: int, gpus_per_node: int,
                 model: Any, sources: dict[str, tuple[str, str]] | None = None,
                 **kw: Any) -> CostPreset:
    """The cost preset for these options.  ``sources``: where options came from when a file gave
    them, ``{"--memory-gb": (cluster file, "memory_gb"), ...}``: an error about such an option
    names that file and field rather than the flag."""
    if isinstance(cost_preset, CostPreset):
        return cost_preset
    try:
        return _build_preset(cost_preset, num_gpus=num_gpus, gpus_per_node=gpus_per_node,
                             model=model, **kw)
    except InputError as exc:
        src = (sources or {}).get(exc.field or "") if exc.file is None else None
        if src is None:
            raise
        named = dict(file=src[0], field=src[1], expected=exc.expected, hint=exc.hint)
        if isinstance(exc, InfeasibleError):
            raise InfeasibleError(exc.message, binding=exc.binding, **named) from None
        raise InputError(exc.message, **named) from None


def _build_preset(cost_preset: str, *, num_gpus: int, gpus_per_node: int, model: Any,
                  **kw: Any) -> CostPreset:
    if cost_preset == "flexsp":
        return FlexSPPreset(kw.get("model_size", "7b"), num_gpus, kw.get("memory_gb", 30.0),
                            kw.get("seq_limit_k", 32), allow_single=kw.get("allow_single", False),
                            gpus_per_node=gpus_per_node)
    if cost_preset == "own":
        return OwnPreset(model, num_gpus=num_gpus, gpus_per_node=gpus_per_node,
                         accelerator=kw.get("accelerator", "h100"),
                         group_types=kw.get("group_types", ("ulysses", "ring", "hybrid")),
                         memory_gb=kw.get("memory_gb"), zero_stage=kw.get("zero_stage", 3),
                         recompute=kw.get("recompute", "selective"),
                         replicate_kv_heads=kw.get("replicate_kv_heads", True),
                         sizes=kw.get("sizes"))
    raise InputError(f"unknown cost preset '{cost_preset}'", field="--cost-preset",
                     expected=" | ".join(COST_PRESETS))


def _cluster_args(cluster: Any, gpus_per_node: int | None) -> tuple[int, int]:
    """(num_gpus, gpus_per_node) from an int, a (N, M) pair, a dict or a hardware Cluster."""
    if cluster is None:
        raise InputError("no cluster given", field="--gpus", expected="a GPU count")
    if isinstance(cluster, (int, np.integer)):
        n, m = int(cluster), gpus_per_node or 8
    elif isinstance(cluster, (tuple, list)) and len(cluster) == 2:
        n, m = int(cluster[0]), int(cluster[1])
    elif isinstance(cluster, dict):
        n = int(cluster.get("gpus") or cluster.get("num_gpus") or 0)
        m = int(cluster.get("gpus_per_node") or gpus_per_node or 8)
    elif hasattr(cluster, "num_gpus") and hasattr(cluster, "gpus_per_node"):
        n, m = int(cluster.num_gpus), int(cluster.gpus_per_node)
    else:
        raise InputError(f"cannot read a cluster from {type(cluster).__name__}", field="cluster",
                         expected="a GPU count, (gpus, gpus_per_node) or a Cluster")
    return check_gpu_count(n), check_gpu_count(m, field="--gpus-per-node")


def plan_step(lengths: Sequence[int], cluster: Any = 64, model: Any = None, *,
              cost_preset: str | CostPreset = "own", gpus_per_node: int | None = None,
              time_limit_s: float = 0.8, method: str = "auto",
              micro_batches: int | None = None, extra_micro_batches: int = 1,
              lengths_file: str | None = None,
              sources: dict[str, tuple[str, str]] | None = None, **preset_kw: Any) -> StepPlan:
    """Plan one training step: micro-batches, groups (size, type, ranks) and their sequences.

    Args:
        lengths: sequence lengths of the global batch (tokens).
        cluster: GPU count, ``(gpus, gpus_per_node)``, a dict or a ``hardware`` Cluster.
        model: a ModelSpec or model name (own preset); ignored by the FlexSP preset, which takes
            ``model_size`` ("7b" / "13b" / "30b") among ``preset_kw``.
        cost_preset: "own", "flexsp" or a :class:`CostPreset` instance.
        gpus_per_node: GPUs per node when ``cluster`` is a bare count (default 8).
        time_limit_s: planning budget in seconds (greedy + MILP + local search).  Plans are
            reproducible, so the search's fixed phases always run: it stops starting new ones
            past the budget, a MILP phase may use up to one more budget, and pricing the batch
            (before the search) and its bounds are extra: a few seconds at the largest inputs
            (:data:`MAX_BATCH_SEQUENCES` sequences on :data:`MAX_GPUS` GPUs).
        method: "auto", "milp" or "heuristic" (fast path, no MILP).
        micro_batches: fix the number of micro-batches (default: from memory, plus
            ``extra_micro_batches`` more tried).
        lengths_file: the file the lengths came from (named in errors).
        sources: options a file gave, ``{"--memory-gb": (file, "memory_gb")}`` (named in
            errors about them instead of the flag).
        preset_kw: preset options (FlexSP: model_size, memory_gb, seq_limit_k, allow_single;
            own: accelerator, group_types, memory_gb, zero_stage, recompute, sizes).

    Raises:
        InputError: bad lengths, cluster or preset options; InfeasibleError (an InputError)
        when a sequence cannot fit the cluster (the message gives the longest that fits).
    """
    arr = check_lengths(lengths, file=lengths_file, max_count=MAX_BATCH_SEQUENCES)
    check_time_limit(time_limit_s)
    if micro_batches is not None and (isinstance(micro_batches, bool) or
                                      not isinstance(micro_batches, (int, np.integer)) or
                                      not 1 <= micro_batches <= len(arr)):
        raise InputError(f"{micro_batches} micro-batches for {len(arr)} sequences",
                         field="--micro-batches",
                         expected=f"a positive integer, at most {len(arr)} (every micro-batch "
                                  "trains at least one sequence)")
    n_gpus, gpn = _cluster_args(cluster, gpus_per_node)
    node = getattr(cluster, "node", None)
    if node is not None and "accelerator" not in preset_kw:  # a hardware Cluster names its GPU
        preset_kw["accelerator"] = node.accelerator
    preset = _make_preset(cost_preset, num_gpus=n_gpus, gpus_per_node=gpn, model=model,
                          sources=sources, **preset_kw)
    _check_fits(arr, preset, lengths_file)
    problem = preset.problem(arr)
    if micro_batches is not None:
        need = min_rounds(problem)
        if int(micro_batches) < need:
            raise InfeasibleError(
                f"{micro_batches} micro-batch(es) cannot hold the batch's {int(arr.sum())} tokens",
                binding="memory", field="--micro-batches", expected=f"at least {need}")
    try:
        sol = solve_partition(problem, rounds=micro_batches, extra_rounds=extra_micro_batches,
                              time_limit_s=time_limit_s, method=method)
    except PartitionInfeasible as exc:
        raise InfeasibleError(_user_words(str(exc)), binding=exc.binding, file=lengths_file,
                              expected="fewer or shorter sequences, more GPUs or more memory") from None
    return _step_plan(arr, preset, problem, sol)


def _user_words(message: str) -> str:
    """The generic solver's words (items, kinds, rounds, devices) in this planner's terms."""
    for a, b in (("round counts", "micro-batch counts"), ("rounds", "micro-batches"),
                 ("group kinds", "allowed group sizes"), ("items", "sequences"),
                 ("item", "sequence"), ("devices", "GPUs")):
        message = message.replace(a, b)
    return message


def _step_plan(arr: np.ndarray, preset: CostPreset, problem: PartitionProblem, sol) -> StepPlan:
    mbs: list[MicroBatch] = []
    gpn = preset.gpus_per_node
    for groups in sol.rounds:
        kinds = [preset.kinds[g.kind] for g in groups]
        ranks = place_groups([k.size for k in kinds], preset.num_gpus, gpn)
        out_groups = []
        for g, kind, rk in zip(groups, kinds, ranks):
            tier = _tier(rk, gpn)
            t = g.time
            if tier == "inter-node" and kind.size <= gpn:  # placement forced a node crossing
                t = float(problem.fixed[g.kind] +
                          preset.crossing_cost_s(arr[g.items], kind).sum())
            tokens = int(arr[g.items].sum())
            out_groups.append(SeqGroup(size=kind.size, type=kind.type,
                                       ulysses_degree=kind.ulysses_degree,
                                       ring_degree=kind.ring_degree, ranks=rk, link_tier=tier,
                                       sequences=[int(i) for i in g.items], tokens=tokens,
                                       tokens_per_device=tokens / kind.size, time_s=float(t)))
        mbs.append(MicroBatch(time_s=max(g.time_s for g in out_groups),
                              tokens=sum(g.tokens for g in out_groups), groups=out_groups))
    step = float(sum(mb.time_s for mb in mbs))
    total = int(arr.sum())
    res = sol.result
    facts = SolverFacts(status=res.status, method=sol.method, objective_s=step,
                        lower_bound_s=float(sol.lower_bound),
                        simple_lower_bound_s=float(sol.simple_lower_bound),
                        gap=None if res.gap is None else float((step - sol.lower_bound) / step),
                        time_s=float(res.time_s), time_limit_s=res.time_limit_s,
                        min_micro_batches=min_rounds(problem),
                        micro_batch_counts_tried=sol.tried, milp=sol.milp)
    return StepPlan(cost_preset=preset.name, num_gpus=preset.num_gpus, gpus_per_node=gpn,
                    num_sequences=len(arr), total_tokens=total, longest_sequence=int(arr.max()),
                    step_time_s=step, lower_bound_s=float(sol.lower_bound),
                    tokens_per_s=total / step if step > 0 else 0.0,
                    tokens_per_s_per_gpu=total / step / preset.num_gpus if step > 0 else 0.0,
                    micro_batches=mbs, solver=facts, cost_model=preset.describe())


def step_lower_bound_s(lengths: Sequence[int], preset: CostPreset, *, refined: bool = False) -> float:
    """Lower bound on one step's time (seconds).  ``refined=False``: the issue's bound, total
    device-work at each sequence's cheapest allowed group spread over all GPUs, plus the
    per-group constant once per micro-batch for the memory-forced micro-batch count;
    ``refined=True``: also every sequence must finish within the slowest micro-batch (see
    :func:`solvers.partition.lower_bound`)."""
    arr = check_lengths(lengths)
    return lower_bound(preset.problem(arr), refined=refined)


# ==============================================================================================
# homogeneous baselines (FlexSP's adaptive / static rules, COSTMODEL.md section 5)


def homogeneous_plan(lengths: Sequence[int], preset: CostPreset, kind_index: int, *,
                     fill: float = 0.9, level: bool = True) -> dict[str, Any] | None:
    """Homogeneous groups of one kind: Best-Fit-Decreasing into bins of capacity
    ``max(fill * capacity, longest)``, bins cut in order into micro-batches of N/size groups,
    empty groups of the last micro-batch given one sequence each from the latest earlier group
    holding two or more.  Returns None when the plan breaks the memory rule.

    ``level`` additionally levels the last micro-batch toward its mean token count when empty
    groups had to be filled and the groups span nodes (FlexSP's baseline does this roughly; our
    levelling is not byte-for-byte FlexSP's, so these numbers may differ slightly from its).
    """
    arr = np.asarray(lengths, dtype=np.int64)
    kind = preset.kinds[kind_index]
    cap_tokens = float(preset.capacity_tokens()[kind_index])
    per_mb = preset.num_gpus // kind.size
    if per_mb < 1:
        return None
    bin_cap = max(fill * cap_tokens, float(arr.max()))
    order = sorted(range(len(arr)), key=lambda i: (-int(arr[i]), i))
    bins: list[list[int]] = []
    room: list[float] = []
    for i in order:
        s = int(arr[i])
        best, best_room = -1, math.inf
        for b, r in enumerate(room):
            if s <= r and r - s < best_room:
                best, best_room = b, r - s
        if best < 0:
            bins.append([i])
            room.append(bin_cap - s)
        else:
            bins[best].append(i)
            room[best] -= s
    mbs = [bins[j:j + per_mb] for j in range(0, len(bins), per_mb)]
    last = mbs[-1]
    filled = False
    while len(last) < per_mb:
        donor = None
        for grp in reversed([g for mb in mbs for g in mb]):
            if len(grp) >= 2:
                donor = grp
                break
        if donor is None:
            return None
        take = min(donor)
        donor.remove(take)
        last.append([take])
        filled = True
    if level and filled and kind.size >= 16:
        tot = [int(arr[g].sum()) for g in last]
        mean = sum(tot) / len(tot)
        for _ in range(4 * len(arr)):
            hi = int(np.argmax(tot))
            lo = int(np.argmin(tot))
            cand = sorted(last[hi], key=lambda i: int(arr[i]))
            moved = False
            for i in cand:
                if len(last[hi]) > 1 and tot[lo] + arr[i] <= mean + 1e-9:
                    last[hi].remove(i)
                    last[lo].append(i)
                    tot[hi] -= int(arr[i])
                    tot[lo] += int(arr[i])
                    moved = True
                    break
            if not moved:
                break
    rounds = [[(kind_index, g) for g in mb] for mb in mbs]
    ev = evaluate(preset.problem(arr), rounds)
    if any("capacity" in v or "may not use" in v for v in ev["violations"]):
        return None
    return {"kind": kind.label, "size": kind.size, "type": kind.type,
            "step_time_s": ev["objective"], "num_micro_batches": len(mbs), "rounds": rounds}


def static_plan(lengths: Sequence[int], preset: CostPreset, kind_index: int, *,
                time_limit_s: float = 0.3, problem: PartitionProblem | None = None
                ) -> dict[str, Any] | None:
    """A static setting: every group of one kind (e.g. Ulysses 8 everywhere), the sequences
    balanced over as many such groups as fit the cluster by the same solver (greedy + local
    search), devices that cannot form a whole group left idle.  None when a sequence does not
    fit the kind.  ``problem``: ``preset.problem(lengths)`` when the caller already has it (it
    prices every kind: built once per batch, not once per strategy)."""
    arr = np.asarray(lengths, dtype=np.int64)
    kind = preset.kinds[kind_index]
    if kind.size > preset.num_gpus:
        return None
    full = preset.problem(arr) if problem is None else problem
    if not full.allowed()[:, kind_index].all():
        return None
    one = PartitionProblem(cost=full.cost[:, [kind_index]], weight=full.weight,
                           devices=full.devices[[kind_index]], capacity=full.capacity[[kind_index]],
                           fixed=full.fixed[[kind_index]], num_devices=full.num_devices,
                           fill_devices=False, nonempty_groups=False)
    try:
        sol = solve_partition(one, time_limit_s=time_limit_s, method="heuristic")
    except PartitionInfeasible:
        return None
    per_dev = max((float(arr[g.items].sum()) / kind.size for rnd in sol.rounds for g in rnd),
                  default=0.0)
    return {"kind": kind.label, "step_time_s": sol.objective, "num_micro_batches": len(sol.rounds),
            "max_tokens_per_device": per_dev}


def homogeneous_baselines(lengths: Sequence[int], preset: CostPreset, *,
                          exclude_sizes: Iterable[int] = ()) -> dict[str, Any]:
    """Every feasible homogeneous kind's step time and the best one ("adaptive")."""
    excl = set(exclude_sizes)
    table: dict[str, float] = {}
    best = None
    for k, kind in enumerate(preset.kinds):
        if kind.size in excl:
            continue
        plan = homogeneous_plan(lengths, preset, k)
        if plan is None:
            continue
        table[kind.label] = plan["step_time_s"]
        if best is None or plan["step_time_s"] < best["step_time_s"] - 1e-12:
            best = plan
    return {"best": None if best is None else {k: v for k, v in best.items() if k != "rounds"},
            "per_kind_step_time_s": table}


# ==============================================================================================
# sampling batches (FlexSP's rule and a seeded sampler for offline planning)


def flexsp_batches(raw_lengths: Sequence[int], batch_size: int, seq_limit_k: int,
                   iterations: Iterable[int], pad_multiple: int = 128) -> list[np.ndarray]:
    """FlexSP's batches (COSTMODEL.md section 6): pad to ``pad_multiple``, drop documents whose
    padded length exceeds ``seq_limit_k * 1000 - 128``, cut in file order."""
    raw = np.asarray(raw_lengths, dtype=np.int64)
    padded = -(-raw // pad_multiple) * pad_multiple
    kept = padded[padded <= seq_limit_k * 1000 - 128]
    return [kept[i * batch_size:(i + 1) * batch_size] for i in iterations]


def sample_batches(distribution: np.ndarray, batch_size: int, num_batches: int, *, seed: int = 0,
                   max_length: int | None = None, weights: np.ndarray | None = None
                   ) -> list[np.ndarray]:
    """``num_batches`` batches of ``batch_size`` lengths drawn with a fixed seed from a list of
    lengths (or histogram bin values with ``weights``), optionally capped at ``max_length``
    (longer documents are truncated, as a packing dataloader would split them)."""
    rng = np.random.default_rng(seed)
    dist = np.asarray(distribution, dtype=np.int64)
    p = None if weights is None else np.asarray(weights, dtype=float) / float(np.sum(weights))
    out = []
    for _ in range(num_batches):
        b = rng.choice(dist, size=batch_size, replace=True, p=p)
        if max_length:
            b = np.minimum(b, max_length)
        out.append(b.astype(np.int64))
    return out


# ==============================================================================================
# our own cost models (costmodels/training.py)


def ulysses_degree_ok(model: Any, degree: int, *, replicate_kv_heads: bool = True) -> bool:
    """Ulysses splits heads: the degree must divide the head count, and divide the KV-head count
    unless KV heads are replicated (then the degree must be a multiple of the KV heads)."""
    d = int(degree)
    if d <= 1:
        return True
    heads = model.num_attention_heads
    kv = model.num_attention_heads if model.mla else model.num_kv_heads
    if heads % d:
        return False
    if kv % d == 0:
        return True
    return replicate_kv_heads and d % kv == 0


def _candidate_sizes(num_gpus: int, gpus_per_node: int) -> list[int]:
    """2..gpus_per_node, then whole multiples of a node up to the cluster."""
    sizes = list(range(2, min(gpus_per_node, num_gpus) + 1))
    sizes += list(range(2 * gpus_per_node, num_gpus + 1, gpus_per_node))
    return sorted(set(sizes))


class OwnPreset(CostPreset):
    """Our cost model: :mod:`costmodels.training` for a ModelSpec on a catalog accelerator.

    Args:
        model: a ModelSpec or a model name / config path.
        num_gpus, gpus_per_node: the cluster.
        accelerator: catalog name (e.g. "h100"); the node type's scale-out NIC is used across
            nodes.
        group_types: kinds allowed among "ulysses", "ring", "hybrid" (groups of one, plain data
            parallelism, are always allowed unless ``allow_single`` is False).
        memory_gb: per-device memory to plan for (default: the accelerator's).
        zero_stage: 0-3; states sharded over all GPUs (every GPU is a data-parallel replica).
        recompute: "none", "selective" or "full".
        replicate_kv_heads: allow Ulysses degrees above the KV-head count by replicating them.
        sizes: restrict group sizes (default: 2..gpus_per_node and multiples of a node).
    """

    name = "own"

    def __init__(self, model: Any, *, num_gpus: int, gpus_per_node: int = 8,
                 accelerator: str = "h100", group_types: Sequence[str] = GROUP_TYPES,
                 memory_gb: float | None = None, zero_stage: int = 3, recompute: str = "selective",
                 replicate_kv_heads: bool = True, sizes: Sequence[int] | None = None,
                 allow_single: bool = True, usable_fraction: float = 0.9,
                 workspace_gb: float = 2.0, zero3_exposed_fraction: float = 0.3) -> None:
        from costmodels import training as tr
        from costmodels.model import load_model
        from hardware.catalog import default_node_for, get_accelerator
        from hardware.topology import make_cluster

        if model is None:
            raise InputError("the own cost preset needs a model", field="--model",
                             expected="a model name (e.g. llama-2-7b) or a config.json path")
        self.spec = load_model(model)
        self.acc = get_accelerator(accelerator, field="--gpu")
        node = default_node_for(self.acc).model_copy(update={"gpus_per_node": int(gpus_per_node)})
        self.num_gpus = int(num_gpus)
        self.gpus_per_node = int(gpus_per_node)
        self.cluster = make_cluster(node, -(-self.num_gpus // self.gpus_per_node), self.acc.scale_up)
        if recompute not in tr.RECOMPUTE_MODES:
            raise InputError(f"unknown recompute mode '{recompute}'", field="--recompute",
                             expected=" | ".join(tr.RECOMPUTE_MODES))
        if zero_stage not in tr.ZERO_STAGES:
            raise InputError(f"unknown ZeRO stage {zero_stage}", field="--zero-stage",
                             expected="0, 1, 2 or 3")
        types = [t.lower() for t in group_types]
        bad = [t for t in types if t not in GROUP_TYPES]
        if bad or not types:
            raise InputError(f"unknown group type '{bad[0] if bad else ''}'", field="--group-types",
                             expected=" | ".join(GROUP_TYPES))
        self.group_types = tuple(types)
        self.recompute = recompute
        self.zero_stage = int(zero_stage)
        self.replicate_kv_heads = replicate_kv_heads
        check_memory_gb(memory_gb)
        mem = (memory_gb * 1e9) if memory_gb else self.acc.memory_bytes
        self.memory_bytes = float(mem)
        self.states_bytes = tr.model_state_bytes(self.spec, self.zero_stage, self.num_gpus)
        self.budget_bytes = mem * usable_fraction - workspace_gb * 2 ** 30 - self.states_bytes
        if self.budget_bytes <= 0:
            raise InfeasibleError(
                f"{self.spec.name} model states ({self.states_bytes / 2**30:.1f} GiB per GPU with "
                f"ZeRO-{self.zero_stage}) leave no room for activations", binding="memory",
                field="--memory-gb", expected="more memory per GPU, more GPUs or a higher ZeRO stage")
        self.act_bytes_per_token = tr.activation_bytes_per_token(self.spec, recompute)
        cand = sorted(set(int(x) for x in sizes)) if sizes else _candidate_sizes(self.num_gpus,
                                                                                 self.gpus_per_node)
        if any(x < 1 or x > self.num_gpus for x in cand):
            raise InputError(f"group sizes {cand} outside 1..{self.num_gpus}", field="--sizes",
                             expected=f"sizes between 1 and {self.num_gpus}")
        kinds: list[GroupKind] = []
        if allow_single or 1 in cand:
            kinds.append(GroupKind("single", 1, 1, 1))
        asked_ulysses = [d for d in cand if d > 1]
        if "ulysses" in types:
            # Ulysses degrees: the candidate sizes plus every divisor of the head count (e.g. 5,
            # 10, 20 for 40 heads) unless sizes were given explicitly
            heads = self.spec.num_attention_heads
            extra = [] if sizes else [d for d in range(2, min(heads, self.num_gpus) + 1) if heads % d == 0]
            pool = sorted(set(asked_ulysses) | set(extra))
            ok = [d for d in pool if ulysses_degree_ok(self.spec, d, replicate_kv_heads=replicate_kv_heads)]
            if not ok and types == ["ulysses"]:
                raise InputError(
                    f"{self.spec.name} has {self.spec.num_attention_heads} attention heads and "
                    f"{self.spec.num_kv_heads} KV heads: no Ulysses degree among {asked_ulysses} "
                    "divides them", field="--sizes",
                    expected="degrees that divide the head count"
                             + ("" if replicate_kv_heads else " and the KV-head count"),
                    hint="allow ring or hybrid groups (--group-types ulysses,ring) or pick other sizes")
            kinds += [GroupKind("ulysses", d, d, 1) for d in ok]
        if "ring" in types:
            kinds += [GroupKind("ring", d, 1, d) for d in asked_ulysses]
        if "hybrid" in types:
            gpn = self.gpus_per_node
            intra = [d for d in range(2, gpn + 1) if gpn % d == 0 and
                     ulysses_degree_ok(self.spec, d, replicate_kv_heads=replicate_kv_heads)]
            if "ulysses" not in types:  # hybrid alone still needs groups inside a node
                kinds += [GroupKind("ulysses", d, d, 1) for d in asked_ulysses
                          if d <= gpn and d in intra]
            if intra:
                u = max(intra)
                for d in asked_ulysses:
                    if d > gpn and d % u == 0:
                        kinds.append(GroupKind("hybrid", d, u, d // u))
        if not kinds or (len(kinds) == 1 and not self._fits_all_single()):
            raise InputError("no group kind is allowed", field="--group-types/--sizes",
                             expected="at least one allowed Ulysses, ring or hybrid size")
        self.kinds = kinds

    def _fits_all_single(self) -> bool:
        return True

    # -- pricing
    def _links(self, kind: GroupKind, crossing: bool = False):
        gpn = self.gpus_per_node
        tier = self.cluster.tier_for_group(kind.size if not crossing else gpn + 1)
        if kind.type == "hybrid":
            return self.cluster.tier_for_group(kind.ulysses_degree).link, tier.link
        if kind.type == "ulysses":
            return tier.link, None
        if kind.type == "ring":
            return None, tier.link
        return None, None

    def _group_spec(self, kind: GroupKind, crossing: bool = False):
        from costmodels.training import SPGroupSpec
        u_link, r_link = self._links(kind, crossing)
        return SPGroupSpec(kind.type, kind.ulysses_degree, kind.ring_degree, u_link, r_link)

    def _times(self, lengths: np.ndarray, k: int, crossing: bool = False) -> np.ndarray:
        from costmodels.training import sequence_time_s
        t = sequence_time_s(self.spec, self.acc, np.asarray(lengths, dtype=float),
                            self._group_spec(self.kinds[k], crossing), recompute=self.recompute)
        return np.asarray(t, dtype=float).reshape(-1)

    def cost_s(self, lengths: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(np.asarray(lengths, dtype=np.int64), return_inverse=True)
        table = np.stack([self._times(uniq, k) for k in range(len(self.kinds))], axis=1)
        return table[inv.reshape(-1)]

    def crossing_cost_s(self, lengths: np.ndarray, kind: GroupKind) -> np.ndarray:
        return self._times(np.asarray(lengths), self.kinds.index(kind), True)

    def capacity_tokens(self) -> np.ndarray:
        return np.array([math.floor(k.size * self.budget_bytes / self.act_bytes_per_token)
                         for k in self.kinds], dtype=float)

    def fixed_s(self) -> np.ndarray:
        from costmodels.training import group_fixed_time_s, zero3_microbatch_time_s
        zero = 0.0
        if self.zero_stage == 3 and self.num_gpus > 1:
            link = self.cluster.tier_for_group(self.num_gpus).link
            zero = zero3_microbatch_time_s(self.spec, self.num_gpus, link)
        return np.array([group_fixed_time_s(self.spec, self.acc, self._group_spec(k),
                                            recompute=self.recompute) + zero for k in self.kinds])

    def describe(self) -> dict[str, Any]:
        return {"preset": "own", "model": self.spec.name, "accelerator": self.acc.name,
                "num_gpus": self.num_gpus, "gpus_per_node": self.gpus_per_node,
                "recompute": self.recompute, "zero_stage": self.zero_stage,
                "memory_bytes": self.memory_bytes, "model_state_bytes": self.states_bytes,
                "activation_bytes_per_token": self.act_bytes_per_token,
                "device_token_capacity": int(self.budget_bytes // self.act_bytes_per_token),
                "group_types": list(self.group_types),
                "group_kinds": [k.label for k in self.kinds],
                "fidelity": "analytical",
                "source": "costmodels/training.py (analytical priors, uncalibrated)"}


# ==============================================================================================
# launch arguments for a recommended setting


def launch_args(kind: GroupKind, *, recompute: str = "selective", zero_stage: int = 3) -> dict[str, Any]:
    """Megatron-LM and DeepSpeed (Megatron-DeepSpeed) arguments for a static setting of
    ``kind`` (every group of that type and size).  ``None`` where the framework has no
    equivalent; ``notes`` says what to check."""
    mega: list[str] = []
    ds: list[str] | None = []
    notes: list[str] = []
    if kind.size > 1:
        mega += ["--context-parallel-size", str(kind.size)]
        if kind.type == "ulysses":
            mega += ["--cp-comm-type", "a2a"]
            ds += ["--ds-sequence-parallel-size", str(kind.size)]
        elif kind.type == "ring":
            mega += ["--cp-comm-type", "p2p"]
            ds = None
            notes.append("DeepSpeed-Ulysses has no ring attention: use Megatron-LM (p2p context "
                         "parallelism) or a ring-flash-attention integration")
        elif kind.type == "hybrid":
            mega += ["--cp-comm-type", "a2a+p2p", "--hierarchical-context-parallel-sizes",
                     str(kind.ulysses_degree), str(kind.ring_degree)]
            ds = None
            notes.append("hybrid Ulysses x ring needs Megatron-LM's hierarchical context "
                         "parallelism (a2a+p2p) or USP; DeepSpeed-Ulysses alone cannot express it")
    if recompute == "selective":
        mega += ["--recompute-granularity", "selective"]
    elif recompute == "full":
        mega += ["--recompute-granularity", "full", "--recompute-method", "uniform",
                 "--recompute-num-layers", "1"]
    if zero_stage >= 1:
        mega += ["--use-distributed-optimizer"]
        if zero_stage == 3:
            mega += ["--use-torch-fsdp2"]
            notes.append("Megatron-LM shards parameters (ZeRO-3) through FSDP2; the distributed "
                         "optimizer alone is ZeRO-1")
    if ds is not None:
        ds += ["--zero-stage", str(zero_stage)]
        if recompute != "none":
            ds += ["--checkpoint-activations"]
    return {"megatron_lm": mega, "deepspeed": ds, "notes": notes}


# ==============================================================================================
# offline planning over sampled batches


class StrategyResult(_Model):
    """One strategy scored over the sampled batches (means over batches that fit).

    ``memory_headroom``: the smallest, over batches, fraction of the per-device activation budget
    left free on the fullest device (the budget already excludes model states, a workspace and
    the usable-memory margin); 0 means some device is planned full.
    """

    name: str
    mode: str  # "static" | "adaptive"
    type: str
    size: int | None
    feasible_batches: int
    step_time_s: float | None
    step_time_s_max: float | None
    tokens_per_s_per_gpu: float | None
    memory_headroom: float | None
    micro_batches_mean: float | None
    per_batch_step_time_s: list[float | None]
    planning_time_s: float | None = None


class SequencePlan(_Model):
    """Offline capacity plan: static strategies against the adaptive per-step planner."""

    distribution: dict[str, Any]
    cluster: dict[str, Any]
    cost_model: dict[str, Any]
    batches: dict[str, Any]
    strategies: list[StrategyResult]
    best_static: str | None
    adaptive_gain_vs_best_static: float | None
    recommendation: dict[str, Any]


def distribution_stats(lengths: np.ndarray, weights: np.ndarray | None = None) -> dict[str, Any]:
    """Median, mean, percentiles and max of a length distribution (tokens)."""
    arr = np.asarray(lengths, dtype=float)
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        order = np.argsort(arr)
        cdf = np.cumsum(w[order]) / w.sum()
        pick = lambda q: float(arr[order][min(np.searchsorted(cdf, q), len(arr) - 1)])  # noqa: E731
        mean = float((arr * w).sum() / w.sum())
    else:
        pick = lambda q: float(np.quantile(arr, q))  # noqa: E731
        mean = float(arr.mean())
    return {"num_values": int(len(arr)), "mean": mean, "median": pick(0.5), "p90": pick(0.9),
            "p99": pick(0.99), "max": float(arr.max())}


def _headroom(plan_groups: Iterable[tuple[int, int]], capacity: np.ndarray, sizes: np.ndarray) -> float:
    """1 - (largest tokens per device) / (device token capacity), over a plan's groups."""
    worst = 0.0
    for k, tokens in plan_groups:
        worst = max(worst, tokens / capacity[k])
    return max(0.0, 1.0 - worst)


def plan_offline(distribution: Sequence[int], cluster: Any = 64, model: Any = None, *,
                 cost_preset: str = "own", gpus_per_node: int | None = None,
                 batch_size: int = 512, num_batches: int = 4, seed: int = 0,
                 max_length: int | None = None, weights: Sequence[float] | None = None,
                 time_limit_s: float = 0.8, source: str | None = None,
                 adaptive_sets: dict[str, tuple[str, ...]] | None = None,
                 sources: dict[str, tuple[str, str]] | None = None,
                 **preset_kw: Any) -> dict[str, Any]:
    """Offline plan: expected step time, tokens/s/GPU and memory headroom for every static
    strategy (one group kind for all sequences) and for the adaptive planner, over
    ``num_batches`` batches of ``batch_size`` sequences drawn with ``seed``.

    ``time_limit_s`` is the budget of each solve: every batch is solved once per static
    strategy (``min(time_limit_s, 0.3)`` each) and once per adaptive set (``time_limit_s``
    each, see :func:`plan_step`); a plan scheduling more than :data:`MAX_PLAN_SOLVE_S` in all is
    refused before sampling.  ``weights``: histogram weights of ``distribution`` (finite,
    >= 0, not all 0).  ``sources``: see :func:`plan_step`.

    Returns a ``kind: SequencePlan`` body (wrap with :func:`planner.plan.envelope`).
    """
    check_plan_options(batch_size=batch_size, num_batches=num_batches, seed=seed,
                       max_length=max_length, time_limit_s=time_limit_s)
    n_gpus, gpn = _cluster_args(cluster, gpus_per_node)
    dist = check_lengths(distribution, file=source, max_count=MAX_DISTRIBUTION_VALUES)
    w = None if weights is None else check_weights(weights, len(dist), file=source)
    full = _make_preset(cost_preset, num_gpus=n_gpus, gpus_per_node=gpn, model=model,
                        sources=sources, **preset_kw)
    if adaptive_sets is None:
        if isinstance(full, OwnPreset):
            adaptive_sets = {"adaptive-ulysses": ("ulysses",), "adaptive-ring": ("ring",),
                             "adaptive-hybrid": ("hybrid",), "adaptive": tuple(full.group_types)}
        else:
            adaptive_sets = {"adaptive": ()}
    _check_plan_budget(num_batches, len(full.kinds), len(adaptive_sets), time_limit_s)
    cap = max_length or full.longest_fitting()
    batches = sample_batches(dist, batch_size, num_batches, seed=seed, max_length=cap, weights=w)
    sizes = np.array([k.size for k in full.kinds])
    capacity = full.capacity_tokens() / sizes
    results: list[StrategyResult] = []
    # static strategies: one kind for everything (each batch's kinds priced once, not once per
    # strategy; one batch's prices held at a time)
    times_k: list[list[float | None]] = [[] for _ in full.kinds]
    heads_k: list[list[float]] = [[] for _ in full.kinds]
    mbs_k: list[list[int]] = [[] for _ in full.kinds]
    for b in batches:
        prob = full.problem(b)
        for k in range(len(full.kinds)):
            plan = static_plan(b, full, k, time_limit_s=min(time_limit_s, STATIC_TIME_LIMIT_S),
                               problem=prob)
            if plan is None:
                times_k[k].append(None)
                continue
            times_k[k].append(plan["step_time_s"])
            mbs_k[k].append(plan["num_micro_batches"])
            heads_k[k].append(max(0.0, 1.0 - plan["max_tokens_per_device"] / capacity[k]))
    for k, kind in enumerate(full.kinds):
        results.append(_strategy(f"static-{kind.label}", "static", kind.type, kind.size,
                                 times_k[k], batches, n_gpus, heads_k[k], mbs_k[k]))
    # adaptive planner, with each group-type set
    for name, types in adaptive_sets.items():
        if isinstance(full, OwnPreset):
            kw = dict(preset_kw, group_types=types)
            try:
                preset = _make_preset(cost_preset, num_gpus=n_gpus, gpus_per_node=gpn, model=model,
                                      sources=sources, **kw)
            except InputError:
                continue
        else:
            preset = full
        times, heads, mbs, ptimes = [], [], [], []
        cap_k = preset.capacity_tokens() / np.array([k.size for k in preset.kinds])
        for b in batches:
            try:
                sp = plan_step(b, (n_gpus, gpn), model, cost_preset=preset, time_limit_s=time_limit_s)
            except InputError:
                times.append(None)
                continue
            times.append(sp.step_time_s)
            ptimes.append(sp.solver.time_s)
            mbs.append(len(sp.micro_batches))
            kinds_idx = {(k.type, k.size): i for i, k in enumerate(preset.kinds)}
            heads.append(_headroom(((kinds_idx[(g.type, g.size)], g.tokens_per_device)
                                    for mb in sp.micro_batches for g in mb.groups),
                                   cap_k, np.ones(len(cap_k))))
        r = _strategy(name, "adaptive", "+".join(types) if types else "ulysses", None, times,
                      batches, n_gpus, heads, mbs)
        r.planning_time_s = float(np.mean(ptimes)) if ptimes else None
        results.append(r)
    statics = [r for r in results if r.mode == "static" and r.feasible_batches == len(batches)]
    best_static = min(statics, key=lambda r: r.step_time_s) if statics else None
    adaptive = [r for r in results if r.mode == "adaptive" and r.feasible_batches == len(batches)]
    # ties go to the widest set of group types (listed last)
    best_adaptive = min(reversed(adaptive), key=lambda r: r.step_time_s) if adaptive else None
    gain = None
    if best_static and best_adaptive:
        gain = best_static.step_time_s / best_adaptive.step_time_s - 1.0
    rec = _recommend(full, best_static, best_adaptive, preset_kw)
    body = {
        "distribution": dict(distribution_stats(dist, w), source=source or "<list>",
                             capped_at=int(cap)),
        "cluster": {"num_gpus": n_gpus, "gpus_per_node": gpn},
        "cost_model": full.describe(),
        "batches": {"sequences_per_batch": batch_size, "num_batches": num_batches, "seed": seed,
                    "mean_tokens": float(np.mean([b.sum() for b in batches]))},
        "strategies": results,
        "best_static": best_static.name if best_static else None,
        "adaptive_gain_vs_best_static": gain,
        "recommendation": rec,
    }
    return SequencePlan(**body).model_dump(mode="python")


def check_weights(weights: Any, n: int, *, file: str | None = None,
                  field: str = "counts") -> np.ndarray:
    """Histogram weights: ``n`` finite numbers >= 0 whose sum is positive and finite."""
    raw = list(weights)
    if len(raw) != n:
        raise InputError(f"{len(raw)} weights for {n} lengths", file=file, field=field,
                         expected="one weight per length")
    for i, v in enumerate(raw):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not 0 <= v < math.inf:  # also NaN
            raise InputError(f"weight #{i + 1} is {v!r}", file=file, field=f"{field}[{i}]",
                             expected="a finite number >= 0")
    w = np.asarray(raw, dtype=float)
    with np.errstate(over="ignore"):  # an overflowing sum is refused below, without a warning
        total = float(w.sum())
    if not 0 < total < math.inf:
        raise InputError(f"the weights sum to {total:g}", file=file, field=field,
                         expected="weights with a positive sum below the largest float")
    return w


def _check_plan_budget(num_batches: int, n_static: int, n_adaptive: int, time_limit_s: float) -> None:
    """Refuse an offline plan whose scheduled solver time exceeds :data:`MAX_PLAN_SOLVE_S`."""
    per_batch = n_static * min(time_limit_s, STATIC_TIME_LIMIT_S) + n_adaptive * time_limit_s
    total = num_batches * per_batch
    if total > MAX_PLAN_SOLVE_S:
        raise InputError(
            f"this plan schedules up to {total:,.0f} s of solving ({num_batches} batch(es) x "
            f"({n_static} static strategies x {min(time_limit_s, STATIC_TIME_LIMIT_S):g} s + "
            f"{n_adaptive} adaptive set(s) x {time_limit_s:g} s))", field="--batches",
            expected=f"at most {MAX_PLAN_SOLVE_S:,.0f} s: fewer --batches, a smaller "
                     "--time-limit, or fewer group sizes (--sizes, --group-types, --gpus)")


def _strategy(name: str, mode: str, typ: str, size: int | None, times: list[float | None],
              batches: list[np.ndarray], n_gpus: int, heads: list[float], mbs: list[int]) -> StrategyResult:
    ok = [(t, b) for t, b in zip(times, batches) if t is not None]
    if len(ok) == len(batches):
        mean_t = float(np.mean([t for t, _ in ok]))
        tps = float(np.mean([b.sum() / t / n_gpus for t, b in ok]))
        return StrategyResult(name=name, mode=mode, type=typ, size=size, feasible_batches=len(ok),
                              step_time_s=mean_t, step_time_s_max=float(max(t for t, _ in ok)),
                              tokens_per_s_per_gpu=tps, memory_headroom=float(min(heads)),
                              micro_batches_mean=float(np.mean(mbs)), per_batch_step_time_s=times)
    return StrategyResult(name=name, mode=mode, type=typ, size=size, feasible_batches=len(ok),
                          step_time_s=None, step_time_s_max=None, tokens_per_s_per_gpu=None,
                          memory_headroom=None, micro_batches_mean=None, per_batch_step_time_s=times)


def _recommend(preset: CostPreset, best_static: StrategyResult | None,
               best_adaptive: StrategyResult | None, preset_kw: dict[str, Any]) -> dict[str, Any]:
    recompute = preset_kw.get("recompute", "selective")
    zero = preset_kw.get("zero_stage", 3)
    out: dict[str, Any] = {}
    if best_static is not None:
        kind = next(k for k in preset.kinds if f"static-{k.label}" == best_static.name)
        out["static"] = {"strategy": best_static.name, "step_time_s": best_static.step_time_s,
                         **launch_args(kind, recompute=recompute, zero_stage=zero)}
    if best_adaptive is not None:
        adaptive_better = best_static is None or best_adaptive.step_time_s < best_static.step_time_s
        out["adaptive"] = {
            "strategy": best_adaptive.name, "step_time_s": best_adaptive.step_time_s,
            "how": "call planner.seqpar.plan_step(lengths, cluster, model, ...) in the data loader "
                   "each step (or `planner seqpar step --json`) and build the groups it returns; "
                   "closest stock feature: Megatron-Core dynamic context parallelism "
                   "(Megatron-Bridge model.dynamic_context_parallel, greedy, per packed bin)"}
        out["choice"] = best_adaptive.name if adaptive_better else (best_static.name if best_static else None)
    elif best_static is not None:
        out["choice"] = best_static.name
    else:
        out["choice"] = None
        out["why"] = "no strategy fits every sampled batch: add GPUs or memory, or cap lengths"
    return out


# ==============================================================================================
# JSON Schema of the plan files (planner/schemas/sequence_plan.schema.json)

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "sequence_plan.schema.json"


def sequence_plan_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for ``kind: SequencePlan`` and ``kind: StepPlan`` files,
    generated from the pydantic models plus the versioned envelope."""
    envelope_props = {
        "apiVersion": {"const": "planner/v1"},
        "metadata": {"type": "object", "required": ["tool", "tool_version"],
                     "properties": {"tool": {"type": "string"}, "tool_version": {"type": "string"},
                                    "inputs_sha256": {"type": "string",
                                                      "pattern": "^[0-9a-f]{64}$"}}},
    }
    defs: dict[str, Any] = {}

    def body(model: type[BaseModel], kind: str) -> dict[str, Any]:
        sch = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sch.pop("$defs", {}))
        sch.pop("title", None)
        sch.pop("additionalProperties", None)
        sch["properties"] = {**envelope_props, "kind": {"const": kind}, **sch["properties"]}
        sch["required"] = ["apiVersion", "kind", "metadata", *sch.get("required", [])]
        return sch

    seq = body(SequencePlan, "SequencePlan")
    step = body(StepPlan, "StepPlan")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://llm-placement-planner/schemas/sequence_plan.schema.json",
            "title": "SequencePlan / StepPlan",
            "description": "Sequence-parallel plans (planner seqpar plan / step): offline strategy "
                           "comparison with a recommendation, or one training step's micro-batches "
                           "and groups.",
            "oneOf": [seq, step], "$defs": defs}


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    """Regenerate the schema file (run after changing the plan models)."""
    import json
    path.write_text(json.dumps(sequence_plan_schema(), indent=2, sort_keys=False) + "\n",
                    encoding="utf-8")
    return path
