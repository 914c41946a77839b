"""Alpha-beta models of collectives over one link tier.

For a group of ``n`` ranks and a message of ``M`` bytes (the full buffer each rank holds, as
nccl-tests counts it), with per-hop latency alpha, per-GPU one-way bandwidth B and efficiency e
(the fraction of B that large collectives reach):

=================  ======================  ==============================
collective         latency term            bandwidth term
=================  ======================  ==============================
all-reduce (ring)  2 (n-1) alpha           2 (n-1)/n * M / (e B)
all-gather         (n-1) alpha             (n-1)/n * M / (e B)
reduce-scatter     (n-1) alpha             (n-1)/n * M / (e B)
all-to-all         (n-1) alpha             (n-1)/n * M / (e B)
p2p send/recv      alpha                   M / (e B)
=================  ======================  ==============================

plus a fixed launch floor per collective (``collective_overhead_s``; NCCL plus framework
overhead, 10-40 us in practice).  The bandwidth-term factors are NCCL's bus-bandwidth factors.
Groups that span nodes are priced on the slowest tier crossed (the per-GPU NIC), see
:meth:`hardware.topology.Cluster.tier_for_group`.
"""
from __future__ import annotations

from dataclasses import dataclass

from hardware.accelerator import EfficiencyCurve, Link

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p")

#: default fixed cost of launching one collective, seconds (NCCL kernel launch + sync)
DEFAULT_COLLECTIVE_OVERHEAD_S = 10e-6


@dataclass(frozen=True)
class LinkModel:
    """A link tier with the parameters the alpha-beta model uses (plain dataclass: hot loops).

    ``efficiency_curve`` (optional, from calibration) replaces the constant efficiency with one
    that depends on the message size in bytes.
    """

    bandwidth_bytes_per_s: float
    latency_s: float
    efficiency: float
    collective_overhead_s: float = DEFAULT_COLLECTIVE_OVERHEAD_S
    efficiency_curve: EfficiencyCurve | None = None

    @classmethod
    def from_link(cls, link: Link, overhead_s: float = DEFAULT_COLLECTIVE_OVERHEAD_S) -> "LinkModel":
        return cls(link.bandwidth_bytes_per_s, link.latency_s, link.efficiency, overhead_s)

    def effective_bandwidth(self, message_bytes: float) -> float:
        eff = self.efficiency_curve.at(max(message_bytes, 1.0)) if self.efficiency_curve else self.efficiency
        return self.bandwidth_bytes_per_s * eff


def _factors(kind: str, n: int) -> tuple[float, float]:
    """(latency hops, bandwidth factor) for a collective on ``n`` ranks."""
    if kind == "all_reduce":
        return 2.0 * (n - 1), 2.0 * (n - 1) / n
    if kind in ("all_gather", "reduce_scatter", "all_to_all"):
        return float(n - 1), (n - 1) / n
    if kind == "p2p":
        return 1.0, 1.0
    raise ValueError(f"unknown collective {kind!r} (expected one of {', '.join(COLLECTIVES)})")


def collective_time_s(kind: str, message_bytes: float, group_size: int, link: Link | LinkModel) -> float:
    """Time of one collective in seconds.

    Args:
        kind: one of :data:`COLLECTIVES`.
        message_bytes: the buffer size per rank in bytes (all-gather: the gathered output;
            reduce-scatter: the input; all-to-all: what one rank sends in total; p2p: the message).
        group_size: ranks taking part; a group of one costs nothing (p2p always costs).
        link: the tier the group runs over (see ``Cluster.tier_for_group``).
    """
    if message_bytes <= 0 or (group_size <= 1 and kind != "p2p"):
        return 0.0
    lm = link if isinstance(link, LinkModel) else LinkModel.from_link(link)
    hops, bw_factor = _factors(kind, max(group_size, 2))
    return lm.collective_overhead_s + hops * lm.latency_s + \
        bw_factor * message_bytes / lm.effective_bandwidth(message_bytes)


def bus_bandwidth_bytes_per_s(kind: str, message_bytes: float, group_size: int, time_s: float) -> float:
    """nccl-tests' bus bandwidth for a measured time: algbw x the collective's factor."""
    _, factor = _factors(kind, max(group_size, 2))
    return message_bytes / time_s * factor
