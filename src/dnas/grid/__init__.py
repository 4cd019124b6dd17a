"""The comparison grid of ``dnas compare``: entries x seeds, each one resumable search, then a report.

:mod:`.entries` (what the lines and seeds are), :mod:`.run` (one run and how it executes),
:mod:`.compare` (planning, reuse, ``compare.yaml``, the report), :mod:`.local` (this process or
worker processes), :mod:`.slurm` (Slurm jobs through submitit). The report is :mod:`dnas.report`.
"""

from dnas.grid.compare import Compare, load_description
from dnas.grid.entries import DEFAULT_METHODS, Entry, parse_entry, parse_methods, parse_seeds
from dnas.grid.run import Run
from dnas.grid.slurm import SlurmOptions

__all__ = ["DEFAULT_METHODS", "Compare", "Entry", "Run", "SlurmOptions", "load_description", "parse_entry",
           "parse_methods", "parse_seeds"]
