"""The numbers of a comparison: per-run records, their aggregation over seeds, CSV and Markdown.

Aggregation over the ``n`` seeds of an entry (runs that failed or have no value are left out)::

    mean = (1/n) sum_i x_i          std = sqrt( sum_i (x_i - mean)^2 / (n - 1) )

``std`` is the sample standard deviation (Bessel's correction, as ``statistics.stdev``); it is
undefined (None, shown as the mean alone) for a single value. Pure Python: no torch, no pandas.

Next to the accuracies stand the decision margin and the op entropy of each run's final
architecture weights (:mod:`dnas.diagnostics.convergence`; per run the least decided cell type: the smallest
margin, the largest entropy); a run whose margin is below the threshold is counted and flagged as
"undecided".
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dnas.diagnostics.convergence import undecided

#: the per-run quantities that are aggregated besides the benchmark columns
DECISION_KEYS = ("margin", "entropy")
COUNT_KEYS = ("skip_connect", "parameter_free")
TIME_KEY = "seconds"
HEADINGS = {"skip_connect": "skip connections", "parameter_free": "parameter-free ops", "seconds": "search time (s)"}
DIGITS = {"margin": 3, "entropy": 3, "seconds": 1, "skip_connect": 1, "parameter_free": 1}


@dataclass(frozen=True)
class EpochPoint:
    """The cell derived at the end of one epoch of a run. ``epoch`` counts completed epochs (1 = after the first)."""

    epoch: int
    seconds: float
    skip_connect: int
    parameter_free: int
    arch: str
    scores: dict[str, float | None] = field(default_factory=dict)


@dataclass
class RunRecord:
    """One run of the grid: its final derived cell, cost, benchmark scores and per-epoch curve.

    ``status`` is ``"ok"`` or ``"failed: <reason>"``; failed runs keep their partial curve but are
    left out of every mean.
    """

    entry: str
    method: str
    seed: int
    status: str = "ok"
    arch: str = ""
    skip_connect: int | None = None
    parameter_free: int | None = None
    seconds: float | None = None
    epochs: int | None = None
    steps: int | None = None
    arch_steps: int | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    curve: list[EpochPoint] = field(default_factory=list)
    margin: float | None = None
    entropy: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def undecided(self) -> bool:
        return self.ok and undecided(self.margin)

    def value(self, key: str) -> float | None:
        """A benchmark column, ``margin``, ``entropy``, ``skip_connect``, ``parameter_free`` or ``seconds``."""
        if key in self.scores:
            return self.scores[key]
        return getattr(self, key)


@dataclass(frozen=True)
class Stat:
    mean: float | None
    std: float | None
    n: int


def mean_std(values: Iterable[float | None]) -> Stat:
    """Mean and sample standard deviation of the values that are not None (see the module docstring)."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if n == 0:
        return Stat(None, None, 0)
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n)


@dataclass
class SummaryRow:
    """The aggregate of one entry: ``stats[key]`` for every benchmark column and the keys above."""

    entry: str
    setup: str
    runs: int
    failed: int
    stats: dict[str, Stat]
    undecided: int = 0


def summary_keys(score_columns: Sequence[str]) -> list[str]:
    return [*score_columns, *DECISION_KEYS, *COUNT_KEYS, TIME_KEY]


def summarize(entries: Sequence[tuple[str, str]], records: Sequence[RunRecord],
              score_columns: Sequence[str]) -> list[SummaryRow]:
    """One row per ``(entry name, setup text)`` in the given order, aggregating its successful runs."""
    rows = []
    for name, setup in entries:
        mine = [r for r in records if r.entry == name]
        ok = [r for r in mine if r.ok]
        stats = {key: mean_std(r.value(key) for r in ok) for key in summary_keys(score_columns)}
        rows.append(SummaryRow(name, setup, len(ok), len(mine) - len(ok), stats, sum(r.undecided for r in ok)))
    return rows


def curve_stats(records: Sequence[RunRecord], entry: str, key: str) -> list[tuple[int, Stat]]:
    """Per completed epoch, the mean/std over the entry's runs of ``key`` (a benchmark column,
    ``skip_connect`` or ``parameter_free``) of the cell derived at that epoch. Failed runs count
    for the epochs they completed."""
    by_epoch: dict[int, list[float | None]] = {}
    for record in records:
        if record.entry != entry:
            continue
        for point in record.curve:
            value = point.scores.get(key) if key in point.scores else getattr(point, key, None)
            by_epoch.setdefault(point.epoch, []).append(value)
    return [(epoch, mean_std(values)) for epoch, values in sorted(by_epoch.items())]


# ----- CSV -------------------------------------------------------------------------------------------------
def _csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def _write(path: Path, text: str) -> None:
    from dnas.runtime.atomic import atomic_write_text  # imports torch: only when writing

    atomic_write_text(path, text)


