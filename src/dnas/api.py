"""The Python API: what the ``dnas`` commands do, as functions returning their results.

    import dnas
    found = dnas.search(space="nb201", method="pr-darts", dataset="digits", epochs=5, channels=8)
    print(found.genotype.describe(), found.run_dir)
    trained = dnas.train(found.genotype_file, dataset="digits", epochs=2, channels=8, layers=2)
    print(trained.result["test_acc"])

Keyword settings are the keys of ``dnas search --help`` / ``dnas train --help`` (top-level config
fields); dotted keys (component hyper-parameters) go in ``overrides={"estimator.eta": 0.2}``.
``out=None`` runs in a new temporary directory (its path is in the result); an existing run
directory resumes exactly as on the command line. For a custom loop use :class:`dnas.Search`
directly (``open()``, ``step()``, ``finish()``; ``on_step``/``on_epoch`` callbacks).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnas.config.base import load_config_file
from dnas.errors import DnasError, expect_type
from dnas.runtime.files import GENOTYPE, RESULTS, read_metrics
from dnas.runtime.reading import read_json
from dnas.runtime.threads import set_threads
from dnas.spaces import Genotype

if TYPE_CHECKING:
    from dnas.grid import SlurmOptions


@dataclass
class SearchResult:
    """A finished search: the derived cell, ``results.json``, the metric records and the run directory."""

    genotype: Genotype
    results: dict[str, Any]
    metrics: list[dict[str, Any]]
    run_dir: Path
    config: Any  # dnas.config.SearchConfig

    @property
    def genotype_file(self) -> Path:
        return self.run_dir / GENOTYPE

    @property
    def epochs(self) -> list[dict[str, Any]]:
        """The epoch records (derived cell, strengths, counts, benchmark rows) in order."""
        return [r for r in self.metrics if r.get("kind") == "epoch"]


@dataclass
class TrainResult:
    """A finished training run: ``result.json`` (test accuracy, parameters, multiply-adds), metrics, directory."""

    result: dict[str, Any]
    metrics: list[dict[str, Any]]
    run_dir: Path
    config: Any  # dnas.config.train.TrainConfig


def _items(settings: Mapping[str, Any], overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``key=value`` strings of the keyword settings and the overrides (values as YAML scalars)."""
    import yaml

    expect_type("overrides", overrides, Mapping, list, tuple, type(None))
    if isinstance(overrides, list | tuple) and not all(isinstance(o, str) for o in overrides):
        raise DnasError("overrides takes key=value strings or a mapping of keys to values")

    def text(value: Any) -> str:
        if isinstance(value, str):
            return value
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()

    items = [f"{k}={text(v)}" for k, v in settings.items() if v is not None]
    if isinstance(overrides, Mapping):
        items += [f"{k}={text(v)}" for k, v in overrides.items()]
    elif overrides is not None:
        items += list(overrides)
    return items


def _run_dir(out: str | Path | None, prefix: str) -> Path:
    expect_type("out", out, str, Path, type(None))
    return Path(tempfile.mkdtemp(prefix=prefix)) if out is None else Path(out)


def _config_file(config: str | Path | Mapping[str, Any] | None) -> dict[str, Any] | None:
    expect_type("config", config, str, Path, Mapping, type(None))
    if config is None or isinstance(config, Mapping):
        return dict(config) if config is not None else None
    return load_config_file(config)


def search(space: str | None = None, method: str | None = None, dataset: str | None = None, *,
           out: str | Path | None = None, config: str | Path | Mapping[str, Any] | None = None,
           overrides: Mapping[str, Any] | Sequence[str] | None = None, threads: int | None = None,
           progress: bool = False, on_step=None, on_epoch=None, **settings: Any) -> SearchResult:
    """Run (or resume) a search and return its result.

    ``space``/``method``/``dataset`` and ``settings`` (``epochs=5, channels=8, a_lr=1e-3, ...``)
    resolve like ``dnas search`` (defaults < preset < ``config`` < settings < ``overrides``);
    ``config`` is a config file (a run's own ``config.yaml`` replays it) or a mapping of keys.
    """
    from dnas.bilevel.run import Search
    from dnas.config.resolve import resolve_config

    for name, value in (("space", space), ("method", method), ("dataset", dataset)):
        expect_type(name, value, str, type(None))
    expect_type("threads", threads, int, type(None))
    set_threads(threads)
    flags = {"space": space, "method": method, "dataset": dataset}
    cfg = resolve_config(flags, _items(settings, overrides), _config_file(config))
    run_dir = _run_dir(out, "dnas-search-")
    searcher = Search(cfg, run_dir, progress=progress, on_step=on_step, on_epoch=on_epoch)
    genotype = searcher.run()
    return SearchResult(genotype, read_json(run_dir / RESULTS, "the run's results"), read_metrics(run_dir),
                        run_dir, cfg)


