"""Auxiliary slot and DARTS- (Chu, Wang, Zhang, Zhang, Wei, Yan; ICLR 2021; code: Meituan-AutoML/DARTS-).

DARTS- adds to every edge an auxiliary skip connection outside the mixing, with a coefficient
``beta`` that decays to 0 over the search, so that the skip connection's advantage in easing the
training of the supernet is taken over by the auxiliary branch instead of being won by the
``skip_connect`` op (``src/search/model_search.py`` ``MixedOp``)::

    x_j = sum_{i<j} [ sum_o A_{(i,j),o} o(x_i) + beta_e aux(x_i) ]

``aux`` is the identity on stride-1 edges and a factorized reduction (its own weights, trained with
the supernet's) on the stride-2 edges of reduction cells. ``beta`` is set once per epoch
(``src/utils.py`` ``DecayScheduler``, ``--decay linear``, started at ``--skip_beta 1``)::

    linear       beta_e = beta (T - e) / T
    cosine       beta_e = beta (1 + cos(pi e / T)) / 2
    slow-cosine  beta_e = beta cos(pi e / (2 T))
    constant     beta_e = beta

with ``T = decay_epochs`` (the official default ties it to the 50 search epochs; here: the search's
epochs unless set), so that the linear schedule runs from ``beta`` down to ``beta / T`` in the last
epoch. The ``skip_connect`` op keeps its place among the candidates, and the derivation ignores the
auxiliary branch.
"""

from __future__ import annotations

import math
from typing import Any

from dnas.components.base import Component
from dnas.errors import DnasError
from dnas.registry import Registry

DECAYS = ("linear", "cosine", "slow-cosine", "constant")


class Auxiliary(Component):
    """An operation added to every edge outside the mixing; ``coefficient`` is its weight this epoch."""

    #: the supernet carries an auxiliary skip connection on every edge
    aux_skip: bool = False

    def coefficient(self) -> float:
        return 0.0


AUXILIARIES: Registry[type[Auxiliary]] = Registry("auxiliary")


@AUXILIARIES.register("none")
class NoAuxiliary(Auxiliary):
    """No auxiliary operation."""


@AUXILIARIES.register("skip")
class AuxiliarySkip(Auxiliary):
    """DARTS-'s auxiliary skip connection with a decaying coefficient (module docstring)."""

    aux_skip = True

    def __init__(self, *, beta: float = 1.0, decay: str = "linear", decay_epochs: int | None = None):
        if beta < 0 or decay not in DECAYS or (decay_epochs is not None and decay_epochs < 1):
            raise DnasError(f"auxiliary skip needs beta >= 0, decay one of {', '.join(DECAYS)} and decay_epochs >= 1"
                            f" (or null: the search's epochs), got {beta}, {decay!r}, {decay_epochs}")
        self.beta, self.decay, self.decay_epochs = float(beta), decay, decay_epochs
        self._coef = self.beta

    def coefficient_at(self, epoch: int, epochs: int) -> float:
        """``beta_e`` (module docstring)."""
        t = self.decay_epochs or epochs
        e = min(epoch, t)
        if self.decay == "linear":
            return self.beta * (t - e) / t
        if self.decay == "cosine":
            return self.beta * (1 + math.cos(math.pi * e / t)) / 2
        if self.decay == "slow-cosine":
            return self.beta * math.cos(math.pi / 2 * e / t)
        return self.beta

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self._coef = self.coefficient_at(epoch, epochs)

    def coefficient(self) -> float:
        return self._coef

    def metrics(self) -> dict[str, Any]:
        return {"beta": self._coef}
