"""The command line's parser: argparse with every error as one line (``dnas: error: ...``, exit 2)."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

#: the longest error line printed; a longer message is cut (it can only be quoting input back)
MAX_MESSAGE = 400


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (``dnas: error: ...``, exit status 2), like dnas' own."""

    def error(self, message: str) -> NoReturn:
        print_error(message)
        raise SystemExit(2)


def print_error(message: str) -> None:
    line = " ".join(str(message).split())
    if len(line) > MAX_MESSAGE:
        line = line[: MAX_MESSAGE - 3] + "..."
    print(f"dnas: error: {line}", file=sys.stderr)


