"""Extending dnas from outside: ops, spaces and components registered by a module of one's own (a plugin),
used from Python and from the command line, recorded by the runs that need them.

The example plugin is ``examples/my_plugin.py`` (it registers what ``examples/custom_space.py`` defines).
Every test here undoes its registrations (the ``extensions`` fixture), so the rest of the suite sees
only the built-in names.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import runpy
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

import dnas
from dnas.bilevel.problem import BilevelProblem, StepContext
from dnas.bilevel.run import Search
from dnas.cli import main
from dnas.components import ARCH_REGULARIZERS, DISCRETIZERS, SLOTS, ArchRegularizer
from dnas.components.activations import Softmax
from dnas.components.pr_darts import is_parameterised
from dnas.config.train import resolve_train_config
from dnas.errors import DnasError
from dnas.retrain.network import build_eval_network
from dnas.runtime import plugins
from dnas.spaces import PARAMETER_FREE_OPS, SPACES, CellTopology, Genotype, SearchSpace
from dnas.spaces.nb201 import NB201
from dnas.spaces.ops import OP_FACTORIES
from dnas.supernet import SUPERNETS, Supernet, build_supernet, copy_into_reference, node_cell_class
from dnas.supernet.kinds import PerEdgeOps
from dnas.supernet.network import DartsCellBlock
from dnas.supernet.reference import member_gradient_pairs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
#: the modules the tests import as plugins (forgotten with the registrations)
PLUGIN_MODULES = ("my_plugin", "custom_space", "dnas_test_duplicate")
TINY_CLI = ["--epochs", "1", "--batch-size", "16", "--quiet", "channels=4", "layers=1", "max_images=160",
            "log_every=2", "arch_regularizers=edge-entropy"]


@pytest.fixture
def extensions(monkeypatch) -> Iterator[Callable[[], None]]:
    """Undo every registration after the test; ``forget()`` undoes them within it too, as a new process
    starts (the registries, the op tables, the parameter-free ops, the plugin modules and the entry points)."""
    registries = [*SLOTS.values(), SPACES, SUPERNETS]
    items = [dict(r._items) for r in registries]
    tables = {family: dict(table) for family, table in OP_FACTORIES.items()}
    free = set(PARAMETER_FREE_OPS)
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def forget() -> None:
        for registry, saved in zip(registries, items, strict=True):
            registry._items = dict(saved)
        for family, table in OP_FACTORIES.items():
            table.clear()
            table.update(tables[family])
        PARAMETER_FREE_OPS.clear()
        PARAMETER_FREE_OPS.update(free)
        for name in PLUGIN_MODULES:
            sys.modules.pop(name, None)
        plugins._entry_points_loaded.clear()
        plugins._entry_points_done = False

    forget()
    yield forget
    forget()


# ----- ops of one's own ----------------------------------------------------------------------------------------
class Blur(nn.Module):
    """A parameter-free op: a fixed 3x3 binomial blur of every channel (strided)."""

    def __init__(self, channels: int, stride: int, affine: bool):
        super().__init__()
        self.stride = stride
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16).expand(channels, 1, 3, 3).clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel.to(x.dtype), stride=self.stride, padding=1, groups=x.shape[1])


def _gelu_op() -> type[nn.Module]:
    import custom_space

    return custom_space.GeluSepConv


def _register_ops() -> None:
    dnas.register_op("gelu_sep_conv_5x5", _gelu_op(), parameter_free=False)
    dnas.register_op("blur_3x3", Blur, parameter_free=True)


DARTS_OPS = ("none", "skip_connect", "sep_conv_3x3", "gelu_sep_conv_5x5", "blur_3x3")
NB201_OPS = ("none", "skip_connect", "nor_conv_3x3", "gelu_sep_conv_5x5", "blur_3x3")


def _register_spaces() -> tuple[SearchSpace, SearchSpace]:
    _register_ops()
    darts_like = dnas.register_space(SearchSpace(
        name="darts-blur", description="DARTS cells with a blur and a GELU conv", family="darts",
        cells={"normal": CellTopology(2, 3, (DARTS_OPS,) * 9), "reduce": CellTopology(2, 3, (DARTS_OPS,) * 9, True)},
        derivation="darts", default_channels=4, default_layers=3))
    nb201_like = dnas.register_space(dataclasses.replace(NB201, name="nb201-blur",
                                                         cells={"cell": CellTopology(1, 3, (NB201_OPS,) * 6)}))
    return darts_like, nb201_like


# ----- the public API from Python ----------------------------------------------------------------------------
def test_an_op_a_space_and_a_component_registered_from_outside_search_from_python(tmp_path, extensions, tiny):
    found = dnas.search(space="nb201-gelu", method="darts", dataset="digits", plugins=["my_plugin"], epochs=1,
                        batch_size=16, out=tmp_path / "run", overrides=[*tiny, "arch_regularizers=edge-entropy"])
    assert found.config.plugins == ["my_plugin"]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["plugins"] == ["my_plugin"]
    assert [c.name for c in found.config.arch_regularizers] == ["edge-entropy"]
    assert found.genotype.space == "nb201-gelu" and found.genotype.describe().startswith("nb201-gelu cell: |")
    ops = {op for op, _ in found.genotype.cells["cell"]}
    assert ops <= set(SPACES.get("nb201-gelu").cells["cell"].op_names)
    # the cell trains as its family's: the evaluation network builds the registered op with affine=True
    net = build_eval_network(found.genotype, num_classes=10, in_channels=1, channels=4, layers=1)
    assert net(torch.randn(2, 1, 8, 8))[0].shape == (2, 10)


def test_the_example_script_searches_derives_and_prints_the_cell(tmp_path, extensions, capsys, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the script's run directory
    runpy.run_path(str(EXAMPLES / "custom_space.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.startswith("nb201-gelu cell: |") and "parameter-free ops:" in out
    assert "edge-entropy" in ARCH_REGULARIZERS


def test_duplicate_names_are_one_sentence(extensions, tmp_path, monkeypatch, capsys):
    _register_ops()
    with pytest.raises(DnasError, match=r"^op 'blur_3x3' is already registered; choose another name$"):
        dnas.register_op("blur_3x3", Blur, parameter_free=True)
    for taken in ("skip_connect", "none", "tanh"):  # a built-in op of any family
        with pytest.raises(DnasError, match=f"^op '{taken}' is already registered"):
            dnas.register_op(taken, Blur, parameter_free=True)
    with pytest.raises(DnasError, match=r"^search space 'nb201' is already registered; choose another name$"):
        dnas.register_space(NB201)
    with pytest.raises(DnasError, match=r"^architecture regularizer 'prox' is already registered"):
        ARCH_REGULARIZERS.register("prox")(type("Prox", (ArchRegularizer,), {}))
    with pytest.raises(DnasError, match=r"^a discretizer name takes letters, digits, '_' and '-' only, got 'a,b'$"):
        DISCRETIZERS.register("a,b")
    with pytest.raises(DnasError, match="names op\\(s\\) sep_conv_9x9 that the nb201 family lacks"):
        dnas.register_space(dataclasses.replace(NB201, name="x", cells={"cell": CellTopology(1, 3, (
            ("none", "sep_conv_9x9"),) * 6)}))
    with pytest.raises(DnasError, match="nb201-family spaces have the cells cell, not normal"):
        dnas.register_space(dataclasses.replace(NB201, name="x", cells={"normal": NB201.cells["cell"]}))
    # a plugin that registers a taken name: one line from the command line, exit status 2
    (tmp_path / "dnas_test_duplicate.py").write_text(
        "import dnas\ndnas.register_op('skip_connect', lambda c, s, a: None, parameter_free=True)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--plugin", "dnas_test_duplicate", "spaces"]) == 2
    assert capsys.readouterr().err == ("dnas: error: plugin dnas_test_duplicate could not be imported: op "
                                       "'skip_connect' is already registered; choose another name\n")


# ----- the fused supernet and the user's ops -------------------------------------------------------------------
def _pair(space: SearchSpace, layers: int) -> tuple[Supernet, Supernet]:
    torch.manual_seed(0)
    fused = build_supernet(space, num_classes=5, in_channels=3, channels=4, layers=layers).double()
    reference = build_supernet(space, num_classes=5, in_channels=3, channels=4, layers=layers, fused=False).double()
    copy_into_reference(fused, reference)
    return fused, reference


class EdgeEntropyOf(ArchRegularizer):
    def __call__(self, problem, activated, ctx=None):
        return {"entropy": sum(-(w * w.log()).sum() for w in activated.values())}


@pytest.mark.parametrize("name,layers", [("darts-blur", 3), ("nb201-blur", 1)])
def test_the_fused_supernet_runs_unknown_ops_per_edge_with_the_reference_gradients(name, layers, extensions):
    """An architecture step (validation loss and an architecture regularizer) on a space with registered ops:
    the fused supernet gives the per-edge reference's alpha gradients, weight gradients and outputs (float64)."""
    _register_spaces()
    space = SPACES.get(name)
    fused, reference = _pair(space, layers)
    kinds = [k for cell in fused.node_cells() for s in cell.fused_sources() for k in s.kinds.values()]
    assert {k.op for k in kinds if isinstance(k, PerEdgeOps)} == {"gelu_sep_conv_5x5", "blur_3x3"}
    assert any(not isinstance(k, PerEdgeOps) for k in kinds)  # the built-in ops stay fused
    g = torch.Generator().manual_seed(1)
    alphas = {t: torch.randn(c.num_edges, c.ops_per_edge, generator=g, dtype=torch.float64)
              for t, c in space.cells.items()}
    problems = [BilevelProblem(net, nn.ParameterDict({t: nn.Parameter(a.clone()) for t, a in alphas.items()}),
                               Softmax(), [EdgeEntropyOf()]) for net in (fused, reference)]
    batch = (torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=g), torch.tensor([0, 1, 2, 3]))
    results = [p.arch_objective(batch, StepContext()) for p in problems]
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-9, atol=1e-10)  # logits
    for objective, _, _ in results:
        objective.backward()
    for t in alphas:
        torch.testing.assert_close(problems[0].alphas[t].grad, problems[1].alphas[t].grad, rtol=1e-8, atol=1e-10)
    cells = [[c.nodes if isinstance(c, DartsCellBlock) else c for c in net.cells] for net in (fused, reference)]
    pairs = [p for f, r in zip(*cells, strict=True) for p in member_gradient_pairs(f, r)]
    assert pairs
    for gf, gr in pairs:
        torch.testing.assert_close(gf, gr, rtol=1e-8, atol=1e-10)


