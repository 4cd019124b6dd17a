"""Mixed precision for a search (``precision=bf16|fp16``; float32, ``fp32``, is the default).

The supernet's forward passes run under ``torch.autocast`` in the chosen type (convolutions and
matrix products in 16 bits, reductions and the loss in float32); the weights, the architecture
parameters, their optimizers and the activation ``A(alpha)`` stay float32. ``bf16`` needs no loss
scaling (float32's exponent range); it is fast on GPUs and on CPUs with bf16 matrix units. ``fp16``
is for GPUs (on a CPU it runs, slowly), with a dynamic loss scale for each of the two steps
(``torch.amp.GradScaler``): the losses are multiplied by the scale before backward, the gradients
divided by it, and a step whose gradients overflow is skipped while the scale halves.

Only the first-order estimator takes it: the second-order and amended estimators and Lambda-DARTS'
regularizer take finite differences of gradients (radii ~1e-2 of the weights), which 8 or 11
significant bits cannot resolve.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from dnas.errors import DnasError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, estimator: str, weight_regularizers: list[str]) -> None:
    """One sentence unless ``precision`` can run with this estimator and these regularizers."""
    if precision not in PRECISIONS:
        raise DnasError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return
    if estimator != "first-order":
        raise DnasError(f"precision={precision} takes the first-order estimator only: the {estimator} estimator's "
                        "finite differences and curvature products need float32")
    if "lambda" in weight_regularizers:
        raise DnasError(f"precision={precision} does not take Lambda-DARTS' regularizer, whose finite differences "
                        "need float32")


class Precision:
    """The autocast context and the two loss scalers of a search (see the module docstring)."""

    def __init__(self, precision: str, device: torch.device):
        self.name = precision
        self.dtype = PRECISIONS[precision]
        self.device_type = device.type
        fp16 = precision == "fp16"
        self.weight_scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.arch_scaler = torch.amp.GradScaler(device.type, enabled=fp16)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield

    def scale_weight_loss(self, loss: Tensor) -> Tensor:
        return self.weight_scaler.scale(loss) if self.weight_scaler.is_enabled() else loss

    def scale_arch_loss(self, loss: Tensor) -> Tensor:
        return self.arch_scaler.scale(loss) if self.arch_scaler.is_enabled() else loss

    def state_dict(self) -> dict[str, Any]:
        return {"weight": self.weight_scaler.state_dict(), "arch": self.arch_scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("weight"):
            self.weight_scaler.load_state_dict(state["weight"])
        if state.get("arch"):
            self.arch_scaler.load_state_dict(state["arch"])
