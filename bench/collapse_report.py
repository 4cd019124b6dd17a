"""The per-method table of the collapse protocol, from `dnas compare` folders.

    python bench/collapse_report.py runs/collapse-nb201 [runs/collapse-s3 ...] --out docs/collapse/collapse.md

`dnas compare` already writes each folder's report.md (final accuracy, skip counts per epoch,
decision margins); this adds what a collapse study needs besides, read from every run's
``metrics.jsonl`` (runs still in progress count with the epochs they have finished):

* **peak and final** NAS-Bench-201 accuracy of the derived cell: ``peak = max_t acc(t)`` over the
  completed epochs ``t``, ``drop = peak - acc(T)``, and the epoch of the peak;
* **collapsed**: a finished run whose final cell has at least :data:`COLLAPSE_PARAMETER_FREE` of its edges
  parameter-free (``skip_connect``, pooling, ``none``) *and* lies at least :data:`COLLAPSE_DROP`
  points below its own peak (on spaces without a table: the parameter-free count alone);
* **skip and parameter-free counts** of the derived cell every :data:`EVERY` epochs;
* **dominant Hessian eigenvalue** ``lambda_max(grad^2_alpha L_val)`` (logged when the runs set
  ``hessian_every``): first and last logged value, and in how many runs the last exceeds the first
  (a ratio would be meaningless: the first values lie near 0, of either sign);
* **per-cell gradient alignment** (the step records' ``alignment.<cell type>``, logged every
  ``alignment_every`` steps): its mean over the first and over the last epoch of the search;
* **decision margin** of the final weights (smallest over the cell types, :mod:`dnas.diagnostics.convergence`),
  and how many finished runs end **undecided** (margin below :data:`dnas.diagnostics.convergence.UNDECIDED_MARGIN`),
  and the **search time** (``seconds`` of the last record).

Per entry: mean ± sample standard deviation over its seeds (:func:`dnas.report.tables.mean_std`).
With matplotlib (``pip install -e ".[report]"``) it also draws ``collapse_curves.png`` per folder:
parameter-free ops, decision margin and Hessian eigenvalue against the epoch.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from dnas.diagnostics.convergence import UNDECIDED_MARGIN, least_decided, undecided
from dnas.report.plots import Panel, matplotlib_available, plot_panels
from dnas.report.run import RunHistory, is_run, read_run
from dnas.report.tables import Stat, format_stat, mean_std

#: a final cell with at least this many parameter-free edges of NB201's 6 (the same share elsewhere) ...
COLLAPSE_PARAMETER_FREE = 4
#: ... that lies at least this many accuracy points below the run's own peak has collapsed
COLLAPSE_DROP = 5.0
#: the per-epoch count tables show every EVERY-th epoch (and the last)
EVERY = 5
SCORE = "cifar10-test"


@dataclass
class Trace:
    """One run, reduced to what the tables need."""

    entry: str
    seed: int
    finished: bool
    epochs: int
    planned: int
    seconds: float | None
    accuracy: list[float | None]
    skip: list[int]
    parameter_free: list[int]
    margin: list[float | None]
    hessian: list[tuple[int, float]]
    alignment_first: float | None
    alignment_last: float | None
    edges: int  # of the derived cell (all cell types)
    correction: dict[str, float] = field(default_factory=dict)  # curvature term per op, mean over logged steps

    @property
    def final(self) -> float | None:
        return self.accuracy[-1] if self.accuracy else None

    @property
    def peak(self) -> tuple[float | None, int | None]:
        scored = [(a, t + 1) for t, a in enumerate(self.accuracy) if a is not None]
        return max(scored, key=lambda p: (p[0], -p[1])) if scored else (None, None)

    @property
    def collapsed(self) -> bool:
        if not self.finished or not self.parameter_free:  # only a finished run has a final cell
            return False
        free = self.parameter_free[-1] >= COLLAPSE_PARAMETER_FREE * self.edges / 6
        peak, _ = self.peak
        if peak is None or self.final is None:
            return free
        return free and peak - self.final >= COLLAPSE_DROP


def entry_and_seed(name: str) -> tuple[str, int]:
    entry, _, seed = name.rpartition("-s")
    return entry, int(seed)


def alignment_mean(history: RunHistory, epoch: int) -> float | None:
    values = [v for r in history.steps if r.get("epoch") == epoch for k, v in r.items() if k.startswith("alignment.")]
    return sum(values) / len(values) if values else None


def correction_by_op(history: RunHistory) -> dict[str, float]:
    """Mean over the step records of the estimator's curvature term per op (``estimator.correction.<type>.<op>``:
    its mean over the edges; positive raises that op's alpha)."""
    prefix = "estimator.correction."
    values: dict[str, list[float]] = defaultdict(list)
    for record in history.steps:
        for key, value in record.items():
            if key.startswith(prefix):
                values[key[len(prefix):]].append(value)
    return {op: sum(v) / len(v) for op, v in values.items()}


