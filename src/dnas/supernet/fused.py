"""Fused mixed edges: all candidate ops on all edges that leave one node, computed together.

A plain DARTS supernet runs every op of every edge on its own: ``x_j = sum_{i<j} sum_o w_{ij,o} o(x_i)``
with one module call per (edge, op), the ``none`` op included. The edges that leave node ``i``
share their input, so here they are computed as one unit (:class:`FusedSource`):

* ``none`` is never computed (its weight multiplies zero);
* parameter-free ops (identity, pooling + non-affine BN) do not depend on the edge: they run
  once per source node and are shared by all its outgoing edges;
* the ReLU in front of the convolutions runs once per source node;
* the same kind of convolution on ``m`` edges runs as one grouped convolution on ``m*C``
  channels (depthwise convs with ``groups=m*C``, pointwise convs with ``groups=m``, dense convs
  as one ``C -> m*C`` conv); non-affine BatchNorm is per channel, so it stays exact on the
  concatenated channels;
* ops whose weight is exactly zero on an edge (gates, clamped or pruned weights) are left out of
  the grouped call; a kind with no active member is not run at all;
* the mixing weights cost no pass of their own: a convolution kind's final BatchNorm takes them as
  its affine weight, and the shared ops' terms are one outer product (:meth:`FusedSource.forward`);
* an op without a fused kind (one registered with :func:`dnas.register_op`) keeps one module per
  edge (:class:`~dnas.supernet.kinds.PerEdgeOps`, the reference's modules): only that op of those
  edges runs per edge, everything else of the cell stays fused.

The op kinds are in :mod:`dnas.supernet.kinds`; for the backward of a graph differentiated once,
the pointwise convolutions keep the tensors their depthwise outputs are computed from and recompute
them (:mod:`dnas.supernet.recompute`), instead of keeping copies.

The result is mathematically the per-edge computation; ``tests/test_supernet.py`` checks outputs
and gradients against :mod:`dnas.supernet.reference`. BatchNorm inside the cells always uses batch
statistics (it has no affine parameters and the supernet is only used on batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnas.spaces.base import CellTopology
from dnas.supernet.kinds import AUX_SKIP, FusedKind, PerEdgeOps, SourceInput, batch_norm, make_fused_kind
from dnas.supernet.layout import channels_last_view, layout_of, memory_order


class FusedSource(nn.Module):
    """Every candidate op on every edge that leaves node ``src`` of a cell: ``forward`` returns, for each
    outgoing edge ``e`` (in destination order), terms whose sum is ``sum_o w_{e,o} * o(x_src)``."""

    def __init__(self, family: str, topology: CellTopology, src: int, channels: int, stride: int):
        super().__init__()
        self.out_edges = [e for e, (s, _) in enumerate(topology.edges) if s == src]
        members: dict[str, list[tuple[int, int]]] = {}
        for local, edge in enumerate(self.out_edges):
            for col, op in enumerate(topology.edge_ops[edge]):
                if op != "none":
                    members.setdefault(op, []).append((local, col))
        self.op_names = list(members)
        self.kinds = nn.ModuleDict(
            {op: make_fused_kind(family, op, channels, len(m), stride) for op, m in members.items()}
        )
        self.members = members
        # host copies of the member indices, for masking without device round trips
        self.member_edges = {op: torch.tensor([self.out_edges[le] for le, _ in m]) for op, m in members.items()}
        self.member_cols = {op: torch.tensor([c for _, c in m]) for op, m in members.items()}
        self.member_locals = {op: [le for le, _ in m] for op, m in members.items()}
        for op, m in members.items():
            locals_of_op = torch.tensor([le for le, _ in m])
            self.register_buffer(f"_local_{op}", locals_of_op, persistent=False)
            self.register_buffer(f"_edge_{op}", torch.tensor(self.out_edges)[locals_of_op], persistent=False)
            self.register_buffer(f"_col_{op}", torch.tensor([c for _, c in m]), persistent=False)

    def kind(self, op: str) -> FusedKind:
        """The fused kind computing ``op`` on this source's edges."""
        return cast(FusedKind, self.kinds[op])  # nn.ModuleDict items are typed as nn.Module

    def forward(self, x: Tensor, weights: Tensor, active: Tensor | None) -> list[list[Tensor]]:
        """``weights``: ``(E, K)`` weights of the whole cell; ``active``: CPU bool mask of the same
        shape marking the (edge, op) pairs that may be nonzero (None: all).

        Returns, for every outgoing edge (in destination order), the terms whose sum is
        ``sum_o w_{e,o} * o(x_src)``: the cell adds them straight into the destination node, so
        no edge output is ever materialised. The mixing weights enter where they cost nothing:

        * a convolution kind on ``m`` edges ends in a non-affine BatchNorm over its ``m*C``
          channels; it is run with the affine weight ``gamma = (w_{e_1,o} 1_C, ..., w_{e_m,o} 1_C)``,
          so its output is already weighted, ``BN(z) * gamma``, and the BatchNorm's backward
          returns ``dL/dgamma = sum_{n,h,w} dL/dy * BN(z)`` -- the mixing weights' gradient --
          from the reduction it computes for the input's gradient anyway. Kinds on the same edges
          are added whole (one dense addition), and each edge's term is a view of that sum, so that
          the backward assembles one gradient for all of them;
        * a shared kind (identity, pooling) is one row ``r`` for all edges: its terms are the rows
          of the outer product ``c r^T`` with ``c_e = w_{e,o}`` (zero on edges without the op),
          accumulated over the shared kinds, ``(E, B*C*H*W)``; its backward is two
          matrix-vector products (``dL/dc = G r``, ``dL/dr = G^T c``).

        Autograd keeps nothing here that the graph does not keep anyway (the BatchNorms' inputs,
        the shared rows) besides the pooling BatchNorms' outputs in the DARTS family.
        """
        inp = SourceInput(x)
        nhwc = inp.layout == torch.channels_last
        terms: list[list[Tensor]] = [[] for _ in self.out_edges]
        shared: Tensor | None = None  # (E, B*C*H*W): the shared kinds' terms, in memory order
        shared_shape: tuple[int, ...] = ()
        shared_edges: set[int] = set()
        weighted: dict[tuple[int, ...], Tensor] = {}  # the convolution kinds' weighted outputs, by member edges
        for op in self.op_names:
            edge, col, local = (getattr(self, f"_{p}_{op}") for p in ("edge", "col", "local"))
            locals_ = self.member_locals[op]
            sel, chosen = None, None  # the computed members, on the device and on the host (None: all)
            if active is not None:
                keep = active[self.member_edges[op], self.member_cols[op]]
                if not keep.any():
                    continue
                if not keep.all():
                    kept = keep.nonzero().flatten()
                    chosen = kept.tolist()
                    locals_ = [locals_[i] for i in chosen]
                    sel = kept.to(x.device)
                    edge, col, local = edge[sel], col[sel], local[sel]
            kind = self.kind(op)
            out = kind.run_members(inp, chosen) if isinstance(kind, PerEdgeOps) else kind(inp, sel)
            values = weights[edge, col].to(out.dtype)
            if kind.shared:
                row = memory_order(batch_norm(out) if kind.normalized else out)
                shared_shape, row = row.shape, row.reshape(-1)
                shared_edges.update(locals_)
                coef = values.new_zeros(len(self.out_edges)).index_put((local,), values).unsqueeze(1)
                # matrix products, whose backward is two matrix-vector products (outer's is elementwise)
                shared = torch.mm(coef, row[None]) if shared is None else torch.addmm(shared, coef, row[None])
                continue
            gamma = values.repeat_interleave(kind.c)
            y = batch_norm(out, gamma) if kind.normalized else out * gamma.view(1, -1, 1, 1)
            members = tuple(locals_)  # kinds on the same edges are added whole: one split, one gradient
            weighted[members] = y if members not in weighted else weighted[members] + y
        for members, y in weighted.items():
            for le, member in zip(members, _slot_rows(y, len(members), nhwc), strict=True):
                terms[le].append(member.movedim(-1, -3) if nhwc else member)
        if shared is not None:
            rows = shared.view(len(self.out_edges), *shared_shape).unbind(0)
            for le in sorted(shared_edges):
                terms[le].append(rows[le].movedim(-1, -3) if nhwc else rows[le])
        return terms

