"""NAS-Bench-201 (Dong & Yang, 2020): one cell type, 4 nodes, 6 edges, 5 candidate ops.

Node 0 is the cell input, node 3 its output. The supernet stacks N cells per stage over three
stages, with residual reduction blocks between stages. All 5**6 = 15,625 cells are enumerable.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from dnas.spaces.base import SPACES, CellTopology, SearchSpace

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

NB201 = SPACES.register("nb201")(
    SearchSpace(
        name="nb201",
        description="NAS-Bench-201: 5 ops on each of 6 edges, one cell type, 15,625 cells",
        family="nb201",
        cells={"cell": CellTopology(num_inputs=1, num_nodes=3, edge_ops=(NB201_OPS,) * 6)},
        derivation="argmax",
        default_channels=16,
        default_layers=5,
    )
)


def enumerate_cells() -> Iterator[tuple[str, ...]]:
    """Every NB201 cell as a tuple of 6 op names in edge order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."""
    yield from itertools.product(NB201_OPS, repeat=6)
