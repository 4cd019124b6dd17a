import torch

from dnas.components.discretizers import ArgmaxRule, DartsRule
from dnas.spaces import Genotype, get_space
from dnas.spaces.darts import DARTS_OPS

# DARTS V2 (Liu et al. 2019, quark0/darts cnn/genotypes.py), pairs listed strongest edge first per node
DARTS_V2_NORMAL = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                   ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)]
DARTS_V2_REDUCE = [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                   ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]


def _encode(pairs, topo):
    """Strengths whose DARTS-rule derivation is ``pairs``; ``none`` is made the strongest op everywhere."""
    w = torch.full((topo.num_edges, len(DARTS_OPS)), 0.01)
    w[:, 0] = 0.99  # none must be ignored by the rule
    for i, (op, src) in enumerate(pairs):
        node = i // 2 + 2
        e = topo.edge_index(src, node)
        w[e, DARTS_OPS.index(op)] = 0.9 - 0.1 * (i % 2)
        w[e, DARTS_OPS.index("avg_pool_3x3")] = 0.05  # a weaker op on the same edge
    return w


def test_darts_rule_recovers_darts_v2():
    space = get_space("darts")
    strengths = {"normal": _encode(DARTS_V2_NORMAL, space.cells["normal"]),
                 "reduce": _encode(DARTS_V2_REDUCE, space.cells["reduce"])}
    g = DartsRule()(space, strengths)
    assert list(g.cells["normal"]) == DARTS_V2_NORMAL
    assert list(g.cells["reduce"]) == DARTS_V2_REDUCE
    assert g.concat == {"normal": (2, 3, 4, 5), "reduce": (2, 3, 4, 5)}


def test_darts_rule_ties_keep_edge_order_and_first_op():
    space = get_space("darts")
    w = {t: torch.ones(14, 8) for t in space.cell_types}
    g = DartsRule()(space, w)
    # all equal: the first two edges of every node, first non-none op (max_pool_3x3)
    assert list(g.cells["normal"][:4]) == [("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 2


def test_darts_rule_on_s1_uses_per_edge_ops():
    space = get_space("s1")
    w = {t: torch.tensor([[0.2, 0.8]] * 14) for t in space.cell_types}
    g = DartsRule()(space, w)
    assert g.cells["normal"][0] == ("dil_conv_3x3", 0)  # edge 0 of S1 normal is (skip, dil3)
    assert g.cells["normal"][1] == ("dil_conv_5x5", 1)


def test_argmax_rule_nb201_includes_none():
    space = get_space("nb201")
    arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    target = Genotype.from_arch_str(arch)
    ops = space.cells["cell"].edge_ops[0]
    w = torch.zeros(6, 5)
    for e, (op, _) in enumerate(target.cells["cell"]):
        w[e, ops.index(op)] = 1.0
    g = ArgmaxRule()(space, {"cell": w})
    assert g.arch_str == arch
