"""Cell drawings: the DAG of a derived cell with its edges labelled by their ops.

DARTS-family cells (DARTS space, S1-S4) are drawn as in the DARTS code: the inputs ``c_{k-2}``
and ``c_{k-1}`` (outputs of the two previous cells), the intermediate nodes ``0 .. 3``, and the
output ``c_{k}`` that concatenates the ``concat`` nodes; every kept ``(op, input)`` pair is an edge
labelled with its op. NAS-Bench-201 cells are drawn with their nodes ``0`` (input) .. ``3``
(output) and one edge per non-``none`` op (``none`` is a missing edge, as in the network).
Parameter-free ops (skip, pooling, noise) are dashed, convolutions solid; every op has its own
colour, the same as in the op-strength trajectories of the run report.

Two renderers produce the same graph:

* **Graphviz** (``dot``, through the ``graphviz`` Python package: ``pip install 'dnas[draw]'``
  plus the system binary, ``apt-get install graphviz``), the field's habit; SVG and PNG.
* **builtin**, pure Python, SVG only, used when Graphviz is absent: a layered layout from left to
  right, ``rank(input) = 0``, ``rank(v) = 1 + max rank of its sources``, nodes of a rank stacked
  in index order; edges are quadratic Bezier curves, bent away from the middle of the drawing when
  they skip ranks and fanned out when several join the same two nodes.

Both write every node as ``<g class="node">`` and every edge as ``<g class="edge">``, each with a
``<title>``, so the drawings can be inspected (and are tested) the same way.
"""

from __future__ import annotations

import html
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dnas.errors import DnasError
from dnas.runtime.ownership import check_file_is_ours, is_marked_png, is_marked_svg, marked_png, marked_svg
from dnas.spaces import PARAMETER_FREE_OPS, Genotype, get_space

#: one colour per op, shared by drawings and trajectory charts
OP_COLORS = {
    "none": "#9e9e9e",
    "skip_connect": "#d62728",
    "max_pool_3x3": "#8c564b",
    "avg_pool_3x3": "#bcbd22",
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#17becf",
    "dil_conv_3x3": "#2ca02c",
    "dil_conv_5x5": "#9467bd",
    "nor_conv_1x1": "#17becf",
    "nor_conv_3x3": "#1f77b4",
    "noise": "#ff7f0e",
}
NODE_FILL = {"input": "#c8e6c9", "node": "#bbdefb", "output": "#fff3b0"}
CONCAT_COLOR = "#9e9e9e"
PNG_HINT = ("PNG drawings need Graphviz (apt-get install graphviz, then pip install 'dnas[draw]'); "
            "write an .svg instead, which needs nothing else")


def op_color(op: str) -> str:
    return OP_COLORS.get(op, "#444444")


def is_parameter_free(op: str) -> bool:
    return op in PARAMETER_FREE_OPS


# ----- the graph of a cell ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    id: str
    label: str
    kind: str  # "input", "node" or "output"


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    op: str | None  # None: the concatenation into the cell output


@dataclass(frozen=True)
class CellGraph:
    name: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


def genotype_edges(genotype: Genotype) -> dict[str, list[tuple[int, int, str]]]:
    """Per cell type the kept ``(source node, destination node, op)`` triples, in the node numbering
    of the space's :class:`~dnas.spaces.CellTopology` (inputs first)."""
    space = get_space(genotype.space)
    out: dict[str, list[tuple[int, int, str]]] = {}
    for cell_type, pairs in genotype.cells.items():
        topo = space.cells.get(cell_type)
        if topo is None:
            raise DnasError(f"the {genotype.space} space has no {cell_type!r} cell (it has "
                            f"{', '.join(space.cells)}); is the genotype from another space?")
        if space.family == "nb201":
            if len(pairs) != topo.num_edges:
                raise DnasError(f"an nb201 cell has {topo.num_edges} edges, the genotype lists {len(pairs)}")
            out[cell_type] = [(src, dst, op) for (op, _), (src, dst) in zip(pairs, topo.edges, strict=True)]
            continue
        per_node, rest = divmod(len(pairs), topo.num_nodes)
        if rest or not per_node:
            raise DnasError(f"the {cell_type} cell lists {len(pairs)} (op, input) pairs, not a multiple of its "
                            f"{topo.num_nodes} intermediate nodes")
        triples = []
        for i, (op, src) in enumerate(pairs):
            dst = topo.num_inputs + i // per_node
            if not 0 <= src < dst:
                raise DnasError(f"the {cell_type} cell feeds node {dst - topo.num_inputs} from input {src}, which "
                                "is not an earlier node")
            triples.append((src, dst, op))
        out[cell_type] = triples
    return out


