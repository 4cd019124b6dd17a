"""Candidate operations, one module per op, as defined by the DARTS and NAS-Bench-201 code.

These plain modules build the evaluation networks (``dnas train``) and the reference supernet
(every op of every edge computed separately), against which the fused supernet is tested and
benchmarked. ``affine=False`` is the search-time setting (BatchNorm without learned scale and
shift, and pooling followed by a non-affine BatchNorm in the DARTS family).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from dnas.errors import DnasError


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv(k, stride, padding, dilation) -> BN."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, affine: bool, dilation: int = 1):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise Conv(k, dilation) -> pointwise Conv -> BN."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, dilation: int, affine: bool):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convolutions (DARTS' ``sep_conv``); only the first strides."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, affine: bool):
        super().__init__(
            DilConv(c_in, c_in, k, stride, padding, 1, affine),
            DilConv(c_in, c_out, k, 1, padding, 1, affine),
        )


class FactorizedReduce(nn.Module):
    """Stride-2 'identity': ReLU, two offset 1x1 stride-2 convolutions concatenated, BN."""

    def __init__(self, c_in: int, c_out: int, affine: bool):
        super().__init__()
        if c_out % 2:
            raise ValueError("FactorizedReduce needs an even number of output channels")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    """The ``none`` op: a zero tensor of the output shape (only the reference supernet runs it)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class Noise(nn.Module):
    """RobustDARTS' ``noise`` op: standard normal noise of the output shape, the input is ignored."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return torch.randn_like(x)


def _pool(kind: str, stride: int) -> nn.Module:
    if kind == "avg":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    return nn.MaxPool2d(3, stride=stride, padding=1)


def _pool_bn(kind: str, c: int, stride: int, affine: bool) -> nn.Module:
    # DARTS search cells follow pooling with a non-affine BN; evaluation cells do not.
    return _pool(kind, stride) if affine else nn.Sequential(_pool(kind, stride), nn.BatchNorm2d(c, affine=False))


def _skip(c: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)


#: ``factory(C, stride, affine) -> nn.Module``: an op on ``C`` channels that keeps them (and halves the
#: resolution at stride 2); ``affine=False`` builds the search supernet's op, ``affine=True`` the evaluation network's
OpFactory = Callable[[int, int, bool], nn.Module]

# DARTS family: op(C, stride, affine); the cell keeps C channels on every edge.
DARTS_OP_FACTORIES: dict[str, OpFactory] = {
    "none": lambda c, s, a: Zero(s),
    "noise": lambda c, s, a: Noise(s),
    "avg_pool_3x3": lambda c, s, a: _pool_bn("avg", c, s, a),
    "max_pool_3x3": lambda c, s, a: _pool_bn("max", c, s, a),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda c, s, a: SepConv(c, c, 3, s, 1, a),
    "sep_conv_5x5": lambda c, s, a: SepConv(c, c, 5, s, 2, a),
    "dil_conv_3x3": lambda c, s, a: DilConv(c, c, 3, s, 2, 2, a),
    "dil_conv_5x5": lambda c, s, a: DilConv(c, c, 5, s, 4, 2, a),
}

# NAS-Bench-201: cells keep C channels and stride 1; pooling has no BN in search or evaluation.
NB201_OP_FACTORIES: dict[str, OpFactory] = {
    "none": lambda c, s, a: Zero(s),
    "skip_connect": lambda c, s, a: nn.Identity(),
    "nor_conv_1x1": lambda c, s, a: ReLUConvBN(c, c, 1, s, 0, a),
    "nor_conv_3x3": lambda c, s, a: ReLUConvBN(c, c, 3, s, 1, a),
    "avg_pool_3x3": lambda c, s, a: _pool("avg", s),
}


#: the op table of each image family (:func:`dnas.register_op` adds to them)
OP_FACTORIES: dict[str, dict[str, OpFactory]] = {"darts": DARTS_OP_FACTORIES, "nb201": NB201_OP_FACTORIES}


def make_op(family: str, name: str, c: int, stride: int, affine: bool) -> nn.Module:
    """The op ``name`` of ``family``'s table: ``factory(C, stride, affine)``."""
    table = OP_FACTORIES["darts" if family == "darts" else "nb201"]
    if name not in table:
        raise DnasError(f"the {family} family has no op {name!r}; ops are {', '.join(table)} (dnas.register_op "
                        "adds one)")
    return table[name](c, stride, affine)


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's reduction block: two ReLU-Conv-BN 3x3 plus an avg-pool + 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, 1, affine=True)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine=True)
        if stride == 2:
            self.downsample: nn.Module = nn.Sequential(
                nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False)
            )
        elif c_in != c_out:
            self.downsample = ReLUConvBN(c_in, c_out, 1, 1, 0, affine=True)
        else:
            self.downsample = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))
