"""The fused op kinds: one candidate op on all the edges that leave one node, as one computation.

A kind on ``n`` edges holds the ``n`` edges' parameters stacked along the output channels and runs
them as one grouped call: depthwise convolutions with ``groups=m*C``, pointwise convolutions with
``groups=m``, dense convolutions as one ``C -> m*C`` convolution (``m`` the members whose weight
is not exactly zero). Parameter-free kinds (identity, pooling) run once for all edges (``shared``).
Kinds that end in a non-affine BatchNorm (``normalized``) return its input: the cell applies it
with the mixing weights as its affine weight (:class:`dnas.supernet.fused.FusedSource`).

Only the built-in ops (:data:`FUSED_OPS`) have a fused kind. Any other op, one registered with
:func:`dnas.register_op`, runs as :class:`PerEdgeOps`: the per-edge reference's own module for it on
each edge, called one by one, its outputs joined along the channels as a fused kind returns them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnas.errors import DnasError
from dnas.spaces.ops import make_op
from dnas.supernet.layout import channels_last_view, layout_of
from dnas.supernet.recompute import BoxSum, conv_of_recomputable, dilated2_depthwise


def batch_norm(x: Tensor, weight: Tensor | None = None) -> Tensor:
    """Non-affine BatchNorm with batch statistics; ``weight`` scales its channels (the mixing weights)."""
    return F.batch_norm(x, None, None, weight, training=True, eps=1e-5)

def stacked_conv_weight(n: int, shape: tuple[int, ...]) -> nn.Parameter:
    """``n`` independently initialised conv weights of ``shape`` stacked along the output channels."""
    w = torch.empty(n, *shape)
    for i in range(n):
        nn.init.kaiming_uniform_(w[i], a=5**0.5)  # nn.Conv2d's default initialisation
    return nn.Parameter(w.reshape(n * shape[0], *shape[1:]))

def member_subset(param: Tensor, n: int, sel: Tensor | None) -> Tensor:
    if sel is None:
        return param
    return param.view(n, -1, *param.shape[1:])[sel].reshape(-1, *param.shape[1:])

class SourceInput:
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

    def forward(self, inp: SourceInput, sel: Tensor | None) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def member_parameters(self, i: int, grad: bool = False) -> list[Tensor]:
        """Views of the parameters (or their gradients) of member ``i``, in the order of the plain
        op's ``parameters()``."""
        def of(p: Tensor) -> Tensor:
            if not grad:
                return p
            if p.grad is None:
                raise RuntimeError("member_parameters(grad=True) needs the gradients: run a backward pass first")
            return p.grad

        return self.member_views(i, of)

    def member_views(self, i: int, of: Callable[[Tensor], Tensor]) -> list[Tensor]:
        """Views of member ``i``'s part of ``of(p)`` (a tensor shaped like ``p``: the parameter, its
        gradient, an optimizer buffer) for every stacked parameter ``p``, in the plain op's order."""
        return [of(p).view(self.n, -1, *p.shape[1:])[i].reshape_as(ref) for p, ref in self._plain_shapes()]

    def _plain_shapes(self) -> list[tuple[Tensor, Tensor]]:
        return []

class SharedIdentity(FusedKind):
    shared = True

    def forward(self, inp: SourceInput, sel: Tensor | None) -> Tensor:
        return inp.x

