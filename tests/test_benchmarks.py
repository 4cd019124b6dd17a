"""Benchmark tables: the 12-epoch mini-bench, look-ups, ``dnas query``, and ``dnas bench export``
against a fake of the official API's query interface (``len``, ``arch``, ``get_more_info``,
``get_cost_info``, ``clear_params``, the fast-mode cache ``arch2infos_dict``)."""

from __future__ import annotations

import itertools
import json
import sys
import types
from pathlib import Path

import pytest

from dnas.benchmarks import Table, canonical_arch, load_table, lookup
from dnas.benchmarks.export import HEADER, export_table, open_api
from dnas.cli import main
from dnas.errors import DnasError
from dnas.spaces import Genotype
from dnas.spaces.nb201 import NB201_OPS
from dnas.spaces.published import PUBLISHED

ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def _arch(ops: tuple[str, ...]) -> str:
    return Genotype(space="nb201", cells={"cell": tuple(zip(ops, (0, 0, 1, 0, 1, 2), strict=True))}).arch_str


def _tiny_table(path: Path) -> Path:
    path.write_text("arch,cellstr,cifar10-test,note\n"
                    f"0,{ALL_SKIP},36.84,skip\n"
                    f"1,{_arch(('nor_conv_3x3',) * 6)},89.0,conv\n")
    return path


# ------------------------------------------------------------------------------------- mini-bench


