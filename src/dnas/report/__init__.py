"""Reports on search runs: the method-comparison grid of ``dnas compare`` (:mod:`.compare`), its
aggregated tables and CSV files (:mod:`.tables`) and its plots (:mod:`.plots`, needs matplotlib)."""

from dnas.report.compare import DEFAULT_METHODS, Compare, Entry, Report, parse_entry, parse_methods, parse_seeds
from dnas.report.tables import RunRecord, Stat, SummaryRow, mean_std

__all__ = ["DEFAULT_METHODS", "Compare", "Entry", "Report", "RunRecord", "Stat", "SummaryRow", "mean_std",
           "parse_entry", "parse_methods", "parse_seeds"]
