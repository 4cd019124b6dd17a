"""The weight-sharing supernet: fused mixed edges, per-cell architecture weights."""

from dnas.supernet.network import (
    SUPERNETS,
    DartsSupernet,
    NB201Supernet,
    Supernet,
    build_supernet,
    copy_into_reference,
    node_cell_class,
)

__all__ = ["SUPERNETS", "DartsSupernet", "NB201Supernet", "Supernet", "build_supernet", "copy_into_reference",
           "node_cell_class"]
