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
from pathlib import Path

from dnas.report.stats import kendall_p, kendall_tau, paired

SCORE = "final cifar10-test"
GUARDS = ("hessian", "skip", "margin")
VERDICTS = {"better": "helps", "worse": "hurts", "tied": "no difference"}


def read_evidence(folder: Path) -> tuple[dict[str, list[float]], dict[str, list[int]], dict[str, dict[str, str]]]:
    """Per entry: its runs' final accuracies, their collapsed flags, and its summary row."""
    accuracy: dict[str, list[float]] = defaultdict(list)
    collapsed: dict[str, list[int]] = defaultdict(list)
    with open(folder / "per_run.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row[SCORE]:
                accuracy[row["entry"]].append(float(row[SCORE]))
                collapsed[row["entry"]].append(int(row["collapsed"]))
    with open(folder / "summary.csv", newline="") as fh:
        summary = {row["entry"]: row for row in csv.DictReader(fh)}
    return accuracy, collapsed, summary


def read_guards(folder: Path) -> dict[tuple[str, str], tuple[dict[int, float], dict[int, float]]]:
    """Per (entry, guard): the guarded and the final cifar10-test of every seed the guard could read."""
    out: dict[tuple[str, str], tuple[dict[int, float], dict[int, float]]] = defaultdict(lambda: ({}, {}))
    with open(folder / "per_run.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            for guard in GUARDS:
                guarded = row.get(f"{guard} cifar10-test") or ""
                if row[SCORE] and guarded and guarded != "–":
                    out[row["entry"], guard][0][int(row["seed"])] = float(guarded)
                    out[row["entry"], guard][1][int(row["seed"])] = float(row[SCORE])
    return out


def guard_lines(folders: list[Path], names: list[str], entries: list[str]) -> list[str]:
    """The guards' table over both budgets (module docstring)."""
    guards = [read_guards(f) for f in folders]
    header = ["entry", "guard"] + [f"{n}: guarded - final [95% CI], p" for n in names] + ["helps at both"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in entries:
        for guard in GUARDS:
            cells, verdicts = [], []
            for g in guards:
                guarded, final = g.get((entry, guard), ({}, {}))
                if not guarded:
                    cells.append("–")
                    verdicts.append("none")
                    continue
                c = paired(guarded, final)
                low, high = c.interval
                verdicts.append(VERDICTS[c.verdict])
                cells.append(f"{c.mean_difference:+.2f} [{low:+.2f}, {high:+.2f}], {c.sign_flip_p:.3f} "
                             f"({len(c.seeds)} seeds, {verdicts[-1]})")
            both = "yes" if all(v == "helps" for v in verdicts) else "no"
            lines.append(f"| `{entry}` | {guard} | " + " | ".join(cells) + f" | {both} |")
    return lines


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
    entries = [e for e in grids[0][0] if e in grids[1][0]]
    if len(entries) < 2:
        parser.error("the two grids have fewer than two entries in common")
    means = [{e: statistics.fmean(acc[e]) for e in entries} for acc, _, _ in grids]
    shares = [{e: statistics.fmean(col[e]) for e in entries} for _, col, _ in grids]
    rank = [ranks(m) for m in means]
    header = ["entry"]
    for name in args.names:
        header += [f"{name}: runs", f"{name}: mean final", f"{name}: rank", f"{name}: collapsed",
                   f"{name}: vs darts"]
    rows = []
    for e in sorted(entries, key=lambda e: rank[0][e]):
        row = [f"`{e}`"]
        for g, (acc, col, summary) in enumerate(grids):
            row += [str(len(acc[e])), f"{means[g][e]:.2f}", str(rank[g][e]), f"{sum(col[e])}/{len(col[e])}",
                    summary.get(e, {}).get("verdict") or "(baseline)"]
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    x, y = [means[0][e] for e in entries], [means[1][e] for e in entries]
    cx, cy = [-shares[0][e] for e in entries], [-shares[1][e] for e in entries]
    lines += ["", f"Kendall's tau of the mean final cifar10-test, {args.names[0]} vs {args.names[1]}, over "
              f"{len(entries)} entries: {kendall_tau(x, y):+.3f} (permutation p = {kendall_p(x, y):.3f}); of the "
              f"collapsed share: {kendall_tau(cx, cy):+.3f} (p = {kendall_p(cx, cy):.3f})."]
    lines += ["", *guard_lines([args.first, args.second], list(args.names), sorted(entries))]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
