"""A search run: the algorithm of :mod:`dnas.bilevel.step` driven by the runner in a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from dnas.bilevel.problem import BilevelProblem
from dnas.bilevel.recurrent_step import RecurrentSearchStep
from dnas.bilevel.step import SearchStep
from dnas.config.search import SearchConfig
from dnas.data import Images
from dnas.data.text import Corpus
from dnas.errors import DnasError, expect_type
from dnas.runtime.files import GENOTYPE, RESULTS
from dnas.runtime.plugins import load_plugins
from dnas.runtime.runner import Callback, Runner
from dnas.spaces import Genotype, get_space


class Search(Runner[Genotype]):
    """A search run in directory ``out``.

    ``run()`` does everything (resuming from ``out/checkpoint.pt`` when present) and returns the
    genotype; ``results.json`` and ``genotype.json`` are written at the end. For a custom loop::

        search = Search(cfg, out).open()     # lock the directory, build, resume
        while not search.done:
            search.step()                    # one iteration: epoch ends, logging, checkpoints included
        genotype = search.finish()           # results.json, genotype.json; releases the directory

    ``on_step(search, record)`` and ``on_epoch(search, record)`` are called with every logged step
    record and every epoch record (the dicts written to ``metrics.jsonl``). ``data``: the images to
    search on, in memory (:class:`~dnas.data.ImageDataset`) or streamed
    (:class:`~dnas.data.LazyImageDataset`) (on the recurrent space a
    :class:`~dnas.data.text.Corpus`; default: the configuration's ``dataset``, subset and
    resized as it says; the run directory records the configuration, not the images, so a resumed
    run must be given the same ``data``). After ``open()``,
    ``search.algorithm`` is the :class:`~dnas.bilevel.step.SearchStep` (on the recurrent space the
    :class:`~dnas.bilevel.recurrent_step.RecurrentSearchStep`; ``search.problem`` its bilevel problem:
    weights, alphas, activation).
    """

    kind: ClassVar[str] = "search"
    noun: ClassVar[str] = "search"

    def __init__(self, cfg: SearchConfig, out: str | Path, progress: bool = True, *,
                 on_step: Callback | None = None, on_epoch: Callback | None = None,
                 data: Images | Corpus | None = None):
        expect_type("Search's cfg (resolve_config's result)", cfg, SearchConfig)
        expect_type("Search's out", out, str, Path)
        load_plugins(cfg.plugins)  # the names below may be a plugin's (a worker process of a grid imports it here)
        super().__init__(cfg, out, progress=progress, on_step=on_step, on_epoch=on_epoch,
                         own_files={GENOTYPE, RESULTS}, results={GENOTYPE, RESULTS})
        self.cfg: SearchConfig = cfg
        self.data = data

    def build(self) -> SearchStep | RecurrentSearchStep:
        self.algorithm: SearchStep | RecurrentSearchStep
        if get_space(self.cfg.space).family == "rnn":  # a language model on a text corpus
            if self.data is not None and not isinstance(self.data, Corpus):
                raise DnasError(f"the {self.cfg.space} space searches a text corpus, not images")
            self.algorithm = RecurrentSearchStep(self.cfg, corpus=self.data, device=self.device, group=self.group)
        else:
            if isinstance(self.data, Corpus):
                raise DnasError(f"the {self.cfg.space} space searches images, not a text corpus")
            self.algorithm = SearchStep(self.cfg, data=self.data, device=self.device, group=self.group)
        return self.algorithm

    @property
    def description(self) -> str:
        return f"{self.cfg.method} on {self.cfg.space}"

    @property
    def problem(self) -> BilevelProblem:
        return self.algorithm.problem

    def __getattr__(self, name: str) -> Any:
        # reached only for attributes not set yet: the algorithm exists once the search is opened
        if name == "algorithm":
            raise DnasError("the search is built when it is opened: call open() (or run()) first")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def open(self) -> Search:
        """Lock the run directory, build the search and restore its checkpoint if there is one."""
        super().open()
        return self

    def run(self) -> Genotype:
        """Run (or resume) the whole search; write ``genotype.json`` and ``results.json``; returns the cell."""
        self.run_steps()
        return self.finish()

    def outcome(self, files: dict[str, Any]) -> Genotype:
        return Genotype.from_dict(files[GENOTYPE])

    def genotype(self) -> Genotype:
        """The cell derived from the current architecture parameters."""
        return self.algorithm.genotype()
