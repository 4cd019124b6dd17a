"""Tabular benchmark look-ups (NAS-Bench-201) and the export of official benchmark files."""

from dnas.benchmarks.table import Table, canonical_arch, format_row, load_table, lookup

__all__ = ["Table", "canonical_arch", "format_row", "load_table", "lookup"]
