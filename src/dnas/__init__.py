"""dnas: differentiable neural architecture search that does not collapse.

The Python API (imported on first use, so that ``import dnas`` stays light)::

    import dnas
    found = dnas.search(space="nb201", method="lambda-darts", dataset="digits", epochs=5)
    found.genotype, found.metrics, found.run_dir
    dnas.train(found.genotype_file, dataset="digits", epochs=2)
    dnas.query("|nor_conv_3x3~0|+|...", table="table.csv")
    dnas.compare("nb201", ["darts", "pr-darts"], seeds=[0, 1], dataset="digits", epochs=5)

Lower level: :class:`Search` (a search run: ``open``/``step``/``finish``, ``on_step``/``on_epoch``
callbacks), :class:`SearchStep` (the search algorithm alone, one ``iterate`` at a time, no files),
:func:`resolve_config`, :class:`Trainer` and :class:`TrainStep` (the same for retraining),
:class:`Genotype`, :class:`Compare`.

Extending dnas from a module of your own (``docs/extending.md``): :func:`register_op` (a candidate
op), :func:`register_space` (a :class:`SearchSpace` of :class:`CellTopology` cells), the slots'
registries in :mod:`dnas.components` (``@ARCH_REGULARIZERS.register("name")`` and the like), and
:func:`load_plugins` (what ``dnas --plugin MODULE`` and ``plugins=[...]`` do).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "search": "dnas.api", "train": "dnas.api", "query": "dnas.api", "compare": "dnas.api",
    "SearchResult": "dnas.api", "TrainResult": "dnas.api", "read_metrics": "dnas.runtime.files",
    "Search": "dnas.bilevel.run", "SearchStep": "dnas.bilevel.step", "resolve_config": "dnas.config.resolve",
    "SearchConfig": "dnas.config.search", "Trainer": "dnas.retrain.run", "TrainStep": "dnas.retrain.step",
    "resolve_train_config": "dnas.config.train", "Genotype": "dnas.spaces",
    "Compare": "dnas.grid", "DnasError": "dnas.errors",
    "register_op": "dnas.extend", "register_space": "dnas.extend", "SearchSpace": "dnas.spaces",
    "CellTopology": "dnas.spaces", "load_plugins": "dnas.runtime.plugins",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dnas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
