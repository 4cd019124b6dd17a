"""The machine's attainable arithmetic rate at the supernet's shapes, measured in the same run.

The search networks of both spaces work at three feature-map sizes: C channels at S x S, 2C at
S/2, 4C at S/4 (NAS-Bench-201: C=16, S=32; DARTS: the cells' C=16, 32, 64 likewise). At each
stage, with the search batch B, this times

* ``conv``: one 3x3 convolution C -> C, forward + backward (input and weight gradients), in fp32
  contiguous (``fp32``), fp32 channels-last (``fp32-cl``) and bfloat16 channels-last (``bf16-cl``);
* ``gemm``: the same arithmetic as one matrix product, ``(C x 9C) @ (9C x B*H*W)`` (the
  convolution's im2col product without the im2col), in fp32 and bf16.

* ``stream``: memory bandwidth by tensor size (float32 tensors of 2^14 to 2^24 elements, 64 KB to
  64 MB: from what the caches hold to what only memory does), the best of a copy (``y.copy_(x)``:
  reads and writes one tensor) and an addition (``z = x + y``: reads two, writes one), in bytes
  per second as :mod:`dnas.diagnostics.flops` counts them.

Each rate is the best of ``--repeats`` timed calls (load only ever slows a call down, and a ceiling
is what the machine can reach). FLOPs of every microbenchmark are counted by :mod:`dnas.diagnostics.flops`,
like those of the search. Two
fp32 ceilings per stage: ``conv``, the best fp32 convolution rate (contiguous or channels-last: the
kernels a supernet can call), and ``gemm``, the fp32 matrix-product rate (the arithmetic itself).
An iteration's attainable rate under a ceiling is its FLOPs over the time they would take if every
counted FLOP ran at that ceiling of its stage (the stage whose ``B*H*W`` output positions are
nearest to the op's; matrix products, i.e. the mixing and the classifier, at the best rate of all
stages):

    attainable = sum_k F_k / sum_k (F_k / R_stage(k)),      % of attainable = achieved / attainable

The gap is everything that is not dense arithmetic at the best kernel's speed: BatchNorm,
elementwise ops, concatenation, layout copies, depthwise and grouped kernels, memory traffic,
Python overhead.

A third figure, ``roof``, charges the memory-bound ops too: the counted FLOPs at the conv ceiling
plus the bytes the other ops touch (:mod:`dnas.diagnostics.flops`, ``bytes_by_size``) at the stream bandwidth
measured on tensors nearest in size to the op's largest,

    attainable_roof = sum_k F_k / R_stage(k) + sum_j bytes_j / BW(size_j),

so ``% of roof`` is what is left after arithmetic and the unavoidable traffic (each op reading its
inputs and writing its outputs once): kernel inefficiency, extra passes over memory, overhead.

    python bench/roofline.py                                   # C=16, 32x32, batch 64, 2 threads
    python bench/roofline.py --channels 8 --image-size 16 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable
from typing import Any

from _common import run_worker, time_calls

VARIANTS = ("conv fp32", "conv fp32-cl", "conv bf16-cl", "gemm fp32", "gemm bf16")
CEILINGS = {"conv": ("conv fp32", "conv fp32-cl"), "gemm": ("gemm fp32",)}
STREAM_SIZES = range(14, 25, 2)  # log2 of the tensor sizes (elements) of the bandwidth measurements


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, for the record next to every timing."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def stages(channels: int, image_size: int) -> list[tuple[int, int]]:
    """(channels, side) of the three stages of the search networks."""
    return [(channels * 2**i, max(1, image_size // 2**i)) for i in range(3)]


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from dnas.diagnostics.flops import count_work

    torch.set_num_threads(spec["threads"])
    g = torch.Generator().manual_seed(0)
    rows = []
    for channels, side in stages(spec["channels"], spec["image_size"]):
        b = spec["batch"]
        rates = {}
        for variant in VARIANTS:
            op, precision = variant.split()
            dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
            layout = torch.channels_last if precision.endswith("-cl") else torch.contiguous_format
            if op == "conv":
                x = torch.randn(b, channels, side, side, generator=g).to(dtype, memory_format=layout)
                w = torch.randn(channels, channels, 3, 3, generator=g).to(dtype, memory_format=layout)
                grad = torch.randn(b, channels, side, side, generator=g).to(dtype, memory_format=layout)
                x.requires_grad_(True)
                w.requires_grad_(True)

                def run(x=x, w=w, grad=grad):
                    torch.autograd.grad(F.conv2d(x, w, padding=1), [x, w], grad)
            else:
                a = torch.randn(channels, 9 * channels, generator=g).to(dtype)
                m = torch.randn(9 * channels, b * side * side, generator=g).to(dtype)

                def run(a=a, m=m):
                    torch.mm(a, m)
            with count_work() as work:
                run()
            seconds = min(time_calls(run, spec["warmup"], spec["repeats"]))  # a ceiling: the best of the repeats
            rates[variant] = work.flops / seconds
        rows.append({"channels": channels, "side": side, "positions": b * side * side, "rates": rates,
                     "ceilings": {name: max(rates[v] for v in members) for name, members in CEILINGS.items()}})
    stream = [{"elements": 2**k, "bandwidth": _stream_bandwidth(2**k, spec, g)} for k in STREAM_SIZES]
    return {"threads": spec["threads"], "batch": spec["batch"], "stages": rows, "stream": stream,
            "torch": torch.__version__, "bf16_supported": _cpu_has_bf16()}


def _stream_bandwidth(elements: int, spec: dict[str, Any], g: Any) -> float:
    """Best bytes/s of a copy and an addition of float32 tensors of ``elements`` elements."""
    import torch

    from dnas.diagnostics.flops import count_work

    x, y, z = (torch.randn(elements, generator=g) for _ in range(3))
    best = 0.0
    for run in (lambda: z.copy_(x), lambda: torch.add(x, y, out=z)):
        with count_work() as work:
            run()
        best = max(best, work.bytes / min(time_calls(run, spec["warmup"], spec["repeats"])))
    return best


def _cpu_has_bf16() -> bool | None:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX; Linux only, else None)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return None
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def measure(channels: int, image_size: int, batch: int, threads: int, *, warmup: int = 2,
            repeats: int = 5) -> dict[str, Any]:
    """Run the microbenchmarks in a fresh process (the caller's thread count and memory untouched)."""
    return run_worker(__file__, {"channels": channels, "image_size": image_size, "batch": batch,
                                 "threads": threads, "warmup": warmup, "repeats": repeats})


def attainable_seconds(flops_by_key: Iterable[tuple[str, str, int, int]], roofline: dict[str, Any],
                       ceiling: str) -> float:
    """Seconds the counted FLOPs ``(kind, phase, positions, flops)`` take at the ``ceiling`` rates."""
    rows = roofline["stages"]
    best = max(r["ceilings"][ceiling] for r in rows)
    total = 0.0
    for kind, _phase, positions, flops in flops_by_key:
        if kind == "matmul" or positions <= 0:
            rate = best
        else:
            rate = min(rows, key=lambda r: abs(math.log(positions / r["positions"])))["ceilings"][ceiling]
        total += flops / rate
    return total


def memory_seconds(bytes_by_size: Iterable[tuple[int, int]], roofline: dict[str, Any]) -> float:
    """Seconds the counted bytes ``(largest tensor's elements, bytes)`` take at the stream bandwidth
    measured on the tensor size nearest to each op's."""
    rows = roofline["stream"]
    return sum(nbytes / min(rows, key=lambda r: abs(math.log(max(size, 1) / r["elements"])))["bandwidth"]
               for size, nbytes in bytes_by_size)


def percent_of_ceilings(flops_by_key: list[tuple[str, str, int, int]], seconds: float, roofline: dict[str, Any],
                        bytes_by_size: list[tuple[int, int]] | None = None) -> dict[str, float]:
    """Achieved rate as a percentage of each ceiling's attainable rate, and with the bytes of the
    memory-bound ops of the iteration, the percentage of the ``roof`` (see the module docstring)."""
    percent = {name: 100 * attainable_seconds(flops_by_key, roofline, name) / seconds for name in CEILINGS}
    if bytes_by_size is not None:
        roof = attainable_seconds(flops_by_key, roofline, "conv") + memory_seconds(bytes_by_size, roofline)
        percent["roof"] = 100 * roof / seconds
    return percent


def format_table(roofline: dict[str, Any]) -> str:
    """The microbenchmark rates in GFLOP/s, one line per stage."""
    bf16 = {True: "has bf16 instructions", False: "no bf16 instructions", None: "bf16 support unknown"}
    lines = [f"# roofline: GFLOP/s of dense arithmetic at the supernet's shapes (batch {roofline['batch']}, "
             f"{roofline['threads']} thread(s), torch {roofline['torch']}, CPU {bf16[roofline['bf16_supported']]}); "
             "conv = 3x3 forward + input and weight gradients, gemm = its im2col product; cl = channels-last",
             f"{'stage':>12s} " + " ".join(f"{v:>13s}" for v in VARIANTS)]
    for r in roofline["stages"]:
        stage = f"C={r['channels']} {r['side']}x{r['side']}"
        lines.append(f"{stage:>12s} " + " ".join(f"{r['rates'][v] / 1e9:13.1f}" for v in VARIANTS))
    lines.append("# stream GB/s (best of a copy and an addition) by float32 tensor size: " + ", ".join(
        f"{r['elements'] * 4 / 2**20:g} MB {r['bandwidth'] / 1e9:.1f}" for r in roofline["stream"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    print(f"# before: {load_average()}")
    print(format_table(measure(args.channels, args.image_size, args.batch, args.threads, repeats=args.repeats)))
    print(f"# after: {load_average()}")


if __name__ == "__main__":
    main()
