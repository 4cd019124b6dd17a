"""The ``dnas compare`` command: every method x seed as its own resumable search, then a report.

``add_subcommands(sub)`` adds it to the main parser's subparsers; :data:`HANDLERS` maps the command
name to its handler ``(args) -> exit status``. The grid itself is :class:`dnas.grid.Compare`.

Settings come from, in increasing priority: the defaults, ``--config FILE`` (a grid's own
``compare.yaml``), the options on the command line. Options are parsed without defaults so that
only those given override the file; ``--methods``/``--entry`` given replace the file's entries and
key=value items are applied after the file's overrides.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dnas.benchmarks.table import TABLE_ENV
from dnas.cli.parser import Parser
from dnas.errors import DnasError
from dnas.grid import DEFAULT_METHODS, SlurmOptions
from dnas.grid.compare import FLAG_KEYS
from dnas.runtime.plugins import plugin_names

COMPARE_EPILOG = """\
entries:
  --methods darts,pr-darts          presets, each an entry named after it (default: the five below)
  --entry NAME:METHOD[:k=v,k=v]     a combination, repeatable; its overrides apply after the common ones;
                                    an item without '=' continues the previous value (list slots):
      --entry prl:pr-darts:weight_regularizers=lambda,estimator=amended
      --entry dpx:darts:arch_regularizers=pr-darts,prox

every run: preset < --epochs/--batch-size/--dataset/... < common key=value < the entry's key=value.
--epochs and --batch-size replace the presets' own budgets, so every entry gets the same one.

