"""The comparison grid of ``dnas compare``: every entry x every seed, one resumable search each.

The configuration of run (entry ``e``, seed ``s``) is resolved as for ``dnas search``::

    defaults < preset of e.method < flags (space, seed s, dataset, epochs, batch size, ...)
             < common key=value overrides < e's own overrides

so ``--epochs``/``--batch-size`` replace the presets' own budgets and every entry gets the same one.
For ``nb201`` with a table, ``benchmark_table`` is set, so each run's ``metrics.jsonl`` already logs
the benchmark row of every epoch's cell; the report looks the cells up again itself (from the
genotypes in the run directories), so it does not depend on that.

Layout of ``OUT``: ``compare.yaml`` (the grid's own description: ``dnas compare --config
OUT/compare.yaml`` replays it), ``runs/<entry>-s<seed>/`` (ordinary ``dnas search`` run
directories), ``slurm/`` (job files of the Slurm executor) and the report
(:mod:`dnas.report.compare`). Running the same grid again reuses every finished run
(``results.json`` present, same configuration: :func:`dnas.runtime.rundir.config_differences`), resumes
interrupted ones from their checkpoints, and rewrites the report.

**Failures do not stop the grid.** A run that cannot be resumed (corrupt checkpoint, a directory
holding other files, a non-finite loss, a crash) or read is reported as failed with its reason;
the other runs go on, and the failed one is tried again on the next call. A changed configuration
of an existing run stops the grid before anything runs (give the same settings, or another OUT).

**Executors**: ``jobs=1``: one run after the other in this process; ``jobs > 1``: that many worker
processes (:mod:`dnas.grid.local`), ``threads`` torch threads each (default 1; on a small CPU budget
this beats one search with several threads, see ``bench/compare_protocol.sh``); ``slurm=``: one
Slurm job per run (:mod:`dnas.grid.slurm`). Runs go seed by seed (every entry with seed 0, then
seed 1, ...), so a stopped grid leaves whole seeds. A script that uses ``jobs > 1`` needs the usual
``if __name__ == "__main__":`` guard of multiprocessing.

API::

    from dnas.grid import Compare, parse_entry, parse_methods
    entries = [*parse_methods("darts,pr-darts"), parse_entry("prl:pr-darts:weight_regularizers=lambda")]
    report = Compare("nb201", entries, [0, 1, 2], "runs/cmp", flags={"dataset": "digits", "epochs": 10},
                     overrides=["channels=8"], table="mini-bench-arch-cell-accs.csv").run()
    print(report.markdown)                  # the summary table; report.records: one RunRecord per run
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from dnas.config.base import load_config_file
from dnas.config.search import SearchConfig
from dnas.errors import DnasError
from dnas.grid.entries import Entry, check_overrides, check_seeds
from dnas.grid.run import Run
from dnas.grid.slurm import SlurmExecutor, SlurmOptions
from dnas.report.compare import GRID_OUTPUTS, RUNS, GridReport, Report
from dnas.runtime.files import CONFIG
from dnas.runtime.ownership import OutputFolder
from dnas.runtime.reading import read_yaml, shorten
from dnas.runtime.resources import MAX_THREADS, check_threads

#: flags passed to ``resolve_config`` for every run (None: not given); ``plugins``: the modules every run imports
FLAG_KEYS = ("dataset", "data_root", "download", "epochs", "batch_size", "device", "plugins")
#: the grid's description in OUT
DESCRIPTION = "compare.yaml"
#: the keys of a description, in the order it is written
DESCRIPTION_KEYS = ("space", "entries", "seeds", *FLAG_KEYS, "overrides", "table", "threads")


class Compare:
    """The grid ``entries x seeds`` on one space, in ``out``. Every configuration is resolved (and
    every user error raised) by the constructor, before anything runs.

    ``flags``: the keys of :data:`FLAG_KEYS` (None values ignored); ``overrides``: ``key=value``
    strings for every run; ``table``: a NAS-Bench-201 table (nb201 only); ``jobs``: runs at once
    (default 1 here; with ``slurm``, the job array's limit, default none); ``threads``: torch
    threads per run; ``slurm``: run each run as a Slurm job with these resources, and ``wait`` for
    them (or return at once); ``echo``: where the one-line progress messages go (default: stderr).
    """

    def __init__(self, space: str, entries: Sequence[Entry], seeds: Sequence[int], out: str | Path, *,
                 flags: dict[str, Any] | None = None, overrides: Sequence[str] = (), table: str | Path | None = None,
                 jobs: int | None = None, threads: int | None = None, slurm: SlurmOptions | None = None,
                 wait: bool = True, progress: bool = True, echo: Callable[[str], None] | None = None):
        from dnas.runtime.plugins import load_plugins
        from dnas.spaces import get_space

        if flags and flags.get("plugins") is not None:  # before the space's name is looked up
            flags = {**flags, "plugins": load_plugins(flags["plugins"]) or None}
        self.space = get_space(space).name
        self.entries = list(entries)
        self.seeds = list(seeds)
        self.out = Path(out)
        self.flags = {k: v for k, v in (flags or {}).items() if v is not None}
        self.overrides = list(overrides)
        self.jobs, self.threads, self.progress, self.wait = jobs, threads, progress, wait
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
        check_seeds(self.seeds, ",".join(map(str, self.seeds)))
        if (jobs is not None and jobs < 1) or (threads is not None and threads < 1):
            raise DnasError(f"--jobs and --threads must be at least 1, got {jobs} and {threads}")
        if threads is not None:
            check_threads(threads)
        most = MAX_THREADS if slurm is not None else max(64, 4 * (os.cpu_count() or 1))
        if jobs is not None and jobs > most:
            raise DnasError(f"--jobs {shorten(jobs, 20)} is more runs at once than "
                            f"{'a Slurm array takes' if slurm is not None else 'this machine can hold'}; "
                            f"give at most {most}")
        self.folder = OutputFolder(self.out, "comparison", legacy=_is_grid_folder)
        self.folder.check([DESCRIPTION, *GRID_OUTPUTS])
        check_overrides(self.overrides, "common overrides")
        self.report = GridReport(self.space, self.entries, self.seeds, self.out, overrides=self.overrides,
                                 table=table, echo=self.echo)
        if isinstance(self.flags.get("dataset"), str) and Path(self.flags["dataset"]).exists():
            self.flags["dataset"] = str(Path(self.flags["dataset"]).resolve())  # the same run from any folder
        #: runs whose directory cannot be used, with the reason (found while planning; they are not run)
        self.unusable: dict[str, str] = {}
        self.runs = [self._plan(entry, seed) for seed in self.seeds for entry in self.entries]
        self.slurm = None if slurm is None else SlurmExecutor(slurm, self.out / "slurm", jobs, threads, self.echo)
        #: what this call knows of runs beyond their directories (``failed: ...``, ``not finished: ...``)
        self.status: dict[str, str] = {}
        self._ended = 0  # runs reported so far, for the [i/N] lines

    def _plan(self, entry: Entry, seed: int) -> Run:
        from dnas.bilevel.run import Search
        from dnas.config.resolve import resolve_config
        from dnas.runtime.rundir import config_differences

        flags = {"space": self.space, "method": entry.method, "seed": seed, **self.flags}
        if self.report.table_path is not None:
            flags["benchmark_table"] = self.report.table_path
        cfg = resolve_config(flags, [*self.overrides, *entry.overrides])
        run = Run(entry, seed, cfg, self.out / RUNS / f"{entry.name}-s{seed}")
        saved_file = run.out / CONFIG
        if not saved_file.is_file():
            return run
        try:
            saved = read_yaml(saved_file, "the run's configuration")
            if not isinstance(saved, dict):
                raise DnasError(f"{saved_file} does not hold a configuration")
        except DnasError as err:
            self.unusable[run.name] = (f"{err}, so the run cannot be checked against this grid; delete {run.out} "
                                       "to run it again")
            return run
        # the table only feeds the per-epoch log: a run made with another table (or none) is reused
        cfg.benchmark_table = saved.get("benchmark_table")
        defaults = {**SearchConfig.comparison_defaults(), **_normalized(SearchConfig())}
        differ = config_differences(SearchConfig.comparable(saved), _normalized(cfg), Search.resume_free, defaults)
        if differ:
            raise DnasError(f"{run.out} holds a run with a different configuration ({', '.join(differ)}); give "
                            "the same settings to reuse it, choose another --out, or delete that run directory")
        return run

    # ----- the description file ----------------------------------------------------------------------------
    def description(self) -> dict[str, Any]:
        """What ``OUT/compare.yaml`` holds: everything that defines the grid (not how it is executed)."""
        return {"space": self.space, "entries": [e.to_dict() for e in self.entries], "seeds": list(self.seeds),
                **{k: self.flags.get(k) for k in FLAG_KEYS}, "overrides": list(self.overrides),
                "table": self.report.table_path, "threads": self.threads}

    # ----- running ----------------------------------------------------------------------------------------
    def run(self) -> Report:
        """Write ``compare.yaml``, run (or resume) every unfinished run, then write and return the report."""
        from dnas.runtime.atomic import atomic_write_text

        self.folder.reserve([DESCRIPTION, *GRID_OUTPUTS])
        atomic_write_text(self.out / DESCRIPTION, yaml.safe_dump(self.description(), sort_keys=False))
        self.status = {}
        todo = [r for r in self.runs if not r.finished and r.name not in self.unusable]
        reused = len(self.runs) - len(todo) - len(self.unusable)
        if reused:
            self.echo(f"dnas compare: {reused} of {len(self.runs)} runs finished earlier, reused")
        self._ended = reused
        for run in self.runs:
            if run.name in self.unusable:
                self._done(run, self.unusable[run.name])
        if self.slurm is not None:
            self.status.update(self.slurm.run(todo, self._done, self.wait))
        elif todo:
            self._load_data(todo)
            if (self.jobs or 1) > 1:
                from dnas.grid.local import run_workers

                self.echo(f"dnas compare: {len(todo)} runs, {self.jobs} at a time, {self.threads or 1} thread(s) "
                          "each")
                run_workers(todo, self.jobs or 1, self.threads or 1, self._done)
            else:
                from dnas.grid.local import run_here

                run_here(todo, self.threads, self.progress, self._done)
        return self.write_report()

    @staticmethod
    def _load_data(runs: Sequence[Run]) -> None:
        """Load every dataset once before the runs: a missing one stops the grid with one sentence (not
        every run with the same one), and image folders held in memory are decoded and cached once."""
        from dnas.data import load_dataset

        for dataset, root, download, mode in sorted({(r.cfg.dataset, r.cfg.data_root, r.cfg.download, r.cfg.data_mode)
                                                     for r in runs}, key=str):
            load_dataset(dataset, split="train", download=download, root=root, mode=mode)

    def _done(self, run: Run, reason: str | None) -> None:
        """An executor's report that ``run`` ended: note a failure and say how it went."""
        if reason is not None:
            self.status[run.name] = f"failed: {reason}"
        self._ended += 1
        record = self.report.read(run, self.status.get(run.name))
        how = (f"{record.arch}  ({record.skip_connect} skip, {record.seconds:.0f} s)" if record.ok
               else record.status)
        self.echo(f"[{self._ended}/{len(self.runs)}] {run.name}: {how}")

    def write_report(self) -> Report:
        """Read every run directory and write the report into ``out``."""
        return self.report.write(self.runs, self.status)


def _normalized(cfg: SearchConfig) -> dict[str, Any]:
    return yaml.safe_load(cfg.to_yaml())


def load_description(path: str | Path) -> dict[str, Any]:
    """The settings of a ``compare.yaml`` (``OUT/compare.yaml``, ``OUT`` itself, or a hand-written file
    with some of its keys), checked: ``entries`` as :class:`Entry` objects, ``flags`` gathered."""
    path = Path(path)
    if path.is_dir():
        path = path / DESCRIPTION
    data = load_config_file(path)
    unknown = sorted(set(data) - set(DESCRIPTION_KEYS))
    if unknown:
        raise DnasError(f"unknown key(s) {', '.join(map(str, unknown))} in {path}; a compare file holds "
                        f"{', '.join(DESCRIPTION_KEYS)}")
    for key, kind in (("space", str), ("table", str), ("threads", int)):
        if data.get(key) is not None and (isinstance(data[key], bool) or not isinstance(data[key], kind)):
            raise DnasError(f"{key} in {path} must be a {'number' if kind is int else 'name or path'}, "
                            f"got {data[key]!r}")
    settings: dict[str, Any] = {k: data[k] for k in ("space", "table", "threads") if k in data}
    if "entries" in data:
        if not isinstance(data["entries"], list):
            raise DnasError(f"entries in {path} must be a list of {{name, method, overrides}} mappings")
        settings["entries"] = [Entry.from_dict(e, str(path)) for e in data["entries"]]
    if "seeds" in data:
        seeds = data["seeds"] if isinstance(data["seeds"], list) else [data["seeds"]]
        check_seeds(seeds, f"{data['seeds']!r} in {path}")
        settings["seeds"] = seeds
    if "overrides" in data:
        overrides = data["overrides"] or []
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise DnasError(f"overrides in {path} must be a list of key=value strings")
        settings["overrides"] = overrides
    settings["flags"] = {k: data[k] for k in FLAG_KEYS if data.get(k) is not None}
    return settings


def _is_grid_folder(folder: Path) -> bool:
    """A grid folder of a dnas that kept no list of its files: its compare.yaml describes a grid."""
    try:
        data = read_yaml(folder / DESCRIPTION, "the grid's description")
    except DnasError:
        return False
    return isinstance(data, dict) and "space" in data and isinstance(data.get("entries"), list)
