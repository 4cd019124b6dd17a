"""Activation slot: how architecture parameters ``alpha`` become the weights of the mixed ops.

An activation returns, per cell type, the ``(E, K)`` matrix ``A(alpha)`` that multiplies the op
outputs (it may be stochastic during search), the deterministic ``strength`` of each op used for
derivation, and optionally a host-side mask of ops whose weight is exactly zero, which the fused
supernet then does not compute.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dnas.components.base import Component
from dnas.registry import Registry


class Activation(Component):
    #: the supernet puts a non-affine BatchNorm on every intermediate node (for unnormalized weights)
    node_bn: bool = False
    #: the space's ``none`` op is kept (False: activations that cannot express "no edge" mask it)
    allows_none: bool = True

    def init_alpha(self, shape: tuple[int, int], generator: torch.Generator) -> Tensor:
        return 1e-3 * torch.randn(shape, generator=generator)

    def __call__(self, alpha: Tensor, cell_type: str) -> Tensor:
        raise NotImplementedError

    def strength(self, alpha: Tensor, cell_type: str) -> Tensor:
        """Deterministic per-op weights for derivation and reports."""
        return self(alpha, cell_type)

    def active_mask(self, weights: dict[str, Tensor]) -> dict[str, Tensor | None] | None:
        """CPU bool masks of the ops that may be nonzero, or None when every op is active."""
        return None

    def after_weight_step(self, alphas: dict[str, Tensor]) -> None:
        """Hook after each weight step (permanent pruning)."""


ACTIVATIONS: Registry[type[Activation]] = Registry("activation")


@ACTIVATIONS.register("softmax")
class Softmax(Activation):
    """DARTS' continuous relaxation: ``A(alpha)_{e,o} = exp(alpha_{e,o}) / sum_o' exp(alpha_{e,o'})``."""

    name = "softmax"

    def __init__(self, *, init_std: float = 1e-3):
        self.init_std = init_std

    def init_alpha(self, shape: tuple[int, int], generator: torch.Generator) -> Tensor:
        return self.init_std * torch.randn(shape, generator=generator)

    def __call__(self, alpha: Tensor, cell_type: str) -> Tensor:
        return torch.softmax(alpha, dim=-1)
