"""Nodes, link tiers and clusters.

A :class:`NodeType` (DGX H100, a 1-GPU cloud VM...) is separate from the accelerator it holds,
as in Vidur: the same GPU can sit in different boxes with different networks.  A
:class:`Cluster` is ``num_nodes`` nodes of one type.  A group of ranks is priced on the slowest
tier it crosses: its scale-up fabric when it fits in one node, the scale-out network otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from hardware.accelerator import Link


class NodeType(BaseModel):
    """A server type: ``gpus_per_node`` accelerators on one scale-up fabric plus a NIC tier."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    name: str
    aliases: tuple[str, ...] = ()
    accelerator: str
    gpus_per_node: int = Field(ge=1)
    scale_out: Link
    description: str = ""
    source: str = ""


@dataclass(frozen=True)
class Tier:
    """The link tier one collective runs over (the slowest one its group crosses)."""

    name: str  # "intra-node" | "inter-node" | "pcie"
    link: Link
    group_size: int
    nodes_spanned: int


@dataclass(frozen=True)
class Cluster:
    """``num_nodes`` nodes of one node type (plain dataclass: used inside search loops)."""

    node: NodeType
    num_nodes: int
    scale_up: Link  # the accelerator's fabric, possibly limited by the node (PCIe-only boxes)

    @property
    def gpus_per_node(self) -> int:
        return self.node.gpus_per_node

    @property
    def num_gpus(self) -> int:
        return self.num_nodes * self.node.gpus_per_node

    def tier_for_group(self, group_size: int, *, contiguous: bool = True) -> Tier:
        """Tier crossed by a group of ``group_size`` ranks placed on consecutive GPUs.

        Groups that fit in one node use the scale-up fabric (or PCIe beyond the fabric's domain,
        e.g. NVLink-bridged pairs in an 8-GPU PCIe box); larger groups use the scale-out NIC.
        """
        if group_size <= 1:
            return Tier("local", self.scale_up, 1, 1)
        gpn = self.gpus_per_node
        if group_size <= gpn and contiguous:
            if group_size <= self.scale_up.domain_size:
                return Tier("intra-node", self.scale_up, group_size, 1)
            pcie = Link(kind="pcie", bandwidth_bytes_per_s=min(self.scale_up.bandwidth_bytes_per_s, 32e9),
                        latency_s=max(self.scale_up.latency_s, 5e-6), efficiency=0.7,
                        domain_size=gpn, description="PCIe between GPUs outside one fabric domain")
            return Tier("pcie", pcie, group_size, 1)
        nodes = -(-group_size // gpn)
        return Tier("inter-node", self.node.scale_out, group_size, nodes)

    def graph(self):
        """GPUs as nodes ``(node, local_rank)``; edges carry the tier name and bandwidth
        (a ``networkx.Graph``; imported here so that planning without it stays fast)."""
        import networkx as nx

        g = nx.Graph()
        gpn = self.gpus_per_node
        ranks = [(n, r) for n in range(self.num_nodes) for r in range(gpn)]
        g.add_nodes_from(ranks)
        for i, a in enumerate(ranks):
            for b in ranks[i + 1:]:
                same = a[0] == b[0]
                link = self.scale_up if same else self.node.scale_out
                g.add_edge(a, b, tier="intra-node" if same else "inter-node",
                           bandwidth_bytes_per_s=link.bandwidth_bytes_per_s)
        return g


def make_cluster(node: NodeType, num_nodes: int, scale_up: Link) -> Cluster:
    """Build a :class:`Cluster`; ``scale_up`` is the accelerator's fabric link."""
    return Cluster(node=node, num_nodes=num_nodes, scale_up=scale_up)
