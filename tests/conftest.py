"""Shared fixtures: tiny configurations, a tiny search, stopping a run at a step, the real datasets.

Tests take what they share from here as fixtures (never ``from conftest import``): ``tiny`` (the
``key=value`` overrides of a tiny supernet), ``tiny_search`` (a :class:`~dnas.bilevel.run.Search`
of that size in the test's temporary folder), ``interrupt_at`` (make runs stop as on Ctrl-C after
a given number of steps), ``shared_data`` (a real dataset beside the checkout, or a skip) and
``minibench`` (the 12-epoch NAS-Bench-201 table, or None).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from dnas.bilevel.run import Search
from dnas.config.resolve import resolve_config
from dnas.runtime.runner import Runner

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: a tiny supernet (4 channels, one cell per NB201 stage) on 160 images, a record every 2 steps
TINY = ("channels=4", "layers=1", "max_images=160", "log_every=2")


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DNAS_DATA", str(tmp_path_factory.getbasetemp() / "dnas-data"))
    yield


@pytest.fixture(scope="session")
def tiny() -> tuple[str, ...]:
    """``key=value`` overrides of a tiny search: 4 channels, one cell per stage, 160 images, log every 2 steps."""
    return TINY


@pytest.fixture
def tiny_search(tmp_path: Path, tiny: tuple[str, ...]) -> Callable[..., Search]:
    """``tiny_search(method="darts", space="nb201", epochs=1, batch_size=16, overrides=(), name="run", **flags)``:
    a :class:`Search` of the tiny size in ``tmp_path / name`` (not opened)."""

    def make(method: str = "darts", *, space: str = "nb201", epochs: int = 1, batch_size: int = 16,
             overrides: Sequence[str] = (), name: str = "run", **flags: Any) -> Search:
        cfg = resolve_config({"space": space, "method": method, "epochs": epochs, "batch_size": batch_size, **flags},
                             [*tiny, *overrides])
        return Search(cfg, tmp_path / name, progress=False)

    return make


@pytest.fixture
def interrupt_at(monkeypatch) -> Callable[[type[Runner], int], None]:
    """``interrupt_at(Search, n)``: runs of that class save and stop (as on Ctrl-C) after ``n`` steps in all;
    ``interrupt_at(Search, None)`` lets them run again."""
    original = {}

    def interrupt(cls: type[Runner], steps: int | None) -> None:
        step = original.setdefault(cls, cls.step)
        if steps is None:
            monkeypatch.setattr(cls, "step", step)
            return

        def stopping(self):
            if self.global_step == steps - 1:
                self.request_stop()
            return step(self)

        monkeypatch.setattr(cls, "step", stopping)

    return interrupt


@pytest.fixture(scope="session")
def minibench() -> Path | None:
    """The 12-epoch NAS-Bench-201 table beside the checkout, or None (tests that can do without it adapt)."""
    path = SHARED_DATA / "nb201_12ep_minibench" / "mini-bench-arch-cell-accs.csv"
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def shared_data() -> Callable[[str], Path]:
    """``shared_data("folder/file")``: the path of a real dataset beside the checkout, or skip the test."""

    def path(relative: str) -> Path:
        found = SHARED_DATA / relative
        if not found.exists():
            pytest.skip(f"real dataset {relative} not found at {found}")
        return found

    return path
