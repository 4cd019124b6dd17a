"""Schedules: when the loop takes an architecture step, and the order of the two steps of an iteration."""

import pytest
from conftest import TINY

from dnas.components.schedules import SCHEDULES, Alternate, EveryK
from dnas.config import build_component
from dnas.errors import DnasError
from dnas.resolve import resolve_config
from dnas.search_loop import Search


def _events(tmp_path, monkeypatch, overrides, name):
    """The sequence of steps of a 3-iteration search: "a" architecture step, "w" weight step."""
    events = []
    arch_step, weight_step = Search._arch_step, Search._weight_step

    def record_arch(self, train_batch):
        events.append("a")
        arch_step(self, train_batch)

    def record_weight(self, epoch, train_batch):
        events.append("w")
        weight_step(self, epoch, train_batch)

    monkeypatch.setattr(Search, "_arch_step", record_arch)
    monkeypatch.setattr(Search, "_weight_step", record_weight)
    cfg = resolve_config({"space": "nb201", "epochs": 1, "batch_size": 16}, [*TINY, "max_images=96", *overrides])
    Search(cfg, tmp_path / name, progress=False).run()
    return "".join(events)


@pytest.mark.parametrize("overrides,expected", [
    (["schedule.order=arch-first"], "awawaw"),
    (["schedule.order=weight-first"], "wawawa"),
    (["schedule=every-k", "schedule.k=2", "schedule.order=weight-first"], "wawwa"),
    (["schedule=every-k", "schedule.k=2"], "awwaw"),
])
def test_the_loop_takes_the_steps_in_the_schedules_order(tmp_path, monkeypatch, overrides, expected):
    assert _events(tmp_path, monkeypatch, overrides, "run") == expected


def test_darts_on_nb201_steps_the_weights_first_as_autodl(tmp_path, monkeypatch):
    assert resolve_config({"space": "nb201"}).schedule.params["order"] == "weight-first"
    assert resolve_config({"space": "darts"}).schedule.params["order"] == "arch-first"
    assert _events(tmp_path, monkeypatch, [], "run") == "wawawa"


def test_order_is_checked():
    assert Alternate().order == "arch-first" and not Alternate().weight_first
    assert EveryK(k=3, order="weight-first").weight_first
    with pytest.raises(DnasError, match="order must be one of arch-first, weight-first"):
        Alternate(order="sideways")
    with pytest.raises(DnasError, match="order"):
        build_component(SCHEDULES, resolve_config({"space": "nb201"}, ["schedule.order=later"]).schedule)
