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
  the grouped call; a kind with no active member is not run at all.

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


def _bn(x: Tensor) -> Tensor:
    return F.batch_norm(x, None, None, training=True, eps=1e-5)


def layout_of(x: Tensor) -> torch.memory_format:
    """The memory layout ``x`` is stored in: ``channels_last`` (NHWC) or ``contiguous_format`` (NCHW).

    The fused cells keep every activation in the layout of the supernet's input (see
    :func:`dnas.supernet.network.search_layout`): PyTorch's CPU BatchNorm backward is 3-4x slower
    when its input and its incoming gradient differ in layout, and a layout change costs a copy.
    """
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _channels_last_view(x: Tensor) -> Tensor:
    """A channels-last ``(..., C, H, W)`` tensor as its memory order ``(..., H, W, C)`` (a view)."""
    return x.movedim(-3, -1)


def _conv_weight(n: int, shape: tuple[int, ...]) -> nn.Parameter:
    """``n`` independently initialised conv weights of ``shape`` stacked along the output channels."""
    w = torch.empty(n, *shape)
    for i in range(n):
        nn.init.kaiming_uniform_(w[i], a=5**0.5)  # nn.Conv2d's default initialisation
    return nn.Parameter(w.reshape(n * shape[0], *shape[1:]))


def _subset(param: Tensor, n: int, sel: Tensor | None) -> Tensor:
    if sel is None:
        return param
    return param.view(n, -1, *param.shape[1:])[sel].reshape(-1, *param.shape[1:])


class _SourceInput:
    """The input of one source node and values derived from it, computed at most once."""

    def __init__(self, x: Tensor):
        self.x = x
        self.layout = layout_of(x)  # the layout every op output of this source is returned in
        self._relu: Tensor | None = None
        self._repeated: dict[int, Tensor] = {}

    @property
    def relu(self) -> Tensor:
        if self._relu is None:
            self._relu = F.relu(self.x)
        return self._relu

    def relu_repeated(self, m: int) -> Tensor:
        """ReLU(x) repeated ``m`` times along channels: the input of ``m`` depthwise convs at once."""
        if m not in self._repeated:
            # channels-last: oneDNN's depthwise and grouped convolutions are 2-4x faster in it on CPU
            repeated = self.relu if m == 1 else self.relu.repeat(1, m, 1, 1)
            self._repeated[m] = repeated.contiguous(memory_format=torch.channels_last)
        return self._repeated[m]


class FusedKind(nn.Module):
    """One op kind on ``n`` edges. ``shared`` kinds return ``(B, C, H, W)``, others ``(B, m, C, H, W)``."""

    shared = False

    def __init__(self, channels: int, n: int, stride: int):
        super().__init__()
        self.c, self.n, self.stride = channels, n, stride

    def forward(self, inp: _SourceInput, sel: Tensor | None) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def member_parameters(self, i: int, grad: bool = False) -> list[Tensor]:
        """Views of the parameters (or their gradients) of member ``i``, in the order of the plain
        op's ``parameters()``."""
        views = []
        for p, ref in self._plain_shapes():
            stacked = p.grad if grad else p
            if stacked is None:
                raise RuntimeError("member_parameters(grad=True) needs the gradients: run a backward pass first")
            views.append(stacked.view(self.n, -1, *p.shape[1:])[i].reshape_as(ref))
        return views

    def _plain_shapes(self) -> list[tuple[Tensor, Tensor]]:
        return []


class SharedIdentity(FusedKind):
    shared = True

    def forward(self, inp: _SourceInput, sel: Tensor | None) -> Tensor:
        return inp.x


class SharedPool(FusedKind):
    """3x3 pooling (then a non-affine BN in the DARTS family), computed once for all edges.

    Both poolings avoid PyTorch's slow CPU kernels for NCHW tensors (measured 4x and 2x faster,
    forward + backward, see the README): average pooling without padded zeros in the count is a
    depthwise convolution with a ones kernel times ``1 / count`` (exact up to rounding); max pooling
    runs in the channels-last layout.
    """

    shared = True
    ones: Tensor  # buffer of the "avg" mode

    def __init__(self, channels: int, n: int, stride: int, mode: str, bn: bool):
        super().__init__(channels, n, stride)
        self.mode, self.bn = mode, bn
        if mode == "avg":
            self.register_buffer("ones", torch.ones(channels, 1, 3, 3), persistent=False)

    def forward(self, inp: _SourceInput, sel: Tensor | None) -> Tensor:
        x = inp.x
        if self.mode == "avg":
            y = _BoxSum.apply(x, self.ones.to(x.dtype), self.stride)
            y = y * _inverse_counts(x.shape[2], x.shape[3], self.stride, x.device, x.dtype)
        else:
            y = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, self.stride, 1)
            y = y.contiguous(memory_format=inp.layout)
        return _bn(y) if self.bn else y


