"""`dnas compare`: the grid of methods x seeds, its report, resumption, table look-ups and user errors."""

import contextlib
import csv
import io
import json
import math
import re
import shutil

import pytest
import torch
import yaml

import dnas.bilevel.run
from dnas.cli import main
from dnas.diagnostics.convergence import UNDECIDED_MARGIN, least_decided
from dnas.errors import DnasError
from dnas.grid import Compare, Entry, parse_entry, parse_methods, parse_seeds
from dnas.report import mean_std
from dnas.report.plots import matplotlib_available
from dnas.report.tables import RunRecord, markdown_per_run, markdown_summary, summarize

ARGS = ["--seeds", "0,1", "--epochs", "2", "--batch-size", "16", "--quiet"]
COMBO = "prl:pr-darts:weight_regularizers=lambda,estimator=amended"
TABLE = "nb201_12ep_minibench/mini-bench-arch-cell-accs.csv"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _strengths(run_dir):
    return json.loads((run_dir / "results.json").read_text())["strengths"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny):
    """2 presets x 2 seeds + one combination entry, through the CLI; returns (out, stdout)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("compare") / "cmp"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["compare", "--methods", "darts,pr-darts", "--entry", COMBO, *ARGS, "--out", str(out), *tiny])
    assert code == 0
    return out, stdout.getvalue()


def _copy(grid, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(grid[0], out)
    return out


def _compare(out, tiny, entries=("darts", "pr-darts"), combo=True, **kwargs):
    entries = [*parse_methods(",".join(entries)), *([parse_entry(COMBO)] if combo else [])]
    return Compare("nb201", entries, [0, 1], out, flags={"epochs": 2, "batch_size": 16}, overrides=tiny,
                   progress=False, echo=kwargs.pop("echo", lambda line: None), **kwargs)


# ----- parsing ---------------------------------------------------------------------------------------------
def test_entry_syntax():
    assert parse_entry(COMBO) == Entry("prl", "pr-darts", ("weight_regularizers=lambda", "estimator=amended"))
    assert parse_entry("d2:darts") == Entry("d2", "darts", ())
    # an item without '=' continues the previous value (list slots)
    entry = parse_entry("dpx:darts:arch_regularizers=pr-darts,prox,a_lr=0.001")
    assert entry.overrides == ("arch_regularizers=pr-darts,prox", "a_lr=0.001")
    assert [e.name for e in parse_methods(" darts, lambda-darts ")] == ["darts", "lambda-darts"]
    assert parse_methods("") == []
    assert parse_seeds("2,0,1") == [2, 0, 1]


# ----- the grid and its report ---------------------------------------------------------------------------------
def test_grid_writes_one_run_per_entry_and_seed(grid):
    out, stdout = grid
    names = {f"{e}-s{s}" for e in ("darts", "pr-darts", "prl") for s in (0, 1)}
    assert {p.name for p in (out / "runs").iterdir()} == names
    for name in names:
        cfg = yaml.safe_load((out / "runs" / name / "config.yaml").read_text())
        entry, seed = name.rsplit("-s", 1)
        assert cfg["seed"] == int(seed) and cfg["epochs"] == 2 and cfg["channels"] == 4 and cfg["batch_size"] == 16
        assert cfg["method"] == ("pr-darts" if entry == "prl" else entry)
        assert cfg["benchmark_table"] is None
    prl = yaml.safe_load((out / "runs" / "prl-s0" / "config.yaml").read_text())
    assert prl["estimator"]["name"] == "amended" and [c["name"] for c in prl["weight_regularizers"]] == ["lambda"]
    assert prl["activation"]["name"] == "hard-concrete"  # the preset's other slots stay
    assert {"report.md", "summary.csv", "per_run.csv", "curves.csv"} <= {p.name for p in out.iterdir()}
    # the table is printed at the end
    assert "| entry | setup | runs |" in stdout and "`prl`" in stdout and "pr-darts + weight_regularizers" in stdout


def test_per_run_and_curves_match_the_run_directories(grid):
    out, _ = grid
    rows = _rows(out / "per_run.csv")
    assert [(r["entry"], r["seed"]) for r in rows] == [(e, s) for s in "01" for e in ("darts", "pr-darts", "prl")]
    curves = _rows(out / "curves.csv")
    assert len(curves) == 6 * 2
    for row in rows:
        run = out / "runs" / f"{row['entry']}-s{row['seed']}"
        results = json.loads((run / "results.json").read_text())
        assert row["status"] == "ok" and row["arch"] == results["genotype"]["arch_str"]
        assert int(row["skip_connect"]) == row["arch"].count("skip_connect") == results["skip_connect"]
        assert int(row["parameter_free"]) == results["parameter_free"]
        assert float(row["seconds"]) == results["seconds"] and int(row["epochs"]) == 2
        mine = [c for c in curves if c["entry"] == row["entry"] and c["seed"] == row["seed"]]
        assert [int(c["epoch"]) for c in mine] == [1, 2]
        assert mine[-1]["arch"] == row["arch"] and int(mine[-1]["skip_connect"]) == int(row["skip_connect"])


def test_summary_is_mean_and_sample_std_of_the_runs(grid):
    out, _ = grid
    runs, summary = _rows(out / "per_run.csv"), _rows(out / "summary.csv")
    assert [r["entry"] for r in summary] == ["darts", "pr-darts", "prl"]
    for row in summary:
        assert row["runs"] == "2" and row["failed"] == "0"
        for key in ("skip_connect", "parameter_free", "seconds"):
            a, b = (float(r[key]) for r in runs if r["entry"] == row["entry"])
            # two values: mean (a+b)/2, sample std |a-b|/sqrt(2)
            assert float(row[f"{key}_mean"]) == pytest.approx((a + b) / 2)
            assert float(row[f"{key}_std"]) == pytest.approx(abs(a - b) / math.sqrt(2))
    report = (out / "report.md").read_text()
    darts = [r for r in runs if r["entry"] == "darts"]
    skips = sum(int(r["skip_connect"]) for r in darts) / 2
    line = next(line for line in report.splitlines() if line.startswith("| `darts` |"))
    assert f"{skips:.1f} ± " in line
    assert "## Skip connections in the derived cell after each epoch" in report
    assert "\\|" in report.split("## Runs")[1]  # pipes of arch strings are escaped in Markdown tables


def test_mean_std_by_hand():
    stat = mean_std([1.0, 2.0, 4.0])
    assert stat.mean == pytest.approx(7 / 3) and stat.n == 3
    assert stat.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert mean_std([5.0]).std is None and mean_std([]).mean is None
    assert mean_std([None, 3.0, 5.0]) == mean_std([3.0, 5.0])
    records = [RunRecord("a", "darts", 0, skip_connect=1, parameter_free=2, seconds=10.0),
               RunRecord("a", "darts", 1, skip_connect=3, parameter_free=2, seconds=20.0),
               RunRecord("a", "darts", 2, status="failed: the train loss became non-finite")]
    (row,) = summarize([("a", "darts")], records, [])
    assert (row.runs, row.failed) == (2, 1)
    assert row.stats["skip_connect"].mean == 2.0 and row.stats["skip_connect"].std == pytest.approx(math.sqrt(2))
    assert row.stats["seconds"].mean == 15.0


def test_margin_entropy_and_html_reports_of_the_grid(grid):
    out, stdout = grid
    runs = _rows(out / "per_run.csv")
    for row in runs:
        results = json.loads((out / "runs" / f"{row['entry']}-s{row['seed']}" / "results.json").read_text())
        margin, entropy = least_decided(results)
        assert float(row["margin"]) == pytest.approx(margin) and float(row["entropy"]) == pytest.approx(entropy)
        assert row["undecided"] == str(int(margin < UNDECIDED_MARGIN))
    assert "| margin | entropy |" in stdout  # next to the accuracies in the printed summary
    report = (out / "report.md").read_text()
    index = (out / "index.html").read_text()
    for row in runs:
        name = f"{row['entry']}-s{row['seed']}"
        assert f"[`{name}`](reports/{name}/index.html)" in report
        assert f'href="reports/{name}/index.html"' in index
        page = (out / "reports" / name / "index.html").read_text()
        assert f"dnas search: {name}" in page and 'data-panel="strengths-cell"' in page
    grid_rows = re.findall(r"<tr><th>([^<]+)</th>", index.split('data-panel="cells-grid"')[1].split("</table>")[0])
    assert grid_rows == ["darts", "pr-darts", "prl"]  # entries x seeds, side by side


def test_undecided_runs_are_counted_and_flagged():
    records = [RunRecord("a", "darts", 0, margin=UNDECIDED_MARGIN / 2, entropy=0.99),
               RunRecord("a", "darts", 1, margin=UNDECIDED_MARGIN * 2, entropy=0.5),
               RunRecord("a", "darts", 2, status="failed: the train loss became non-finite", margin=0.0)]
    assert [r.undecided for r in records] == [True, False, False]  # a failed run is failed, not undecided
    (row,) = summarize([("a", "darts")], records, [])
    assert row.undecided == 1 and row.stats["margin"].mean == pytest.approx(UNDECIDED_MARGIN * 1.25)
    assert "| 2 (1 failed) (1 undecided) |" in markdown_summary([row], [])
    lines = markdown_per_run(records, []).splitlines()
    assert "**undecided**" in lines[2] and "**undecided**" not in lines[3]


@pytest.mark.skipif(not matplotlib_available(), reason="matplotlib not installed (pip install -e '.[report]')")
def test_plots_are_png(grid):
    out, _ = grid
    for name in ("skips_vs_epoch.png",):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not (out / "accuracy_vs_epoch.png").exists()  # no table, no accuracy
    assert "![skips vs epoch](skips_vs_epoch.png)" in (out / "report.md").read_text()


def test_without_matplotlib_the_tables_are_still_written(grid, tmp_path, monkeypatch, tiny):
    out = _copy(grid, tmp_path)
    for png in out.glob("*.png"):
        png.unlink()
    monkeypatch.setattr("dnas.report.compare.matplotlib_available", lambda: False)
    lines = []
    report = _compare(out, tiny, echo=lines.append).run()
    assert not list(out.glob("*.png")) and report.plots == []
    assert any('pip install -e ".[report]"' in line for line in lines)
    assert 'pip install -e ".[report]"' in (out / "report.md").read_text()
    assert len(_rows(out / "summary.csv")) == 3


# ----- resumption ----------------------------------------------------------------------------------------------
def test_second_invocation_recomputes_nothing(grid, tmp_path, monkeypatch, tiny):
    out = _copy(grid, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*")}
    report_before = (out / "report.md").read_text()

    def no_search(self):
        raise AssertionError("a finished run was searched again")

    monkeypatch.setattr(dnas.bilevel.run.Search, "run", no_search)
    lines = []
    report = _compare(out, tiny, echo=lines.append).run()
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*")} == before
    assert lines[0] == "dnas compare: 6 of 6 runs finished earlier, reused"
    assert (out / "report.md").read_text() == report_before and len(report.records) == 6


def test_an_interrupted_run_resumes_to_the_same_result(grid, tmp_path, monkeypatch, tiny):
    out = tmp_path / "cmp"
    step = dnas.bilevel.run.Search.step

    def crash_in_second_epoch(self):
        if self.global_step == 5:
            raise RuntimeError("power cut")
        return step(self)

    monkeypatch.setattr(dnas.bilevel.run.Search, "step", crash_in_second_epoch)
    compare = Compare("nb201", parse_methods("darts"), [0], out, flags={"epochs": 2, "batch_size": 16},
                      overrides=[*tiny, "checkpoint_every=2"], progress=False, echo=lambda line: None)
    # a crash fails that run only: it is reported with its reason, the grid and its report go on
    failed = compare.run().records[0]
    assert failed.status == "failed: crashed with RuntimeError: power cut (traceback on stderr)"
    assert [p.epoch for p in failed.curve] == [1]
    run = out / "runs" / "darts-s0"
    assert (run / "checkpoint.pt").exists() and not (run / "results.json").exists()
    monkeypatch.setattr(dnas.bilevel.run.Search, "step", step)
    report = compare.run()
    assert report.records[0].ok and report.records[0].epochs == 2
    # checkpoint_every may differ between a run and its resumption: same result as the uninterrupted grid
    assert _strengths(run) == _strengths(grid[0] / "runs" / "darts-s0")
    assert [p.epoch for p in report.records[0].curve] == [1, 2]


# ----- benchmark look-ups --------------------------------------------------------------------------------------
def test_table_lookups_on_the_finished_runs(grid, tmp_path, monkeypatch, tiny, shared_data):
    from dnas.benchmarks import load_table

    table_path = shared_data(TABLE)
    out = _copy(grid, tmp_path)
    monkeypatch.setattr(dnas.bilevel.run.Search, "run", lambda self: pytest.fail("no run should be recomputed"))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        # options after key=value items are fine
        code = main(["compare", "--methods", "darts,pr-darts", *ARGS, "--out", str(out), *tiny[:2], "--entry", COMBO,
                     *tiny[2:], "--table", str(table_path)])
    assert code == 0
    table = load_table(table_path)
    columns = ["cifar10-test", "cifar100-test", "imagenet-test"]
    runs = _rows(out / "per_run.csv")
    for row in runs:
        expected = table.get(row["arch"])
        for column in columns:
            assert float(row[column]) == pytest.approx(expected[column])
    for row in _rows(out / "curves.csv"):
        assert float(row["cifar10-test"]) == pytest.approx(table.get(row["arch"])["cifar10-test"])
    summary = {r["entry"]: r for r in _rows(out / "summary.csv")}
    a, b = (float(r["cifar10-test"]) for r in runs if r["entry"] == "prl")
    assert float(summary["prl"]["cifar10-test_mean"]) == pytest.approx((a + b) / 2)
    assert float(summary["prl"]["cifar10-test_std"]) == pytest.approx(abs(a - b) / math.sqrt(2))
    assert "| cifar10-test | cifar100-test | imagenet-test |" in stdout.getvalue()
    report = (out / "report.md").read_text()
    assert "## cifar10-test of the derived cell after each epoch" in report
    if matplotlib_available():
        assert (out / "accuracy_vs_epoch.png").read_bytes()[:4] == b"\x89PNG"


def test_new_runs_log_the_benchmark_each_epoch(tmp_path, tiny, shared_data):
    table_path = shared_data(TABLE)
    compare = Compare("nb201", parse_methods("darts"), [3], tmp_path / "cmp", flags={"epochs": 1, "batch_size": 16},
                      overrides=tiny, table=table_path, progress=False, echo=lambda line: None)
    report = compare.run()
    run = tmp_path / "cmp" / "runs" / "darts-s3"
    assert yaml.safe_load((run / "config.yaml").read_text())["benchmark_table"] == str(table_path.resolve())
    epochs = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
    assert epochs[-1]["benchmark"]["cifar10-test"] == pytest.approx(report.records[0].scores["cifar10-test"])


# ----- worker processes ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_jobs_give_the_same_runs_as_one_process(grid, tmp_path, tiny):
    lines = []
    report = _compare(tmp_path / "cmp", tiny, entries=("darts",), combo=False, jobs=2, threads=1,
                      echo=lines.append).run()
    assert [r.ok for r in report.records] == [True, True]
    for seed in (0, 1):
        name = f"darts-s{seed}"
        assert _strengths(tmp_path / "cmp" / "runs" / name) == _strengths(grid[0] / "runs" / name)
    assert lines[0] == "dnas compare: 2 runs, 2 at a time, 1 thread(s) each"
    assert len([line for line in lines if line.startswith("[")]) == 2  # one line per finished run


# ----- user errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--methods", "darts,magic"], "unknown method 'magic'"),
    (["--entry", "prl"], "is not of the form NAME:METHOD"),
    (["--entry", "x:magic:a_lr=0.1"], "unknown method 'magic'"),
    (["--entry", "a/b:darts"], "entry name 'a/b'"),
    (["--entry", "x:darts:seed=3"], "seed is set by the grid"),
    (["--entry", "x:darts:a_lr"], "is not of the form key=value"),
    (["method=pr-darts"], "method is set by the grid"),
    (["--entry", "darts:darts:a_lr=0.1"], "entry name(s) darts given twice"),
    (["--methods", ""], "nothing to compare"),
    (["--table", "/nonexistent/table.csv"], "benchmark table '/nonexistent/table.csv' does not exist"),
    (["--space", "darts", "--table", "/nonexistent/table.csv"], "only applies to --space nb201"),
    (["--seeds", "0,x"], "--seeds takes comma-separated integers"),
    (["--seeds", "1,1"], "--seeds takes distinct"),
    (["--jobs", "0"], "--jobs and --threads must be at least 1"),
    (["colour=red"], "unknown override key 'colour'"),
])
def test_user_errors_are_one_sentence_and_run_nothing(args, message, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "darts", "--seeds", "0", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_changed_budget_does_not_reuse_old_runs(grid, tmp_path, tiny):
    out = _copy(grid, tmp_path)
    entries = parse_methods("darts")
    with pytest.raises(DnasError, match=r"holds a run with a different configuration \(epochs\)"):
        Compare("nb201", entries, [0], out, flags={"epochs": 3, "batch_size": 16}, overrides=tiny)


# ----- runs that cannot be resumed or read ------------------------------------------------------------------------
def test_unusable_run_directories_are_reported_not_fatal(grid, tmp_path, capsys, tiny):
    out = _copy(grid, tmp_path)
    runs = out / "runs"
    (runs / "darts-s0" / "results.json").write_text("{not json")  # unreadable results
    (runs / "pr-darts-s0" / "results.json").unlink()  # must resume, from a corrupt checkpoint
    (runs / "pr-darts-s0" / "checkpoint.pt").write_bytes(b"garbage")
    (runs / "prl-s0" / "results.json").unlink()  # resumes from its final checkpoint: finishes
    (runs / "darts-s1" / "config.yaml").write_text("a: [unclosed")  # cannot be checked against the grid
    shutil.rmtree(runs / "pr-darts-s1")  # a directory of someone else's files
    (runs / "pr-darts-s1").mkdir()
    (runs / "pr-darts-s1" / "notes.txt").write_text("mine")
    code = main(["compare", "--methods", "darts,pr-darts", "--entry", COMBO, *ARGS, "--out", str(out), *tiny])
    assert code == 0
    status = {f"{r['entry']}-s{r['seed']}": r["status"] for r in _rows(out / "per_run.csv")}
    assert status["prl-s0"] == "ok" and status["prl-s1"] == "ok"
    assert status["darts-s0"].startswith(f"failed: {runs / 'darts-s0'} cannot be read (the run's results "
                                         f"{runs / 'darts-s0' / 'results.json'} is not valid JSON")
    assert status["pr-darts-s0"].startswith(f"failed: checkpoint {runs / 'pr-darts-s0' / 'checkpoint.pt'} is "
                                            "unreadable or corrupt")
    assert status["darts-s1"].startswith(f"failed: the run's configuration {runs / 'darts-s1' / 'config.yaml'} is "
                                         "not valid YAML")
    assert status["pr-darts-s1"] == (f"failed: --out {runs / 'pr-darts-s1'} already holds other files (notes.txt); "
                                     "choose an empty or new directory")
    assert (runs / "pr-darts-s1" / "notes.txt").read_text() == "mine"  # nothing of the user's touched
    summary = {r["entry"]: (r["runs"], r["failed"]) for r in _rows(out / "summary.csv")}
    assert summary == {"darts": ("0", "2"), "pr-darts": ("0", "2"), "prl": ("2", "0")}
    report = (out / "report.md").read_text()
    assert "already holds other files" in report and "is unreadable or corrupt" in report
    assert "| `darts` | darts | 0 (2 failed) |" in capsys.readouterr().out


def _table_with_holes(tmp_path, archs, shared_data):
    """The mini-bench table with the cifar10-test cell of ``archs`` blank and cifar100-test not a number."""
    from dnas.benchmarks import canonical_arch

    holes = {canonical_arch(a) for a in archs}
    with open(shared_data(TABLE), newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    key = next(i for i, v in enumerate(rows[1]) if v.startswith("|"))
    for row in rows[1:]:
        if canonical_arch(row[key]) in holes:
            row[header.index("cifar10-test")] = ""
            row[header.index("cifar100-test")] = "n/a"
    path = tmp_path / "holes.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_blank_and_non_numeric_table_cells_are_missing_scores(grid, tmp_path, monkeypatch, tiny, shared_data):
    out = _copy(grid, tmp_path)
    runs = _rows(out / "per_run.csv")
    holed = {r["arch"] for r in runs if r["entry"] == "darts" and r["seed"] == "0"}
    table = _table_with_holes(tmp_path, holed, shared_data)
    monkeypatch.setattr(dnas.bilevel.run.Search, "run", lambda self: pytest.fail("no run should be recomputed"))
    assert main(["compare", "--methods", "darts,pr-darts", "--entry", COMBO, *ARGS, "--out", str(out), *tiny,
                 "--table", str(table)]) == 0
    scored = _rows(out / "per_run.csv")
    for row in scored:  # a holed cell is a missing score, every other cell keeps its number
        assert (row["cifar10-test"] == "") == (row["arch"] in holed) == (row["cifar100-test"] == "")
        assert float(row["imagenet-test"]) > 0
    summary = {r["entry"]: r for r in _rows(out / "summary.csv")}
    for entry, row in summary.items():  # the means are over the scored runs only
        values = [float(r["cifar10-test"]) for r in scored if r["entry"] == entry and r["arch"] not in holed]
        expected = sum(values) / len(values) if values else None
        assert (float(row["cifar10-test_mean"]) if row["cifar10-test_mean"] else None) == pytest.approx(expected)


def test_query_of_a_table_without_value_columns_is_one_sentence(tmp_path, capsys):
    table = tmp_path / "archs.csv"
    table.write_text("arch_str\n|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|skip_connect~1|"
                     "skip_connect~2|\n")
    assert main(["query", "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|skip_connect~1|"
                 "skip_connect~2|", "--table", str(table)]) == 2
    err = capsys.readouterr().err
    assert err == (f"dnas: error: the table {table} has only the arch-string column 'arch_str'; it needs at least "
                   "one column of benchmark values (e.g. cifar10-test)\n")


# ----- compare.yaml and --config ----------------------------------------------------------------------------------
def test_the_grid_describes_itself_in_compare_yaml(grid, tiny):
    out, _ = grid
    description = yaml.safe_load((out / "compare.yaml").read_text())
    assert description == {
        "space": "nb201",
        "entries": [{"name": "darts", "method": "darts", "overrides": []},
                    {"name": "pr-darts", "method": "pr-darts", "overrides": []},
                    {"name": "prl", "method": "pr-darts",
                     "overrides": ["weight_regularizers=lambda", "estimator=amended"]}],
        "seeds": [0, 1], "dataset": None, "data_root": None, "download": None, "epochs": 2, "batch_size": 16,
        "device": None, "plugins": None, "overrides": list(tiny), "table": None, "threads": None}


def _per_run(out):
    keep = ("entry", "method", "seed", "status", "arch", "skip_connect", "parameter_free", "epochs", "steps",
            "arch_steps")
    return [{k: r[k] for k in keep} for r in _rows(out / "per_run.csv")]


def test_config_replays_the_grid_in_a_new_folder(grid, tmp_path, tiny):
    out, _ = grid
    replay = tmp_path / "replay"
    # options given override the file: only seed 1, only the combination entry
    assert main(["compare", "--config", str(out / "compare.yaml"), "--out", str(replay), "--seeds", "1",
                 "--entry", COMBO, "--quiet"]) == 0
    assert _per_run(replay) == [r for r in _per_run(out) if r["entry"] == "prl" and r["seed"] == "1"]
    assert _strengths(replay / "runs" / "prl-s1") == _strengths(out / "runs" / "prl-s1")
    description = yaml.safe_load((replay / "compare.yaml").read_text())
    assert description["seeds"] == [1] and [e["name"] for e in description["entries"]] == ["prl"]
    assert description["overrides"] == list(tiny) and description["epochs"] == 2


def test_config_replay_in_place_reuses_every_run(grid, tmp_path, monkeypatch, tiny):
    out = _copy(grid, tmp_path)
    monkeypatch.setattr(dnas.bilevel.run.Search, "run", lambda self: pytest.fail("no run should be recomputed"))
    before = _per_run(out)
    # the folder stands for its compare.yaml; key=value items come after the file's overrides
    assert main(["compare", "--config", str(out), "--out", str(out), "--quiet", "log_every=3"]) == 0
    assert _per_run(out) == before
    assert yaml.safe_load((out / "compare.yaml").read_text())["overrides"] == [*tiny, "log_every=3"]
    assert main(["compare", "--config", str(out), "--out", str(out), "--methods", "darts", "--quiet"]) == 0
    assert _per_run(out) == [r for r in before if r["entry"] == "darts"]


@pytest.mark.parametrize("text,message", [
    ("seeds: [0, 0]\n", "--seeds takes distinct integers from 0 to 2**32-1"),
    ("colour: red\n", "unknown key(s) colour in"),
    ("entries: [{name: a, method: magic}]\n", "unknown method 'magic'"),
    ("entries: [darts]\n", "an entry is a mapping {name: NAME, method: METHOD"),
    ("overrides: [seed=3]\n", "seed is set by the grid"),
    ("- a list\n", "must hold a mapping"),
    ("threads: two\n", "threads in"),
])
def test_bad_config_files_are_one_sentence(text, message, tmp_path, capsys):
    config = tmp_path / "compare.yaml"
    config.write_text(text)
    assert main(["compare", "--config", str(config), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cmp").exists()
