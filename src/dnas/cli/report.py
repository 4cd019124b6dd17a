"""``dnas draw``, ``dnas report`` and ``dnas guard``: cell drawings, the HTML run report, guards replayed.

``add_subcommands(sub)`` adds them to the main parser's subparsers; :data:`HANDLERS` maps each
command name to its handler ``(args) -> exit status``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dnas.errors import DnasError
from dnas.runtime.files import GENOTYPE

DRAW_EPILOG = """\
GENOTYPE is a search run folder (its genotype.json, or the cell after the latest epoch while it
runs), a genotype.json, a published cell (DARTS_V1, DARTS_V2, PRDARTS, PC_DARTS, PDARTS) or an
NB201 arch string in quotes. A genotype with normal and reduction cells gets one file per cell:
--out cell.svg writes cell_normal.svg and cell_reduce.svg.

SVG needs nothing beyond dnas (a builtin renderer is used when Graphviz is absent); PNG needs
Graphviz: apt-get install graphviz && pip install 'dnas[draw]'.
"""

REPORT_EPILOG = """\
The report is one self-contained index.html (inline SVG, no script, no network): the final cells,
op-strength trajectories per edge, skip and parameter-free counts, decision margin and entropy,
Hessian eigenvalue, per-cell alignment and NAS-Bench-201 accuracy against the epoch, the resolved
configuration and the environment. Several runs: an overview (table, cells side by side, curves
of every run) followed by each run.

