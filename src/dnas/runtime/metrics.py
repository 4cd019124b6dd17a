"""Metric sinks: ``metrics.jsonl`` always, TensorBoard event files with ``log=tensorboard``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnas.errors import DnasError
from dnas.runtime.atomic import write_error

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

#: the metric sinks a run can write to (``log=``); JSON lines are always written
SINKS = ("jsonl", "tensorboard")


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, flushed at once; truncated to the checkpoint's
    offset on resume. With ``tensorboard`` (a folder) every numeric field of a record is also a
    TensorBoard scalar (``kind/field`` at the record's ``step``) and every ``strengths`` entry a
    histogram; ``purge_step`` drops events a resumed run writes again."""

    def __init__(self, path: Path, resume_offset: int | None, tensorboard: Path | None = None, purge_step: int = 0):
        self.path = path
        try:
            if resume_offset is None or not path.exists():
                path.write_text("")
            else:
                with open(path, "r+b") as f:
                    f.truncate(resume_offset)
            self._file = open(path, "a")  # noqa: SIM115 - kept open for the whole run
        except OSError as err:
            raise write_error(path, err) from None
        self._board = _tensorboard_writer(tensorboard, purge_step) if tensorboard is not None else None

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as err:
            raise write_error(self.path, err) from None
        if self._board is not None:
            _to_tensorboard(self._board, record)

    @property
    def offset(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        if self._board is not None:
            self._board.close()


class NullLog(MetricsLog):
    """The metric sink of ranks other than 0: records are dropped (rank 0 logs the reduced values)."""

    def __init__(self) -> None:  # noqa: D107 - nothing to open
        pass

    def write(self, record: dict[str, Any]) -> None:
        pass

    @property
    def offset(self) -> int:
        return 0

    def close(self) -> None:
        pass


def _to_tensorboard(board: SummaryWriter, record: dict[str, Any]) -> None:
    import torch

    step, kind = int(record.get("step", 0)), record.get("kind", "record")
    for key, value in record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch"):
            board.add_scalar(f"{kind}/{key}", value, step)
    for cell_type, values in (record.get("strengths") or {}).items():
        board.add_histogram(f"strengths/{cell_type}", torch.tensor(values), step)
    board.flush()


def _tensorboard_writer(folder: Path, purge_step: int) -> SummaryWriter:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DnasError('log=tensorboard needs the tensorboard package: pip install "dnas[tensorboard]"') from None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step or None)
