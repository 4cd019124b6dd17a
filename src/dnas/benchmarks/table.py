"""Compact benchmark tables: one row per NAS-Bench-201 cell, keyed by its arch string.

A table is a CSV (read with the ``csv`` module, no pandas needed) or a Parquet file (only when
``pyarrow`` or ``pandas`` is installed). The key column is the first column whose values are
arch strings (``cellstr`` in the 12-epoch mini-bench, ``arch_str`` in exported tables); every
other column is kept, numbers as ``float`` (``int`` for integer columns such as an index).
Accuracies are in percent, as the benchmark publishes them.

A directory that holds exactly one ``.csv`` or ``.parquet`` file loads as that file, so
the mini-bench's folder ``nb201_12ep_minibench/`` is a table.

A blank cell reads as None (a cell the benchmark did not evaluate); :func:`score` is a value as a
finite float, or None for a blank, non-numeric or non-finite one.

:func:`lookup` is what the search loop calls each epoch: the row of a derived cell, or None.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dnas.errors import DnasError
from dnas.runtime.reading import read_text
from dnas.spaces import Genotype

Value = float | int | str | None
SUFFIXES = (".csv", ".parquet")
#: the environment variable naming the default NAS-Bench-201 table of ``dnas query`` and ``dnas compare``
TABLE_ENV = "DNAS_NB201_TABLE"


def _is_arch_str(text: object) -> bool:
    return isinstance(text, str) and text.startswith("|") and "~0|" in text


def canonical_arch(arch: str | Genotype | dict) -> str:
    """The canonical NB201 arch string of an arch string, a Genotype or a genotype dict."""
    if isinstance(arch, dict):
        arch = Genotype.from_dict(arch)
    if isinstance(arch, Genotype):
        if arch.space != "nb201":
            raise DnasError(f"only nb201 cells are in NAS-Bench-201 tables; this genotype is from {arch.space!r}")
        return arch.arch_str
    return Genotype.from_arch_str(arch).arch_str


def _number(text: str) -> Value:
    if not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def score(value: Value) -> float | None:
    """A table value as a finite float; None for a blank, non-numeric or non-finite cell."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class Table:
    """Rows of a benchmark keyed by arch string; ``columns`` are the non-key columns in file order."""

    key: str
    columns: tuple[str, ...]
    rows: dict[str, dict[str, Value]]
    source: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, arch: object) -> bool:
        return arch in self.rows

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def get(self, arch: str | Genotype | dict) -> dict[str, Value] | None:
        """The row of a cell (a copy), or None when the table does not hold it."""
        row = self.rows.get(canonical_arch(arch))
        return None if row is None else dict(row)

    def best(self, column: str) -> tuple[str, float]:
        """The arch string with the highest value in ``column`` and that value."""
        if column not in self.columns:
            raise DnasError(f"the table has no column {column!r}; columns: {', '.join(self.columns)}")
        scored = {a: v for a, row in self.rows.items() if (v := score(row[column])) is not None}
        if not scored:
            raise DnasError(f"the column {column!r} holds text, no numbers to rank ({self.source})")
        arch = max(scored, key=scored.__getitem__)
        return arch, scored[arch]

    # ----- files ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Table:
        path = _resolve(Path(path))
        if path.suffix.lower() == ".parquet":
            header, records = _read_parquet(path)
            return cls._from_records(header, records, str(path))
        with io.StringIO(read_text(path, "the benchmark table", "table"), newline="") as f:
            reader = csv.reader(f)
            header_row = next(reader, None)
            if not header_row:
                raise DnasError(f"the table {path} is empty; expected a header row and one row per cell")
            return cls._from_records(header_row, ([_number(v) for v in row] for row in reader if row), str(path))

    @classmethod
    def _from_records(cls, header: list[str], records, source: str) -> Table:
        rows: dict[str, dict[str, Value]] = {}
        key_index = None
        for values in records:
            if len(values) != len(header):
                raise DnasError(f"row {len(rows) + 1} of {source} has {len(values)} fields for {len(header)} columns")
            if key_index is None:
                key_index = next((i for i, v in enumerate(values) if _is_arch_str(v)), None)
                if key_index is None:
                    raise DnasError(f"{source} has no column of NAS-Bench-201 arch strings ('|op~0|+|op~0|op~1|+...')")
            key = str(values[key_index]).strip()
            rows[key] = {h: v for i, (h, v) in enumerate(zip(header, values, strict=True)) if i != key_index}
        if key_index is None:
            raise DnasError(f"the table {source} has a header but no rows")
        columns = tuple(h for i, h in enumerate(header) if i != key_index)
        if not columns:
            raise DnasError(f"the table {source} has only the arch-string column {header[key_index]!r}; it needs at "
                            "least one column of benchmark values (e.g. cifar10-test)")
        return cls(key=header[key_index], columns=columns, rows=rows, source=source)

    def save(self, path: str | Path) -> None:
        """Write the table as CSV (or Parquet for a ``.parquet`` path), atomically."""
        path = Path(path)
        header = [self.key, *self.columns]
        records = ([arch, *(row[c] for c in self.columns)] for arch, row in self.rows.items())
        write_records(path, header, records)