output (OUT, default runs/compare-SPACE): compare.yaml (this grid; --config OUT/compare.yaml replays
it, options given override it), runs/<entry>-s<seed>/ (search run directories), report.md,
summary.csv, per_run.csv, curves.csv, index.html (cells side by side) and reports/<run>/index.html
(each run's report), and with matplotlib (pip install -e ".[report]")
accuracy_vs_epoch.png and skips_vs_epoch.png. The same command again reuses finished runs,
resumes interrupted ones and rewrites the report. A run that fails or cannot be read is reported
as failed with its reason; the others go on (it is tried again next time).

executors:
  local (default)   --jobs 1: one run after the other; --jobs N: N worker processes
  slurm             one job per unfinished run, as a job array (pip install -e ".[cluster]"):
      --executor slurm --slurm-partition gpu --slurm-gpus 1 --slurm-time 120 [--no-wait]
    preempted or timed-out jobs are requeued and resume from their checkpoints; with --no-wait
    the command returns at once and the same command later collects the runs.

example (the documented CPU protocol is bench/compare_protocol.sh):
  dnas compare --space nb201 --seeds 0,1,2 --dataset cifar10_train_jpeg.zip \\
      --table mini-bench-arch-cell-accs.csv --epochs 12 --batch-size 64 --jobs 2 --out runs/cmp \\
      channels=8 layers=1 image_size=16 max_images=5000
"""


#: the space and seeds when given neither on the command line nor in --config
DEFAULTS = {"space": "nb201", "seeds": "0,1,2"}
SLURM_OPTIONS = ("slurm_partition", "slurm_gpus", "slurm_time", "slurm_cpus", "slurm_mem", "no_wait")


def _compare_options(p: argparse.ArgumentParser) -> None:
    """The options of ``dnas compare``, without defaults (an option absent from the namespace was not given)."""
    none = argparse.SUPPRESS
    p.add_argument("--config", default=none, metavar="FILE",
                   help="a grid's compare.yaml (or its OUT folder): replay that grid; options override it")
    p.add_argument("--space", default=none, help="search space (default nb201)")
    p.add_argument("--methods", default=none,
                   help=f"comma-separated presets (default {','.join(DEFAULT_METHODS)}; '' for none)")
    p.add_argument("--entry", action="append", default=none, metavar="NAME:METHOD[:key=value,...]",
                   help="an extra entry: a preset with component overrides (repeatable)")
    p.add_argument("--seeds", default=none, help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--dataset", default=none,
                   help="as for `dnas search`: digits (default), cifar10, cifar100 or a path")
    p.add_argument("--data-root", dest="data_root", default=none, help="where named datasets live / are downloaded")
    p.add_argument("--download", action="store_true", default=none, help="download a named dataset if absent")
    p.add_argument("--epochs", type=int, default=none, help="search epochs of every run")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=none, help="batch size of every run")
    p.add_argument("--device", default=none, help="cpu (default), cuda, cuda:N")
    p.add_argument("--table", default=none,
                   help=f"NAS-Bench-201 table (.csv/.parquet or a folder holding one) to score the derived cells "
                   f"(nb201 only; default ${TABLE_ENV} if set)")
    p.add_argument("--out", default=none, help="output directory (default runs/compare-SPACE); the same --out resumes")
    p.add_argument("--jobs", type=int, default=none,
                   help="runs at once (default 1: in this process; more: worker processes; slurm: no limit)")
    p.add_argument("--threads", type=int, default=none,
                   help="torch threads per run (default: 1 with --jobs > 1, the job's CPUs on slurm, else torch's)")
    p.add_argument("--executor", choices=("local", "slurm"), default=none,
                   help="local (default): this machine; slurm: one Slurm job per run (pip install 'dnas[cluster]')")
    p.add_argument("--slurm-partition", dest="slurm_partition", default=none, help="Slurm partition of the jobs")
    p.add_argument("--slurm-gpus", dest="slurm_gpus", type=int, default=none, help="GPUs per job (default 0)")
    p.add_argument("--slurm-time", dest="slurm_time", type=int, default=none, metavar="MIN",
                   help="time limit per job in minutes (default 60; a timed-out job is requeued from its checkpoint)")
    p.add_argument("--slurm-cpus", dest="slurm_cpus", type=int, default=none, help="CPUs per job (default 1)")
    p.add_argument("--slurm-mem", dest="slurm_mem", type=float, default=none, metavar="GB",
                   help="memory per job in GB (default: the partition's)")
    p.add_argument("--no-wait", dest="no_wait", action="store_true", default=none,
                   help="slurm: submit and return at once; the same command later collects the runs")
    p.add_argument("--quiet", action="store_true", default=none, help="no progress bars")
    p.add_argument("--plugin", dest="plugins", action="append", default=none, metavar="MODULE",
                   help="import the module MODULE first (its spaces, ops and components; repeatable); every run "
                   "records it")


def add_subcommands(sub) -> None:
    """Add ``compare`` to the ``dnas`` subparsers."""
    p = sub.add_parser("compare", help="compare methods (and combinations) over seeds: runs, benchmark look-ups, "
                       "tables and plots", usage="dnas compare [options] [key=value ...]", epilog=COMPARE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _compare_options(p)
    # key=value items (applied to every run) and further options, in any order (re-parsed by cmd_compare)
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="key=value", help="overrides applied to every run")


def _given(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The options given on the command line (those after the first key=value item too) and the key=value items."""
    parser = Parser(prog="dnas compare", add_help=False)
    _compare_options(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    later = vars(parser.parse_intermixed_args(args.rest))
    given = {k: v for k, v in vars(args).items() if k not in ("command", "rest")}
    entries = [*given.get("entry", []), *later.pop("entry", [])]
    plugins = [*given.get("plugins", []), *later.pop("plugins", [])]
    given.update(later)
    if entries:
        given["entry"] = entries
    if plugins:
        given["plugins"] = plugins
    return given, given.pop("overrides")


def _entries(given: dict, file: dict) -> list:
    """The file's entries unless --methods or --entry is given; without a file, --methods defaults to the
    five presets and --entry adds to them."""
    from dnas.grid import parse_entry, parse_methods

    if "entries" in file and "methods" not in given and "entry" not in given:
        return file["entries"]
    methods = given.get("methods", "" if "entries" in file else ",".join(DEFAULT_METHODS))
    return [*parse_methods(methods), *(parse_entry(e) for e in given.get("entry", []))]


def _slurm(given: dict) -> SlurmOptions | None:
    if given.get("executor", "local") != "slurm":
        stray = [f"--{k.replace('_', '-')}" for k in SLURM_OPTIONS if k in given]
        if stray:
            raise DnasError(f"{', '.join(stray)} {'apply' if len(stray) > 1 else 'applies'} only to --executor slurm")
        return None
    values = {"partition": given.get("slurm_partition"), "gpus": given.get("slurm_gpus"),
              "time": given.get("slurm_time"), "cpus": given.get("slurm_cpus"), "mem": given.get("slurm_mem")}
    return SlurmOptions(**{k: v for k, v in values.items() if v is not None})


def cmd_compare(args: argparse.Namespace) -> int:
    from dnas.grid import Compare, load_description, parse_seeds

    given, overrides = _given(args)
    file = load_description(given["config"]) if "config" in given else {}
    space = given.get("space", file.get("space", DEFAULTS["space"]))
    seeds = parse_seeds(given["seeds"]) if "seeds" in given else file.get("seeds") or parse_seeds(DEFAULTS["seeds"])
    if "table" in given or "table" in file:
        table = given.get("table", file.get("table"))
    else:
        table = (os.environ.get(TABLE_ENV) or None) if space == "nb201" else None
    flags = {**file.get("flags", {}), **{k: given[k] for k in FLAG_KEYS if k in given}}
    if "plugins" in given and "plugins" in file.get("flags", {}):  # the file's plugins and those given
        flags["plugins"] = [*plugin_names(file["flags"]["plugins"]), *given["plugins"]]
    compare = Compare(space, _entries(given, file), seeds, Path(given.get("out", f"runs/compare-{space}")),
                      flags=flags, overrides=[*file.get("overrides", []), *overrides], table=table,
                      jobs=given.get("jobs"), threads=given.get("threads", file.get("threads")),
                      slurm=_slurm(given), wait=not given.get("no_wait", False), progress=not given.get("quiet", False))
    report = compare.run()
    print(report.markdown, end="")
    print(f"report: {compare.out / 'report.md'}")
    return 0


HANDLERS = {"compare": cmd_compare}
