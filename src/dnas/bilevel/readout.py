"""What a search step reports about itself, the same for every kind of search (image or recurrent).

A step class that mixes in :class:`SearchReadout` holds ``problem`` (its architecture parameters
``arch`` and op strengths ``strengths()``), ``space``, ``activation``, ``discretizer``, ``components``
(the slots' components), ``lr_schedule`` and ``arch_steps``; the readout derives from them the
current cell, its record (counts, strengths, convergence diagnostics), the logged fields and the
check for non-finite architecture parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dnas.diagnostics.convergence import convergence
from dnas.spaces import Genotype


class SearchReadout:
    """The cell and the scalars of a search step (see the module docstring)."""

    problem: Any
    space: Any
    activation: Any
    discretizer: Any
    components: dict[str, Any]
    lr_schedule: Any
    arch_steps: int

    def log_fields(self, at: Any) -> dict[str, Any]:
        """The weight learning rate and the architecture steps taken, in every step record."""
        return {"lr": self.lr_schedule.get_last_lr()[0], "arch_steps": self.arch_steps}

    def metrics(self) -> dict[str, float | Tensor]:
        """Every component's scalars, as ``SLOT.NAME``."""
        return {f"{key}.{name}": value for key, comp in self.components.items()
                for name, value in comp.metrics().items()}

    def non_finite(self) -> tuple[str, str] | None:
        """What went non-finite and what to lower, or None."""
        if any(not torch.isfinite(p).all() for p in self.problem.arch):
            return "the architecture parameters", "lower a_lr"
        return None

    def genotype(self) -> Genotype:
        """The cell the discretizer derives from the current architecture parameters."""
        return self.discretizer(self.space, self.problem.strengths())

    def cell_record(self, genotype: Genotype | None = None) -> dict[str, Any]:
        """The derived cell (``genotype``, else the current one), its counts (parameter-free: ``none``,
        pooling, ``skip_connect``; the recurrent cell's ``identity``), the strengths and the
        convergence diagnostics (entropy, margin)."""
        genotype = self.genotype() if genotype is None else genotype
        strengths = self.problem.strengths()
        return {
            "genotype": genotype.to_dict(),
            "skip_connect": genotype.count("skip_connect"),
            "parameter_free": genotype.count_parameter_free(),
            "strengths": {t: s.cpu().tolist() for t, s in strengths.items()},
            **convergence(self.space, strengths, self.activation.allows_none),
        }