def test_minibench_folder_loads_as_one_table_with_the_known_cells(shared_data):
    table = load_table(shared_data("nb201_12ep_minibench"))
    assert len(table) == 15_625 and table.key == "cellstr"
    assert table.columns[0] == "arch" and "cifar10-test" in table.columns and "imagenet-val" in table.columns
    row = table.get(ALL_SKIP)
    assert row["cifar10-test"] == 36.84 and row["arch"] == 1835
    assert table.best("cifar10-test")[1] == 89.16
    none_row = table.get("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert none_row["cifar10-test"] == 10.0 and none_row["cifar100-test"] == pytest.approx(1.0)
    assert load_table(shared_data("nb201_12ep_minibench") / "mini-bench-arch-cell-accs.csv") is table  # cached


def test_lookup_takes_a_genotype_its_dict_or_an_arch_string(shared_data):
    path = shared_data("nb201_12ep_minibench")
    genotype = Genotype.from_arch_str(ALL_SKIP)
    assert lookup(path, genotype)["cifar10-test"] == 36.84
    assert lookup(path, genotype.to_dict())["cifar10-val"] == pytest.approx(33.94, abs=0.01)
    assert lookup(load_table(path), ALL_SKIP)["cifar100-test"] == pytest.approx(11.08, abs=0.01)
    assert lookup(path, PUBLISHED["DARTS_V2"].genotype) is None  # not an nb201 cell


def test_table_round_trip_and_missing_cells(tmp_path):
    table = Table.load(_tiny_table(tmp_path / "t.csv"))
    assert table.columns == ("arch", "cifar10-test", "note") and len(table) == 2
    assert table.get(ALL_SKIP) == {"arch": 0, "cifar10-test": 36.84, "note": "skip"}
    assert table.get(_arch(("avg_pool_3x3",) * 6)) is None
    table.save(tmp_path / "copy.csv")
    again = Table.load(tmp_path / "copy.csv")
    assert again.rows == table.rows and again.key == "cellstr"
    assert lookup(table, " " + ALL_SKIP + " ")["note"] == "skip"  # arch strings are canonicalised


def test_table_errors_are_one_sentence(tmp_path):
    with pytest.raises(DnasError, match="does not exist"):
        Table.load(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DnasError, match="no column of NAS-Bench-201 arch strings"):
        Table.load(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text(f"cellstr,acc\n{ALL_SKIP},1,2\n")
    with pytest.raises(DnasError, match="fields"):
        Table.load(tmp_path / "ragged.csv")
    (tmp_path / "t.pd").write_bytes(b"pickle")
    with pytest.raises(DnasError, match="pickles are not loaded"):
        Table.load(tmp_path / "t.pd")
    _tiny_table(tmp_path / "second.csv")
    with pytest.raises(DnasError, match="holds 3 .csv/.parquet tables"):
        Table.load(tmp_path)
    with pytest.raises(DnasError, match="arch string"):
        canonical_arch("|conv~0|")
    with pytest.raises(DnasError, match="only nb201"):
        canonical_arch(PUBLISHED["PRDARTS"].genotype)


def test_best_ranks_a_number_column_and_refuses_text(tmp_path):
    table = Table.load(_tiny_table(tmp_path / "t.csv"))
    assert table.best("cifar10-test") == (_arch(("nor_conv_3x3",) * 6), 89.0)
    assert table.best("arch") == (_arch(("nor_conv_3x3",) * 6), 1)
    with pytest.raises(DnasError, match="'note' holds text"):
        table.best("note")
    with pytest.raises(DnasError, match="no column"):
        table.best("cifar100-test")


def test_parquet_needs_pyarrow(tmp_path):
    table = Table.load(_tiny_table(tmp_path / "t.csv"))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(DnasError, match="pyarrow"):
            table.save(tmp_path / "t.parquet")
        (tmp_path / "t.parquet").write_bytes(b"PAR1")
        if "pandas" not in sys.modules:
            try:
                import pandas  # noqa: F401
            except ImportError:
                with pytest.raises(DnasError, match="pyarrow"):
                    Table.load(tmp_path / "t.parquet")
        return
    table.save(tmp_path / "t.parquet")
    assert Table.load(tmp_path / "t.parquet").rows == table.rows


# --------------------------------------------------------------------------------------- dnas query


def test_query_prints_the_row_of_an_arch_string_or_a_genotype_json(tmp_path, capsys):
    table = _tiny_table(tmp_path / "t.csv")
    assert main(["query", ALL_SKIP, "--benchmark", "nb201", "--table", str(table)]) == 0
    out = capsys.readouterr().out
    assert ALL_SKIP in out and "36.84" in out and "skip" in out
    run = tmp_path / "run"
    run.mkdir()
    Genotype.from_arch_str(ALL_SKIP).save(run / "genotype.json")
    assert main(["query", str(run), "--table", str(table), "--json"]) == 0  # the search folder is enough
    assert json.loads(capsys.readouterr().out) == {"arch_str": ALL_SKIP, "arch": 0, "cifar10-test": 36.84,
                                                     "note": "skip"}
    assert main(["query", _arch(("avg_pool_3x3",) * 6), "--table", str(table)]) == 1
    assert "not in the table" in capsys.readouterr().out


def test_query_on_the_minibench(capsys, shared_data):
    assert main(["query", ALL_SKIP, "--table", str(shared_data("nb201_12ep_minibench"))]) == 0
    assert "cifar10-test   36.84" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["query", ALL_SKIP], "--table"),
    (["query", ALL_SKIP, "--table", "nowhere.csv"], "does not exist"),
    (["query", ALL_SKIP, "--benchmark", "nb101", "--table", "x.csv"], "only nb201"),
    (["query", "DARTS_V2", "--table", "x.csv"], "only nb201"),
    (["query", "no-such-thing", "--table", "x.csv"], "neither a genotype.json"),
])
def test_query_user_errors(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("DNAS_NB201_TABLE", raising=False)
    monkeypatch.chdir(tmp_path)
    _tiny_table(tmp_path / "x.csv")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dnas: error:") and message in err and "\n" not in err


# ------------------------------------------------------------------------------------- bench export


class FakeAPI:
    """The query interface of ``nats_bench`` / ``nas_201_api`` over a few cells, with a fast-mode
    cache that grows on every query unless the exporter releases it."""

    def __init__(self, n: int = 5):
        self.meta_archs = [_arch(ops) for ops in itertools.islice(itertools.product(NB201_OPS, repeat=6), n)]
        self.fast_mode = True
        self.arch2infos_dict: dict[int, str] = {}
        self.largest_cache = 0
        self.calls: list[tuple] = []
        self.cleared: list[int] = []

    def __len__(self) -> int:
        return len(self.meta_archs)

    def arch(self, index: int) -> str:
        return self.meta_archs[index]

    def _load(self, index: int) -> None:
        self.arch2infos_dict[index] = "loaded"
        self.largest_cache = max(self.largest_cache, len(self.arch2infos_dict))

    def get_more_info(self, index, dataset, iepoch=None, hp="12", is_random=True):
        self._load(index)
        self.calls.append((index, dataset, hp, is_random))
        base = {"cifar10": 90.0, "cifar10-valid": 80.0, "cifar100": 70.0, "ImageNet16-120": 40.0}[dataset]
        info = {"train-accuracy": 99.0, "test-accuracy": base + index / 10, "test-loss": 0.5}
        if dataset != "cifar10":
            info["valid-accuracy"] = base - 1 + index / 10
        return info

    def get_cost_info(self, index, dataset, hp="12"):
        self._load(index)
        return {"params": 0.073306 + index, "flops": 7.78305, "latency": 0.01}

    def clear_params(self, index, hp=None):
        self.cleared.append(index)


def test_export_writes_one_row_per_cell_in_one_lean_pass(tmp_path):
    api = FakeAPI(5)
    count = export_table(api, tmp_path / "bench.csv", hp="200")
    assert count == 5
    assert api.largest_cache == 1 and api.arch2infos_dict == {} and api.cleared == [0, 1, 2, 3, 4]
    assert {c[2] for c in api.calls} == {"200"} and {c[3] for c in api.calls} == {False}
    assert len(api.calls) == 5 * 4  # one get_more_info per dataset and cell
    table = Table.load(tmp_path / "bench.csv")
    assert table.key == "arch_str" and list(table.columns) == HEADER[:1] + HEADER[2:]
    row = table.get(api.meta_archs[3])
    assert row == {"index": 3, "cifar10-test": 90.3, "cifar10-val": 79.3, "cifar100-test": 70.3,
                   "cifar100-val": 69.3, "imagenet-test": 40.3, "imagenet-val": 39.3,
                   "params-mb": 3.073306, "flops-m": 7.78305}
    assert export_table(FakeAPI(5), tmp_path / "two.csv", limit=2) == 2
    with pytest.raises(DnasError, match=".csv or .parquet"):
        export_table(api, tmp_path / "bench.txt")


def test_bench_export_cli_uses_the_official_package_then_query_reads_the_table(tmp_path, monkeypatch, capsys):
    opened = {}

    def create(path, search_space, fast_mode=False, verbose=True):
        opened.update(path=path, space=search_space, fast_mode=fast_mode)
        return FakeAPI(6)

    monkeypatch.setitem(sys.modules, "nats_bench", types.SimpleNamespace(create=create))
    monkeypatch.setitem(sys.modules, "nas_201_api", None)
    source = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    source.mkdir()
    out = tmp_path / "nb201.csv"
    assert main(["bench", "export", str(source), "--out", str(out), "--hp", "12", "--quiet"]) == 0
    assert opened == {"path": str(source), "space": "tss", "fast_mode": True}
    assert "wrote 6 cells" in capsys.readouterr().out
    cell = FakeAPI(6).meta_archs[5]
    assert main(["query", cell, "--table", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cifar10-test"] == 90.5


def test_export_without_the_api_package_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nats_bench", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "nas_201_api", None)
    source = tmp_path / "NAS-Bench-201-v1_1-096897.pth"
    source.write_bytes(b"")
    with pytest.raises(DnasError, match="pip install nas-bench-201"):
        open_api(source)
    assert main(["bench", "export", str(source), "--out", str(tmp_path / "t.csv"), "--quiet"]) == 2
    assert "not installed" in capsys.readouterr().err
    with pytest.raises(DnasError, match="does not exist"):
        open_api(tmp_path / "missing.pth")
    with pytest.raises(DnasError, match="unknown benchmark API"):
        open_api(source, api="nasbench101")
