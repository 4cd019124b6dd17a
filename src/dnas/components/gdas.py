"""GDAS: one sampled operation per edge (Dong & Yang, CVPR 2019; code: D-X-Y/AutoDL-Projects).

Each forward draws, per edge, one op from the Gumbel-softmax of the architecture logits and runs
only that op (AutoDL ``search_model_gdas.py``, ``forward_gdas``)::

    g_{e,o} = -log(E_{e,o}),  E ~ Exp(1)                           (standard Gumbel noise)
    p_e = softmax((log_softmax(alpha_e) + g_e) / tau)
    h_e = onehot(argmax_o p_{e,o}) - stopgrad(p_e) + p_e            (straight-through)

``h_e`` is exactly one-hot in the forward pass (the other entries are ``-p + p = 0`` exactly), so
the fused supernet computes one op per edge (``active_mask``); the backward pass differentiates
``p_e``. A sample is drawn for each cell type in every forward, shared by all cells of that type. The temperature is
annealed linearly per epoch, ``tau_e = tau_max - (tau_max - tau_min) e / (E - 1)`` (10 -> 0.1).

Derivation and reports use ``strength = softmax(alpha)``: on NAS-Bench-201 the arg-max per edge,
``none`` included (AutoDL's ``genotype``); on the DARTS spaces the two strongest (op, input) pairs
per node over all incoming edges (:class:`GdasRule`, AutoDL ``search_model_gdas_nasnet.py``).
The exponential draws are clamped to the smallest normal float instead of redrawing an infinite
Gumbel value as the official code does (no host synchronisation; the two differ with probability
about 1e-38 per draw).

Differences from the official code: AutoDL's NAS-Bench-201 cell also adds the non-sampled ops'
weights to the node as scalars (their value is 0, their gradient the sum of the node's gradient);
dnas keeps the sampled op's term only, as AutoDL's DARTS-space GDAS cell does. AutoDL clips the
weights' gradient norm together with the architecture gradient left over from the previous step;
dnas clips the weights' gradient alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dnas.components.activations import ACTIVATIONS, Activation
from dnas.components.discretizers import DISCRETIZERS, Discretizer
from dnas.errors import DnasError
from dnas.spaces.base import SearchSpace
from dnas.spaces.genotype import Genotype


def gumbel_one_hot(alpha: Tensor, tau: float) -> Tensor:
    """The straight-through one-hot sample ``h`` of every row of ``alpha`` (module docstring)."""
    log_p = alpha.log_softmax(dim=-1)
    # E is clamped into the normal floats, so that -log E is finite: the official code redraws when it is
    # infinite, which needs the device to report back (a host synchronisation) for an event of probability ~1e-38
    tiny = torch.finfo(alpha.dtype).tiny
    gumbels = -torch.empty_like(alpha).exponential_().clamp_(min=tiny).log()
    probs = ((log_p + gumbels) / tau).softmax(dim=-1)
    index = probs.argmax(dim=-1, keepdim=True)
    one_hot = torch.zeros_like(probs).scatter_(-1, index, 1.0)
    return one_hot - probs.detach() + probs


@ACTIVATIONS.register("gumbel")
class GumbelOneHot(Activation):
    """GDAS' hard Gumbel-softmax sample per edge (module docstring). State: the temperature."""

    prunable = True

    def __init__(self, *, tau_max: float = 10.0, tau_min: float = 0.1, init_std: float = 1e-3, exclude: str = ""):
        super().__init__(exclude=exclude)
        if not 0 < tau_min <= tau_max:
            raise DnasError(f"gumbel needs 0 < tau_min <= tau_max, got tau_min={tau_min}, tau_max={tau_max}")
        self.tau_max, self.tau_min, self.init_std = float(tau_max), float(tau_min), float(init_std)
        self.tau = self.tau_max

    def tau_at(self, epoch: int, epochs: int) -> float:
        """``tau_max - (tau_max - tau_min) e/(E-1)`` (a single-epoch search stays at ``tau_max``)."""
        f = epoch / max(epochs - 1, 1)
        return (1.0 - f) * self.tau_max + f * self.tau_min

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.tau = self.tau_at(epoch, epochs)

    def init_alpha(self, shape: tuple[int, int], generator: torch.Generator) -> Tensor:
        return self.init_std * torch.randn(shape, generator=generator)

    def __call__(self, alpha: Tensor, cell_type: str) -> Tensor:
        kept = self.kept(cell_type, alpha)
        if kept is not None:
            alpha = alpha.masked_fill(~kept, float("-inf"))
        return gumbel_one_hot(alpha, self.tau)

    def strength(self, alpha: Tensor, cell_type: str) -> Tensor:
        kept = self.kept(cell_type, alpha)
        if kept is not None:
            alpha = alpha.masked_fill(~kept, float("-inf"))
        return alpha.softmax(dim=-1)

    def active_mask(self, weights: dict[str, Tensor]) -> dict[str, Tensor | None] | None:
        """The sampled op of every edge (one host copy for all cell types)."""
        types = list(weights)
        index = torch.cat([weights[t].detach().argmax(dim=-1) for t in types]).cpu()
        masks: dict[str, Tensor | None] = {}
        start = 0
        for t in types:
            rows = weights[t].shape[0]
            masks[t] = torch.zeros(weights[t].shape, dtype=torch.bool).scatter_(1, index[start:start + rows, None],
                                                                                 True)
            start += rows
        return masks

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tau = float(state["tau"])

    def metrics(self) -> dict[str, float | Tensor]:
        return {"tau": self.tau}


@DISCRETIZERS.register("gdas")
class GdasRule(Discretizer):
    """AutoDL's GDAS on the DARTS spaces: per intermediate node, the two strongest (op, input) pairs
    over all incoming edges and their non-``none`` ops (the same input may be chosen twice)."""

    def __call__(self, space: SearchSpace, strengths: dict[str, Tensor]) -> Genotype:
        cells, concat = {}, {}
        for cell_type, topo in space.cells.items():
            w = strengths[cell_type].detach().cpu().double()
            pairs: list[tuple[str, int]] = []
            for node in topo.intermediate_nodes:
                candidates = [(w[e, k].item(), topo.edge_ops[e][k], topo.edges[e][0])
                              for e in topo.incoming(node) for k in range(topo.ops_per_edge)
                              if topo.edge_ops[e][k] != "none"]
                ranked = sorted(candidates, key=lambda c: -c[0])[:2]  # stable: ties keep edge, then op order
                pairs.extend((op, src) for _, op, src in ranked)
            cells[cell_type] = tuple(pairs)
            concat[cell_type] = tuple(topo.intermediate_nodes)
        return Genotype(space=space.name, cells=cells, concat=concat)
