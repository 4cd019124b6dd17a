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
  its affine weight, and the shared ops' terms are one outer product (:meth:`FusedSource.forward`).

For the backward of a graph differentiated once, the pointwise convolutions keep the tensors their
depthwise outputs are computed from and recompute them (:func:`_conv_of_recomputable`), instead of
keeping copies.

The result is mathematically the per-edge computation; ``tests/test_supernet.py`` checks outputs
and gradients against :mod:`dnas.supernet.reference`. BatchNorm inside the cells always uses batch
statistics (it has no affine parameters and the supernet is only used on batches).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnas.spaces.base import CellTopology
from dnas.supernet.differentiation import is_twice_differentiated


def _bn(x: Tensor, weight: Tensor | None = None) -> Tensor:
    """Non-affine BatchNorm with batch statistics; ``weight`` scales its channels (the mixing weights)."""
    return F.batch_norm(x, None, None, weight, training=True, eps=1e-5)


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
    """One op kind on ``n`` edges. ``shared`` kinds return ``(B, C, H, W)``, others ``(B, m*C, H, W)`` (the
    ``m`` computed members along the channels). ``normalized`` kinds end with a non-affine BatchNorm that
    :class:`FusedSource` applies: they return its input."""

    shared = False
    normalized = False

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
        self.mode, self.normalized = mode, bn
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
        return y


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
        # the same numbers in either layout (a finite difference and an exact product must see one sample)
        noise = torch.randn(b, m * c, h, w, dtype=x.dtype, device=x.device)
        return noise.contiguous(memory_format=inp.layout)


class FusedFactorizedReduce(FusedKind):
    """``n`` FactorizedReduce ops (the stride-2 ``skip_connect``)."""

    normalized = True

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
        return y

    def _plain_shapes(self):
        half = self.c // 2
        return [(self.conv_1, torch.empty(half, self.c, 1, 1)), (self.conv_2, torch.empty(half, self.c, 1, 1))]


