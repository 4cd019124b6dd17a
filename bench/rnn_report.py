"""The report of bench/rnn_protocol.sh: every search and retraining run of the recurrent-space
protocol on Penn Treebank, per run and per method, beside the published PTB figures.

    python bench/rnn_report.py runs/rnn --budget b64 --a-lr 3e-3 --out runs/rnn/report.md

Reads ``RUN/search-BUDGET-alrA/METHOD-sSEED/{results.json,metrics.jsonl}`` (the pilots: every
``RUN/search-*/darts-s0``) and ``RUN/train/NAME/result.json``.
A run still missing is listed as missing, never left out.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

METHODS = ("darts", "lambda-darts", "darts-prime", "amended-darts")
SEEDS = (0, 1, 2)
UNDECIDED = 0.03  # dnas.diagnostics.convergence.UNDECIDED_MARGIN
#: published PTB figures (valid / test perplexity, parameters), for scale
PUBLISHED = [
    ("DARTS (first order)", "60.2 / 57.6", "23M", "DARTS paper (ICLR 2019), Table 2"),
    ("DARTS (second order), DARTS_V2_RNN", "58.1 / 55.7", "23M",
     "DARTS paper, Table 2; quark0/darts README: 55.68 test (pretrained model)"),
    ("ENAS cell, DARTS' training setup", "60.8 / 58.6", "24M", "DARTS paper, Table 2"),
    ("Lambda-DARTS", "not published", "", "dr-faustus/Lambda-DARTS has sota/rnn code, no PTB figure or RNN genotype"),
    ("DARTS-PRIME", "not found", "", "arXiv 2106.11655v3 reports PTB; no readable table was found"),
    ("Amended-DARTS", "not found", "", "arXiv 1910.11831 v5 reports PTB; no readable table was found"),
]


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _epochs(run: Path) -> list[dict[str, Any]]:
    out = []
    path = run / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("kind") == "epoch":
                out.append(record)
    return out


def _cell(genotype: dict[str, Any] | None) -> str:
    if not genotype:
        return ""
    return " ".join(f"{op}({src})" for op, src in genotype["recurrent"])


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _mean_std(values: list[float], digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def collect(root: Path, budget: str, a_lr: str) -> list[dict[str, Any]]:
    rows = []
    for seed in SEEDS:
        for method in METHODS:
            run = root / f"search-{budget}-alr{a_lr}" / f"{method}-s{seed}"
            results = _read(run / "results.json") or {}
            train = _read(root / "train" / f"{method}-s{seed}" / "result.json") or {}
            genotype = results.get("genotype")
            ops = [op for op, _ in genotype["recurrent"]] if genotype else []
            rows.append({
                "method": method, "seed": seed, "done": bool(results),
                "margin": (results.get("margin") or {}).get("recurrent"),
                "entropy": (results.get("entropy") or {}).get("recurrent"),
                "parameter_free": results.get("parameter_free"),
                "identity": ops.count("identity") if ops else None,
                "search_valid_ppl": results.get("valid_ppl"),
                "arch_steps": results.get("arch_steps"), "steps": results.get("steps"),
                "search_s": results.get("seconds"),
                "cell": _cell(genotype),
                "margins": [(e.get("margin") or {}).get("recurrent") for e in _epochs(run)],
                "valid_ppl": train.get("valid_ppl"), "test_ppl": train.get("test_ppl"),
                "params": train.get("params"), "train_s": train.get("seconds"),
            })
    return rows


def report(root: Path, budget: str, a_lr: str) -> str:
    rows = collect(root, budget, a_lr)
    lines = [f"# Recurrent-space protocol on Penn Treebank (budget {budget}, a_lr {a_lr})", "",
             "Pilots (plain darts, seed 0):", ""]
    for folder in sorted(root.glob("search-*")):
        r = _read(folder / "darts-s0" / "results.json")
        if r:
            lines.append(f"- {folder.name.removeprefix('search-')}: final margin "
                         f"{_fmt((r.get('margin') or {}).get('recurrent'), 4)}, supernet valid ppl "
                         f"{_fmt(r.get('valid_ppl'), 1)}, {r.get('steps')} steps, {_fmt(r.get('seconds'), 0)} s")
    lines += ["", "## Every search and its retraining", "",
              "| method | seed | final margin | entropy | param-free (none+identity) | supernet valid ppl | "
              "alpha steps / steps | search s | retrained valid / test ppl | retrain s | derived cell |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r["done"]:
            lines.append(f"| {r['method']} | {r['seed']} | missing | | | | | | | | |")
            continue
        lines.append(
            f"| {r['method']} | {r['seed']} | {_fmt(r['margin'])} | {_fmt(r['entropy'])} | {r['parameter_free']} | "
            f"{_fmt(r['search_valid_ppl'], 1)} | {r['arch_steps']} / {r['steps']} | {_fmt(r['search_s'], 0)} | "
            f"{_fmt(r['valid_ppl'], 1)} / {_fmt(r['test_ppl'], 1)} | {_fmt(r['train_s'], 0)} | `{r['cell']}` |")
    lines += ["", "## Per method (seeds 0-2)", "",
              "| method | runs | undecided (margin < 0.03) | final margin | param-free | retrained test ppl |",
              "|---|---|---|---|---|---|"]
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method and r["done"]]
        undecided = sum(r["margin"] is not None and r["margin"] < UNDECIDED for r in mine)
        lines.append(f"| {method} | {len(mine)} | {undecided}/{len(mine)} | "
                     f"{_mean_std([r['margin'] for r in mine], 3)} | "
                     f"{_mean_std([r['parameter_free'] for r in mine], 1)} | "
                     f"{_mean_std([r['test_ppl'] for r in mine], 1)} |")
    v2 = _read(root / "train" / "darts_v2_rnn" / "result.json") or {}
    lines += ["", f"DARTS_V2_RNN (the published cell) at the same retraining budget: valid / test ppl "
              f"{_fmt(v2.get('valid_ppl'), 1)} / {_fmt(v2.get('test_ppl'), 1)}, {v2.get('params', '—')} parameters.",
              "", "## Margin per epoch", ""]
    for r in rows:
        if r["done"]:
            lines.append(f"- {r['method']} seed {r['seed']}: " + ", ".join(_fmt(m) for m in r["margins"]))
    lines += ["", "## Published PTB figures (850 units, the full corpus, thousands of epochs), for scale", "",
              "| method | valid / test ppl | params | source |", "|---|---|---|---|"]
    lines += [f"| {name} | {ppl} | {params} | {source} |" for name, ppl, params, source in PUBLISHED]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the protocol's folder ($OUT/rnn)")
    parser.add_argument("--budget", required=True, help="the budget the pilot chose (b64 or b16)")
    parser.add_argument("--a-lr", required=True, help="the a_lr the pilot chose (names the search folder)")
    parser.add_argument("--out", type=Path, help="write the report here (default: print it)")
    args = parser.parse_args()
    text = report(args.root, args.budget, args.a_lr)
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
