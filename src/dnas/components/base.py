"""The contract shared by every slot of the search loop.

A component is a small object with keyword-only hyper-parameters (its constructor's keyword
arguments with defaults are what configs and ``key=value`` overrides may set), optional hooks,
its own state for checkpoints, and scalars for the metrics log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from dnas.spaces.base import SearchSpace


class Component:
    name: str = ""  #: set by the registry the component is registered in

    def bind(self, space: SearchSpace) -> None:
        """Called once by the search loop after construction, before ``alpha`` is initialised: the
        space being searched (for components that need its op names or cell topologies)."""

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before the first step of every epoch (schedules of temperatures, ramps)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (tensors, numbers, lists); empty if stateless."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state but the checkpoint holds {sorted(state)}")

    def metrics(self) -> dict[str, float | Tensor]:
        """Scalars to log (tensors are read on the host only when the log line is written)."""
        return {}
