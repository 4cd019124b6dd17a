"""Hessian-vector products for the hypergradient estimators and curvature diagnostics.

For a scalar loss ``L(w, alpha)`` and a constant vector ``v`` shaped like ``w``:

    weight HVP:  grad^2_w L . v           = grad_w     <grad_w L, v>
    mixed HVP:   grad^2_{alpha,w} L . v   = grad_alpha <grad_w L, v>

Both are the gradient of the directional derivative ``<grad_w L, v>``, so one object answers both:
an :data:`HVP` is called as ``hvp(v)`` (weight HVP) or ``hvp(v, wrt=arch)`` (mixed HVP). Two
implementations:

* :class:`ExactHVP` (Pearlmutter, double backward): one forward and one ``create_graph``
  backward when built, then one extra backward per product. Exact up to rounding.
* :class:`FiniteDifferenceHVP` (DARTS): central difference of gradients along ``v`` with radius
  ``R = r / ||v||`` (``||.||`` over all of ``w``), i.e. a displacement of norm ``r``:

      grad_u <grad_w L, v>  ~=  [grad_u L(w + R v) - grad_u L(w - R v)] / (2 R)

  (divided by ``2R``, not ``/ 2 * R``: that precedence bug survives in several public copies).
  Two forward/backward passes per product; the weights are moved in place under ``no_grad``
  and restored bit-exactly from a saved copy (no model deep copy). The error is ``O(R^2)``
  for smooth losses.

The finite difference needs ``loss_fn`` to be a deterministic function of the parameters:
:func:`replay_randomness` makes stochastic forwards (noise ops, sampled gates) repeat their
random numbers, and :func:`preserved_buffers` undoes the BatchNorm running-statistics updates of
the extra forwards, so that an estimator leaves no trace in the model besides ``alpha.grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import Tensor, nn

from dnas.supernet.differentiation import twice_differentiated

LossFn = Callable[[], Tensor]
HVP_METHODS = ("exact", "fd")
DEFAULT_RADIUS = 0.01


class HVP(Protocol):
    def __call__(self, v: Sequence[Tensor], wrt: Sequence[Tensor] | None = None) -> list[Tensor]:
        """``grad_wrt <grad_params L, v>``; ``wrt`` defaults to the parameters (``grad^2 L . v``)."""
        ...


# ----- small helpers -------------------------------------------------------------------------------
def gradients(outputs: Tensor | Sequence[Tensor], inputs: Sequence[Tensor],
              grad_outputs: Sequence[Tensor] | None = None, *, create_graph: bool = False,
              retain_graph: bool | None = None) -> list[Tensor]:
    """``torch.autograd.grad`` with zeros (not None) for inputs the outputs do not depend on."""
    inputs = list(inputs)
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    seeds = [None] * len(outs) if grad_outputs is None else list(grad_outputs)
    pairs = [(o, s) for o, s in zip(outs, seeds, strict=True) if o.requires_grad]
    if not pairs:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad(
        [o for o, _ in pairs], inputs, None if grad_outputs is None else [s for _, s in pairs],
        create_graph=create_graph, retain_graph=retain_graph, allow_unused=True,
    )
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True)]


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    """``||concat(tensors)||_2`` as a 0-d tensor (no host synchronisation)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


@contextmanager
def shifted(params: Sequence[Tensor], direction: Sequence[Tensor], scale: float | Tensor) -> Iterator[None]:
    """Move ``params`` in place to ``p + scale * d`` for the duration of the block.

    On exit (also on error) the parameters are restored bit-exactly from a copy taken on entry,
    never by subtracting the step again (which would not round-trip in floating point).
    """
    params = list(params)
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                if isinstance(scale, Tensor):
                    p.addcmul_(d, scale)
                else:
                    p.add_(d, alpha=scale)
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)