def node_label(family: str, node: int, num_inputs: int) -> str:
    """``c_{k-2}``, ``c_{k-1}``, ``0`` .. ``3`` in DARTS cells (intermediate nodes from 0, as the
    DARTS code draws them); the node number itself in NAS-Bench-201 cells."""
    if family == "nb201":
        return str(node)
    if node < num_inputs:
        return f"c_{{k-{num_inputs - node}}}"
    return str(node - num_inputs)


def cell_graphs(genotype: Genotype) -> dict[str, CellGraph]:
    """The drawable graph of every cell type of ``genotype``."""
    space = get_space(genotype.space)
    graphs = {}
    for cell_type, triples in genotype_edges(genotype).items():
        topo = space.cells[cell_type]
        if space.family == "nb201":
            last = topo.num_inputs + topo.num_nodes - 1
            nodes = [Node(f"n{v}", node_label(space.family, v, topo.num_inputs),
                          "input" if v < topo.num_inputs else "output" if v == last else "node")
                     for v in range(last + 1)]
            edges = [Edge(f"n{s}", f"n{d}", op) for s, d, op in triples if op != "none"]
        else:
            nodes = [Node(f"n{v}", node_label(space.family, v, topo.num_inputs),
                          "input" if v < topo.num_inputs else "node") for v in range(topo.num_inputs + topo.num_nodes)]
            nodes.append(Node("out", "c_{k}", "output"))
            edges = [Edge(f"n{s}", f"n{d}", op) for s, d, op in triples]
            concat = genotype.concat.get(cell_type) or tuple(topo.intermediate_nodes)
            edges += [Edge(f"n{v}", "out", None) for v in concat]
        graphs[cell_type] = CellGraph(cell_type, tuple(nodes), tuple(edges))
    return graphs


# ----- Graphviz -------------------------------------------------------------------------------------------
def graphviz_available() -> bool:
    """The ``graphviz`` package and the ``dot`` binary are both installed."""
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


def render_graphviz(graph: CellGraph, fmt: str) -> bytes:
    """``dot -T<fmt>`` of the cell (``svg`` or ``png``)."""
    import graphviz

    dot = graphviz.Digraph(graph.name)
    dot.attr(rankdir="LR", bgcolor="transparent", nodesep="0.3", ranksep="0.9")
    dot.attr("node", shape="box", style="filled,rounded", fontname="Helvetica", fontsize="13", height="0.45",
             penwidth="1.2", color="#555555")
    dot.attr("edge", fontname="Helvetica", fontsize="11", penwidth="1.6", arrowsize="0.7")
    for node in graph.nodes:
        dot.node(node.id, node.label, fillcolor=NODE_FILL[node.kind])
    for kind, rank in (("input", "source"), ("output", "sink")):  # inputs leftmost, output rightmost
        with dot.subgraph() as same:
            same.attr(rank=rank)
            for node in graph.nodes:
                if node.kind == kind:
                    same.node(node.id)
    for edge in graph.edges:
        if edge.op is None:
            dot.edge(edge.src, edge.dst, color=CONCAT_COLOR, penwidth="1.0")
        else:
            color = op_color(edge.op)
            dot.edge(edge.src, edge.dst, label=edge.op, color=color, fontcolor=color,
                     style="dashed" if is_parameter_free(edge.op) else "solid")
    try:
        return dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise DnasError("Graphviz's dot program was not found; install it (apt-get install graphviz) or draw "
                        "SVG with the builtin renderer") from None