--watch follows running searches: the page is rewritten whenever a run's metrics.jsonl changes
(checked every --interval seconds) and reloads itself in the browser; the command ends when every
run has finished, or with Ctrl-C.
"""


GUARD_EPILOG = """\
GUARD is off, hessian (RobustDARTS' early stopping: set hessian_every=2 in the searches), skip
(DARTS+: two skip connections in the normal cell) or margin (the decision margin stayed above a
threshold for some epochs); key=value items set its parameters (window=5 delta=4 factor=1.3
start_epoch=10; skips=2; threshold=0.03 epochs=3). For each finished run it prints the cell the
run ended with and the cell a search guarded so would have returned; with --table (NAS-Bench-201)
their accuracies. No benchmark value is used by the guard itself.
"""


def add_subcommands(sub) -> None:
    """Add ``draw``, ``report`` and ``guard`` to the ``dnas`` subparsers."""
    d = sub.add_parser("draw", help="draw the cells of a run, a genotype.json, a published cell or an NB201 arch "
                       "string (SVG, or PNG with Graphviz)", epilog=DRAW_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("genotype", metavar="RUN|GENOTYPE|NAME")
    d.add_argument("--out", help="the .svg or .png to write (default NAME.svg in the current folder)")

    r = sub.add_parser("report", help="an HTML report of one or more search runs (--watch: follow a running search)",
                       epilog=REPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("runs", nargs="+", metavar="RUN", help="search run directories (the --out of dnas search)")
    r.add_argument("--out", help="folder for index.html (default: RUN-report next to the first run)")
    r.add_argument("--watch", action="store_true", help="rewrite the report as the searches progress")
    r.add_argument("--interval", type=float, default=10.0, help="seconds between checks with --watch (default 10)")

    g = sub.add_parser("guard", help="replay a collapse guard over finished searches: where would it have stopped?",
                       epilog=GUARD_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("guard", metavar="GUARD", help="hessian, skip, margin or off")
    g.add_argument("items", nargs="+", metavar="RUN|key=value", help="search run directories and guard parameters")
    g.add_argument("--table", help="a NAS-Bench-201 table to score the cells with")
    g.add_argument("--json", action="store_true", help="one JSON object per run")


def draw_target(spec: str):
    """The genotype to draw and its label: a run still searching gives its latest epoch's cell."""
    from dnas.report.run import is_run, read_run
    from dnas.spaces.published import resolve_genotype

    path = Path(spec).expanduser()
    if path.is_dir() and not (path / GENOTYPE).is_file() and is_run(path):
        genotype = read_run(path, cells_only=True).genotype
        if genotype is None:
            raise DnasError(f"the search in {path} has not finished an epoch yet: there is no cell to draw")
        return genotype, path.resolve().name
    resolved = resolve_genotype(spec)
    return resolved.genotype, resolved.label


def cmd_draw(args: argparse.Namespace) -> int:
    from dnas.report.draw import draw_genotype

    genotype, label = draw_target(args.genotype)
    paths = draw_genotype(genotype, Path(args.out or f"{label}.svg"))
    for path in paths:
        print(path)
    return 0


def default_out(runs: Sequence[str]) -> Path:
    first = Path(runs[0]).resolve()
    return first.with_name(f"{first.name}-report")


def watch(run_dirs: Sequence[Path], out: Path, interval: float, echo: Callable[[str], None] = print,
          sleep: Callable[[float], None] | None = None) -> Path:
    """Rewrite ``out/index.html`` whenever a run's files change, until every run has finished.
    A run directory that does not exist yet is waited for. Each check costs a ``stat`` of two
    files per run; the report is rebuilt only after a change."""
    sleep = sleep or time.sleep
    from dnas.report.html import write_report
    from dnas.report.run import is_run, read_run, run_signature

    last: list | None = None
    waiting_said = False
    while True:
        if not all(is_run(d) for d in run_dirs):
            if not waiting_said:
                missing = ", ".join(str(d) for d in run_dirs if not is_run(d))
                echo(f"dnas report: waiting for the search to start in {missing}")
                waiting_said = True
            sleep(interval)
            continue
        signature = [run_signature(d) for d in run_dirs]
        if signature != last:
            runs = [read_run(d) for d in run_dirs]
            path = write_report(runs, out, refresh=max(2, round(interval)))
            done = sum(r.finished for r in runs)
            echo(f"dnas report: {path} updated ({', '.join(f'{r.name}: {r.status}' for r in runs)})")
            if done == len(runs):
                return path
            last = signature
        sleep(interval)


def cmd_report(args: argparse.Namespace) -> int:
    from dnas.report.html import write_report
    from dnas.report.run import read_run

    out = Path(args.out) if args.out else default_out(args.runs)
    run_dirs = [Path(r) for r in args.runs]
    if not 0 < args.interval < 86400:  # also NaN
        raise DnasError(f"--interval must be a number of seconds above 0 and below a day, got {args.interval}")
    if args.watch:
        try:
            path = watch(run_dirs, out, args.interval, echo=lambda line: print(line, file=sys.stderr, flush=True))
        except KeyboardInterrupt:  # the normal way to stop following a search
            print(f"report: {out / 'index.html'}")
            return 0
    else:
        path = write_report([read_run(d) for d in run_dirs], out)
    print(f"report: {path}")
    return 0


def cmd_guard(args: argparse.Namespace) -> int:
    import json

    from dnas.report.guard import guarded, make_guard
    from dnas.spaces import Genotype

    params = dict(item.split("=", 1) for item in args.items if "=" in item)
    runs = [item for item in args.items if "=" not in item]
    if not runs:
        raise DnasError("give at least one search run directory")
    table = None
    if args.table:
        from dnas.benchmarks import load_table

        table = load_table(args.table)
    for run in runs:
        outcome = guarded(run, make_guard(args.guard, params))
        scores = {}
        if table is not None:
            from dnas.benchmarks import lookup

            scores = {which: lookup(table, Genotype.from_dict(cell["genotype"]))
                      for which, cell in (("final", outcome.final), ("guarded", outcome.cell))}
        d = outcome.decision
        if args.json:
            print(json.dumps({"run": str(outcome.run.path), "final_epoch": outcome.final["epoch"],
                              "decision": None if d is None else d.to_dict(), "scores": scores}))
            continue
        line = f"{outcome.run.path}: final cell (epoch {outcome.final['epoch']}) {_cell_text(outcome.final)}"
        if d is None:
            line += f"; guard {args.guard} would not have stopped it"
        else:
            line += (f"; guard {args.guard} stops after epoch {d.stop_epoch}, returns the cell of epoch {d.cell_epoch} "
                     f"{_cell_text(outcome.cell)} ({d.reason})")
        for which, row in scores.items():
            if row:
                line += f"; {which} " + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if isinstance(v, float))
        print(line)
    return 0


def _cell_text(record) -> str:
    genotype = record["genotype"]
    text = genotype.get("arch_str") or f"{record['skip_connect']} skip connections"
    return f"{text} ({record['parameter_free']} parameter-free)"


HANDLERS = {"draw": cmd_draw, "report": cmd_report, "guard": cmd_guard}
