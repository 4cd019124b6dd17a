"""The ``dnas compare`` command: every method x seed as its own resumable search, then a report.

``add_subcommands(sub)`` adds it to the main parser's subparsers; :data:`HANDLERS` maps the command
name to its handler ``(args) -> exit status``. The grid itself is :class:`dnas.report.Compare`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dnas.cli_eval import TABLE_ENV

COMPARE_EPILOG = """\
entries:
  --methods darts,pr-darts          presets, each an entry named after it (default: the five below)
  --entry NAME:METHOD[:k=v,k=v]     a combination, repeatable; its overrides apply after the common ones;
                                    an item without '=' continues the previous value (list slots):
      --entry prl:pr-darts:weight_regularizers=lambda,estimator=amended
      --entry dpx:darts:arch_regularizers=pr-darts,prox

every run: preset < --epochs/--batch-size/--dataset/... < common key=value < the entry's key=value.
--epochs and --batch-size replace the presets' own budgets, so every entry gets the same one.

output (OUT, default runs/compare-SPACE): runs/<entry>-s<seed>/ (search run directories), report.md,
summary.csv, per_run.csv, curves.csv, index.html (cells side by side) and reports/<run>/index.html
(each run's report), and with matplotlib (pip install -e ".[report]")
accuracy_vs_epoch.png and skips_vs_epoch.png. The same command again reuses finished runs,
resumes interrupted ones and rewrites the report.

example (the documented CPU protocol is bench/compare_protocol.sh):
  dnas compare --space nb201 --seeds 0,1,2 --dataset cifar10_train_jpeg.zip \\
      --table mini-bench-arch-cell-accs.csv --epochs 12 --batch-size 64 --jobs 2 --out runs/cmp \\
      channels=8 layers=1 image_size=16 max_images=5000
"""


def _compare_options(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The options of ``dnas compare`` (``defaults=False``: none, to re-parse the items after the first key=value)."""
    from dnas.report.compare import DEFAULT_METHODS

    def default(value):
        return value if defaults else argparse.SUPPRESS

    p.add_argument("--space", default=default("nb201"), help="search space (default nb201)")
    p.add_argument("--methods", default=default(",".join(DEFAULT_METHODS)),
                   help=f"comma-separated presets (default {','.join(DEFAULT_METHODS)}; '' for none)")
    p.add_argument("--entry", action="append", default=default([]), metavar="NAME:METHOD[:key=value,...]",
                   help="an extra entry: a preset with component overrides (repeatable)")
    p.add_argument("--seeds", default=default("0,1,2"), help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--dataset", default=default(None),
                   help="as for `dnas search`: digits (default), cifar10, cifar100 or a path")
    p.add_argument("--data-root", dest="data_root", default=default(None),
                   help="where named datasets live / are downloaded")
    p.add_argument("--download", action="store_true", default=default(None),
                   help="download a named dataset if absent")
    p.add_argument("--epochs", type=int, default=default(None), help="search epochs of every run")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=default(None),
                   help="batch size of every run")
    p.add_argument("--device", default=default(None), help="cpu (default), cuda, cuda:N")
    p.add_argument("--table", default=default(None),
                   help=f"NAS-Bench-201 table (.csv/.parquet or a folder holding one) to score the derived cells "
                   f"(nb201 only; default ${TABLE_ENV} if set)")
    p.add_argument("--out", default=default(None),
                   help="output directory (default runs/compare-SPACE); the same --out resumes")
    p.add_argument("--jobs", type=int, default=default(1), help="runs at once, in worker processes (default 1)")
    p.add_argument("--threads", type=int, default=default(None),
                   help="torch threads per run (default: 1 with --jobs > 1, else torch's)")
    p.add_argument("--quiet", action="store_true", default=default(False), help="no progress bars")


def add_subcommands(sub) -> None:
    """Add ``compare`` to the ``dnas`` subparsers."""
    p = sub.add_parser("compare", help="compare methods (and combinations) over seeds: runs, benchmark look-ups, "
                       "tables and plots", usage="dnas compare [options] [key=value ...]", epilog=COMPARE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _compare_options(p)
    # key=value items (applied to every run) and further options, in any order (re-parsed by cmd_compare)
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="key=value", help="overrides applied to every run")


def _rest(args: argparse.Namespace) -> list[str]:
    """Merge the options given after the first key=value item into ``args``; return the key=value items."""
    parser = argparse.ArgumentParser(prog="dnas compare", add_help=False)
    _compare_options(parser, defaults=False)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    later = parser.parse_intermixed_args(args.rest)
    for key, value in vars(later).items():
        if key == "entry":
            args.entry = [*args.entry, *value]
        elif key != "overrides":
            setattr(args, key, value)
    return later.overrides


def cmd_compare(args: argparse.Namespace) -> int:
    from dnas.report import Compare, parse_entry, parse_methods, parse_seeds

    overrides = _rest(args)
    entries = [*parse_methods(args.methods), *(parse_entry(e) for e in args.entry)]
    table = args.table
    if table is None and args.space == "nb201":
        table = os.environ.get(TABLE_ENV) or None
    flags = {k: getattr(args, k) for k in ("dataset", "data_root", "download", "epochs", "batch_size", "device")}
    compare = Compare(args.space, entries, parse_seeds(args.seeds), Path(args.out or f"runs/compare-{args.space}"),
                      flags=flags, overrides=overrides, table=table, jobs=args.jobs, threads=args.threads,
                      progress=not args.quiet)
    report = compare.run()
    print(report.markdown, end="")
    print(f"report: {compare.out / 'report.md'}")
    return 0


HANDLERS = {"compare": cmd_compare}
