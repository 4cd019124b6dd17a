"""``dnas search``, ``dnas spaces`` and ``dnas methods``: parsing and printing.

Modules that import torch are imported in the handlers, so that ``dnas --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dnas.bilevel.methods import METHODS
from dnas.config.base import load_config_file
from dnas.config.search import LIST_SLOTS
from dnas.runtime.threads import set_threads
from dnas.spaces import list_spaces

SEARCH_EPILOG = """\
overrides (key=value, applied after the method preset):
  epochs=10 channels=8 layers=3 w_lr=0.05 a_lr=6e-4 train_portion=0.5 image_size=16 max_images=5000
  data_mode=auto|memory|stream  nb201_splits=PATH  train_fraction=0.1 val_fraction=0.025 (PC-DARTS subset)
  activation=softmax  estimator=first-order  schedule=every-k schedule.k=5
  arch_regularizers=NAME[,NAME]  weight_regularizers=NAME  arch_regularizers.NAME.PARAM=VALUE
Run `dnas methods` for the presets and the components each slot accepts.
"""


def _search_parser(sub) -> None:
    p = sub.add_parser("search", help="search a cell (with no options: a one-minute demo on the embedded digits)",
                       epilog=SEARCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", help="search space (see `dnas spaces`; default nb201)")
    p.add_argument("--method", help="method preset (see `dnas methods`; default darts)")
    p.add_argument("--dataset", help="digits (default, embedded), cifar10, cifar100, imagenet16-120, or a path: an "
                   "image folder, a .zip of one, WebDataset .tar shards, a CIFAR python folder, an ImageNet16 folder, "
                   "a folder of MNIST-style IDX files, a .csv[.gz]")
    p.add_argument("--data-root", dest="data_root", help="where named datasets live / are downloaded")
    p.add_argument("--download", action="store_true", default=None, help="download a named dataset if absent")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu (default), cuda, cuda:N")
    p.add_argument("--out", help="run directory; running again with the same --out resumes "
                   "(default runs/SPACE-METHOD-sSEED)")
    p.add_argument("--config", help="a YAML config file: a run's own config.yaml (or its folder) replays that run; "
                   "options and key=value items override it")
    p.add_argument("--threads", type=int, help="torch threads (default torch's; a run resumes only with the "
                   "thread count it started with)")
    p.add_argument("--workers", type=int, help="processes decoding streamed images (default: one fewer than the "
                   "cores, at most 4; the results do not depend on it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value")


def cmd_search(args: argparse.Namespace) -> int:
    from dnas.bilevel.run import Search
    from dnas.config.resolve import resolve_config

    flags = {k: getattr(args, k) for k in ("space", "method", "dataset", "data_root", "download", "epochs",
                                             "batch_size", "seed", "device", "workers")}
    demo = all(v is None for v in flags.values()) and not args.overrides and args.config is None
    if demo:
        flags.update(DEMO)
    flags["plugins"] = getattr(args, "plugins", None)  # recorded in the run's config.yaml
    set_threads(args.threads)
    base = load_config_file(args.config) if args.config else None
    cfg = resolve_config(flags, args.overrides, base)
    out = Path(args.out or f"runs/{cfg.space}-{cfg.method}-s{cfg.seed}{'-demo' if demo else ''}")
    search = Search(cfg, out, progress=not args.quiet)
    if demo:
        print(f"dnas demo: {cfg.method} on the {cfg.space} space, embedded digits dataset, {cfg.epochs} epochs "
              f"(run `dnas search --help` for real searches)", file=sys.stderr)
    genotype = search.run()
    print(genotype.describe())
    print(f"skip connections: {genotype.count('skip_connect')}, parameter-free ops: "
          f"{genotype.count_parameter_free()}; run directory: {out}")
    results = search.run_dir.read_json("results.json") if search.group.main else {}  # rank 0 writes it
    if results.get("benchmark_column"):
        shown = "not in the table" if results["benchmark_score"] is None else f"{results['benchmark_score']:.2f}"
        print(f"{results['benchmark_column']} of the cell (the column of the searched dataset): {shown}")
    return 0


#: what `dnas search` with no options runs: a short search on the embedded dataset
DEMO = {"space": "nb201", "method": "darts", "dataset": "digits", "epochs": 10, "batch_size": 32,
        "channels": 8, "layers": 3}


def cmd_spaces(args: argparse.Namespace) -> int:
    for space in list_spaces():
        print(f"{space.name:6s} {space.description}")
        for cell_type, topo in space.cells.items():
            print(f"       {cell_type}: {topo.num_edges} edges, ops: {', '.join(topo.op_names)}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    print(describe(args.show, args.space or "nb201") if args.show else listing(args.space))
    return 0



def add_subcommands(sub) -> None:
    """Add ``search``, ``spaces`` and ``methods`` to the ``dnas`` subparsers."""
    _search_parser(sub)
    sub.add_parser("spaces", help="list the search spaces")
    p = sub.add_parser("methods", help="list the methods and components (--show NAME: one resolved preset)")
    p.add_argument("--show", metavar="NAME", help="print the preset NAME: its changes from darts, the implementation "
                   "of each slot and the fully resolved configuration")
    p.add_argument("--space", help="with --show: the search space the preset is resolved for (default nb201); "
                   "alone: list only the methods available on that space")


def _text(value: Any) -> str:
    """A value as a ``key=value`` override writes it (YAML scalars: true, false, null)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def _where(factory: Any) -> str:
    return f"{factory.__module__}.{factory.__qualname__}"


def listing(space: str | None = None) -> str:
    """Every method (on ``space``: those available there) with its summary and reference, then every
    component of every slot with the module and qualified name of its implementation."""
    from dnas.components import SLOTS

    lines = []
    for name in METHODS.names():
        method = METHODS.get(name)
        if space is not None and not method.supports(space):
            continue
        lines += [f"{name:14s} {method.summary}", f"{'':14s} {method.reference}"]
    lines.append("\ncomponents (combine with key=value overrides), and where each is defined:")
    for slot, registry in SLOTS.items():
        lines.append(f"  {slot}")
        lines += [f"    {name:16s} {_where(registry.get(name))}" for name in registry.names()]
    lines.append("\n`dnas methods --show NAME [--space SPACE]`: a preset's changes and its resolved configuration.")
    return "\n".join(lines)


def describe(name: str, space: str) -> str:
    """A preset on ``space``: its changes from ``darts``, the implementation of each slot, and the
    fully resolved configuration (every hyper-parameter, defaults included) as YAML."""
    from dnas.components import SLOTS
    from dnas.config.resolve import resolve_config

    method = METHODS.get(name)
    cfg = resolve_config({"method": name, "space": space})
    lines = [f"{name} on {cfg.space}: {method.summary}", f"  {method.reference}", "", "changes from darts:"]
    changes = method.changes(cfg.space)
    lines += [f"  {key}={_text(value)}" for key, value in changes.items()] or ["  (none: this is the base)"]
    lines += ["", "implementations:"]
    for slot, registry in SLOTS.items():
        chosen = getattr(cfg, slot)
        for comp in (chosen if slot in LIST_SLOTS else [chosen]):
            lines.append(f"  {slot:20s} {comp.name:16s} {_where(registry.get(comp.name))}")
    lines += ["", "resolved configuration:", cfg.to_yaml().rstrip()]
    return "\n".join(lines)


HANDLERS = {"search": cmd_search, "spaces": cmd_spaces, "methods": cmd_methods}
