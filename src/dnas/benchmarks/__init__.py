"""Tabular benchmark look-ups (NAS-Bench-201) and the export of official benchmark files."""

from dnas.benchmarks.table import TABLE_ENV, Table, canonical_arch, format_row, load_table, lookup, score

__all__ = ["TABLE_ENV", "Table", "canonical_arch", "format_row", "load_table", "lookup", "score"]
