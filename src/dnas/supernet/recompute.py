"""Autograd Functions that keep less for the backward, or give a cheaper double backward.

* :func:`conv_of_recomputable`: a convolution whose input the graph does not otherwise keep (a
  depthwise convolution's output before the pointwise one; the parity phases of a dilated depthwise
  convolution's input) keeps the tensors that input is computed from and recomputes it in the
  backward, only when the weight's gradient is wanted.
* :func:`dilated2_depthwise`: a dilation-2 depthwise convolution computed as undilated ones on the
  input's parity phases (oneDNN's dilated depthwise kernels are several times slower on CPU).
* :class:`BoxSum`: the 3x3 window sums of average pooling, whose backward is an ordinary transposed
  convolution (one convolution in a double backward, where PyTorch's own loops over the groups).

Graphs that will be differentiated twice
(:func:`~dnas.supernet.differentiation.twice_differentiated`) and forwards without gradients keep
what plain autograd keeps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dnas.supernet.differentiation import is_twice_differentiated
from dnas.supernet.layout import layout_of


def conv_of_recomputable(inp: Tensor, weight: Tensor, recompute: Callable[..., Tensor], sources: tuple[Tensor, ...],
                          *, padding: int = 0, groups: int = 1) -> Tensor:
    """``conv2d(inp, weight)`` (stride 1) where ``inp = recompute(*sources)``, keeping ``sources`` for the
    backward instead of ``inp`` when the graph is differentiated once.

    Plain autograd keeps a convolution's input for its weight's gradient. Here ``inp`` is a tensor the
    graph does not otherwise keep (a depthwise convolution's output before the pointwise one; the
    parity phases of a dilated depthwise convolution's input) and ``sources`` are tensors it keeps
    anyway (their own convolutions' inputs), so :class:`_ConvOfRecomputedInput` keeps nothing new and
    recomputes ``inp`` in the backward when the weight's gradient is needed (the weight step; the
    architecture step needs only the input gradient, which reads the weight). In a DARTS-space weight
    step that is 37% less saved activation memory, for one more depthwise forward per stage
    (docs/speed.md). Graphs differentiated twice
    (:func:`~dnas.supernet.differentiation.twice_differentiated`) and forwards without gradients take
    the plain path.
    """
    if keeps_plain_tensors():
        return F.conv2d(inp, weight, padding=padding, groups=groups)
    # a view, so that the backward can ask the engine whether the weight's gradient is wanted (_wanted)
    return _ConvOfRecomputedInput.apply(inp, weight.view_as(weight), padding, groups, recompute, *sources)

def keeps_plain_tensors() -> bool:
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

def dilated2_depthwise(x: Tensor, weight: Tensor, stride: int, k: int) -> Tensor:
    """Depthwise k x k convolution with dilation 2 and padding k-1, computed without dilation.

    A dilation-2 convolution only mixes pixels of equal parity: with stride 2 it is the undilated
    convolution of ``x[:, :, ::2, ::2]`` (padding (k-1)/2); with stride 1 the four parity phases
    are stacked along the batch, convolved undilated and interleaved again. oneDNN's dilated
    depthwise kernels are several times slower on CPU than the plain ones (docs/speed.md).
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
    y = conv_of_recomputable(parity_phases(x), weight, parity_phases, (x,), padding=pad, groups=groups)
    y = y.permute(0, 2, 3, 1)
    return y.reshape(b, 2, 2, h // 2, w // 2, c).permute(0, 3, 1, 4, 2, 5).reshape(b, h, w, c).permute(0, 3, 1, 2)

def parity_phases(x: Tensor) -> Tensor:
    """The four parity phases of a channels-last ``(B, C, H, W)`` tensor stacked along the batch:
    ``(4B, C, H/2, W/2)`` channels-last, phase ``(i, j)`` of sample ``b`` at ``b*4 + 2i + j``."""
    b, c, h, w = x.shape
    nhwc = x.permute(0, 2, 3, 1)
    phases = nhwc.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 2, 4, 1, 3, 5).reshape(b * 4, h // 2, w // 2, c)
    return phases.permute(0, 3, 1, 2)

class BoxSum(torch.autograd.Function):
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