class SharedPool(FusedKind):
    """3x3 pooling (then a non-affine BN in the DARTS family), computed once for all edges.

    Both poolings avoid PyTorch's slow CPU kernels for NCHW tensors (measured 4x and 2x faster,
    forward + backward, see docs/speed.md): average pooling without padded zeros in the count is a
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

    def forward(self, inp: SourceInput, sel: Tensor | None) -> Tensor:
        x = inp.x
        if self.mode == "avg":
            y = BoxSum.apply(x, self.ones.to(x.dtype), self.stride)
            y = y * inverse_counts(x.shape[2], x.shape[3], self.stride, x.device, x.dtype)
        else:
            y = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, self.stride, 1)
            y = y.contiguous(memory_format=inp.layout)
        return y

_COUNTS: dict[tuple, Tensor] = {}

def inverse_counts(h: int, w: int, stride: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``1 / (number of in-image pixels)`` of every 3x3 window (padding 1): ``count_include_pad=False``."""
    key = (h, w, stride, device, dtype)
    if key not in _COUNTS:
        ones = torch.ones(1, 1, h, w, device=device, dtype=dtype)
        _COUNTS[key] = 1.0 / F.conv2d(ones, torch.ones(1, 1, 3, 3, device=device, dtype=dtype), stride=stride,
                                      padding=1)
    return _COUNTS[key]

