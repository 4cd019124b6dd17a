"""Tabular benchmark look-ups (NAS-Bench-201) and the export of official benchmark files."""

from dnas.benchmarks.table import (
    DATASET_COLUMNS,
    TABLE_ENV,
    Table,
    canonical_arch,
    format_row,
    load_table,
    lookup,
    matching_score,
    score,
)

__all__ = ["DATASET_COLUMNS", "TABLE_ENV", "Table", "canonical_arch", "format_row", "load_table", "lookup",
           "matching_score", "score"]
