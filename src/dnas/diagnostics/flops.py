"""The arithmetic a piece of code does, counted as it runs: FLOPs and forward/backward passes.

Every convolution and matrix product PyTorch executes while :func:`count_work` is active is
recorded (forward and backward, any module, any dtype), with 2 FLOPs per multiply-add:

    convolution           2 * N * H_out * W_out * C_out * (C_in / groups) * k_h * k_w
                          (transposed: the input's H * W instead of the output's)
    its backward          the same for the input gradient and again for the weight gradient,
                          each counted only when autograd computes it (``output_mask``): an
                          architecture step, which needs no weight gradients, costs less
    matrix product        (m x k) @ (k x n): 2 * m * k * n (batched: times the batch)

Biases, BatchNorm, activations, pooling, concatenation and other elementwise work are not counted
as FLOPs: their cost is memory traffic, not arithmetic. For them the bytes they touch are recorded
instead (``bytes_by_size``): every other op that moves data (not a view, not an allocation) reads
its tensor arguments and writes its tensor results once,

    bytes = sum of nbytes(tensor arguments) + sum of nbytes(tensor results)

(an in-place op counts its operand as read and written), keyed by the element count of the op's
largest tensor, so that a roofline can charge it at the bandwidth the machine reaches on tensors of
that size. It is a lower bound of the traffic: a kernel that passes over its input twice
(BatchNorm's statistics, then the normalisation) is charged once.

PyTorch's own ``torch.utils.flop_counter`` counts the weight gradient of a grouped convolution as
if it were dense, ``groups`` times too much, which matters for the depthwise convolutions of the
DARTS space; hence these few lines of our own.

Each record keeps the op's kind (``dense``, ``depthwise`` or ``grouped`` convolution, ``matmul``),
its phase (``forward``, ``grad_input``, ``grad_weight``) and the number of output positions
``N * H_out * W_out`` of the convolution, so that a roofline can compare every part with what the
machine attains at the same feature-map size (``bench/roofline.py``).

Passes: with ``watch=net`` every call of ``net`` counts as a forward pass, and every backward
pass that reaches its output (a ``backward()`` or ``autograd.grad`` through the logits; a double
backward through them counts again) as a backward pass.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten
Key = tuple[str, str, int]  # (kind, phase, output positions)


@dataclass
class Work:
    """FLOPs by ``(kind, phase, output positions)`` and the passes through the watched module."""

    flops_by_key: Counter[Key] = field(default_factory=Counter)
    forwards: int = 0
    backwards: int = 0
    # bytes touched by the memory-bound ops, by the element count of each op's largest tensor
    bytes_by_size: Counter[int] = field(default_factory=Counter)

    @property
    def flops(self) -> int:
        return sum(self.flops_by_key.values())

    @property
    def bytes(self) -> int:
        """Bytes read and written by the ops that are not counted as FLOPs."""
        return sum(self.bytes_by_size.values())

    def by(self, part: str) -> dict[str, int]:
        """FLOPs summed by ``"kind"`` or ``"phase"``."""
        index = {"kind": 0, "phase": 1}[part]
        out: Counter[str] = Counter()
        for (kind, phase, _), flops in self.flops_by_key.items():
            out[(kind, phase)[index]] += flops
        return dict(out)

    def __add__(self, other: Work) -> Work:
        return Work(self.flops_by_key + other.flops_by_key, self.forwards + other.forwards,
                    self.backwards + other.backwards, self.bytes_by_size + other.bytes_by_size)

    def __sub__(self, other: Work) -> Work:
        return Work(self.flops_by_key - other.flops_by_key, self.forwards - other.forwards,
                    self.backwards - other.backwards, self.bytes_by_size - other.bytes_by_size)

    def copy(self) -> Work:
        return Work(Counter(self.flops_by_key), self.forwards, self.backwards, Counter(self.bytes_by_size))


def _conv_kind(groups: int, weight: Tensor, transposed: bool) -> str:
    if groups == 1:
        return "dense"
    per_group_in = weight.shape[0] // groups if transposed else weight.shape[1]
    return "depthwise" if per_group_in == 1 else "grouped"


def _conv_flops(larger: Tensor, weight: Tensor) -> tuple[int, int]:
    """(FLOPs, output positions) of one convolution; ``larger`` is the output (the input if transposed).

    ``weight`` holds ``C_out * (C_in / groups) * k_h * k_w`` elements (transposed: ``C_in * (C_out / groups) * ...``),
    so ``2 * N * prod(spatial) * weight.numel()`` is the formula of the module docstring.
    """
    positions = larger.shape[0] * math.prod(larger.shape[2:])
    return 2 * positions * weight.numel(), positions


def _convolution(args: tuple, out: Any) -> list[tuple[Key, int]]:
    x, weight, transposed, groups = args[0], args[1], args[6], args[8]
    flops, positions = _conv_flops(x if transposed else out, weight)
    return [((_conv_kind(groups, weight, transposed), "forward", positions), flops)]


def _convolution_backward(args: tuple, out: Any) -> list[tuple[Key, int]]:
    grad_out, x, weight, transposed, groups, mask = args[0], args[1], args[2], args[7], args[9], args[10]
    flops, positions = _conv_flops(x if transposed else grad_out, weight)
    kind = _conv_kind(groups, weight, transposed)
    phases = [p for p, wanted in zip(("grad_input", "grad_weight"), mask[:2], strict=True) if wanted]
    return [((kind, phase, positions), flops) for phase in phases]


def _matmul(a: Tensor, b: Tensor) -> list[tuple[Key, int]]:
    batch = math.prod(a.shape[:-2])
    return [(("matmul", "any", 0), 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1])]


_RULES: dict[Any, Callable[[tuple, Any], list[tuple[Key, int]]]] = {
    aten.convolution: _convolution,
    aten.convolution_backward: _convolution_backward,
    aten.mm: lambda args, out: _matmul(args[0], args[1]),
    aten.bmm: lambda args, out: _matmul(args[0], args[1]),
    aten.addmm: lambda args, out: _matmul(args[1], args[2]),
    aten.baddbmm: lambda args, out: _matmul(args[1], args[2]),
}


# ops that move no data: allocations (their memory is written by the op that fills it) and bookkeeping
_NO_TRAFFIC = {aten.empty, aten.empty_strided, aten.empty_like, aten.new_empty, aten.new_empty_strided,
               aten.detach, aten.lift_fresh, aten._local_scalar_dense, aten.set_, aten.resize_}


def _tensors(tree: Any) -> list[Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, Tensor)]


class _Recorder(TorchDispatchMode):
    def __init__(self, work: Work):
        super().__init__()
        self.work = work

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rule = _RULES.get(func.overloadpacket)
        if rule is not None:
            for key, flops in rule(args, out):
                self.work.flops_by_key[key] += flops
        elif not func.is_view and func.overloadpacket not in _NO_TRAFFIC:
            tensors = _tensors((args, kwargs)) + _tensors(out)
            if tensors:
                size = max(t.numel() for t in tensors)
                self.work.bytes_by_size[size] += sum(t.numel() * t.element_size() for t in tensors)
        return out


@contextmanager
def count_work(watch: nn.Module | None = None) -> Iterator[Work]:
    """Count the FLOPs (and the memory-bound ops' bytes) of everything run inside the block, and the
    passes through ``watch``.

    The returned :class:`Work` fills up while the block runs (read it after the block, or take
    differences of copies inside it). Counting slows every op down: never time inside the block.
    """
    work = Work()

    def count_backward(grad: Tensor) -> None:
        work.backwards += 1

    def count_forward(module: nn.Module, args: tuple, out: Any) -> None:
        work.forwards += 1
        first = out if isinstance(out, Tensor) else next((o for o in out if isinstance(o, Tensor)), None)
        if first is not None and first.requires_grad:
            first.register_hook(count_backward)

    handle = watch.register_forward_hook(count_forward) if watch is not None else None
    try:
        with _Recorder(work):
            yield work
    finally:
        if handle is not None:
            handle.remove()