def write_per_run_csv(path: Path, records: Sequence[RunRecord], score_columns: Sequence[str]) -> None:
    header = ["entry", "method", "seed", "status", "arch", *score_columns, "margin", "entropy", "undecided",
              "skip_connect", "parameter_free", "seconds", "epochs", "steps", "arch_steps"]
    rows = ([r.entry, r.method, r.seed, r.status, r.arch, *(r.scores.get(c) for c in score_columns), r.margin,
             r.entropy, int(r.undecided), r.skip_connect, r.parameter_free, r.seconds, r.epochs, r.steps, r.arch_steps]
            for r in records)
    _write(path, _csv_text(header, rows))


def write_summary_csv(path: Path, rows: Sequence[SummaryRow], score_columns: Sequence[str]) -> None:
    keys = summary_keys(score_columns)
    header = ["entry", "setup", "runs", "failed", "undecided", *(f"{k}_{s}" for k in keys for s in ("mean", "std"))]
    lines = ([r.entry, r.setup, r.runs, r.failed, r.undecided,
              *(v for k in keys for v in (r.stats[k].mean, r.stats[k].std))] for r in rows)
    _write(path, _csv_text(header, lines))


def write_curves_csv(path: Path, records: Sequence[RunRecord], score_columns: Sequence[str]) -> None:
    header = ["entry", "method", "seed", "epoch", "seconds", "skip_connect", "parameter_free", "arch",
              *score_columns]
    rows = ([r.entry, r.method, r.seed, p.epoch, p.seconds, p.skip_connect, p.parameter_free, p.arch,
             *(p.scores.get(c) for c in score_columns)] for r in records for p in r.curve)
    _write(path, _csv_text(header, rows))


# ----- Markdown --------------------------------------------------------------------------------------------
def format_stat(stat: Stat, digits: int) -> str:
    if stat.mean is None:
        return "–"
    if stat.std is None:
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def _digits(key: str) -> int:
    return DIGITS.get(key, 2)


def _escape(text: str) -> str:
    """A pipe inside a table cell (code spans included, as in NB201 arch strings) must be escaped."""
    return text.replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(map(_escape, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(_escape, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown_summary(rows: Sequence[SummaryRow], score_columns: Sequence[str]) -> str:
    """The comparison table: one line per entry, mean ± std over its seeds."""
    keys = summary_keys(score_columns)
    header = ["entry", "setup", "runs", *(HEADINGS.get(k, k) for k in keys)]
    body = ([f"`{r.entry}`", r.setup, str(r.runs) + "".join(f" ({n} {what})" for n, what in
                                                          ((r.failed, "failed"), (r.undecided, "undecided")) if n),
             *(format_stat(r.stats[k], _digits(k)) for k in keys)] for r in rows)
    return _table(header, body)


def markdown_per_run(records: Sequence[RunRecord], score_columns: Sequence[str],
                     link: Callable[[RunRecord], str] | None = None) -> str:
    """One line per run; ``link(record)``: the address of the run's own report, if any."""
    header = ["run", "derived cell", *score_columns, "margin", "entropy", "skips", "param-free", "arch steps",
              "seconds"]

    def cell(v: float | int | None, digits: int) -> str:
        return "–" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))

    def name(r: RunRecord) -> str:
        text = f"`{r.entry}-s{r.seed}`"
        return f"[{text}]({link(r)})" if link else text

    body = ([name(r), f"`{r.arch}`" if r.ok else r.status, *(cell(r.scores.get(c), 2) for c in score_columns),
             cell(r.margin, 3) + (" **undecided**" if r.undecided else ""), cell(r.entropy, 3),
             cell(r.skip_connect, 0), cell(r.parameter_free, 0), cell(r.arch_steps, 0), cell(r.seconds, 1)]
            for r in records)
    return _table(header, body)


def markdown_by_epoch(rows: Sequence[SummaryRow], records: Sequence[RunRecord], key: str, digits: int,
                      max_columns: int = 12) -> str:
    """Mean over seeds of ``key`` at the end of each epoch (at most ``max_columns`` evenly spaced
    epochs, the last one always included), one line per entry."""
    epochs = sorted({p.epoch for r in records for p in r.curve})
    if not epochs:
        return ""
    if len(epochs) > max_columns:
        picks = {epochs[round(i * (len(epochs) - 1) / (max_columns - 1))] for i in range(max_columns)}
        epochs = sorted(picks)
    header = ["entry", *(f"ep {e}" for e in epochs)]
    body = []
    for row in rows:
        means = {e: s for e, s in curve_stats(records, row.entry, key)}
        body.append([f"`{row.entry}`", *("–" if e not in means or means[e].mean is None
                                         else f"{means[e].mean:.{digits}f}" for e in epochs)])
    return _table(header, body)
