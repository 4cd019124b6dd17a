"""The run report: one self-contained ``index.html`` per run or group of runs.

Everything is inline (SVG drawings and charts, one ``<style>`` element): no script, no network,
no other file, so the page can be mailed, archived or opened from a CI artifact. Every part of the
page is a ``class="panel"`` element with a ``data-panel`` name (the browser test checks they all
render).

A run's section holds: its facts (method, budget, final cell, counts, entropy and margin, the
"undecided" flag of :mod:`dnas.diagnostics.convergence`, benchmark row); the drawings of its cells
(:mod:`.draw`); one small panel per edge, a row per destination node, with the strength of every
op after each epoch (the op the latest cell keeps on that edge drawn thick, the others thin);
against the epoch, the skip and parameter-free counts of the derived cell, the decision margin and
entropy per cell type, the dominant Hessian eigenvalue, the per-cell gradient alignment (the mean
of the values logged during the epoch), the NAS-Bench-201 accuracies of the derived cell (when the
search had a table) and the train/val accuracy; the resolved configuration and the environment.

A group page (several runs, or ``dnas compare``) starts with an overview: a table of the runs,
their final cells side by side (one row per method or entry, one column per seed) and the margin,
skip count and benchmark accuracy of every run against the epoch, each run linked to its section
or to its own page.

Regenerating a report costs a parse of ``metrics.jsonl`` and one drawing per cell type, so
``dnas report --watch`` can redo it after every epoch; while a run is unfinished the page reloads
itself (``<meta http-equiv="refresh">``).
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import yaml

import dnas
from dnas.diagnostics.convergence import UNDECIDED_MARGIN, least_decided, undecided
from dnas.errors import DnasError
from dnas.report.draw import cell_graphs, genotype_edges, is_parameter_free, node_label, op_color, render_svg
from dnas.report.run import RunHistory, is_run, read_run
from dnas.report.svgchart import Line, Rule, line_chart
from dnas.runtime.atomic import atomic_write_text
from dnas.runtime.ownership import OutputFolder
from dnas.spaces import Genotype

RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
              "#17becf")
TYPE_STYLES: tuple[dict[str, bool], ...] = ({}, {"dashed": True})  # cell types in one chart: solid, then dashed

STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1400px; padding: 0 18px 40px;
       color: #222; background: #fff; }
h1 { font-size: 22px; margin: 18px 0 4px; } h2 { font-size: 19px; margin: 30px 0 8px; border-bottom: 2px solid #ddd;
     padding-bottom: 4px; } h3 { font-size: 15px; margin: 16px 0 6px; }
.meta { color: #666; font-size: 12px; }
.badge { font-size: 12px; padding: 2px 7px; border-radius: 9px; vertical-align: middle; margin-left: 6px; }
.undecided { background: #ffe0b2; color: #8a4b00; } .decided { background: #dcedc8; color: #33691e; }
.running { background: #e3f2fd; color: #0d47a1; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
td, th { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: Menlo, Consolas, monospace; font-size: 12px; } pre { background: #f7f7f7; padding: 8px;
      overflow-x: auto; margin: 4px 0; }
.panel { margin: 8px 0; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 10px; }
.charts svg.chart { width: 100%; height: auto; }
.edge-row { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; margin-bottom: 4px; }
.edge-row > b { width: 70px; font-size: 13px; color: #444; }
.edge-panel svg.chart { width: 210px; height: auto; }
.cells { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.cells figure { margin: 0; } .cells figcaption { font-size: 13px; color: #444; margin-bottom: 2px; }
.cells svg { max-width: 100%; height: auto; }
.grid td { min-width: 220px; } .grid svg { max-width: 320px; height: auto; display: block; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; }
.legend i { display: inline-block; width: 18px; height: 0; border-top: 3px solid; vertical-align: middle;
            margin-right: 4px; }
"""


@dataclass(frozen=True)
class GridEntry:
    """A run in a group page: its row (method or entry) and column (seed) and its link."""

    row: str
    column: str
    run: RunHistory
    href: str


