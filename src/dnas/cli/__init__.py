"""The ``dnas`` command line: one module per command group (:mod:`.search`: search, spaces,
methods; :mod:`.train`: train, query, bench; :mod:`.compare`; :mod:`.report`: report, draw).

User errors (:class:`~dnas.errors.DnasError`) print one sentence and exit with status 2; no
traceback, no file overwritten.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dnas.cli import compare, report, search, train
from dnas.errors import DnasError

GROUPS = (search, train, compare, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dnas", description="Differentiable NAS that does not collapse.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_subcommands(sub)
    return parser


def _version() -> str:
    import dnas

    return f"dnas {dnas.__version__}"


COMMANDS = {name: handler for group in GROUPS for name, handler in group.HANDLERS.items()}


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
