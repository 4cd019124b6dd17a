"""Activation slot: how architecture parameters ``alpha`` become the weights of the mixed ops.

An activation returns, per cell type, the ``(E, K)`` matrix ``A(alpha)`` that multiplies the op
outputs (it may be stochastic during search), the deterministic ``strength`` of each op used for
derivation, and optionally a host-side mask of ops whose weight is exactly zero, which the fused
supernet then does not compute.

Every activation takes ``exclude``: op names (comma-separated) taken out of the competition, e.g.
``activation.exclude=none`` searches the DARTS space with Lambda-DARTS' 7 ops. An excluded op has
weight exactly 0 and strength 0, gets no gradient, is never computed, and does not enter the
softmax normaliser (``A = softmax over the kept ops``); the derivation therefore never picks it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor

from dnas.components.base import Component
from dnas.errors import DnasError
from dnas.registry import Registry

if TYPE_CHECKING:
    from dnas.spaces.base import SearchSpace


@runtime_checkable
class GatedActivation(Protocol):
    """The capability of an activation with stochastic binary gates: the differentiable probability
    ``P(g != 0)`` of every gate, which PR-DARTS' regularizer acts on (other activations: ``A(alpha)``)."""

    def probability(self, alpha: Tensor, cell_type: str | None = None) -> Tensor: ...


def op_names(text: str | None) -> tuple[str, ...]:
    """``"none, skip_connect"`` -> ``("none", "skip_connect")`` (empty for None or "")."""
    return tuple(name.strip() for name in str(text or "").split(",") if name.strip())


class Activation(Component):
    #: the supernet puts a non-affine BatchNorm on every intermediate node (for unnormalized weights)
    node_bn: bool = False
    #: the space's ``none`` op is kept (False: activations that cannot express "no edge" exclude it)
    allows_none: bool = True
    #: ops can be taken out during the search by :meth:`restrict` (progressive pruning)
    prunable: bool = False

    def __init__(self, *, exclude: str = ""):
        self.exclude = op_names(exclude)
        self._competing: dict[str, Tensor | None] = {}  # host masks of the ops ``exclude`` leaves (None: all)
        self._kept: dict[str, Tensor | None] = {}  # the same, less the ops :meth:`restrict` took out
        self._kept_on: dict[tuple[str, str], Tensor] = {}  # ``_kept`` on the device of alpha
        self._bound = False

    def excluded_ops(self) -> frozenset[str]:
        return frozenset(self.exclude) | (frozenset() if self.allows_none else frozenset({"none"}))

    def bind(self, space: SearchSpace) -> None:
        present = {op for topo in space.cells.values() for ops in topo.edge_ops for op in ops}
        unknown = [op for op in self.exclude if op not in present]
        if unknown:
            raise DnasError(f"activation {self.name} exclude names {', '.join(unknown)}, which the {space.name} "
                            f"space does not have; its ops are {', '.join(sorted(present))}")
        excluded = self.excluded_ops()
        self._kept = {}
        for cell_type, topo in space.cells.items():
            kept = torch.tensor([[op not in excluded for op in ops] for ops in topo.edge_ops], dtype=torch.bool)
            if not kept.any(dim=1).all():
                raise DnasError(f"activation {self.name} exclude={','.join(self.exclude)} leaves an edge of the "
                                f"{space.name} {cell_type} cell without any op")
            self._kept[cell_type] = None if kept.all() else kept
        self._competing = dict(self._kept)
        self._kept_on = {}
        self._bound = True

    def restrict(self, masks: dict[str, Tensor]) -> None:
        """Take the ops outside ``masks`` (bool, per cell type) out of the competition as ``exclude``
        does, on top of it (progressive pruning). Only activations with ``prunable`` honour it."""
        if not self.prunable:
            raise DnasError(f"activation {self.name} keeps its own op masks; ops cannot be pruned from it")
        for cell_type, mask in masks.items():
            base = self._competing.get(cell_type)
            kept = mask.cpu() if base is None else base & mask.cpu()
            self._kept[cell_type] = None if kept.all() else kept
        self._kept_on = {}

    def competing(self, cell_type: str, like: Tensor) -> Tensor | None:
        """Bool mask (device of ``like``) of the ops ``exclude`` leaves, pruned or not (None: all)."""
        mask = self._competing.get(cell_type)
        return None if mask is None else mask.to(like.device)

    def kept(self, cell_type: str, like: Tensor) -> Tensor | None:
        """Bool mask (device of ``like``) of the ops that take part, None when all of them do."""
        if not self._bound:
            if self.exclude:
                raise DnasError(f"activation {self.name} with exclude needs the search space: call bind(space)")
            return None
        mask = self._kept.get(cell_type)
        if mask is None:
            return None
        key = (cell_type, str(like.device))
        if key not in self._kept_on:
            self._kept_on[key] = mask.to(like.device)
        return self._kept_on[key]

    def init_alpha(self, shape: tuple[int, int], generator: torch.Generator) -> Tensor:
        return 1e-3 * torch.randn(shape, generator=generator)

    def __call__(self, alpha: Tensor, cell_type: str) -> Tensor:
        raise NotImplementedError

    def strength(self, alpha: Tensor, cell_type: str) -> Tensor:
        """Deterministic per-op weights for derivation and reports."""
        return self(alpha, cell_type)

    def active_mask(self, weights: dict[str, Tensor]) -> dict[str, Tensor | None] | None:
        """CPU bool masks of the ops that may be nonzero, or None when every op is active."""
        masks = {t: self._kept.get(t) for t in weights}
        return masks if any(m is not None for m in masks.values()) else None

    def after_weight_step(self, alphas: dict[str, Tensor]) -> None:
        """Hook after each weight step (permanent pruning)."""


ACTIVATIONS: Registry[type[Activation]] = Registry("activation")


@ACTIVATIONS.register("softmax")
class Softmax(Activation):
    """DARTS' continuous relaxation over the kept ops ``O_e`` of each edge (all ops by default)::

        A(alpha)_{e,o} = exp(alpha_{e,o}) / sum_{o' in O_e} exp(alpha_{e,o'})   (o in O_e),   0 otherwise
    """

    prunable = True

    def __init__(self, *, init_std: float = 1e-3, exclude: str = ""):
        super().__init__(exclude=exclude)
        self.init_std = init_std

    def init_alpha(self, shape: tuple[int, int], generator: torch.Generator) -> Tensor:
        return self.init_std * torch.randn(shape, generator=generator)

    def __call__(self, alpha: Tensor, cell_type: str) -> Tensor:
        kept = self.kept(cell_type, alpha)
        if kept is not None:
            alpha = alpha.masked_fill(~kept, float("-inf"))
        return torch.softmax(alpha, dim=-1)
