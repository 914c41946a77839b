"""A serving option, one (model, GPU type, shape) or a prefill/decode bundle, with its
capacity per bucket; the SLOs and shapes it is evaluated at."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner.fleet.request import GPUEntry, SLOSpec


#: shapes tried per GPU type when the request names none (TP within one node, PP 1)
DEFAULT_TPS = (1, 2, 4, 8)


@dataclass
class Option:
    """One (model, GPU type, shape) with its capacity per bucket."""

    model_index: int
    model: str
    gpu: str
    tp: int
    pp: int
    capacity: np.ndarray  # [I*J] req/s per replica
    source: str  # "profile:<file>" or "cost-model:<fidelity>"
    details: list[dict[str, Any]] = field(default_factory=list)  # per bucket: binding, ttft, tpot
    #: a disaggregated bundle: ((role, tp, pp, instances), ...) for "prefill" and "decode"; one
    #: "replica" of the option is the whole bundle (``tp``/``pp`` are the prefill role's)
    roles: tuple[tuple[str, int, int, int], ...] = ()
    #: a bundle whose decode instances run on another GPU type than ``gpu`` (the prefill's)
    decode_gpu: str | None = None
    #: a measured profile's capacities: the SLO they meet, in words
    measured_at: str | None = None

    def role_gpu(self, role: str) -> str:
        """The GPU type a role of a bundle runs on."""
        return self.decode_gpu if role == "decode" and self.decode_gpu else self.gpu

    def gpus_by_type(self) -> dict[str, int]:
        """GPUs one replica (one bundle) holds, per GPU type."""
        if not self.roles:
            return {self.gpu: self.gpus}
        out: dict[str, int] = {}
        for role, tp, pp, n in self.roles:
            g = self.role_gpu(role)
            out[g] = out.get(g, 0) + tp * pp * n
        return out

    @property
    def gpus(self) -> int:
        if self.roles:
            return sum(tp * pp * n for _, tp, pp, n in self.roles)
        return self.tp * self.pp

    @property
    def group_id(self) -> str:
        if self.roles:
            parts = "-".join(f"{n}{role[0]}-tp{tp}-pp{pp}" for role, tp, pp, n in self.roles)
            gpu = f"{self.gpu}+{self.decode_gpu}" if self.decode_gpu else self.gpu
            return f"{self.model}/{gpu}/pd-{parts}"
        return f"{self.model}/{self.gpu}/tp{self.tp}-pp{self.pp}"


@dataclass(frozen=True)
class SLOCheck:
    """One latency check a bucket's replicas must pass: the targets met at one percentile
    (TTFT / TPOT / end-to-end limits in s, None where not set), on the bucket's
    representative request at that percentile (tokens).  ``e2e_ttft_s``: the part of
    ``e2e_s`` (s) the first token may use where a prefill/decode bundle's two sides must share
    the end-to-end target (:func:`costmodels.serving.split_e2e`; set by
    :mod:`planner.fleet.bundles`, None elsewhere)."""

    percentile: float
    input_len: int
    output_len: int
    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float | None = None
    e2e_ttft_s: float | None = None

    def decode_tpot_limit(self) -> float | None:
        """The TPOT (s) a bundle's decode side must keep: the TPOT target or the end-to-end
        target's share per later token after ``e2e_ttft_s``, the tighter; None: no limit."""
        limits = [self.tpot_s] if self.tpot_s is not None else []
        if self.e2e_s is not None and self.e2e_ttft_s is not None and self.output_len > 1:
            limits.append((self.e2e_s - self.e2e_ttft_s) / (self.output_len - 1))
        return min(limits, default=None)


def slo_checks(slo: SLOSpec, requests: dict[float, tuple[np.ndarray, np.ndarray]]
               ) -> list[list[SLOCheck]]:
    """Per bucket, its checks: one per distinct percentile among the SLO's targets (one in
    all when they share it).  A replica serves the bucket at the lowest of the rates its checks
    allow: each is the largest rate meeting its targets, and latency grows with the rate."""
    groups = [(p, slo.at(p)) for p in slo.percentiles()]
    n = len(next(iter(requests.values()))[0])
    out = []
    for b in range(n):
        checks = []
        for p, targets in groups:
            rep_in, rep_out = requests[p]
            # each target as set: an end-to-end one is checked on its own, not split into
            # TTFT / TPOT shares (costmodels.serving.max_rate_under_slo)
            checks.append(SLOCheck(p, int(rep_in[b]), int(rep_out[b]), targets.ttft_s,
                                   targets.tpot_s, targets.e2e_s))
        out.append(checks)
    return out


#: pipeline stages tried, one node each, when a model fits no single node of a GPU type
MAX_NODES_PER_REPLICA = 8


def multi_node_shapes(g: GPUEntry, accel) -> list[tuple[int, int]]:
    """``(tp, pp)`` shapes over several nodes of ``accel``'s largest catalog node: TP across a
    node's GPUs (up to ``max_tp``), one pipeline stage per node, 2 to
    :data:`MAX_NODES_PER_REPLICA` nodes; none for a type with no node in the catalog."""
    from hardware.catalog import largest_node_gpus

    per_node = largest_node_gpus(accel)
    if per_node is None:
        return []
    tp = min(per_node, g.max_tp)
    return [(tp, pp) for pp in range(2, MAX_NODES_PER_REPLICA + 1)]


def gpu_shapes(g: GPUEntry) -> list[tuple[int, int]]:
    """``(tp, pp)`` shapes to evaluate on a GPU type: the request's, else TP 1-8 to ``max_tp``."""
    if g.shapes:
        return sorted({(s.tp, s.pp) for s in g.shapes})
    return [(tp, 1) for tp in DEFAULT_TPS if tp <= g.max_tp]
