"""The files of a run directory: their names, and the one reader of its metric records.

A search run holds ``config.yaml`` (written first: it marks the directory as a dnas run),
``env.json``, ``metrics.jsonl``, ``checkpoint.pt`` and, when it has finished, ``genotype.json``
and ``results.json``; a training run holds ``genotype.json`` from its start and ``result.json``
at its end. Every module that reads or writes a run directory takes the names from here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dnas.errors import expect_type
from dnas.runtime.reading import read_bytes

LOCK = ".lock"
CONFIG = "config.yaml"
ENV = "env.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
TENSORBOARD = "tensorboard"
GENOTYPE = "genotype.json"
RESULTS = "results.json"  # of a search
RESULT = "result.json"  # of a training run


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of ``RUN/metrics.jsonl`` in order (of one ``kind``, ``step`` or ``epoch``, if given;
    none if the file does not exist). A line that is not a JSON object (the last line of a process
    killed while writing it) is skipped."""
    expect_type("run_dir", run_dir, str, Path)
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    for line in read_bytes(path, "the metrics file", "metrics").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # also UnicodeDecodeError
            continue
        if isinstance(record, dict) and (kind is None or record.get("kind") == kind):
            records.append(record)
    return records
