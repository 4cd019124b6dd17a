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
from dnas.cli.parser import Parser, print_error
from dnas.errors import DnasError

GROUPS = (search, train, compare, report)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dnas", description="Differentiable NAS that does not collapse.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_subcommands(sub)
    return parser


def _version() -> str:
    import dnas

    return f"dnas {dnas.__version__}"


COMMANDS = {name: handler for group in GROUPS for name, handler in group.HANDLERS.items()}


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with ``key=value`` overrides accepted anywhere on the line (also after options)."""
    args, extra = parser.parse_known_args(argv)
    overrides = getattr(args, "overrides", None)
    if extra and isinstance(overrides, list) and all("=" in x and not x.startswith("-") for x in extra):
        overrides.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    try:
        return COMMANDS[args.command](args)
    except DnasError as err:
        print_error(str(err))
        return 2
    except KeyboardInterrupt:
        print("dnas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dnas methods | head`: the reader left; say nothing more
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - python flushes stdout at exit
        sys.stdout = sys.stderr
        return 0
    except OSError as err:  # the system refused a path the user gave (name too long, permissions, full disk)
        where = f" ({err.filename})" if err.filename else ""
        print_error(f"{err.strerror or type(err).__name__}{where}; check the path and its permissions")
        return 2
