"""The ``dnas`` command line: ``dnas search | spaces | methods``.

User errors (:class:`~dnas.errors.DnasError`) print one sentence and exit with status 2; no
traceback, no file overwritten.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dnas import cli_compare, cli_eval, cli_report
from dnas.errors import DnasError

SEARCH_EPILOG = """\
overrides (key=value, applied after the method preset):
  epochs=10 channels=8 layers=3 w_lr=0.05 a_lr=6e-4 train_portion=0.5 image_size=16 max_images=5000
  activation=softmax  estimator=first-order  schedule=every-k schedule.k=5
  arch_regularizers=NAME[,NAME]  weight_regularizers=NAME  arch_regularizers.NAME.PARAM=VALUE
Run `dnas methods` for the presets and the components each slot accepts.
"""


def _search_parser(sub) -> None:
    p = sub.add_parser("search", help="search a cell (with no options: a one-minute demo on the embedded digits)",
                       epilog=SEARCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", help="search space (see `dnas spaces`; default nb201)")
    p.add_argument("--method", help="method preset (see `dnas methods`; default darts)")
    p.add_argument("--dataset", help="digits (default, embedded), cifar10, cifar100, or a path: an image folder, a "
                   ".zip of one, a CIFAR python folder, a folder of MNIST-style IDX files, a .csv[.gz]")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value")


def cmd_search(args: argparse.Namespace) -> int:
    from dnas.config import load_config_file
    from dnas.resolve import resolve_config
    from dnas.search_loop import Search

    flags = {k: getattr(args, k) for k in ("space", "method", "dataset", "data_root", "download", "epochs",
                                             "batch_size", "seed", "device")}
    demo = all(v is None for v in flags.values()) and not args.overrides and args.config is None
    if demo:
        flags.update(DEMO)
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
    return 0


#: what `dnas search` with no options runs: a short search on the embedded dataset
DEMO = {"space": "nb201", "method": "darts", "dataset": "digits", "epochs": 10, "batch_size": 32,
        "channels": 8, "layers": 3}


def set_threads(threads: int | None) -> None:
    """``--threads N``: the number of torch threads of this process (None: torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise DnasError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def cmd_spaces(args: argparse.Namespace) -> int:
    from dnas.spaces import list_spaces

    for space in list_spaces():
        print(f"{space.name:6s} {space.description}")
        for cell_type, topo in space.cells.items():
            print(f"       {cell_type}: {topo.num_edges} edges, ops: {', '.join(topo.op_names)}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from dnas import methods

    if args.show:
        print(methods.describe(args.show, args.space))
    else:
        print(methods.listing())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dnas", description="Differentiable NAS that does not collapse.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    cli_eval.add_subcommands(sub)
    cli_compare.add_subcommands(sub)
    cli_report.add_subcommands(sub)
    sub.add_parser("spaces", help="list the search spaces")
    p = sub.add_parser("methods", help="list the methods and components (--show NAME: one resolved preset)")
    p.add_argument("--show", metavar="NAME", help="print the preset NAME: its changes from darts, the implementation "
                   "of each slot and the fully resolved configuration")
    p.add_argument("--space", default="nb201", help="the search space the preset is resolved for (default nb201)")
    return parser


def _version() -> str:
    import dnas

    return f"dnas {dnas.__version__}"


COMMANDS = {"search": cmd_search, "spaces": cmd_spaces, "methods": cmd_methods, **cli_eval.HANDLERS,
            **cli_compare.HANDLERS, **cli_report.HANDLERS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DnasError as err:
        print(f"dnas: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dnas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dnas methods | head`: the reader left; say nothing more
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - python flushes stdout at exit
        sys.stdout = sys.stderr
        return 0


if __name__ == "__main__":
    sys.exit(main())
