"""Regularizer slots.

* Weight regularizers act on the lower level: after the ordinary weight backward pass they add
  their gradient to ``w.grad`` (before clipping and the SGD step).
* Architecture regularizers act on the upper level: they return named terms that are added to
  the validation loss of the architecture step.

Both receive the iteration's :class:`~dnas.bilevel.problem.StepContext` (epoch, progress through
the search) for ramps; an architecture regularizer called outside a search gets None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from dnas.bilevel.problem import Batch, BilevelProblem, StepContext
from dnas.components.base import Component
from dnas.registry import Registry


class WeightRegularizer(Component):
    #: the weight step must expose per-cell copies of the activated weights and their gradients
    needs_cell_gradients: bool = True

    def add_gradient(self, problem: BilevelProblem, batch: Batch, cell_weights: Sequence[Tensor],
                     cell_grads: Sequence[Tensor], ctx: StepContext) -> None:
        raise NotImplementedError


class ArchRegularizer(Component):
    def __call__(self, problem: BilevelProblem, activated: Mapping[str, Tensor],
                 ctx: StepContext | None = None) -> dict[str, Tensor]:
        raise NotImplementedError


WEIGHT_REGULARIZERS: Registry[type[WeightRegularizer]] = Registry("weight regularizer")
ARCH_REGULARIZERS: Registry[type[ArchRegularizer]] = Registry("architecture regularizer")
