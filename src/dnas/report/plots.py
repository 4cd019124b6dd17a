"""Curves of a comparison against the search epoch, as PNG (optional: needs matplotlib).

Each entry is one line: the mean over its seeds of the quantity at the end of every epoch, with
the band ``mean ± std`` (sample standard deviation, :func:`dnas.report.tables.mean_std`) shaded.
Only the object-oriented API (``matplotlib.figure.Figure``) is used, so no global pyplot state and
no display are involved.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dnas.report.tables import Stat

if TYPE_CHECKING:
    from matplotlib.artist import Artist

INSTALL_HINT = 'plots not written: matplotlib is not installed (pip install -e ".[report]" to get the PNGs)'

Series = dict[str, list[tuple[int, Stat]]]  # entry name -> [(epoch, stat)]


@dataclass(frozen=True)
class Panel:
    """One plot: ``series`` against the epoch; the shaded band is clipped to ``[low, high]`` (the
    range the quantity can take, e.g. counts >= 0), and the y axis starts at ``low`` when it is 0."""

    title: str
    ylabel: str
    series: Series
    low: float = float("-inf")
    high: float = float("inf")


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_panels(path: Path, panels: Sequence[Panel], title: str = "") -> None:
    """Write one PNG with a panel per :class:`Panel`, one line per entry, the legend on the right."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(4.6 * len(panels) + 1.4, 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    legend: dict[str, Artist] = {}
    for ax, panel in zip(axes, panels, strict=True):
        for index, (name, points) in enumerate(panel.series.items()):
            known = [(e, s.mean, s.std or 0.0) for e, s in points if s.mean is not None]
            if not known:
                continue
            color = f"C{index % 10}"  # the same colour for an entry in every panel
            xs = [e for e, _, _ in known]
            means = [m for _, m, _ in known]
            (line,) = ax.plot(xs, means, marker="o", markersize=3, label=name, color=color)
            legend.setdefault(name, line)
            stds = [d for _, _, d in known]
            ax.fill_between(xs, [max(panel.low, m - d) for m, d in zip(means, stds, strict=True)],
                            [min(panel.high, m + d) for m, d in zip(means, stds, strict=True)],
                            color=color, alpha=0.2, linewidth=0)
        if panel.low == 0:
            ax.set_ylim(bottom=0)
        ax.set_title(panel.title)
        ax.set_xlabel("search epoch")
        ax.set_ylabel(panel.ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize="small")
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
