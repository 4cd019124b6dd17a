"""Shared fixtures: tiny configurations and the location of the real datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(relative: str) -> Path:
    """Path of a real dataset in ../shared/data, or skip the test with a clear message."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real dataset {relative} not found at {path}")
    return path


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DNAS_DATA", str(tmp_path_factory.getbasetemp() / "dnas-data"))
    yield


TINY = ["channels=4", "layers=1", "max_images=160", "log_every=2"]