def test_masked_ops_of_one_s_own_are_skipped_and_exact(extensions):
    """Members of a registered op whose weight is masked out are not run (host indices, no device round trip)."""
    _register_spaces()
    space = SPACES.get("nb201-blur")
    fused, reference = _pair(space, 1)
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(6, 5, generator=g) > 0.5
    mask[:, 3] = torch.tensor([True, False, True, False, False, True])  # the GELU conv on three edges only
    weights = {"cell": torch.rand(6, 5, generator=g, dtype=torch.float64) * mask}
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(fused(x, fused.per_cell(weights), {"cell": mask}),
                               reference(x, reference.per_cell(weights)), rtol=1e-9, atol=1e-10)


class OneStage(Supernet):
    """A macro network of one's own: a stem, ``layers`` NB201-style cells at one resolution, a classifier."""

    def __init__(self, space, channels, layers, num_classes, in_channels=3, *, fused=True, node_bn=False, partial=1,
                 aux_skip=False):
        super().__init__()
        self.space = space
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.cells = nn.ModuleList(node_cell_class(fused)("nb201", space.cells["cell"], channels, node_bn, partial,
                                                          aux_skip) for _ in range(layers))
        self.cell_types = ["cell"] * layers
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x, cell_weights, active=None, bypass=None):
        h = self.stem(x)
        for cell, w in zip(self.cells, cell_weights, strict=True):
            h = cell([h], w, active.get("cell") if active else None, bypass.get("cell") if bypass else None)[-1]
        return self.classifier(h.mean(dim=(2, 3)))


