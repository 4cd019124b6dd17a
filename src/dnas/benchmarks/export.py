"""``dnas bench export``: the official NAS-Bench-201 / NATS-Bench files as one compact table.

The benchmark files (NAS-Bench-201 ``.pth``, up to tens of GB, or NATS-Bench ``NATS-tss-*``
archives) are read only through their official API packages, ``nats_bench`` (``pip install
nats_bench``) or ``nas_201_api`` (``pip install nas-bench-201``). The export is one pass over
the 15,625 cells: each cell is queried, its row written to the output at once, and the API's
per-cell data released again (NATS-Bench is opened in ``fast_mode``, which loads one cell's
archive at a time), so memory stays at one cell's worth whatever the size of the benchmark.

Columns (accuracies in percent, mean over the benchmark's seeds: ``is_random=False``), named as
in the 12-epoch mini-bench so that both kinds of table read the same:

* ``cifar10-test``: ``get_more_info(i, 'cifar10')['test-accuracy']`` (trained on train+valid,
  CIFAR-10 test set); ``cifar10-val``: ``get_more_info(i, 'cifar10-valid')['valid-accuracy']``
  (trained on the train half, valid half);
* ``cifar100-test`` / ``cifar100-val``: ``get_more_info(i, 'cifar100')`` ``test-accuracy`` /
  ``valid-accuracy`` (the x-test / x-valid halves of the test set); ``imagenet-test`` /
  ``imagenet-val`` likewise for ``'ImageNet16-120'``;
* ``params-mb`` / ``flops-m``: ``get_cost_info(i, 'cifar10')`` ``params`` / ``flops`` (millions).

Every call passes ``hp`` (``'200'`` by default: the full 200-epoch schedule; ``'12'`` gives the
low-fidelity numbers of the mini-bench), so the API must be ``nas_201_api`` >= 1.1 or ``nats_bench``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dnas.benchmarks.table import write_records
from dnas.errors import DnasError

ACCURACY_COLUMNS: dict[str, tuple[str, str]] = {
    "cifar10-test": ("cifar10", "test-accuracy"),
    "cifar10-val": ("cifar10-valid", "valid-accuracy"),
    "cifar100-test": ("cifar100", "test-accuracy"),
    "cifar100-val": ("cifar100", "valid-accuracy"),
    "imagenet-test": ("ImageNet16-120", "test-accuracy"),
    "imagenet-val": ("ImageNet16-120", "valid-accuracy"),
}
COST_COLUMNS: dict[str, str] = {"params-mb": "params", "flops-m": "flops"}
HEADER = ["index", "arch_str", *ACCURACY_COLUMNS, *COST_COLUMNS]
APIS = ("nats_bench", "nas_201_api")
INSTALL = {"nats_bench": "pip install nats_bench", "nas_201_api": "pip install nas-bench-201"}


def open_api(source: str | Path, api: str = "auto") -> Any:
    """Open a benchmark file or folder with the official API (``nats_bench`` or ``nas_201_api``).

    ``auto`` prefers ``nas_201_api`` for a ``NAS-Bench-201*`` file and ``nats_bench`` otherwise,
    and falls back to whichever of the two is installed.
    """
    source = Path(source)
    if not source.exists():
        raise DnasError(f"benchmark file {str(source)!r} does not exist; give the NAS-Bench-201 .pth file or the "
                        "NATS-Bench NATS-tss-* file or folder")
    if api == "auto":
        order = list(APIS[::-1]) if source.name.startswith("NAS-Bench-201") else list(APIS)
    elif api in APIS:
        order = [api]
    else:
        raise DnasError(f"unknown benchmark API {api!r}; use auto, nats_bench or nas_201_api")
    for name in order:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        try:
            if name == "nats_bench":
                return module.create(str(source), "tss", fast_mode=True, verbose=False)
            return module.NASBench201API(str(source), verbose=False)
        except Exception as err:  # noqa: BLE001 - the API raises assorted errors for files it cannot read
            raise DnasError(f"{name} cannot open {source} ({type(err).__name__}: {err}); is it a benchmark "
                            "file of the topology search space?") from None
    wanted = " or ".join(f"`{INSTALL[n]}`" for n in order)
    raise DnasError(f"exporting {source} needs the official benchmark API package, which is not installed: {wanted}")


def _arch(api: Any, index: int) -> str:
    return api.arch(index) if hasattr(api, "arch") else api[index]


def _release(api: Any, index: int) -> None:
    """Drop what the API cached for cell ``index`` (its weights, and in fast mode its results)."""
    if hasattr(api, "clear_params"):
        api.clear_params(index, None)
    cache = getattr(api, "arch2infos_dict", None)
    if getattr(api, "fast_mode", False) and isinstance(cache, dict):
        cache.pop(index, None)


def _value(x: Any) -> float | str:
    return "" if x is None else round(float(x), 6)


def rows(api: Any, hp: str = "200", limit: int | None = None) -> Iterator[list[Any]]:
    """The table rows, one cell at a time, in the benchmark's index order."""
    total = len(api) if limit is None else min(limit, len(api))
    for index in range(total):
        infos: dict[str, dict[str, Any]] = {}
        row: list[Any] = [index, _arch(api, index)]
        for dataset, key in ACCURACY_COLUMNS.values():
            if dataset not in infos:
                try:
                    infos[dataset] = api.get_more_info(index, dataset, hp=hp, is_random=False)
                except TypeError:
                    raise DnasError("this version of the benchmark API has no hp= argument; install nas_201_api "
                                    ">= 1.1 (`pip install -U nas-bench-201`) or nats_bench") from None
            row.append(_value(infos[dataset].get(key)))
        cost = api.get_cost_info(index, "cifar10", hp=hp)
        row.extend(_value(cost.get(key)) for key in COST_COLUMNS.values())
        _release(api, index)
        yield row


def export_table(api: Any, out: str | Path, hp: str = "200", limit: int | None = None,
                 progress: Callable[[int], object] | None = None) -> int:
    """Write the table of ``api`` to ``out`` (``.csv``, or ``.parquet`` with pyarrow); returns the row count."""
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise DnasError(f"the output table {out} must end in .csv or .parquet")

    def counted() -> Iterator[list[Any]]:
        for i, row in enumerate(rows(api, hp, limit)):
            if progress is not None:
                progress(i + 1)
            yield row

    return write_records(out, HEADER, counted())
