"""Execution options for the first-order DARTS path: do autocast or ``torch.compile`` win?

It measures ``channels_last``, autocast and ``torch.compile`` on the first-order path, so that
only what wins is kept. This times one supernet forward + backward (the body of a first-order
weight or architecture step) on the fused supernet at batch 64 in five variants, each in a fresh
subprocess so that peak memory is its own, the variants interleaved and repeated:

* ``eager``: what dnas does (float32; on CPU every activation channels-last, the parameters as built);
* ``channels_last``: also the parameters in ``torch.channels_last``;
* ``autocast``: ``torch.autocast(device, dtype=bfloat16)`` around the forward pass (float16 on CUDA);
* ``autocast_cl``: both: bf16 autocast with the network and its input in channels-last (oneDNN's bf16
  convolutions, AMX on CPUs that have it, want channels-last);
* ``compile``: ``torch.compile(net)`` (the default inductor backend; the compile time of the first
  calls is excluded and printed separately).

    python bench/bench_options.py --spaces nb201,darts --steps 3 --repeats 3
    python bench/bench_options.py --spaces nb201-tiny --threads 1 --variants eager,compile

``--spaces``: ``nb201`` (C=16, 5 cells per stage, 32x32), ``darts`` (8 cells, C=16, 32x32) or
``nb201-tiny`` (C=8, one cell per stage, 16x16: the CPU protocols' proxy, where dispatch overhead
dominates) or ``darts-tiny`` (5 cells, C=8, 16x16: the collapse protocol's DARTS-space shape).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import roofline
from _common import peak_memory_mb, run_worker, time_calls

# name -> (space, C, cells (NB201: per stage), image side): the papers' search networks and the CPU protocols' proxy
SHAPES = {"darts": ("darts", 16, 8, 32), "nb201": ("nb201", 16, 5, 32), "nb201-tiny": ("nb201", 8, 1, 16),
          "darts-tiny": ("darts", 8, 5, 16)}
VARIANTS = ("eager", "channels_last", "autocast", "autocast_cl", "compile")


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from torch import nn

    from dnas.components.activations import Softmax
    from dnas.diagnostics.flops import count_work
    from dnas.runtime.allocator import retain_freed_memory
    from dnas.spaces import get_space
    from dnas.supernet import build_supernet

    retain_freed_memory()  # as dnas searches do
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    space_name, channels, layers, size = SHAPES[spec["space"]]
    space = get_space(space_name)
    net = build_supernet(space, num_classes=10, in_channels=3, channels=channels, layers=layers).to(device)
    activation = Softmax()
    g = torch.Generator().manual_seed(0)
    alphas = {t: activation.init_alpha(s, g).to(device).requires_grad_(True) for t, s in space.alpha_shapes().items()}
    x = torch.randn(spec["batch"], 3, size, size, generator=g).to(device)
    y = torch.randint(0, 10, (spec["batch"],), generator=g).to(device)
    variant = spec["variant"]
    model = net
    if variant in ("channels_last", "autocast_cl"):
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if variant == "compile":
        model = torch.compile(net)

    def step() -> float:
        net.zero_grad(set_to_none=True)
        activated = {t: activation(a, t) for t, a in alphas.items()}
        cell_weights = net.per_cell(activated)
        if variant.startswith("autocast"):
            dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
            with torch.autocast(device.type, dtype=dtype):
                logits = model(x, cell_weights)
        else:
            logits = model(x, cell_weights)
        loss = nn.functional.cross_entropy(logits.float(), y)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return loss.item()

    start = time.perf_counter()
    first_loss = step()
    first = time.perf_counter() - start
    times = time_calls(step, spec["warmup"], spec["steps"])
    peak = peak_memory_mb(spec["device"])
    profile = []
    if spec.get("profile"):  # where one step's time goes: the ops with the most self time
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        profile = [[e.key, e.self_cpu_time_total / 1e3, e.count] for e in events[: spec["profile"]]]
    with count_work(net) as work:  # the FLOPs of the step do not depend on the variant: counted in eager mode
        nn.functional.cross_entropy(net(x, net.per_cell({t: activation(a, t) for t, a in alphas.items()})),
                                    y).backward()
    return {"seconds": statistics.median(times), "first_call": first, "peak_mb": peak, "loss": first_loss,
            "flops": work.flops, "flops_by_key": [[*key, flops] for key, flops in work.flops_by_key.items()],
            "bytes_by_size": [[size, n] for size, n in work.bytes_by_size.items()], "profile": profile}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", default="nb201,darts")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="processes per variant, interleaved")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print the N ops with the most self time in one step of each variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    print(f"# supernet forward+backward, batch {args.batch}, {args.threads} thread(s), {args.device}; each "
          f"(variant, process) the median of {args.steps} after {args.warmup} warm-up, {args.repeats} processes per "
          "variant interleaved; s/step = median of the process medians (range); ratio = variant / eager; GFLOP "
          "counted (dnas.diagnostics.flops), %conv = achieved rate over the roofline's fp32 conv ceiling, "
          "%roof = over the roof "
          "with the float32 memory-bound ops' bytes at the stream bandwidth")
    print(f"# before: {roofline.load_average()}")
    variants = args.variants.split(",")
    for space in args.spaces.split(","):
        _, channels, _, size = SHAPES[space]
        ceilings = roofline.measure(channels, size, args.batch, args.threads)
        print(f"# {space}: C={channels}, {size}x{size}")
        print(roofline.format_table(ceilings))
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for variant in variants:
                spec = {"space": space, "variant": variant, "batch": args.batch, "steps": args.steps,
                        "warmup": args.warmup, "threads": args.threads, "device": args.device,
                        "profile": args.profile if not runs[variant] else 0}
                try:
                    runs[variant].append(run_worker(__file__, spec))
                except RuntimeError as error:
                    print(f"{space:10s} {variant:14s} failed: {error}", flush=True)
        print(f"{'space':10s} {'variant':14s} {'s/step':>8s} {'(range)':>15s} {'ratio':>6s} {'peak MB':>8s} "
              f"{'first call s':>12s} {'loss':>8s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'%conv':>6s} {'%roof':>6s}")
        base = statistics.median(r["seconds"] for r in runs["eager"]) if runs.get("eager") else None
        for variant, results in runs.items():
            if not results:
                continue
            seconds = statistics.median(r["seconds"] for r in results)
            r = results[0]
            percent = roofline.percent_of_ceilings(r["flops_by_key"], seconds, ceilings, r["bytes_by_size"])
            spread = f"({min(x['seconds'] for x in results):.3f}-{max(x['seconds'] for x in results):.3f})"
            ratio = f"{seconds / base:6.2f}" if base else "     -"
            print(f"{space:10s} {variant:14s} {seconds:8.3f} {spread:>15s} {ratio} "
                  f"{statistics.median(x['peak_mb'] for x in results):8.0f} "
                  f"{statistics.median(x['first_call'] for x in results):12.1f} {r['loss']:8.4f} "
                  f"{r['flops'] / 1e9:7.2f} {r['flops'] / seconds / 1e9:8.1f} {percent['conv']:6.1f} "
                  f"{percent['roof']:6.1f}", flush=True)
        for variant, results in runs.items():
            if results and results[0]["profile"]:
                total = sum(ms for _, ms, _ in results[0]["profile"])
                print(f"# {space} {variant}: self time of the top {len(results[0]['profile'])} ops in one profiled "
                      f"step ({total:.0f} ms)")
                for name, ms, count in results[0]["profile"]:
                    print(f"#   {name:45s} {ms:9.1f} ms {count:6d} calls")
    print(f"# after: {roofline.load_average()}")


if __name__ == "__main__":
    main()
