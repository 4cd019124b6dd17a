"""Cost of a Lambda-DARTS search iteration relative to a first-order DARTS iteration.

One iteration = the architecture step (first order: one forward/backward on a validation batch)
plus the weight step. Lambda-DARTS adds two forward/backward passes to the weight step (the
central difference of the regularizer), so by pass count it costs (1 + 3) / (1 + 1) = 2x a
first-order DARTS iteration; this script measures what it actually costs, on both spaces:

    darts:  8 cells, C=16      nb201:  C=16, N=5 cells per stage      batch 64, 32x32 inputs

Every configuration runs in a fresh subprocess (``--worker``), which builds the search through
the real loop (``dnas.search.Search``: presets ``darts`` and ``lambda-darts``, the embedded
digits images resized to 32x32, i.e. one input channel instead of CIFAR's three: only the stem
convolution differs) and times ``Search._iteration`` in the last of two epochs, where the ramp
gives ``lambda_t = lambda`` (in the first epoch lambda_t = 0 and the extra passes are skipped).
The per-iteration time is the median over the timed iterations after warm-up; peak memory is
the subprocess's maximum resident set size (``ru_maxrss``), also given right after the build so
that the iteration's own share can be read off. DARTS and Lambda-DARTS run alternately in the
same invocation, ``--repeats`` times, and the median of the repeats is reported.

    python bench/bench_lambda.py            # the configuration above (minutes on a CPU)
    python bench/bench_lambda.py --quick    # a small configuration (seconds)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

METHODS = ("darts", "lambda-darts")
FULL = {
    "darts": {"channels": 16, "layers": 8},
    "nb201": {"channels": 16, "layers": 5},
    "batch_size": 64, "image_size": 32, "warmup": 2, "steps": 10, "repeats": 2,
}
QUICK = {
    "darts": {"channels": 4, "layers": 5},
    "nb201": {"channels": 4, "layers": 2},
    "batch_size": 16, "image_size": 16, "warmup": 1, "steps": 3, "repeats": 1,
}


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one search and time its iterations (runs inside the subprocess)."""
    import torch

    from dnas.resolve import resolve_config
    from dnas.search import Search

    torch.set_num_threads(spec["threads"])
    cfg = resolve_config(
        {"space": spec["space"], "method": spec["method"], "epochs": 2, "batch_size": spec["batch_size"],
         "device": spec["device"]},
        [f"channels={spec['channels']}", f"layers={spec['layers']}", f"image_size={spec['image_size']}",
         "alignment_every=0", "checkpoint_every=0", "log_every=1000000", *spec["overrides"]],
    )
    with tempfile.TemporaryDirectory() as tmp:
        search = Search(cfg, Path(tmp) / "run", progress=False)
        search._build()
        search.global_step, search.arch_steps = 0, 0
        search._reset_meters()
        epoch = cfg.epochs - 1  # the ramp's last epoch: lambda_t = lambda
        search.problem.weight_lr = cfg.w_lr
        build_mb = _maxrss_mb()
        times = []
        for step in range(spec["warmup"] + spec["steps"]):
            search.problem.epochs_elapsed = epoch + step / search.steps_per_epoch
            if search.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            search._iteration(epoch, step)
            if search.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            search.global_step += 1
        metrics = {k: float(v) for r in search.weight_regularizers for k, v in r.metrics().items()}
    timed = times[spec["warmup"]:]
    return {"seconds": statistics.median(timed), "all_seconds": timed, "build_mb": build_mb,
            "peak_mb": _maxrss_mb(), "regularizer": metrics}


def _run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"worker failed for {spec['space']}/{spec['method']}:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small configuration (seconds)")
    parser.add_argument("--spaces", default="darts,nb201", help="comma-separated spaces (default: darts,nb201)")
    parser.add_argument("--steps", type=int, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, help="untimed iterations per run")
    parser.add_argument("--repeats", type=int, help="alternating runs per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    base = QUICK if args.quick else FULL
    warmup = base["warmup"] if args.warmup is None else args.warmup
    steps = base["steps"] if args.steps is None else args.steps
    repeats = base["repeats"] if args.repeats is None else args.repeats
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    print(f"# Lambda-DARTS vs first-order DARTS iteration cost ({'quick' if args.quick else 'full'}; batch "
          f"{base['batch_size']}, {base['image_size']}x{base['image_size']}, {args.threads} thread(s), "
          f"{args.device}, median of {steps} iterations after {warmup} warm-up, {repeats} repeat(s))")
    rows = []
    for space in spaces:
        shape = base["nb201" if space == "nb201" else "darts"]
        results: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
        for _ in range(repeats):
            for method in METHODS:
                spec = {"space": space, "method": method, **shape, "batch_size": base["batch_size"],
                        "image_size": base["image_size"], "warmup": warmup, "steps": steps,
                        "threads": args.threads, "device": args.device, "overrides": []}
                results[method].append(_run_worker(spec))
        summary = {m: {"seconds": statistics.median(r["seconds"] for r in rs),
                       "build_mb": statistics.median(r["build_mb"] for r in rs),
                       "peak_mb": statistics.median(r["peak_mb"] for r in rs)} for m, rs in results.items()}
        row = {"space": space, **shape, "darts": summary["darts"], "lambda-darts": summary["lambda-darts"],
               "time_ratio": summary["lambda-darts"]["seconds"] / summary["darts"]["seconds"],
               "pass_ratio": 2.0, "runs": results}
        rows.append(row)
    print(f"{'space':6} {'C':>3} {'cells':>5} | {'DARTS s/it':>10} {'Lambda s/it':>11} {'ratio':>6} (passes 2.00) | "
          f"{'DARTS peak MB':>13} {'Lambda peak MB':>14} | {'after build MB':>14}")
    for r in rows:
        d, lam = r["darts"], r["lambda-darts"]
        cells = r["layers"] if r["space"] != "nb201" else 3 * r["layers"]
        print(f"{r['space']:6} {r['channels']:>3} {cells:>5} | {d['seconds']:>10.3f} {lam['seconds']:>11.3f} "
              f"{r['time_ratio']:>6.2f}               | {d['peak_mb']:>13.0f} {lam['peak_mb']:>14.0f} | "
              f"{d['build_mb']:>6.0f} / {lam['build_mb']:<6.0f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
