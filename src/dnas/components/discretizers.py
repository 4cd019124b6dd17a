"""Discretizer slot: from per-op strengths (``Activation.strength``) to a :class:`Genotype`."""

from __future__ import annotations

from torch import Tensor

from dnas.components.base import Component
from dnas.registry import Registry
from dnas.spaces.base import CellTopology, SearchSpace
from dnas.spaces.genotype import Genotype


class Discretizer(Component):
    def __call__(self, space: SearchSpace, strengths: dict[str, Tensor]) -> Genotype:
        raise NotImplementedError


DISCRETIZERS: Registry[type[Discretizer]] = Registry("discretizer")


@DISCRETIZERS.register("darts")
class DartsRule(Discretizer):
    """DARTS: per intermediate node, keep the ``k`` incoming edges whose strongest non-``none`` op
    is strongest (ties: the earlier edge), and on each the arg-max non-``none`` op."""


    def __init__(self, *, edges_per_node: int = 2):
        self.edges_per_node = edges_per_node

    def __call__(self, space: SearchSpace, strengths: dict[str, Tensor]) -> Genotype:
        cells, concat = {}, {}
        for cell_type, topo in space.cells.items():
            chosen = darts_rule_choices(topo, strengths[cell_type], self.edges_per_node)
            cells[cell_type] = tuple((topo.edge_ops[e][k], topo.edges[e][0]) for e, k in chosen)
            concat[cell_type] = tuple(topo.intermediate_nodes)
        return Genotype(space=space.name, cells=cells, concat=concat)


def darts_rule_choices(topo: CellTopology, strengths: Tensor, edges_per_node: int = 2) -> list[tuple[int, int]]:
    """The ``(edge, op column)`` pairs the DARTS rule keeps on ``strengths`` ``(E, K)``: node by node,
    strongest edge first (shared by :class:`DartsRule` and DARTS-PRIME's projection onto discrete cells)."""
    w = strengths.detach().cpu().double()
    chosen: list[tuple[int, int]] = []
    for node in topo.intermediate_nodes:
        best: list[tuple[float, int, int]] = []  # (score, edge, op column)
        for e in topo.incoming(node):
            cols = [k for k, op in enumerate(topo.edge_ops[e]) if op != "none"]
            k = max(cols, key=lambda c: (w[e, c].item(), -c))
            best.append((w[e, k].item(), e, k))
        ranked = sorted(best, key=lambda t: -t[0])[:edges_per_node]  # stable: ties keep edge order
        chosen.extend((e, k) for _, e, k in ranked)  # strongest edge first, as the DARTS code lists them
    return chosen


@DISCRETIZERS.register("argmax")
class ArgmaxRule(Discretizer):
    """NAS-Bench-201: the arg-max op on every edge, ``none`` included."""


    def __call__(self, space: SearchSpace, strengths: dict[str, Tensor]) -> Genotype:
        cells = {}
        for cell_type, topo in space.cells.items():
            w = strengths[cell_type].detach().cpu()
            cells[cell_type] = tuple(
                (topo.edge_ops[e][int(w[e].argmax())], topo.edges[e][0]) for e in range(topo.num_edges)
            )
        return Genotype(space=space.name, cells=cells)


@DISCRETIZERS.register("darts-rnn")
class RecurrentRule(Discretizer):
    """DARTS' rule for the recurrent cell (quark0/darts ``rnn/model_search.py`` ``genotype()``): per
    intermediate node the single incoming edge whose strongest non-``none`` op is strongest (ties: the
    earlier edge), and on it that op (ties: the earlier op). The output averages every intermediate node."""

    def __call__(self, space: SearchSpace, strengths: dict[str, Tensor]) -> Genotype:
        cells, concat = {}, {}
        for cell_type, topo in space.cells.items():
            chosen = darts_rule_choices(topo, strengths[cell_type], edges_per_node=1)
            cells[cell_type] = tuple((topo.edge_ops[e][k], topo.edges[e][0]) for e, k in chosen)
            concat[cell_type] = tuple(topo.intermediate_nodes)
        return Genotype(space=space.name, cells=cells, concat=concat)
