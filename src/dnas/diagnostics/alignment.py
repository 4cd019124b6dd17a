"""Collapse diagnostics computed during search."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def gradient_alignment(grads: Sequence[Tensor]) -> Tensor:
    """Mean pairwise cosine similarity of the per-cell architecture gradients (Lambda-DARTS' ``corr``).

        R = 2 / (L (L-1)) * sum_{i<j} <g_i, g_j> / (||g_i|| ||g_j||)

    ``grads`` are the gradients ``dL/dA_l`` of the ``L`` cells of one type; 1 means every cell
    pushes the shared architecture the same way. Returns 1 for a single cell. Data parallel: the loop
    passes the cell gradients after averaging them over the ranks (the global batch's alignment).
    """
    g = torch.stack([t.reshape(-1) for t in grads])
    if len(g) < 2:
        return g.new_ones(())
    u = g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
    gram = u @ u.T
    n = len(g)
    return (gram.sum() - gram.diagonal().sum()) / (n * (n - 1))
