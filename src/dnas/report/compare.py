"""The comparison grid of ``dnas compare``: every entry x every seed, one resumable search each.

An **entry** is a method preset, optionally with component overrides (a combination of methods):

    --methods darts,pr-darts                entries named after the presets, no overrides
    --entry NAME:METHOD[:key=value,...]     e.g. prl:pr-darts:weight_regularizers=lambda,estimator=amended

In the ``key=value`` list of ``--entry`` a comma-separated item without ``=`` continues the
previous value, so list slots work as on the command line of ``dnas search``:
``prx:darts:arch_regularizers=pr-darts,prox`` sets ``arch_regularizers=pr-darts,prox``.

The configuration of run (entry ``e``, seed ``s``) is resolved as for ``dnas search``::

    defaults < preset of e.method < flags (space, seed s, dataset, epochs, batch size, ...)
             < common key=value overrides < e's own overrides

so ``--epochs``/``--batch-size`` replace the presets' own budgets and every entry gets the same one.
For ``nb201`` with a table, ``benchmark_table`` is set, so each run's ``metrics.jsonl`` already logs
the benchmark row of every epoch's cell; the report looks the cells up again itself (from the
genotypes in the run directories), so it does not depend on that.

Layout of ``OUT``: ``runs/<entry>-s<seed>/`` (ordinary ``dnas search`` run directories),
``report.md``, ``summary.csv``, ``per_run.csv``, ``curves.csv``, the HTML pages ``index.html``
(every entry x seed cell side by side) and ``reports/<entry>-s<seed>/index.html`` (each run's
report, :mod:`dnas.report.html`) and, with matplotlib, ``accuracy_vs_epoch.png`` and
``skips_vs_epoch.png``. Running the same command again reuses
every finished run (``results.json`` present, same configuration), resumes interrupted ones from
their checkpoints, and rewrites the report. A run whose loss becomes non-finite is reported as
failed and left out of the means (it is tried again, from its last checkpoint, on the next call).

Runs go seed by seed (every entry with seed 0, then seed 1, ...), so a stopped grid leaves whole
seeds. ``jobs > 1`` runs that many searches at once in worker processes (``spawn``), each with
``threads`` torch threads (default 1). On a small CPU budget this beats one search with several
threads: the tensors are too small for intra-op parallelism to pay (see ``bench/compare_protocol.sh``).
A script that calls ``Compare(..., jobs=2).run()`` needs the usual ``if __name__ == "__main__":``
guard of multiprocessing. Ctrl-C or SIGTERM stops the grid cleanly: the running searches
checkpoint, and the next call resumes them.

API::

    from dnas.report import Compare, parse_entry, parse_methods
    entries = [*parse_methods("darts,pr-darts"), parse_entry("prl:pr-darts:weight_regularizers=lambda")]
    report = Compare("nb201", entries, [0, 1, 2], "runs/cmp", flags={"dataset": "digits", "epochs": 10},
                     overrides=["channels=8"], table="mini-bench-arch-cell-accs.csv").run()
    print(report.markdown)                  # the summary table; report.records: one RunRecord per run
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dnas.config import SearchConfig
from dnas.convergence import UNDECIDED_MARGIN
from dnas.errors import DnasError, NonFiniteLossError
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

#: the presets ``dnas compare`` runs when ``--methods`` is not given
DEFAULT_METHODS = ("darts", "pr-darts", "lambda-darts", "darts-prime", "amended-darts")
#: keys the grid sets itself; overrides may not change them
GRID_KEYS = ("space", "method", "seed")
ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
#: flags passed to ``resolve_config`` for every run (None: not given)
FLAG_KEYS = ("dataset", "data_root", "download", "epochs", "batch_size", "device")
RUNS = "runs"
DECISION_NOTE = (f"the least decided cell type of the final architecture weights (smallest mean top-1 − top-2 op "
                 f"strength per edge, largest normalised entropy); a margin below {UNDECIDED_MARGIN} is "
                 "**undecided**.")


# ----- entries and seeds --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One line of the comparison: a method preset plus ``key=value`` overrides."""

    name: str
    method: str
    overrides: tuple[str, ...] = ()

    @property
    def setup(self) -> str:
        return self.method + (" + " + " ".join(self.overrides) if self.overrides else "")


def _check_overrides(items: Sequence[str], where: str) -> None:
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise DnasError(f"{where}: {item!r} is not of the form key=value")
        if key.strip() in GRID_KEYS:
            raise DnasError(f"{where}: {key.strip()} is set by the grid (--space, --methods/--entry, --seeds), "
                            f"not by a key=value override")


def _check_method(name: str) -> None:
    from dnas.methods import METHODS

    METHODS.get(name)  # DnasError naming the known methods


