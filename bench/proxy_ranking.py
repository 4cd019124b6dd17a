"""Do two budgets rank the methods alike? Compares the evidence of two collapse protocol grids.

    python bench/proxy_ranking.py runs/evidence runs/evidence16 --names "8 px" "16 px" --out ranking.md

Reads the ``per_run.csv`` and ``summary.csv`` that ``bench/evidence_report.py`` wrote for each grid
and, over the entries both grids ran, writes one table: per budget the mean final cifar10-test,
its rank among those entries (1 = best), the collapsed count and the paired verdict against darts;
then Kendall's tau between the two budgets' mean accuracies with its exact permutation p-value
(:func:`dnas.report.stats.kendall_tau`, :func:`~dnas.report.stats.kendall_p`), and the same for the
collapsed share (ranked the other way: fewer collapses first). Then the guards at both budgets: per
entry and guard, the paired difference guarded - final over each budget's seeds (mean, 95% bootstrap
interval, sign-flip p, the verdict of :class:`dnas.report.stats.Paired`), and whether the guard
*helps at both* (the rule for making it a preset's default).
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from evidence_report import GUARD_VERDICTS, GUARDS, markdown_table

from dnas.report.stats import kendall_p, kendall_tau, paired

SCORE = "final cifar10-test"


@dataclass
class Evidence:
    """One grid's evidence, per entry: final accuracies and collapsed flags of its runs, its summary
    row, and per guard the guarded and final accuracy of every seed the guard could read."""

    accuracy: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    collapsed: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    summary: dict[str, dict[str, str]] = field(default_factory=dict)
    guarded: dict[tuple[str, str], dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    final: dict[tuple[str, str], dict[int, float]] = field(default_factory=lambda: defaultdict(dict))


def read_evidence(folder: Path) -> Evidence:
    """``per_run.csv`` and ``summary.csv`` of an evidence folder."""
    evidence = Evidence()
    with open(folder / "per_run.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if not row[SCORE]:
                continue
            entry, seed, final = row["entry"], int(row["seed"]), float(row[SCORE])
            evidence.accuracy[entry].append(final)
            evidence.collapsed[entry].append(int(row["collapsed"]))
            for guard in GUARDS:
                guarded = row.get(f"{guard} cifar10-test") or "–"
                if guarded != "–":
                    evidence.guarded[entry, guard][seed] = float(guarded)
                    evidence.final[entry, guard][seed] = final
    with open(folder / "summary.csv", newline="") as fh:
        evidence.summary = {row["entry"]: row for row in csv.DictReader(fh)}
    return evidence


def guard_table(grids: list[Evidence], names: list[str], entries: list[str]) -> str:
    """The guards' table over both budgets (module docstring)."""
    header = ["entry", "guard"] + [f"{n}: guarded - final [95% CI], p" for n in names] + ["helps at both"]
    rows = []
    for entry in entries:
        for guard in GUARDS:
            cells, verdicts = [], []
            for grid in grids:
                guarded = grid.guarded.get((entry, guard))
                if not guarded:
                    cells.append("–")
                    verdicts.append("none")
                    continue
                c = paired(guarded, grid.final[entry, guard])
                low, high = c.interval
                verdicts.append(GUARD_VERDICTS[c.verdict])
                cells.append(f"{c.mean_difference:+.2f} [{low:+.2f}, {high:+.2f}], {c.sign_flip_p:.3f} "
                             f"({len(c.seeds)} seeds, {verdicts[-1]})")
            rows.append([entry, guard, *cells, "yes" if all(v == "helps" for v in verdicts) else "no"])
    return markdown_table(header, rows)


def ranks(values: dict[str, float]) -> dict[str, int]:
    """1 for the largest value (competition ranking: ties share the better rank)."""
    ordered = sorted(values.values(), reverse=True)
    return {name: ordered.index(value) + 1 for name, value in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="evidence folder of the first budget")
    parser.add_argument("second", type=Path, help="evidence folder of the second budget")
    parser.add_argument("--names", nargs=2, default=("first", "second"), help="the two budgets' names")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()

    grids = [read_evidence(args.first), read_evidence(args.second)]
    entries = [e for e in grids[0].accuracy if e in grids[1].accuracy]
    if len(entries) < 2:
        parser.error("the two grids have fewer than two entries in common")
    means = [{e: statistics.fmean(g.accuracy[e]) for e in entries} for g in grids]
    shares = [{e: statistics.fmean(g.collapsed[e]) for e in entries} for g in grids]
    rank = [ranks(m) for m in means]
    header = ["entry"]
    for name in args.names:
        header += [f"{name}: runs", f"{name}: mean final", f"{name}: rank", f"{name}: collapsed",
                   f"{name}: vs darts"]
    rows = []
    for e in sorted(entries, key=lambda e: rank[0][e]):
        row = [e]
        for g, grid in enumerate(grids):
            row += [str(len(grid.accuracy[e])), f"{means[g][e]:.2f}", str(rank[g][e]),
                    f"{sum(grid.collapsed[e])}/{len(grid.collapsed[e])}",
                    grid.summary.get(e, {}).get("verdict") or "(baseline)"]
        rows.append(row)
    x, y = [means[0][e] for e in entries], [means[1][e] for e in entries]
    cx, cy = [-shares[0][e] for e in entries], [-shares[1][e] for e in entries]
    text = (markdown_table(header, rows) + f"\nKendall's tau of the mean final cifar10-test, {args.names[0]} vs "
            f"{args.names[1]}, over {len(entries)} entries: {kendall_tau(x, y):+.3f} (permutation p = "
            f"{kendall_p(x, y):.3f}); of the collapsed share: {kendall_tau(cx, cy):+.3f} (p = {kendall_p(cx, cy):.3f})."
            "\n\n" + guard_table(grids, list(args.names), sorted(entries)))
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
