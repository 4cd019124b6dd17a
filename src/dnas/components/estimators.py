"""Hypergradient-estimator slot: the gradient of the upper-level objective w.r.t. ``alpha``.

The exact hypergradient (implicit function theorem at ``w*``) is

    dL_val/dalpha = grad_alpha L_val - grad^2_{alpha,w} L_train . H^{-1} . grad_w L_val,
    H = grad^2_w L_train(w*, alpha).

An estimator writes its estimate into ``alpha.grad`` and returns the validation loss and logits
it computed on the way (for logging without extra passes). First order drops the implicit term;
second order (DARTS) replaces ``H^{-1}`` by ``xi I`` through a one-step unroll; amended
(Amended-DARTS) replaces it by ``eta H``. The Hessian-vector products come from
:mod:`dnas.bilevel.autodiff` (``hvp="exact"`` or ``"fd"``).

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
buffers), ``activated()``, ``loss(batch, activated)`` and ``arch_objective(batch, ctx)``, and of the
iteration's :class:`~dnas.bilevel.problem.StepContext` the weight learning rate ``weight_lr`` and the
weight optimizer ``weight_optimizer``. They change nothing but ``alpha.grad``: weights and BatchNorm statistics are
restored, and repeated forwards of a batch replay the random numbers of its first forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dnas.bilevel.autodiff import (
    HVP_METHODS,
    LossFn,
    global_norm,
    gradients,
    make_hvp,
    preserved_buffers,
    replay_randomness,
    shifted,
)
from dnas.bilevel.problem import Batch, BilevelProblem, StepContext
from dnas.components.base import Component
from dnas.errors import DnasError
from dnas.registry import Registry


class Estimator(Component):
    def arch_gradient(self, problem: BilevelProblem, train_batch: Batch, val_batch: Batch,
                      ctx: StepContext) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


ESTIMATORS: Registry[type[Estimator]] = Registry("estimator")


def set_grads(params: list[torch.nn.Parameter], grads: list[Tensor]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g


@ESTIMATORS.register("first-order")
class FirstOrder(Estimator):
    """DARTS first order: drop the implicit term, ``g = grad_alpha [L_val(w, alpha) + R_arch(alpha)]``."""


    def arch_gradient(self, problem: BilevelProblem, train_batch: Batch, val_batch: Batch,
                      ctx: StepContext) -> tuple[Tensor, Tensor]:
        objective, logits, _ = problem.arch_objective(val_batch, ctx)
        grads = gradients(problem.scale_arch_loss(objective), problem.arch)  # zeros for a cell type the net lacks
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

    def _record(self, problem: BilevelProblem, direct: list[Tensor], correction: list[Tensor]) -> None:
        self._norms = {"direct_norm": global_norm(direct).detach(),
                       "correction_norm": global_norm(correction).detach()}
        # which ops the curvature term favours: its mean over the edges per op (a cell type whose edges
        # all offer the same ops); the step descends ``direct - correction``, so a positive value raises
        # that op's alpha
        space = problem.net.space  # None for a network that is not a supernet of a search space
        for cell_type, term in zip(problem.cell_types, correction, strict=True):
            ops = space.cells[cell_type].shared_ops if space is not None else None
            if ops is not None:
                for op, value in zip(ops, term.detach().mean(0), strict=True):
                    self._norms[f"correction.{cell_type}.{op}"] = value

    def metrics(self) -> dict[str, float | Tensor]:
        """``||grad_alpha (L_val + R_arch)||``, the norm of the subtracted curvature term and its mean per op
        over the edges of each cell type (last step)."""
        return dict(self._norms)

    def state_dict(self) -> dict[str, Any]:
        return dict(self._norms)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._norms = dict(state)


VIRTUAL_STEPS = ("optimizer", "gradient")


def optimizer_direction(problem: BilevelProblem, grads: list[Tensor], opt: torch.optim.Optimizer | None
                        ) -> list[Tensor]:
    """``mu m + g + lambda w`` per weight: the direction of the weight optimizer's next SGD step for the
    gradient ``g``, with its current momentum buffer ``m``, momentum ``mu`` and weight decay ``lambda``
    (DARTS' ``_compute_unrolled_model``; no momentum term before the optimizer's first step, and
    ``nesterov`` is ignored, as in DARTS' and AutoDL's code). Plain ``g`` without a weight optimizer."""
    if opt is None:
        return grads
    groups = {p: group for group in opt.param_groups for p in group["params"]}
    out = []
    for p, g in zip(problem.weights, grads, strict=True):
        group = groups.get(p)
        if group is None:
            out.append(g)
            continue
        d = g + group["weight_decay"] * p.detach() if group["weight_decay"] else g
        buffer = opt.state.get(p, {}).get("momentum_buffer")
        out.append(d + group["momentum"] * buffer if buffer is not None and group["momentum"] else d)
    return out


@ESTIMATORS.register("second-order")
class SecondOrder(_CurvatureEstimator):
    """DARTS second order: the gradient through one virtual SGD step of the weights.

        w' = w - xi d,     d = mu m + grad_w L_train(w, alpha) + lambda w     (virtual_step="optimizer")
                           d = grad_w L_train(w, alpha)                       (virtual_step="gradient")
        g  = grad_alpha [L_val(w', alpha) + R_arch(alpha)]
             - xi grad^2_{alpha,w} L_train(w, alpha) . grad_w' L_val(w', alpha)

    which is ``d/dalpha [L_val(w'(alpha), alpha) + R_arch(alpha)]`` exactly (``mu m`` and ``lambda w``
    do not depend on ``alpha``), the mixed term computed by an HVP at ``w`` (``hvp="fd"``: DARTS'
    central difference; ``"exact"``: double backward). ``xi=None`` uses the current learning rate of
    ``w`` (DARTS' choice), ``ctx.weight_lr``.

    ``clip``: DARTS' recurrent-cell architect (quark0/darts ``rnn/architect.py``) clips the training
    gradient of the virtual step and the validation gradient ``v = grad_w' L_val`` to this global norm
    (the weight step's ``--clip 0.25``): ``d = c g``, ``c = min(1, clip / (||g|| + 1e-6))``, and the
    implicit term becomes ``xi c grad^2_{alpha,w} L_train . clip(v)``, the derivative of
    ``L_val(w - xi c g(alpha))`` with ``c`` held fixed (DARTS' code multiplies by ``clip / ||g||`` even
    when that exceeds 1, a factor its own virtual step did not take). None (the CNN architect): no clipping.

    The virtual step: DARTS' code (``architect.py``, ``_compute_unrolled_model``) and AutoDL's
    NAS-Bench-201 DARTS-V2 step with the weight optimizer's momentum buffer ``m`` (times its
    momentum ``mu``) and weight decay ``lambda`` (:func:`optimizer_direction`, from
    ``ctx.weight_optimizer``); this is the default. The paper's
    equation (7) has the plain gradient step, ``virtual_step="gradient"``. The step is taken in
    place on the weights and undone bit-exactly. Returns ``L_val + R_arch`` and the logits at ``w'``.
    """


    def __init__(self, *, xi: float | None = None, hvp: str = "fd", fd_radius: float = 0.01,
                 virtual_step: str = "optimizer", clip: float | None = None):
        super().__init__(hvp, fd_radius)
        if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
            raise DnasError(f"estimator.clip must be a positive number or null (no clipping), got {clip!r}")
        self.clip = None if clip is None else float(clip)
        if xi is not None and not (isinstance(xi, (int, float)) and xi >= 0):
            raise DnasError(f"estimator.xi must be a non-negative number or null (the weight learning rate), "
                            f"got {xi!r}")
        if virtual_step not in VIRTUAL_STEPS:
            raise DnasError(f"estimator.virtual_step must be one of {', '.join(VIRTUAL_STEPS)}, got {virtual_step!r}")
        self.xi = None if xi is None else float(xi)
        self.virtual_step = virtual_step

    def arch_gradient(self, problem: BilevelProblem, train_batch: Batch, val_batch: Batch,
                      ctx: StepContext) -> tuple[Tensor, Tensor]:
        weights, arch = problem.weights, problem.arch
        xi = ctx.weight_lr if self.xi is None else self.xi
        with preserved_buffers(problem.net):
            activated, leaves = _activated_leaves(problem)
            train_loss = self._train_loss(problem, train_batch, leaves)
            step = gradients(train_loss(), weights)
            problem.mean_(step)  # data parallel: the global batch's gradient, before it moves w
            coef = self._clip_coefficient(step)
            if coef is not None:  # DARTS' RNN architect: the virtual step's gradient clipped
                step = [coef * g for g in step]
            if self.virtual_step == "optimizer":
                step = optimizer_direction(problem, step, ctx.weight_optimizer)
            with shifted(weights, step, -xi):  # w' = w - xi d, undone on exit
                objective, logits, _ = problem.arch_objective(val_batch, ctx)
                grads = gradients(objective, [*arch, *weights])
            problem.mean_(grads)
            direct, v = grads[: len(arch)], grads[len(arch):]
            v_coef = self._clip_coefficient(v)
            if v_coef is not None:  # ... and so is the validation gradient
                v = [v_coef * g for g in v]
            # at w again (an exact HVP builds its graph here, after the in-place step is undone)
            hvp = make_hvp(self.hvp, train_loss, weights, r=self.fd_radius)
            mixed = _pull_back(activated, hvp(v, wrt=list(leaves.values())), arch)
            problem.mean_(mixed)
        scale = xi if coef is None else xi * coef
        correction = [scale * m for m in mixed]
        self._record(problem, direct, correction)
        set_grads(arch, [d - c for d, c in zip(direct, correction, strict=True)])
        return objective.detach(), logits.detach()


    def _clip_coefficient(self, grads: list[Tensor]) -> Tensor | None:
        """``min(1, clip / (||g|| + 1e-6))`` (None without ``clip``)."""
        if self.clip is None:
            return None
        return (self.clip / (global_norm(grads) + 1e-6)).clamp(max=1.0)


@ESTIMATORS.register("amended")
class Amended(_CurvatureEstimator):
    """Amended-DARTS (Bi et al. 2019): the inverse Hessian of the implicit term replaced by ``eta H``.

        g = grad_alpha [L_val(w, alpha) + R_arch(alpha)]
            - eta grad^2_{alpha,w} L_train(w, alpha) . grad^2_w L_train(w, alpha) . grad_w L_val(w, alpha)

    at the current weights (no unrolled step; ``w`` is assumed close to ``w*(alpha)``). Computed
    right to left: ``v = grad_w L_val``, ``u = H v``, ``z = grad^2_{alpha,w} L_train . u``. With
    ``hvp="fd"`` that is five forward/backward passes (the two differences at radii ``r/||v||``
    and ``r/||u||``, ``r = fd_radius``); ``"exact"`` builds one double-backward graph of ``L_train``
    for both products. Returns ``L_val + R_arch`` and the logits at ``w``.

    There is no virtual step, so the weight optimizer's momentum and weight decay do not enter;
    ``H`` is the Hessian of ``L_train`` alone (without the ``lambda I`` of the weight decay), as in
    the only public implementation (AdversarialNAS' ``architect.py``, whose Hessian-vector products
    are taken from the authors' ICLR 2020 submission: both products at the current weights, radius
    0.01 over the norm of the vector).
    """


    def __init__(self, *, eta: float = 0.1, hvp: str = "fd", fd_radius: float = 0.01):
        super().__init__(hvp, fd_radius)
        if not (isinstance(eta, (int, float)) and eta >= 0):
            raise DnasError(f"estimator.eta must be a non-negative number, got {eta!r}")
        self.eta = float(eta)

    def arch_gradient(self, problem: BilevelProblem, train_batch: Batch, val_batch: Batch,
                      ctx: StepContext) -> tuple[Tensor, Tensor]:
        weights, arch = problem.weights, problem.arch
        with preserved_buffers(problem.net):
            objective, logits, _ = problem.arch_objective(val_batch, ctx)
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
        self._record(problem, direct, correction)
        set_grads(arch, [d - c for d, c in zip(direct, correction, strict=True)])
        return objective.detach(), logits.detach()
