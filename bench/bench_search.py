"""Seconds per search iteration and peak memory of every method, against a plain reference supernet.

One iteration = the architecture step (when the method's schedule takes one) + the weight step,
run through the real algorithm (``dnas.bilevel.step.SearchStep.iterate``). For every space and every preset in
``dnas methods`` this prints the median seconds per iteration, its ratio to first-order DARTS on
the fused supernet, and the peak resident memory, plus a **reference** row: first-order DARTS on
the supernet written the straightforward way (every op of every edge computed separately, ``none``
included, as the original DARTS code does; :mod:`dnas.supernet.reference`), with the same
parameters and math, measured in the same invocation.

    darts:  8 cells, C=16      nb201:  C=16, N=5 cells per stage      batch 64, 32x32 RGB inputs

Inputs are random 3-channel images (speed does not depend on content). Components with ramps are
put in their last epoch (Lambda-DARTS' lambda_t = lambda, PR-DARTS' final temperature). Every
configuration runs in a fresh subprocess so that peak memory (``ru_maxrss``) is its own.

Every method is a sequence of forward + backward passes (``bench/_common.py`` ``PASSES``: a pass w.r.t.
alpha ``a``, w.r.t. the weights ``w``, both ``wa``, or the weights and per-cell copies of alpha
``wc``), so its ratio has a floor set by its passes alone. The worker of such a method also times
each pass kind it uses (and ``a`` and ``w``), one of each after every timed iteration, in the same
process, and reports

    floor = sum of its passes' seconds / (seconds of "a" + "w")      (the ratio its passes imply)
    over  = seconds per iteration / sum of its passes' seconds       (what it spends beyond them)

``over`` above 1 is the work outside the passes: data, optimizer steps, copies and restores of the
weights, the regularizer's arithmetic. Methods whose passes are not separate passes (amended-darts'
exact double backward) or vary per iteration (darts-prime's schedule) have neither.

No implementation gets below the floors' bounds: an alpha pass skips the weights' gradients
(``a <= w``) and a pass with more gradients costs no less (``wa, wc >= w``), so

    darts-2nd      (2w + wa + 2a) / (a + w)  >=  2 + w / (a + w)   >=  2.5
    lambda-darts   (a + wc + 2w) / (a + w)   >=  1 + 2w / (a + w)  >=  2
    amended (fd)   (wa + 3w + 2a) / (a + w)  >=  2 + 2w / (a + w)  >=  3

with equality only when an alpha pass costs as much as a weight pass.

The roofline (``bench/roofline.py``) is measured first, in the same run, and every row also gives
the iteration's passes through the supernet, its FLOPs (convolutions and matrix products, forward
and backward, counted from the network by :mod:`dnas.diagnostics.flops` on one more iteration after the timed
ones), the achieved GFLOP/s and that rate as a percentage of the attainable one under the conv and
gemm ceilings. The load average is printed before and after: figures taken on a busy machine are
not figures of the code.

    python bench/bench_search.py                         # all methods, both spaces (tens of minutes)
    python bench/bench_search.py --quick                 # small shapes (a minute or two)
    python bench/bench_search.py --methods darts,lambda-darts --spaces nb201
    python bench/bench_search.py --quick --methods darts --spaces nb201 --compile --warmup 3   # torch.compile
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import roofline
from _common import (
    PASSES,
    iterate,
    maxrss_mb,
    peak_memory_mb,
    reference_pass,
    run_worker,
    search_at_last_epoch,
)

FULL = {"darts": (16, 8), "nb201": (16, 5), "batch_size": 64, "image_size": 32, "warmup": 2, "steps": 6}
QUICK = {"darts": (8, 5), "nb201": (8, 2), "batch_size": 16, "image_size": 16, "warmup": 1, "steps": 3}
REFERENCE = "reference"
# methods whose iteration is exactly their PASSES (amended-darts' preset takes exact products; darts-prime's
# schedule skips the alpha step on some iterations)
FLOORED = ("darts", "darts-2nd", "lambda-darts")


def floor_and_overhead(method: str, seconds: float, pass_seconds: dict[str, float]) -> tuple[float, float]:
    """``(floor, over)`` of the module docstring, from the method's own pass times."""
    arch, weight = PASSES[method]
    passes = sum(pass_seconds[k] for k in (*arch, *weight))
    return passes / (pass_seconds["a"] + pass_seconds["w"]), seconds / passes


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from dnas.diagnostics.flops import count_work
    from dnas.supernet import build_supernet, copy_into_reference

    torch.set_num_threads(spec["threads"])
    method = "darts" if spec["method"] == REFERENCE else spec["method"]
    channels, layers = spec["shape"]
    with search_at_last_epoch(spec["space"], method, channels=channels, layers=layers,
                              batch_size=spec["batch_size"], image_size=spec["image_size"],
                              device=spec["device"]) as search:
        cfg = search.cfg
        if spec["method"] == REFERENCE:
            reference = build_supernet(search.space, num_classes=10, in_channels=3, channels=channels,
                                       layers=layers, fused=False).to(search.device)
            copy_into_reference(search.problem.net, reference)
            search.problem.net = reference
            search.search.w_opt = torch.optim.SGD(search.problem.weights, lr=cfg.w_lr, momentum=cfg.w_momentum,
                                                  weight_decay=cfg.w_weight_decay)
        if spec.get("compile"):  # the supernet's forward through torch.compile (inductor); the first calls compile
            search.problem.net.forward = torch.compile(search.problem.net.forward)
        build_mb = maxrss_mb()

        def timed(fn) -> tuple[float, Any]:
            if search.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn()
            if search.device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start, out

        # the pass kinds of a floored method (and "a", "w"), each timed once after every iteration
        kinds = sorted({"a", "w", *PASSES[method][0], *PASSES[method][1]}) if spec["method"] in FLOORED else []
        pass_times: dict[str, list[float]] = {kind: [] for kind in kinds}
        times, took = [], []
        for _ in range(spec["warmup"] + spec["steps"]):
            seconds, arch_step = timed(lambda: iterate(search))
            times.append(seconds)
            took.append(arch_step)
            batch = next(search.train_stream)
            for kind in kinds:
                pass_times[kind].append(timed(lambda k=kind, b=batch: reference_pass(search.problem, b, k))[0])
        arch_steps, peak = search.arch_steps, peak_memory_mb(spec["device"])
        with count_work(search.problem.net) as work:  # one more iteration, counted (never timed)
            counted_took = iterate(search)
    timed, timed_took = times[spec["warmup"]:], took[spec["warmup"]:]
    # the FLOP rate compares the counted iteration with timed iterations of the same kind (with or
    # without an architecture step: darts-prime's schedule takes one only now and then)
    same_kind = [t for t, k in zip(timed, timed_took, strict=True) if k == counted_took] or timed
    return {"seconds": statistics.median(timed), "mean_seconds": statistics.fmean(timed), "build_mb": build_mb,
            "peak_mb": peak, "arch_steps": arch_steps, "iterations": len(times), "flops": work.flops,
            "flops_by_key": [[*key, flops] for key, flops in work.flops_by_key.items()],
            "bytes_by_size": [[size, n] for size, n in work.bytes_by_size.items()],
            "flops_seconds": statistics.median(same_kind), "passes": work.forwards,
            "pass_seconds": {k: statistics.median(t[spec["warmup"]:]) for k, t in pass_times.items()}}