class FusedDilConv(FusedKind):
    """``n`` DilConv ops (ReLU, depthwise k x k with dilation, pointwise, BN) as grouped convs."""

    normalized = True

    def __init__(self, channels: int, n: int, stride: int, k: int, dilation: int):
        super().__init__(channels, n, stride)
        self.k, self.dilation = k, dilation
        self.depthwise = _conv_weight(n, (channels, 1, k, k))
        self.pointwise = _conv_weight(n, (channels, channels, 1, 1))

    def run(self, x: Tensor, sel: Tensor | None, stride: int, layout: torch.memory_format | None) -> Tensor:
        """The ``m`` ops up to their BatchNorm (its input) on ``x`` (``m`` inputs stacked along channels,
        channels-last); ``layout``: that of the source's terms the output goes to (None: the output feeds
        another stage and stays channels-last)."""
        m = self.n if sel is None else len(sel)
        depthwise = partial(self._depthwise, stride=stride)
        weight = _subset(self.depthwise, self.n, sel)
        z = _conv_of_recomputable(depthwise(x, weight), _subset(self.pointwise, self.n, sel), depthwise, (x, weight),
                                  groups=m)
        # z is channels-last (oneDNN keeps the input's layout). An output that feeds the node sums gets its
        # gradient back in their layout, and PyTorch's CPU BatchNorm backward with a channels-last
        # input and a contiguous gradient is 3-4x slower than with matching layouts: match it first.
        return z if layout is None else z.contiguous(memory_format=layout)

    def _depthwise(self, x: Tensor, weight: Tensor, stride: int) -> Tensor:
        if self.dilation == 2:
            return _dilated2_depthwise(x, weight, stride, self.k)
        return F.conv2d(x, weight, stride=stride, padding=(self.k - 1) // 2, groups=weight.shape[0])

    def forward(self, inp: _SourceInput, sel: Tensor | None) -> Tensor:
        m = self.n if sel is None else len(sel)
        return self.run(inp.relu_repeated(m), sel, self.stride, inp.layout)

    def _plain_shapes(self):
        c, k = self.c, self.k
        return [(self.depthwise, torch.empty(c, 1, k, k)), (self.pointwise, torch.empty(c, c, 1, 1))]


def _conv_of_recomputable(inp: Tensor, weight: Tensor, recompute: Callable[..., Tensor], sources: tuple[Tensor, ...],
                          *, padding: int = 0, groups: int = 1) -> Tensor:
    """``conv2d(inp, weight)`` (stride 1) where ``inp = recompute(*sources)``, keeping ``sources`` for the
    backward instead of ``inp`` when the graph is differentiated once.

    Plain autograd keeps a convolution's input for its weight's gradient. Here ``inp`` is a tensor the
    graph does not otherwise keep (a depthwise convolution's output before the pointwise one; the
    parity phases of a dilated depthwise convolution's input) and ``sources`` are tensors it keeps
    anyway (their own convolutions' inputs), so :class:`_ConvOfRecomputedInput` keeps nothing new and
    recomputes ``inp`` in the backward when the weight's gradient is needed (the weight step; the
    architecture step needs only the input gradient, which reads the weight). In a DARTS-space weight
    step that is 37% less saved activation memory, for one more depthwise forward per stage (README,
    speed). Graphs differentiated twice
    (:func:`~dnas.supernet.differentiation.twice_differentiated`) and forwards without gradients take
    the plain path.
    """
    if _keeps_plain_tensors():
        return F.conv2d(inp, weight, padding=padding, groups=groups)
    # a view, so that the backward can ask the engine whether the weight's gradient is wanted (_wanted)
    return _ConvOfRecomputedInput.apply(inp, weight.view_as(weight), padding, groups, recompute, *sources)


def _keeps_plain_tensors() -> bool:
    """Whether this forward keeps what plain autograd keeps: in graphs that will be differentiated
    twice (a double backward would redo every recomputation) and in forwards without gradients."""
    return is_twice_differentiated() or not torch.is_grad_enabled()


def _wanted(ctx, index: int) -> bool:
    """Whether the running backward uses the gradient of the custom Function's input ``index``.

    ``ctx.needs_input_grad`` only says that the input requires a gradient; ``torch.autograd.grad``
    w.r.t. other tensors (the architecture step's ``grad_alpha`` with the weights requiring gradients)
    does not use it, and PyTorch's own convolution then skips the weight's gradient: so does
    :class:`_ConvOfRecomputedInput` (and its recomputation). The input must not be a leaf (the engine
    cannot answer for leaves under ``autograd.grad``), hence the view its caller passes.
    """
    if not ctx.needs_input_grad[index]:
        return False
    node = ctx.next_functions[index][0]
    try:
        return node is not None and torch._C._will_engine_execute_node(node)
    except (AttributeError, RuntimeError):  # not answerable here: compute it
        return True


class _ConvOfRecomputedInput(torch.autograd.Function):
    """``z = conv2d(inp, w)`` keeping ``sources`` (with ``inp = recompute(*sources)``) instead of ``inp``.

        dL/dinp = conv2d^T(dL/dz, w)                 (reads the weight only)
        dL/dw   = correlation of dL/dz with inp      (needs inp: recomputed)

    The gradients of ``sources`` flow through ``inp``'s own graph, not through this node. The backward
    is made of differentiable ops, so a double backward through it is correct (it differentiates the
    recomputation too).
    """

    @staticmethod
    def forward(ctx, inp: Tensor, weight: Tensor, padding: int, groups: int, recompute: Callable[..., Tensor],
                *sources: Tensor) -> Tensor:
        ctx.padding, ctx.groups, ctx.recompute = padding, groups, recompute
        ctx.inp_shape, ctx.inp_layout = inp.shape, layout_of(inp)
        ctx.save_for_backward(weight, *sources)
        return F.conv2d(inp, weight, padding=padding, groups=groups)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        weight, *sources = ctx.saved_tensors
        need_inp, need_weight = _wanted(ctx, 0), _wanted(ctx, 1)
        if need_weight:
            inp = ctx.recompute(*sources)
        else:  # the input gradient reads only the input's shape and layout
            inp = torch.empty(ctx.inp_shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.inp_layout)
        pad = [ctx.padding, ctx.padding]
        grad_inp, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, inp, weight, None, [1, 1], pad, [1, 1], False, [0, 0], ctx.groups, [need_inp, need_weight, False])
        return grad_inp, grad_weight, None, None, None, *(None for _ in sources)


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
    y = _conv_of_recomputable(_parity_phases(x), weight, _parity_phases, (x,), padding=pad, groups=groups)
    y = y.permute(0, 2, 3, 1)
    return y.reshape(b, 2, 2, h // 2, w // 2, c).permute(0, 3, 1, 4, 2, 5).reshape(b, h, w, c).permute(0, 3, 1, 2)


def _parity_phases(x: Tensor) -> Tensor:
    """The four parity phases of a channels-last ``(B, C, H, W)`` tensor stacked along the batch:
    ``(4B, C, H/2, W/2)`` channels-last, phase ``(i, j)`` of sample ``b`` at ``b*4 + 2i + j``."""
    b, c, h, w = x.shape
    nhwc = x.permute(0, 2, 3, 1)
    phases = nhwc.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 2, 4, 1, 3, 5).reshape(b * 4, h // 2, w // 2, c)
    return phases.permute(0, 3, 1, 2)


class FusedSepConv(FusedKind):
    """``n`` SepConv ops: two stacked DilConv(dilation 1), the first one strided."""

    normalized = True

    def __init__(self, channels: int, n: int, stride: int, k: int):
        super().__init__(channels, n, stride)
        self.first = FusedDilConv(channels, n, stride, k, 1)
        self.second = FusedDilConv(channels, n, 1, k, 1)

    def forward(self, inp: _SourceInput, sel: Tensor | None) -> Tensor:
        m = self.n if sel is None else len(sel)
        y = self.first.run(inp.relu_repeated(m), sel, self.stride, None)
        return self.second.run(F.relu(_bn(y)), sel, 1, inp.layout)

    def member_parameters(self, i: int, grad: bool = False) -> list[Tensor]:
        return self.first.member_parameters(i, grad) + self.second.member_parameters(i, grad)


class FusedReLUConvBN(FusedKind):
    """``n`` ReLU-Conv-BN ops (NAS-Bench-201 ``nor_conv_kxk``) as one dense ``C -> n*C`` conv."""

    normalized = True

    def __init__(self, channels: int, n: int, stride: int, k: int):
        super().__init__(channels, n, stride)
        self.k = k
        self.weight = _conv_weight(n, (channels, channels, k, k))

    def forward(self, inp: _SourceInput, sel: Tensor | None) -> Tensor:
        return F.conv2d(inp.relu, _subset(self.weight, self.n, sel), stride=self.stride, padding=self.k // 2)

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
        inp = _SourceInput(x)
        nhwc = inp.layout == torch.channels_last
        terms: list[list[Tensor]] = [[] for _ in self.out_edges]
        shared: Tensor | None = None  # (E, B*C*H*W): the shared kinds' terms, in memory order
        shared_shape: tuple[int, ...] = ()
        shared_edges: set[int] = set()
        weighted: dict[tuple[int, ...], Tensor] = {}  # the convolution kinds' weighted outputs, by member edges
        for op in self.op_names:
            edge, col, local = (getattr(self, f"_{p}_{op}") for p in ("edge", "col", "local"))
            locals_ = self.member_locals[op]
            sel = None
            if active is not None:
                keep = active[self.member_edges[op], self.member_cols[op]]
                if not keep.any():
                    continue
                if not keep.all():
                    kept = keep.nonzero().flatten()
                    locals_ = [locals_[i] for i in kept.tolist()]
                    sel = kept.to(x.device)
                    edge, col, local = edge[sel], col[sel], local[sel]
            kind = self.kind(op)
            out = kind(inp, sel)
            values = weights[edge, col].to(out.dtype)
            if kind.shared:
                row = _memory_order(_bn(out) if kind.normalized else out)
                shared_shape, row = row.shape, row.reshape(-1)
                shared_edges.update(locals_)
                coef = values.new_zeros(len(self.out_edges)).index_put((local,), values).unsqueeze(1)
                # matrix products, whose backward is two matrix-vector products (outer's is elementwise)
                shared = torch.mm(coef, row[None]) if shared is None else torch.addmm(shared, coef, row[None])
                continue
            gamma = values.repeat_interleave(kind.c)
            y = _bn(out, gamma) if kind.normalized else out * gamma.view(1, -1, 1, 1)
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


def _memory_order(x: Tensor) -> Tensor:
    """A ``(B, C, H, W)`` tensor as a view in its memory order: ``(B, H, W, C)`` if channels-last."""
    return _channels_last_view(x) if layout_of(x) == torch.channels_last else x


def _slot_rows(out: Tensor, slots: int, nhwc: bool) -> list[Tensor]:
    """The ``slots`` outputs held in ``out`` (``(B, slots*C, H, W)``), each as a view in its memory order
    (``(B, H, W, C)`` for channels-last, else ``(B, C, H, W)``). The split is one ``unbind`` in memory
    order, so that its backward assembles the members' gradients in ``out``'s layout with one stack."""
    b, _, h, w = out.shape
    if nhwc:
        return list(_channels_last_view(out).view(b, h, w, slots, -1).unbind(3))
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


class FusedCell(nn.Module):
    """The node computation of one cell with fused sources.

    ``x_j = sum_{i<j} sum(terms_i[edge(i->j)])`` for every intermediate node ``j``; with ``node_bn``
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
                node = _bn(node)
            nodes.append(node)
            if dst < len(self.sources):
                terms[dst] = self.sources[dst](node, weights, active)
        return nodes[topo.num_inputs:]
