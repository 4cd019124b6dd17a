"""Data-parallel scaling: search steps per second with 1 and N processes (torchrun, gloo on CPU).

    python bench/bench_ddp.py [--ranks 1,2] [--space nb201] [--batch-size 64] [--steps 12] [--warmup 3]
                              [--repeats 3] [--channels 16] [--layers 5] [--image-size 32]

Every configuration runs as its own ``torchrun --nproc_per_node N`` job, one torch thread per rank,
on random images; the configurations are interleaved and repeated (``--repeats``), and the table
gives the median time per step with its spread (min-max), steps per second, the speed-up over one
process and the scaling efficiency ``speed-up / N`` (the global batch is the same for every N, so
each rank computes 1/N of it), plus the peak RSS of rank 0. The load average is printed before and
after: figures taken while other jobs run are not comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import maxrss_mb  # noqa: E402


def worker(spec: dict) -> None:
    """One rank (under torchrun): a search on random images; rank 0 writes the step times as JSON."""
    import torch

    from dnas.bilevel.run import Search
    from dnas.config.resolve import resolve_config
    from dnas.data import ImageDataset

    torch.set_num_threads(1)
    size, n = spec["image_size"], 2 * spec["batch_size"] * (spec["warmup"] + spec["steps"] + 1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8)
    synthetic = ImageDataset.from_tensors(images, torch.arange(n) % 10, [str(i) for i in range(10)], "random")
    cfg = resolve_config({"space": spec["space"], "method": spec["method"], "epochs": 1,
                          "batch_size": spec["batch_size"]},
                         [f"channels={spec['channels']}", f"layers={spec['layers']}", "log_every=1000000",
                          "checkpoint_every=0", "alignment_every=0"])
    with tempfile.TemporaryDirectory() as tmp:
        search = Search(cfg, Path(tmp) / "run", progress=False, data=synthetic).open()
        times = []
        for i in range(spec["warmup"] + spec["steps"]):
            start = time.perf_counter()
            search.step()
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - start)
        search.close()
    if search.group.main:
        Path(spec["result"]).write_text(json.dumps({"times": times, "peak_mb": maxrss_mb()}))


def measure(ranks: int, spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                   "--master_port", str(29400 + os.getpid() % 500), __file__, "--worker",
                   json.dumps({**spec, "result": str(result)})]
        proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "torchrun failed")
        return json.loads(result.read_text())


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--space", default="nb201")
    parser.add_argument("--method", default="darts")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    spec = {"space": args.space, "method": args.method, "batch_size": args.batch_size, "channels": args.channels,
            "layers": args.layers, "image_size": args.image_size, "steps": args.steps, "warmup": args.warmup}
    counts = [int(r) for r in args.ranks.split(",")]
    print(f"load average before: {load()}; {json.dumps(spec)}")
    runs: dict[int, list[dict]] = {n: [] for n in counts}
    for _ in range(args.repeats):  # interleaved: 1, 2, 1, 2, ...
        for n in counts:
            runs[n].append(measure(n, spec))
    base = None
    print("| processes | s/step (median, min-max) | steps/s | speed-up | efficiency | peak RSS rank 0 |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        times = [t for r in runs[n] for t in r["times"]]
        median = statistics.median(times)
        base = base or median * counts[0]
        speedup = base / median
        print(f"| {n} | {median:.3f} ({min(times):.3f}-{max(times):.3f}) | {1 / median:.2f} | {speedup:.2f}x | "
              f"{speedup / n:.0%} | {max(r['peak_mb'] for r in runs[n]):.0f} MB |")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