class _BoxSum(torch.autograd.Function):
    """The 3x3 window sums of every channel (padding 1): a depthwise convolution with a ones kernel.

    Its backward is written out as the transposed convolution, an ordinary differentiable op, so that
    a double backward (exact Hessian-vector products, the Hessian diagnostic) differentiates that op
    with one convolution. PyTorch's own double backward of a grouped convolution loops over the groups:
    ``C`` convolutions per pooling, the bulk of an exact product's convolution calls on NAS-Bench-201.
    """

    @staticmethod
    def forward(ctx, x: Tensor, ones: Tensor, stride: int) -> Tensor:
        ctx.save_for_backward(ones)
        ctx.stride, ctx.size = stride, x.shape[2:]
        return F.conv2d(x, ones, stride=stride, padding=1, groups=ones.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (ones,) = ctx.saved_tensors
        stride = ctx.stride
        # a transposed 3x3 convolution with padding 1 restores (m - 1) * stride + 1 of the n input rows (columns);
        # the ones the strided windows never reached come back as output padding
        extra = [n - ((m - 1) * stride + 1) for n, m in zip(ctx.size, grad.shape[2:], strict=True)]
        return F.conv_transpose2d(grad, ones, stride=stride, padding=1, output_padding=tuple(extra),
                                  groups=ones.shape[0]), None, None


_COUNTS: dict[tuple, Tensor] = {}


def _inverse_counts(h: int, w: int, stride: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``1 / (number of in-image pixels)`` of every 3x3 window (padding 1): ``count_include_pad=False``."""
    key = (h, w, stride, device, dtype)
    if key not in _COUNTS:
        ones = torch.ones(1, 1, h, w, device=device, dtype=dtype)
        _COUNTS[key] = 1.0 / F.conv2d(ones, torch.ones(1, 1, 3, 3, device=device, dtype=dtype), stride=stride,
                                      padding=1)
    return _COUNTS[key]


class FusedNoise(FusedKind):
    def forward(self, inp: _SourceInput, sel: Tensor | None) -> Tensor:
        x = inp.x if self.stride == 1 else inp.x[:, :, :: self.stride, :: self.stride]
        m = self.n if sel is None else len(sel)
        b, c, h, w = x.shape
        return torch.randn(b, m, c, h, w, dtype=x.dtype, device=x.device)


class FusedFactorizedReduce(FusedKind):
    """``n`` FactorizedReduce ops (the stride-2 ``skip_connect``)."""

    def __init__(self, channels: int, n: int, stride: int):
        super().__init__(channels, n, stride)
        half = channels // 2
        self.conv_1 = _conv_weight(n, (half, channels, 1, 1))
        self.conv_2 = _conv_weight(n, (half, channels, 1, 1))

    def forward(self, inp: _SourceInput, sel: Tensor | None) -> Tensor:
        m = self.n if sel is None else len(sel)
        a = F.conv2d(inp.relu, _subset(self.conv_1, self.n, sel), stride=2)
        b = F.conv2d(inp.relu[:, :, 1:, 1:], _subset(self.conv_2, self.n, sel), stride=2)
        bsz, _, h, w = a.shape
        if inp.layout == torch.channels_last:  # each member's halves joined along the channels, in NHWC order
            a, b = _channels_last_view(a), _channels_last_view(b)
            y = torch.cat([a.reshape(bsz, h, w, m, -1), b.reshape(bsz, h, w, m, -1)], dim=4)
            y = y.view(bsz, h, w, m * self.c).movedim(-1, 1)
        else:
            y = torch.cat([a.view(bsz, m, -1, h, w), b.view(bsz, m, -1, h, w)], dim=2).view(bsz, m * self.c, h, w)
        return _bn(y).view(bsz, m, self.c, h, w)

    def _plain_shapes(self):
        half = self.c // 2
        return [(self.conv_1, torch.empty(half, self.c, 1, 1)), (self.conv_2, torch.empty(half, self.c, 1, 1))]


class FusedDilConv(FusedKind):
    """``n`` DilConv ops (ReLU, depthwise k x k with dilation, pointwise, BN) as grouped convs."""

    def __init__(self, channels: int, n: int, stride: int, k: int, dilation: int):
        super().__init__(channels, n, stride)
        self.k, self.dilation = k, dilation
        self.depthwise = _conv_weight(n, (channels, 1, k, k))
        self.pointwise = _conv_weight(n, (channels, channels, 1, 1))

    def run(self, x: Tensor, sel: Tensor | None, stride: int, layout: torch.memory_format | None) -> Tensor:
        """The ``m`` ops on ``x`` (``m`` inputs stacked along channels, channels-last); ``layout``: that of
        the mixing the output goes to (None: the output feeds another stage and stays channels-last)."""
        m = self.n if sel is None else len(sel)
        weight = _subset(self.depthwise, self.n, sel)
        if self.dilation == 2:
            y = _dilated2_depthwise(x, weight, stride, self.k)
        else:
            y = F.conv2d(x, weight, stride=stride, padding=(self.k - 1) // 2, groups=m * self.c)
        z = F.conv2d(y, _subset(self.pointwise, self.n, sel), groups=m)
        # z is channels-last (oneDNN keeps the input's layout). An output that feeds the mixing gets its
        # gradient back in the mixing's layout, and PyTorch's CPU BatchNorm backward with a channels-last
        # input and a contiguous gradient is 3-4x slower than with matching layouts: match it first.
        return _bn(z if layout is None else z.contiguous(memory_format=layout))

    def forward(self, inp: _SourceInput, sel: Tensor | None) -> Tensor:
        m = self.n if sel is None else len(sel)
        y = self.run(inp.relu_repeated(m), sel, self.stride, inp.layout)
        return y.view(y.shape[0], m, self.c, *y.shape[2:])

    def _plain_shapes(self):
        c, k = self.c, self.k
        return [(self.depthwise, torch.empty(c, 1, k, k)), (self.pointwise, torch.empty(c, c, 1, 1))]


def _dilated2_depthwise(x: Tensor, weight: Tensor, stride: int, k: int) -> Tensor:
    """Depthwise k x k convolution with dilation 2 and padding k-1, computed without dilation.

    A dilation-2 convolution only mixes pixels of equal parity: with stride 2 it is the undilated
    convolution of ``x[:, :, ::2, ::2]`` (padding (k-1)/2); with stride 1 the four parity phases
    are stacked along the batch, convolved undilated and interleaved again. oneDNN's dilated
    depthwise kernels are several times slower on CPU than the plain ones (README, speed).
    The phases are cut and interleaved in the channels-last layout the depthwise convolutions run in
    (``x`` is channels-last): each move copies whole pixels of ``c`` channels, and the result stays
    channels-last for the pointwise convolution that follows.
    """
    pad, groups = (k - 1) // 2, weight.shape[0]
    b, c, h, w = x.shape
    if stride == 2:
        return F.conv2d(x[:, :, ::2, ::2], weight, padding=pad, groups=groups)
    if h % 2 or w % 2:
        return F.conv2d(x, weight, padding=k - 1, dilation=2, groups=groups)
    nhwc = x.permute(0, 2, 3, 1)
    phases = nhwc.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 2, 4, 1, 3, 5).reshape(b * 4, h // 2, w // 2, c)
    y = F.conv2d(phases.permute(0, 3, 1, 2), weight, padding=pad, groups=groups).permute(0, 2, 3, 1)
    return y.reshape(b, 2, 2, h // 2, w // 2, c).permute(0, 3, 1, 4, 2, 5).reshape(b, h, w, c).permute(0, 3, 1, 2)


class FusedSepConv(FusedKind):
    """``n`` SepConv ops: two stacked DilConv(dilation 1), the first one strided."""

    def __init__(self, channels: int, n: int, stride: int, k: int):
        super().__init__(channels, n, stride)
        self.first = FusedDilConv(channels, n, stride, k, 1)
        self.second = FusedDilConv(channels, n, 1, k, 1)

    def forward(self, inp: _SourceInput, sel: Tensor | None) -> Tensor:
        m = self.n if sel is None else len(sel)
        y = self.first.run(inp.relu_repeated(m), sel, self.stride, None)
        y = self.second.run(F.relu(y), sel, 1, inp.layout)
        return y.view(y.shape[0], m, self.c, *y.shape[2:])

    def member_parameters(self, i: int, grad: bool = False) -> list[Tensor]:
        return self.first.member_parameters(i, grad) + self.second.member_parameters(i, grad)


class FusedReLUConvBN(FusedKind):
    """``n`` ReLU-Conv-BN ops (NAS-Bench-201 ``nor_conv_kxk``) as one dense ``C -> n*C`` conv."""

    def __init__(self, channels: int, n: int, stride: int, k: int):
        super().__init__(channels, n, stride)
        self.k = k
        self.weight = _conv_weight(n, (channels, channels, k, k))

    def forward(self, inp: _SourceInput, sel: Tensor | None) -> Tensor:
        m = self.n if sel is None else len(sel)
        y = _bn(F.conv2d(inp.relu, _subset(self.weight, self.n, sel), stride=self.stride, padding=self.k // 2))
        return y.view(y.shape[0], m, self.c, *y.shape[2:])

    def _plain_shapes(self):
        return [(self.weight, torch.empty(self.c, self.c, self.k, self.k))]


def make_fused_kind(family: str, op: str, c: int, n: int, stride: int) -> FusedKind:
    darts = family == "darts"
    if op == "skip_connect":
        return SharedIdentity(c, n, stride) if stride == 1 else FusedFactorizedReduce(c, n, stride)
    if op in ("avg_pool_3x3", "max_pool_3x3"):
        return SharedPool(c, n, stride, op[:3], bn=darts)
    if op == "noise":
        return FusedNoise(c, n, stride)
    if op.startswith("sep_conv_"):
        return FusedSepConv(c, n, stride, int(op[-1]))
    if op.startswith("dil_conv_"):
        return FusedDilConv(c, n, stride, int(op[-1]), 2)
    if op.startswith("nor_conv_"):
        return FusedReLUConvBN(c, n, stride, int(op[-1]))
    raise ValueError(f"no fused implementation of op {op!r}")


class FusedSource(nn.Module):
    """Every candidate op on every edge that leaves node ``src`` of a cell.

    ``forward`` returns ``mix`` of shape ``(B, E_src, C, H, W)`` with
    ``mix[e] = sum_o w_{e,o} * o(x_src)`` (shape ``(E_src, B, C, H, W)``) for the outgoing edges, in destination order.
    """

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
        for op, m in members.items():
            locals_of_op = torch.tensor([le for le, _ in m])
            self.register_buffer(f"_local_{op}", locals_of_op, persistent=False)
            self.register_buffer(f"_edge_{op}", torch.tensor(self.out_edges)[locals_of_op], persistent=False)
            self.register_buffer(f"_col_{op}", torch.tensor([c for _, c in m]), persistent=False)

    def kind(self, op: str) -> FusedKind:
        """The fused kind computing ``op`` on this source's edges."""
        return cast(FusedKind, self.kinds[op])  # nn.ModuleDict items are typed as nn.Module

    def forward(self, x: Tensor, weights: Tensor, active: Tensor | None) -> Tensor | None:
        """``weights``: ``(E, K)`` weights of the whole cell; ``active``: CPU bool mask of the same
        shape marking the (edge, op) pairs that may be nonzero (None: all). None if nothing is active.

        The op outputs are stacked as ``O`` of shape ``(M, B*C*H*W)``: one slot per member of a
        convolution kind, ONE slot per shared kind (identity, pooling: the same tensor for every
        edge). The mixing matrix ``S`` of shape ``(E_src, M)`` holds ``S[e, m] = w_{e, op(m)}``, so
        ``mix = S @ O`` is one matrix product instead of a weighted sum per (edge, op); the result
        is returned as ``(E_src, B, C, H, W)``. Each row of ``O`` is an output in its memory order
        (``B*H*W*C`` for a channels-last input), so ``mix[e]`` is in the layout of ``x``.
        """
        inp = _SourceInput(x)
        outs: list[Tensor] = []
        rows: list[Tensor] = []
        cols: list[Tensor] = []
        values: list[Tensor] = []
        slot = 0
        for op in self.op_names:
            edge, col, local = (getattr(self, f"_{p}_{op}") for p in ("edge", "col", "local"))
            sel = None
            if active is not None:
                keep = active[self.member_edges[op], self.member_cols[op]]
                if not keep.any():
                    continue
                if not keep.all():
                    sel = keep.nonzero().flatten().to(x.device)
                    edge, col, local = edge[sel], col[sel], local[sel]
            kind = self.kind(op)
            out = kind(inp, sel)
            if kind.shared:
                slots = torch.full_like(local, slot)
                outs.append(out)
            else:
                slots = slot + torch.arange(len(local), device=local.device)
                outs.extend(out.unbind(1))
            rows.append(local)
            cols.append(slots)
            values.append(weights[edge, col])
            slot = len(outs)
        if not outs:
            return None
        mixing = weights.new_zeros(len(self.out_edges), len(outs)).index_put((torch.cat(rows), torch.cat(cols)),
                                                                             torch.cat(values))
        # one GEMM with a long inner dimension, over the outputs in their memory order (a view of each)
        nhwc = inp.layout == torch.channels_last
        stacked = torch.stack([_channels_last_view(o) for o in outs] if nhwc else outs)  # (M, B, ...)
        mix = torch.mm(mixing.to(stacked.dtype), stacked.flatten(1)).view(-1, *stacked.shape[1:])
        return mix.movedim(-1, -3) if nhwc else mix


def _edges(mix: Tensor | None) -> tuple[Tensor, ...] | None:
    return None if mix is None else mix.unbind(0)


class FusedCell(nn.Module):
    """The node computation of one cell with fused sources.

    ``x_j = sum_{i<j} mix_i[edge(i->j)]`` for every intermediate node ``j``; with ``node_bn``
    each node output passes a non-affine BatchNorm (DARTS-PRIME's clamp activation needs it).
    """

    def __init__(self, family: str, topology: CellTopology, channels: int, node_bn: bool = False):
        super().__init__()
        self.topology = topology
        self.channels = channels
        self.node_bn = node_bn
        n_total = topology.num_inputs + topology.num_nodes
        self.sources = nn.ModuleList(
            FusedSource(family, topology, src, channels,
                        2 if topology.reduction and src < topology.num_inputs else 1)
            for src in range(n_total - 1)
        )

    def fused_sources(self) -> list[FusedSource]:
        """The :class:`FusedSource` of every node that has outgoing edges, in node order."""
        return [cast(FusedSource, s) for s in self.sources]  # nn.ModuleList items are typed as nn.Module

    def forward(self, inputs: Sequence[Tensor], weights: Tensor, active: Tensor | None = None) -> list[Tensor]:
        """Returns the intermediate node outputs."""
        topo = self.topology
        nodes: list[Tensor] = list(inputs)
        # each source's mix split into its edges once: the backward of one unbind stacks the edge gradients,
        # where indexing every edge would allocate a zero-filled gradient of the whole mix per edge and add them
        mixes: list[tuple[Tensor, ...] | None] = [None] * len(self.sources)
        for src in range(topo.num_inputs):
            mixes[src] = _edges(self.sources[src](nodes[src], weights, active))
        ref = nodes[0]
        stride = 2 if topo.reduction else 1
        out_shape = (ref.shape[0], self.channels, -(-ref.shape[2] // stride), -(-ref.shape[3] // stride))
        for dst in topo.intermediate_nodes:
            parts = [
                mix[dst - max(src + 1, topo.num_inputs)]
                for src, mix in enumerate(mixes[:dst])
                if mix is not None
            ]
            node = parts[0] if parts else ref.new_zeros(out_shape).contiguous(memory_format=layout_of(ref))
            for part in parts[1:]:
                node = node + part
            if self.node_bn:
                node = _bn(node)
            nodes.append(node)
            if dst < len(self.sources):
                mixes[dst] = _edges(self.sources[dst](node, weights, active))
        return nodes[topo.num_inputs:]
