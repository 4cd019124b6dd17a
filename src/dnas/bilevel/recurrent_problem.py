"""The bilevel problem of the recurrent space: language modelling with hidden states carried across
segments, behind the interface the estimators, schedules and regularizers already use.

A batch is a :class:`Segment`: the inputs and targets of one BPTT segment, and the hidden state its
forward starts from (the last state of the previous segment of the same stream, detached, as DARTS'
``repackage_hidden``). Every loss on a segment starts from that state, so the repeated forwards of
an estimator (the virtual step, the finite differences, the exact products) and of Lambda-DARTS'
extra passes all see the same starting state, as DARTS' ``architect.py`` passes the same
``hidden_train`` to each of them. Which final state the search carries on is decided here:

* the weight step (:meth:`RecurrentProblem.weight_loss`) carries the training stream on, and
* the architecture step carries the validation stream on with the state of the forward of its
  objective (:meth:`RecurrentProblem.arch_objective`: at ``w`` for first order and Amended-DARTS,
  at the virtual ``w'`` for second order, which is DARTS' ``unrolled_model._loss``);

they write it into ``segment.carried``. Plain :meth:`RecurrentProblem.loss` calls (curvature terms,
regularizer passes) carry nothing on.

    L(w, alpha; segment) = - mean_t log p(y_t | x_<=t, h_0)                 (the architecture step's loss)
    L_train = L + beta * mean_t (h_{t+1} - h_t)^2                          (the weight step's: + TAR)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from dnas.bilevel.problem import Batch, BilevelProblem, StepContext
from dnas.components.activations import Activation
from dnas.errors import DnasError
from dnas.spaces.recurrent_ops import temporal_activation_regularization
from dnas.supernet.recurrent import RecurrentSupernet


class Segment(tuple[Tensor, Tensor]):
    """``(inputs, targets)`` of shape ``(T, B)`` each, with ``hidden`` (one ``(B, H)`` state per cell)
    the state the forward starts from; ``carried`` the final state the search continues with (set by
    the weight step's or the architecture step's forward, detached)."""

    hidden: list[Tensor]
    carried: list[Tensor] | None

    def __new__(cls, inputs: Tensor, targets: Tensor, hidden: Sequence[Tensor]) -> Segment:
        segment = super().__new__(cls, (inputs, targets))
        segment.hidden = [h.detach() for h in hidden]
        segment.carried = None
        return segment

    @property
    def tokens(self) -> int:
        return self[1].numel()


def as_segment(batch: Batch) -> Segment:
    if not isinstance(batch, Segment):
        raise TypeError("the recurrent problem takes Segment batches (inputs, targets and the hidden state)")
    return batch


class RecurrentProblem(BilevelProblem):
    """``L(w, alpha)`` of the recurrent supernet on segments (module docstring); ``tar`` the TAR weight
    ``beta`` of the weight step. The architecture regularizers and the activation are the image spaces'."""

    net: RecurrentSupernet

    def __init__(self, net: RecurrentSupernet, alphas: nn.ParameterDict, activation: Activation,
                 arch_regularizers: Sequence = (), tar: float = 0.0):
        super().__init__(net, alphas, activation, arch_regularizers)
        self.tar = tar
        self.last_loss: Tensor | None = None  # the weight step's cross-entropy (without TAR), for the log

    def run(self, segment: Segment, activated: Mapping[str, Tensor] | None = None,
            cell_weights: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
        """One forward from ``segment.hidden``: (mean cross-entropy, logits ``(T * B, V)``, the final
        state of every cell, the last cell's raw output)."""
        if cell_weights is None:
            activated = self.activated() if activated is None else activated
            cell_weights = self.net.per_cell(activated)
        inputs, targets = segment
        logits, finals, raw = self.net(inputs, segment.hidden, cell_weights)
        return F.cross_entropy(logits, targets.reshape(-1)), logits, finals, raw

    def forward(self, x: Tensor, activated: Mapping[str, Tensor] | None = None,
                cell_weights: Sequence[Tensor] | None = None) -> Tensor:
        raise DnasError("the recurrent problem computes losses of segments: call loss(segment)")

    def loss(self, batch: Batch, activated: Mapping[str, Tensor] | None = None,
             cell_weights: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``L(w, alpha)`` on the segment ``batch`` from its starting state; returns (loss, logits)."""
        loss, logits, _, _ = self.run(as_segment(batch), activated, cell_weights)
        return loss, logits

    def weight_loss(self, batch: Batch, cell_gradients: bool = False,
                    perturb: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
                    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``L + TAR`` for the weight step, ``alpha`` held fixed (``cell_gradients``: per-cell leaves, as
        :meth:`BilevelProblem.weight_loss`); carries the training stream on. The cross-entropy alone
        is kept in ``last_loss``."""
        segment = as_segment(batch)
        activated, cell_weights = self.weight_step_mixing(cell_gradients, perturb)
        loss, logits, finals, raw = self.run(segment, activated, cell_weights)
        segment.carried = [h.detach() for h in finals]
        self.last_loss = loss.detach()
        objective = loss + temporal_activation_regularization(raw, self.tar) if self.tar else loss
        return objective, logits, cell_weights

    def arch_objective(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``L_val(w, alpha) + R_arch(alpha)`` on the validation segment; carries the validation stream on."""
        segment = as_segment(batch)
        activated = self.activated()
        loss, logits, finals, _ = self.run(segment, activated)
        segment.carried = [h.detach() for h in finals]
        objective, terms = self.regularized(loss, activated, ctx)
        return objective, logits, terms
