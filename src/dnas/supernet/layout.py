"""Memory layouts of the supernet's activations: channels-last (NHWC) or contiguous (NCHW).

The fused cells keep every activation in the layout of the supernet's input (:func:`search_layout`
picks it): PyTorch's CPU BatchNorm backward is 3-4x slower when its input and its incoming gradient
differ in layout, and a layout change costs a copy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dnas.supernet.differentiation import is_twice_differentiated


def layout_of(x: Tensor) -> torch.memory_format:
    """The memory layout ``x`` is stored in: ``channels_last`` (NHWC) or ``contiguous_format`` (NCHW).

    The fused cells keep every activation in the layout of the supernet's input (see
    :func:`dnas.supernet.network.search_layout`): PyTorch's CPU BatchNorm backward is 3-4x slower
    when its input and its incoming gradient differ in layout, and a layout change costs a copy.
    """
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format

def channels_last_view(x: Tensor) -> Tensor:
    """A channels-last ``(..., C, H, W)`` tensor as its memory order ``(..., H, W, C)`` (a view)."""
    return x.movedim(-3, -1)

def memory_order(x: Tensor) -> Tensor:
    """A ``(B, C, H, W)`` tensor as a view in its memory order: ``(B, H, W, C)`` if channels-last."""
    return channels_last_view(x) if layout_of(x) == torch.channels_last else x


def search_layout(x: Tensor) -> Tensor:
    """The supernet's input in the memory layout its activations are kept in: channels-last (NHWC) on
    CPU, where oneDNN's convolutions, the pooling and the BatchNorm forward are faster in it
    (docs/speed.md), except for graphs built under :func:`~dnas.supernet.differentiation.twice_differentiated`;
    unchanged on other devices (not measured there). The fused cells keep every activation in the
    layout of their input (:func:`layout_of`)."""
    if x.device.type != "cpu" or x.dim() != 4:
        return x
    return x.contiguous() if is_twice_differentiated() else x.contiguous(memory_format=torch.channels_last)
