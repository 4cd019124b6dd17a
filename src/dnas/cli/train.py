"""``dnas train``, ``dnas query`` and ``dnas bench export``: parsing and printing.

``add_subcommands(sub)`` adds them to the main parser's subparsers; :data:`HANDLERS` maps each
command name to its handler ``(args) -> exit status``. Heavy modules (torch) are imported inside
the handlers so that ``dnas --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from dnas.benchmarks.table import TABLE_ENV
from dnas.cli.parser import Parser
from dnas.config.base import load_config_file
from dnas.errors import DnasError
from dnas.runtime.threads import set_threads

TRAIN_EPILOG = """\
GENOTYPE is the genotype.json a search wrote (or its run folder), a published cell (DARTS_V1,
DARTS_V2, PRDARTS, PC_DARTS, PDARTS; recurrent: DARTS_V1_RNN, DARTS_V2_RNN, ENAS_RNN) or an NB201
arch string in quotes.

presets (--preset; the default follows the genotype): darts-cifar (20 cells, C=36, 600 epochs,
auxiliary 0.4, drop-path 0.2, cutout 16), darts-imagenet (14 cells, C=48, ImageNet stem, 224x224
crops; --dataset a folder with train/ and val/ image folders streams it), nb201 (C=16, N=5, 200
epochs, lr 0.1 nesterov cosine, wd 5e-4, batch 256), darts-ptb (recurrent cells: 850
units, 8000 epochs, batch 64, SGD lr 20 then NT-ASGD, wd 8e-7, clip 0.25; --dataset a text corpus folder).

overrides (key=value, applied last):
  epochs=10 channels=16 layers=8 batch_size=64 lr=0.05 weight_decay=5e-4 auxiliary=false
  drop_path_prob=0 cutout=0 image_size=16 max_images=5000 max_test_images=2000 grad_clip=0
  lr_schedule=cosine|cosine-step|exponential label_smoothing=0.1 stem=imagenet eval_every=5
  data_mode=auto|memory|stream test_crop=0.875
