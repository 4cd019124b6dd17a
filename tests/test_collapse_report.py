"""bench/collapse_report.py on hand-made run folders: peak, drop, the collapse rule, Hessian trend,
alignment, per-epoch tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import collapse_report  # noqa: E402

GOOD = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SKIPS = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"


def make_run(folder: Path, name: str, epochs: list[tuple[str, float, float]], *, finished: bool = True,
             hessian: dict[int, float] | None = None, alignment: dict[int, list[float]] | None = None,
             correction: dict[int, dict[str, float]] | None = None) -> None:
    """A run directory whose epoch ``t`` derived ``epochs[t] = (arch string, cifar10-test, margin)``."""
    from dnas.spaces import Genotype

    run = folder / "runs" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"space": "nb201", "epochs": 4, "activation": {"name": "softmax"}}))
    lines = []
    for t, (arch, acc, margin) in enumerate(epochs):
        g = Genotype.from_arch_str(arch)
        for value in (alignment or {}).get(t, []):
            lines.append({"kind": "step", "epoch": t, "step": t * 10, "alignment.cell": value})
        if correction and t in correction:
            lines.append({"kind": "step", "epoch": t, "step": t * 10 + 5,
                          **{f"estimator.correction.cell.{op}": v for op, v in correction[t].items()}})
        record = {"kind": "epoch", "epoch": t, "seconds": 10.0 * (t + 1), "genotype": g.to_dict(),
                  "skip_connect": g.count("skip_connect"), "parameter_free": g.count_parameter_free(),
                  "margin": {"cell": margin}, "entropy": {"cell": 0.5}, "benchmark": {"cifar10-test": acc}}
        if hessian and t + 1 in hessian:
            record["hessian_eigenvalue"] = hessian[t + 1]
        lines.append(record)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if finished:
        last = lines[-1]
        (run / "results.json").write_text(json.dumps({k: last[k] for k in ("genotype", "seconds", "margin",
                                                                           "entropy")}))


def test_peak_drop_and_collapse_rule(tmp_path):
    # collapses: 5 parameter-free edges at the end, 40 points below its peak at epoch 2
    make_run(tmp_path, "darts-s0", [(GOOD, 80.0, 0.01), (GOOD, 85.0, 0.05), (SKIPS, 45.0, 0.1), (SKIPS, 45.0, 0.2)],
             hessian={2: 0.5, 4: 2.0}, alignment={0: [0.2, 0.4], 3: [-0.1, -0.3]})
    # many parameter-free edges but no drop: not collapsed (it never was better)
    make_run(tmp_path, "darts-s1", [(SKIPS, 45.0, 0.1), (SKIPS, 45.0, 0.1), (SKIPS, 45.0, 0.1), (SKIPS, 45.0, 0.1)])
    # a drop, but a parametric cell: not collapsed
    make_run(tmp_path, "pr-darts-s0", [(GOOD, 85.0, 0.1), (GOOD, 85.0, 0.1), (GOOD, 75.0, 0.1), (GOOD, 75.0, 0.1)])
    traces = {f"{t.entry}-s{t.seed}": t for t in collapse_report.read_folder(tmp_path)}
    darts = traces["darts-s0"]
    assert darts.peak == (85.0, 2) and darts.final == 45.0 and darts.parameter_free == [1, 1, 5, 5]
    assert darts.collapsed and not traces["darts-s1"].collapsed and not traces["pr-darts-s0"].collapsed
    assert collapse_report.hessian_rises(darts) and collapse_report.hessian_rises(traces["darts-s1"]) is None
    assert darts.alignment_first == pytest.approx(0.3) and darts.alignment_last == pytest.approx(-0.2)
    assert traces["darts-s1"].peak == (45.0, 1)  # ties: the earliest epoch
    assert collapse_report.digits([1, 2, 3]) == "123" and collapse_report.digits([9, 11]) == "9 11"


def test_an_unfinished_run_has_not_collapsed(tmp_path):
    make_run(tmp_path, "darts-s0", [(GOOD, 85.0, 0.05), (SKIPS, 45.0, 0.1)], finished=False)
    (run,) = collapse_report.read_folder(tmp_path)
    assert run.parameter_free[-1] == 5 and run.peak[0] - run.final == 40 and not run.collapsed


def test_report_tables(tmp_path):
    make_run(tmp_path, "darts-s0", [(GOOD, 80.0, 0.01), (GOOD, 85.0, 0.05), (SKIPS, 45.0, 0.1), (SKIPS, 45.0, 0.2)],
             hessian={2: 0.5, 4: 2.0})
    make_run(tmp_path, "darts-s1", [(GOOD, 80.0, 0.01), (GOOD, 80.0, 0.03), (GOOD, 80.0, 0.1), (GOOD, 90.0, 0.4)],
             hessian={2: 1.0, 4: 1.0})
    make_run(tmp_path, "amended-darts-s0", [(GOOD, 70.0, 0.0), (GOOD, 70.0, 0.01)], finished=False)
    make_run(tmp_path, "pr-darts-s0", [(GOOD, 70.0, 0.0), (GOOD, 70.0, 0.02)])  # finished, margin 0.02 < 0.03
    (tmp_path / "summary.csv").write_text("entry,setup\ndarts,darts\namended-darts,amended-darts\npr-darts,pr-darts\n")
    out = tmp_path / "docs" / "collapse.md"
    collapse_report.main([str(tmp_path), "--out", str(out)])
    text = out.read_text()
    darts = next(line for line in text.splitlines() if line.startswith("| `darts` | 2 |"))
    cells = [c.strip() for c in darts.split("|")[1:-1]]
    assert cells[2] == "67.50 ± 31.82"  # final: 45 and 90
    assert cells[3] == "87.50 ± 3.54"  # peaks: 85 (epoch 2) and 90 (epoch 4)
    assert cells[4] == "3.0 ± 1.4" and cells[6] == "1/2"
    assert cells[7] == "0/2"  # final margins 0.2 and 0.4: both decided
    assert cells[11] == "0.75 ± 0.35 → 1.50 ± 0.71 (1/2)"
    assert "| `amended-darts` | 0 (+1 unfinished) |" in text
    assert "| 0/1 | 1/1 |" in next(line for line in text.splitlines() if line.startswith("| `pr-darts` | 1 |"))
    assert text.index("| `darts` | 2 |") < text.index("| `amended-darts` |")  # compare's order, not sorted
    assert "| `darts` | 0.010 ± 0.000 | 0.300 ± 0.141 |" in text.split("Decision margin")[1].splitlines()
    assert "| `darts-s0` (collapsed) | 4/4 | 45.00 | 85.00 (2) | `1144` | `1155` | 0.200 |" in text
    parameter_free = text.split("Parameter-free ops")[1].splitlines()
    assert "| `darts` | 1.0 ± 0.0 | 3.0 ± 2.8 |" in parameter_free  # epochs 1 and 4 (the last)


def test_curvature_term_by_op_is_averaged_over_steps_then_seeds(tmp_path):
    epochs = [(GOOD, 80.0, 0.1), (GOOD, 81.0, 0.1)]
    make_run(tmp_path, "amended-s0", epochs, correction={0: {"avg_pool_3x3": 2e-3, "skip_connect": -1e-3},
                                                         1: {"avg_pool_3x3": 4e-3, "skip_connect": -3e-3}})
    make_run(tmp_path, "amended-s1", epochs, correction={0: {"avg_pool_3x3": 1e-3, "skip_connect": -1e-3}})
    make_run(tmp_path, "darts-s0", epochs)
    traces = {f"{t.entry}-s{t.seed}": t for t in collapse_report.read_folder(tmp_path)}
    assert traces["amended-s0"].correction == pytest.approx({"cell.avg_pool_3x3": 3e-3, "cell.skip_connect": -2e-3})
    rows = [collapse_report.Row(e, [t for t in traces.values() if t.entry == e]) for e in ("amended", "darts")]
    table = collapse_report.correction_table(rows)
    assert table[2] == "| entry | `cell.avg_pool_3x3` | `cell.skip_connect` |"
    assert table[4].startswith("| `amended` | 2.00 ± 1.41 | -1.50 ± 0.71 |")
    assert len(table) == 6  # darts logs no curvature term: no row


def test_decision_agreement_pairs_summary_and_sign_flip_test(tmp_path, capsys):
    import decision_agreement

    make_run(tmp_path, "darts-s0", [(GOOD, 85.0, 0.1), (SKIPS, 45.0, 0.2)])  # collapsed
    make_run(tmp_path, "darts-bf16-s0", [(GOOD, 85.0, 0.1), (GOOD, 86.0, 0.2)])
    make_run(tmp_path, "darts-s1", [(GOOD, 80.0, 0.1), (GOOD, 82.0, 0.2)])
    make_run(tmp_path, "darts-bf16-s1", [(GOOD, 80.0, 0.1), (GOOD, 82.0, 0.2)])
    runs = tmp_path / "runs"
    for run in runs.iterdir():  # the op strengths the pair table compares
        results = json.loads((run / "results.json").read_text())
        results["strengths"] = {"cell": [[0.2] * 5] * 6}
        (run / "results.json").write_text(json.dumps(results))
    decision_agreement.main([str(runs / n) for n in ("darts-s0", "darts-bf16-s0", "darts-s1", "darts-bf16-s1")])
    out = capsys.readouterr().out
    assert "| darts-s0 | darts-bf16-s0 | no | 4 |" in out and "| darts-s1 | darts-bf16-s1 | yes | 0 |" in out
    assert "mean 2.00, median 2.0, same cell in 1 of 2 pairs" in out
    assert "| A | 2 | 63.50 ± 26.16 | 1/2 | 2.50 | 0.00 |" in out  # GOOD has one skip edge, SKIPS four
    assert "| B | 2 | 84.00 ± 2.83 | 0/2 | 1.00 | 0.00 |" in out
    # differences +41 and 0: every sign pattern gives |sum| = 41, so nothing is unusual about +41
    assert "paired B - A accuracy: mean +20.50 over 2 pairs, sign-flip p = 1.000" in out


MID = "|nor_conv_1x1~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|"


def test_evidence_report_and_the_ranking_of_two_budgets(tmp_path, monkeypatch, capsys):
    """Two hand-made grids of darts, a and b over seeds 0-3, scored by a three-cell table: the summary's
    statistics and verdicts, and Kendall's tau between the grids' rankings."""
    import evidence_report
    import proxy_ranking

    table = tmp_path / "table.csv"
    table.write_text(f"arch,cellstr,cifar10-test\n0,{GOOD},88.0\n1,{SKIPS},40.0\n2,{MID},70.0\n")
    finals = {"one": {"darts": SKIPS, "a": GOOD, "b": MID}, "two": {"darts": MID, "a": GOOD, "b": SKIPS}}
    for grid, cells in finals.items():
        for entry, cell in cells.items():
            for seed in range(4):
                make_run(tmp_path / grid, f"{entry}-s{seed}", [(GOOD, 0.0, 0.1), (cell, 0.0, 0.2)])
        monkeypatch.setattr(sys, "argv", ["evidence_report", str(tmp_path / grid), "--table", str(table),
                                          "--out", str(tmp_path / f"ev-{grid}")])
        evidence_report.main()
    summary = (tmp_path / "ev-one" / "summary.md").read_text()
    # darts ends on SKIPS (4 parameter-free edges, 48 points below its epoch-0 peak): collapsed on every seed
    assert "| `darts` | 4 | 40.00 ± 0.00 | 40.00 | 4/4 | 0/4 | (baseline) |" in summary
    # a wins by 48 on all four seeds: the smallest sign-flip p of four pairs is 2/16 = 0.125, so still tied
    assert "| `a` | 4 | 88.00 ± 0.00 | 88.00 | 0/4 | 0/4 | +48.00 [+48.00, +48.00] | 0.125 | 0.125 | 4/0 | tied |" \
        in summary
    per_run = (tmp_path / "ev-one" / "per_run.csv").read_text().splitlines()
    assert len(per_run) == 1 + 12 and per_run[1].startswith("a,0,2,88.00,88.00,")

    capsys.readouterr()  # evidence_report's own output
    monkeypatch.setattr(sys, "argv", ["proxy_ranking", str(tmp_path / "ev-one"), str(tmp_path / "ev-two"),
                                      "--names", "small", "large", "--out", str(tmp_path / "ranking.md")])
    proxy_ranking.main()
    out = capsys.readouterr().out
    assert "| `a` | 4 | 88.00 | 1 | 0/4 | tied | 4 | 88.00 | 1 | 0/4 | tied |" in out
    assert "| `darts` | 4 | 40.00 | 3 | 4/4 | (baseline) | 4 | 70.00 | 2 | 4/4 | (baseline) |" in out
    # MID has 4 parameter-free edges too, 18 points below the peak: collapsed. (darts, a) and (a, b) keep
    # their order, (darts, b) swaps: tau = (2 - 1) / 3
    assert "over 3 entries: +0.333 (permutation p = 1.000)" in out
    # no eigenvalues logged: the hessian guard cannot be judged; skip and margin never fire on these runs
    assert "| `a` | hessian | – | – | no |" in out
    assert "| `darts` | margin | +0.00 [+0.00, +0.00], 1.000 (4 seeds, no difference) |" in out
    assert (tmp_path / "ranking.md").read_text() == out
