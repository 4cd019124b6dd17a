"""Has the search decided? The entropy of the op distribution and the margin between the two
strongest ops, per edge, averaged over the edges of each cell type.

Both are computed from the activation's **strengths** (:meth:`BilevelProblem.strengths`), in the
activation's own terms: softmax weights (DARTS), gate probabilities ``P(g != 0)`` (PR-DARTS),
clamp values (DARTS-PRIME v1).

**Which ops count.** On an edge ``e`` the candidates ``C_e`` are the ops the derivation rule can
choose and the activation can weight:

* ``none`` counts only on spaces derived by the arg-max per edge (NAS-Bench-201, where ``none``
  can win an edge) and only when the activation keeps it (``Activation.allows_none``; the clamp
  activation masks it from the start). On the DARTS space and S1-S4 the rule never picks
  ``none``, so an edge is decided when one *real* op stands out, however large ``none`` is.
* Ops pruned during the search (clamp: strength exactly 0) still count: pruning is a decision,
  so it lowers the entropy and can raise the margin.
* An edge whose candidates all have strength 0 has been removed entirely; it is decided and is
  left out of both means (a cell type with no edge left reports None).

**Entropy** of the strengths normalised to sum 1 over the candidates, divided by its maximum so
that it reads the same on every space (1 = uniform, 0 = one op holds all the strength)::

    p_{e,o} = s_{e,o} / sum_{o' in C_e} s_{e,o'}
    H_e = - sum_{o in C_e} p_{e,o} ln p_{e,o} / ln |C_e|          (0 when |C_e| = 1)

For softmax weights (``none`` counted) ``p`` is the softmax itself; gate probabilities and clamp
values do not sum to 1, so ``H_e`` says how unequal they are, not how large.

**Margin** between the strongest and the second-strongest candidate, in the raw strengths (not
normalised), i.e. in the units the derivation compares::

    m_e = s_{e,(1)} - s_{e,(2)}                                   (s_{e,(2)} = 0 when |C_e| = 1)

and per cell type ``entropy = mean_e H_e``, ``margin = mean_e m_e``.

**Undecided.** A run whose final margin is below :data:`UNDECIDED_MARGIN` in any cell type is
flagged "undecided": its derived cell rests on differences the next few steps could reverse. The
threshold 0.03 separates the two groups of runs of the collapse protocol's pilots (margins 0.002-0.028 for
runs whose weights hardly moved from their initialisation, 0.03-0.36 for runs that settled); for
a softmax over the 5 NB201 ops it means a winner at 0.22 against a runner-up at 0.19.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from dnas.spaces.base import CellTopology, SearchSpace

#: a final margin below this (in any cell type) flags a run as undecided (module docstring)
UNDECIDED_MARGIN = 0.03


def candidate_mask(topo: CellTopology, derivation: str, allows_none: bool) -> Tensor:
    """``(E, K)`` bool: the ops that count on each edge (module docstring)."""
    keep_none = derivation == "argmax" and allows_none
    return torch.tensor([[op != "none" or keep_none for op in ops] for ops in topo.edge_ops], dtype=torch.bool)


def edge_entropy_and_margin(strengths: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per edge ``H_e`` and ``m_e`` (float64) and a bool of the edges that are not removed."""
    s = strengths.detach().double().cpu().clamp_min(0.0).masked_fill(~candidates, 0.0)
    total = s.sum(dim=1)
    alive = total > 0
    p = s / total.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(1)
    plogp = torch.where(p > 0, p * p.clamp_min(torch.finfo(torch.float64).tiny).log(), torch.zeros_like(p))
    count = candidates.sum(dim=1).double()
    entropy = torch.where(count > 1, -plogp.sum(dim=1) / count.clamp_min(2.0).log(), torch.zeros_like(total))
    ranked = s.masked_fill(~candidates, -math.inf).sort(dim=1, descending=True).values
    second = ranked[:, 1].clamp_min(0.0) if s.shape[1] > 1 else torch.zeros_like(total)
    margin = ranked[:, 0] - second
    return entropy, margin, alive


def convergence(space: SearchSpace, strengths: Mapping[str, Tensor | Sequence], allows_none: bool
                ) -> dict[str, dict[str, float | None]]:
    """``{"entropy": {cell type: mean H_e}, "margin": {cell type: mean m_e}}`` (module docstring);
    ``strengths`` as :meth:`BilevelProblem.strengths` returns them or as JSON lists."""
    out: dict[str, dict[str, float | None]] = {"entropy": {}, "margin": {}}
    for cell_type, topo in space.cells.items():
        s = torch.as_tensor(strengths[cell_type], dtype=torch.float64)
        entropy, margin, alive = edge_entropy_and_margin(s, candidate_mask(topo, space.derivation, allows_none))
        live = bool(alive.any())
        out["entropy"][cell_type] = float(entropy[alive].mean()) if live else None
        out["margin"][cell_type] = float(margin[alive].mean()) if live else None
    return out


def least_decided(record: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """Over the cell types of an epoch record or ``results.json``: the smallest margin and the
    largest entropy (None where the record has none)."""
    margins = [v for v in (record.get("margin") or {}).values() if v is not None]
    entropies = [v for v in (record.get("entropy") or {}).values() if v is not None]
    return (min(margins) if margins else None), (max(entropies) if entropies else None)


def undecided(margin: float | None) -> bool:
    """A final (smallest) margin below :data:`UNDECIDED_MARGIN`."""
    return margin is not None and margin < UNDECIDED_MARGIN
