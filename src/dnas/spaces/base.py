"""Search-space descriptions: which cells exist, their DAGs and candidate operations.

A space is pure data. The supernet (``dnas.supernet``) turns it into modules, the discretizers
turn architecture weights over it into a :class:`~dnas.spaces.genotype.Genotype`.

Node numbering inside a cell: input nodes first (``0 .. num_inputs-1``), then the intermediate
nodes. Edges are listed by destination node, then source node, which is the order used by the
DARTS code (14 edges) and by NAS-Bench-201 arch strings (6 edges). Architecture weights of a cell
type form a matrix of shape ``(num_edges, ops_per_edge)``: row ``e`` holds the weights of the
candidate operations ``edge_ops[e]`` in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnas.registry import Registry

#: ops counted as parameter-free in the collapse diagnostics. ``identity`` is the recurrent cell's
#: linear op: its node is a gated copy of a linear map of its input, with no nonlinearity (the
#: recurrent analogue of ``skip_connect``; its gate ``W_i`` is shared by the node's ops). An op
#: registered with ``dnas.register_op(..., parameter_free=True)`` is added here.
PARAMETER_FREE_OPS: set[str] = {"none", "skip_connect", "avg_pool_3x3", "max_pool_3x3", "noise", "identity"}


@dataclass(frozen=True)
class CellTopology:
    """The DAG of one cell type and the candidate operations on each of its edges."""

    num_inputs: int
    num_nodes: int
    edge_ops: tuple[tuple[str, ...], ...]
    reduction: bool = False

    def __post_init__(self) -> None:
        if len(self.edge_ops) != len(self.edges):
            raise ValueError(f"{len(self.edge_ops)} op lists for {len(self.edges)} edges")
        widths = {len(ops) for ops in self.edge_ops}
        if len(widths) != 1:
            raise ValueError("every edge of a cell must have the same number of candidate ops")

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """(source, destination) pairs ordered by destination, then source."""
        return tuple(
            (src, dst)
            for dst in range(self.num_inputs, self.num_inputs + self.num_nodes)
            for src in range(dst)
        )

    @property
    def num_edges(self) -> int:
        return len(self.edge_ops)

    @property
    def ops_per_edge(self) -> int:
        return len(self.edge_ops[0])

    @property
    def intermediate_nodes(self) -> range:
        return range(self.num_inputs, self.num_inputs + self.num_nodes)

    def incoming(self, node: int) -> list[int]:
        """Indices of the edges that end in ``node``."""
        return [e for e, (_, dst) in enumerate(self.edges) if dst == node]

    def edge_index(self, src: int, dst: int) -> int:
        return self.edges.index((src, dst))

    @property
    def shared_ops(self) -> tuple[str, ...] | None:
        """The op list every edge offers, or None when edges offer different ops (RobustDARTS' S1)."""
        first = self.edge_ops[0]
        return first if all(ops == first for ops in self.edge_ops) else None

    @property
    def op_names(self) -> tuple[str, ...]:
        """Every op name that occurs on some edge, in first-seen order."""
        seen: dict[str, None] = {}
        for ops in self.edge_ops:
            seen.update(dict.fromkeys(ops))
        return tuple(seen)


@dataclass(frozen=True)
class SearchSpace:
    """A named search space: cell topologies plus the shape of the network around them."""

    name: str
    description: str
    family: str  # "darts" (normal/reduction cells), "nb201" (cells + residual blocks) or "rnn" (a recurrent cell)
    cells: dict[str, CellTopology] = field(default_factory=dict)
    derivation: str = "darts"  # default discretizer name
    default_channels: int = 16  # the width: channels, or the embedding and hidden size of a recurrent space
    default_layers: int = 8  # DARTS family: number of cells; NB201: cells per stage; rnn: stacked cells

    @property
    def cell_types(self) -> tuple[str, ...]:
        return tuple(self.cells)

    def alpha_shapes(self) -> dict[str, tuple[int, int]]:
        return {t: (c.num_edges, c.ops_per_edge) for t, c in self.cells.items()}


SPACES: Registry[SearchSpace] = Registry("search space")


def get_space(name: str) -> SearchSpace:
    """The space registered as ``name`` (the package :mod:`dnas.spaces` registers the built-in ones)."""
    return SPACES.get(name)


def list_spaces() -> list[SearchSpace]:
    return [SPACES.get(n) for n in SPACES.names()]