# ----- the builtin SVG renderer ---------------------------------------------------------------------------
NODE_W, NODE_H = 74.0, 32.0
RANK_GAP, ROW_GAP, PAD = 200.0, 78.0, 46.0
LABEL_TRIES = (0.62, 0.5, 0.74, 0.4, 0.84, 0.3)  # where along its curve a label may sit, preferred first
FONT = "Helvetica, Arial, sans-serif"


def node_ranks(graph: CellGraph) -> dict[str, int]:
    """``rank(input) = 0``, ``rank(v) = 1 + max rank of the sources of v`` (nodes in topological order)."""
    sources: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for edge in graph.edges:
        sources[edge.dst].append(edge.src)
    ranks: dict[str, int] = {}
    for node in graph.nodes:  # listed inputs first, each node after its sources
        if node.kind == "input":
            ranks[node.id] = 0
        else:
            ranks[node.id] = 1 + max((ranks[s] for s in sources[node.id] if s in ranks), default=0)
    return ranks


def _layout(graph: CellGraph) -> tuple[dict[str, tuple[float, float]], float, float]:
    """Centre of every node, and the drawing's width and height."""
    ranks = node_ranks(graph)
    columns: dict[int, list[str]] = {}
    for node in graph.nodes:
        columns.setdefault(ranks[node.id], []).append(node.id)
    tallest = max(len(c) for c in columns.values())
    height = 2 * PAD + (tallest - 1) * ROW_GAP + NODE_H
    positions = {}
    for rank, ids in columns.items():
        top = height / 2 - (len(ids) - 1) * ROW_GAP / 2
        for i, node_id in enumerate(ids):
            positions[node_id] = (PAD + NODE_W / 2 + rank * RANK_GAP, top + i * ROW_GAP)
    width = 2 * PAD + NODE_W + max(columns) * RANK_GAP
    return positions, width, height


def _clip(center: tuple[float, float], toward: tuple[float, float]) -> tuple[float, float]:
    """Where the segment from a node's centre towards ``toward`` leaves the node's box."""
    dx, dy = toward[0] - center[0], toward[1] - center[1]
    if dx == 0 and dy == 0:
        return center
    scale = min((NODE_W / 2) / abs(dx) if dx else math.inf, (NODE_H / 2) / abs(dy) if dy else math.inf)
    return center[0] + dx * scale, center[1] + dy * scale


