"""The weight-sharing supernet: fused mixed edges, per-cell architecture weights."""

from dnas.supernet.network import DartsSupernet, NB201Supernet, Supernet, build_supernet, copy_into_reference

__all__ = ["DartsSupernet", "NB201Supernet", "Supernet", "build_supernet", "copy_into_reference"]