def _resolve(path: Path) -> Path:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise DnasError(f"the folder {path} holds {what} .csv/.parquet tables; give the path of one table file")
        return found[0]
    if not path.is_file():
        raise DnasError(f"benchmark table {str(path)!r} does not exist; give a .csv or .parquet table "
                        "(for example one written by `dnas bench export`)")
    if path.suffix.lower() not in SUFFIXES:
        raise DnasError(f"cannot read {path} as a table: use a .csv or .parquet file (pickles are not loaded)")
    return path


def _read_parquet(path: Path) -> tuple[list[str], list[list[Value]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None:
        data = pq.read_table(path).to_pydict()
    else:
        try:
            import pandas as pd
        except ImportError:
            raise DnasError(f"reading the Parquet table {path} needs pyarrow (pip install pyarrow); "
                            "or use a CSV table") from None
        data = pd.read_parquet(path).to_dict(orient="list")
    header = list(data)
    return header, [list(row) for row in zip(*data.values(), strict=True)]


def write_records(path: Path, header: list[str], records) -> int:
    """Stream ``records`` (lists in ``header`` order) to a CSV or Parquet file; returns the row count.

    CSV rows go one by one to a temporary file beside ``path`` that is renamed at the end, so a
    large export never holds the table in memory and an interrupted one leaves no partial file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise DnasError(f"writing the Parquet table {path} needs pyarrow (pip install pyarrow); "
                            "or give a .csv path") from None
        columns: list[list[Value]] = [[] for _ in header]
        for values in records:
            for column, v in zip(columns, values, strict=True):
                column.append(v)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(pa.table(dict(zip(header, columns, strict=True))), tmp)
        os.replace(tmp, path)
        return len(columns[0]) if columns else 0
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    try:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for values in records:
                writer.writerow(values)
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


# ------------------------------------------------------------------------------------- look-ups

_CACHE: dict[tuple[str, int, int], Table] = {}


def load_table(path: str | Path) -> Table:
    """:meth:`Table.load` with a cache keyed by the file's path, size and modification time."""
    file = _resolve(Path(path)).resolve()
    st = file.stat()
    key = (str(file), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        _CACHE.clear()  # keep one table in memory
        _CACHE[key] = Table.load(file)
    return _CACHE[key]


def lookup(table: Table | str | Path, genotype: Genotype | str | dict) -> dict[str, Value] | None:
    """The benchmark row of a derived cell: ``{column: value}`` (accuracies in percent), or None
    when the genotype is not an nb201 cell or the table does not hold it.

    ``table`` is a :class:`Table` or the path of one (loaded once, then cached);
    ``genotype`` a :class:`~dnas.spaces.Genotype`, its dict form or an arch string.
    """
    if not isinstance(table, Table):
        table = load_table(table)
    if isinstance(genotype, dict):
        genotype = Genotype.from_dict(genotype)
    if isinstance(genotype, Genotype) and genotype.space != "nb201":
        return None
    return table.get(genotype)


#: the test-accuracy column that scores a cell found on each of NAS-Bench-201's datasets (the names of
#: :mod:`dnas.benchmarks.export`; the 12-epoch mini-bench uses the same)
DATASET_COLUMNS = {"cifar10": "cifar10-test", "cifar100": "cifar100-test", "imagenet16-120": "imagenet-test"}


def matching_score(row: dict[str, Value] | None, dataset: str) -> dict[str, Value]:
    """``{"benchmark_column": COLUMN, "benchmark_score": VALUE}``: the row's test accuracy on the dataset
    the search ran on (:data:`DATASET_COLUMNS`); empty when that dataset has no column in the table."""
    column = DATASET_COLUMNS.get(dataset)
    if row is None or column is None or column not in row:
        return {}
    return {"benchmark_column": column, "benchmark_score": score(row[column])}


def format_row(arch: str, row: dict[str, Value] | None, source: str = "") -> str:
    """A few aligned lines showing a cell's benchmark values (for ``dnas query``)."""
    out = io.StringIO()
    out.write(f"{arch}\n")
    if row is None:
        out.write(f"  not in the table {source}\n")
        return out.getvalue()
    width = max(len(k) for k in row)
    for k, v in row.items():
        shown = f"{v:.2f}" if isinstance(v, float) else "–" if v is None else str(v)
        out.write(f"  {k:<{width}}  {shown}\n")
    return out.getvalue()