@contextmanager
def preserved_buffers(module: nn.Module) -> Iterator[None]:
    """Restore every buffer of ``module`` on exit.

    Train-mode forwards update the running statistics (and ``num_batches_tracked``) of the
    BatchNorms that track them (the supernet's stem, NB201 residual blocks and last BN, DARTS
    preprocessing); extra forwards of an estimator must not count as training steps.
    """
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def replay_randomness(loss_fn: LossFn, device: torch.device | str = "cpu") -> LossFn:
    """``loss_fn`` made deterministic: every call draws the random numbers of the first call.

    The first call consumes the global generator as usual; later calls start from the state the
    first one started from and afterwards put the generator back where it was, so repeated
    evaluations (finite differences) leave the random stream as if the loss had been computed once.
    """
    device = torch.device(device)
    start: list[tuple[Tensor, Tensor | None]] = []

    def replayed() -> Tensor:
        if not start:
            start.append(_rng_state(device))
            return loss_fn()
        current = _rng_state(device)
        _set_rng_state(start[0], device)
        try:
            return loss_fn()
        finally:
            _set_rng_state(current, device)

    return replayed


# ----- the two implementations ---------------------------------------------------------------------
class ExactHVP:
    """Double-backward products at the parameter values of construction time.

    Built from the loss tensor (``torch.func`` is not needed: double backward works through
    train-mode BatchNorm, pooling and the fused supernet's grouped convolutions). The parameters
    must not be modified in place while the object is used.
    """

    def __init__(self, loss: Tensor, params: Sequence[Tensor]):
        self.params = list(params)
        self.grads = gradients(loss, self.params, create_graph=True)

    def __call__(self, v: Sequence[Tensor], wrt: Sequence[Tensor] | None = None) -> list[Tensor]:
        wrt = self.params if wrt is None else list(wrt)
        terms = [(g * d.detach()).sum() for g, d in zip(self.grads, v, strict=True) if g.requires_grad]
        if not terms:  # the loss is linear in the parameters
            return [torch.zeros_like(x) for x in wrt]
        return gradients(torch.stack(terms).sum(), wrt, retain_graph=True)


class FiniteDifferenceHVP:
    """Central differences of ``grad_wrt L`` along ``v`` at radius ``R = r / ||v||``.

    ``loss_fn`` recomputes the loss at the current parameter values (see :func:`replay_randomness`
    for stochastic forwards). A zero ``v`` gives a zero product.
    """

    def __init__(self, loss_fn: LossFn, params: Sequence[Tensor], r: float = DEFAULT_RADIUS):
        if not r > 0:
            raise ValueError(f"the finite-difference radius must be positive, got {r}")
        self.loss_fn = loss_fn
        self.params = list(params)
        self.r = r

    def __call__(self, v: Sequence[Tensor], wrt: Sequence[Tensor] | None = None) -> list[Tensor]:
        wrt = self.params if wrt is None else list(wrt)
        v = [d.detach() for d in v]
        norm = global_norm(v)
        radius = self.r / norm.clamp_min(torch.finfo(norm.dtype).tiny)
        with shifted(self.params, v, radius):
            plus = gradients(self.loss_fn(), wrt)
        with shifted(self.params, v, -radius):
            minus = gradients(self.loss_fn(), wrt)
        return [(p - m) / (2 * radius) for p, m in zip(plus, minus, strict=True)]


def make_hvp(method: str, loss_fn: LossFn, params: Sequence[Tensor], *, r: float = DEFAULT_RADIUS) -> HVP:
    """An HVP of ``loss_fn`` w.r.t. ``params`` at their current values: ``"exact"`` or ``"fd"``."""
    if method == "exact":
        with twice_differentiated():
            loss = loss_fn()
        return ExactHVP(loss, params)
    if method == "fd":
        return FiniteDifferenceHVP(loss_fn, params, r)
    raise ValueError(f"unknown Hessian-vector product {method!r}; choose one of {', '.join(HVP_METHODS)}")


# ----- one-shot functions --------------------------------------------------------------------------
def weight_hvp(loss_fn: LossFn, weights: Sequence[Tensor], v: Sequence[Tensor], *, method: str = "exact",
               r: float = DEFAULT_RADIUS) -> list[Tensor]:
    """``grad^2_w L . v``."""
    return make_hvp(method, loss_fn, weights, r=r)(v)


def mixed_hvp(loss_fn: LossFn, weights: Sequence[Tensor], arch: Sequence[Tensor], v: Sequence[Tensor], *,
              method: str = "exact", r: float = DEFAULT_RADIUS) -> list[Tensor]:
    """``grad^2_{alpha,w} L . v = grad_alpha <grad_w L, v>`` (``v`` shaped like ``weights``)."""
    return make_hvp(method, loss_fn, weights, r=r)(v, wrt=arch)
