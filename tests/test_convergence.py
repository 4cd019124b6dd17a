"""Entropy and margin of the op distributions on hand-made strengths, and their place in the run files."""

import json
import math

import pytest
import torch

from dnas.cli import main
from dnas.components import ACTIVATIONS
from dnas.components.hard_concrete import HardConcrete
from dnas.components.prime import Clamp
from dnas.diagnostics.convergence import UNDECIDED_MARGIN, convergence, least_decided, undecided
from dnas.spaces import get_space

NB201 = get_space("nb201")
DARTS = get_space("darts")


def _nb201(rows):
    return convergence(NB201, {"cell": torch.tensor(rows, dtype=torch.float64)}, allows_none=True)


def test_uniform_softmax_has_entropy_one_and_margin_zero():
    result = _nb201([[0.2] * 5] * 6)
    assert result["entropy"]["cell"] == pytest.approx(1.0)
    assert result["margin"]["cell"] == pytest.approx(0.0)


def test_one_hot_has_entropy_zero_and_margin_one():
    result = _nb201([[0.0, 0.0, 1.0, 0.0, 0.0]] * 6)
    assert result["entropy"]["cell"] == pytest.approx(0.0)
    assert result["margin"]["cell"] == pytest.approx(1.0)


def test_values_by_hand_are_means_over_edges():
    # edge 0: softmax-like (0.4, 0.3, 0.1, 0.1, 0.1); the other five: uniform
    rows = [[0.4, 0.3, 0.1, 0.1, 0.1]] + [[0.2] * 5] * 5
    h0 = -(0.4 * math.log(0.4) + 0.3 * math.log(0.3) + 3 * 0.1 * math.log(0.1)) / math.log(5)
    result = _nb201(rows)
    assert result["entropy"]["cell"] == pytest.approx((h0 + 5 * 1.0) / 6)
    assert result["margin"]["cell"] == pytest.approx((0.4 - 0.3) / 6)


def test_gate_probabilities_are_normalised_for_entropy_but_not_for_margin():
    # PR-DARTS gates: P(g != 0) need not sum to 1; equal gates are undecided whatever their level
    high = _nb201([[0.9] * 5] * 6)
    assert high["entropy"]["cell"] == pytest.approx(1.0) and high["margin"]["cell"] == pytest.approx(0.0)
    rows = [[0.95, 0.9, 0.5, 0.2, 0.1]] * 6
    p = torch.tensor(rows[0]) / sum(rows[0])
    expected = float(-(p * p.log()).sum() / math.log(5))
    result = _nb201(rows)
    assert result["entropy"]["cell"] == pytest.approx(expected)
    assert result["margin"]["cell"] == pytest.approx(0.05)


def test_none_counts_only_where_the_derivation_can_choose_it():
    # DARTS space: none is never derived, so a huge none weight does not make an edge decided
    row = [0.93] + [0.01] * 7  # none first: DARTS_OPS[0]
    assert DARTS.cells["normal"].edge_ops[0][0] == "none"
    strengths = {t: torch.tensor([row] * 14) for t in ("normal", "reduce")}
    result = convergence(DARTS, strengths, allows_none=True)
    assert result["margin"]["normal"] == pytest.approx(0.0) and result["entropy"]["normal"] == pytest.approx(1.0)
    # NB201 (arg-max per edge): none is a candidate like the others
    assert _nb201([[0.6, 0.1, 0.1, 0.1, 0.1]] * 6)["margin"]["cell"] == pytest.approx(0.5)


def test_clamp_values_none_masked_and_pruned_ops_count():
    # clamp on NB201: none is masked (allows_none=False); a pruned op (0) is a decided-against candidate
    assert Clamp.allows_none is False and ACTIVATIONS.get("softmax").allows_none is True
    rows = [[0.0, 0.5, 0.5, 0.0, 0.0]] * 6  # two of the four real ops pruned
    result = convergence(NB201, {"cell": torch.tensor(rows)}, allows_none=False)
    assert result["entropy"]["cell"] == pytest.approx(math.log(2) / math.log(4))
    assert result["margin"]["cell"] == pytest.approx(0.0)
    # with none masked, a large none entry changes nothing
    rows = [[0.9, 0.7, 0.2, 0.0, 0.0]] * 6
    result = convergence(NB201, {"cell": torch.tensor(rows)}, allows_none=False)
    assert result["margin"]["cell"] == pytest.approx(0.5)


def test_removed_edges_are_left_out_and_an_empty_cell_is_none():
    rows = [[0.0] * 5] + [[0.0, 0.0, 1.0, 0.0, 0.0]] * 5
    result = convergence(NB201, {"cell": torch.tensor(rows)}, allows_none=False)
    assert result["margin"]["cell"] == pytest.approx(1.0) and result["entropy"]["cell"] == pytest.approx(0.0)
    empty = convergence(NB201, {"cell": torch.zeros(6, 5)}, allows_none=False)
    assert empty == {"entropy": {"cell": None}, "margin": {"cell": None}}


def test_single_candidate_edges_are_decided():
    # S3 on the DARTS rule: none never counts, so skip and sep3 compete; one pruned leaves one candidate
    s3 = get_space("s3")
    rows = torch.tensor([[0.5, 0.0, 0.3]] * 14)
    result = convergence(s3, {"normal": rows, "reduce": rows}, allows_none=True)
    assert result["margin"]["normal"] == pytest.approx(0.3) and result["entropy"]["normal"] == pytest.approx(0.0)


def test_least_decided_and_the_threshold():
    record = {"margin": {"normal": 0.2, "reduce": 0.01}, "entropy": {"normal": 0.3, "reduce": 0.9}}
    assert least_decided(record) == (0.01, 0.9)
    assert least_decided({}) == (None, None)
    assert undecided(UNDECIDED_MARGIN / 2) and not undecided(UNDECIDED_MARGIN) and not undecided(None)


def test_gate_strengths_of_the_activation_feed_the_metrics():
    # P(g != 0) at a low temperature separates a high beta from the others
    gates = HardConcrete(tau_max=0.1, tau_min=0.1)
    beta = torch.tensor([[-5.0, -5.0, 5.0, -5.0, -5.0]] * 6)
    strengths = {"cell": gates.strength(beta, "cell")}
    result = convergence(NB201, strengths, allows_none=gates.allows_none)
    shift = 0.1 * math.log(1.1 / 0.1)  # -tau ln(-a/b)
    high, low = 1 / (1 + math.exp(-(5.0 + shift))), 1 / (1 + math.exp(-(-5.0 + shift)))
    assert result["margin"]["cell"] == pytest.approx(high - low)
    p = torch.tensor([low, low, high, low, low]) / (high + 4 * low)
    assert result["entropy"]["cell"] == pytest.approx(float(-(p * p.log()).sum() / math.log(5)))


def test_epoch_records_and_results_carry_the_metrics(tmp_path):
    out = tmp_path / "run"
    code = main(["search", "--quiet", "--epochs", "2", "--batch-size", "16", "--out", str(out), "channels=4",
                 "layers=1", "max_images=128", "log_every=2"])
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 2
    for record in epochs:
        expected = convergence(NB201, record["strengths"], allows_none=True)
        assert record["entropy"] == pytest.approx(expected["entropy"])
        assert record["margin"] == pytest.approx(expected["margin"])
        assert 0.0 < record["entropy"]["cell"] <= 1.0
    results = json.loads((out / "results.json").read_text())
    assert results["margin"] == pytest.approx(epochs[-1]["margin"])
    assert results["entropy"] == pytest.approx(epochs[-1]["entropy"])