def _slot_rows(out: Tensor, slots: int, nhwc: bool) -> list[Tensor]:
    """The ``slots`` outputs held in ``out`` (``(B, slots*C, H, W)``), each as a view in its memory order
    (``(B, H, W, C)`` for channels-last, else ``(B, C, H, W)``). The split is one ``unbind`` in memory
    order, so that its backward assembles the members' gradients in ``out``'s layout with one stack."""
    b, _, h, w = out.shape
    if nhwc:
        return list(channels_last_view(out).view(b, h, w, slots, -1).unbind(3))
    return list(out.view(b, slots, -1, h, w).unbind(1))

def _sum(parts: list[Tensor], shape: tuple[int, ...], like: Tensor) -> Tensor:
    """The sum of a node's terms, a new tensor in the layout of ``like`` (zeros if there are none)."""
    layout = layout_of(like)
    if not parts:
        return like.new_zeros(shape).contiguous(memory_format=layout)
    if len(parts) == 1:  # a view into a kind's output or the shared terms: the next ops want it dense
        return parts[0].contiguous(memory_format=layout)
    node = parts[0] + parts[1]
    for part in parts[2:]:
        node = node.add_(part)
    return node

def with_auxiliary_skip(topology: CellTopology) -> CellTopology:
    """``topology`` with one more candidate on every edge, ``aux_skip`` (DARTS-'s auxiliary skip connection)."""
    return CellTopology(topology.num_inputs, topology.num_nodes,
                        tuple((*ops, AUX_SKIP) for ops in topology.edge_ops), topology.reduction)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """PC-DARTS' ``channel_shuffle``: channel ``g * C/groups + c`` moves to ``c * groups + g``."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class FusedCell(nn.Module):
    """The node computation of one cell with fused sources.

    ``x_j = sum_{i<j} sum(terms_i[edge(i->j)])`` for every intermediate node ``j``; with ``node_bn``
    each node output passes a non-affine BatchNorm (DARTS-PRIME's clamp activation needs it).

    ``partial = K > 1`` (PC-DARTS' partial channel connections): the ops of every edge see only the
    first ``C/K`` channels of their input; the other channels bypass them (a 2x2 max pooling on
    stride-2 edges), and the node is ``shuffle([sum_e sum_o w_{e,o} o(x_e[:C/K]); sum_e c_e x_e[C/K:]])``
    with the channel shuffle of :func:`channel_shuffle` and bypass coefficients ``c_e`` (``bypass``;
    by default the row sums ``c_e = sum_o w_{e,o}``: 1 for weights on the simplex, and PC-DARTS' edge
    weight ``beta_e`` for the edge-normalized weights ``w_{e,o} = beta_e softmax(alpha_e)_o``).

    ``aux_skip`` (DARTS-): every edge also carries an auxiliary skip connection (identity, or a
    factorized reduction on stride-2 edges) weighted by :attr:`aux_coef`, outside the mixing.
    """

    def __init__(self, family: str, topology: CellTopology, channels: int, node_bn: bool = False, partial: int = 1,
                 aux_skip: bool = False):
        super().__init__()
        if partial < 1 or channels % partial:
            raise ValueError(f"partial channel connections need the channels ({channels}) divisible by {partial}")
        if partial > 1 and aux_skip:
            raise ValueError("partial channel connections and the auxiliary skip do not combine")
        self.topology = with_auxiliary_skip(topology) if aux_skip else topology
        self.channels = channels
        self.node_bn = node_bn
        self.partial, self.aux_skip = partial, aux_skip
        self.aux_coef = 0.0  # the auxiliary skip's weight (DARTS-: decayed over the search)
        n_total = topology.num_inputs + topology.num_nodes
        self.sources = nn.ModuleList(
            FusedSource(family, self.topology, src, channels // partial,
                        2 if topology.reduction and src < topology.num_inputs else 1)
            for src in range(n_total - 1)
        )

    def fused_sources(self) -> list[FusedSource]:
        """The :class:`FusedSource` of every node that has outgoing edges, in node order."""
        return [cast(FusedSource, s) for s in self.sources]  # nn.ModuleList items are typed as nn.Module

    def forward(self, inputs: Sequence[Tensor], weights: Tensor, active: Tensor | None = None,
                bypass: Tensor | None = None) -> list[Tensor]:
        """Returns the intermediate node outputs (``bypass``: see the class docstring)."""
        if self.aux_skip:
            weights = torch.cat([weights, weights.new_full((weights.shape[0], 1), self.aux_coef)], dim=1)
            if active is not None:
                active = torch.cat([active, torch.ones(active.shape[0], 1, dtype=torch.bool)], dim=1)
        if self.partial > 1:
            return self._partial(inputs, weights, active, weights.sum(dim=1) if bypass is None else bypass)
        topo = self.topology
        nodes: list[Tensor] = list(inputs)
        terms: list[list[list[Tensor]]] = [[] for _ in self.sources]  # per source, per outgoing edge
        for src in range(topo.num_inputs):
            terms[src] = self.sources[src](nodes[src], weights, active)
        ref = nodes[0]
        stride = 2 if topo.reduction else 1
        out_shape = (ref.shape[0], self.channels, -(-ref.shape[2] // stride), -(-ref.shape[3] // stride))
        for dst in topo.intermediate_nodes:
            parts = [t for src, edges in enumerate(terms[:dst]) if edges
                     for t in edges[dst - max(src + 1, topo.num_inputs)]]
            node = _sum(parts, out_shape, ref)
            if self.node_bn:
                node = batch_norm(node)
            nodes.append(node)
            if dst < len(self.sources):
                terms[dst] = self.sources[dst](node, weights, active)
        return nodes[topo.num_inputs:]

    def _partial(self, inputs: Sequence[Tensor], weights: Tensor, active: Tensor | None,
                 bypass: Tensor) -> list[Tensor]:
        topo, k = self.topology, self.partial
        c_op = self.channels // k
        nodes: list[Tensor] = list(inputs)
        terms: list[list[list[Tensor]]] = [[] for _ in self.sources]
        rest: list[Tensor] = []  # per source: the channels that bypass its ops (pooled on stride-2 edges)

        def split(src: int, x: Tensor) -> None:
            layout = layout_of(x)
            terms[src] = self.sources[src](x[:, :c_op].contiguous(memory_format=layout), weights, active)
            part = x[:, c_op:]
            if topo.reduction and src < topo.num_inputs:
                part = F.max_pool2d(part, 2, 2)
            rest.append(part.contiguous(memory_format=layout))

        for src in range(topo.num_inputs):
            split(src, nodes[src])
        ref = nodes[0]
        stride = 2 if topo.reduction else 1
        op_shape = (ref.shape[0], c_op, -(-ref.shape[2] // stride), -(-ref.shape[3] // stride))
        for dst in topo.intermediate_nodes:
            parts = [t for src, edges in enumerate(terms[:dst]) if edges
                     for t in edges[dst - max(src + 1, topo.num_inputs)]]
            mixed = _sum(parts, op_shape, ref)
            passed = None
            for src in range(dst):
                term = rest[src] * bypass[topo.edge_index(src, dst)].to(ref.dtype)
                passed = term if passed is None else passed + term
            assert passed is not None  # every intermediate node has incoming edges
            node = channel_shuffle(torch.cat([mixed, passed], dim=1), k).contiguous(memory_format=layout_of(ref))
            if self.node_bn:
                node = batch_norm(node)
            nodes.append(node)
            if dst < len(self.sources):
                split(dst, node)
        return nodes[topo.num_inputs:]
