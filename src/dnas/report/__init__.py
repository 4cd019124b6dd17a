"""Reports on search runs: the report of the comparison grid of ``dnas compare`` (:mod:`.compare`:
reading its run directories, writing ``report.md``), its aggregated tables and CSV files
(:mod:`.tables`) and its plots (:mod:`.plots`, needs matplotlib). The grid itself is :mod:`dnas.grid`."""

from dnas.report.compare import GridReport, Report
from dnas.report.tables import RunRecord, Stat, SummaryRow, mean_std

__all__ = ["GridReport", "Report", "RunRecord", "Stat", "SummaryRow", "mean_std"]
