"""Curvature of the validation loss in architecture space: RobustDARTS' collapse indicator.

Zela et al. (ICLR 2020) observe that DARTS' architectures degrade when the dominant eigenvalue
of ``grad^2_alpha L_val(w, alpha)`` grows during search. :func:`dominant_eigenvalue` estimates it
by power iteration on exact Hessian-vector products (one forward, one ``create_graph`` backward,
then one extra backward per iteration), jointly over the architecture parameters of all cell types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from dnas.bilevel.autodiff import make_hvp, preserved_buffers

MatVec = Callable[[list[Tensor]], list[Tensor]]


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return torch.stack([(x * y).sum() for x, y in zip(a, b, strict=True)]).sum()


def power_iteration(matvec: MatVec, like: Sequence[Tensor], *, iters: int = 20, tol: float = 1e-3,
                    generator: torch.Generator | None = None) -> float:
    """The eigenvalue of largest magnitude of the symmetric operator ``matvec`` (signed).

        v_0 random unit vector;  v_{k+1} = M v_k / ||M v_k||;  lambda_k = <v_k, M v_k>

    Stops after ``iters`` products or when ``|lambda_k - lambda_{k-1}| <= tol |lambda_k|``.
    ``like`` gives the shapes, dtype and device of the vectors. Returns 0 for the zero operator.
    """
    if iters < 1:
        raise ValueError(f"power iteration needs at least one iteration, got {iters}")
    like = list(like)
    v = [torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) for x in like]
    length = torch.sqrt(_dot(v, v))
    v = [x / length for x in v]
    previous = None
    eigenvalue = 0.0
    for _ in range(iters):
        mv = matvec(v)
        eigenvalue = float(_dot(v, mv))
        norm = float(torch.sqrt(_dot(mv, mv)))
        if norm == 0.0:
            return 0.0
        v = [x / norm for x in mv]
        if previous is not None and abs(eigenvalue - previous) <= tol * abs(eigenvalue):
            break
        previous = eigenvalue
    return eigenvalue


def dominant_eigenvalue(problem, batch, *, iters: int = 20, tol: float = 1e-3, seed: int = 0) -> float:
    """Dominant eigenvalue of ``grad^2_alpha L_val(w, alpha)`` on ``batch`` (cross-entropy only).

    ``problem`` is a :class:`~dnas.bilevel.problem.BilevelProblem` (``loss``, ``arch``, ``net``); all its
    architecture parameters form one vector. "Dominant" is the eigenvalue of largest magnitude,
    which is what power iteration finds (the largest one whenever the Hessian is dominated by its
    positive curvature, as in RobustDARTS). The model is left unchanged (BatchNorm statistics
    restored; a stochastic activation is sampled once for all products). The random starting
    vector comes from a private generator seeded with ``seed``. Data parallel: every rank uses the
    whole (fixed) diagnostic batch and identical weights, so every rank finds the same value
    without communicating; rank 0 logs it.
    """
    arch = problem.arch
    with preserved_buffers(problem.net):
        hvp = make_hvp("exact", lambda: problem.loss(batch)[0], arch)
        generator = torch.Generator().manual_seed(seed)
        return power_iteration(lambda v: hvp(v), arch, iters=iters, tol=tol, generator=generator)