def main(argv: list[str] | None = None) -> None:
    from dnas.bilevel.methods import METHODS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes")
    parser.add_argument("--spaces", default="darts,nb201")
    parser.add_argument("--methods", default="all", help="comma-separated presets, or all")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, help="timed iterations per configuration")
    parser.add_argument("--warmup", type=int, help="untimed iterations first")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--compile", action="store_true",
                        help="run the supernet's forward through torch.compile (give --warmup enough to compile)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    base = QUICK if args.quick else FULL
    steps = args.steps or base["steps"]
    warmup = base["warmup"] if args.warmup is None else args.warmup
    methods = METHODS.names() if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    methods = ["darts", *[m for m in methods if m != "darts"]]  # the baseline of every ratio comes first
    print(f"# seconds per search iteration ({'quick' if args.quick else 'full'}: batch {base['batch_size']}, "
          f"{base['image_size']}x{base['image_size']}x3, {args.threads} thread(s), {args.device}, median of {steps} "
          f"iterations after {warmup} warm-up); ratio = method / first-order DARTS (fused); GFLOP = convolutions "
          "and matrix products of one iteration, counted (dnas.diagnostics.flops); %conv / %gemm = achieved rate "
          "over the "
          "attainable rate under the roofline's conv / gemm ceiling; %roof = with the memory-bound ops' bytes at the "
          "stream bandwidth as well")
    print(f"# before: {roofline.load_average()}")
    header = (f"{'space':6s} {'method':16s} {'s/iter':>8s} {'ratio':>6s} {'floor':>6s} {'over':>6s} {'peak MB':>8s} "
              f"{'arch steps':>10s} {'passes':>6s} {'GFLOP':>8s} {'GFLOP/s':>8s} {'%conv':>6s} {'%gemm':>6s} "
              f"{'%roof':>6s}")
    rows = []
    rooflines: dict[int, dict[str, Any]] = {}
    for space in [s.strip() for s in args.spaces.split(",") if s.strip()]:
        shape = base["nb201" if space == "nb201" else "darts"]
        if shape[0] not in rooflines:
            rooflines[shape[0]] = roofline.measure(shape[0], base["image_size"], base["batch_size"], args.threads)
            print(roofline.format_table(rooflines[shape[0]]))
            print(header)
        results = {}
        for method in [*methods, REFERENCE]:
            spec = {"space": space, "method": method, "shape": shape, "batch_size": base["batch_size"],
                    "image_size": base["image_size"], "warmup": warmup, "steps": steps,
                    "threads": args.threads, "device": args.device, "compile": args.compile}
            try:
                results[method] = r = run_worker(__file__, spec)
            except RuntimeError as error:
                raise SystemExit(f"worker failed for {space}/{method}: {error}") from None
            ratio = r["seconds"] / results["darts"]["seconds"]
            floor, over = floor_and_overhead(method, r["seconds"], r["pass_seconds"]) if r["pass_seconds"] \
                else (None, None)
            percent = roofline.percent_of_ceilings(r["flops_by_key"], r["flops_seconds"], rooflines[shape[0]],
                                                   r["bytes_by_size"])
            print(f"{space:6s} {method:16s} {r['seconds']:8.3f} {ratio:6.2f} "
                  f"{'-' if floor is None else f'{floor:.2f}':>6s} {'-' if over is None else f'{over:.2f}':>6s} "
                  f"{r['peak_mb']:8.0f} "
                  f"{r['arch_steps']:>4d}/{r['iterations']:<5d} {r['passes']:6d} {r['flops'] / 1e9:8.2f} "
                  f"{r['flops'] / r['flops_seconds'] / 1e9:8.1f} {percent['conv']:6.1f} {percent['gemm']:6.1f} "
                  f"{percent['roof']:6.1f}",
                  flush=True)
            rows.append({"space": space, "method": method, "ratio": ratio, "floor": floor, "over": over,
                         "percent_of_ceilings": percent, **r})
    print(f"# after: {roofline.load_average()}")
    if args.json:
        args.json.write_text(json.dumps({"rooflines": rooflines, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