def _e(value: object) -> str:
    return html.escape(str(value))


def _num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def cell_text(genotype: Genotype) -> str:
    """The NB201 arch string, or the compact ``op:input`` pairs of every cell type."""
    if genotype.space == "nb201":
        return genotype.arch_str
    return "; ".join(f"{t}: " + " ".join(f"{op}:{src}" for op, src in pairs) for t, pairs in genotype.cells.items())


@lru_cache(maxsize=256)
def _cell_svgs(genotype_json: str) -> tuple[tuple[str, str], ...]:
    """``(cell type, inline SVG)`` of every cell (cached: a group page shows each cell twice)."""
    genotype = Genotype.from_dict(json.loads(genotype_json))
    return tuple((t, render_svg(graph)) for t, graph in cell_graphs(genotype).items())


def cell_name(cell_type: str) -> str:
    """``normal cell``, ``reduce cell``; NB201's only cell type is called ``cell``."""
    return cell_type if cell_type == "cell" else f"{cell_type} cell"


def cell_figures(genotype: Genotype) -> str:
    return "".join(f"<figure><figcaption>{_e(cell_name(t))}</figcaption>{svg}</figure>"
                   for t, svg in _cell_svgs(json.dumps(genotype.to_dict(), sort_keys=True)))


# ----- series from a run -----------------------------------------------------------------------------------
def _epoch_series(run: RunHistory, value) -> list[tuple[float, float | None]]:
    """``(completed epochs, value(record))`` over the epoch records."""
    return [(record["epoch"] + 1, value(record)) for record in run.epochs]


def _step_means(run: RunHistory, key: str) -> list[tuple[float, float | None]]:
    """Per epoch, the mean of ``key`` over the step records logged during it (x = completed epochs)."""
    sums: dict[int, list[float]] = {}
    for record in run.steps:
        if isinstance(record.get(key), (int, float)):
            sums.setdefault(int(record["epoch"]), []).append(float(record[key]))
    return [(epoch + 1, sum(v) / len(v)) for epoch, v in sorted(sums.items())]


def _per_type_lines(run: RunHistory, field: str) -> list[Line]:
    lines = []
    for i, cell_type in enumerate(run.space.cells):
        points = _epoch_series(run, lambda r, t=cell_type: run.decision(r)[field].get(t))
        lines.append(Line(cell_type, points, "#1f77b4" if field == "margin" else "#6a1b9a",
                          **TYPE_STYLES[i % len(TYPE_STYLES)]))
    return lines


# ----- one run -----------------------------------------------------------------------------------------------
def _status_badge(run: RunHistory) -> str:
    margin, _ = run.final_decision
    badge = ""
    if not run.finished:
        badge = f'<span class="badge running">running: {_e(run.status)}</span>'
    if margin is not None and undecided(margin):
        text = "undecided" if run.finished else "undecided so far"
        badge += (f'<span class="badge undecided" title="final margin {margin:.4f} &lt; {UNDECIDED_MARGIN}">'
                  f"{text}</span>")
    elif margin is not None and run.finished:
        badge += '<span class="badge decided">decided</span>'
    return badge


def _facts(run: RunHistory) -> str:
    """The table of what the run is and what it found (every value is text but the cell, code)."""
    cfg, last = run.config, run.last
    rows = [("method", cfg.get("method")), ("space", cfg.get("space")), ("dataset", cfg.get("dataset")),
            ("seed", cfg.get("seed")), ("progress", run.status)]
    if run.results is not None:
        rows += [("steps (architecture steps)", f"{run.results.get('steps')} ({run.results.get('arch_steps')})"),
                 ("search time", f"{run.results.get('seconds', 0):.1f} s")]
    genotype = run.genotype
    if genotype is not None and last is not None:
        decision = run.decision(last)
        rows.append(("skip connections, parameter-free ops",
                     f"{genotype.count('skip_connect')}, {genotype.count_parameter_free()}"))
        for field in ("margin", "entropy"):
            rows.append((f"{field} per cell type", ", ".join(f"{t} {_num(v, 4)}" for t, v in decision[field].items())))
        bench = run.epochs[-1].get("benchmark") if run.epochs else None
        if bench:
            rows.append(("benchmark (latest cell)", ", ".join(f"{k} {_num(v, 2)}" for k, v in bench.items()
                                                             if k != "arch")))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    if genotype is not None:
        body += f"<tr><th>derived cell</th><td><code>{_e(cell_text(genotype))}</code></td></tr>"
    return f'<table class="panel facts" data-panel="facts">{body}</table>'


