"""Cell drawings: node and edge counts of known genotypes, with both renderers, and `dnas draw`."""

import contextlib
import io
import json
import re

import pytest

import dnas.report.draw as draw
from dnas.cli import main
from dnas.errors import DnasError
from dnas.report.draw import cell_graphs, draw_genotype, graphviz_available, render_svg
from dnas.spaces import Genotype
from dnas.spaces.published import get_published

ENGINES = ["builtin", pytest.param("graphviz", marks=pytest.mark.skipif(
    not graphviz_available(), reason="Graphviz not installed (apt-get install graphviz; pip install graphviz)"))]
NB201 = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"


def _counts(svg: str) -> tuple[int, int]:
    return svg.count('class="node"'), svg.count('class="edge"')


def _labels(svg: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for op in re.findall(r">([a-z]+_[a-z0-9_]+)</text>", svg):
        found[op] = found.get(op, 0) + 1
    return found


def _dashed_edges(svg: str) -> int:
    return sum("stroke-dasharray" in group for group in svg.split('class="edge"')[1:] if group)


@pytest.mark.parametrize("engine", ENGINES)
def test_darts_v2_cells(engine):
    graphs = cell_graphs(get_published("DARTS_V2").genotype)
    assert list(graphs) == ["normal", "reduce"]
    normal = render_svg(graphs["normal"], engine)
    # c_{k-2}, c_{k-1}, four intermediate nodes, c_{k}; 8 op edges + 4 into the concatenation
    assert _counts(normal) == (7, 12)
    assert _labels(normal) == {"sep_conv_3x3": 5, "skip_connect": 2, "dil_conv_3x3": 1}
    assert normal.startswith("<svg") and normal.rstrip().endswith("</svg>")
    reduce = render_svg(graphs["reduce"], engine)
    assert _counts(reduce) == (7, 12)
    assert _labels(reduce) == {"max_pool_3x3": 5, "skip_connect": 3}


@pytest.mark.parametrize("engine", ENGINES)
def test_parameter_free_ops_are_dashed(engine):
    graphs = cell_graphs(get_published("DARTS_V2").genotype)
    # normal: the two skips are dashed, convolutions and the concatenation are not
    assert _dashed_edges(render_svg(graphs["normal"], engine)) == 2
    assert _dashed_edges(render_svg(graphs["reduce"], engine)) == 8  # max pools and skips only


@pytest.mark.parametrize("engine", ENGINES)
def test_nb201_cell_leaves_out_none(engine):
    (graph,) = cell_graphs(Genotype.from_arch_str(NB201)).values()
    svg = render_svg(graph, engine)
    assert _counts(svg) == (4, 5)  # nodes 0..3; 6 edges minus one none
    assert _labels(svg) == {"nor_conv_3x3": 1, "skip_connect": 2, "avg_pool_3x3": 1, "nor_conv_1x1": 1}


@pytest.mark.parametrize("engine", ENGINES)
def test_two_ops_from_the_same_input_are_two_edges(engine):
    # PR-DARTS' rule may keep two ops of one edge: node 0 fed twice by c_{k-1}
    pairs = "sep_conv_3x3:1 dil_conv_3x3:1 sep_conv_3x3:0 sep_conv_3x3:2 skip_connect:0 sep_conv_5x5:3 " \
            "sep_conv_3x3:1 dil_conv_5x5:4"
    cell = tuple((op, int(src)) for op, src in (p.split(":") for p in pairs.split()))
    genotype = Genotype("darts", {"normal": cell, "reduce": cell}, {"normal": (2, 3, 4, 5), "reduce": (2, 3, 4, 5)})
    svg = render_svg(cell_graphs(genotype)["normal"], engine)
    assert _counts(svg) == (7, 12)


def test_builtin_layout_ranks_and_extent():
    graph = cell_graphs(get_published("PRDARTS").genotype)["normal"]  # a chain: c_{k-1} -> 0 -> 1 -> 2 -> 3
    ranks = draw.node_ranks(graph)
    assert [ranks[f"n{v}"] for v in range(6)] == [0, 0, 1, 2, 3, 4] and ranks["out"] == 5
    svg = draw.render_builtin(graph)
    view = [float(v) for v in re.search(r'viewBox="([^"]+)"', svg).group(1).split()]
    ys = [float(y) for y in re.findall(r' y="(-?[\d.]+)"', svg)]
    assert view[1] <= min(ys) and max(ys) <= view[1] + view[3]  # everything inside the drawing


def test_bad_genotypes_are_user_errors():
    with pytest.raises(DnasError, match="not an earlier node"):
        cell_graphs(Genotype("darts", {"normal": (("sep_conv_3x3", 3),) * 8, "reduce": (("sep_conv_3x3", 0),) * 8}))
    with pytest.raises(DnasError, match="no 'cell' cell"):
        cell_graphs(Genotype("darts", {"cell": (("sep_conv_3x3", 0),) * 8}))
    with pytest.raises(DnasError, match="multiple"):
        cell_graphs(Genotype("darts", {"normal": (("sep_conv_3x3", 0),) * 7, "reduce": (("sep_conv_3x3", 0),) * 8}))


def test_draw_writes_one_file_per_cell_type(tmp_path):
    paths = draw_genotype(get_published("DARTS_V2").genotype, tmp_path / "v2.svg", engine="builtin")
    assert [p.name for p in paths] == ["v2_normal.svg", "v2_reduce.svg"]
    text = paths[0].read_text()
    assert text.startswith("<?xml") and _counts(text) == (7, 12)
    (single,) = draw_genotype(Genotype.from_arch_str(NB201), tmp_path / "nb.svg", engine="builtin")
    assert single.name == "nb.svg"


def test_png_without_graphviz_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(draw, "graphviz_available", lambda: False)
    with pytest.raises(DnasError, match="apt-get install graphviz"):
        draw_genotype(get_published("DARTS_V2").genotype, tmp_path / "v2.png")
    assert not list(tmp_path.iterdir())
    # SVG still works, with the builtin renderer
    (path,) = draw_genotype(Genotype.from_arch_str(NB201), tmp_path / "nb.svg")
    assert "c_{k" not in path.read_text() and _counts(path.read_text()) == (4, 5)


@pytest.mark.skipif(not graphviz_available(), reason="Graphviz not installed (apt-get install graphviz)")
def test_png_with_graphviz(tmp_path):
    (path,) = draw_genotype(Genotype.from_arch_str(NB201), tmp_path / "nb.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_draw(tmp_path):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["draw", "PRDARTS", "--out", str(tmp_path / "pr.svg")]) == 0
    assert stdout.getvalue().split() == [str(tmp_path / "pr_normal.svg"), str(tmp_path / "pr_reduce.svg")]
    assert main(["draw", NB201, "--out", str(tmp_path / "x.gif")]) == 2
    assert main(["draw", "NO_SUCH_CELL", "--out", str(tmp_path / "x.svg")]) == 2
    assert not (tmp_path / "x.svg").exists() and not (tmp_path / "x.gif").exists()


def test_cli_draw_of_a_running_search_draws_its_latest_cell(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("space: nb201\nepochs: 5\n")
    latest = Genotype.from_arch_str(NB201).to_dict()
    first = Genotype.from_arch_str(NB201.replace("nor_conv_3x3", "none")).to_dict()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"kind": "epoch", "epoch": e, "genotype": g})
                                                 for e, g in enumerate([first, latest])) + "\n{\"kind\": \"ep")
    assert main(["draw", str(run), "--out", str(tmp_path / "now.svg")]) == 0
    assert "nor_conv_3x3" in (tmp_path / "now.svg").read_text()
    (run / "metrics.jsonl").write_text("")
    assert main(["draw", str(run), "--out", str(tmp_path / "none.svg")]) == 2  # no epoch finished yet
