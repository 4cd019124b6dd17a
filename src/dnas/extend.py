"""Extending dnas from a module of your own: new candidate ops and new search spaces.

Components of the search loop need nothing here: every slot has a public registry in
:mod:`dnas.components` (``ACTIVATIONS``, ``ARCH_REGULARIZERS``, ``DISCRETIZERS``, ...), used as a
decorator on a subclass of the slot's base class. Ops and spaces are registered with the two
functions below::

    import dnas
    from dnas.components import ARCH_REGULARIZERS, ArchRegularizer

    dnas.register_op("gelu_conv_3x3", GeluConv, parameter_free=False)   # GeluConv(C, stride, affine)
    dnas.register_space(dnas.SearchSpace(
        name="nb201-gelu", description="...", family="nb201", derivation="argmax",
        cells={"cell": dnas.CellTopology(1, 3, (("none", "skip_connect", "gelu_conv_3x3"),) * 6)}))

    @ARCH_REGULARIZERS.register("entropy")
    class Entropy(ArchRegularizer): ...

Such a module is a *plugin*: ``dnas --plugin MODULE ...`` (or ``plugins=[...]`` in the Python API)
imports it before any name is looked up, and the run's ``config.yaml`` records it, so that replays,
resumes, reports and the worker processes of ``dnas compare`` import it again
(:mod:`dnas.runtime.plugins`; ``docs/extending.md`` walks through an example).

A registered op runs in the fused supernet through its own per-edge modules
(:class:`dnas.supernet.kinds.PerEdgeOps`), with the same outputs and gradients as the per-edge
reference; everything else of the cell stays fused.
"""

from __future__ import annotations

from collections.abc import Iterable

from dnas.errors import DnasError, expect_type
from dnas.registry import check_name
from dnas.spaces.base import PARAMETER_FREE_OPS, SPACES, SearchSpace
from dnas.spaces.ops import OP_FACTORIES, OpFactory
from dnas.spaces.recurrent import RNN_OPS
from dnas.supernet.kinds import AUX_SKIP
from dnas.supernet.network import SUPERNETS, SupernetBuilder

#: the families a registered op or space may belong to (the recurrent cell is not extensible)
FAMILIES = ("darts", "nb201")
#: the cells each family's networks read: cell type -> (input nodes, reduction cell)
FAMILY_CELLS = {"darts": {"normal": (2, False), "reduce": (2, True)}, "nb201": {"cell": (1, False)}}


def register_op(name: str, factory: OpFactory, *, parameter_free: bool,
                families: Iterable[str] = FAMILIES) -> OpFactory:
    """Make ``name`` a candidate op of the ``families``' spaces (``darts``, ``nb201``, or both).

    ``factory(C, stride, affine) -> nn.Module``, as the built-in op factories: the op maps
    ``(B, C, H, W)`` to ``(B, C, H/stride, W/stride)``; ``affine=False`` builds it for the search
    supernet (whose BatchNorms have no learned scale and shift), ``affine=True`` for the evaluation
    network that ``dnas train`` builds from a derived cell.

    ``parameter_free``: whether the op has no learned parameters (as pooling and ``skip_connect``).
    Such ops are counted in the derived cells' parameter-free count (the collapse diagnostic
    ``parameter_free``), and left out of the ops that PR-DARTS' regularizer treats as parameterised.

    The fused supernet has no grouped kernel for a registered op: it runs the op's own module on
    each edge and mixes its output with the others' (same results as ``fused=False``). A name is
    registered once (a built-in op's name included); registering it again is a :class:`DnasError`.
    Returns ``factory``.
    """
    check_name(name, "op")
    if not callable(factory):
        raise DnasError(f"op {name!r} needs a factory(C, stride, affine) returning an nn.Module, "
                        f"got a {type(factory).__name__}")
    expect_type(f"register_op({name!r})'s parameter_free", parameter_free, bool)
    chosen = (families,) if isinstance(families, str) else tuple(families)
    unknown = [f for f in chosen if f not in FAMILIES]
    if not chosen or unknown:
        raise DnasError(f"op {name!r} can join the families {' and '.join(FAMILIES)}, not {unknown or 'none'}")
    if name in ("none", AUX_SKIP) or name in RNN_OPS or any(name in table for table in OP_FACTORIES.values()):
        raise DnasError(f"op {name!r} is already registered; choose another name")
    for family in chosen:
        OP_FACTORIES[family][name] = factory
    if parameter_free:
        PARAMETER_FREE_OPS.add(name)
    return factory