def test_a_space_with_its_own_macro_network_searches(tmp_path, extensions, tiny):
    _register_ops()
    dnas.register_space(dataclasses.replace(NB201, name="one-stage", cells={"cell": CellTopology(1, 3, (
        NB201_OPS,) * 6)}), supernet=OneStage)
    fused, reference = _pair(SPACES.get("one-stage"), 2)
    assert isinstance(fused, OneStage) and isinstance(reference, OneStage)
    found = dnas.search(space="one-stage", epochs=1, batch_size=16, out=tmp_path / "run", overrides=list(tiny))
    assert found.genotype.space == "one-stage"


# ----- what the derivation and the diagnostics make of the user's ops ------------------------------------------
def test_parameter_free_ops_of_one_s_own_count_as_such_in_the_derivation(extensions):
    darts_like, nb201_like = _register_spaces()
    assert "blur_3x3" in PARAMETER_FREE_OPS and "gelu_sep_conv_5x5" not in PARAMETER_FREE_OPS
    assert not is_parameterised("blur_3x3") and is_parameterised("gelu_sep_conv_5x5")  # PR-DARTS' groups
    # the DARTS rule: the strongest op other than none, on the two strongest edges of every node
    strengths = {t: torch.zeros(9, 5) for t in darts_like.cells}
    for t in strengths:
        strengths[t][:, 0] = 9.0  # none: never chosen
        strengths[t][:, 4] = 1.0  # blur: the strongest other op on every edge
        strengths[t][[0, 3], 3] = 2.0  # the GELU conv on the edges 2<-0 and 3<-1
    genotype = DISCRETIZERS.get("darts")()(darts_like, strengths)
    assert genotype.cells["normal"][0] == ("gelu_sep_conv_5x5", 0) and genotype.count("none") == 0
    assert genotype.count("gelu_sep_conv_5x5") == 4  # two edges of each cell type
    assert genotype.count_parameter_free() == genotype.count("blur_3x3") == 8  # the other eight
    cell = Genotype.from_dict({"space": "nb201-blur", "cell": [["blur_3x3", 0], ["gelu_sep_conv_5x5", 0],
                                                                ["blur_3x3", 1], ["none", 0], ["skip_connect", 1],
                                                                ["nor_conv_3x3", 2]]})
    assert cell.count_parameter_free() == 4  # two blurs, none, skip_connect
    assert cell.describe() == ("nb201-blur cell: |blur_3x3~0|+|gelu_sep_conv_5x5~0|blur_3x3~1|+|none~0|"
                               "skip_connect~1|nor_conv_3x3~2|")


