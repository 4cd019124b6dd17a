"""Execution options for the first-order DARTS path: do autocast or ``torch.compile`` win?

Issue 8 asks to measure ``channels_last``, autocast and ``torch.compile`` on the first-order path
and keep only what wins. This times one supernet forward + backward (the body of a first-order
weight or architecture step) on the fused supernet at batch 64, 32x32 inputs, in four variants,
each in a fresh subprocess so that peak memory is its own:

* ``eager``: what dnas does (float32; channels-last only inside the depthwise/grouped convs);
* ``channels_last``: the whole network and its input in ``torch.channels_last``;
* ``autocast``: ``torch.autocast(device, dtype=bfloat16)`` around the forward pass (float16 on CUDA);
* ``compile``: ``torch.compile(net)`` (the default inductor backend; the compile time of the first
  calls is excluded and printed separately).

    python bench/bench_options.py --spaces nb201,darts --steps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import roofline
from _common import peak_memory_mb, run_worker, time_calls

SHAPES = {"darts": (16, 8), "nb201": (16, 5)}
VARIANTS = ("eager", "channels_last", "autocast", "compile")


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from torch import nn

    from dnas.components.activations import Softmax
    from dnas.flops import count_work
    from dnas.spaces import get_space
    from dnas.supernet import build_supernet

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    space = get_space(spec["space"])
    channels, layers = SHAPES[spec["space"]]
    net = build_supernet(space, num_classes=10, in_channels=3, channels=channels, layers=layers).to(device)
    activation = Softmax()
    g = torch.Generator().manual_seed(0)
    alphas = {t: activation.init_alpha(s, g).to(device).requires_grad_(True) for t, s in space.alpha_shapes().items()}
    x = torch.randn(spec["batch"], 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (spec["batch"],), generator=g).to(device)
    variant = spec["variant"]
    model = net
    if variant == "channels_last":
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if variant == "compile":
        model = torch.compile(net)

    def step() -> float:
        net.zero_grad(set_to_none=True)
        activated = {t: activation(a, t) for t, a in alphas.items()}
        cell_weights = net.per_cell(activated)
        if variant == "autocast":
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
    with count_work(net) as work:  # the FLOPs of the step do not depend on the variant: counted in eager mode
        nn.functional.cross_entropy(net(x, net.per_cell({t: activation(a, t) for t, a in alphas.items()})),
                                    y).backward()
    return {"seconds": statistics.median(times), "first_call": first, "peak_mb": peak, "loss": first_loss,
            "flops": work.flops, "flops_by_key": [[*key, flops] for key, flops in work.flops_by_key.items()]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", default="nb201,darts")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    print(f"# supernet forward+backward, batch {args.batch}, 32x32x3, {args.threads} thread(s), {args.device}, "
          f"median of {args.steps} after {args.warmup} warm-up; ratio = variant / eager; GFLOP counted (dnas.flops), "
          "%conv = achieved rate over the roofline's conv ceiling")
    print(f"# before: {roofline.load_average()}")
    ceilings = roofline.measure(16, 32, args.batch, args.threads)  # both spaces: C=16 at 32x32
    print(roofline.format_table(ceilings))
    print(f"{'space':6s} {'variant':14s} {'s/step':>8s} {'ratio':>6s} {'peak MB':>8s} {'first call s':>12s} "
          f"{'loss':>8s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'%conv':>6s}")
    for space in args.spaces.split(","):
        base = None
        for variant in args.variants.split(","):
            spec = {"space": space, "variant": variant, "batch": args.batch, "steps": args.steps,
                    "warmup": args.warmup, "threads": args.threads, "device": args.device}
            try:
                r = run_worker(__file__, spec)
            except RuntimeError as error:
                print(f"{space:6s} {variant:14s} failed: {error}", flush=True)
                continue
            base = base or r["seconds"]
            percent = roofline.percent_of_ceilings(r["flops_by_key"], r["seconds"], ceilings)["conv"]
            print(f"{space:6s} {variant:14s} {r['seconds']:8.3f} {r['seconds'] / base:6.2f} {r['peak_mb']:8.0f} "
                  f"{r['first_call']:12.1f} {r['loss']:8.4f} {r['flops'] / 1e9:7.2f} "
                  f"{r['flops'] / r['seconds'] / 1e9:8.1f} {percent:6.1f}", flush=True)
    print(f"# after: {roofline.load_average()}")


if __name__ == "__main__":
    main()
