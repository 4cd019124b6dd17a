"""Hypergradient-estimator slot: the gradient of the upper-level objective w.r.t. ``alpha``.

The exact hypergradient (implicit function theorem at ``w*``) is

    dL_val/dalpha = grad_alpha L_val - grad^2_{alpha,w} L_train . H^{-1} . grad_w L_val,
    H = grad^2_w L_train(w*, alpha).

An estimator writes its estimate into ``alpha.grad`` and returns the validation loss and logits
it computed on the way (for logging without extra passes). First order drops the implicit term;
second order (DARTS) replaces ``H^{-1}`` by ``xi I`` through a one-step unroll; amended
(Amended-DARTS) replaces it by ``eta H``. The Hessian-vector products come from
:mod:`dnas.autodiff` (``hvp="exact"`` or ``"fd"``).

Exact and finite-difference products are not interchangeable on ReLU networks: a displacement of
norm ``r = 0.01`` moves some pre-activations across zero, so the central difference also measures
the kinks (curvature that the exact Hessian, with ``ReLU'' = 0``, does not have). On smooth
networks the two agree to ``O(r^2)`` (``tests/test_estimators.py``); on the ReLU supernets they can
differ by more than the size of the correction term itself.

Data parallelism: every gradient computed from a batch is averaged over the ranks
(``problem.mean_``) before it is used — ``grad_w L_train`` before the virtual step, ``grad_w L_val``
before it sets a finite-difference radius, ``H v`` before the second product, and the final
estimate — so the radii ``r/||v||`` are those of the all-reduced vectors and every rank evaluates
the same points and ends with the same ``alpha.grad``.

Estimators only use a small surface of the problem: ``weights``, ``arch``, ``net`` (for its
buffers), ``activated()``, ``loss(batch, activated)``, ``arch_objective(batch)`` and
``weight_lr``. They change nothing but ``alpha.grad``: weights and BatchNorm statistics are
restored, and repeated forwards of a batch replay the random numbers of its first forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dnas.autodiff import (
    HVP_METHODS,
    LossFn,
    global_norm,
    gradients,
    make_hvp,
    preserved_buffers,
    replay_randomness,
    shifted,
)
from dnas.bilevel import Batch, BilevelProblem
from dnas.components.base import Component
from dnas.errors import DnasError
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
        grads = gradients(objective, problem.arch)  # zeros for a cell type the net lacks
        problem.mean_(grads)
        set_grads(problem.arch, grads)
        return objective.detach(), logits.detach()


# ----- second-order estimators ---------------------------------------------------------------------
def _activated_leaves(problem: BilevelProblem) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``A(alpha)`` once (with its graph back to ``alpha``) and detached leaves standing in for it.

    Curvature terms are computed w.r.t. the leaves and pulled back through the activation with
    one vector-Jacobian product (:func:`_pull_back`); by the chain rule
    ``grad^2_{alpha,w} L . v = J_A(alpha)^T grad^2_{A,w} L . v``. Every forward of the training
    loss therefore sees the same ``A`` (one sample of a stochastic gate, not one per pass).
    """
    activated = problem.activated()
    return activated, {t: a.detach().requires_grad_(True) for t, a in activated.items()}


def _pull_back(activated: dict[str, Tensor], grads: list[Tensor], arch: list[torch.nn.Parameter]) -> list[Tensor]:
    """``J_A(alpha)^T g``: the ``alpha``-gradient of ``<A(alpha), g>``."""
    return gradients(list(activated.values()), arch, grads)


class _CurvatureEstimator(Estimator):
    """Shared hyper-parameters of the estimators that use Hessian-vector products."""

    def __init__(self, hvp: str, fd_radius: float):
        if hvp not in HVP_METHODS:
            raise DnasError(f"estimator.hvp must be one of {', '.join(HVP_METHODS)}, got {hvp!r}")
        if not (isinstance(fd_radius, (int, float)) and fd_radius > 0):
            raise DnasError(f"estimator.fd_radius must be a positive number, got {fd_radius!r}")
        self.hvp = hvp
        self.fd_radius = float(fd_radius)
        self._norms: dict[str, Tensor] = {}

    @staticmethod
    def _train_loss(problem: BilevelProblem, train_batch: Batch, leaves: dict[str, Tensor]) -> LossFn:
        """``L_train`` at the current weights and the fixed activated weights ``leaves``."""
        return replay_randomness(lambda: problem.loss(train_batch, leaves)[0], problem.weights[0].device)

    def _record(self, direct: list[Tensor], correction: list[Tensor]) -> None:
        self._norms = {"direct_norm": global_norm(direct).detach(),
                       "correction_norm": global_norm(correction).detach()}

    def metrics(self) -> dict[str, float | Tensor]:
        """``||grad_alpha (L_val + R_arch)||`` and the norm of the subtracted curvature term (last step)."""
        return dict(self._norms)

    def state_dict(self) -> dict[str, Any]:
        return dict(self._norms)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._norms = dict(state)


