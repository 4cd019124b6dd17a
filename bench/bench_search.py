"""Seconds per search iteration and peak memory of every method, against a plain reference supernet.

One iteration = the architecture step (when the method's schedule takes one) + the weight step,
run through the real loop (``dnas.search_loop.Search._iteration``). For every space and every preset in
``dnas methods`` this prints the median seconds per iteration, its ratio to first-order DARTS on
the fused supernet, and the peak resident memory, plus a **reference** row: first-order DARTS on
the supernet written the straightforward way (every op of every edge computed separately, ``none``
included, as the original DARTS code does; :mod:`dnas.supernet.reference`), with the same
parameters and math, measured in the same invocation.

    darts:  8 cells, C=16      nb201:  C=16, N=5 cells per stage      batch 64, 32x32 RGB inputs

Inputs are random 3-channel images (speed does not depend on content). Components with ramps are
put in their last epoch (Lambda-DARTS' lambda_t = lambda, PR-DARTS' final temperature). Every
configuration runs in a fresh subprocess so that peak memory (``ru_maxrss``) is its own.

    python bench/bench_search.py                         # all methods, both spaces (tens of minutes)
    python bench/bench_search.py --quick                 # small shapes (a minute or two)
    python bench/bench_search.py --methods darts,lambda-darts --spaces nb201
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import maxrss_mb, peak_memory_mb, run_worker

FULL = {"darts": (16, 8), "nb201": (16, 5), "batch_size": 64, "image_size": 32, "warmup": 2, "steps": 6}
QUICK = {"darts": (8, 5), "nb201": (8, 2), "batch_size": 16, "image_size": 16, "warmup": 1, "steps": 3}
REFERENCE = "reference"


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    import dnas.search_loop
    from dnas.data import ImageDataset
    from dnas.resolve import resolve_config
    from dnas.search_loop import Search
    from dnas.supernet import build_supernet, copy_into_reference

    torch.set_num_threads(spec["threads"])
    size, n = spec["image_size"], 24 * spec["batch_size"]  # darts-prime keeps 1/11 for alpha
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 10
    synthetic = ImageDataset.from_tensors(images, labels, [str(i) for i in range(10)], "random")
    dnas.search_loop.load_dataset = lambda *a, **k: synthetic
    method = "darts" if spec["method"] == REFERENCE else spec["method"]
    channels, layers = spec["shape"]
    cfg = resolve_config(
        {"space": spec["space"], "method": method, "epochs": 2, "batch_size": spec["batch_size"],
         "device": spec["device"]},
        [f"channels={channels}", f"layers={layers}", "alignment_every=0", "checkpoint_every=0",
         "log_every=1000000", "train_portion=0.5"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        search = Search(cfg, Path(tmp) / "run", progress=False)
        search._build()
        if spec["method"] == REFERENCE:
            reference = build_supernet(search.space, num_classes=10, in_channels=3, channels=channels,
                                       layers=layers, fused=False).to(search.device)
            copy_into_reference(search.problem.net, reference)
            search.problem.net = reference
            search.w_opt = torch.optim.SGD(search.problem.weights, lr=cfg.w_lr, momentum=cfg.w_momentum,
                                           weight_decay=cfg.w_weight_decay)
        search.global_step, search.arch_steps = 0, 0
        search._reset_meters()
        epoch = cfg.epochs - 1
        for comp in search.components.values():
            comp.on_epoch_start(epoch, cfg.epochs)
        search.problem.weight_lr = cfg.w_lr
        build_mb = maxrss_mb()
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
        arch_steps = search.arch_steps
    timed = times[spec["warmup"]:]
    peak = peak_memory_mb(spec["device"])
    return {"seconds": statistics.median(timed), "mean_seconds": statistics.fmean(timed), "build_mb": build_mb,
            "peak_mb": peak, "arch_steps": arch_steps, "iterations": len(times)}


def main(argv: list[str] | None = None) -> None:
    from dnas.methods import METHODS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes")
    parser.add_argument("--spaces", default="darts,nb201")
    parser.add_argument("--methods", default="all", help="comma-separated presets, or all")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, help="timed iterations per configuration")
    parser.add_argument("--warmup", type=int, help="untimed iterations first")
    parser.add_argument("--json", type=Path, help="also write the results here")
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
          f"iterations after {warmup} warm-up); ratio = method / first-order DARTS (fused)")
    print(f"{'space':6s} {'method':16s} {'s/iter':>8s} {'ratio':>6s} {'peak MB':>8s} {'arch steps':>10s}")
    rows = []
    for space in [s.strip() for s in args.spaces.split(",") if s.strip()]:
        shape = base["nb201" if space == "nb201" else "darts"]
        results = {}
        for method in [*methods, REFERENCE]:
            spec = {"space": space, "method": method, "shape": shape, "batch_size": base["batch_size"],
                    "image_size": base["image_size"], "warmup": warmup, "steps": steps,
                    "threads": args.threads, "device": args.device}
            try:
                results[method] = r = run_worker(__file__, spec)
            except RuntimeError as error:
                raise SystemExit(f"worker failed for {space}/{method}: {error}") from None
            ratio = r["seconds"] / results["darts"]["seconds"]
            print(f"{space:6s} {method:16s} {r['seconds']:8.3f} {ratio:6.2f} {r['peak_mb']:8.0f} "
                  f"{r['arch_steps']:>4d}/{r['iterations']:<5d}", flush=True)
            rows.append({"space": space, "method": method, "ratio": ratio, **r})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
