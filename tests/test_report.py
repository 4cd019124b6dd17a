"""`dnas report`: the HTML report of a tiny search, group pages, the "undecided" flag, --watch, charts."""

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import dnas.cli.report
from dnas.cli import main
from dnas.cli.report import watch
from dnas.components import DISCRETIZERS
from dnas.config.resolve import resolve_config
from dnas.config.search import build_component
from dnas.diagnostics.convergence import UNDECIDED_MARGIN
from dnas.errors import DnasError
from dnas.report.draw import genotype_edges
from dnas.report.html import write_report
from dnas.report.run import read_run
from dnas.report.svgchart import Line, line_chart, nice_ticks
from dnas.spaces import Genotype, get_space

RUN_PANELS = ("facts", "cells", "counts", "margin", "entropy", "hessian", "alignment", "benchmark", "accuracy",
              "config", "environment")


def panels(page: str) -> list[str]:
    return re.findall(r'data-panel="([^"]+)"', page)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, minibench):
    """A finished 2-epoch NB201 search that logs every diagnostic (and benchmark rows when the table is here)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("report") / "tiny"
    extra = [f"benchmark_table={minibench}"] if minibench is not None else []
    code = main(["search", "--quiet", "--epochs", "2", "--batch-size", "16", "--out", str(out), "channels=4",
                 "layers=1", "max_images=128", "log_every=2", "alignment_every=2", "hessian_every=1", *extra])
    assert code == 0
    return out


def fake_run(path: Path, space: str, strengths: list[dict[str, list]], finished: bool = True,
             method: str = "darts", seed: int = 0) -> Path:
    """A run directory written by hand: one epoch record per entry of ``strengths`` (without the
    entropy/margin fields, as runs from before they were logged), ``results.json`` if ``finished``."""
    cfg = resolve_config({"space": space, "method": method, "epochs": len(strengths) + (0 if finished else 1),
                          "seed": seed}, [])
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(cfg.to_yaml())
    (path / "env.json").write_text(json.dumps({"python": "3.11", "torch": "2.13"}))
    discretizer = build_component(DISCRETIZERS, cfg.discretizer)
    records = []
    for epoch, s in enumerate(strengths):
        genotype = discretizer(get_space(space), {t: torch.tensor(v) for t, v in s.items()})
        records.append({"kind": "epoch", "epoch": epoch, "step": 10 * (epoch + 1), "seconds": 1.0 + epoch,
                        "genotype": genotype.to_dict(), "skip_connect": genotype.count("skip_connect"),
                        "parameter_free": genotype.count_parameter_free(), "strengths": s})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if finished:
        last = records[-1]
        results = {k: last[k] for k in ("genotype", "skip_connect", "parameter_free", "strengths")}
        (path / "results.json").write_text(json.dumps({**results, "steps": 20, "arch_steps": 20, "seconds": 2.0}))
    return path


def nb201_strengths(margin: float) -> dict[str, list]:
    """Every edge: op 2 ahead of the others (0.2 each) by ``margin``."""
    return {"cell": [[0.2, 0.2, 0.2 + margin, 0.2, 0.2]] * 6}


# ----- one run --------------------------------------------------------------------------------------------------
def test_report_of_a_tiny_search(tiny_run, tmp_path, minibench):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["report", str(tiny_run), "--out", str(tmp_path / "rep")]) == 0
    assert stdout.getvalue().strip() == f"report: {tmp_path / 'rep' / 'index.html'}"
    page = (tmp_path / "rep" / "index.html").read_text()
    assert set(RUN_PANELS) | {"strengths-cell"} == set(panels(page))
    # self-contained: no script, nothing fetched (namespaces are the only URLs)
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert not [u for u in re.findall(r"https?://[^\"' )]+", page) if not u.startswith("http://www.w3.org/")]
    # one trajectory panel per edge, titled by the op the final cell keeps there
    results = json.loads((tiny_run / "results.json").read_text())
    genotype = Genotype.from_dict(results["genotype"])
    edge_panels = page.split('data-panel="strengths-cell"')[1].split("<h3>search against the epoch")[0]
    titles = re.findall(r"<title>([^<]+)</title>", edge_panels)
    expected = [f"{s} → {d}: {op}" for s, d, op in genotype_edges(genotype)["cell"]]
    assert titles == expected
    # the skip-count chart has one point per epoch
    counts = page.split('data-panel="counts"')[1].split("</svg>")[0]
    first_line = re.search(r'<polyline points="([^"]+)"', counts).group(1)
    assert len(first_line.split()) == 2
    # the facts: the final cell, margin and entropy as results.json has them
    assert genotype.arch_str in page
    assert f"cell {results['margin']['cell']:.4f}" in page and f"cell {results['entropy']['cell']:.4f}" in page
    if minibench is not None:
        assert "no benchmark table" not in page and "cifar10-test" in page
    assert "not logged" not in page  # hessian and alignment were logged


def test_report_out_must_be_a_folder_of_its_own(tiny_run, tmp_path):
    assert main(["report", str(tiny_run), "--out", str(tiny_run)]) == 2  # not into the run directory
    (tmp_path / "file").write_text("x")
    assert main(["report", str(tiny_run), "--out", str(tmp_path / "file")]) == 2
    assert (tmp_path / "file").read_text() == "x"
    assert main(["report", str(tmp_path / "nothing")]) == 2
    compare = tmp_path / "cmp"
    (compare / "runs").mkdir(parents=True)
    (compare / "index.html").write_text("")
    with pytest.raises(DnasError, match="compare folder: open its index.html"):
        read_run(compare)


def test_default_out_is_next_to_the_run(tiny_run):
    assert dnas.cli.report.default_out([str(tiny_run)]) == tiny_run.with_name("tiny-report")


def test_darts_space_report_has_both_cells_and_28_edge_panels(tmp_path):
    generator = torch.Generator().manual_seed(0)
    strengths = [{t: torch.softmax(torch.randn(14, 8, generator=generator), 1).tolist() for t in ("normal", "reduce")}
                 for _ in range(3)]
    run = fake_run(tmp_path / "d-s0", "darts", strengths)
    page = write_report([read_run(run)], tmp_path / "rep").read_text()
    assert {"strengths-normal", "strengths-reduce"} <= set(panels(page))
    assert page.count('class="edge-panel"') == 28
    assert page.count("<figcaption>normal cell</figcaption>") == 1
    assert page.count("<figcaption>reduce cell</figcaption>") == 1
    assert "benchmark tables exist for nb201 only" in page
    assert "not logged (hessian_every=N logs it)" in page


# ----- the undecided flag ---------------------------------------------------------------------------------------
def test_undecided_flag(tmp_path):
    low, high = UNDECIDED_MARGIN / 3, UNDECIDED_MARGIN * 3
    shaky = fake_run(tmp_path / "shaky-s0", "nb201", [nb201_strengths(0.0), nb201_strengths(low)])
    firm = fake_run(tmp_path / "firm-s1", "nb201", [nb201_strengths(0.0), nb201_strengths(high)], seed=1)
    # margins computed from the strengths (these records predate the logged fields)
    assert read_run(shaky).final_decision[0] == pytest.approx(low)
    assert read_run(firm).final_decision[0] == pytest.approx(high)
    shaky_page = write_report([read_run(shaky)], tmp_path / "a").read_text()
    firm_page = write_report([read_run(firm)], tmp_path / "b").read_text()
    assert '<span class="badge undecided"' in shaky_page and '<span class="badge decided">' not in shaky_page
    assert '<span class="badge undecided"' not in firm_page
    assert '<span class="badge decided">decided</span>' in firm_page
    group = write_report([read_run(shaky), read_run(firm)], tmp_path / "g").read_text()
    rows = group.split('data-panel="runs"')[1].split("</table>")[0].split("<tr>")[2:]
    assert ["undecided" in row for row in rows] == [True, False]


def test_an_unfinished_run_is_undecided_so_far_and_reloads(tmp_path):
    run = fake_run(tmp_path / "r", "nb201", [nb201_strengths(0.001)], finished=False)
    page = write_report([read_run(run)], tmp_path / "rep", refresh=7).read_text()
    assert "undecided so far" in page and "1 of 2 epochs done" in page
    assert '<meta http-equiv="refresh" content="7">' in page
    done = fake_run(tmp_path / "d", "nb201", [nb201_strengths(0.001)])
    assert "http-equiv" not in write_report([read_run(done)], tmp_path / "rep2", refresh=7).read_text()


# ----- groups ---------------------------------------------------------------------------------------------------
def test_group_report_overview_and_sections(tmp_path, tiny_run):
    other = fake_run(tmp_path / "pr-darts-s3", "nb201", [nb201_strengths(0.1)] * 2, method="pr-darts", seed=3)
    out = tmp_path / "group"
    assert main(["report", str(tiny_run), str(other), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    found = panels(page)
    assert {"runs", "cells-grid", "group-margin", "group-skips"} <= set(found)
    assert found.count("cells") == 2 and found.count("strengths-cell") == 2  # a section per run
    assert 'href="#run-0"' in page and 'id="run-0"' in page and 'id="run-1"' in page
    grid = page.split('data-panel="cells-grid"')[1].split("</table>")[0]
    heads = re.findall(r"<th>([^<]*)</th>", grid)
    assert heads == ["", "seed 0", "seed 3", "darts", "pr-darts"]  # rows: method (or entry); columns: seed
    assert grid.count("<svg") == 2  # one NB201 cell per run


# ----- --watch --------------------------------------------------------------------------------------------------
def test_watch_follows_a_search_until_it_finishes(tiny_run, tmp_path):
    run = tmp_path / "live"
    full = {name: (tiny_run / name).read_text() for name in ("config.yaml", "env.json", "metrics.jsonl",
                                                              "results.json")}
    lines = full["metrics.jsonl"].splitlines(keepends=True)
    first_epoch = next(i for i, line in enumerate(lines) if '"kind": "epoch"' in line)
    out = tmp_path / "rep"
    pages, echoed = [], []
    script = iter([
        lambda: None,  # not started: nothing to report yet
        lambda: (run.mkdir(), (run / "config.yaml").write_text(full["config.yaml"]),
                 (run / "env.json").write_text(full["env.json"]),
                 (run / "metrics.jsonl").write_text("".join(lines[: first_epoch + 1]))),
        lambda: pages.append((out / "index.html").read_text()),  # no change since: not rewritten
        lambda: ((run / "metrics.jsonl").write_text(full["metrics.jsonl"]),
                 (run / "results.json").write_text(full["results.json"])),
    ])

    def sleep(seconds):
        assert seconds == 3
        next(script)()

    path = watch([run], out, 3, echo=echoed.append, sleep=sleep)
    assert path == out / "index.html"
    assert "waiting for the search to start" in echoed[0]
    assert len(echoed) == 3  # waiting, after epoch 1, finished (no rewrite without a change)
    assert '<meta http-equiv="refresh" content="3">' in pages[0] and "1 of 2 epochs done" in pages[0]
    final = path.read_text()
    assert "http-equiv" not in final and "finished (2 epochs)" in final
    assert next(script, None) is None  # the watch ended right after the run finished


def test_ctrl_c_ends_the_watch_with_status_0(tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    (run / "results.json").unlink()

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(dnas.cli.report.time, "sleep", interrupt)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        assert main(["report", str(run), "--out", str(tmp_path / "rep"), "--watch", "--interval", "1"]) == 0
    assert (tmp_path / "rep" / "index.html").is_file()
    assert main(["report", str(run), "--watch", "--interval", "0"]) == 2


# ----- charts ---------------------------------------------------------------------------------------------------
def test_nice_ticks():
    # the step is the smallest of {1, 2, 5} x 10^k that is at least (hi - lo) / count
    assert nice_ticks(0, 1, 4) == [0, 0.5, 1.0]
    assert nice_ticks(0, 1, 5) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(1, 12, 4) == [5, 10]
    assert nice_ticks(0.003, 0.031, 3) == [0.01, 0.02, 0.03]
    assert nice_ticks(-2.5, 2.5, 5) == [-2, -1, 0, 1, 2]


def test_line_chart_maps_points_and_breaks_at_gaps():
    svg = line_chart([Line("a", [(1, 0.0), (2, 1.0), (3, None), (4, 0.5)], "#123456")], title="t", width=300,
                     height=200, ylim=(0, 1), legend=False)
    polylines = re.findall(r'<polyline points="([^"]+)"', svg)
    assert len(polylines) == 2  # the None splits the line
    (x1, y1), (x2, y2) = [tuple(map(float, p.split(","))) for p in polylines[0].split()]
    frame = re.search(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', svg).groups()
    left, top, width, height = map(float, frame)
    assert (x1, y1) == pytest.approx((left, top + height), abs=0.06)  # (1, 0): bottom left
    assert y2 == pytest.approx(top, abs=0.06)  # y = 1: the top of the frame
    (x4, y4), = [tuple(map(float, p.split(","))) for p in polylines[1].split()]
    assert (x4, y4) == pytest.approx((left + width, top + height / 2), abs=0.06)  # (4, 0.5)
    assert "no data yet" in line_chart([Line("a", [(1, None)], "#000")], title="t")


# ----- a real browser ---------------------------------------------------------------------------------------------
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get "
                                    "install chromium; .ci/run installs it when it can)")
#: appended to a copy of the page: what the browser laid out and loaded, as JSON in the DOM
RENDER_CHECK = """<script>(function () {
  const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
  const out = {
    panels: Array.from(document.querySelectorAll('[data-panel]')).map(p => [p.dataset.panel, ...box(p)]),
    svgs: Array.from(document.querySelectorAll('svg')).map(box),
    drawn: Array.from(document.querySelectorAll('svg')).map(s => s.querySelectorAll('path,polyline,rect').length),
    images: document.images.length,
    broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length,
    fetched: performance.getEntriesByType('resource').map(e => e.name),
  };
  const pre = document.createElement('pre'); pre.id = 'render-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();</script>"""


def chromium(*args: str) -> str:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def rendered(page: Path) -> dict:
    """Open a copy of ``page`` with :data:`RENDER_CHECK` in headless Chromium; its findings."""
    import html

    probe = page.with_name("render-check.html")
    probe.write_text(page.read_text().replace("</body>", RENDER_CHECK + "</body>"))
    dom = chromium("--dump-dom", "--virtual-time-budget=5000", probe.as_uri())
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.S)
    assert found, "the page did not finish loading in Chromium"
    return json.loads(html.unescape(found.group(1)))


@needs_chromium
def test_report_renders_in_chromium(tiny_run, tmp_path, minibench):
    page = write_report([read_run(tiny_run)], tmp_path / "rep")
    check = rendered(page)
    names = [name for name, _, _ in check["panels"]]
    assert set(RUN_PANELS) | {"strengths-cell"} == set(names)
    assert all(w > 50 and h > 15 for _, w, h in check["panels"]), check["panels"]
    # every drawing and chart is laid out and has content: 1 cell + 7 charts + 6 edge panels
    assert len(check["svgs"]) == 14 and all(w > 100 and h > 80 for w, h in check["svgs"]), check["svgs"]
    # every chart has lines, except the benchmark chart, which says "no benchmark table" without one
    assert sum(n < 2 for n in check["drawn"]) == (0 if minibench is not None else 1), check["drawn"]
    assert check["broken"] == 0 and check["fetched"] == []  # no broken image, nothing loaded from anywhere
    # a screenshot of the real page: not blank, drawn in many colours
    import numpy as np
    from PIL import Image

    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    assert len(pixels) == 1280 * 2400
    ink = float((pixels.min(axis=1) < 200).mean())
    assert ink > 0.01, f"only {ink:.2%} of the screenshot is drawn"
    assert len(np.unique(pixels, axis=0)) > 200  # text, lines of many ops, node fills


@needs_chromium
def test_group_report_renders_in_chromium(tiny_run, tmp_path, minibench):
    generator = torch.Generator().manual_seed(1)
    strengths = [{t: torch.softmax(torch.randn(14, 8, generator=generator), 1).tolist() for t in ("normal", "reduce")}
                 for _ in range(2)]
    darts = fake_run(tmp_path / "darts-s1", "darts", strengths, seed=1)
    page = write_report([read_run(tiny_run), read_run(darts)], tmp_path / "rep")
    check = rendered(page)
    names = [name for name, _, _ in check["panels"]]
    assert {"runs", "cells-grid", "group-margin", "group-skips", "strengths-normal", "strengths-reduce"} <= set(names)
    assert all(w > 50 and h > 15 for _, w, h in check["panels"]), check["panels"]
    # cells: 1 + 2 in the grid and again in the sections; charts: 2 group (3 with benchmark rows) + 7 + 7 per run
    # + edge panels 6 + 28
    assert len(check["svgs"]) == 6 + (3 if minibench is not None else 2) + 14 + 34
    assert all(w > 50 and h > 40 for w, h in check["svgs"])
    assert check["broken"] == 0 and check["fetched"] == []
