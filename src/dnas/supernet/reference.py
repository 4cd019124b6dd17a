"""The straightforward supernet cell: every op of every edge is its own module, ``none`` included.

This is how the original DARTS code computes a mixed edge,
``MixedOp(x) = sum_o w_o * o(x)``, one call per (edge, op). dnas uses it as the ground truth for
the fused cell (tests) and as the reference in speed benchmarks (``bench/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnas.spaces.base import CellTopology
from dnas.spaces.ops import make_op
from dnas.supernet.fused import FusedCell


class ReferenceCell(nn.Module):
    def __init__(self, family: str, topology: CellTopology, channels: int, node_bn: bool = False):
        super().__init__()
        self.topology = topology
        self.node_bn = node_bn
        self.edges = nn.ModuleList(
            nn.ModuleList(
                make_op(family, op, channels, 2 if topology.reduction and src < topology.num_inputs else 1,
                        affine=False)
                for op in topology.edge_ops[e]
            )
            for e, (src, _) in enumerate(topology.edges)
        )

    def forward(self, inputs: Sequence[Tensor], weights: Tensor, active: Tensor | None = None) -> list[Tensor]:
        topo = self.topology
        nodes = list(inputs)
        for dst in topo.intermediate_nodes:
            total = None
            for e in topo.incoming(dst):
                src = topo.edges[e][0]
                for k, op in enumerate(self.ops_of_edge(e)):
                    term = weights[e, k] * op(nodes[src])
                    total = term if total is None else total + term
            if total is None:
                raise ValueError(f"node {dst} of the cell has no incoming edge")
            if self.node_bn:
                total = F.batch_norm(total, None, None, training=True)
            nodes.append(total)
        return nodes[topo.num_inputs:]

    def ops_of_edge(self, e: int) -> nn.ModuleList:
        """One module per candidate op of edge ``e``, in the topology's op order."""
        return cast(nn.ModuleList, self.edges[e])  # nn.ModuleList items are typed as nn.Module

    @torch.no_grad()
    def copy_from(self, fused: FusedCell) -> None:
        """Give every (edge, op) module the parameters that ``fused`` holds for it."""
        for source in fused.fused_sources():
            for op, members in source.members.items():
                kind = source.kind(op)
                for i, (local, col) in enumerate(members):
                    plain = self.ops_of_edge(source.out_edges[local])[col]
                    for dst, src in zip(plain.parameters(), kind.member_parameters(i), strict=True):
                        dst.copy_(src)


def member_gradient_pairs(fused: FusedCell, reference: ReferenceCell) -> list[tuple[Tensor, Tensor]]:
    """(fused gradient view, reference gradient) for every parameter, after a backward pass of both."""
    pairs: list[tuple[Tensor, Tensor]] = []
    for source in fused.fused_sources():
        for op, members in source.members.items():
            kind = source.kind(op)
            for i, (local, col) in enumerate(members):
                plain = reference.ops_of_edge(source.out_edges[local])[col]
                for fused_grad, p in zip(kind.member_parameters(i, grad=True), plain.parameters(), strict=True):
                    if p.grad is None:
                        raise RuntimeError("member_gradient_pairs needs the reference's gradients: run its backward")
                    pairs.append((fused_grad, p.grad))
    return pairs
