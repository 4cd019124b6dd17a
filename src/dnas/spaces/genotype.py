"""Genotypes: the discrete cells a search derives, with JSON and NB201 arch-string forms.

A genotype maps each cell type to a list of ``(op, input_node)`` pairs. For DARTS-style spaces
there are two pairs per intermediate node, listed node by node (as in the DARTS code's
``genotypes.py``), and the cell output concatenates ``concat`` nodes. The recurrent space (``rnn``)
has one ``(activation, input_node)`` pair per intermediate node (node 0 is the cell's initial state)
and averages the ``concat`` nodes, as DARTS' ``rnn/genotypes.py`` lists them. For NAS-Bench-201 there is
one pair per edge in edge order, and the arch string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``
is the canonical form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dnas.errors import DnasError
from dnas.runtime.atomic import atomic_write_text
from dnas.runtime.reading import read_json, shorten
from dnas.spaces.base import PARAMETER_FREE_OPS, SPACES, get_space
from dnas.spaces.nb201 import NB201_OPS

Pair = tuple[str, int]


def _pair(item: object) -> Pair:
    """``[op, input]`` of a genotype file as a pair (an op name and a node index)."""
    if not isinstance(item, list | tuple) or len(item) != 2:
        raise ValueError(f"{shorten(item)} is not an [op, input] pair")
    op, src = item
    if not isinstance(op, str):
        raise ValueError(f"the op {shorten(op)} is not a name")
    return op, _index(src)


def _index(value: object) -> int:
    """A node index of a genotype file (an integer, not a boolean or a fraction)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"{shorten(value)} is not a node index")
    return int(value)


