"""The ``dnas`` command line: one module per command group (:mod:`.search`: search, spaces,
methods; :mod:`.train`: train, query, bench; :mod:`.compare`; :mod:`.report`: report, draw).

User errors (:class:`~dnas.errors.DnasError`) print one sentence and exit with status 2; no
traceback, no file overwritten.

``--plugin MODULE`` (repeatable, before or after the command) imports a module of one's own before
the command looks up any name, so that the ops, spaces and components it registers can be named
(:mod:`dnas.runtime.plugins`); the current directory is on the module path, as for ``python -m``.
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
    parser.add_argument("--plugin", dest="plugins_first", action="append", metavar="MODULE", help=PLUGIN_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_subcommands(sub)
    for command in sub.choices.values():
        if not any("--plugin" in a.option_strings for a in command._actions):  # dnas compare has its own
            command.add_argument("--plugin", dest="plugins", action="append", metavar="MODULE", help=PLUGIN_HELP)
    return parser


PLUGIN_HELP = ("import the module MODULE first: the ops, search spaces and components it registers can then be "
               "named (repeatable; a search records it in its config.yaml)")


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


def plugins_of(args: argparse.Namespace) -> list[str]:
    """The ``--plugin`` modules given before and after the command, in order; the namespace keeps them as
    ``args.plugins`` (absent when none was given)."""
    given = vars(args)
    plugins = [*(given.pop("plugins_first", None) or []), *(given.pop("plugins", None) or [])]
    if plugins:
        args.plugins = plugins
    return plugins


def import_plugins(plugins: Sequence[str]) -> None:
    """Import the ``dnas.plugins`` entry points and the ``--plugin`` modules (the current directory first on the
    module path, as ``python -m`` has it)."""
    from dnas.runtime.plugins import load_plugins

    if plugins and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    load_plugins(plugins)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    plugins = plugins_of(args)
    try:
        import_plugins(plugins)
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