def _charts(run: RunHistory) -> str:
    charts = []
    counts = [Line("skip connections", _epoch_series(run, lambda r: r.get("skip_connect")), op_color("skip_connect")),
              Line("parameter-free ops", _epoch_series(run, lambda r: r.get("parameter_free")), "#555555",
                   dashed=True)]
    charts.append(("counts", line_chart(counts, title="derived cell: skip and parameter-free ops",
                                        ylabel="ops", ylim=(0, None))))
    rule = Rule(UNDECIDED_MARGIN, f"undecided below {UNDECIDED_MARGIN}", "#e65100")
    charts.append(("margin", line_chart(_per_type_lines(run, "margin"), title="decision margin (top-1 − top-2)",
                                        ylabel="mean over edges", ylim=(0, None), rules=[rule])))
    charts.append(("entropy", line_chart(_per_type_lines(run, "entropy"), title="op entropy (1 = uniform)",
                                         ylabel="mean over edges", ylim=(0, 1))))
    logged = [(x, y) for x, y in _epoch_series(run, lambda r: r.get("hessian_eigenvalue")) if y is not None]
    hessian = [Line("", logged, "#00695c")]  # every hessian_every epochs: joined, not broken
    charts.append(("hessian", line_chart(hessian, title="dominant Hessian eigenvalue of L_val w.r.t. α",
                                         ylabel="λ_max", legend=False,
                                         empty="not logged (hessian_every=N logs it)")))
    alignment = [Line(t, _step_means(run, f"alignment.{t}"), "#5d4037", **TYPE_STYLES[i % len(TYPE_STYLES)])
                 for i, t in enumerate(run.space.cells)]
    charts.append(("alignment", line_chart(alignment, title="per-cell gradient alignment (mean over the epoch)",
                                           ylabel="cosine", empty="not logged (alignment_every=N logs it)")))
    columns = run.benchmark_columns()
    bench = [Line(c, _epoch_series(run, lambda r, c=c: (r.get("benchmark") or {}).get(c)),
                  RUN_COLORS[i % len(RUN_COLORS)], dashed=c.endswith("-val")) for i, c in enumerate(columns)]
    empty = ("no benchmark table (benchmark_table=PATH on nb201)" if run.space.name == "nb201"
             else "benchmark tables exist for nb201 only")
    charts.append(("benchmark", line_chart(bench, title="NAS-Bench-201 accuracy of the derived cell",
                                           ylabel="accuracy (%)", empty=empty)))
    accuracy = [Line(f"{split}", [(x, None if y is None else 100 * y) for x, y in _step_means(run, f"{split}_acc")],
                     color, dashed=split == "val") for split, color in (("train", "#1565c0"), ("val", "#c62828"))]
    charts.append(("accuracy", line_chart(accuracy, title="supernet accuracy (mean over the epoch)",
                                          ylabel="accuracy (%)")))
    return '<div class="charts">' + "".join(f'<div class="panel" data-panel="{name}">{svg}</div>'
                                             for name, svg in charts) + "</div>"