def _bends(graph: CellGraph, positions: dict[str, tuple[float, float]], height: float) -> list[float]:
    """Signed sideways offset of each edge's control point: edges that skip ranks bend far enough
    to pass the nodes between (away from the drawing's middle; within one row, alternately up and
    down), parallel edges fan out."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, edge in enumerate(graph.edges):
        groups.setdefault((edge.src, edge.dst), []).append(i)
    bends = [0.0] * len(graph.edges)
    for (src, dst), members in groups.items():
        (x1, y1), (x2, y2) = positions[src], positions[dst]
        span = round(abs(x2 - x1) / RANK_GAP)
        middle = (y1 + y2) / 2
        if y1 == y2 == height / 2:  # one row: alternate by the rank of the source
            side = -1.0 if round((x1 - PAD - NODE_W / 2) / RANK_GAP) % 2 == 0 else 1.0
        else:
            side = -1.0 if middle < height / 2 or (middle == height / 2 and y2 <= y1) else 1.0
        base = side * (NODE_H + 28.0) * max(span - 1, 0)
        for j, i in enumerate(members):
            bends[i] = base + (j - (len(members) - 1) / 2) * 34.0
    return bends


Box = tuple[float, float, float, float]  # x0, y0, x1, y1
Curve = tuple[float, float, float, float, float, float]  # start, control, end of a quadratic Bezier


def _at(curve: Curve, t: float) -> tuple[float, float]:
    """``B(t) = (1-t)^2 S + 2t(1-t) C + t^2 E``."""
    sx, sy, cx, cy, ex, ey = curve
    a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t * t
    return a * sx + b * cx + c * ex, a * sy + b * cy + c * ey


def _overlap(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _label_width(op: str) -> float:
    return 6.3 * len(op) + 8


def _place_labels(ops: Sequence[str], curves: Sequence[Curve], occupied: list[Box]) -> list[tuple[float, float]]:
    """Centre of each edge label: the first point along its curve (tried in the order of :data:`LABEL_TRIES`
    outwards) whose box overlaps no node and no label placed before; else the least overlapping."""
    centres = []
    for op, curve in zip(ops, curves, strict=True):
        w = _label_width(op)
        best: tuple[float, tuple[float, float]] | None = None
        for t in LABEL_TRIES:
            x, y = _at(curve, t)
            box = (x - w / 2, y - 8, x + w / 2, y + 8)
            clash = sum(_overlap(box, other) for other in occupied)
            if best is None or clash < best[0]:
                best = (clash, (x, y))
            if clash == 0:
                break
        assert best is not None
        x, y = best[1]
        occupied.append((x - w / 2, y - 8, x + w / 2, y + 8))
        centres.append((x, y))
    return centres


def _text(x: float, y: float, text: str, size: float, color: str = "#222222") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-family="{FONT}" font-size="{size:g}" fill="{color}" '
            f'text-anchor="middle" dominant-baseline="central">{html.escape(text)}</text>')


def render_builtin(graph: CellGraph) -> str:
    """The cell as a standalone ``<svg>`` element (pure Python; see the module docstring)."""
    positions, width, height = _layout(graph)
    bends = _bends(graph, positions, height)
    curves: list[Curve] = []
    for edge, bend in zip(graph.edges, bends, strict=True):
        (x1, y1), (x2, y2) = positions[edge.src], positions[edge.dst]
        length = math.hypot(x2 - x1, y2 - y1) or 1.0
        cx, cy = (x1 + x2) / 2 - bend * (y2 - y1) / length, (y1 + y2) / 2 + bend * (x2 - x1) / length
        (sx, sy), (ex, ey) = _clip((x1, y1), (cx, cy)), _clip((x2, y2), (cx, cy))
        curves.append((sx, sy, cx, cy, ex, ey))
    nodes: list[Box] = [(x - NODE_W / 2, y - NODE_H / 2, x + NODE_W / 2, y + NODE_H / 2)
                        for x, y in positions.values()]
    labelled = [(e.op, c) for e, c in zip(graph.edges, curves, strict=True) if e.op is not None]
    centres = _place_labels([op for op, _ in labelled], [c for _, c in labelled], list(nodes))
    # the drawing's extent: nodes, the farthest point of every curve (t = 1/2) and the labels
    ys = [y for box in nodes for y in (box[1], box[3])] + [_at(c, 0.5)[1] for c in curves]
    ys += [y + d for _, y in centres for d in (-8, 8)]
    top, bottom = min(ys) - 14, max(ys) + 14
    colors = sorted({CONCAT_COLOR, *(op_color(e.op) for e in graph.edges if e.op is not None)})
    markers = "".join(
        f'<marker id="arrow-{graph.name}-{c[1:]}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>'
        for c in colors)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="cell" data-cell="{html.escape(graph.name)}" '
             f'width="{width:.0f}" height="{bottom - top:.0f}" viewBox="0 {top:.0f} {width:.0f} {bottom - top:.0f}">',
             f"<title>{html.escape(graph.name)} cell</title><defs>{markers}</defs>"]
    for edge, (sx, sy, cx, cy, ex, ey) in zip(graph.edges, curves, strict=True):
        color = CONCAT_COLOR if edge.op is None else op_color(edge.op)
        dash = ' stroke-dasharray="6,4"' if edge.op is not None and is_parameter_free(edge.op) else ""
        stroke = 1.0 if edge.op is None else 1.8
        title = f"{edge.src}->{edge.dst}" + (f" {edge.op}" if edge.op else " concat")
        parts.append(f'<g class="edge"><title>{html.escape(title)}</title><path d="M{sx:.1f},{sy:.1f} Q{cx:.1f},'
                     f'{cy:.1f} {ex:.1f},{ey:.1f}" fill="none" stroke="{color}" stroke-width="{stroke}"{dash} '
                     f'marker-end="url(#arrow-{graph.name}-{color[1:]})"/></g>')
    for node in graph.nodes:
        x, y = positions[node.id]
        parts.append(f'<g class="node"><title>{html.escape(node.label)}</title><rect x="{x - NODE_W / 2:.1f}" '
                     f'y="{y - NODE_H / 2:.1f}" width="{NODE_W:.0f}" height="{NODE_H:.0f}" rx="8" '
                     f'fill="{NODE_FILL[node.kind]}" stroke="#555555" stroke-width="1.2"/>'
                     + _text(x, y, node.label, 13) + "</g>")
    for (op, _), (x, y) in zip(labelled, centres, strict=True):  # labels last, above every curve
        w = _label_width(op)
        parts.append(f'<rect x="{x - w / 2:.1f}" y="{y - 8:.1f}" width="{w:.1f}" height="16" rx="3" fill="white" '
                     f'fill-opacity="0.85"/>' + _text(x, y, op, 11, op_color(op)))
    parts.append("</svg>")
    return "".join(parts)


# ----- choosing a renderer, writing files -------------------------------------------------------------------
ENGINES = ("auto", "graphviz", "builtin")


def _engine(engine: str) -> str:
    if engine not in ENGINES:
        raise DnasError(f"unknown drawing engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "graphviz" if graphviz_available() else "builtin"
    if engine == "graphviz" and not graphviz_available():
        raise DnasError("the graphviz engine needs the graphviz package and its dot program (pip install "
                        "'dnas[draw]' and apt-get install graphviz)")
    return engine


def render_svg(graph: CellGraph, engine: str = "auto") -> str:
    """The cell as an ``<svg>`` element without XML prolog, ready to inline in HTML."""
    if _engine(engine) == "builtin":
        return render_builtin(graph)
    text = render_graphviz(graph, "svg").decode()
    return text[text.index("<svg"):]


def drawing_paths(out: Path, cell_types: Sequence[str]) -> dict[str, Path]:
    """``out`` for a single cell type, ``<stem>_<cell type><suffix>`` next to it for several."""
    if len(cell_types) == 1:
        return {cell_types[0]: out}
    return {t: out.with_name(f"{out.stem}_{t}{out.suffix}") for t in cell_types}


def draw_genotype(genotype: Genotype, out: str | Path, engine: str = "auto") -> list[Path]:
    """Write the drawing of every cell type of ``genotype`` to ``out`` (``.svg`` or ``.png``); a
    genotype with several cell types gets one file each (:func:`drawing_paths`)."""
    from dnas.runtime.atomic import atomic_write_bytes

    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("svg", "png"):
        raise DnasError(f"--out {out} must end in .svg or .png")
    _engine(engine)  # an unknown engine name is reported first
    if fmt == "png" and (engine == "builtin" or not graphviz_available()):
        raise DnasError(PNG_HINT)
    graphs = cell_graphs(genotype)
    paths = drawing_paths(out, list(graphs))
    for path in paths.values():  # a file there that dnas did not draw is the user's: refuse before writing
        check_file_is_ours(path, is_marked_png if fmt == "png" else is_marked_svg, "drawing")
    data = {}
    for cell_type, graph in graphs.items():  # render everything before writing anything
        if fmt == "png":
            data[cell_type] = marked_png(render_graphviz(graph, "png"))
        else:
            data[cell_type] = marked_svg(render_svg(graph, engine)).encode()
    for cell_type, path in paths.items():
        atomic_write_bytes(path, data[cell_type])
    return list(paths.values())
