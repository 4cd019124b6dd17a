import json

import pytest

from dnas.errors import DnasError
from dnas.spaces import SPACES, Genotype, get_space, list_spaces
from dnas.spaces.darts import DARTS_OPS
from dnas.spaces.nb201 import NB201_OPS, enumerate_cells


def test_registered_spaces():
    assert [s.name for s in list_spaces()] == ["darts", "nb201", "rnn", "s1", "s2", "s3", "s4"]
    with pytest.raises(DnasError, match="unknown search space 'foo'; choose one of: darts"):
        get_space("foo")


def test_darts_space_shape():
    space = get_space("darts")
    assert space.cell_types == ("normal", "reduce")
    for topo in space.cells.values():
        assert topo.num_edges == 14 and topo.ops_per_edge == 8
        assert topo.edge_ops[0] == DARTS_OPS
        assert topo.edges[:5] == ((0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
        assert [len(topo.incoming(n)) for n in topo.intermediate_nodes] == [2, 3, 4, 5]
    assert space.cells["reduce"].reduction and not space.cells["normal"].reduction


def test_robust_darts_spaces():
    s1 = get_space("s1")
    assert s1.cells["normal"].edge_ops[0] == ("skip_connect", "dil_conv_3x3")
    assert s1.cells["normal"].edge_ops[5] == ("max_pool_3x3", "skip_connect")
    assert s1.cells["reduce"].edge_ops[6] == ("max_pool_3x3", "sep_conv_3x3")
    assert get_space("s2").cells["normal"].edge_ops[3] == ("skip_connect", "sep_conv_3x3")
    assert get_space("s3").cells["reduce"].edge_ops[13] == ("none", "skip_connect", "sep_conv_3x3")
    assert get_space("s4").cells["normal"].edge_ops[7] == ("noise", "sep_conv_3x3")
    assert all(SPACES.get(n).cells["normal"].num_edges == 14 for n in ("s1", "s2", "s3", "s4"))


def test_recurrent_space_is_darts_rnn_cell():
    """quark0/darts rnn/genotypes.py: PRIMITIVES, STEPS = 8; the alpha rows of node i+1 follow those of node i."""
    space = get_space("rnn")
    topo = space.cells["recurrent"]
    assert space.family == "rnn" and space.derivation == "darts-rnn" and space.default_channels == 300
    assert topo.num_edges == 36 and topo.edge_ops[0] == ("none", "tanh", "relu", "sigmoid", "identity")
    assert topo.edges[:4] == ((0, 1), (0, 2), (1, 2), (0, 3)) and list(topo.intermediate_nodes) == list(range(1, 9))


def test_nb201_space_and_enumeration():
    space = get_space("nb201")
    topo = space.cells["cell"]
    assert topo.edges == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    cells = list(enumerate_cells())
    assert len(cells) == 15625 == len(set(cells))
    assert all(op in NB201_OPS for cell in cells[:50] for op in cell)


def test_arch_string_round_trip():
    arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    g = Genotype.from_arch_str(arch)
    assert g.arch_str == arch
    assert g.cells["cell"][2] == ("skip_connect", 1)
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    assert g.to_dict()["arch_str"] == arch


@pytest.mark.parametrize("bad", ["", "|nor_conv_3x3~0|", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                 "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"])
def test_bad_arch_strings(bad):
    with pytest.raises(DnasError, match="not a NAS-Bench-201 arch string"):
        Genotype.from_arch_str(bad)


def test_darts_genotype_json(tmp_path):
    g = Genotype("darts", {"normal": (("sep_conv_3x3", 0), ("skip_connect", 1)) * 4,
                           "reduce": (("max_pool_3x3", 0), ("max_pool_3x3", 1)) * 4},
                 {"normal": (2, 3, 4, 5), "reduce": (2, 3, 4, 5)})
    g.save(tmp_path / "g.json")
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["normal"][0] == ["sep_conv_3x3", 0] and data["reduce_concat"] == [2, 3, 4, 5]
    assert Genotype.load(tmp_path / "g.json") == g
    assert g.count("skip_connect") == 4 and g.count_parameter_free() == 12
    assert "node 2 <- sep_conv_3x3(0), skip_connect(1)" in g.describe()


def test_genotype_load_errors(tmp_path):
    with pytest.raises(DnasError, match="does not exist"):
        Genotype.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DnasError, match="is not valid JSON"):
        Genotype.load(tmp_path / "bad.json")
    (tmp_path / "odd.json").write_text('{"normal": 3}')
    with pytest.raises(DnasError, match="not a dnas genotype"):
        Genotype.load(tmp_path / "odd.json")
