"""``python -m dnas ...``, ``torchrun -m dnas ...`` and the ``dnas`` command: the command line.

Importing the command line takes seconds (torch); Ctrl-C during that time, or anywhere before a
command has its own handling, ends with one line and status 130 like Ctrl-C later.
"""

import sys


def main() -> int:
    try:
        from dnas.cli import main as command_line

        return command_line()
    except KeyboardInterrupt:
        print("dnas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
