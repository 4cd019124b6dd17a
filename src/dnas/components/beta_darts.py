"""beta-DARTS' Beta-decay regularization (Ye et al., CVPR 2022; code: Sunshine-Ye/Beta-DARTS).

An architecture regularizer on the raw logits: per cell type the mean over its edges of the
log-sum-exp of the edge's logits (``optimizers/darts/architect.py`` ``mlc_loss``)::

    R(alpha) = lambda_e * sum_types (1/E) sum_e log sum_o exp(alpha_{e,o})
    dR/dalpha_{e,o} = lambda_e softmax(alpha_e)_o / E

so every logit decays in proportion to its softmax weight ``beta_{e,o}``: the "Beta-decay" that
keeps the weights from concentrating. The coefficient grows linearly per epoch,
``lambda_e = lam * e / ramp_epochs``; the official code hard-codes ``50 * epoch / 100`` whatever the
number of epochs, which ``lam = 50``, ``ramp_epochs = 100`` reproduce. Ops an activation excludes
do not enter the sums. It is added to the validation loss of the architecture step (first and
second order alike; the official second-order path leaves it out).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from dnas.bilevel.problem import BilevelProblem, StepContext
from dnas.components.regularizers import ARCH_REGULARIZERS, LoggedArchRegularizer
from dnas.errors import DnasError


@ARCH_REGULARIZERS.register("beta-decay")
class BetaDecay(LoggedArchRegularizer):
    """``lam * e / ramp_epochs * sum_types mean_e logsumexp(alpha_e)`` (module docstring)."""

    def __init__(self, *, lam: float = 50.0, ramp_epochs: int = 100):
        if lam < 0 or ramp_epochs < 1:
            raise DnasError(f"arch regularizer beta-decay needs lam >= 0 and ramp_epochs >= 1, got {lam}, "
                            f"{ramp_epochs}")
        self.lam, self.ramp_epochs = float(lam), int(ramp_epochs)
        super().__init__()

    def coefficient(self, ctx: StepContext | None) -> float:
        """``lam * e / ramp_epochs`` at epoch ``e`` (``lam`` outside a search)."""
        return self.lam if ctx is None else self.lam * ctx.epoch / self.ramp_epochs

    def __call__(self, problem: BilevelProblem, activated: Mapping[str, Tensor],
                 ctx: StepContext | None = None) -> dict[str, Tensor]:
        coef = self.coefficient(ctx)
        total = None
        for cell_type, alpha in problem.alphas.items():
            kept = problem.activation.kept(cell_type, alpha)
            logits = alpha if kept is None else alpha.masked_fill(~kept, float("-inf"))
            value = torch.logsumexp(logits, dim=-1).mean()
            total = value if total is None else total + value
        assert total is not None  # a space has at least one cell type
        self._last = {"coefficient": coef, "raw": total.detach()}
        return {"beta-decay": coef * total}

