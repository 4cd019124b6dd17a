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
from dnas.supernet.fused import FusedCell, channel_shuffle, with_auxiliary_skip
from dnas.supernet.kinds import AUX_SKIP


class ReferenceCell(nn.Module):
    """Every (edge, op) its own module; ``partial`` and ``aux_skip`` as in :class:`FusedCell`, edge by edge:
    PC-DARTS' ``MixedOp`` (ops on the first ``C/K`` channels, the rest passed on, concatenated and
    shuffled) and DARTS-'s auxiliary skip connection."""

    def __init__(self, family: str, topology: CellTopology, channels: int, node_bn: bool = False, partial: int = 1,
                 aux_skip: bool = False):
        super().__init__()
        self.topology = with_auxiliary_skip(topology) if aux_skip else topology
        self.node_bn = node_bn
        self.partial, self.aux_skip = partial, aux_skip
        self.aux_coef = 0.0
        self.edges = nn.ModuleList(
            nn.ModuleList(
                make_op(family, "skip_connect" if op == AUX_SKIP else op, channels // partial,
                        2 if topology.reduction and src < topology.num_inputs else 1, affine=False)
                for op in self.topology.edge_ops[e]
            )
            for e, (src, _) in enumerate(topology.edges)
        )

    def forward(self, inputs: Sequence[Tensor], weights: Tensor, active: Tensor | None = None,
                bypass: Tensor | None = None) -> list[Tensor]:
        topo = self.topology
        if self.aux_skip:
            weights = torch.cat([weights, weights.new_full((weights.shape[0], 1), self.aux_coef)], dim=1)
        nodes = list(inputs)
        for dst in topo.intermediate_nodes:
            total = None
            for e in topo.incoming(dst):
                src = topo.edges[e][0]
                if self.partial == 1:
                    for k, op in enumerate(self.ops_of_edge(e)):
                        term = weights[e, k] * op(nodes[src])
                        total = term if total is None else total + term
                    continue
                # PC-DARTS' MixedOp: the ops on the first C/K channels, the rest passed on, shuffled; times c_e
                x = nodes[src]
                c_op = x.shape[1] // self.partial
                mixed = sum(weights[e, k] * op(x[:, :c_op]) for k, op in enumerate(self.ops_of_edge(e)))
                rest = F.max_pool2d(x[:, c_op:], 2, 2) if topo.reduction and src < topo.num_inputs else x[:, c_op:]
                coef = weights[e].sum() if bypass is None else bypass[e]
                edge = channel_shuffle(torch.cat([mixed, coef * rest], dim=1), self.partial)
                total = edge if total is None else total + edge
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
