"""The report of a comparison grid: read its run directories, write the tables, CSVs, plots and ``report.md``.

The grid itself (planning, reuse, executors) is :mod:`dnas.grid`; this module only reads what its
runs left in ``OUT/runs/<entry>-s<seed>/`` and writes, into ``OUT``: ``report.md``,
``summary.csv``, ``per_run.csv``, ``curves.csv``, the HTML pages ``index.html`` (every entry x seed
cell side by side) and ``reports/<entry>-s<seed>/index.html`` (each run's report,
:mod:`dnas.report.html`) and, with matplotlib, ``accuracy_vs_epoch.png`` and ``skips_vs_epoch.png``.

Every run is reported: a finished run with its derived cell, counts and benchmark scores; any
other with its status, ``failed: <reason>`` or ``not finished``, and the epochs it completed. A
run directory that cannot be read (``results.json`` corrupt, say) is a failed run with the reason,
not the end of the report. Table cells that are blank or not numbers count as missing scores.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dnas.diagnostics.convergence import UNDECIDED_MARGIN
from dnas.errors import DnasError
from dnas.report.html import write_grid_pages
from dnas.report.plots import INSTALL_HINT, Panel, matplotlib_available, plot_panels
from dnas.report.run import read_run
from dnas.report.tables import (
    EpochPoint,
    RunRecord,
    SummaryRow,
    curve_stats,
    markdown_by_epoch,
    markdown_per_run,
    markdown_summary,
    summarize,
    write_curves_csv,
    write_per_run_csv,
    write_summary_csv,
)
from dnas.runtime.files import CONFIG, RESULTS, read_metrics
from dnas.runtime.reading import read_json

if TYPE_CHECKING:
    from dnas.benchmarks.table import Table

RUNS = "runs"
#: what the report of a grid writes into its folder (besides the run directories under runs/)
GRID_OUTPUTS = ("per_run.csv", "summary.csv", "curves.csv", "report.md", "accuracy_vs_epoch.png",
                "skips_vs_epoch.png", "index.html", "reports")
DECISION_NOTE = (f"the least decided cell type of the final architecture weights (smallest mean top-1 − top-2 op "
                 f"strength per edge, largest normalised entropy); a margin below {UNDECIDED_MARGIN} is "
                 "**undecided**.")
#: what makes a run directory unreadable for the report
READ_ERRORS = (OSError, ValueError, KeyError, TypeError, DnasError)


def arch_text(genotype) -> str:
    """The NB201 arch string, or the compact JSON of a genotype of another space."""
    if genotype.space == "nb201":
        return genotype.arch_str
    return json.dumps(genotype.to_dict(), separators=(",", ":"))


class Entry(Protocol):
    """A line of the grid, as the report reads it (:class:`dnas.grid.Entry`)."""

    @property
    def name(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def setup(self) -> str: ...


class Run(Protocol):
    """One run of the grid, as the report reads it (:class:`dnas.grid.Run`): the search of ``entry``
    with ``seed`` in the run directory ``out``, configured for ``cfg.epochs`` epochs."""

    @property
    def entry(self) -> Entry: ...
    @property
    def seed(self) -> int: ...
    @property
    def out(self) -> Path: ...
    @property
    def cfg(self) -> Any: ...
    @property
    def name(self) -> str: ...
    @property
    def finished(self) -> bool: ...


@dataclass
class Report:
    """What the grid wrote: the summary rows (and their Markdown), the per-run records."""

    rows: list[SummaryRow]
    records: list[RunRecord]
    score_columns: list[str]
    markdown: str
    plots: list[Path] = field(default_factory=list)
    note: str | None = None


class GridReport:
    """The report of the grid ``entries x seeds`` on ``space`` in ``out``.

    ``table``: a NAS-Bench-201 table (nb201 only) whose test-accuracy columns score the derived
    cells; ``echo``: where one-line notes go (default: stderr). Table errors are raised here, so
    the grid stops before anything runs.
    """

    def __init__(self, space: str, entries: Sequence[Entry], seeds: Sequence[int], out: Path, *,
                 overrides: Sequence[str] = (), table: str | Path | None = None,
                 echo: Callable[[str], None] | None = None):
        self.space, self.entries, self.seeds, self.out = space, list(entries), list(seeds), Path(out)
        self.overrides = list(overrides)
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self.table: Table | None = None
        self.table_path: str | None = None
        self.score_columns: list[str] = []
        if table is not None:
            self._load_table(table)

    def _load_table(self, table: str | Path) -> None:
        from dnas.benchmarks import load_table

        if self.space != "nb201":
            raise DnasError(f"benchmark tables hold NAS-Bench-201 cells; --table only applies to --space nb201, "
                            f"not {self.space}")
        loaded = load_table(table)
        self.table, self.table_path = loaded, str(Path(loaded.source).resolve())
        self.score_columns = [c for c in loaded.columns if c.endswith("-test")]
        if not self.score_columns:
            raise DnasError(f"the table {loaded.source} has no test-accuracy columns (names ending in -test), "
                            f"only: {', '.join(loaded.columns)}")

    # ----- reading the runs ---------------------------------------------------------------------------------
    def _scores(self, genotype) -> dict[str, float | None]:
        from dnas.benchmarks import lookup, score

        if self.table is None:
            return {}
        row = lookup(self.table, genotype) or {}
        return {c: score(row.get(c)) for c in self.score_columns}

    def _curve(self, run: Run) -> list[EpochPoint]:
        from dnas.spaces import Genotype

        points = []
        for record in read_metrics(run.out, "epoch"):
            try:
                genotype = Genotype.from_dict(record["genotype"])
                points.append(EpochPoint(epoch=int(record["epoch"]) + 1, seconds=float(record["seconds"]),
                                         skip_connect=int(record["skip_connect"]),
                                         parameter_free=int(record["parameter_free"]), arch=arch_text(genotype),
                                         scores=self._scores(genotype)))
            except (*READ_ERRORS, AttributeError):  # not a record of ours
                continue
        return points

    def read(self, run: Run, status: str | None = None) -> RunRecord:
        """The record of one run from its directory. ``status`` (``failed: <reason>``, ``not finished: ...``)
        is what the grid knows better than the directory: the run is reported with it (and the epochs it
        completed) instead of its results. A run without results is ``not finished``; a directory that
        cannot be read gives a failed record naming why."""
        record = RunRecord(entry=run.entry.name, method=run.entry.method, seed=run.seed)
        try:
            record.curve = self._curve(run)
            if status is not None or not run.finished:
                record.status = status or "not finished"
                return record
            self._read_results(run, record)
        except READ_ERRORS as err:
            reason = str(err) if isinstance(err, DnasError) else f"{type(err).__name__}: {err}"
            record.status = f"failed: {run.out} cannot be read ({reason}); delete it to run it again"
        return record

    def _read_results(self, run: Run, record: RunRecord) -> None:
        from dnas.spaces import Genotype

        results = read_json(run.out / RESULTS, "the run's results")
        genotype = Genotype.from_dict(results["genotype"])
        record.arch = arch_text(genotype)
        record.skip_connect = int(results["skip_connect"])
        record.parameter_free = int(results["parameter_free"])
        record.seconds = float(results["seconds"])
        record.steps, record.arch_steps = int(results["steps"]), int(results["arch_steps"])
        record.epochs = run.cfg.epochs
        record.scores = self._scores(genotype)
        record.margin, record.entropy = read_run(run.out).final_decision

    # ----- the report -------------------------------------------------------------------------------------
    def write(self, runs: Sequence[Run], status: Mapping[str, str] | None = None) -> Report:
        """Read every run directory and write the CSVs, the plots and ``report.md`` into ``out``;
        ``status``: what the grid knows of runs, by run name (see :meth:`read`)."""
        status = status or {}
        records = [self.read(run, status.get(run.name)) for run in runs]
        columns = self.score_columns
        rows = summarize([(e.name, e.setup) for e in self.entries], records, columns)
        self.out.mkdir(parents=True, exist_ok=True)
        write_per_run_csv(self.out / "per_run.csv", records, columns)
        write_summary_csv(self.out / "summary.csv", rows, columns)
        write_curves_csv(self.out / "curves.csv", records, columns)
        plots, note = self._plots(rows, records), None
        if not matplotlib_available():
            note = INSTALL_HINT
            self.echo(note)
        summary = markdown_summary(rows, columns)
        report = Report(rows, records, list(columns), summary, plots, note)
        from dnas.runtime.atomic import atomic_write_text

        atomic_write_text(self.out / "report.md", self._markdown(report, runs))
        write_grid_pages(self.out, [(r.entry.name, str(r.seed), r.out) for r in runs], f"dnas compare: {self.space}")
        return report

    def _plots(self, rows: list[SummaryRow], records: list[RunRecord]) -> list[Path]:
        if not matplotlib_available():
            return []
        written = []
        names = [r.entry for r in rows]
        if self.score_columns:
            panels = [Panel(column, "benchmark accuracy (%)", {n: curve_stats(records, n, column) for n in names},
                            low=0.0, high=100.0) for column in self.score_columns]
            path = self.out / "accuracy_vs_epoch.png"
            plot_panels(path, panels, "NAS-Bench-201 accuracy of the cell derived after each epoch (mean ± std)")
            written.append(path)
        panels = [Panel(title, "count in the derived cell", {n: curve_stats(records, n, key) for n in names}, low=0.0)
                  for title, key in (("skip connections", "skip_connect"), ("parameter-free ops", "parameter_free"))]
        path = self.out / "skips_vs_epoch.png"
        plot_panels(path, panels, "derived cell after each epoch (mean ± std over seeds)")
        written.append(path)
        return written

    def _markdown(self, report: Report, runs: Sequence[Run]) -> str:
        first = runs[0].cfg
        budget = ", ".join(f"{k} {getattr(first, k)}" for k in ("epochs", "batch_size", "channels", "layers",
                                                                  "image_size", "max_images")
                           if getattr(first, k) is not None)
        lines = [f"# dnas compare: {self.space}", ""]
        lines.append(f"Dataset `{first.dataset}`; seeds {', '.join(map(str, self.seeds))}; budget of the first "
                     f"entry: {budget}" + (f"; common overrides: `{' '.join(self.overrides)}`" if self.overrides
                                           else "") + ". Each run's full configuration is in "
                     f"`{RUNS}/<entry>-s<seed>/{CONFIG}`.")
        lines.append("")
        if self.table is not None:
            lines.append(f"Benchmark: `{self.table.source}` (accuracy in percent of the cell derived at the end "
                         "of the search).")
        lines.append("Mean ± sample standard deviation over the seeds; counts are ops of the derived cell; search "
                     "time is the wall-clock time of the run (`results.json`).")
        lines += ["", report.markdown]
        for path in report.plots:
            lines.append(f"![{path.stem.replace('_', ' ')}]({path.name})")
            lines.append("")
        if report.note:
            lines += [report.note, ""]
        by_epoch = [("Skip connections in the derived cell after each epoch (mean over seeds)", "skip_connect", 1)]
        if self.score_columns:
            column = self.score_columns[0]
            by_epoch.append((f"{column} of the derived cell after each epoch (mean over seeds)", column, 2))
        for title, key, digits in by_epoch:
            table = markdown_by_epoch(report.rows, report.records, key, digits)
            if table:
                lines += [f"## {title}", "", table]
        lines += ["## Runs", "", f"Each run's report (cells, op strengths per edge, margin, ...): `reports/<run>/"
                  f"index.html`; all cells side by side: [index.html](index.html). Margin and entropy: "
                  f"{DECISION_NOTE}", "",
                  markdown_per_run(report.records, report.score_columns, link=lambda r: f"reports/{r.entry}-s{r.seed}/"
                                   "index.html")]
        return "\n".join(lines)
