"""Hypergradient-estimator slot: the gradient of the upper-level objective w.r.t. ``alpha``.

The exact hypergradient (implicit function theorem at ``w*``) is

    dL_val/dalpha = grad_alpha L_val - grad^2_{alpha,w} L_train . H^{-1} . grad_w L_val,
    H = grad^2_w L_train(w*, alpha).

An estimator writes its estimate into ``alpha.grad`` and returns the validation loss and logits
it computed on the way (for logging without extra passes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dnas.bilevel import Batch, BilevelProblem
from dnas.components.base import Component
from dnas.registry import Registry


class Estimator(Component):
    def arch_gradient(self, problem: BilevelProblem, train_batch: Batch, val_batch: Batch) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


ESTIMATORS: Registry[type[Estimator]] = Registry("estimator")


def set_grads(params: list[torch.nn.Parameter], grads: list[Tensor]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g


@ESTIMATORS.register("first-order")
class FirstOrder(Estimator):
    """DARTS first order: drop the implicit term, ``g = grad_alpha [L_val(w, alpha) + R_arch(alpha)]``."""

    name = "first-order"

    def arch_gradient(self, problem: BilevelProblem, train_batch: Batch, val_batch: Batch) -> tuple[Tensor, Tensor]:
        objective, logits, _ = problem.arch_objective(val_batch)
        set_grads(problem.arch, list(torch.autograd.grad(objective, problem.arch)))
        return objective.detach(), logits.detach()
