"""The bilevel problem of differentiable NAS, as the slots of the search loop see it.

    min_alpha  L_val(w*(alpha), alpha) + R_arch(alpha)
    s.t.       w*(alpha) = argmin_w L_train(w, alpha)

:class:`BilevelProblem` owns the supernet weights ``w``, the architecture parameters ``alpha``
(a separate ``ParameterDict``, never seen by the weight optimizer), the activation that maps
``alpha`` to op weights, and the architecture regularizers; estimators, schedules and
regularizers compute their quantities through it. What changes from step to step and is not part
of the problem (the weight learning rate, the weight optimizer, how far the search has come) reaches
the components as a :class:`StepContext` argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnas.bilevel.precision import Precision
from dnas.runtime.distributed import SINGLE, Group
from dnas.supernet import Supernet

if TYPE_CHECKING:  # types only: the components import this module
    from dnas.components.activations import Activation

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class StepContext:
    """What the components of one iteration may need besides the problem itself.

    ``epoch`` of ``epochs`` is the current epoch, ``epochs_elapsed`` the fractional epochs before
    this iteration (``epoch + step / steps_per_epoch``: ramps), ``weight_lr`` the current learning
    rate of ``w`` (second-order DARTS' ``xi``) and ``weight_optimizer`` the SGD optimizer of ``w``
    (its momentum buffer and weight decay enter DARTS' virtual step; None: a plain gradient step).
    """

    epoch: int = 0
    epochs: int = 1
    epochs_elapsed: float = 0.0
    weight_lr: float = 0.0
    weight_optimizer: torch.optim.Optimizer | None = None


class BilevelProblem:
    def __init__(self, net: Supernet, alphas: nn.ParameterDict, activation: Activation,
                 arch_regularizers: Sequence = (), group: Group = SINGLE, edge_alphas: nn.ParameterDict | None = None,
                 precision: Precision | None = None):
        self.net = net
        #: mixed precision of the forward passes and the loss scale of the architecture step (None: float32)
        self.precision = precision
        self.group = group  # the ranks of a data-parallel run (one process: a group of one)
        self._masks_of: tuple[Tensor, ...] = ()  # the activated weights whose masks are cached
        self._masks: dict[str, Tensor | None] | None = None
        self.alphas = alphas
        self.activation = activation
        self.arch_regularizers = list(arch_regularizers)
        #: PC-DARTS' edge normalization: one logit per edge, softmax over each node's incoming edges
        self.edge_alphas = edge_alphas

    # ----- parameters ------------------------------------------------------------------------------
    @property
    def weights(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    @property
    def arch(self) -> list[nn.Parameter]:
        """The architecture parameters: ``alpha`` per cell type, then the edge logits (edge normalization)."""
        return [*self.alphas.values(), *(self.edge_alphas.values() if self.edge_alphas is not None else ())]

    @property
    def cell_types(self) -> list[str]:
        return list(self.alphas.keys())

    def mean_(self, tensors: Sequence[Tensor | None]) -> None:
        """Average gradients computed from this rank's shard over the ranks, in place, so that every
        rank continues from the same values (a no-op in one process; see :mod:`dnas.runtime.distributed`).
        Every quantity computed from data must pass here before it steers anything."""
        self.group.mean_(tensors)

    # ----- forward ---------------------------------------------------------------------------------
    def edge_weights(self) -> dict[str, Tensor]:
        """PC-DARTS' edge normalization: ``beta_e = softmax over the incoming edges of e's node of the edge
        logits`` per cell type (empty without edge normalization)."""
        if self.edge_alphas is None:
            return {}
        out = {}
        for t, logits in self.edge_alphas.items():
            topo = self.net.space.cells[t]
            out[t] = torch.cat([logits[topo.incoming(node)].softmax(dim=0) for node in topo.intermediate_nodes])
        return out

    def activated(self) -> dict[str, Tensor]:
        """``A(alpha)`` per cell type (differentiable; wrap in ``torch.no_grad`` for weight steps); with
        edge normalization ``beta_e A(alpha)_{e,o}`` (the row sums are then the edge weights ``beta_e``,
        which also weight a partial-channel edge's bypassed channels)."""
        edges = self.edge_weights()
        return {t: self.activation(a, t) * edges[t][:, None] if t in edges else self.activation(a, t)
                for t, a in self.alphas.items()}

    def strengths(self) -> dict[str, Tensor]:
        """The per-op strengths the derivation ranks (with edge normalization: times the edge weights)."""
        with torch.no_grad():
            edges = self.edge_weights()
            out = {}
            for t, a in self.alphas.items():
                strength = self.activation.strength(a, t)
                out[t] = strength * edges[t][:, None].to(strength.dtype) if t in edges else strength
            return out

    def forward(self, x: Tensor, activated: Mapping[str, Tensor] | None = None,
                cell_weights: Sequence[Tensor] | None = None) -> Tensor:
        if cell_weights is None:
            activated = self.activated() if activated is None else activated
            cell_weights = self.net.per_cell(activated)
        masks = self.active_masks(activated) if activated is not None else None
        if self.precision is None or self.precision.dtype is None:
            return self.net(x, cell_weights, masks)
        with self.precision.autocast():
            logits = self.net(x, cell_weights, masks)
        return logits.float()

    def scale_arch_loss(self, objective: Tensor) -> Tensor:
        """The architecture objective times the loss scale (fp16; estimators differentiate this)."""
        return objective if self.precision is None else self.precision.scale_arch_loss(objective)

    def active_masks(self, activated: Mapping[str, Tensor]) -> dict[str, Tensor | None] | None:
        """The activation's masks of the ops worth computing for these activated weights, computed once
        per ``activated`` (a gate activation copies its gates to the host for them; the extra passes
        of Hessian-vector products and Lambda-DARTS reuse the same weights, and so the same masks)."""
        key = tuple(activated.values())
        if len(key) != len(self._masks_of) or any(a is not b for a, b in zip(key, self._masks_of, strict=False)):
            self._masks_of, self._masks = key, self.activation.active_mask(dict(activated))
        return self._masks

    def loss(self, batch: Batch, activated: Mapping[str, Tensor] | None = None,
             cell_weights: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Cross-entropy of the supernet on ``batch``: ``L(w, alpha)``; returns (loss, logits)."""
        x, y = batch
        logits = self.forward(x, activated, cell_weights)
        return F.cross_entropy(logits, y), logits

    def weight_loss(self, batch: Batch, cell_gradients: bool = False,
                    perturb: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
                    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``L_train(w, A(alpha))`` for the weight step, with ``alpha`` held fixed; returns (loss, logits,
        per-cell op weights). ``perturb`` replaces the activated weights the step trains under (SDARTS).
        With ``cell_gradients`` the per-cell op weights ``A_c`` are leaves of the graph, so after
        ``backward`` their ``.grad`` holds ``dL_train/dA_c`` (Lambda-DARTS, alignment)."""
        activated, cell_weights = self.weight_step_mixing(cell_gradients, perturb)
        loss, logits = self.loss(batch, activated, cell_weights)
        return loss, logits, cell_weights

    def weight_step_mixing(self, cell_gradients: bool = False,
                           perturb: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
                           ) -> tuple[dict[str, Tensor], list[Tensor]]:
        """The op weights a weight step trains under: ``A(alpha)`` without a graph to ``alpha``,
        ``perturb``-ed when given, and per cell (leaves with ``cell_gradients``; see :meth:`weight_loss`)."""
        with torch.no_grad():
            activated = self.activated()
        if perturb is not None:
            activated = perturb(activated)
        cell_weights = self.net.per_cell(activated)
        if cell_gradients:
            cell_weights = [w.clone().requires_grad_(True) for w in cell_weights]
        return activated, cell_weights

    def arch_regularization(self, activated: Mapping[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """The named terms of ``R_arch(alpha)`` (already multiplied by their coefficients)."""
        terms: dict[str, Tensor] = {}
        for reg in self.arch_regularizers:
            terms.update(reg(self, activated, ctx))
        return terms

    def regularized(self, loss: Tensor, activated: Mapping[str, Tensor], ctx: StepContext
                    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``loss + R_arch(alpha)`` and the named terms of ``R_arch``."""
        terms = self.arch_regularization(activated, ctx)
        for value in terms.values():
            loss = loss + value
        return loss, terms

    def arch_objective(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``L_val(w, alpha) + R_arch(alpha)``; returns (objective, logits, regularizer terms)."""
        activated = self.activated()
        loss, logits = self.loss(batch, activated)
        objective, terms = self.regularized(loss, activated, ctx)
        return objective, logits, terms