def _strength_panels(run: RunHistory) -> str:
    """Per cell type one small chart per edge, a row per destination node: the strength of every
    op against the epoch."""
    space = run.space
    chosen: dict[str, dict[tuple[int, int], set[str]]] = {t: {} for t in space.cells}
    if run.genotype is not None:
        for t, triples in genotype_edges(run.genotype).items():
            for src, dst, op in triples:
                chosen[t].setdefault((src, dst), set()).add(op)
    ops_seen: dict[str, None] = {}
    sections = []
    for cell_type, topo in space.cells.items():
        # one y range per cell type, from the weakest to the strongest op of any edge and epoch
        values = [v for r in run.epochs for row in r["strengths"][cell_type] for v in row]
        y_range = (min(values, default=0.0), max(values, default=1.0))
        rows: dict[int, list[str]] = {}
        for e, (src, dst) in enumerate(topo.edges):
            kept = chosen[cell_type].get((src, dst), set())
            lines = []
            for k, op in enumerate(topo.edge_ops[e]):
                ops_seen[op] = None
                points = _epoch_series(run, lambda r, t=cell_type, e=e, k=k: r["strengths"][t][e][k])
                lines.append(Line(op, points, op_color(op), width=2.6 if op in kept else 1.1,
                                  dashed=is_parameter_free(op), opacity=1.0 if op in kept or not kept else 0.55))
            name = " → ".join(node_label(space.family, v, topo.num_inputs) for v in (src, dst))
            title = f"{name}: {', '.join(sorted(kept))}" if kept else f"{name} (not kept)"
            chart = line_chart(lines, title=title, width=230, height=150, ylim=y_range, legend=False)
            rows.setdefault(dst, []).append(f'<div class="edge-panel">{chart}</div>')
        body = "".join(f'<div class="edge-row"><b>→ {_e(node_label(space.family, dst, topo.num_inputs))}</b>'
                       f'{"".join(panels)}</div>' for dst, panels in rows.items())
        sections.append(f'<h3>{_e(cell_name(cell_type))}: op strengths per edge, one row per node</h3>'
                        f'<div class="panel edges" data-panel="strengths-{_e(cell_type)}">{body}</div>')
    legend = "".join(f'<span><i style="border-color:{op_color(op)};'
                     f'{"border-top-style:dashed;" if is_parameter_free(op) else ""}"></i>{_e(op)}</span>'
                     for op in ops_seen)
    note = ("Strength in the activation's own terms (softmax weight, gate probability P(g≠0), clamp value) after "
            "each epoch; the thick line is the op the latest cell keeps on that edge; dashed ops have no parameters.")
    return f'<p class="legend">{legend}</p><p class="meta">{_e(note)}</p>' + "".join(sections)


def _config_and_env(run: RunHistory) -> str:
    config = yaml.safe_dump(run.config, sort_keys=False, default_flow_style=None)
    env = "".join(f"<tr><th>{_e(k)}</th><td>{_e(' '.join(map(str, v)) if isinstance(v, list) else v)}</td></tr>"
                  for k, v in run.env.items())
    return (f'<details class="panel" data-panel="config"><summary>resolved configuration (config.yaml)</summary>'
            f"<pre>{_e(config)}</pre></details>"
            f'<div class="panel" data-panel="environment"><h3>environment (env.json)</h3><table>{env}</table></div>')


def run_section(run: RunHistory, anchor: str, heading: str = "h2") -> str:
    """Everything about one run (see the module docstring), as one ``<section>``."""
    genotype = run.genotype
    cells = (cell_figures(genotype) if genotype is not None
             else '<p class="meta">no epoch has finished yet: no cell to draw</p>')
    return (f'<section class="run" id="{_e(anchor)}"><{heading}>{_e(run.name)} {_status_badge(run)}</{heading}>'
            f'<p class="meta">{_e(run.path)}</p>{_facts(run)}'
            f'<h3>cells{"" if run.finished else " (after the latest epoch)"}</h3>'
            f'<div class="panel cells" data-panel="cells">{cells}</div>'
            f"{_strength_panels(run)}<h3>search against the epoch</h3>{_charts(run)}{_config_and_env(run)}</section>")


