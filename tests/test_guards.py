"""Collapse guards: RobustDARTS' rule against a transcription of its code, DARTS+'s and the margin
rule on hand-made records, a guarded search end to end (stops, records why, resumes), and the
same guard replayed over the records of an unguarded run (``dnas guard``)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dnas.bilevel.methods import METHODS
from dnas.bilevel.run import Search
from dnas.cli import main
from dnas.components.guards import GUARDS, HessianGuard, MarginGuard, SkipGuard, replay
from dnas.config.resolve import resolve_config
from dnas.errors import DnasError
from dnas.report.guard import guarded, make_guard
from dnas.runtime.files import read_metrics


class OfficialEVLocalAvg:
    """automl/RobustDARTS ``src/utils.py`` ``EVLocalAvg`` (``update``, ``early_stop``) and the calls of
    ``src/search/train_search.py``, transcribed: eigenvalues every ``ev_freq`` epochs from epoch 0
    and at the last epoch, a local mean over ``window`` measurements, the ratio test ``delta`` means back."""

    def __init__(self, window: int, ev_freq: int, total_epochs: int):
        self.window, self.ev_freq, self.epochs = window, ev_freq, total_epochs
        self.ev: list[float] = []
        self.ev_local_avg: list[float] = []
        self.genotypes: dict[int, str] = {}
        self.la_epochs: dict[int, int] = {}
        self.la_start_idx, self.la_end_idx = 0, window
        self.stop_search, self.stop_epoch, self.stop_genotype = False, total_epochs - 1, None

    def update(self, epoch: int, ev: float, genotype: str) -> None:
        self.ev.append(ev)
        self.genotypes[epoch] = genotype
        self.stop_genotype = genotype
        if len(self.ev) >= math.ceil(self.window / 2) and epoch < self.epochs - 1:
            if len(self.ev) < self.window:
                self.ev_local_avg.append(sum(self.ev) / len(self.ev))
            else:
                part = self.ev[self.la_start_idx:self.la_end_idx]
                self.ev_local_avg.append(sum(part) / len(part))
                self.la_start_idx += 1
                self.la_end_idx += 1
            self.la_epochs[epoch] = epoch - int(self.ev_freq * math.floor(self.window / 2))
        elif len(self.ev) < math.ceil(self.window / 2):
            self.la_epochs[epoch] = -1

    def early_stop(self, epoch: int, factor: float, es_start_epoch: int, delta: int) -> None:
        if self.la_epochs[epoch] - self.ev_freq * delta >= es_start_epoch:
            current, previous = self.ev_local_avg[-1], self.ev_local_avg[-1 - delta]
            self.stop_search = current / previous > factor
            if self.stop_search:
                self.stop_epoch = int(self.la_epochs[epoch] - self.ev_freq * delta)
                self.stop_genotype = self.genotypes[self.stop_epoch]


def official(values: dict[int, float], epochs: int, f: int = 2) -> tuple[int, int] | None:
    """(epoch of the trigger, epoch of the returned cell) of the official loop, or None."""
    tracker = OfficialEVLocalAvg(5, f, epochs)
    for epoch in range(epochs):
        if epoch % f == 0 or epoch == epochs - 1:
            tracker.update(epoch, values[epoch], f"cell-{epoch}")
            if epoch != epochs - 1:
                tracker.early_stop(epoch, 1.3, 10, 4)
        if tracker.stop_search:
            return epoch, tracker.stop_epoch
    return None


def _records(values: dict[int, float], epochs: int, shift: int) -> list[dict]:
    """Epoch records of a search that measured ``values[e]`` after epoch ``e + shift`` (dnas measures one
    epoch later than RobustDARTS: after epochs 2, 4, ... instead of 1, 3, ...)."""
    out = []
    for epoch in range(epochs):
        record = {"epoch": epoch, "genotype": {"space": "nb201", "cell": []}, "skip_connect": 0,
                  "parameter_free": 0, "margin": {"cell": 0.0}}
        source = epoch - shift
        if source in values and source % 2 == 0:
            record["hessian_eigenvalue"] = values[source]
        out.append(record)
    return out


TRACES = {
    "jump at 30": lambda e: 1.0 if e < 30 else 3.0,
    "steady growth": lambda e: 1.0 + 0.05 * e,
    "fast growth": lambda e: math.exp(0.08 * e),
    "flat": lambda e: 2.0,
    "noisy": lambda e: 1.0 + 0.3 * math.sin(1.7 * e) + (0.9 if e > 36 else 0.0),
}


@pytest.mark.parametrize("trace", sorted(TRACES))
def test_hessian_guard_is_robustdarts_rule(trace):
    epochs = 50
    values = {e: TRACES[trace](e) for e in range(epochs)}
    expected = official(values, epochs)
    # dnas takes the measurement RobustDARTS takes after epoch e after epoch e + 1 (hessian_every=2)
    decision = replay(HessianGuard(), _records(values, epochs + 1, shift=1), total=epochs + 1)
    if expected is None:
        assert decision is None
    else:
        assert decision is not None and (decision.stop_epoch - 1, decision.cell_epoch - 1) == expected
    if trace == "jump at 30":  # by hand: at epoch 30 the mean of 22..30 is (4 + 3) / 5 = 1.4 against 1 for
        assert expected == (30, 18)  # 14..22, > 1.3; the earlier mean is centred on 18, whose cell is returned


def test_skip_guard_is_darts_plus_rule():
    def record(epoch, normal):
        cell = [[op, 0] for op in normal]
        return {"epoch": epoch, "genotype": {"space": "darts", "normal": cell, "reduce": [["skip_connect", 0]] * 8},
                "skip_connect": 0, "parameter_free": 0}

    plain = ["sep_conv_3x3"] * 8
    one, two = ["skip_connect"] + plain[1:], ["skip_connect"] * 2 + plain[2:]
    # the reduction cell's skips do not count; the second skip of the normal cell stops at once
    decision = replay(SkipGuard(), [record(0, plain), record(1, one), record(2, two), record(3, plain)])
    assert decision is not None and (decision.stop_epoch, decision.cell_epoch) == (2, 2)
    assert replay(SkipGuard(skips=3), [record(0, two)]) is None


def test_margin_guard_waits_for_consecutive_decided_epochs():
    def record(epoch, margin):
        return {"epoch": epoch, "genotype": {}, "margin": {"normal": margin, "reduce": 1.0}}

    margins = [0.01, 0.05, 0.04, 0.02, 0.03, 0.04, 0.06, 0.2]
    decision = replay(MarginGuard(), [record(e, m) for e, m in enumerate(margins)])
    assert decision is not None and (decision.stop_epoch, decision.cell_epoch) == (6, 6)
    assert replay(MarginGuard(epochs=10), [record(e, m) for e, m in enumerate(margins)]) is None


class NoBenchmark(dict):
    """An epoch record whose benchmark row must not be read."""

    def __getitem__(self, key):
        assert key != "benchmark", "a guard read a benchmark accuracy"
        return super().__getitem__(key)

    def get(self, key, default=None):
        assert key != "benchmark", "a guard read a benchmark accuracy"
        return super().get(key, default)


def test_no_guard_reads_a_benchmark_accuracy():
    records = [NoBenchmark(r, benchmark={"cifar10-test": 90.0}) for r in _records(
        {e: math.exp(0.1 * e) for e in range(40)}, 40, shift=1)]
    for r in records:
        r["genotype"] = {"space": "nb201", "cell": [["skip_connect", 0]] * 6}
    for name in GUARDS.names():
        replay(GUARDS.get(name)(), records, total=40)


def test_every_preset_takes_every_guard():
    for method in METHODS.names():
        for guard in GUARDS.names():
            cfg = resolve_config({"method": method, "space": "nb201"}, [f"guard={guard}"])
            assert cfg.guard.name == guard
            assert cfg.hessian_every == (2 if guard == "hessian" else 0)  # the eigenvalue the guard reads
    with pytest.raises(DnasError, match="every 2 epochs but hessian_every is 3"):
        resolve_config({"method": "darts"}, ["guard=hessian", "hessian_every=3"])


def _search(tiny_search, name, guard, epochs=8, extra=()):
    return tiny_search(epochs=epochs, name=name, overrides=[f"guard={guard}", "max_images=96", "a_lr=0.05",
                                                            "checkpoint_every=2", *extra])


def test_a_guarded_search_stops_returns_the_guards_cell_and_says_why(tiny_search, tmp_path):
    search = _search(tiny_search, "run", "margin", extra=["guard.threshold=0.01", "guard.epochs=2"])
    genotype = search.run()
    epochs = read_metrics(tmp_path / "run", "epoch")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    guard = results["guard"]
    assert guard["guard"] == "margin" and "margin stayed >= 0.01" in guard["reason"]
    assert len(epochs) == guard["stop_epoch"] + 1 < 8 and epochs[-1]["guard"] == guard  # the search stopped there
    assert results["genotype"] == epochs[guard["cell_epoch"]]["genotype"] == genotype.to_dict()
    assert results["steps"] == search.global_step == len(epochs) * search.algorithm.steps_per_epoch
    # the same guard replayed over the records of an unguarded run of the same search decides the same
    _search(tiny_search, "plain", "off").run()
    replayed = guarded(tmp_path / "plain", make_guard("margin", {"threshold": "0.01", "epochs": "2"}))
    assert replayed.decision is not None and replayed.decision.to_dict() == guard
    assert replayed.cell["genotype"] == results["genotype"]


def test_a_guarded_search_resumes_to_the_same_result(tiny_search, tmp_path, interrupt_at):
    rule = ["guard.window=3", "guard.delta=2", "guard.start_epoch=0", "guard.factor=1e-9"]  # fires at its first test
    reference = _search(tiny_search, "ref", "hessian", epochs=14, extra=rule)
    reference.run()
    stop = reference.global_step - 2
    interrupt_at(Search, stop)
    with pytest.raises(DnasError, match="interrupted"):
        _search(tiny_search, "resumed", "hessian", epochs=14, extra=rule).run()
    interrupt_at(Search, None)
    resumed = _search(tiny_search, "resumed", "hessian", epochs=14, extra=rule)
    resumed.run()
    a, b = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("ref", "resumed"))
    assert "guard" in a and a["guard"]["stop_epoch"] < 13  # it did stop the search early
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert torch.equal(resumed.problem.alphas["cell"], reference.problem.alphas["cell"])


def test_dnas_guard_replays_over_finished_runs(tiny_search, tmp_path, capsys, shared_data):
    table = shared_data("nb201_12ep_minibench/mini-bench-arch-cell-accs.csv")
    _search(tiny_search, "run", "off", epochs=4, extra=["hessian_every=2"]).run()
    assert main(["guard", "skip", str(tmp_path / "run"), "skips=1", "--table", str(table), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["final_epoch"] == 3 and set(row["scores"]) == {"final", "guarded"}
    assert main(["guard", "margin", str(tmp_path / "run")]) == 0
    assert "final cell (epoch 3)" in capsys.readouterr().out
    assert main(["guard", "hessian", str(tmp_path / "run"), "window=0"]) == 2
    assert "window" in capsys.readouterr().err


def test_a_guard_needs_the_records_it_reads(tiny_search, tmp_path):
    _search(tiny_search, "run", "off", epochs=2).run()
    with pytest.raises(DnasError, match="logged no Hessian eigenvalue"):
        guarded(tmp_path / "run", make_guard("hessian"))
