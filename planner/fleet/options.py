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


def effective_slo(slo: SLOSpec, output_len: float) -> tuple[float | None, float | None]:
    """(TTFT, TPOT) limits; an end-to-end SLO splits into both (TTFT + out * TPOT <= e2e)."""
    ttft, tpot = slo.ttft_s, slo.tpot_s
    if slo.e2e_s is not None:
        share = slo.e2e_s / (output_len + 1.0)
        ttft = share if ttft is None else min(ttft, max(share, slo.e2e_s - (tpot or share) * output_len))
        tpot = share if tpot is None else min(tpot, share)
    return ttft, tpot


@dataclass(frozen=True)
class SLOCheck:
    """One latency check a bucket's replicas must pass: the targets met at one percentile
    (TTFT / TPOT limits in s, an end-to-end target split into both), on the bucket's
    representative request at that percentile (tokens)."""

    percentile: float
    input_len: int
    output_len: int
    ttft_s: float | None
    tpot_s: float | None


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
            ttft, tpot = effective_slo(targets, rep_out[b])
            checks.append(SLOCheck(p, int(rep_in[b]), int(rep_out[b]), ttft, tpot))
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