class FusedNoise(FusedKind):
    def forward(self, inp: SourceInput, sel: Tensor | None) -> Tensor:
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
        self.conv_1 = stacked_conv_weight(n, (half, channels, 1, 1))
        self.conv_2 = stacked_conv_weight(n, (half, channels, 1, 1))

    def forward(self, inp: SourceInput, sel: Tensor | None) -> Tensor:
        m = self.n if sel is None else len(sel)
        a = F.conv2d(inp.relu, member_subset(self.conv_1, self.n, sel), stride=2)
        b = F.conv2d(inp.relu[:, :, 1:, 1:], member_subset(self.conv_2, self.n, sel), stride=2)
        bsz, _, h, w = a.shape
        if inp.layout == torch.channels_last:  # each member's halves joined along the channels, in NHWC order
            a, b = channels_last_view(a), channels_last_view(b)
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
        self.depthwise = stacked_conv_weight(n, (channels, 1, k, k))
        self.pointwise = stacked_conv_weight(n, (channels, channels, 1, 1))

    def run(self, x: Tensor, sel: Tensor | None, stride: int, layout: torch.memory_format | None) -> Tensor:
        """The ``m`` ops up to their BatchNorm (its input) on ``x`` (``m`` inputs stacked along channels,
        channels-last); ``layout``: that of the source's terms the output goes to (None: the output feeds
        another stage and stays channels-last)."""
        m = self.n if sel is None else len(sel)
        depthwise = partial(self.depthwise_conv, stride=stride)
        weight = member_subset(self.depthwise, self.n, sel)
        pointwise = member_subset(self.pointwise, self.n, sel)
        z = conv_of_recomputable(depthwise(x, weight), pointwise, depthwise, (x, weight), groups=m)
        # z is channels-last (oneDNN keeps the input's layout). An output that feeds the node sums gets its
        # gradient back in their layout, and PyTorch's CPU BatchNorm backward with a channels-last
        # input and a contiguous gradient is 3-4x slower than with matching layouts: match it first.
        return z if layout is None else z.contiguous(memory_format=layout)

    def depthwise_conv(self, x: Tensor, weight: Tensor, stride: int) -> Tensor:
        if self.dilation == 2:
            return dilated2_depthwise(x, weight, stride, self.k)
        return F.conv2d(x, weight, stride=stride, padding=(self.k - 1) // 2, groups=weight.shape[0])

    def forward(self, inp: SourceInput, sel: Tensor | None) -> Tensor:
        m = self.n if sel is None else len(sel)
        return self.run(inp.relu_repeated(m), sel, self.stride, inp.layout)

    def _plain_shapes(self):
        c, k = self.c, self.k
        return [(self.depthwise, torch.empty(c, 1, k, k)), (self.pointwise, torch.empty(c, c, 1, 1))]

class FusedSepConv(FusedKind):
    """``n`` SepConv ops: two stacked DilConv(dilation 1), the first one strided."""

    normalized = True

    def __init__(self, channels: int, n: int, stride: int, k: int):
        super().__init__(channels, n, stride)
        self.first = FusedDilConv(channels, n, stride, k, 1)
        self.second = FusedDilConv(channels, n, 1, k, 1)

    def forward(self, inp: SourceInput, sel: Tensor | None) -> Tensor:
        m = self.n if sel is None else len(sel)
        y = self.first.run(inp.relu_repeated(m), sel, self.stride, None)
        return self.second.run(F.relu(batch_norm(y)), sel, 1, inp.layout)

    def member_views(self, i: int, of: Callable[[Tensor], Tensor]) -> list[Tensor]:
        return self.first.member_views(i, of) + self.second.member_views(i, of)

class FusedReLUConvBN(FusedKind):
    """``n`` ReLU-Conv-BN ops (NAS-Bench-201 ``nor_conv_kxk``) as one dense ``C -> n*C`` conv."""

    normalized = True

    def __init__(self, channels: int, n: int, stride: int, k: int):
        super().__init__(channels, n, stride)
        self.k = k
        self.weight = stacked_conv_weight(n, (channels, channels, k, k))

    def forward(self, inp: SourceInput, sel: Tensor | None) -> Tensor:
        return F.conv2d(inp.relu, member_subset(self.weight, self.n, sel), stride=self.stride, padding=self.k // 2)

    def _plain_shapes(self):
        return [(self.weight, torch.empty(self.c, self.c, self.k, self.k))]

class PerEdgeOps(FusedKind):
    """An op without a fused kind (one registered with :func:`dnas.register_op`) on ``n`` edges: one
    module per edge, built as the per-edge reference builds it (``factory(C, stride, affine=False)``), so
    that both supernets hold the same modules and compute the same outputs and gradients. The computed
    members' outputs are joined along the channels, ``(B, m*C, H, W)`` in the source's layout; the cell
    scales each member by its mixing weight, ``y_e = w_{e,o} * o_e(x)``, as the reference does."""

    def __init__(self, family: str, op: str, channels: int, n: int, stride: int):
        super().__init__(channels, n, stride)
        self.op = op
        self.ops = nn.ModuleList(make_op(family, op, channels, stride, affine=False) for _ in range(n))

    def forward(self, inp: SourceInput, sel: Tensor | None) -> Tensor:
        # the fused cell passes the computed members as host indices (run_members): no device round trip
        return self.run_members(inp, None if sel is None else sel.tolist())

    def run_members(self, inp: SourceInput, members: list[int] | None) -> Tensor:
        """The outputs of the modules ``members`` (None: all) on the source's input, joined along the channels."""
        outputs = [self.ops[i](inp.x) for i in (range(self.n) if members is None else members)]
        for y in outputs:
            if y.dim() != 4 or y.shape[1] != self.c:
                raise DnasError(f"op {self.op!r} returned a tensor of shape {tuple(y.shape)} for {self.c} input "
                                f"channels; an op keeps the channels (and halves the resolution at stride 2)")
        return torch.cat(outputs, dim=1).contiguous(memory_format=inp.layout)

    def member_views(self, i: int, of: Callable[[Tensor], Tensor]) -> list[Tensor]:
        return [of(p) for p in self.ops[i].parameters()]


#: DARTS-'s auxiliary skip connection, a skip connection on every edge outside the mixing
AUX_SKIP = "aux_skip"
#: the ops that have a fused kind; every other op runs as :class:`PerEdgeOps`
FUSED_OPS = frozenset({"skip_connect", AUX_SKIP, "avg_pool_3x3", "max_pool_3x3", "noise", "sep_conv_3x3",
                       "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "nor_conv_1x1", "nor_conv_3x3"})


def make_fused_kind(family: str, op: str, c: int, n: int, stride: int) -> FusedKind:
    """The fused kind computing ``op`` on ``n`` edges (a :class:`PerEdgeOps` for an op outside :data:`FUSED_OPS`)."""
    if op not in FUSED_OPS:
        return PerEdgeOps(family, op, c, n, stride)
    darts = family == "darts"
    if op in ("skip_connect", AUX_SKIP):
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
