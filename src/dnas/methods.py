"""Methods are named presets: one choice per slot of the search loop plus the paper's defaults.

A preset is a function of the search space (some published defaults differ by space) returning
config overrides in the ``key=value`` vocabulary of :mod:`dnas.config`. Anything a preset sets
can be overridden again on the command line, which is how methods are combined, for example
``--method pr-darts estimator=amended weight_regularizers=lambda``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dnas.registry import Registry


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    reference: str
    preset: Callable[[str], dict[str, Any]]

    def overrides(self, space: str) -> dict[str, Any]:
        return self.preset(space)


METHODS: Registry[Method] = Registry("method")


def register_method(name: str, summary: str, reference: str):
    def decorator(preset: Callable[[str], dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
        METHODS.register(name)(Method(name, summary, reference, preset))
        return preset

    return decorator


@register_method(
    "darts",
    "first-order DARTS: softmax relaxation, alternating SGD/Adam steps, no correction term",
    "Liu, Simonyan, Yang. DARTS: Differentiable Architecture Search. ICLR 2019",
)
def _darts(space: str) -> dict[str, Any]:
    return {
        "activation": "softmax",
        "schedule": "alternate",
        "estimator": "first-order",
        "weight_regularizers": "none",
        "arch_regularizers": "none",
    }