@pytest.mark.slow
def test_the_workers_of_a_grid_import_the_plugin_the_grid_names(tmp_path, extensions, tiny):
    """``dnas compare --jobs 2``: each run is a new process, which imports the plugin its configuration records."""
    report = dnas.compare("nb201-gelu", ["darts"], seeds=[0], out=tmp_path / "cmp", jobs=2, threads=1,
                          plugins=["my_plugin"], epochs=1, batch_size=16,
                          overrides=[*tiny, "arch_regularizers=edge-entropy"])
    assert [r.ok for r in report.records] == [True]
    assert yaml.safe_load((tmp_path / "cmp" / "compare.yaml").read_text())["plugins"] == ["my_plugin"]
    run = tmp_path / "cmp" / "runs" / "darts-s0"
    assert yaml.safe_load((run / "config.yaml").read_text())["plugins"] == ["my_plugin"]


# ----- plugins from the command line -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """``python -m dnas --plugin my_plugin search --space nb201-gelu ...`` with the examples on PYTHONPATH."""
    folder = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(EXAMPLES)])}
    done = subprocess.run([sys.executable, "-m", "dnas", "--plugin", "my_plugin", "search", "--space", "nb201-gelu",
                           "--threads", "1", "--out", "run", *TINY_CLI], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nb201-gelu cell: |")
    return folder / "run"


@pytest.mark.slow
def test_a_run_records_its_plugin_and_replays_resumes_and_reports_with_it(cli_run, tmp_path, extensions,
                                                                          interrupt_at, capsys):
    assert yaml.safe_load((cli_run / "config.yaml").read_text())["plugins"] == ["my_plugin"]
    assert "nb201-gelu" not in SPACES  # as in a new process: only the run's config.yaml names the plugin
    replay = ["search", "--config", str(cli_run / "config.yaml"), "--out", str(tmp_path / "replay"), "--quiet"]
    interrupt_at(Search, 3)
    assert main(replay) == 2 and "interrupted" in capsys.readouterr().err
    extensions()  # a new process
    interrupt_at(Search, None)
    assert main(replay) == 0  # resumed from its checkpoint, the plugin imported from its config.yaml
    assert (tmp_path / "replay" / "genotype.json").read_text() == (cli_run / "genotype.json").read_text()
    extensions()
    assert main(["report", str(cli_run), "--out", str(tmp_path / "report.html")]) == 0
    extensions()
    cfg, resolved = resolve_train_config(str(cli_run), None, ["epochs=1"])  # dnas train RUN
    assert resolved.genotype.space == "nb201-gelu" and cfg.preset == "nb201"


@pytest.mark.slow
def test_a_missing_plugin_is_one_sentence(cli_run, tmp_path, extensions, monkeypatch, capsys):
    assert main(["--plugin", "no_such_plugin", "spaces"]) == 2
    assert capsys.readouterr().err == ("dnas: error: plugin no_such_plugin could not be imported: No module named "
                                       "'no_such_plugin'\n")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(EXAMPLES)])  # my_plugin cannot be imported
    for argv in (["search", "--config", str(cli_run), "--out", str(tmp_path / "again")], ["report", str(cli_run)]):
        assert main(argv) == 2
        assert capsys.readouterr().err == ("dnas: error: plugin my_plugin could not be imported: No module named "
                                           "'my_plugin'\n")
    assert not (tmp_path / "again").exists()


def test_plugin_options_go_before_or_after_the_command(extensions, capsys):
    assert main(["spaces", "--plugin", "my_plugin"]) == 0
    assert "nb201-gelu" in capsys.readouterr().out
    extensions()
    assert main(["--plugin", "my_plugin", "methods"]) == 0
    assert "edge-entropy" in capsys.readouterr().out


def test_entry_points_of_the_plugin_group_are_imported_once(extensions, monkeypatch):
    found = [importlib.metadata.EntryPoint("gelu", "custom_space:register", plugins.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: found if group == "dnas.plugins" else [])
    dnas.load_plugins()
    dnas.load_plugins()  # once: a second call registers nothing twice
    assert "nb201-gelu" in SPACES and "edge-entropy" in ARCH_REGULARIZERS
    extensions()
    found[:] = [importlib.metadata.EntryPoint("broken", "no_such_module:register", plugins.ENTRY_POINT_GROUP)]
    with pytest.raises(DnasError, match=r"^plugin broken \(entry point no_such_module:register\) could not be "
                                        r"imported: No module named 'no_such_module'$"):
        dnas.load_plugins()
    with pytest.raises(DnasError, match="^plugin 'my-plugin' is not a module name"):
        dnas.load_plugins(["my-plugin"])
