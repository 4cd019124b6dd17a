"""Perturbation slot and SDARTS (Chen & Hsieh, ICML 2020; code: xiangning-chen/SmoothDARTS).

SDARTS smooths the validation loss landscape in the architecture by training the weights under
perturbed mixing weights: in the weight step only, the activated weights ``A`` (after the softmax)
are replaced by ``A + delta`` with ``||delta||_inf <= epsilon``, then every edge's row is clipped to
``[0, 1]`` and renormalised to sum 1 (``model_search.py`` ``clip``: a row clipped to zeros puts 1 on
the op that was strongest before clipping). The architecture step sees the clean ``A``.

* ``random`` (SDARTS-RS, ``attacker/perturb.py`` ``Random_alpha``): ``delta ~ U(-epsilon, epsilon)``.
* ``pgd`` (SDARTS-ADV, ``Linf_PGD_alpha``): ``steps`` steps of projected sign-gradient ascent of the
  training loss on the same batch, from a random start, step size ``2 epsilon / steps``, each step
  projected back to ``||A' - A||_inf <= epsilon`` and clipped; run with the network in evaluation
  mode (its BatchNorms on their running statistics), and abandoned for the clean ``A`` when it does
  not raise the loss.

``epsilon`` grows linearly over the search, ``epsilon_e = epsilon_min + (epsilon - epsilon_min) e / E``
(``train_search.py``: ``0.03 + (epsilon_alpha - 0.03) * epoch / epochs``, epsilon_alpha 0.3). Ops an
activation excludes stay at 0. The perturbation needs weights on the simplex (the softmax and its
relatives), since it renormalises rows; gates and clamped weights are refused.

Data parallel: every rank draws the same noise; the attack's gradient is averaged over the ranks
before its sign step, so every rank perturbs alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from dnas.bilevel.problem import Batch, BilevelProblem, StepContext
from dnas.components.base import Component
from dnas.errors import DnasError
from dnas.registry import Registry

#: activations whose weights lie on the simplex (each row sums to 1), which a perturbation renormalises
SIMPLEX_ACTIVATIONS = ("softmax", "gumbel", "dirichlet")


class Perturbation(Component):
    """Changes the activated weights the weight step trains under (``none``: leaves them)."""

    def __call__(self, problem: BilevelProblem, activated: Mapping[str, Tensor], batch: Batch,
                 ctx: StepContext) -> dict[str, Tensor]:
        return dict(activated)


PERTURBATIONS: Registry[type[Perturbation]] = Registry("perturbation")


@PERTURBATIONS.register("none")
class NoPerturbation(Perturbation):
    """The weight step trains under the activated weights themselves."""


def clip_rows(a: Tensor, kept: Tensor | None = None) -> Tensor:
    """SDARTS' ``clip``: each row clamped to [0, 1] and renormalised to sum 1; a row clamped to all zeros
    puts 1 on the entry that was largest before the clamp. Excluded entries (``~kept``) stay 0."""
    top = a.argmax(dim=-1, keepdim=True)
    a = a.clamp(0.0, 1.0)
    if kept is not None:
        a = a * kept
    dead = a.sum(dim=-1, keepdim=True) == 0
    a = torch.where(dead, torch.zeros_like(a).scatter_(-1, top, 1.0), a)
    return a / a.sum(dim=-1, keepdim=True)


class _Smoothing(Perturbation):
    def __init__(self, epsilon: float, epsilon_min: float):
        if not 0 <= epsilon_min <= epsilon:
            raise DnasError(f"perturbation {self.name} needs 0 <= epsilon_min <= epsilon, got {epsilon_min}, {epsilon}")
        self.epsilon, self.epsilon_min = float(epsilon), float(epsilon_min)
        self._last: dict[str, float | Tensor] = {}

    def radius(self, ctx: StepContext) -> float:
        """``epsilon_min + (epsilon - epsilon_min) e / E`` (module docstring)."""
        return self.epsilon_min + (self.epsilon - self.epsilon_min) * ctx.epoch / ctx.epochs

    @staticmethod
    def _check(problem: BilevelProblem) -> None:
        if problem.activation.name not in SIMPLEX_ACTIVATIONS:
            raise DnasError(f"perturbation needs weights on the simplex ({', '.join(SIMPLEX_ACTIVATIONS)}); the "
                            f"{problem.activation.name} activation's weights are not")

    def _noise(self, problem: BilevelProblem, activated: Mapping[str, Tensor], eps: float) -> dict[str, Tensor]:
        out = {}
        for t, a in activated.items():
            kept = problem.activation.kept(t, a)
            noise = torch.empty_like(a).uniform_(-eps, eps)
            out[t] = clip_rows(a + (noise if kept is None else noise * kept), kept)
        return out

    def metrics(self) -> dict[str, float | Tensor]:
        return dict(self._last)

    def state_dict(self) -> dict[str, Any]:
        return {"last": dict(self._last)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._last = dict(state.get("last", {}))


@PERTURBATIONS.register("random")
class RandomSmoothing(_Smoothing):
    """SDARTS-RS: uniform noise of radius ``epsilon_e`` on the activated weights (module docstring)."""

    def __init__(self, *, epsilon: float = 0.3, epsilon_min: float = 0.03):
        super().__init__(epsilon, epsilon_min)

    def __call__(self, problem: BilevelProblem, activated: Mapping[str, Tensor], batch: Batch,
                 ctx: StepContext) -> dict[str, Tensor]:
        self._check(problem)
        eps = self.radius(ctx)
        self._last = {"epsilon": eps}
        with torch.no_grad():
            return self._noise(problem, activated, eps)


@PERTURBATIONS.register("pgd")
class AdversarialSmoothing(_Smoothing):
    """SDARTS-ADV: a PGD attack on the activated weights within radius ``epsilon_e`` (module docstring)."""

    def __init__(self, *, epsilon: float = 0.3, epsilon_min: float = 0.03, steps: int = 7, random_start: bool = True):
        super().__init__(epsilon, epsilon_min)
        if steps < 1:
            raise DnasError(f"perturbation pgd needs steps >= 1, got {steps}")
        self.steps, self.random_start = int(steps), bool(random_start)

    def __call__(self, problem: BilevelProblem, activated: Mapping[str, Tensor], batch: Batch,
                 ctx: StepContext) -> dict[str, Tensor]:
        self._check(problem)
        eps = self.radius(ctx)
        step = 2 * eps / self.steps
        clean = {t: a.detach() for t, a in activated.items()}
        net = problem.net
        training = net.training
        net.eval()  # SmoothDARTS attacks the network in evaluation mode
        try:
            with torch.no_grad():
                before = problem.loss(batch, clean)[0]
                current = self._noise(problem, clean, eps) if self.random_start else dict(clean)
            for _ in range(self.steps):
                leaves = {t: a.detach().requires_grad_(True) for t, a in current.items()}
                loss = problem.loss(batch, leaves)[0]
                grads = list(torch.autograd.grad(loss, list(leaves.values())))
                problem.mean_(grads)  # data parallel: the global batch's ascent direction
                with torch.no_grad():
                    for (t, a), g in zip(leaves.items(), grads, strict=True):
                        kept = problem.activation.kept(t, a)
                        moved = clean[t] + (a + step * g.sign() - clean[t]).clamp(-eps, eps)
                        current[t] = clip_rows(moved, kept)
            with torch.no_grad():
                after = problem.loss(batch, current)[0]
            losses = problem.group.sum(torch.stack([before.detach(), after.detach()]))
            improved = losses[1] >= losses[0]  # on the device: no host read in the step
        finally:
            net.train(training)
        self._last = {"epsilon": eps, "gain": (losses[1] - losses[0]) / problem.group.world}
        return {t: torch.where(improved, current[t], clean[t]) for t in clean}
