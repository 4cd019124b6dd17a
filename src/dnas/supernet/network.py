"""Supernets: the weight-sharing networks built around the searched cells.

``forward(x, cell_weights, active, bypass)`` takes one weight matrix per cell (``cell_weights[l]`` of
shape ``(E, K)``), so that every cell can read its own copy of the activated architecture weights:
the search loop passes the same tensor to all cells of a type, Lambda-DARTS passes per-cell leaves
to read the per-cell gradients ``dL/dA_l``. ``active`` optionally maps a cell type to a CPU bool mask
of the (edge, op) pairs that may be nonzero; the others are not computed. With partial channel
connections (``partial > 1``), ``bypass`` optionally maps a cell type to the ``(E,)`` coefficients of
the channels that bypass the ops (PC-DARTS' edge weights); with ``aux_skip`` every edge carries
DARTS-'s auxiliary skip connection, weighted by :meth:`Supernet.set_aux_skip`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from dnas.errors import DnasError
from dnas.registry import Registry
from dnas.spaces.base import SearchSpace
from dnas.spaces.ops import FactorizedReduce, ReLUConvBN, ResNetBasicBlock
from dnas.supernet.fused import FusedCell
from dnas.supernet.layout import search_layout
from dnas.supernet.reference import ReferenceCell


class Supernet(nn.Module):
    """The base of the search networks. A network of one's own (``dnas.register_space(space, supernet=...)``)
    sets :attr:`space`, :attr:`cells` (one node computation per searched cell, a class of
    :func:`node_cell_class`, or a :class:`DartsCellBlock`) and :attr:`cell_types` (the cell type of each),
    and computes ``forward(x, cell_weights, active=None, bypass=None)`` as the module docstring says."""

    space: SearchSpace  # what it was built from: the cell topologies components read
    cell_types: list[str]
    cells: nn.ModuleList

    def cells_of_type(self, cell_type: str) -> list[int]:
        return [i for i, t in enumerate(self.cell_types) if t == cell_type]

    def per_cell(self, weights_by_type: Mapping[str, Tensor]) -> list[Tensor]:
        """The weight list for ``forward`` when all cells of a type share one tensor."""
        return [weights_by_type[t] for t in self.cell_types]

    def node_cells(self) -> list[FusedCell | ReferenceCell]:
        """The node computation of every cell, in order."""
        return [c.nodes if isinstance(c, DartsCellBlock) else c for c in self.cells]  # type: ignore[misc]

    @property
    def partial(self) -> int:
        """``K``: the ops of every edge see ``1/K`` of its channels (PC-DARTS; 1: all of them)."""
        return self.node_cells()[0].partial

    def set_aux_skip(self, coef: float) -> None:
        """The weight of the auxiliary skip connection of every edge (supernets built with ``aux_skip``)."""
        for cell in self.node_cells():
            cell.aux_coef = coef


def node_cell_class(fused: bool) -> type[FusedCell] | type[ReferenceCell]:
    """The node computation of a searched cell: :class:`FusedCell`, or the per-edge :class:`ReferenceCell`.
    Both take ``(family, topology, channels, node_bn, partial, aux_skip)`` and compute the same."""
    return FusedCell if fused else ReferenceCell


class DartsCellBlock(nn.Module):
    """A DARTS-family cell: preprocess the two inputs, compute the nodes, concatenate them."""

    def __init__(self, space: SearchSpace, cell_type: str, c_pp: int, c_p: int, c: int, reduction_prev: bool,
                 fused: bool, node_bn: bool, partial: int = 1, aux_skip: bool = False):
        super().__init__()
        self.preprocess0 = (
            FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        )
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.nodes: FusedCell | ReferenceCell = node_cell_class(fused)("darts", space.cells[cell_type], c, node_bn,
                                                                  partial, aux_skip)

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, active: Tensor | None,
                bypass: Tensor | None = None) -> Tensor:
        return torch.cat(self.nodes([self.preprocess0(s0), self.preprocess1(s1)], weights, active, bypass), dim=1)


class DartsSupernet(Supernet):
    """DARTS search network: stem (3x3 conv, C*stem_multiplier), ``layers`` cells with reduction
    cells at ``layers//3`` and ``2*layers//3`` (channels doubled there), global pooling, linear."""

    def __init__(self, space: SearchSpace, channels: int, layers: int, num_classes: int, in_channels: int = 3,
                 stem_multiplier: int = 3, fused: bool = True, node_bn: bool = False, partial: int = 1,
                 aux_skip: bool = False):
        super().__init__()
        self.space = space
        c_stem = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        c_pp, c_p, c = c_stem, c_stem, channels
        reduction_prev = False
        reductions = {layers // 3, 2 * layers // 3}
        self.cells = nn.ModuleList()
        self.cell_types = []
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c *= 2
            cell_type = "reduce" if reduction else "normal"
            self.cells.append(DartsCellBlock(space, cell_type, c_pp, c_p, c, reduction_prev, fused, node_bn, partial,
                                             aux_skip))
            self.cell_types.append(cell_type)
            reduction_prev = reduction
            c_pp, c_p = c_p, space.cells[cell_type].num_nodes * c
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: Tensor, cell_weights: Sequence[Tensor], active: Mapping[str, Tensor | None] | None = None,
                bypass: Mapping[str, Tensor] | None = None) -> Tensor:
        s0 = s1 = self.stem(search_layout(x))
        for cell, cell_type, w in zip(self.cells, self.cell_types, cell_weights, strict=True):
            s0, s1 = s1, cell(s0, s1, w, active.get(cell_type) if active else None,
                              bypass.get(cell_type) if bypass else None)
        return self.classifier(self.pool(s1).flatten(1))


