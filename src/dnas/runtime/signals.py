"""Graceful stop: SIGINT and SIGTERM become a flag that a run checks between steps."""

from __future__ import annotations

import signal
from typing import Any


class GracefulStop:
    """Within ``with GracefulStop() as stop:``, SIGINT and SIGTERM set ``stop.requested`` instead of
    killing the process (outside the main thread, where handlers cannot be installed, nothing changes)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        self.requested = True

    def __enter__(self) -> GracefulStop:
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handler)
        except ValueError:  # not the main thread
            pass
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