def trace(history: RunHistory) -> Trace:
    entry, seed = entry_and_seed(history.name)
    epochs = history.epochs
    last = history.last or {}
    genotype = history.genotype
    return Trace(
        entry=entry, seed=seed, finished=history.finished, epochs=len(epochs), planned=history.planned_epochs,
        seconds=last.get("seconds"),
        accuracy=[(r.get("benchmark") or {}).get(SCORE) for r in epochs],
        skip=[r["skip_connect"] for r in epochs], parameter_free=[r["parameter_free"] for r in epochs],
        margin=[least_decided(history.decision(r))[0] for r in epochs],
        hessian=[(r["epoch"] + 1, r["hessian_eigenvalue"]) for r in epochs if "hessian_eigenvalue" in r],
        alignment_first=alignment_mean(history, 0) if epochs else None,
        alignment_last=alignment_mean(history, len(epochs) - 1) if epochs else None,
        edges=sum(len(pairs) for pairs in genotype.cells.values()) if genotype else 6,
        correction=correction_by_op(history),
    )


def compare_order(folder: Path) -> list[str]:
    """The entries in the order of the folder's ``summary.csv`` (``dnas compare``'s own), if written."""
    path = folder / "summary.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [row["entry"] for row in csv.DictReader(f)]


def read_folder(folder: Path) -> list[Trace]:
    runs = sorted(p for p in (folder / "runs").iterdir() if is_run(p)) if (folder / "runs").is_dir() else []
    return [trace(read_run(p)) for p in runs if read_run(p).epochs]


# ----- tables --------------------------------------------------------------------------------------------
@dataclass
class Row:
    entry: str
    traces: list[Trace] = field(default_factory=list)


def fmt(stat: Stat, digits: int = 1) -> str:
    return format_stat(stat, digits) if stat.mean is not None else "–"


def hessian_rises(t: Trace) -> bool | None:
    """Whether the last logged eigenvalue exceeds the first (None with fewer than two)."""
    return None if len(t.hessian) < 2 else t.hessian[-1][1] > t.hessian[0][1]


