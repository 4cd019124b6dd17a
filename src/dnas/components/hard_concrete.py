"""PR-DARTS hard-concrete gate activation (Zhou et al., NeurIPS 2020, section 4.1; Louizos et al., 2018).

Every (edge, op) pair has its own logit ``beta`` and an independent stochastic binary gate; there is
no softmax across the ops of an edge, and the node sums the gated op outputs as they are:
``X^(l) = sum_{s<l} sum_t g_{s,t}^(l) O_t(X^(s))``.

Sampling (one fresh sample per call, so the architecture and the weight step of an iteration see
different gates, as in the paper's Algorithm 1)::

    u ~ U(0, 1),   s = sigmoid((log u - log(1 - u) + beta) / tau)
    g = min(1, max(0, a + (b - a) s))                     a = -0.1, b = 1.1

``g`` is exactly 0 when ``s <= -a/(b-a)`` and exactly 1 when ``s >= (1-a)/(b-a)``; the gradient
w.r.t. ``beta`` is the reparameterised one (zero where the gate is clipped). The probability that
a gate is open has a closed form, which the PR-DARTS regularizer and the derivation use::

    P(g != 0) = sigmoid(beta - tau ln(-a/b))              (= sigmoid(beta + 2.3979 tau) for a, b above)

The temperature is annealed linearly per epoch, ``tau_e = tau_max - (tau_max - tau_min) e/(E-1)``
(paper: 10 -> 0.1; official code: 1 -> 0.1).

Optional op selection (``top_k > 0``): per edge only the ``k`` ops with the largest sampled gates are
run (the paper runs 2 per edge to save compute; ties, e.g. several gates at exactly 1, are broken
at random). The official code also adds -1 to each op's score with probability ``drop_prob``
before the selection and, with ``straight_through``, forwards weight 1 for the selected ops while
the gradient flows into the continuous gate: ``A = sel (1 + g - stopgrad(g))``. Without it the
selected ops keep their gate value, ``A = sel g``.

Compute: an op whose weight in ``A`` is exactly 0 is not run (``active_mask``). Deciding this needs
the gates on the host: ``active_mask`` makes one device-to-host copy per call (one per forward
pass), holding the masks of all cell types. The ``none`` op multiplies a zero output and the
fused supernet never computes it, whatever its mask entry says; it still has a gate, which counts
among the active gates, takes a top-k slot when selected (as in the official code) and is pushed
down by the regularizer's non-skip group (its cross-entropy gradient is exactly zero).

Derivation and reports use ``strength = P(g != 0)`` (paper), returned in float64: at ``tau = 10``
``P = sigmoid(beta + 24)`` differs from 1 by ~4e-11, which float32 would round to exactly 1 and
turn every ranking into a tie.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from dnas.components.activations import ACTIVATIONS, Activation
from dnas.errors import DnasError


def sample_hard_concrete(beta: Tensor, tau: float, a: float, b: float) -> Tensor:
    """One stretched-and-clipped hard-concrete sample per entry of ``beta`` (torch's global RNG)."""
    u = torch.rand_like(beta, dtype=beta.dtype).clamp_(min=torch.finfo(beta.dtype).tiny)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + beta) / tau)
    return (a + (b - a) * s).clamp(0.0, 1.0)


def gate_probability(beta: Tensor, tau: float, a: float, b: float) -> Tensor:
    """``P(g != 0) = sigmoid(beta - tau ln(-a/b))``, ``dP/dbeta = P (1 - P)``.

    Computed in float64 and returned in the dtype of ``beta``: in float32 ``P`` rounds to exactly 1
    once ``beta - tau ln(-a/b) > 16.6`` (the paper's start: 0.5 + 24), and autograd's ``P (1 - P)``
    then gives a gradient of exactly 0 instead of ~2e-11; in float64 it is the true value, which
    float32 represents."""
    return torch.sigmoid(beta.double() - tau * math.log(-a / b)).to(beta.dtype)


def select_top_k(gates: Tensor, k: int, drop_prob: float) -> Tensor:
    """Per row, a 0/1 mask of the ``k`` largest ``gates`` (after -1 on each entry with prob.
    ``drop_prob``); ties are broken by a random permutation of the columns."""
    score = gates.detach()
    if drop_prob > 0:
        score = score - torch.bernoulli(torch.full_like(score, drop_prob))
    perm = torch.rand_like(score).argsort(dim=1)
    top = score.gather(1, perm).topk(min(k, score.shape[1]), dim=1).indices
    return torch.zeros_like(score).scatter_(1, perm.gather(1, top), 1.0)