Running again with the same --out resumes the run from its last checkpoint.
"""


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="darts-cifar, darts-imagenet, nb201 or darts-ptb (default: by the genotype's "
                   "space)")
    p.add_argument("--dataset", help="digits, cifar10, cifar100 or a path (as for `dnas search`); default: the "
                   "search's dataset for a genotype.json of a search, else cifar10")
    p.add_argument("--test-dataset", dest="test_dataset", help="the test images, when --dataset is an image "
                   "folder or zip without a test split")
    p.add_argument("--data-root", dest="data_root", help="where named datasets live / are downloaded")
    p.add_argument("--download", action="store_true", default=None, help="download a named dataset if absent")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--channels", type=int, help="initial channels C")
    p.add_argument("--layers", type=int, help="cells (DARTS family) or cells per stage (NB201)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu (default), cuda, cuda:N")
    p.add_argument("--out", help="run directory; the same --out resumes (default runs/train-NAME-sSEED)")
    p.add_argument("--config", help="a YAML config file: a training run's own config.yaml (or its folder) replays "
                   "that run; GENOTYPE, options and key=value items override it")
    p.add_argument("--threads", type=int, help="torch threads (default torch's; a run resumes only with the "
                   "thread count it started with)")
    p.add_argument("--workers", type=int, help="processes decoding streamed images (default: one fewer than the "
                   "cores, at most 4; the results do not depend on it)")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bar")


TRAIN_FLAGS = ("preset", "dataset", "test_dataset", "data_root", "download", "epochs", "batch_size", "channels",
               "layers", "seed", "device", "workers")


def _train_rest(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """Merge the options given before GENOTYPE with those (and the key=value items) after it."""
    parser = Parser(prog="dnas train GENOTYPE", add_help=False)
    _train_options(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    later = parser.parse_intermixed_args(args.rest)
    for key in (*TRAIN_FLAGS, "out", "quiet", "config", "threads"):
        if getattr(later, key) is not None:
            setattr(args, key, getattr(later, key))
    return {k: getattr(args, k) for k in TRAIN_FLAGS}, later.overrides


def add_subcommands(sub) -> None:
    """Add ``train``, ``query`` and ``bench`` to the ``dnas`` subparsers."""
    p = sub.add_parser("train", help="train a derived cell from scratch (genotype.json, published name or NB201 "
                       "arch string)", usage="dnas train GENOTYPE [options] [key=value ...]", epilog=TRAIN_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("genotype", metavar="GENOTYPE", nargs="?",
                   help="the cell (may be left out with --config: the file's cell)")
    _train_options(p)
    # options and key=value items after GENOTYPE, in any order (re-parsed by cmd_train)
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    q = sub.add_parser("query", help="look a cell up in a benchmark table (NAS-Bench-201)")
    q.add_argument("arch", metavar="ARCH", help="an NB201 arch string, a genotype.json or a search run folder")
    q.add_argument("--benchmark", default="nb201", help="the benchmark (only nb201)")
    q.add_argument("--table", help=f"a .csv/.parquet table or a folder holding one (default ${TABLE_ENV})")
    q.add_argument("--json", action="store_true", help="print the row as JSON")

    b = sub.add_parser("bench", help="benchmark tables: `dnas bench export`")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    e = bsub.add_parser("export", help="convert official NAS-Bench-201 / NATS-Bench files into a compact table "
                        "(needs nats_bench or nas_201_api installed)")
    e.add_argument("source", metavar="BENCHMARK", help="NAS-Bench-201-v1_*.pth, or a NATS-tss-* file or folder")
    e.add_argument("--out", required=True, help="the table to write (.csv, or .parquet with pyarrow)")
    e.add_argument("--api", default="auto", help="auto (default), nats_bench or nas_201_api")
    e.add_argument("--hp", default="200", help="training schedule of the numbers: 200 (default) or 12 epochs")
    e.add_argument("--limit", type=int, help="export only the first N cells")
    e.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_train(args: argparse.Namespace) -> int:
    from dnas.config.train import resolve_train_config
    from dnas.retrain.run import Trainer

    flags, overrides = _train_rest(args)
    if args.genotype is not None and "=" in args.genotype and not Path(args.genotype).exists():
        overrides.insert(0, args.genotype)  # `dnas train --config F epochs=3`: no GENOTYPE, a key=value
        args.genotype = None
    set_threads(args.threads)
    base = load_config_file(args.config) if args.config else None
    cfg, resolved = resolve_train_config(args.genotype, flags, overrides, base)
    out = Path(args.out or f"runs/train-{resolved.label}-s{cfg.seed}")
    trainer = Trainer(cfg, resolved.genotype, out, progress=not args.quiet).open()  # refusals come before the banner
    if not args.quiet:
        print(f"dnas train: {resolved.label}, preset {cfg.preset}, dataset {cfg.dataset}, {cfg.epochs} epochs, "
              f"run directory {out}", file=sys.stderr)
    result = trainer.run()
    assert result is not None  # only stop_after (tests) returns early
    if "test_ppl" in result:  # a language model
        print(f"valid perplexity {result['valid_ppl']:.2f}, test perplexity {result['test_ppl']:.2f}, "
              f"{result['params'] / 1e6:.3f}M parameters; result in {out / 'result.json'}")
        return 0
    print(f"test accuracy {100 * result['test_acc']:.2f}% ({result['test_images']} images), "
          f"{result['params'] / 1e6:.3f}M parameters, {result['multiply_adds'] / 1e6:.1f}M multiply-adds; "
          f"result in {out / 'result.json'}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from dnas.benchmarks import canonical_arch, format_row, load_table
    from dnas.spaces.published import resolve_genotype

    if args.benchmark != "nb201":
        raise DnasError(f"unknown benchmark {args.benchmark!r}; only nb201 (NAS-Bench-201) tables are supported")
    table_path = args.table or os.environ.get(TABLE_ENV)
    if not table_path:
        raise DnasError(f"give the benchmark table with --table PATH (or set ${TABLE_ENV}); "
                        "`dnas bench export` writes one from the official benchmark files")
    arch = canonical_arch(resolve_genotype(args.arch).genotype)
    table = load_table(table_path)
    row = table.get(arch)
    if args.json:
        print(json.dumps(None if row is None else {"arch_str": arch, **row}))
    else:
        print(format_row(arch, row, table.source), end="")
    return 0 if row is not None else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from dnas.benchmarks.export import export_table, open_api

    api = open_api(args.source, args.api)
    total = len(api) if args.limit is None else min(args.limit, len(api))
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="cell", file=sys.stderr, mininterval=1.0, desc="export")
    try:
        count = export_table(api, args.out, hp=str(args.hp), limit=args.limit,
                             progress=(lambda _: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {count} cells to {args.out}")
    return 0


HANDLERS = {"train": cmd_train, "query": cmd_query, "bench": cmd_bench}