def train(genotype: str | Path | Genotype | None = None, *, out: str | Path | None = None,
          config: str | Path | Mapping[str, Any] | None = None,
          overrides: Mapping[str, Any] | Sequence[str] | None = None, threads: int | None = None,
          progress: bool = False, **settings: Any) -> TrainResult:
    """Train a cell from scratch (or resume) and return the result.

    ``genotype``: a ``genotype.json`` (or its search run folder), a published name (``"DARTS_V2"``),
    an NB201 arch string, or a :class:`Genotype`; ``settings`` are ``dnas train`` keys
    (``dataset=..., epochs=..., channels=...``).
    """
    from dnas.config.train import resolve_train_config
    from dnas.retrain.run import Trainer

    expect_type("genotype", genotype, str, Path, Genotype, type(None))
    expect_type("threads", threads, int, type(None))
    set_threads(threads)
    run_dir = _run_dir(out, "dnas-train-")
    if isinstance(genotype, Genotype):  # through a file, as the command line takes it
        cell_file = Path(tempfile.mkdtemp(prefix="dnas-cell-")) / GENOTYPE
        genotype.save(cell_file)
        genotype = cell_file
    cfg, resolved = resolve_train_config(None if genotype is None else str(genotype), None,
                                         _items(settings, overrides), _config_file(config))
    result = Trainer(cfg, resolved.genotype, run_dir, progress=progress).run()
    if result is None:  # only Trainer.run(stop_after=...) returns early
        raise DnasError(f"the training run in {run_dir} stopped before its end")
    return TrainResult(result, read_metrics(run_dir), run_dir, cfg)


def query(genotype: str | Path | Genotype, table: str | Path) -> dict[str, Any] | None:
    """The NAS-Bench-201 row of a cell (``{"cifar10-test": 93.1, ...}``), or None if the table lacks it."""
    from dnas.benchmarks import canonical_arch, load_table
    from dnas.spaces.published import resolve_genotype

    expect_type("genotype", genotype, str, Path, Genotype)
    expect_type("table", table, str, Path)
    cell = genotype if isinstance(genotype, Genotype) else resolve_genotype(str(genotype)).genotype
    return load_table(table).get(canonical_arch(cell))


def compare(space: str = "nb201", methods: Sequence[str] | str = ("darts", "pr-darts"),
            seeds: Sequence[int] = (0, 1, 2), out: str | Path | None = None, *, entries: Sequence[str] = (),
            table: str | Path | None = None, jobs: int | None = None, threads: int | None = None,
            slurm: SlurmOptions | None = None, wait: bool = True, progress: bool = False,
            overrides: Mapping[str, Any] | Sequence[str] | None = None, **flags: Any):
    """Run (or resume) a method x seed grid and return its report (:class:`dnas.report.Report`).

    ``entries``: combinations as ``"NAME:METHOD:key=value,..."``; ``flags``: dataset, epochs,
    batch_size, ... as for ``dnas compare``; ``slurm``: a :class:`dnas.grid.SlurmOptions` to run each
    run as a Slurm job (``wait=False``: submit and return). Scripts that use ``jobs > 1`` need the
    ``if __name__ == "__main__":`` guard of multiprocessing.
    """
    from dnas.grid import Compare, parse_entry, parse_methods

    expect_type("space", space, str)
    expect_type("methods", methods, str, list, tuple)
    expect_type("seeds", seeds, list, tuple, range)
    expect_type("entries", entries, list, tuple)
    names = methods if isinstance(methods, str) else ",".join(methods)
    grid = [*parse_methods(names), *(parse_entry(e) for e in entries)]
    folder = _run_dir(out, "dnas-compare-")
    return Compare(space, grid, list(seeds), folder, flags=flags, overrides=_items({}, overrides), table=table,
                   jobs=jobs, threads=threads, slurm=slurm, wait=wait, progress=progress,
                   echo=(lambda line: None) if not progress else None).run()