@dataclass(frozen=True)
class Genotype:
    space: str
    cells: dict[str, tuple[Pair, ...]]
    concat: dict[str, tuple[int, ...]] = field(default_factory=dict)

    # ----- NAS-Bench-201 -------------------------------------------------------------------------
    @property
    def arch_str(self) -> str:
        """The NAS-Bench-201 arch string of an ``nb201`` genotype."""
        if self.space != "nb201":
            raise ValueError("arch strings exist only for the nb201 space")
        return self._edge_string()

    def _edge_string(self) -> str:
        """The cell in the arch-string form, for any space with NAS-Bench-201's DAG (the ``nb201`` family)."""
        pairs = self.cells["cell"]
        groups, start = [], 0
        for node in (1, 2, 3):
            groups.append("|" + "|".join(f"{op}~{src}" for op, src in pairs[start : start + node]) + "|")
            start += node
        return "+".join(groups)

    @classmethod
    def from_arch_str(cls, arch: str) -> Genotype:
        """Parse ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|`` (checked against the NB201 ops)."""
        nodes = arch.strip().split("+")
        pairs: list[Pair] = []
        try:
            if len(nodes) != 3:
                raise ValueError
            for node, group in enumerate(nodes, start=1):
                items = [x for x in group.strip().split("|") if x]
                if len(items) != node:
                    raise ValueError
                for src, item in enumerate(items):
                    op, inp = item.split("~")
                    if op not in NB201_OPS or int(inp) != src:
                        raise ValueError
                    pairs.append((op, src))
        except ValueError:
            raise DnasError(
                f"{arch!r} is not a NAS-Bench-201 arch string; expected the form "
                "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' with ops from " + ", ".join(NB201_OPS)
            ) from None
        return cls(space="nb201", cells={"cell": tuple(pairs)})

    # ----- statistics ----------------------------------------------------------------------------
    def count(self, op: str) -> int:
        return sum(1 for pairs in self.cells.values() for o, _ in pairs if o == op)

    def count_parameter_free(self) -> int:
        return sum(1 for pairs in self.cells.values() for o, _ in pairs if o in PARAMETER_FREE_OPS)

    # ----- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out: dict = {"space": self.space}
        for cell_type, pairs in self.cells.items():
            out[cell_type] = [[op, src] for op, src in pairs]
            if cell_type in self.concat:
                out[f"{cell_type}_concat"] = list(self.concat[cell_type])
        if self.space == "nb201":
            out["arch_str"] = self.arch_str
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Genotype:
        try:
            space = data["space"]
            if space == "nb201" and "arch_str" in data:
                return cls.from_arch_str(data["arch_str"])
            cell_types = [k for k in data if k not in ("space", "arch_str") and not k.endswith("_concat")]
            cells = {t: tuple(_pair(item) for item in data[t]) for t in cell_types}
            concat = {t: tuple(_index(i) for i in data[f"{t}_concat"]) for t in cell_types if f"{t}_concat" in data}
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DnasError(f"not a dnas genotype ({type(err).__name__} {shorten(str(err))}); expected the JSON that "
                            "dnas search writes") from None
        genotype = cls(space=str(space), cells=cells, concat=concat)
        genotype.validate()
        return genotype

    def validate(self) -> None:
        """Raise :class:`DnasError` unless the cells fit the space: its cell types, ops and node count
        (NB201: one op per edge in edge order; DARTS family: two (op, input) pairs per node, each input
        an earlier node, the concatenated nodes among them; recurrent: one pair per node)."""
        if self.space not in SPACES.names():
            raise DnasError(f"the genotype names the search space {shorten(self.space)}, which dnas does not know; "
                            f"spaces are {', '.join(SPACES.names())}")
        space = get_space(self.space)
        if set(self.cells) != set(space.cells):
            raise DnasError(f"a {space.name} genotype has the cells {', '.join(space.cells)}, not "
                            f"{', '.join(shorten(t, 20) for t in self.cells) or 'none'}")
        for cell_type, pairs in self.cells.items():
            ops = set(space.cells[cell_type].op_names) | {"none"}
            bad = sorted({op for op, _ in pairs if op not in ops})
            if bad:
                raise DnasError(f"unknown op(s) {', '.join(shorten(op, 30) for op in bad[:3])} in the {cell_type} cell "
                                f"of a {space.name} genotype; its ops are {', '.join(sorted(ops))}")
            if space.family == "nb201":
                expected = [src for node in (1, 2, 3) for src in range(node)]
                if [src for _, src in pairs] != expected:
                    raise DnasError("an nb201 genotype lists 6 (op, input) pairs in edge order: inputs "
                                    f"{expected}, not {[src for _, src in pairs][:12]}")
                continue
            if space.family == "rnn":  # one (activation, input) pair per node; node k reads one of 0..k-1
                if not 0 < len(pairs) <= 64 or any(not 0 <= src <= k for k, (_, src) in enumerate(pairs)):
                    raise DnasError(f"the {cell_type} cell lists one (activation, input) pair per node (at most 64), "
                                    "node k reading one of the nodes 0..k-1")
                if any(not 0 <= i <= len(pairs) for i in self.concat.get(cell_type, ())):
                    raise DnasError(f"the {cell_type} concat names nodes outside 0..{len(pairs)}")
                continue
            if not pairs or len(pairs) % 2 or len(pairs) > 64:
                raise DnasError(f"the {cell_type} cell has {len(pairs)} (op, input) pairs; expected two per node "
                                "(at most 32 nodes)")
            for k, (_, src) in enumerate(pairs):
                if not 0 <= src < 2 + k // 2:
                    raise DnasError(f"pair {k} of the {cell_type} cell reads node {src}, which does not exist yet")
            nodes = 2 + len(pairs) // 2
            concat = self.concat.get(cell_type, ())
            if any(not 0 <= i < nodes for i in concat):
                raise DnasError(f"the {cell_type} concat names nodes outside 0..{nodes - 1}")

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        data = read_json(path, "genotype file", "genotype")
        if not isinstance(data, dict):
            raise DnasError(f"{str(path)!r} does not hold a genotype object")
        return cls.from_dict(data)

    def describe(self) -> str:
        """A human-readable multi-line view of the cells."""
        family = get_space(self.space).family if self.space in SPACES else None
        if self.space == "nb201" or family == "nb201":  # a registered space with NB201's DAG too
            return f"{self.space} cell: {self._edge_string()}"
        if self.space == "rnn":  # one (activation, input) pair per node; the output is the mean of ``concat``
            lines = []
            for cell_type, pairs in self.cells.items():
                lines.append(f"{cell_type} cell:")
                lines += [f"  node {node} <- {op}({src})" for node, (op, src) in enumerate(pairs, start=1)]
                if cell_type in self.concat:
                    lines.append(f"  output = mean{list(self.concat[cell_type])}")
            return "\n".join(lines)
        lines = []
        for cell_type, pairs in self.cells.items():
            lines.append(f"{cell_type} cell:")
            for i in range(0, len(pairs), 2):
                node = i // 2 + 2
                ins = ", ".join(f"{op}({src})" for op, src in pairs[i : i + 2])
                lines.append(f"  node {node} <- {ins}")
            if cell_type in self.concat:
                lines.append(f"  output = concat{list(self.concat[cell_type])}")
        return "\n".join(lines)