def register_space(space: SearchSpace, *, supernet: SupernetBuilder | None = None) -> SearchSpace:
    """Make ``space`` searchable by its name (``dnas search --space NAME``, ``dnas.search(space=NAME)``).

    The space's ``family`` says which built-in family's rules it follows:

    * ``darts``: cells ``normal`` and ``reduce`` (the latter with ``reduction=True``), two input nodes
      each and any number of intermediate nodes; derived with the DARTS rule (two edges per node);
      the search network stacks ``layers`` cells, reduction cells at 1/3 and 2/3 of the depth;
    * ``nb201``: one cell ``cell`` with NAS-Bench-201's DAG (one input node, three intermediate nodes,
      six edges); the search network has three stages of ``layers`` cells joined by residual blocks.

    Each edge may offer its own ops (every edge the same number of them), ``none`` and the family's
    ops, built-in or registered with :func:`register_op`. The presets, the derivation and
    ``dnas train`` treat the space as its family.

    ``supernet``: the search network where it differs from the family's, a builder
    ``builder(space, channels, layers, num_classes, in_channels, *, fused, node_bn, partial, aux_skip)``
    returning a :class:`dnas.supernet.Supernet` (the constructors of ``DartsSupernet`` and
    ``NB201Supernet`` have this form; :func:`dnas.supernet.node_cell_class` gives the cells to hold).
    A name is registered once; registering it again is a :class:`DnasError`. Returns ``space``.
    """
    expect_type("register_space's space", space, SearchSpace)
    check_name(space.name, "search space")
    if space.name in SPACES or space.name in SUPERNETS:
        raise DnasError(f"search space {space.name!r} is already registered; choose another name")
    if space.family not in FAMILIES:
        raise DnasError(f"the {space.name} space has the family {space.family!r}; a registered space follows "
                        f"{' or '.join(FAMILIES)}")
    cells = FAMILY_CELLS[space.family]
    if set(space.cells) != set(cells):
        raise DnasError(f"{space.family}-family spaces have the cells {', '.join(cells)}, not "
                        f"{', '.join(space.cells) or 'none'}")
    for cell_type, (inputs, reduction) in cells.items():
        topo = space.cells[cell_type]
        if topo.num_inputs != inputs or topo.reduction != reduction or (space.family == "nb201"
                                                                         and topo.num_nodes != 3):
            nodes = " and 3 intermediate nodes" if space.family == "nb201" else ""
            raise DnasError(f"the {cell_type} cell of {space.family}-family spaces has {inputs} input node(s)"
                            f"{nodes} and reduction={reduction}")
        unknown = [op for op in topo.op_names if op != "none" and op not in OP_FACTORIES[space.family]]
        if unknown:
            raise DnasError(f"the {space.name} space names op(s) {', '.join(unknown)} that the {space.family} family "
                            "lacks; register them with dnas.register_op first")
    if space.default_channels < 2 or space.default_layers < 1 or (
            space.family == "darts" and (space.default_channels % 2 or space.default_layers < 3)):
        raise DnasError(f"the {space.name} space's defaults (channels={space.default_channels}, layers="
                        f"{space.default_layers}) do not build a {space.family} network")
    if supernet is not None and not callable(supernet):
        raise DnasError(f"the supernet of the {space.name} space must be a builder (a class or function), "
                        f"got a {type(supernet).__name__}")
    SPACES.register(space.name)(space)
    if supernet is not None:
        SUPERNETS.register(space.name)(supernet)
    return space
