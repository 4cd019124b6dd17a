"""The evidence of a collapse protocol grid: statistics over seeds, paired comparisons, guards.

    python bench/evidence_report.py runs/ten-nb201 --table TABLE --out runs/evidence [--baseline darts]

Reads every run of the `dnas compare` folder(s) (``runs/<entry>-s<seed>``) and writes into ``--out``:

* ``per_run.csv``: one row per entry x seed: the final cell's cifar10-test (the benchmark row the
  search logged for it), its peak over the epochs, skip and parameter-free counts, the final
  decision margin, whether it collapsed or is undecided, and, for each guard (``hessian``,
  ``skip``, ``margin`` at their defaults), the epoch it would have stopped after, the epoch of the
  cell it would have returned and that cell's cifar10-test;
* ``summary.md`` / ``summary.csv``: per entry the mean +- sample sd and median of the final
  cifar10-test, the collapsed and undecided counts, and the paired comparison with the baseline
  on the same seeds (:mod:`dnas.report.stats`: mean difference with its 95% bootstrap interval,
  exact sign-flip and Wilcoxon signed-rank p-values, wins and losses, and the verdict: *better* or
  *worse* when the interval excludes 0 and the sign-flip p < 0.05, else *tied*);
* ``guards.md``: per entry and guard, the mean final and guarded cifar10-test, how many runs the
  guard stopped, and the paired difference guarded - final over the seeds;
* ``final_accuracy.png`` (with matplotlib): every seed's final cifar10-test per entry (collapsed runs
  marked x), with the mean.

Collapsed: a finished run whose final cell has at least 4 of its 6 edges parameter-free and lies at
least 5 points below its own peak. Undecided: final margin below 0.03. The guards read only the
records every search logs (never an accuracy); the accuracies here score what they return.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from dnas.benchmarks import load_table, lookup, score
from dnas.components.guards import replay
from dnas.diagnostics.convergence import least_decided, undecided
from dnas.report.guard import make_guard
from dnas.report.plots import matplotlib_available
from dnas.report.run import is_run, read_run
from dnas.report.stats import paired

SCORE = "cifar10-test"
GUARDS = ("hessian", "skip", "margin")
#: a guard's effect in the words of the paired verdict of guarded against final (dnas.report.stats.Paired)
GUARD_VERDICTS = {"better": "helps", "worse": "hurts", "tied": "no difference"}
COLLAPSE_PARAMETER_FREE, COLLAPSE_DROP = 4, 5.0


@dataclass
class Run:
    entry: str
    seed: int
    epochs: int
    final: float | None
    peak: float | None
    peak_epoch: int | None
    skip: int
    parameter_free: int
    margin: float | None
    guards: dict[str, tuple[int | None, int | None, float | None]] = field(default_factory=dict)

    @property
    def collapsed(self) -> bool:
        drop = self.peak - self.final if self.peak is not None and self.final is not None else 0.0
        return self.parameter_free >= COLLAPSE_PARAMETER_FREE and drop >= COLLAPSE_DROP

    @property
    def undecided(self) -> bool:
        return undecided(self.margin)


def _accuracy(table, genotype: dict) -> float | None:
    row = lookup(table, genotype) or {}
    return score(row.get(SCORE))


def read_runs(folders: list[Path], table) -> list[Run]:
    runs = []
    for folder in folders:
        for path in sorted((folder / "runs").iterdir()):
            if not is_run(path):
                continue
            history = read_run(path)
            if not history.finished:
                continue
            entry, _, seed = history.name.rpartition("-s")
            scores = [_accuracy(table, r["genotype"]) for r in history.epochs]
            scored = [(a, e) for e, a in enumerate(scores) if a is not None]
            peak, peak_epoch = max(scored, key=lambda p: (p[0], -p[1])) if scored else (None, None)
            final = history.epochs[-1]
            run = Run(entry, int(seed), len(history.epochs), scores[-1], peak, peak_epoch, final["skip_connect"],
                      final["parameter_free"], least_decided(history.decision(final))[0])
            for name in GUARDS:
                guard = make_guard(name)
                if guard.hessian_every and not any("hessian_eigenvalue" in r for r in history.epochs):
                    run.guards[name] = (None, None, None)
                    continue
                decision = replay(guard, history.epochs, total=history.planned_epochs)
                if decision is None:
                    run.guards[name] = (None, None, run.final)
                else:
                    run.guards[name] = (decision.stop_epoch, decision.cell_epoch,
                                        _accuracy(table, guard.cell()["genotype"]))
            runs.append(run)
    return runs


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _stats(values: list[float]) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {sd:.2f}"


def _p(value: float) -> str:
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


def write_per_run(runs: list[Run], path: Path) -> None:
    header = ["entry", "seed", "epochs", f"final {SCORE}", f"peak {SCORE}", "peak epoch", "final skips",
              "final parameter-free", "final margin", "collapsed", "undecided"]
    for name in GUARDS:
        header += [f"{name} stop epoch", f"{name} cell epoch", f"{name} {SCORE}"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in sorted(runs, key=lambda r: (r.entry, r.seed)):
            row = [r.entry, r.seed, r.epochs, _fmt(r.final), _fmt(r.peak), r.peak_epoch, r.skip, r.parameter_free,
                   _fmt(r.margin, 4), int(r.collapsed), int(r.undecided)]
            for name in GUARDS:
                stop, cell, acc = r.guards.get(name, (None, None, None))
                row += ["" if stop is None else stop, "" if cell is None else cell, _fmt(acc)]
            writer.writerow(row)


def summarize(runs: list[Run], baseline: str, order: list[str]) -> tuple[str, list[list[str]]]:
    by_entry: dict[str, dict[int, Run]] = defaultdict(dict)
    for r in runs:
        by_entry[r.entry][r.seed] = r
    base = {s: r.final for s, r in by_entry.get(baseline, {}).items() if r.final is not None}
    header = ["entry", "runs", f"final {SCORE} mean ± sd", "median", "collapsed", "undecided",
              f"paired difference vs {baseline} [95% CI]", "sign-flip p", "Wilcoxon p", "wins/losses", "verdict"]
    rows = []
    for entry in order:
        seeds = by_entry.get(entry, {})
        finals = [r.final for r in seeds.values() if r.final is not None]
        row = [entry, str(len(seeds)), _stats(finals), _fmt(statistics.median(finals)) if finals else "–",
               f"{sum(r.collapsed for r in seeds.values())}/{len(seeds)}",
               f"{sum(r.undecided for r in seeds.values())}/{len(seeds)}"]
        if entry == baseline:
            row += ["(baseline)", "", "", "", ""]
        else:
            comparison = paired({s: r.final for s, r in seeds.items() if r.final is not None}, base)
            low, high = comparison.interval
            row += [f"{comparison.mean_difference:+.2f} [{low:+.2f}, {high:+.2f}]", _p(comparison.sign_flip_p),
                    _p(comparison.wilcoxon_p), f"{comparison.wins}/{comparison.losses}", comparison.verdict]
        rows.append(row)
    return markdown_table(header, rows), [header, *rows]


def guard_table(runs: list[Run], order: list[str]) -> str:
    by_entry: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_entry[r.entry].append(r)
    header = ["entry", "guard", f"final {SCORE}", f"guarded {SCORE}", "stopped", "guarded - final [95% CI]",
              "sign-flip p", "verdict"]
    rows = []
    for entry in order:
        for name in GUARDS:
            pairs = {r.seed: (r.final, r.guards[name][2]) for r in by_entry.get(entry, [])
                     if r.final is not None and r.guards.get(name, (None, None, None))[2] is not None}
            if not pairs:
                rows.append([entry, name, "–", "–", "–", "–", "–", "no eigenvalues logged"])
                continue
            stopped = sum(r.guards[name][0] is not None for r in by_entry[entry])
            comparison = paired({s: g for s, (_, g) in pairs.items()}, {s: f for s, (f, _) in pairs.items()})
            low, high = comparison.interval
            verdict = GUARD_VERDICTS[comparison.verdict]
            rows.append([entry, name, _stats([f for f, _ in pairs.values()]), _stats([g for _, g in pairs.values()]),
                         f"{stopped}/{len(by_entry[entry])}",
                         f"{comparison.mean_difference:+.2f} [{low:+.2f}, {high:+.2f}]", _p(comparison.sign_flip_p),
                         verdict])
    return markdown_table(header, rows)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(runs: list[Run], order: list[str], path: Path, baseline: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(order)), 3.6))
    for i, entry in enumerate(order):
        own = [r for r in runs if r.entry == entry and r.final is not None]
        values = [r.final for r in own]
        xs = [i + 0.08 * ((k % 5) - 2) for k in range(len(own))]
        color = "#c0392b" if entry == baseline else "#2c7fb8"
        for collapsed, marker in ((False, "o"), (True, "x")):
            picked = [(x, r.final) for x, r in zip(xs, own, strict=True) if r.collapsed == collapsed]
            ax.scatter([x for x, _ in picked], [v for _, v in picked], s=18, marker=marker, color=color, alpha=0.8,
                       label=("collapsed run" if collapsed else "run") if i == 0 else None)
        if values:
            ax.hlines(statistics.fmean(values), i - 0.3, i + 0.3, color="black", linewidth=1.5)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=35, ha="right")
    ax.set_ylabel(f"final {SCORE} (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="dnas compare folders")
    parser.add_argument("--table", required=True, help="the NAS-Bench-201 table")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--baseline", default="darts")
    args = parser.parse_args()
    table = load_table(args.table)
    runs = read_runs(args.folders, table)
    order = sorted({r.entry for r in runs}, key=lambda e: (e != args.baseline, e))
    args.out.mkdir(parents=True, exist_ok=True)
    write_per_run(runs, args.out / "per_run.csv")
    markdown, rows = summarize(runs, args.baseline, order)
    with open(args.out / "summary.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    (args.out / "summary.md").write_text(markdown)
    (args.out / "guards.md").write_text(guard_table(runs, order))
    if matplotlib_available():
        plot(runs, order, args.out / "final_accuracy.png", args.baseline)
    print(markdown)


if __name__ == "__main__":
    main()