def _check_name(name: str, text: str) -> None:
    if not ENTRY_NAME.fullmatch(name):
        raise DnasError(f"entry name {name!r} in {text!r} must start with a letter or digit and use only letters, "
                        "digits and _ . + -")


def parse_entry(text: str) -> Entry:
    """``NAME:METHOD[:key=value,key=value,...]`` (see the module docstring for the comma rule)."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
        raise DnasError(f"--entry {text!r} is not of the form NAME:METHOD[:key=value,...], "
                        "e.g. prl:pr-darts:weight_regularizers=lambda,estimator=amended")
    name, method = parts[0].strip(), parts[1].strip()
    _check_name(name, text)
    _check_method(method)
    overrides: list[str] = []
    for item in (parts[2].split(",") if len(parts) == 3 else []):
        item = item.strip()
        if not item:
            continue
        if "=" not in item and overrides:
            overrides[-1] += "," + item  # a list-slot value: arch_regularizers=pr-darts,prox
        else:
            overrides.append(item)
    _check_overrides(overrides, f"--entry {text!r}")
    return Entry(name, method, tuple(overrides))


def parse_methods(text: str) -> list[Entry]:
    """``darts,pr-darts,...``: one entry per preset, named after it (an empty string: none)."""
    entries = []
    for name in (n.strip() for n in text.split(",")):
        if name:
            _check_method(name)
            entries.append(Entry(name, name))
    return entries


def parse_seeds(text: str) -> list[int]:
    """``0,1,2``: distinct non-negative integers."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise DnasError(f"--seeds takes comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise DnasError(f"--seeds takes distinct non-negative integers such as 0,1,2, got {text!r}")
    return seeds


# ----- the runs -------------------------------------------------------------------------------------------
@dataclass
class Run:
    entry: Entry
    seed: int
    cfg: SearchConfig
    out: Path

    @property
    def name(self) -> str:
        return f"{self.entry.name}-s{self.seed}"

    @property
    def finished(self) -> bool:
        return (self.out / "results.json").is_file()


def execute(cfg: SearchConfig, out: str | Path, progress: bool = False) -> None:
    """One search of the grid (in this process or a worker): run or resume it, write its results."""
    from dnas.search_loop import Search

    Search(cfg, out, progress=progress).run()


