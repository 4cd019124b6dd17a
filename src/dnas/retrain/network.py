"""Evaluation networks: the derived cell stacked into a network that is trained from scratch.

DARTS family (``darts``, ``s1``-``s4``; Liu et al. 2019, the layout of quark0/darts
``cnn/model.py``): a stem, ``layers`` cells with reduction cells at ``layers//3`` and
``2*layers//3`` (channels doubled there), global average pooling and a linear classifier. A cell
preprocesses its two inputs ``s0, s1`` (the outputs of the two previous cells) to ``C`` channels
and computes its intermediate nodes as

    x_j = o_a(x_{i_a}) + o_b(x_{i_b})        (the two (op, input) pairs of node j)

its output is the channel concatenation of the ``concat`` nodes. Ops are built with
``affine=True`` (learned BatchNorm scale and shift, no BatchNorm after pooling). Options:

* **stem** ``cifar``: 3x3 conv to ``3C`` channels + BN; ``imagenet`` (mobile setting): three
  stride-2 3x3 convs (``C/2``, ``C``, ``C``) so that the first cell sees 1/8 of the input size.
* **auxiliary head** after cell ``2*layers//3`` (training only, loss weight 0.4 in ``dnas train``):
  ReLU, 5x5 average pooling (stride 3 on CIFAR's 8x8 maps, stride 2 on ImageNet's 7x7 maps;
  other map sizes are pooled adaptively to 2x2), 1x1 conv to 128, BN, ReLU, 2x2 conv to 768,
  BN (not in the ImageNet head, as in the DARTS code), ReLU, linear.
* **drop-path** with probability ``p = net.drop_path_prob``: during training the output of every
  op that is not an identity is multiplied per sample by ``m / (1 - p)``, ``m ~ Bernoulli(1 - p)``.

NAS-Bench-201 (Dong & Yang 2020, the ``TinyNetwork`` of D-X-Y/AutoDL-Projects
``lib/models/cell_infers``): a 3x3 conv stem to ``C`` channels + BN, three stages of ``N`` cells at
``C, 2C, 4C`` channels joined by :class:`~dnas.spaces.ops.ResNetBasicBlock` reductions, BN-ReLU,
global pooling, linear. Cell node ``j`` is ``x_j = sum_{i<j} o_ij(x_i)``; edges whose op is
``none`` contribute nothing and are not computed (a node without any other edge is zero).

Every ``forward`` returns ``(logits, auxiliary_logits or None)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnas.errors import DnasError
from dnas.retrain.recurrent import check_recurrent_genotype
from dnas.spaces import Genotype, get_space
from dnas.spaces.ops import (
    DARTS_OP_FACTORIES,
    NB201_OP_FACTORIES,
    FactorizedReduce,
    ReLUConvBN,
    ResNetBasicBlock,
    make_op,
)

#: (channels, layers) of the published evaluation networks when not given
DEFAULT_SHAPES = {("darts", "cifar"): (36, 20), ("darts", "imagenet"): (48, 14), ("nb201", "cifar"): (16, 5)}
STEMS = ("cifar", "imagenet")


def drop_path(x: Tensor, p: float) -> Tensor:
    """Zero whole samples of ``x`` with probability ``p`` and scale the rest by ``1/(1-p)``."""
    keep = 1.0 - p
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


# ----------------------------------------------------------------------------------- validation


def family_of(genotype: Genotype) -> str:
    """``darts``, ``nb201`` or ``rnn``: the network family of the genotype's space."""
    return get_space(genotype.space).family


def check_genotype(genotype: Genotype) -> None:
    """Raise :class:`DnasError` unless ``genotype`` describes cells an evaluation network can be built from."""
    family = family_of(genotype)
    if family == "rnn":
        check_recurrent_genotype(genotype)
        return
    if family == "nb201":
        pairs = genotype.cells.get("cell", ())
        expected = [src for node in (1, 2, 3) for src in range(node)]
        if len(pairs) != 6 or [src for _, src in pairs] != expected:
            raise DnasError(f"the nb201 genotype must list 6 (op, input) pairs in edge order, got {list(pairs)}")
        bad = sorted({op for op, _ in pairs if op not in NB201_OP_FACTORIES})
        if bad:
            raise DnasError(f"unknown NAS-Bench-201 op(s) {', '.join(bad)}; ops are {', '.join(NB201_OP_FACTORIES)}")
        return
    for cell_type in ("normal", "reduce"):
        pairs = genotype.cells.get(cell_type, ())
        if not pairs:
            raise DnasError(f"the {genotype.space} genotype has no {cell_type!r} cell; expected normal and reduce")
        if len(pairs) % 2:
            raise DnasError(f"the {cell_type} cell has {len(pairs)} (op, input) pairs; expected two per node")
        for k, (op, src) in enumerate(pairs):
            if op not in DARTS_OP_FACTORIES:
                raise DnasError(f"unknown op {op!r} in the {cell_type} cell; ops are {', '.join(DARTS_OP_FACTORIES)}")
            if not 0 <= src < 2 + k // 2:
                raise DnasError(f"pair {k} of the {cell_type} cell reads node {src}, which does not exist yet")
        nodes = 2 + len(pairs) // 2
        live = live_nodes(pairs)
        concat = genotype.concat.get(cell_type, tuple(range(2, nodes)))
        if not concat or any(not 0 <= i < nodes for i in concat):
            raise DnasError(f"the {cell_type} concat {list(concat)} names nodes outside 0..{nodes - 1}")
        dead = [i for i in concat if i not in live]
        if dead:
            raise DnasError(f"the {cell_type} concat names node(s) {', '.join(map(str, dead))}, which have no input "
                            "(every incoming pair is none or reads a node without input)")