class NB201Supernet(Supernet):
    """NAS-Bench-201 search network: stem, 3 stages of ``layers`` cells (C, 2C, 4C) joined by
    residual reduction blocks, BN-ReLU, global pooling, linear."""

    def __init__(self, space: SearchSpace, channels: int, layers: int, num_classes: int, in_channels: int = 3,
                 fused: bool = True, node_bn: bool = False, partial: int = 1, aux_skip: bool = False):
        super().__init__()
        self.space = space
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        topology = space.cells["cell"]
        self.cells = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.cell_types = []
        self._layout: list[tuple[str, int]] = []  # ("cell", index) or ("block", index)
        c_prev = channels
        for stage, c in enumerate((channels, 2 * channels, 4 * channels)):
            if stage > 0:
                self._layout.append(("block", len(self.blocks)))
                self.blocks.append(ResNetBasicBlock(c_prev, c, 2))
            for _ in range(layers):
                self._layout.append(("cell", len(self.cells)))
                self.cells.append(node_cell_class(fused)("nb201", topology, c, node_bn, partial, aux_skip))
                self.cell_types.append("cell")
            c_prev = c
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: Tensor, cell_weights: Sequence[Tensor], active: Mapping[str, Tensor | None] | None = None,
                bypass: Mapping[str, Tensor] | None = None) -> Tensor:
        if len(cell_weights) != len(self.cells):
            raise ValueError(f"{len(cell_weights)} weight matrices for {len(self.cells)} cells")
        mask = active.get("cell") if active else None
        coef = bypass.get("cell") if bypass else None
        h = self.stem(search_layout(x))
        for kind, i in self._layout:
            h = self.blocks[i](h) if kind == "block" else self.cells[i]([h], cell_weights[i], mask, coef)[-1]
        return self.classifier(self.pool(self.lastact(h)).flatten(1))


#: ``builder(space, channels, layers, num_classes, in_channels, *, fused, node_bn, partial, aux_skip)``: the
#: search network of a space (a :class:`Supernet`); the constructors of the built-in supernets have this form
SupernetBuilder = Callable[..., Supernet]
#: the search networks of registered spaces whose macro network is not their family's, by space name
#: (``dnas.register_space(space, supernet=builder)`` adds one)
SUPERNETS: Registry[SupernetBuilder] = Registry("supernet")


def build_supernet(space: SearchSpace, *, num_classes: int, in_channels: int = 3, channels: int | None = None,
                   layers: int | None = None, fused: bool = True, node_bn: bool = False, partial: int = 1,
                   aux_skip: bool = False) -> Supernet:
    """The supernet of ``space`` (its own builder in :data:`SUPERNETS`, else its family's);
    ``fused=False`` builds the per-edge reference; ``partial`` and ``aux_skip``: see the module docstring."""
    channels = channels or space.default_channels
    layers = layers or space.default_layers
    if space.name in SUPERNETS:
        builder = SUPERNETS.get(space.name)
    else:
        builder = DartsSupernet if space.family == "darts" else NB201Supernet
    net = builder(space, channels, layers, num_classes, in_channels, fused=fused, node_bn=node_bn, partial=partial,
                  aux_skip=aux_skip)
    if not isinstance(net, Supernet):
        raise DnasError(f"the supernet builder of the {space.name} space returned a {type(net).__name__}, not a "
                        "dnas.supernet.Supernet")
    return net


def copy_into_reference(fused: Supernet, reference: Supernet) -> None:
    """Make ``reference`` (built with ``fused=False``, same shape) compute exactly what ``fused`` does."""
    outside_nodes = {
        k: v for k, v in fused.state_dict().items() if not k.startswith("cells.") or ".preprocess" in k
    }
    node_pairs: list[tuple[FusedCell, ReferenceCell]] = []
    for f_cell, r_cell in zip(fused.cells, reference.cells, strict=True):
        f_nodes = f_cell.nodes if isinstance(f_cell, DartsCellBlock) else f_cell
        r_nodes = r_cell.nodes if isinstance(r_cell, DartsCellBlock) else r_cell
        if not (isinstance(f_nodes, FusedCell) and isinstance(r_nodes, ReferenceCell)):
            raise TypeError("copy_into_reference copies a fused supernet into one built with fused=False")
        node_pairs.append((f_nodes, r_nodes))
    reference.load_state_dict(outside_nodes, strict=False)
    for f_nodes, r_nodes in node_pairs:
        r_nodes.copy_from(f_nodes)


def op_output_floats(space: SearchSpace, channels: int, layers: int, image_size: int, batch: int) -> int:
    """A lower bound of the floats one forward pass of the supernet keeps for backward: one output per
    (edge, computed op) of every cell, ``batch x C x H x W`` at the cell's width and resolution."""
    ops = max(sum(op != "none" for op in edge) for topo in space.cells.values() for edge in topo.edge_ops)
    edges = max(topo.num_edges for topo in space.cells.values())
    total = 0
    if space.family == "nb201":
        for stage in range(3):
            total += layers * (channels << stage) * (image_size >> stage) ** 2
    else:
        reduced = 0
        for i in range(layers):
            reduced += i in {layers // 3, 2 * layers // 3}
            total += (channels << reduced) * (image_size >> reduced) ** 2
    return batch * edges * ops * total