def _init_worker(threads: int) -> None:
    """Worker processes: ``threads`` torch threads; SIGINT is handled by the running search only
    (it saves a checkpoint and stops), an idle worker ignores it."""
    import torch

    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _terminate(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def _normalized(cfg: SearchConfig) -> dict[str, Any]:
    return yaml.safe_load(cfg.to_yaml())


def arch_text(genotype) -> str:
    """The NB201 arch string, or the compact JSON of a genotype of another space."""
    if genotype.space == "nb201":
        return genotype.arch_str
    return json.dumps(genotype.to_dict(), separators=(",", ":"))


@dataclass
class Report:
    """What :meth:`Compare.run` wrote: the summary rows (and their Markdown), the per-run records."""

    rows: list[SummaryRow]
    records: list[RunRecord]
    score_columns: list[str]
    markdown: str
    plots: list[Path] = field(default_factory=list)
    note: str | None = None


class Compare:
    """The grid ``entries x seeds`` on one space, in ``out``. Every configuration is resolved (and
    every user error raised) by the constructor, before anything runs.

    ``flags``: the keys of :data:`FLAG_KEYS` (None values ignored); ``overrides``: ``key=value``
    strings for every run; ``table``: a NAS-Bench-201 table (nb201 only); ``echo``: where the
    one-line progress messages go (default: stderr).
    """

    def __init__(self, space: str, entries: Sequence[Entry], seeds: Sequence[int], out: str | Path, *,
                 flags: dict[str, Any] | None = None, overrides: Sequence[str] = (), table: str | Path | None = None,
                 jobs: int = 1, threads: int | None = None, progress: bool = True,
                 echo: Callable[[str], None] | None = None):
        from dnas.spaces import get_space

        self.space = get_space(space).name
        self.entries = list(entries)
        self.seeds = list(seeds)
        self.out = Path(out)
        self.flags = {k: v for k, v in (flags or {}).items() if v is not None}
        self.overrides = list(overrides)
        self.jobs, self.threads, self.progress = jobs, threads, progress
        self.echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        unknown = sorted(set(self.flags) - set(FLAG_KEYS))
        if unknown:
            raise DnasError(f"unknown compare flag(s) {', '.join(unknown)}; use key=value overrides instead")
        if not self.entries:
            raise DnasError("nothing to compare: give presets with --methods and/or combinations with --entry")
        names = [e.name for e in self.entries]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise DnasError(f"entry name(s) {', '.join(twice)} given twice; every entry needs its own name")
        if not self.seeds:
            raise DnasError("give at least one seed with --seeds")
        if jobs < 1 or (threads is not None and threads < 1):
            raise DnasError(f"--jobs and --threads must be at least 1, got {jobs} and {threads}")
        if self.out.exists() and not self.out.is_dir():
            raise DnasError(f"--out {self.out} is a file; give a directory")
        _check_overrides(self.overrides, "common overrides")
        self.table = None
        self.score_columns: list[str] = []
        if table is not None:
            self._load_table(table)
        if isinstance(self.flags.get("dataset"), str) and Path(self.flags["dataset"]).exists():
            self.flags["dataset"] = str(Path(self.flags["dataset"]).resolve())  # the same run from any folder
        self.runs = [self._plan(entry, seed) for seed in self.seeds for entry in self.entries]

    def _load_table(self, table: str | Path) -> None:
        from dnas.benchmarks import load_table

        if self.space != "nb201":
            raise DnasError(f"benchmark tables hold NAS-Bench-201 cells; --table only applies to --space nb201, "
                            f"not {self.space}")
        self.table = load_table(table)
        self.table_path = str(Path(self.table.source).resolve())
        self.score_columns = [c for c in self.table.columns if c.endswith("-test")]
        if not self.score_columns:
            raise DnasError(f"the table {self.table.source} has no test-accuracy columns (names ending in -test), "
                            f"only: {', '.join(self.table.columns)}")

    def _plan(self, entry: Entry, seed: int) -> Run:
        from dnas.resolve import resolve_config
        from dnas.search_loop import RESUME_FREE_KEYS

        flags = {"space": self.space, "method": entry.method, "seed": seed, **self.flags}
        if self.table is not None:
            flags["benchmark_table"] = self.table_path
        cfg = resolve_config(flags, [*self.overrides, *entry.overrides])
        run = Run(entry, seed, cfg, self.out / RUNS / f"{entry.name}-s{seed}")
        saved_file = run.out / "config.yaml"
        if saved_file.is_file():
            saved = yaml.safe_load(saved_file.read_text()) or {}
            # the table only feeds the per-epoch log: a run made with another table (or none) is reused
            cfg.benchmark_table = saved.get("benchmark_table")
            current = _normalized(cfg)
            differ = sorted(k for k in set(saved) | set(current)
                            if k not in RESUME_FREE_KEYS and saved.get(k) != current.get(k))
            if differ:
                raise DnasError(f"{run.out} holds a run with a different configuration ({', '.join(differ)}); give "
                                "the same settings to reuse it, choose another --out, or delete that run directory")
        return run

    # ----- running ----------------------------------------------------------------------------------------
    def run(self) -> Report:
        """Run (or resume) every unfinished run, then write and return the report."""
        todo = [r for r in self.runs if not r.finished]
        done = len(self.runs) - len(todo)
        if done:
            self.echo(f"dnas compare: {done} of {len(self.runs)} runs finished earlier, reused")
        self.failures: dict[str, str] = {}
        if todo and self.jobs > 1:
            self._run_pool(todo, done)
        else:
            self._run_here(todo, done)
        return self.write_report()

    def _announce(self, index: int, run: Run) -> None:
        if run.name in self.failures:
            self.echo(f"[{index}/{len(self.runs)}] {run.name}: failed: {self.failures[run.name]}")
            return
        results = json.loads((run.out / "results.json").read_text())
        from dnas.spaces import Genotype

        cell = arch_text(Genotype.from_dict(results["genotype"]))
        self.echo(f"[{index}/{len(self.runs)}] {run.name}: {cell}  ({results['skip_connect']} skip, "
                  f"{results['seconds']:.0f} s)")

    def _run_here(self, todo: list[Run], done: int) -> None:
        import torch

        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            for i, run in enumerate(todo, start=done + 1):
                try:
                    execute(run.cfg, run.out, progress=self.progress)
                except NonFiniteLossError as err:
                    self.failures[run.name] = str(err)
                self._announce(i, run)
        finally:
            torch.set_num_threads(before)

    def _run_pool(self, todo: list[Run], done: int) -> None:
        import multiprocessing

        from dnas.data import load_dataset

        for dataset in {(r.cfg.dataset, r.cfg.data_root, r.cfg.download) for r in todo}:
            load_dataset(dataset[0], split="train", download=dataset[2], root=dataset[1])  # decode/cache once
        self.echo(f"dnas compare: {len(todo)} runs, {self.jobs} at a time, {self.threads or 1} thread(s) each")
        pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.threads or 1,))
        futures: dict[Future, Run] = {pool.submit(execute, r.cfg, str(r.out)): r for r in todo}
        index = done
        try:  # SIGTERM stops the grid like Ctrl-C: the running searches checkpoint first
            previous = signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread
            previous = None
        try:
            pending = set(futures)
            while pending:
                # a bounded wait: the main thread wakes up to run signal handlers (Ctrl-C, SIGTERM)
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: todo.index(futures[f])):
                    run = futures[future]
                    try:
                        future.result()
                    except NonFiniteLossError as err:
                        self.failures[run.name] = str(err)
                    index += 1
                    self._announce(index, run)
        except KeyboardInterrupt:
            self._stop(pool)
            raise DnasError(f"interrupted; finished runs are kept in {self.out / RUNS} and unfinished ones resume "
                            "from their checkpoints: run the same command again") from None
        except BaseException:
            self._stop(pool)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        pool.shutdown(wait=True)

    @staticmethod
    def _stop(pool: ProcessPoolExecutor) -> None:
        """Drop the queued runs and ask the running searches to checkpoint and stop (SIGINT), again
        every half second until every worker has exited: a worker that is still starting up ignores
        the signal until its search has installed its handler."""
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        while any(p.is_alive() for p in processes):
            for process in processes:
                if process.is_alive():
                    with contextlib.suppress(OSError):  # exited meanwhile
                        os.kill(process.pid, signal.SIGINT)
            time.sleep(0.5)
        pool.shutdown(wait=True)

    # ----- reading the runs ---------------------------------------------------------------------------------
    def _scores(self, genotype) -> dict[str, float | None]:
        from dnas.benchmarks import lookup

        if self.table is None:
            return {}
        row = lookup(self.table, genotype)
        return {c: (None if row is None or row.get(c) is None else float(row[c])) for c in self.score_columns}

    def _curve(self, run: Run) -> list[EpochPoint]:
        from dnas.spaces import Genotype

        path = run.out / "metrics.jsonl"
        points = []
        for line in (path.read_text().splitlines() if path.is_file() else []):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the last line of a killed process
                continue
            if record.get("kind") != "epoch":
                continue
            genotype = Genotype.from_dict(record["genotype"])
            points.append(EpochPoint(epoch=int(record["epoch"]) + 1, seconds=float(record["seconds"]),
                                     skip_connect=int(record["skip_connect"]),
                                     parameter_free=int(record["parameter_free"]), arch=arch_text(genotype),
                                     scores=self._scores(genotype)))
        return points

    def read(self, run: Run) -> RunRecord:
        """The record of one run from its directory (failed or unfinished: status and partial curve)."""
        from dnas.spaces import Genotype

        record = RunRecord(entry=run.entry.name, method=run.entry.method, seed=run.seed, curve=self._curve(run))
        if not run.finished:
            record.status = f"failed: {self.failures[run.name]}" if run.name in self.failures else "not finished"
            return record
        results = json.loads((run.out / "results.json").read_text())
        genotype = Genotype.from_dict(results["genotype"])
        record.arch = arch_text(genotype)
        record.skip_connect = int(results["skip_connect"])
        record.parameter_free = int(results["parameter_free"])
        record.seconds = float(results["seconds"])
        record.steps, record.arch_steps = int(results["steps"]), int(results["arch_steps"])
        record.epochs = run.cfg.epochs
        record.scores = self._scores(genotype)
        record.margin, record.entropy = read_run(run.out).final_decision
        return record

    # ----- the report -------------------------------------------------------------------------------------
    def write_report(self) -> Report:
        """Read every run directory and write the CSVs, the plots and ``report.md`` into ``out``."""
        if not hasattr(self, "failures"):
            self.failures = {}
        records = [self.read(run) for run in self.runs]
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
        from dnas.runs import atomic_write_text

        atomic_write_text(self.out / "report.md", self._markdown(report))
        write_grid_pages(self.out, [(r.entry.name, str(r.seed), r.out) for r in self.runs],
                         f"dnas compare: {self.space}")
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

    def _markdown(self, report: Report) -> str:
        first = self.runs[0].cfg
        budget = ", ".join(f"{k} {getattr(first, k)}" for k in ("epochs", "batch_size", "channels", "layers",
                                                                  "image_size", "max_images")
                           if getattr(first, k) is not None)
        lines = [f"# dnas compare: {self.space}", ""]
        lines.append(f"Dataset `{first.dataset}`; seeds {', '.join(map(str, self.seeds))}; budget of the first "
                     f"entry: {budget}" + (f"; common overrides: `{' '.join(self.overrides)}`" if self.overrides
                                           else "") + ". Each run's full configuration is in "
                     f"`{RUNS}/<entry>-s<seed>/config.yaml`.")
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
