"""Lambda-DARTS per-cell gradient-alignment weight regularizer (Movahedi et al., ICLR 2023).

With weight sharing every cell ``l`` of a type uses the same activated weights, so the
architecture gradient is a sum of per-cell gradients ``g_l = dL_train/dA_l``. Lambda-DARTS
*maximises* their alignment ``R`` in the weight step (dr-faustus/Lambda-DARTS ``sota/cnn/model_search.py``):

    w-gradient = grad_w L_train(w, A) - lambda_t * grad_w R(w),    lambda_t = lambda * e / (E - 1)

with, over the ``L`` cells of each regularized type and ``c = 2 / (L (L - 1))``,

    corr:      R = c * sum_{i<j} <g_i, g_j> / (||g_i|| ||g_j||)
    signcorr:  R = c * sum_{i<j} <g_i, g_j> / <|g_i|, |g_j|>

(summed over the regularized cell types). ``grad_w R`` needs third-order autograd through the
network; as in the official code it is obtained from two extra forward/backward passes on the
same batch. With the direction ``p_l = dR/dg_l`` held constant, ``grad_w R = grad_w <g(w), p>``
is a mixed second derivative of ``L`` and a central difference in ``A`` gives it:

    eps = eps0 / ||concat_l p_l||,   G(+-) = grad_w L(w; A_l +- eps p_l),
    reg_grad = (G(-) - G(+)) / (2 eps) ~= -grad_w R,   w.grad += lambda_t * reg_grad.

``exact=True`` replaces the finite difference by double backward (``create_graph``): the exact
almost-everywhere derivative, costlier in time and memory (verification and small models). The
two agree when the perturbation crosses no kink of the network (ReLU, max-pool): in float64 on
tiny supernets to ~1e-9 at ``eps0 = 1e-6``. At the official radii (1e-4, 1e-3) a realistic
supernet has many units within reach of a kink, and the central difference measures the gradient
of a smoothed ``R``, which autograd's second derivative (zero curvature at kinks) does not see:
on NB201 with C=8, N=2, batch 32, 16x16 inputs we measured a relative difference of ~29 (cosine
0.06) at ``eps0 = 1e-3``, and agreement only from ``eps0 = 1e-6`` down. The finite difference is
the official method and the default; ``exact`` is not a more accurate drop-in for it.

The extra passes see the weights of this step with the activation's mask of inactive ops (``p_l``
is zero wherever ``g_l`` is zero in every cell, e.g. on ops that were not computed, so the mask
stays valid), and they leave the rest of the search undisturbed: the BatchNorm running statistics
outside the cells (stem, preprocessing, residual blocks, last BN) are restored afterwards, and so
is the random number generator. Both perturbed passes (and the exact pass) replay the same RNG
state, so that stochastic ops (the ``noise`` op of S4) draw the same sample in ``G(-)`` and
``G(+)`` and the central difference measures the perturbation only (the official code draws new
noise in each pass, which turns the difference quotient into noise of order ``1/eps``). That
sample is not the one of the ordinary weight pass that produced ``g_l`` and hence ``p_l`` (the
RNG state before that pass is not available to the regularizer): on S4 the regularizer gradient
is ``grad_w <g(w; noise'), p(noise)>``; every other space is deterministic and unaffected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from dnas.bilevel.autodiff import global_norm, preserved_buffers, replay_randomness
from dnas.bilevel.problem import Batch, BilevelProblem, StepContext
from dnas.components.regularizers import WEIGHT_REGULARIZERS, WeightRegularizer
from dnas.diagnostics.alignment import gradient_alignment
from dnas.errors import DnasError
from dnas.supernet import Supernet
from dnas.supernet.differentiation import twice_differentiated

MEASURES = ("corr", "signcorr")
_TINY = 1e-30


def sign_alignment(grads: Sequence[Tensor] | Tensor) -> Tensor:
    """Lambda-DARTS' ``signcorr``: ``R = c * sum_{i<j} <g_i, g_j> / <|g_i|, |g_j|>``, ``c = 2/(L(L-1))``.

    Every term lies in [-1, 1] and equals 1 iff the signs of the two gradients agree on every
    coordinate where both are nonzero. Returns 1 for a single cell.
    """
    g = torch.stack([t.reshape(-1) for t in grads])
    n = len(g)
    if n < 2:
        return g.new_ones(())
    a = g.abs()
    rho = (g @ g.T) / (a @ a.T).clamp_min(_TINY)
    return (rho.sum() - rho.diagonal().sum()) / (n * (n - 1))


def alignment(grads: Sequence[Tensor] | Tensor, measure: str) -> Tensor:
    """The alignment ``R`` of the per-cell gradients of one cell type under ``measure``."""
    if measure == "corr":
        return gradient_alignment(list(grads))
    if measure == "signcorr":
        return sign_alignment(grads)
    raise ValueError(f"unknown alignment measure {measure!r}; choose one of {MEASURES}")


def alignment_direction(grads: Tensor, measure: str) -> Tensor:
    """``p_l = dR/dg_l`` for the rows ``g_l`` of ``grads`` (shape ``(L, D)``), in closed form.

    corr, with ``u_l = g_l / ||g_l||`` and ``S = sum_j u_j``:

        p_l = c / ||g_l|| * (I - u_l u_l^T) S

    signcorr, with ``D_lj = <|g_l|, |g_j|>`` and ``rho_lj = <g_l, g_j> / D_lj``:

        p_l = c * sum_{j != l} (1 - rho_lj sign(g_l) * sign(g_j)) * g_j / D_lj
            = c * [sum_{j != l} g_j / D_lj  -  sign(g_l) * sum_{j != l} (rho_lj / D_lj) |g_j|]

    (``|g_j| = sign(g_j) * g_j``). Zero for a single cell.
    """
    n = len(grads)
    if n < 2:
        return torch.zeros_like(grads)
    c = 2.0 / (n * (n - 1))
    if measure == "corr":
        raw = grads.norm(dim=1, keepdim=True)
        norms = raw.clamp_min(_TINY)
        u = grads / norms
        s = u.sum(0)
        # a cell with a zero gradient has no direction (cos is undefined there): p_l = 0, not c S / 1e-30
        return torch.where(raw > 0, c * (s - (u @ s).unsqueeze(1) * u) / norms, 0.0)
    if measure == "signcorr":
        a = grads.abs()
        d = (a @ a.T).clamp_min(_TINY)
        rho = (grads @ grads.T) / d
        off = 1.0 - torch.eye(n, dtype=grads.dtype, device=grads.device)
        inv_d = off / d
        return c * (inv_d @ grads - grads.sign() * ((rho * inv_d) @ a))
    raise ValueError(f"unknown alignment measure {measure!r}; choose one of {MEASURES}")


@WEIGHT_REGULARIZERS.register("lambda")
class LambdaRegularizer(WeightRegularizer):
    """Lambda-DARTS: maximise the alignment of the per-cell architecture gradients in the weight step.

    Hyper-parameters:
        lam:     final strength ``lambda``; ``lambda_t = lam * e / (E - 1)`` ramps linearly over the
                 epochs from 0 (first epoch) to ``lam`` (last epoch); a one-epoch search uses ``lam``.
        eps0:    norm of the finite-difference perturbation of the architecture weights
                 (official: 1e-4 on NAS-Bench-201, 1e-3 on the DARTS-family spaces).
        measure: ``corr`` (cosine) or ``signcorr`` (sign agreement).
        cells:   regularized cell types: ``auto`` (every non-reduction type: normal cells on the
                 DARTS family, all cells on NAS-Bench-201, as in the official code), ``all``, or a
                 comma-separated list of types. Types with a single cell are left out (R = 1).
        exact:   compute ``grad_w R`` by double backward instead of finite differences (the local
                 derivative; see the module docstring for how it differs at the official radii).
    """


    def __init__(self, *, lam: float = 0.25, eps0: float = 1e-4, measure: str = "corr", cells: str = "auto",
                 exact: bool = False):
        if measure not in MEASURES:
            raise DnasError(f"weight regularizer lambda: measure must be one of {', '.join(MEASURES)}, "
                            f"got {measure!r}")
        if lam < 0:
            raise DnasError(f"weight regularizer lambda: lam must be non-negative, got {lam}")
        if eps0 <= 0:
            raise DnasError(f"weight regularizer lambda: eps0 must be positive, got {eps0}")
        self.lam = float(lam)
        self.eps0 = float(eps0)
        self.measure = measure
        self.cells = str(cells)
        self.exact = bool(exact)
        self._lambda_t = 0.0
        self._alignment: dict[str, Tensor] = {}

    # ----- schedule and cell selection ---------------------------------------------------------
    def lambda_at(self, epoch: int, epochs: int) -> float:
        """``lambda_t = lam * e / (E - 1)`` (``lam`` when ``E = 1``)."""
        if epochs <= 1:
            return self.lam
        return self.lam * epoch / (epochs - 1)

    def regularized_types(self, net: Supernet) -> list[str]:
        """The cell types whose per-cell gradients are aligned (each with at least two cells)."""
        types = list(dict.fromkeys(net.cell_types))
        if self.cells == "auto":
            chosen = [t for t in types if not net.space.cells[t].reduction]
        elif self.cells == "all":
            chosen = types
        else:
            chosen = [t.strip() for t in self.cells.split(",") if t.strip()]
            unknown = [t for t in chosen if t not in types]
            if unknown:
                raise DnasError(f"weight regularizer lambda: cells names unknown cell type(s) {', '.join(unknown)}; "
                                f"this supernet has {', '.join(types)} (or use auto/all)")
        kept = [t for t in chosen if len(net.cells_of_type(t)) >= 2]
        if not kept:
            counts = ", ".join(f"{t}: {len(net.cells_of_type(t))}" for t in chosen)
            raise DnasError(f"weight regularizer lambda needs two or more cells of a regularized type, the supernet "
                            f"has {counts} cell(s); use more layers or set weight_regularizers.lambda.cells")
        return kept

    # ----- the weight-step hook ----------------------------------------------------------------
    def add_gradient(self, problem: BilevelProblem, batch: Batch, cell_weights: Sequence[Tensor],
                     cell_grads: Sequence[Tensor], ctx: StepContext) -> None:
        net = problem.net
        groups = {t: net.cells_of_type(t) for t in self.regularized_types(net)}
        with torch.no_grad():
            stacked = {
                t: torch.stack([cell_grads[i].reshape(-1) for i in idx])
                for t, idx in groups.items()
            }
            self._alignment = {t: alignment(g, self.measure) for t, g in stacked.items()}
        self._lambda_t = self.lambda_at(ctx.epoch, ctx.epochs)
        if self._lambda_t == 0.0:
            return  # nothing to add (the first epoch of the ramp): skip the extra passes
        base = [w.detach() for w in cell_weights]
        # the per-type weights of this step, for the activation's mask of inactive ops
        activated = {t: base[net.cells_of_type(t)[0]] for t in dict.fromkeys(net.cell_types)}
        device = batch[0].device
        # The extra passes must leave no trace: BatchNorm running statistics are restored, the RNG
        # is forked (restored on exit) and every extra pass replays the same random numbers.
        with preserved_buffers(net), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if self.exact:
                increments = self._exact(problem, batch, base, activated, groups)
            else:
                increments = self._finite_difference(problem, batch, base, activated, groups, stacked)
        # data parallel: the cell gradients (hence the direction p) were averaged by the loop; the
        # increments are differences of shard gradients, averaged here like every data gradient
        problem.mean_(increments)
        with torch.no_grad():
            for p, inc in zip(problem.weights, increments, strict=True):
                if inc is not None:
                    p.grad = inc if p.grad is None else p.grad.add_(inc)

    def _finite_difference(self, problem: BilevelProblem, batch: Batch, base: list[Tensor],
                           activated: Mapping[str, Tensor], groups: Mapping[str, list[int]],
                           stacked: Mapping[str, Tensor]) -> list[Tensor | None]:
        """``lambda_t (G(-) - G(+)) / (2 eps)`` with ``G(+-) = grad_w L(w; A_l +- eps p_l)``."""
        with torch.no_grad():
            directions = {t: alignment_direction(g, self.measure) for t, g in stacked.items()}
            p_norm = global_norm(list(directions.values())).clamp_min(_TINY)
            delta: list[Tensor | None] = [None] * len(base)
            for t, idx in groups.items():
                for row, i in enumerate(idx):  # eps * p_l: norm eps0 over all regularized cells
                    delta[i] = (self.eps0 / p_norm) * directions[t][row].view_as(base[i])
            scale = self._lambda_t * p_norm / (2.0 * self.eps0)  # lambda_t / (2 eps)
        weights = problem.weights
        side = [0.0]  # the sign of the current pass, read by ``loss_at``

        def loss_at() -> Tensor:  # L(w; A + side * eps p)
            perturbed = [b if d is None else b + side[0] * d for b, d in zip(base, delta, strict=True)]
            return problem.loss(batch, activated, perturbed)[0]

        loss_fn = replay_randomness(loss_at, batch[0].device)  # both passes draw the same random numbers
        grads = {}
        for sign in (-1.0, 1.0):
            side[0] = sign
            grads[sign] = torch.autograd.grad(loss_fn(), weights, allow_unused=True)
        with torch.no_grad():
            return [None if gm is None else (gm - gp) * scale
                    for gm, gp in zip(grads[-1.0], grads[1.0], strict=True)]

    def _exact(self, problem: BilevelProblem, batch: Batch, base: list[Tensor],
               activated: Mapping[str, Tensor], groups: Mapping[str, list[int]]) -> list[Tensor | None]:
        """``-lambda_t grad_w R`` by double backward through ``g_l = dL/dA_l``."""
        order = [i for idx in groups.values() for i in idx]
        leaves = [b.clone().requires_grad_(i in order) for i, b in enumerate(base)]
        with twice_differentiated():
            loss, _ = problem.loss(batch, activated, leaves)
        g = dict(zip(order, torch.autograd.grad(loss, [leaves[i] for i in order], create_graph=True), strict=True))
        terms = [alignment([g[i] for i in idx], self.measure) for idx in groups.values()]
        r = sum(terms[1:], terms[0])  # never empty: regularized_types refuses a supernet with nothing to align
        grad_r = torch.autograd.grad(r, problem.weights, allow_unused=True)
        return [None if gr is None else -self._lambda_t * gr.detach() for gr in grad_r]

    # ----- logging -----------------------------------------------------------------------------
    def metrics(self) -> dict[str, float | Tensor]:
        """The alignment ``R`` of each regularized type in the last weight step, and ``lambda_t``."""
        out: dict[str, float | Tensor] = {f"R.{t}": r for t, r in self._alignment.items()}
        out["lambda_t"] = self._lambda_t
        return out
