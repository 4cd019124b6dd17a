"""The DARTS CNN space (Liu et al., 2019) and the RobustDARTS spaces S1-S4 (Zela et al., 2020).

Cells have two inputs (the outputs of the two previous cells), four intermediate nodes and 14
edges; the cell output is the channel concatenation of the intermediate nodes. Normal cells keep
the resolution, reduction cells halve it on the edges leaving the two input nodes.
"""

from __future__ import annotations

from dnas.spaces.base import SPACES, CellTopology, SearchSpace

DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
NUM_EDGES = 14

_SHORT = {
    "skip": "skip_connect",
    "sep3": "sep_conv_3x3",
    "dil3": "dil_conv_3x3",
    "dil5": "dil_conv_5x5",
    "max": "max_pool_3x3",
    "avg": "avg_pool_3x3",
    "none": "none",
    "noise": "noise",
}


def _expand(pairs: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(_SHORT[o] for o in edge.split(",")) for edge in pairs.split())


def _darts_family(name: str, description: str, normal_ops, reduce_ops) -> SearchSpace:
    return SPACES.register(name)(
        SearchSpace(
            name=name,
            description=description,
            family="darts",
            cells={
                "normal": CellTopology(num_inputs=2, num_nodes=4, edge_ops=normal_ops),
                "reduce": CellTopology(num_inputs=2, num_nodes=4, edge_ops=reduce_ops, reduction=True),
            },
            derivation="darts",
            default_channels=16,
            default_layers=8,
        )
    )


_darts_family(
    "darts",
    "DARTS CNN space: 8 ops on each of 14 edges, normal + reduction cells",
    (DARTS_OPS,) * NUM_EDGES,
    (DARTS_OPS,) * NUM_EDGES,
)
# S1: the two strongest ops of each edge in a DARTS run, as listed by RobustDARTS.
_darts_family(
    "s1",
    "RobustDARTS S1: two ops per edge, chosen per edge",
    _expand(
        "skip,dil3 skip,dil5 skip,dil5 skip,sep3 skip,dil3 max,skip skip,sep3 "
        "skip,sep3 skip,dil3 skip,sep3 max,skip skip,dil3 dil3,dil5 dil3,dil5"
    ),
    _expand(
        "max,avg max,dil3 max,avg max,avg skip,dil5 max,avg max,sep3 "
        "skip,dil3 skip,dil5 max,avg max,avg skip,dil5 skip,dil5 skip,dil5"
    ),
)
_darts_family(
    "s2",
    "RobustDARTS S2: {skip_connect, sep_conv_3x3} on every edge",
    _expand(" ".join(["skip,sep3"] * NUM_EDGES)),
    _expand(" ".join(["skip,sep3"] * NUM_EDGES)),
)
_darts_family(
    "s3",
    "RobustDARTS S3: {none, skip_connect, sep_conv_3x3} on every edge",
    _expand(" ".join(["none,skip,sep3"] * NUM_EDGES)),
    _expand(" ".join(["none,skip,sep3"] * NUM_EDGES)),
)
_darts_family(
    "s4",
    "RobustDARTS S4: {noise, sep_conv_3x3} on every edge (noise = N(0,1) in place of the input)",
    _expand(" ".join(["noise,sep3"] * NUM_EDGES)),
    _expand(" ".join(["noise,sep3"] * NUM_EDGES)),
)
