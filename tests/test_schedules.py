"""Schedules: when the loop takes an architecture step, and the order of the two steps of an iteration."""

import pytest

from dnas.bilevel.step import SearchStep
from dnas.components.schedules import SCHEDULES, Alternate, EveryK
from dnas.config.resolve import resolve_config
from dnas.config.search import build_component
from dnas.errors import DnasError


def _events(tiny_search, monkeypatch, overrides):
    """The sequence of steps of a 3-iteration search: "a" architecture step, "w" weight step."""
    events = []
    arch_step, weight_step = SearchStep.arch_step, SearchStep.weight_step

    def record_arch(self, *args, **kwargs):
        events.append("a")
        return arch_step(self, *args, **kwargs)

    def record_weight(self, *args, **kwargs):
        events.append("w")
        return weight_step(self, *args, **kwargs)

    monkeypatch.setattr(SearchStep, "arch_step", record_arch)
    monkeypatch.setattr(SearchStep, "weight_step", record_weight)
    tiny_search(overrides=["max_images=96", *overrides]).run()
    return "".join(events)


@pytest.mark.parametrize("overrides,expected", [
    (["schedule.order=arch-first"], "awawaw"),
    (["schedule.order=weight-first"], "wawawa"),
    (["schedule=every-k", "schedule.k=2", "schedule.order=weight-first"], "wawwa"),
    (["schedule=every-k", "schedule.k=2"], "awwaw"),
])
def test_the_loop_takes_the_steps_in_the_schedules_order(tiny_search, monkeypatch, overrides, expected):
    assert _events(tiny_search, monkeypatch, overrides) == expected


def test_darts_on_nb201_steps_the_weights_first_as_autodl(tiny_search, monkeypatch):
    assert resolve_config({"space": "nb201"}).schedule.params["order"] == "weight-first"
    assert resolve_config({"space": "darts"}).schedule.params["order"] == "arch-first"
    assert _events(tiny_search, monkeypatch, []) == "wawawa"


def test_order_is_checked():
    assert Alternate().order == "arch-first" and not Alternate().weight_first
    assert EveryK(k=3, order="weight-first").weight_first
    with pytest.raises(DnasError, match="order must be one of arch-first, weight-first"):
        Alternate(order="sideways")
    with pytest.raises(DnasError, match="order"):
        build_component(SCHEDULES, resolve_config({"space": "nb201"}, ["schedule.order=later"]).schedule)