# ----- a group of runs ----------------------------------------------------------------------------------------
def _overview(entries: Sequence[GridEntry]) -> str:
    columns = sorted({c for e in entries for c in e.run.benchmark_columns() if c.endswith("-test")})
    head = ["run", "method", "seed", "progress", "derived cell", "skips", "param-free", "margin", "entropy",
            *columns, "flag"]
    rows = []
    for entry in entries:
        run = entry.run
        margin, entropy = run.final_decision
        genotype = run.genotype
        bench = (run.epochs[-1].get("benchmark") or {}) if run.epochs else {}
        flag = ("undecided" if run.finished else "undecided so far") if undecided(margin) else ""
        cells = [f'<a href="{_e(entry.href)}">{_e(run.name)}</a>', _e(run.config.get("method")),
                 _e(run.config.get("seed")), _e(run.status),
                 f"<code>{_e(cell_text(genotype))}</code>" if genotype else "–",
                 _num(genotype.count("skip_connect") if genotype else None),
                 _num(genotype.count_parameter_free() if genotype else None), _num(margin, 4), _num(entropy, 3),
                 *(_num(bench.get(c), 2) for c in columns), f'<b class="badge undecided">{flag}</b>' if flag else ""]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = ('<table class="panel" data-panel="runs"><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
             + "".join(rows) + "</table>")
    note = (f"margin: the smallest over the cell types of the mean top-1 − top-2 op strength per edge; entropy: the "
            f"largest, 1 = uniform. A finished run whose margin is below {UNDECIDED_MARGIN} is undecided.")
    return table + f'<p class="meta">{_e(note)}</p>' + _cells_grid(entries) + _group_charts(entries)


def _cells_grid(entries: Sequence[GridEntry]) -> str:
    rows = list(dict.fromkeys(e.row for e in entries))
    columns = list(dict.fromkeys(e.column for e in entries))
    body = []
    for row in rows:
        tds = []
        for column in columns:
            mine = [e for e in entries if e.row == row and e.column == column]
            tds.append("<td>" + "".join(
                f'<a href="{_e(e.href)}">{_e(e.run.name)}</a> {_status_badge(e.run)}'
                + (cell_figures(e.run.genotype) if e.run.genotype is not None else '<p class="meta">no cell yet</p>')
                for e in mine) + "</td>")
        body.append(f"<tr><th>{_e(row)}</th>{''.join(tds)}</tr>")
    head = "<tr><th></th>" + "".join(f"<th>seed {_e(c)}</th>" for c in columns) + "</tr>"
    return (f'<h3>final cells side by side</h3><div class="panel" data-panel="cells-grid"><table class="grid">'
            f"{head}{''.join(body)}</table></div>")


