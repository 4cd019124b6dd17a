"""DrNAS: the mixing weights as Dirichlet samples (Chen, Wang, Cheng, Tang, Hsieh; ICLR 2021; code:
xiangning-chen/DrNAS).

The architecture parameters are the (log-linear) concentrations of one Dirichlet distribution per
edge; every forward pass mixes the ops with a reparameterised sample of it (``utils.py``
``process_step_vector``, ``method='dirichlet'``)::

    beta_e = elu(alpha_e) + 1                                      (> 0; alpha + 1 above 0, exp(alpha) below)
    A(alpha)_e ~ Dir(beta_e),  drawn by ``rsample``                 (pathwise gradient to alpha)

so that the architecture step minimises the expected validation loss over the distribution, whose
spread encourages exploration early and shrinks as the concentrations grow. One sample per cell
type per forward pass, shared by all cells of that type. Ops out of the competition (``exclude``,
or pruned by the progressive stages, :mod:`dnas.components.progression`) are zeroed in the sample
and the rest renormalised, as the official code masks its samples (a Dirichlet over the kept ops
in distribution).

Derivation and reports use the deterministic ``strength = softmax over the kept ops of alpha``
(``process_step_matrix(alpha, 'softmax', mask)`` in the official ``genotype``): the arg-max per edge
is the Dirichlet mean's, since ``elu + 1`` is increasing.

The official regularizer is an L2 penalty on alpha (Adam's weight decay, ``--reg_type l2
--reg_scale 1e-3``: the search's ``a_weight_decay``). Its alternative, ``--reg_type kl``, is the
``dirichlet-kl`` architecture regularizer here: the KL divergence of every edge's Dirichlet from the
anchor ``Dir(1, ..., 1)``, in closed form::

    KL(Dir(b) || Dir(1)) = log Gamma(b_0) - sum_o log Gamma(b_o) - log Gamma(K)
                           + sum_o (b_o - 1) (psi(b_o) - psi(b_0)),         b_0 = sum_o b_o

    R(alpha) = scale * sum_types sum_e KL(Dir(elu(alpha_e) + 1) || Dir(1))

added to the architecture step's loss (the official code then sets the weight decay to 0:
``a_weight_decay=0``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from dnas.bilevel.problem import BilevelProblem, StepContext
from dnas.components.activations import ACTIVATIONS, Activation
from dnas.components.regularizers import ARCH_REGULARIZERS, LoggedArchRegularizer
from dnas.errors import DnasError


def concentration(alpha: Tensor) -> Tensor:
    """``elu(alpha) + 1``, the Dirichlet concentrations of the logits ``alpha``."""
    return F.elu(alpha) + 1


@ACTIVATIONS.register("dirichlet")
class DirichletSample(Activation):
    """A reparameterised sample of ``Dir(elu(alpha_e) + 1)`` per edge (module docstring)."""

    prunable = True

    def __init__(self, *, init_std: float = 1e-3, exclude: str = ""):
        super().__init__(exclude=exclude)
        if init_std < 0:
            raise DnasError(f"activation dirichlet needs init_std >= 0, got {init_std}")
        self.init_std = float(init_std)

    def init_alpha(self, shape: tuple[int, int], generator: torch.Generator) -> Tensor:
        return self.init_std * torch.randn(shape, generator=generator)

    def __call__(self, alpha: Tensor, cell_type: str) -> Tensor:
        sample = torch.distributions.Dirichlet(concentration(alpha)).rsample()
        kept = self.kept(cell_type, alpha)
        if kept is None:
            return sample
        sample = sample.masked_fill(~kept, 0.0)
        return sample / sample.sum(dim=-1, keepdim=True)

    def strength(self, alpha: Tensor, cell_type: str) -> Tensor:
        kept = self.kept(cell_type, alpha)
        if kept is not None:
            alpha = alpha.masked_fill(~kept, float("-inf"))
        return alpha.softmax(dim=-1)


def dirichlet_kl_to_uniform(beta: Tensor, kept: Tensor | None = None) -> Tensor:
    """``KL(Dir(beta_e) || Dir(1))`` of every row ``e`` of ``beta`` (module docstring), over the entries
    ``kept`` marks (all by default)."""
    if kept is None:
        kept = torch.ones_like(beta, dtype=torch.bool)
    beta = torch.where(kept, beta, torch.ones_like(beta))  # masked entries: terms of exactly 0 below
    total = (beta * kept).sum(dim=-1)
    k = kept.sum(dim=-1).to(beta.dtype)
    log_gammas = torch.where(kept, torch.lgamma(beta), torch.zeros_like(beta)).sum(dim=-1)
    return (torch.lgamma(total) - log_gammas - torch.lgamma(k)
            + ((beta - 1) * (torch.digamma(beta) - torch.digamma(total)[..., None])).sum(dim=-1))


@ARCH_REGULARIZERS.register("dirichlet-kl")
class DirichletKL(LoggedArchRegularizer):
    """``scale * sum_types sum_e KL(Dir(elu(alpha_e) + 1) || Dir(1))`` over the ops not excluded (module
    docstring)."""

    def __init__(self, *, scale: float = 1e-3):
        if scale < 0:
            raise DnasError(f"arch regularizer dirichlet-kl needs scale >= 0, got {scale}")
        self.scale = float(scale)
        super().__init__()

    def __call__(self, problem: BilevelProblem, activated: Mapping[str, Tensor],
                 ctx: StepContext | None = None) -> dict[str, Tensor]:
        total = None
        for cell_type, alpha in problem.alphas.items():
            kept = problem.activation.competing(cell_type, alpha)
            value = dirichlet_kl_to_uniform(concentration(alpha), kept).sum()
            total = value if total is None else total + value
        assert total is not None  # a space has at least one cell type
        self._last = {"raw": total.detach()}
        return {"dirichlet-kl": self.scale * total}

