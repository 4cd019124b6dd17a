"""One run of a comparison grid: what it is (:class:`Run`) and how any executor runs it (:func:`execute`)."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dnas.config.search import SearchConfig
from dnas.errors import DnasError, Interrupted
from dnas.runtime.files import RESULTS

if TYPE_CHECKING:
    from dnas.grid.entries import Entry



@dataclass
class Run:
    """The search of entry ``entry`` with seed ``seed``: an ordinary search run directory ``out``."""

    entry: Entry
    seed: int
    cfg: SearchConfig
    out: Path

    @property
    def name(self) -> str:
        return f"{self.entry.name}-s{self.seed}"

    @property
    def finished(self) -> bool:
        return (self.out / RESULTS).is_file()


#: what an executor calls as each run ends: ``done(run, reason)``, ``reason`` None when it finished, else why not
Done = Callable[[Run, "str | None"], None]


def execute(cfg: SearchConfig, out: str | Path, progress: bool = False) -> str | None:
    """Run or resume one search of the grid (in this process, a worker or a Slurm job).

    Returns None when it finished, else the one-sentence reason it did not: the message of a user
    error (a corrupt checkpoint, a directory that is not a run of ours, a non-finite loss) or, for
    any other exception, its type and message (the traceback goes to stderr). An interruption
    (:class:`~dnas.errors.Interrupted`: Ctrl-C, SIGTERM; the search saved its checkpoint) propagates.
    """
    from dnas.bilevel.run import Search

    try:
        Search(cfg, out, progress=progress).run()
    except Interrupted:
        raise
    except DnasError as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 - one run's crash must not stop the others
        traceback.print_exc(file=sys.stderr)
        first_line = str(err).splitlines()[0] if str(err) else ""
        return f"crashed with {type(err).__name__}: {first_line} (traceback on stderr)"
    return None