def _group_charts(entries: Sequence[GridEntry]) -> str:
    def lines(value) -> list[Line]:
        """One line per run of ``value(run, epoch record)``."""
        return [Line(e.run.name, _epoch_series(e.run, lambda r, run=e.run: value(run, r)),
                     RUN_COLORS[i % len(RUN_COLORS)], dashed=(i // len(RUN_COLORS)) % 2 == 1)
                for i, e in enumerate(entries)]

    rule = Rule(UNDECIDED_MARGIN, f"undecided below {UNDECIDED_MARGIN}", "#e65100")
    chart = partial(line_chart, width=420, height=260)
    charts = [("group-margin", chart(lines(lambda run, r: least_decided(run.decision(r))[0]),
                                     title="decision margin (smallest over cell types)", ylabel="margin",
                                     ylim=(0, None), rules=[rule])),
              ("group-skips", chart(lines(lambda run, r: r.get("skip_connect")),
                                    title="skip connections in the derived cell", ylabel="ops", ylim=(0, None)))]
    columns = sorted({c for e in entries for c in e.run.benchmark_columns() if c.endswith("-test")})
    if columns:
        column = columns[0]
        charts.append(("group-benchmark", chart(lines(lambda run, r: (r.get("benchmark") or {}).get(column)),
                                                title=f"{column} of the derived cell (NAS-Bench-201)",
                                                ylabel="accuracy (%)")))
    return '<h3>every run against the epoch</h3><div class="charts">' + "".join(
        f'<div class="panel" data-panel="{name}">{svg}</div>' for name, svg in charts) + "</div>"


# ----- pages ----------------------------------------------------------------------------------------------------
def page(title: str, body: str, refresh: int | None = None) -> str:
    """A complete HTML document; ``refresh``: seconds after which the browser reloads it."""
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{meta}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
            f'<h1>{_e(title)}</h1><p class="meta">dnas {_e(dnas.__version__)}, written {stamp}'
            f'{", reloads every " + str(int(refresh)) + " s while the search runs" if refresh else ""}</p>'
            f"{body}</body></html>\n")


def run_page(run: RunHistory, refresh: int | None = None) -> str:
    return page(f"dnas search: {run.name}", run_section(run, "run"), refresh)


def group_page(entries: Sequence[GridEntry], title: str, sections: bool, refresh: int | None = None) -> str:
    """The overview of ``entries``, followed by every run's section when ``sections`` (else the
    entries link to pages of their own)."""
    body = f'<h2>overview</h2>{_overview(entries)}'
    if sections:
        body += "".join(run_section(e.run, e.href.lstrip("#")) for e in entries)
    return page(title, body, refresh)


# ----- writing ----------------------------------------------------------------------------------------------------
INDEX = "index.html"


def _row_label(run: RunHistory) -> str:
    """A run's row in a group page: its folder name without the ``-s<seed>`` of compare's runs, else its method."""
    suffix = f"-s{run.config.get('seed')}"
    if run.name.endswith(suffix) and len(run.name) > len(suffix):
        return run.name[: -len(suffix)]
    return str(run.config.get("method"))


def _written_by_dnas(folder: Path) -> bool:
    """A report folder of a dnas that kept no list of its files: its index.html is a dnas page."""
    try:
        with open(folder / INDEX, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return b"<title>dnas " in head and b'<p class="meta">dnas ' in head


def report_folder(out: Path) -> OutputFolder:
    """The folder of ``dnas report``'s index.html, under the ownership rule."""
    if out.exists() and not out.is_dir():
        raise DnasError(f"--out {out} is a file; give a folder for the report's index.html")
    if is_run(out):
        raise DnasError(f"--out {out} is a search run directory; write the report to a folder of its own")
    return OutputFolder(out, "report", legacy=_written_by_dnas)


def _check_out(out: Path) -> None:
    report_folder(out).reserve([INDEX])


def write_report(runs: Sequence[RunHistory], out: str | Path, refresh: int | None = None) -> Path:
    """``out/index.html`` for one run (its page) or several (overview + every run's section).
    ``refresh`` (seconds) is written into the page only while some run is unfinished."""
    out = Path(out)
    _check_out(out)
    refresh = refresh if any(not r.finished for r in runs) else None
    if len(runs) == 1:
        text = run_page(runs[0], refresh)
    else:
        entries = [GridEntry(_row_label(r), str(r.config.get("seed")), r, f"#run-{i}") for i, r in enumerate(runs)]
        text = group_page(entries, f"dnas report: {len(runs)} runs", sections=True, refresh=refresh)
    path = out / INDEX
    atomic_write_text(path, text)
    return path


def write_grid_pages(out: str | Path, grid: Sequence[tuple[str, str, Path]], title: str) -> Path:
    """``dnas compare``'s pages: ``out/reports/<run>/index.html`` for every ``(row, column, run
    directory)`` that has started and can be read, and ``out/index.html``, the overview linking them
    (a run directory that cannot be read is left out here; the grid's report names it as failed)."""
    out = Path(out)
    entries = []
    for row, column, run_dir in grid:
        if not is_run(run_dir):
            continue
        try:
            run = read_run(run_dir)
        except DnasError:
            continue
        href = f"reports/{run.name}/{INDEX}"
        atomic_write_text(out / href, run_page(run))
        entries.append(GridEntry(row, column, run, href))
    path = out / INDEX
    atomic_write_text(path, group_page(entries, title, sections=False))
    return path