@ACTIVATIONS.register("hard-concrete")
class HardConcrete(Activation):
    """Independent hard-concrete gates per op (PR-DARTS); see the module docstring.

    Hyper-parameters: ``tau_max``/``tau_min`` (linear annealing over the epochs), ``a``/``b``
    (stretch interval, a < 0 < 1 < b), ``init_mean``/``init_std`` (beta ~ N(mean, std^2); paper
    0.5/0, code 0/1e-3), ``top_k`` (ops run per edge per step, 0 = all), ``drop_prob`` and
    ``straight_through`` (the official code's selection, both need ``top_k > 0``).

    State (checkpointed): the temperature ``tau`` and the counts of the last sample. Metrics:
    ``tau`` and ``active.<cell type>``, the number of nonzero entries of the last ``A`` (the gates
    open, and selected, in the last forward pass; ``none`` included).

    Data parallel: every rank draws the same gate samples (the ranks share one seed and consume
    their random numbers identically), so all ranks compute the same ops and the shard gradients
    they average belong to the same sampled sub-network, as in one process.
    """

    prunable = True

    def __init__(self, *, tau_max: float = 10.0, tau_min: float = 0.1, a: float = -0.1, b: float = 1.1,
                 init_mean: float = 0.5, init_std: float = 0.0, top_k: int = 0, drop_prob: float = 0.0,
                 straight_through: bool = False, exclude: str = ""):
        super().__init__(exclude=exclude)
        if not 0 < tau_min <= tau_max:
            raise DnasError(f"hard-concrete needs 0 < tau_min <= tau_max, got tau_min={tau_min}, tau_max={tau_max}")
        if not (a < 0 and b > 1):
            raise DnasError(f"hard-concrete needs a < 0 and b > 1 (the stretch must reach 0 and 1), got a={a}, b={b}")
        if init_std < 0:
            raise DnasError(f"hard-concrete init_std must be >= 0, got {init_std}")
        if top_k < 0:
            raise DnasError(f"hard-concrete top_k must be >= 0 (0: no selection), got {top_k}")
        if not 0 <= drop_prob < 1:
            raise DnasError(f"hard-concrete drop_prob must lie in [0, 1), got {drop_prob}")
        if top_k == 0 and (drop_prob > 0 or straight_through):
            raise DnasError("hard-concrete drop_prob and straight_through act on the top-k selection; set top_k > 0")
        self.tau_max, self.tau_min = float(tau_max), float(tau_min)
        self.a, self.b = float(a), float(b)
        self.init_mean, self.init_std = float(init_mean), float(init_std)
        self.top_k, self.drop_prob, self.straight_through = int(top_k), float(drop_prob), bool(straight_through)
        self.tau = self.tau_max
        self.active: dict[str, int] = {}  # nonzero entries of the last A per cell type (host ints)

    # ----- schedule and state ------------------------------------------------------------------
    def tau_at(self, epoch: int, epochs: int) -> float:
        """``tau_max - (tau_max - tau_min) e/(E-1)`` (a single-epoch search stays at ``tau_max``)."""
        f = epoch / max(epochs - 1, 1)
        return (1.0 - f) * self.tau_max + f * self.tau_min  # exact at both ends

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.tau = self.tau_at(epoch, epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "active": dict(self.active)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tau = float(state["tau"])
        self.active = {k: int(v) for k, v in state["active"].items()}

    def metrics(self) -> dict[str, float | Tensor]:
        return {"tau": self.tau, **{f"active.{t}": float(n) for t, n in self.active.items()}}

    # ----- the activation ----------------------------------------------------------------------
    def init_alpha(self, shape: tuple[int, int], generator: torch.Generator) -> Tensor:
        return self.init_mean + self.init_std * torch.randn(shape, generator=generator)

    def __call__(self, alpha: Tensor, cell_type: str) -> Tensor:
        kept = self.kept(cell_type, alpha)
        g = sample_hard_concrete(alpha, self.tau, self.a, self.b)
        if kept is not None:
            g = g * kept
        if not self.top_k:
            return g
        sel = select_top_k(g if kept is None else g.masked_fill(~kept, float("-inf")), self.top_k, self.drop_prob)
        if kept is not None:  # an edge with fewer than k kept ops
            sel = sel * kept
        return sel * (1.0 + (g - g.detach())) if self.straight_through else sel * g

    def probability(self, alpha: Tensor, cell_type: str | None = None) -> Tensor:
        """``P(g != 0)`` at the current temperature (differentiable; 0 for the excluded ops of ``cell_type``)."""
        p = gate_probability(alpha, self.tau, self.a, self.b)
        kept = None if cell_type is None else self.kept(cell_type, alpha)
        return p if kept is None else p * kept

    def deterministic_gate(self, alpha: Tensor, cell_type: str | None = None) -> Tensor:
        """The noise-free gate (``u = 1/2``): ``min(1, max(0, a + (b - a) sigmoid(beta / tau)))``."""
        return (self.a + (self.b - self.a) * torch.sigmoid(alpha / self.tau)).clamp(0.0, 1.0)

    def strength(self, alpha: Tensor, cell_type: str) -> Tensor:
        """``P(g != 0)`` in float64 (derivation and reports; see the module docstring)."""
        return self.probability(alpha.detach().double(), cell_type)

    def active_mask(self, weights: dict[str, Tensor]) -> dict[str, Tensor | None] | None:
        """CPU masks of the entries of ``A`` that are not exactly 0 (the ops worth computing).

        One host copy for all cell types; the counts of nonzero entries are kept for ``metrics``."""
        types = list(weights)
        flat = torch.cat([weights[t].detach().ne(0).flatten() for t in types]).cpu()
        masks: dict[str, Tensor | None] = {}
        start = 0
        for t in types:
            shape = weights[t].shape
            mask = flat[start:start + shape.numel()].view(shape).clone()
            start += shape.numel()
            self.active[t] = int(mask.sum())
            masks[t] = mask
        return masks