def live_nodes(pairs: tuple[tuple[str, int], ...]) -> set[int]:
    """The nodes of a DARTS cell that have a value: the two inputs, and every intermediate node with a
    non-``none`` pair reading a node that has one (Fair DARTS' isolated nodes have none)."""
    live = {0, 1}
    for k in range(0, len(pairs), 2):
        if any(op != "none" and src in live for op, src in pairs[k:k + 2]):
            live.add(2 + k // 2)
    return live


# ------------------------------------------------------------------------------------ DARTS family


class DartsEvalCell(nn.Module):
    """A derived DARTS cell with its own weights (see the module docstring). A ``none`` pair is an absent
    edge, and a node without input is left out, with the edges that read it (Fair DARTS' cells)."""

    def __init__(self, pairs: tuple[tuple[str, int], ...], concat: tuple[int, ...], c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_pp, c, affine=True) if reduction_prev
                            else ReLUConvBN(c_pp, c, 1, 1, 0, affine=True))
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=True)
        live = live_nodes(pairs)
        # the pairs that compute something: a real op reading a node that has a value
        self.edges = [k for k, (op, src) in enumerate(pairs) if op != "none" and src in live]
        self.ops = nn.ModuleList(
            make_op("darts", pairs[k][0], c, 2 if reduction and pairs[k][1] < 2 else 1, affine=True)
            for k in self.edges
        )
        self.inputs = [pairs[k][1] for k in self.edges]
        self.nodes = [2 + k // 2 for k in self.edges]  # the node each computed pair feeds
        self.concat = tuple(concat)
        self.out_channels = len(self.concat) * c

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states: dict[int, Tensor] = {0: self.preprocess0(s0), 1: self.preprocess1(s1)}
        for op, src, node in zip(self.ops, self.inputs, self.nodes, strict=True):
            h = op(states[src])
            if self.training and drop_prob > 0.0 and not isinstance(op, nn.Identity):
                h = drop_path(h, drop_prob)
            states[node] = h if node not in states else states[node] + h
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """The auxiliary classifier of the DARTS evaluation networks (see the module docstring)."""

    def __init__(self, c: int, num_classes: int, imagenet: bool = False):
        super().__init__()
        self.imagenet = imagenet
        self.conv1 = nn.Conv2d(c, 128, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(128)
        self.conv2 = nn.Conv2d(128, 768, 2, bias=False)
        self.bn2: nn.Module = nn.Identity() if imagenet else nn.BatchNorm2d(768)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        if self.imagenet and x.shape[-2:] == (7, 7):
            x = F.avg_pool2d(x, 5, stride=2, count_include_pad=False)
        elif not self.imagenet and x.shape[-2:] == (8, 8):
            x = F.avg_pool2d(x, 5, stride=3, count_include_pad=False)
        else:
            x = F.adaptive_avg_pool2d(x, 2)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.classifier(x.flatten(1))


class EvalNetwork(nn.Module):
    """Common interface: ``forward(x) -> (logits, aux_logits | None)`` and ``drop_path_prob``."""

    drop_path_prob: float = 0.0
    has_auxiliary: bool = False


class DartsEvalNetwork(EvalNetwork):
    def __init__(self, genotype: Genotype, *, channels: int, layers: int, num_classes: int, in_channels: int = 3,
                 auxiliary: bool = False, stem: str = "cifar", stem_multiplier: int = 3):
        super().__init__()
        if channels % 2:
            raise DnasError(f"DARTS evaluation networks need an even number of channels, got {channels}")
        self.layers = layers
        self.drop_path_prob = 0.0
        self.stem_kind = stem
        if stem == "cifar":
            c_stem = stem_multiplier * channels
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
            c_pp = c_p = c_stem
            reduction_prev = False
        else:
            half = channels // 2
            self.stem0 = nn.Sequential(
                nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
                nn.Conv2d(half, channels, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels),
            )
            self.stem1 = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(channels))
            c_pp = c_p = channels
            reduction_prev = True
        reductions = {layers // 3, 2 * layers // 3}
        self.aux_position = 2 * layers // 3
        c = channels
        self.cells = nn.ModuleList()
        c_aux = c_p
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c *= 2
            cell_type = "reduce" if reduction else "normal"
            pairs = genotype.cells[cell_type]
            concat = genotype.concat.get(cell_type, tuple(range(2, 2 + len(pairs) // 2)))
            cell = DartsEvalCell(pairs, concat, c_pp, c_p, c, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.out_channels
            if i == self.aux_position:
                c_aux = c_p
        self.has_auxiliary = auxiliary
        if auxiliary:
            self.auxiliary_head = AuxiliaryHead(c_aux, num_classes, imagenet=stem == "imagenet")
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.stem_kind == "cifar":
            s0 = s1 = self.stem(x)
        else:
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.has_auxiliary and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        return logits, aux


# --------------------------------------------------------------------------------------- NB201


class NB201EvalCell(nn.Module):
    """A derived NAS-Bench-201 cell: 4 nodes, node j = sum of its non-``none`` incoming edges."""

    def __init__(self, pairs: tuple[tuple[str, int], ...], c: int):
        super().__init__()
        self.ops = nn.ModuleDict()
        self.incoming: list[list[tuple[str, int]]] = [[] for _ in range(4)]
        k = 0
        for node in (1, 2, 3):
            for src in range(node):
                op = pairs[k][0]
                if op != "none":
                    key = f"{src}_{node}"
                    self.ops[key] = make_op("nb201", op, c, 1, affine=True)
                    self.incoming[node].append((key, src))
                k += 1

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            edges = self.incoming[node]
            if not edges:
                nodes.append(torch.zeros_like(x))
                continue
            total = self.ops[edges[0][0]](nodes[edges[0][1]])
            for key, src in edges[1:]:
                total = total + self.ops[key](nodes[src])
            nodes.append(total)
        return nodes[3]


class NB201EvalNetwork(EvalNetwork):
    def __init__(self, genotype: Genotype, *, channels: int, layers: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        pairs = genotype.cells["cell"]
        blocks: list[nn.Module] = []
        c_prev = channels
        for stage, c in enumerate((channels, 2 * channels, 4 * channels)):
            if stage > 0:
                blocks.append(ResNetBasicBlock(c_prev, c, 2))
            blocks.extend(NB201EvalCell(pairs, c) for _ in range(layers))
            c_prev = c
        self.cells = nn.Sequential(*blocks)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU())
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        h = self.lastact(self.cells(self.stem(x)))
        return self.classifier(F.adaptive_avg_pool2d(h, 1).flatten(1)), None


# ------------------------------------------------------------------------------------- building


def default_shape(genotype: Genotype, stem: str = "cifar") -> tuple[int, int]:
    """The published ``(channels, layers)`` of the evaluation network for this genotype."""
    return DEFAULT_SHAPES[(family_of(genotype), stem)]


def build_eval_network(genotype: Genotype, *, num_classes: int, in_channels: int = 3, channels: int | None = None,
                       layers: int | None = None, auxiliary: bool = False, stem: str = "cifar") -> EvalNetwork:
    """The evaluation network of ``genotype``. ``channels``/``layers`` default to the published
    shapes: DARTS CIFAR C=36 and 20 cells, DARTS ImageNet C=48 and 14 cells, NB201 C=16 and N=5
    cells per stage (``layers`` counts all cells in the DARTS family, cells per stage in NB201)."""
    check_genotype(genotype)
    family = family_of(genotype)
    if stem not in STEMS:
        raise DnasError(f"unknown stem {stem!r}; use cifar or imagenet")
    if family == "nb201" and (stem != "cifar" or auxiliary):
        raise DnasError("the NAS-Bench-201 network has a fixed stem and no auxiliary head; drop stem/auxiliary")
    default_c, default_l = DEFAULT_SHAPES[(family, stem)]
    channels = channels or default_c
    layers = layers or default_l
    if channels < 2 or layers < 1:
        raise DnasError(f"channels must be at least 2 and layers at least 1, got {channels} and {layers}")
    if family == "nb201":
        return NB201EvalNetwork(genotype, channels=channels, layers=layers, num_classes=num_classes,
                                in_channels=in_channels)
    return DartsEvalNetwork(genotype, channels=channels, layers=layers, num_classes=num_classes,
                            in_channels=in_channels, auxiliary=auxiliary, stem=stem)