def method_table(rows: list[Row]) -> list[str]:
    head = ("| entry | runs | final cifar10-test | peak cifar10-test | peak epoch | drop | collapsed | undecided "
            "| final skips "
            "| final param-free | final margin | λ_max first → last (runs rising) | alignment first → last epoch "
            "| search time (s) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        ts = row.traces
        done = sum(t.finished for t in ts)
        runs = f"{done}" if done == len(ts) else f"{done} (+{len(ts) - done} unfinished)"
        peaks = [t.peak for t in ts]
        first = mean_std(t.hessian[0][1] if t.hessian else None for t in ts)
        last = mean_std(t.hessian[-1][1] if t.hessian else None for t in ts)
        rising = [r for r in map(hessian_rises, ts) if r is not None]
        hessian = (f"{fmt(first, 2)} → {fmt(last, 2)} ({sum(rising)}/{len(rising)})" if first.mean is not None else "–")
        align = (f"{fmt(mean_std(t.alignment_first for t in ts), 3)} → "
                 f"{fmt(mean_std(t.alignment_last for t in ts), 3)}")
        lines.append("| " + " | ".join([
            f"`{row.entry}`", runs,
            fmt(mean_std(t.final for t in ts), 2), fmt(mean_std(p[0] for p in peaks), 2),
            fmt(mean_std(p[1] for p in peaks), 1),
            fmt(mean_std(p[0] - t.final if p[0] is not None and t.final is not None else None
                         for p, t in zip(peaks, ts, strict=True)), 2),
            f"{sum(t.collapsed for t in ts)}/{len(ts)}",
            f"{sum(t.finished and undecided(t.margin[-1]) for t in ts)}/{len(ts)}",
            fmt(mean_std(t.skip[-1] for t in ts)), fmt(mean_std(t.parameter_free[-1] for t in ts)),
            fmt(mean_std(t.margin[-1] for t in ts), 3), hessian, align,
            fmt(mean_std(t.seconds for t in ts), 0),
        ]) + " |")
    return lines


def per_epoch_table(rows: list[Row], key: str, digits: int = 1) -> list[str]:
    planned = max(t.planned for row in rows for t in row.traces)
    shown = sorted({*range(EVERY, planned + 1, EVERY), 1, planned})
    lines = ["| entry | " + " | ".join(f"ep {e}" for e in shown) + " |", "|---|" + "---|" * len(shown)]
    for row in rows:
        cells = []
        for e in shown:
            values = [getattr(t, key)[e - 1] for t in row.traces if len(getattr(t, key)) >= e]
            cells.append(fmt(mean_std(values), digits) if values else "–")
        lines.append(f"| `{row.entry}` | " + " | ".join(cells) + " |")
    return lines


def digits(counts: list[int]) -> str:
    """One character per epoch while every count is a single digit, else space-separated."""
    return ("" if max(counts, default=0) < 10 else " ").join(map(str, counts))


def per_run_table(rows: list[Row]) -> list[str]:
    lines = ["| run | epochs | final | peak (epoch) | skips, epoch by epoch | param-free, epoch by epoch "
             "| final margin |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        for t in row.traces:
            peak, at = t.peak
            final = "–" if t.final is None else f"{t.final:.2f}"
            peak_text = "–" if peak is None else f"{peak:.2f} ({at})"
            margin = "–" if t.margin[-1] is None else f"{t.margin[-1]:.3f}"
            lines.append(f"| `{t.entry}-s{t.seed}`{' (collapsed)' if t.collapsed else ''} | {t.epochs}/{t.planned} "
                         f"| {final} | {peak_text} | `{digits(t.skip)}` | `{digits(t.parameter_free)}` | {margin} |")
    return lines


def curves(rows: list[Row], key: str) -> dict[str, list[tuple[int, Stat]]]:
    out = {}
    for row in rows:
        by_epoch: dict[int, list[float | None]] = defaultdict(list)
        for t in row.traces:
            if key == "hessian":
                for e, v in t.hessian:
                    by_epoch[e].append(v)
            else:
                for e, v in enumerate(getattr(t, key), start=1):
                    by_epoch[e].append(v)
        out[row.entry] = [(e, mean_std(v)) for e, v in sorted(by_epoch.items())]
    return out


def correction_table(rows: list[Row]) -> list[str]:
    """Which ops the curvature term of second-order and amended estimators favours, per entry."""
    ops = list(dict.fromkeys(op for row in rows for t in row.traces for op in t.correction))
    shown = [row for row in rows if any(t.correction for t in row.traces)]
    if not shown:
        return []
    lines = ["Curvature term of the α gradient per op (`estimator.correction.<cell>.<op>`: mean over the edges, "
             "then over the logged steps of a run; mean ± sd over seeds, ×1e-3; positive raises the op's α):", "",
             "| entry | " + " | ".join(f"`{op}`" for op in ops) + " |", "|---|" + "---|" * len(ops)]
    for row in shown:
        cells = [fmt(mean_std([1e3 * t.correction[op] for t in row.traces if op in t.correction]), 2) for op in ops]
        lines.append(f"| `{row.entry}` | " + " | ".join(cells) + " |")
    return [*lines, ""]


def folder_report(folder: Path, plot_dir: Path) -> list[str]:
    rows: dict[str, Row] = {name: Row(name) for name in compare_order(folder)}
    for t in read_folder(folder):
        rows.setdefault(t.entry, Row(t.entry)).traces.append(t)
    ordered = [row for row in rows.values() if row.traces]
    if not ordered:
        return [f"## `{folder}`", "", "No run has finished an epoch yet.", ""]
    lines = [f"## `{folder.name}`", "", *method_table(ordered), "",
             "Parameter-free ops of the derived cell (mean over seeds):", "",
             *per_epoch_table(ordered, "parameter_free"), "",
             "Skip connections of the derived cell (mean over seeds):", "", *per_epoch_table(ordered, "skip"), ""]
    if any(t.accuracy and t.accuracy[0] is not None for row in ordered for t in row.traces):
        lines += ["cifar10-test of the derived cell (mean over seeds):", "",
                  *per_epoch_table(ordered, "accuracy"), ""]
    lines += correction_table(ordered)
    lines += ["Decision margin (mean over seeds):", "", *per_epoch_table(ordered, "margin", 3), "",
              "Per run (one digit per epoch):", "", *per_run_table(ordered), ""]
    if matplotlib_available():
        path = plot_dir / f"{folder.name}_curves.png"
        panels = [Panel("parameter-free ops", "edges", curves(ordered, "parameter_free"), low=0),
                  Panel("decision margin", "top-1 − top-2", curves(ordered, "margin"), low=0)]
        if any(t.accuracy and t.accuracy[0] is not None for row in ordered for t in row.traces):
            panels.insert(0, Panel(f"{SCORE} of the derived cell", "%", curves(ordered, "accuracy"), 0, 100))
        if any(t.hessian for row in ordered for t in row.traces):
            panels.append(Panel("dominant Hessian eigenvalue", "λ_max", curves(ordered, "hessian")))
        plot_panels(path, panels, title=folder.name)
        lines += [f"![{folder.name} curves]({path.name})", ""]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="dnas compare --out folders")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown file to write (plots beside it)")
    args = parser.parse_args(argv)
    lines = ["# Collapse protocol: per-method measurements", "",
             f"Collapsed: final cell with ≥ {COLLAPSE_PARAMETER_FREE} of 6 edges parameter-free and ≥ "
             f"{COLLAPSE_DROP:g} points below the run's own peak. Undecided: final decision margin below "
             f"{UNDECIDED_MARGIN:g}. λ_max: dominant eigenvalue of ∇²_α L_val on a fixed "
             "batch. Alignment: mean cosine agreement of the per-cell α gradients (Λ-DARTS' corr) over the steps of "
             "the first and of the last epoch. Produced by `bench/collapse_report.py`.", ""]
    for folder in args.folders:
        lines += folder_report(folder, args.out.parent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
