"""A search run directory as the reports read it, finished or still running.

``dnas search`` writes ``config.yaml`` and ``env.json`` first, appends to ``metrics.jsonl`` a step
record every ``log_every`` steps and an epoch record (derived cell, op strengths, skip counts,
entropy and margin, optional benchmark row and Hessian eigenvalue) after every epoch, and writes
``results.json`` at the end. :func:`read_run` takes whatever is there: a half-written last line
(a process killed mid-write) is skipped, and a run without ``results.json`` is reported as far
as its epoch records go.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from dnas.components.activations import ACTIVATIONS
from dnas.diagnostics.convergence import convergence, least_decided
from dnas.errors import DnasError
from dnas.runtime.files import CONFIG, ENV, METRICS, RESULTS, read_metrics
from dnas.runtime.plugins import load_plugins, plugin_names
from dnas.runtime.reading import read_json, read_yaml
from dnas.spaces import SPACES, Genotype, SearchSpace, get_space


@dataclass
class RunHistory:
    """Everything a search run directory holds, parsed."""

    path: Path
    config: dict[str, Any]
    env: dict[str, Any]
    epochs: list[dict[str, Any]]  # epoch records, in order
    steps: list[dict[str, Any]]  # step records, in order
    results: dict[str, Any] | None  # results.json, once the search has finished

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def finished(self) -> bool:
        return self.results is not None

    @property
    def planned_epochs(self) -> int:
        return int(self.config.get("epochs") or 0)

    @cached_property
    def space(self) -> SearchSpace:
        return get_space(self.config["space"])

    @property
    def last(self) -> dict[str, Any] | None:
        """``results.json`` when finished, else the latest epoch record (None before the first epoch)."""
        if self.results is not None:
            return self.results
        return self.epochs[-1] if self.epochs else None

    @property
    def genotype(self) -> Genotype | None:
        """The final cell, or the cell derived after the latest epoch."""
        last = self.last
        return None if last is None else Genotype.from_dict(last["genotype"])

    @property
    def status(self) -> str:
        if self.finished:
            return f"finished ({len(self.epochs)} epochs)"
        return f"{len(self.epochs)} of {self.planned_epochs} epochs done"

    def decision(self, record: dict[str, Any]) -> dict[str, dict[str, float | None]]:
        """``{"entropy": {...}, "margin": {...}}`` of an epoch record or ``results.json``; computed
        from its strengths for runs written before these fields were logged."""
        if "margin" in record and "entropy" in record:
            return {"entropy": record["entropy"], "margin": record["margin"]}
        from dnas.components import ACTIVATIONS

        activation = ACTIVATIONS.get(self.config["activation"]["name"])
        return convergence(self.space, record["strengths"], activation.allows_none)

    @property
    def final_decision(self) -> tuple[float | None, float | None]:
        """The smallest margin and the largest entropy over the cell types, at the latest record."""
        last = self.last
        return (None, None) if last is None else least_decided(self.decision(last))

    def benchmark_columns(self) -> list[str]:
        """The accuracy columns of the benchmark rows logged per epoch (NB201 with a table)."""
        columns: dict[str, None] = {}
        for record in self.epochs:
            for key, value in (record.get("benchmark") or {}).items():
                if key != "arch" and isinstance(value, (int, float)):
                    columns[key] = None
        return list(columns)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = read_json(path, "the run file")
    except DnasError:
        return None
    return data if isinstance(data, dict) else None


def is_run(path: str | Path) -> bool:
    path = Path(path)
    return (path / CONFIG).is_file() and (path / METRICS).exists()


def read_run(path: str | Path, cells_only: bool = False) -> RunHistory:
    """Parse the run directory ``path`` (see the module docstring); ``cells_only``: only the derived cells
    are needed (``dnas draw``), not the strengths and decisions the reports show."""
    path = Path(path)
    if not path.is_dir():
        raise DnasError(f"{path} is not a directory; give the run directory of a search (its --out)")
    if not is_run(path) and (path / "runs").is_dir() and (path / "index.html").is_file():
        raise DnasError(f"{path} is a dnas compare folder: open its index.html, or give its runs/<entry>-s<seed> "
                        "folders to dnas report")
    if not is_run(path):
        raise DnasError(f"{path} is not a search run directory (it has no config.yaml and metrics.jsonl); give the "
                        "--out of a `dnas search`")
    config = read_yaml(path / CONFIG, "the run's configuration") or {}
    if isinstance(config, dict):
        load_plugins(plugin_names(config.get("plugins")))  # the run's space and components may be a plugin's
    activation = config.get("activation") if isinstance(config, dict) else None
    if not isinstance(config, dict) or config.get("space") not in SPACES.names() or not (
            cells_only or isinstance(activation, dict) and activation.get("name") in ACTIVATIONS.names()):
        raise DnasError(f"{path / CONFIG} is not the configuration of a dnas search")
    space = get_space(config["space"])
    records = read_metrics(path)
    epochs = [r for r in records if r.get("kind") == "epoch"]
    usable = [r for r in epochs if _usable(r, space, cells_only)]
    if epochs and not usable:
        raise DnasError(f"no epoch record of {path / METRICS} fits the {space.name} space of its config.yaml; was the "
                        "configuration edited, or the records?")
    results = _json(path / RESULTS)
    return RunHistory(path=path, config=config, env=_json(path / ENV) or {}, epochs=usable,
                      steps=[r for r in records if r.get("kind") == "step" and isinstance(r.get("step"), int)],
                      results=results if results is not None and _usable(results, space, cells_only) else None)


def _usable(record: dict[str, Any], space: SearchSpace, cells_only: bool = False) -> bool:
    """Whether an epoch record (or ``results.json``) holds what the report reads, for ``space``: a valid
    genotype of it and one strength per op of every edge, or its margin and entropy per cell type (a
    record that does not is skipped, as a line half-written by a killed process is)."""
    try:
        if Genotype.from_dict(record["genotype"]).space != space.name:
            return False
        if cells_only:
            return True
        if "strengths" not in record:  # a record that carries its decision needs no strengths
            return all(isinstance(record[key], dict) and set(space.cells) <= set(record[key])
                       for key in ("margin", "entropy"))
        strengths = record["strengths"]
        for cell_type, topo in space.cells.items():
            rows = strengths[cell_type]
            if len(rows) != topo.num_edges or any(
                    len(row) != topo.ops_per_edge or not all(isinstance(v, int | float) for v in row) for row in rows):
                return False
    except (DnasError, KeyError, TypeError, ValueError):
        return False
    return True


def run_signature(path: str | Path) -> tuple:
    """Changes whenever the search writes something a report shows (for ``--watch``)."""
    path = Path(path)
    out: list[tuple[int, int] | None] = []  # None: the file is not there (yet)
    for name in (METRICS, RESULTS):
        try:
            stat = (path / name).stat()
            out.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            out.append(None)
    return tuple(out)
