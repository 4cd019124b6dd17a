"""Widening a partial-channel supernet: net2wider by random duplication (DrNAS' progressive stages;
code: xiangning-chen/DrNAS ``net2wider.py`` and the ops' ``wider`` methods).

Going from ``partial = K`` to ``K' < K``, every op's ``C/K`` channels become ``C/K'``. Each convolution
weight of every op gets its new input and output channels as copies of randomly chosen existing
ones, without rescaling (``InChannelWider``, ``OutChannelWider``)::

    W' = [W, W[:, i]]   (new input channels: i ~ U{0..c-1}, one index per new channel)
    W'' = [W', W'[o]]   (new output channels: o ~ U{0..c-1})

with the official op's order and index sharing: a dense convolution draws its input indices, then
its output indices; a depthwise convolution draws its output (= channel) indices, which the
pointwise convolution after it reuses for its input channels (``SepConv.wider``,
``DilConv.wider``); the two halves of a factorized reduction are widened separately. The
non-affine BatchNorms of the search supernet hold no parameters or statistics. Everything outside
the ops (stem, preprocessing, classifier) keeps its shape and is copied. The function the network
computes changes (no rescaling), as in the official code.

A :class:`Widening` records the indices, so that the weight optimizer's momentum buffers are
widened with the same ones (``configure_optimizer``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dnas.supernet.fused import FusedCell
from dnas.supernet.kinds import FusedKind
from dnas.supernet.network import Supernet


@dataclass
class ParamWidening:
    """One plain parameter of one op: its new input-channel and output-channel copies."""

    kind_old: FusedKind
    kind_new: FusedKind
    member: int
    position: int  # in the plain op's parameter order
    in_index: Tensor | None
    out_index: Tensor


def widen_tensor(t: Tensor, in_index: Tensor | None, out_index: Tensor) -> Tensor:
    """``t`` with the input channels ``in_index`` appended (dim 1), then the output channels ``out_index``
    (dim 0)."""
    if in_index is not None:
        t = torch.cat([t, t[:, in_index]], dim=1)
    return torch.cat([t, t[out_index]], dim=0)


def _member_pairs(old: Supernet, new: Supernet) -> Iterator[tuple[FusedKind, FusedKind, int]]:
    for cell_old, cell_new in zip(old.node_cells(), new.node_cells(), strict=True):
        if not isinstance(cell_old, FusedCell) or not isinstance(cell_new, FusedCell):
            raise TypeError("widening needs fused supernets (build_supernet(fused=True))")
        for src_old, src_new in zip(cell_old.fused_sources(), cell_new.fused_sources(), strict=True):
            for op in src_old.op_names:
                kind_old, kind_new = src_old.kind(op), src_new.kind(op)
                for i in range(len(src_old.members[op])):
                    yield kind_old, kind_new, i


def plan_widening(old: Supernet, new: Supernet, generator: torch.Generator) -> list[ParamWidening]:
    """The random channel copies that widen every op of ``old`` to its shape in ``new`` (module docstring)."""
    plan: list[ParamWidening] = []
    for kind_old, kind_new, i in _member_pairs(old, new):
        after_depthwise: Tensor | None = None
        for j, (p_old, p_new) in enumerate(zip(kind_old.member_parameters(i), kind_new.member_parameters(i),
                                               strict=True)):
            out_old, out_new = p_old.shape[0], p_new.shape[0]
            depthwise = p_new.shape[1] == 1  # (c, 1, k, k); a dense weight has c' >= 2 input channels here
            in_index = None
            if not depthwise:
                in_index = after_depthwise if after_depthwise is not None else torch.randint(
                    p_old.shape[1], (p_new.shape[1] - p_old.shape[1],), generator=generator)
            out_index = torch.randint(out_old, (out_new - out_old,), generator=generator)
            after_depthwise = out_index if depthwise else None
            plan.append(ParamWidening(kind_old, kind_new, i, j, in_index, out_index))
    return plan


@torch.no_grad()
def apply_widening(plan: list[ParamWidening], old_of: Callable[[Tensor], Tensor],
                   new_of: Callable[[Tensor], Tensor]) -> None:
    """Fill the wider tensors ``new_of(p)`` of every op parameter from the narrower ``old_of(p)`` (the
    parameters themselves, or the optimizer's buffers of them) by ``plan``."""
    for step in plan:
        source = step.kind_old.member_views(step.member, old_of)[step.position]
        target = step.kind_new.member_views(step.member, new_of)[step.position]
        target.copy_(widen_tensor(source, step.in_index, step.out_index))


def op_parameters(net: Supernet) -> set[nn.Parameter]:
    """The parameters of the ops of ``net``'s cells (what widening changes)."""
    return {p for cell in net.node_cells() for p in cell.parameters()}


@torch.no_grad()
def copy_outside_ops(old: Supernet, new: Supernet) -> None:
    """Copy every parameter and buffer of ``old`` that is not an op's into ``new`` (same names, same shapes)."""
    ops = {id(p) for p in op_parameters(new)}
    params = dict(new.named_parameters())
    old_state = old.state_dict()
    for name, value in new.state_dict().items():
        if name in params and id(params[name]) in ops:
            continue
        value.copy_(old_state[name])
