"""Do two searches decide the same way? Final cells and op strengths of pairs of finished runs.

    R=runs/collapse-nb201/runs
    python bench/decision_agreement.py $R/darts-s0 $R/darts-bf16-s0 [A B ...]

For each pair (A, B) of run directories it prints whether the derived cells are identical, how
many edges differ, the largest difference of any op strength (softmax weight, gate probability,
clamp value: ``results.json`` ``strengths``), the decision margins of both, and their NAS-Bench-201
accuracy when the runs looked their cells up. Used to judge ``precision=bf16`` against float32,
with a second float32 run under another thread count as the yardstick of what an innocent change
of rounding does to the same search.

After the pairs it summarises each side (the A runs, the B runs) over all pairs: final accuracy,
collapsed runs (as bench/collapse_report.py counts them), skip and ``none`` edges of the final
cells; and it tests whether the paired differences B - A of final accuracy, skip and ``none``
edges are centred on zero (exact sign-flip permutation test over the pairs, two-sided: the seeds
pair the runs, so only the sign of each pair's difference is exchangeable under "B decides as A").
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from collapse_report import trace

from dnas.diagnostics.convergence import least_decided
from dnas.report.run import read_run
from dnas.report.stats import sign_flip_p


def final(run: Path) -> dict:
    if not (run / "results.json").is_file():
        raise SystemExit(f"{run} is not a finished run (no results.json)")
    results = json.loads((run / "results.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line]
    last = [r for r in epochs if r.get("kind") == "epoch"][-1]
    return {**results, "benchmark": (last.get("benchmark") or {}).get("cifar10-test")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, in pairs")
    args = parser.parse_args(argv)
    if len(args.runs) % 2:
        raise SystemExit("give run directories in pairs (A B [A B ...])")
    print("| A | B | same cell | edges that differ | max abs strength difference | margin A / B | cifar10-test A / B |")
    print("|---|---|---|---|---|---|---|")
    differing: list[int] = []
    for a, b in zip(args.runs[::2], args.runs[1::2], strict=True):
        ra, rb = final(a), final(b)
        pairs_a = {t: v for t, v in ra["genotype"].items() if isinstance(v, list)}
        pairs_b = {t: v for t, v in rb["genotype"].items() if isinstance(v, list)}
        differ = sum(x != y for t in pairs_a for x, y in zip(pairs_a[t], pairs_b.get(t, []), strict=False))
        gap = max(abs(x - y) for t in ra["strengths"] for row_a, row_b in zip(ra["strengths"][t], rb["strengths"][t],
                                                                              strict=True)
                  for x, y in zip(row_a, row_b, strict=True))
        margins = [least_decided(r)[0] for r in (ra, rb)]
        scores = [f"{r['benchmark']:.2f}" if r["benchmark"] is not None else "–" for r in (ra, rb)]
        print(f"| {a.name} | {b.name} | {'yes' if differ == 0 else 'no'} | {differ} | {gap:.3f} | "
              f"{margins[0]:.3f} / {margins[1]:.3f} | {scores[0]} / {scores[1]} |")
        differing.append(differ)
    sides = {"A": [side_summary(r) for r in args.runs[::2]], "B": [side_summary(r) for r in args.runs[1::2]]}
    print(f"\nedges that differ per pair: mean {statistics.fmean(differing):.2f}, "
          f"median {statistics.median(differing)}, same cell in {differing.count(0)} of {len(differing)} pairs")
    print("\n| side | runs | final cifar10-test | collapsed | skip edges | none edges |")
    print("|---|---|---|---|---|---|")
    for side, rows in sides.items():
        accuracy = [r["accuracy"] for r in rows if r["accuracy"] is not None]
        score = "–" if not accuracy else f"{statistics.fmean(accuracy):.2f}" + (
            f" ± {statistics.stdev(accuracy):.2f}" if len(accuracy) > 1 else "")
        print(f"| {side} | {len(rows)} | {score} | {sum(r['collapsed'] for r in rows)}/{len(rows)} | "
              f"{statistics.fmean(r['skip'] for r in rows):.2f} | {statistics.fmean(r['none'] for r in rows):.2f} |")
    for key in ("accuracy", "skip", "none"):
        diffs = [b[key] - a[key] for a, b in zip(sides["A"], sides["B"], strict=True)
                 if a[key] is not None and b[key] is not None]
        if diffs:
            print(f"paired B - A {key}: mean {statistics.fmean(diffs):+.2f} over {len(diffs)} pairs, "
                  f"sign-flip p = {sign_flip_p(diffs):.3f}")


def side_summary(run: Path) -> dict:
    """Final accuracy, collapsed flag, skip and ``none`` edge counts of one finished run."""
    t = trace(read_run(run))
    cells = final(run)["genotype"]
    ops = [op for pairs in cells.values() if isinstance(pairs, list) for op, _ in pairs]
    return {"accuracy": t.final, "collapsed": t.collapsed, "skip": ops.count("skip_connect"),
            "none": ops.count("none")}


if __name__ == "__main__":
    main()