@ESTIMATORS.register("second-order")
class SecondOrder(_CurvatureEstimator):
    """DARTS second order: the gradient through one virtual SGD step of the weights.

        w' = w - xi grad_w L_train(w, alpha)
        g  = grad_alpha [L_val(w', alpha) + R_arch(alpha)]
             - xi grad^2_{alpha,w} L_train(w, alpha) . grad_w' L_val(w', alpha)

    which is ``d/dalpha [L_val(w'(alpha), alpha) + R_arch(alpha)]`` exactly, the mixed term
    computed by an HVP at ``w`` (``hvp="fd"``: DARTS' central difference; ``"exact"``: double
    backward). ``xi=None`` uses the current learning rate of ``w`` (DARTS' choice).

    The virtual step is plain gradient descent, as in the paper's equation. DARTS' code also
    puts momentum and weight decay into it (``w' = w - xi (mu m + grad + lambda w)``); those
    terms do not depend on ``alpha``, so they only move the point ``w'`` where ``L_val`` is
    evaluated, and the estimator would need the weight optimizer's state; we leave them out.
    The step is taken in place on the weights and undone bit-exactly. Returns ``L_val + R_arch``
    and the logits at ``w'``.
    """

    name = "second-order"

    def __init__(self, *, xi: float | None = None, hvp: str = "fd", fd_radius: float = 0.01):
        super().__init__(hvp, fd_radius)
        if xi is not None and not (isinstance(xi, (int, float)) and xi >= 0):
            raise DnasError(f"estimator.xi must be a non-negative number or null (the weight learning rate), "
                            f"got {xi!r}")
        self.xi = None if xi is None else float(xi)

    def arch_gradient(self, problem: BilevelProblem, train_batch: Batch, val_batch: Batch) -> tuple[Tensor, Tensor]:
        weights, arch = problem.weights, problem.arch
        xi = problem.weight_lr if self.xi is None else self.xi
        with preserved_buffers(problem.net):
            activated, leaves = _activated_leaves(problem)
            train_loss = self._train_loss(problem, train_batch, leaves)
            step = gradients(train_loss(), weights)
            problem.mean_(step)
            with shifted(weights, step, -xi):  # w' = w - xi grad_w L_train, undone on exit
                objective, logits, _ = problem.arch_objective(val_batch)
                grads = gradients(objective, [*arch, *weights])
            problem.mean_(grads)
            direct, v = grads[: len(arch)], grads[len(arch):]
            # at w again (an exact HVP builds its graph here, after the in-place step is undone)
            hvp = make_hvp(self.hvp, train_loss, weights, r=self.fd_radius)
            mixed = _pull_back(activated, hvp(v, wrt=list(leaves.values())), arch)
            problem.mean_(mixed)
        correction = [xi * m for m in mixed]
        self._record(direct, correction)
        set_grads(arch, [d - c for d, c in zip(direct, correction, strict=True)])
        return objective.detach(), logits.detach()


@ESTIMATORS.register("amended")
class Amended(_CurvatureEstimator):
    """Amended-DARTS (Bi et al. 2019): the inverse Hessian of the implicit term replaced by ``eta H``.

        g = grad_alpha [L_val(w, alpha) + R_arch(alpha)]
            - eta grad^2_{alpha,w} L_train(w, alpha) . grad^2_w L_train(w, alpha) . grad_w L_val(w, alpha)

    at the current weights (no unrolled step; ``w`` is assumed close to ``w*(alpha)``). Computed
    right to left: ``v = grad_w L_val``, ``u = H v``, ``z = grad^2_{alpha,w} L_train . u``. With
    ``hvp="fd"`` that is five forward/backward passes (the two differences at radii ``r/||v||``
    and ``r/||u||``); ``"exact"`` builds one double-backward graph of ``L_train`` for both products.
    Returns ``L_val + R_arch`` and the logits at ``w``.
    """

    name = "amended"

    def __init__(self, *, eta: float = 0.1, hvp: str = "fd", fd_radius: float = 0.01):
        super().__init__(hvp, fd_radius)
        if not (isinstance(eta, (int, float)) and eta >= 0):
            raise DnasError(f"estimator.eta must be a non-negative number, got {eta!r}")
        self.eta = float(eta)

    def arch_gradient(self, problem: BilevelProblem, train_batch: Batch, val_batch: Batch) -> tuple[Tensor, Tensor]:
        weights, arch = problem.weights, problem.arch
        with preserved_buffers(problem.net):
            objective, logits, _ = problem.arch_objective(val_batch)
            grads = gradients(objective, [*arch, *weights])
            problem.mean_(grads)
            direct, v = grads[: len(arch)], grads[len(arch):]
            activated, leaves = _activated_leaves(problem)
            hvp = make_hvp(self.hvp, self._train_loss(problem, train_batch, leaves), weights, r=self.fd_radius)
            u = hvp(v)
            problem.mean_(u)
            mixed = _pull_back(activated, hvp(u, wrt=list(leaves.values())), arch)
            problem.mean_(mixed)
        correction = [self.eta * m for m in mixed]
        self._record(direct, correction)
        set_grads(arch, [d - c for d, c in zip(direct, correction, strict=True)])
        return objective.detach(), logits.detach()
