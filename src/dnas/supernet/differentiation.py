"""How the supernet's next graphs will be differentiated: once (the search steps) or twice (exact
Hessian-vector products).

Two choices of the supernet depend on it. The activations' memory layout
(:func:`dnas.supernet.network.search_layout`): channels-last on CPU, except for graphs differentiated
twice, because PyTorch's double backward of BatchNorm is composed of reductions over ``(N, H, W)``
that are several times slower on channels-last tensors (an exact product on NAS-Bench-201 took 1.6x as
long in channels-last; docs/speed.md). And what the fused cells keep for the backward
(:mod:`dnas.supernet.fused`): once-differentiated graphs keep no copies of the pointwise
convolutions' inputs and recompute them when a gradient needs them; graphs
differentiated twice keep them, as plain autograd does (the double backward would otherwise
differentiate the recomputations too).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_TWICE_DIFFERENTIATED: ContextVar[bool] = ContextVar("twice_differentiated", default=False)


@contextmanager
def twice_differentiated() -> Iterator[None]:
    """Forwards inside build graphs that will be differentiated twice (``create_graph=True``)."""
    token = _TWICE_DIFFERENTIATED.set(True)
    try:
        yield
    finally:
        _TWICE_DIFFERENTIATED.reset(token)


def is_twice_differentiated() -> bool:
    """Whether the current forward runs inside :func:`twice_differentiated`."""
    return _TWICE_DIFFERENTIATED.get()
