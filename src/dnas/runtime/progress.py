"""Progress bars on stderr (a widget in notebooks, text in terminals)."""

from __future__ import annotations

import sys


def progress_bar(enabled: bool, total: int, initial: int, desc: str, unit: str = "step"):
    """A ``tqdm.auto`` bar on stderr, or None when not ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True, mininterval=1.0, file=sys.stderr,
                desc=desc)
