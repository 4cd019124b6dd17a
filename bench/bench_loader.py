"""Streamed loading: images per second with 0, 1, 2 workers against what a training step consumes,
and the peak memory of a pass over an image folder several times larger than the memory allowed.

    python bench/bench_loader.py [--gigabytes 2] [--memory-limit 1G] [--workers 0,1,2] [--batches 12]
                                 [--repeats 2] [--batch-size 64] [--step-batch 16] [--folder DIR] [--keep]

1. An ImageNet-like folder is generated (10 classes, JPEG quality 95, 400-520 x 300-420 pixels,
   about 200 KB each) until it holds ``--gigabytes``; to keep the generation short, 256 distinct
   images are encoded and their bytes written under many names (decoding costs the same).
2. Loader throughput: the ``darts-imagenet`` training stream (Inception crop of the original to
   224 x 224 in the workers, flip and colour jitter on the batch in the main process), images per
   second over ``--batches`` batches after two warm-up batches, for each worker count, interleaved,
   in a fresh process each, ``--repeats`` times (median); also the workers' part alone (decoding and
   crop, no batch augmentation), and the time of the mean/std sample a stream starts with. Files are
   read from the page cache (the folder was just written): this measures decoding, not the disk.
3. The step's consumption: images per second of one SGD step of the preset's network (DARTS_V2,
   14 cells, C=48, ImageNet stem) at ``--step-batch`` on random 224 x 224 images, in a fresh
   process, the median of 3 after one warm-up. The loader keeps up when its rate is above this.
4. Peak memory: one epoch over the whole folder (``data_mode=auto`` with ``DNAS_MEMORY_LIMIT`` =
   ``--memory-limit``, which must choose streaming; 2 workers; Inception crop and flip, the batch
   colour jitter left out to keep the pass short) in a process whose private writable memory is
   capped at ``--memory-limit`` (``RLIMIT_DATA``, inherited by each of its workers; ``RLIMIT_AS``
   would count the address space torch's libraries reserve). The parent samples the proportional
   set size (PSS: shared pages divided among their users) of the process and its workers every
   0.2 s and reports the peak of their sum, with the peak RSS of the main process and of the
   largest worker. ``data_mode=memory`` is tried first and must refuse with its estimate.

The load average (``/proc/loadavg``) is printed before and after: figures taken while other jobs run
are noisy.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SCRIPT = str(Path(__file__).resolve())


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def make_folder(root: Path, gigabytes: float, seed: int = 0) -> tuple[int, int]:
    """An ImageNet-like JPEG folder of about ``gigabytes``; returns (images, bytes)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    encoded = []
    for _ in range(256):
        w, h = int(rng.integers(400, 520)), int(rng.integers(300, 420))
        base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
        pixels = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w] // 2 + rng.integers(0, 80, (h, w, 3),
                                                                                                dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", quality=95)
        encoded.append(out.getvalue())
    total, count = 0, 0
    while total < gigabytes * 2**30:
        folder = root / f"n{count % 10:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        data = encoded[count % len(encoded)]
        (folder / f"img_{count:07d}.JPEG").write_bytes(data)
        total += len(data)
        count += 1
    return count, total


# ------------------------------------------------------------------------------------------ workers


def _augment():
    from dnas.data import Augment

    return Augment.for_images(224, 3, resized_crop=True, color_jitter=0.4, hue=0.2)


def throughput(spec: dict) -> dict:
    """Images per second of two streams: the decoding and Inception crop alone (the workers' part), and the
    whole training stream (plus flip and colour jitter of each batch in the main process)."""
    import dataclasses

    import torch

    from dnas.data import StreamedBatches, load_dataset

    torch.set_num_threads(1)
    data = load_dataset(spec["folder"], mode="stream").resized(224, 0.875)
    start = time.perf_counter()
    data.statistics(spec["workers"])
    out = {"stats_seconds": time.perf_counter() - start}
    crop_only = dataclasses.replace(_augment(), flip=False, color_jitter=0.0, hue=0.0)
    for name, augment in (("decode_per_s", crop_only), ("stream_per_s", _augment())):
        stream = StreamedBatches(data, torch.arange(len(data)), spec["batch_size"], seed=0, augment=augment,
                                 workers=spec["workers"])
        next(stream)
        next(stream)
        start = time.perf_counter()
        for _ in range(spec["batches"]):
            next(stream)
        out[name] = spec["batches"] * spec["batch_size"] / (time.perf_counter() - start)
        stream.close()
    return out


def step(spec: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from dnas.retrain.network import build_eval_network
    from dnas.spaces.published import resolve_genotype

    torch.set_num_threads(spec["threads"])
    net = build_eval_network(resolve_genotype("DARTS_V2").genotype, num_classes=1000, in_channels=3, channels=48,
                             layers=14, auxiliary=True, stem="imagenet")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(spec["batch_size"], 3, 224, 224)
    y = torch.randint(0, 1000, (spec["batch_size"],))
    times = []
    for i in range(4):
        start = time.perf_counter()
        opt.zero_grad()
        logits, aux = net(x)
        (F.cross_entropy(logits, y, label_smoothing=0.1) + 0.4 * F.cross_entropy(aux, y)).backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
    return {"images_per_s": spec["batch_size"] / statistics.median(times)}


def epoch(spec: dict) -> dict:
    import dataclasses

    import torch

    from dnas.data import StreamedBatches, load_dataset
    from dnas.errors import DnasError

    torch.set_num_threads(1)
    try:
        load_dataset(spec["folder"], mode="memory")
        refusal = "(not refused)"
    except DnasError as e:
        refusal = str(e)
    data = load_dataset(spec["folder"], mode="auto")
    loading = dict(data.loading)
    data = data.resized(224, 0.875)
    augment = dataclasses.replace(_augment(), color_jitter=0.0, hue=0.0)
    stream = StreamedBatches(data, torch.arange(len(data)), spec["batch_size"], seed=0, augment=augment,
                             workers=2, drop_last=False)
    start = time.perf_counter()
    for _ in range(stream.batches_per_epoch):
        next(stream)
    seconds = time.perf_counter() - start
    stream.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**10
    return {"refusal": refusal, "loading": loading, "seconds": seconds, "images": len(data),
            "main_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10,
            "largest_worker_peak_rss_mib": children}


WORKERS = {"throughput": throughput, "step": step, "epoch": epoch}


# ------------------------------------------------------------------------------------------ parent


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return out


def run(kind: str, spec: dict, env: dict | None = None, data_limit: int | None = None) -> tuple[dict, float]:
    """Run a worker in a fresh interpreter; returns its JSON and the peak summed PSS (MiB) of its tree."""
    def limit() -> None:
        if data_limit:
            resource.setrlimit(resource.RLIMIT_DATA, (data_limit, data_limit))

    proc = subprocess.Popen([sys.executable, SCRIPT, "--worker", kind, json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, preexec_fn=limit)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], sum(_pss_kib(p) for p in _tree(proc.pid)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), peak[0] / 2**10


def parse_bytes(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--memory-limit", default="1G")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--step-batch", type=int, default=16)
    parser.add_argument("--step-threads", type=int, default=2)
    parser.add_argument("--folder", help="an existing image folder instead of a generated one")
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker[0]](json.loads(args.worker[1]))))
        return

    print(f"load average before: {load()}  ({os.cpu_count()} cores)")
    tmp = Path(tempfile.mkdtemp(prefix="dnas-bench-loader-"))
    try:
        if args.folder:
            folder = Path(args.folder)
            count = sum(1 for _ in folder.rglob("*") if _.is_file())
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        else:
            folder = tmp / "imagenet-like"
            start = time.perf_counter()
            count, size = make_folder(folder, args.gigabytes)
            print(f"generated {count} images, {size / 2**30:.2f} GiB on disk, in {time.perf_counter() - start:.0f} s")

        rates: dict[int, list[dict]] = {}
        for _ in range(args.repeats):
            for w in [int(v) for v in args.workers.split(",")]:
                result, _ = run("throughput", {"folder": str(folder), "workers": w, "batches": args.batches,
                                               "batch_size": args.batch_size})
                rates.setdefault(w, []).append(result)
        step_result, _ = run("step", {"batch_size": args.step_batch, "threads": args.step_threads})
        consumed = step_result["images_per_s"]

        def median(w: int, key: str) -> float:
            return statistics.median(r[key] for r in rates[w])

        first = min(rates)
        print(f"loader: darts-imagenet training stream at 224 px, batch {args.batch_size}, one torch thread per "
              f"process, median of {args.repeats} runs of {args.batches} batches (load now {load()})")
        print("| workers | decode + Inception crop, images/s | vs 0 workers | whole stream (+ flip, colour jitter "
              "on the batch), images/s | vs 0 workers | whole stream vs the step's consumption | mean/std sample "
              "(512 images), s |")
        print("|---|---|---|---|---|---|---|")
        for w in rates:
            decode, whole = median(w, "decode_per_s"), median(w, "stream_per_s")
            print(f"| {w} | {decode:.0f} | {decode / median(first, 'decode_per_s'):.2f}x | {whole:.0f} | "
                  f"{whole / median(first, 'stream_per_s'):.2f}x | {whole / consumed:.0f}x | "
                  f"{median(w, 'stats_seconds'):.1f} |")
        print(f"\nstep: DARTS_V2 darts-imagenet network (14 cells, C=48), batch {args.step_batch}, "
              f"{args.step_threads} threads: {consumed:.2f} images/s\n", flush=True)

        limit = parse_bytes(args.memory_limit)
        epoch_result, peak_pss = run("epoch", {"folder": str(folder), "batch_size": args.batch_size},
                                     env={"DNAS_MEMORY_LIMIT": args.memory_limit}, data_limit=limit)
        print(f"epoch over the folder ({count} images, {size / 2**30:.2f} GiB on disk) under "
              f"DNAS_MEMORY_LIMIT={args.memory_limit} and RLIMIT_DATA={args.memory_limit} per process:")
        print(f"  data_mode=memory: {epoch_result['refusal']}")
        print(f"  data_mode=auto chose {epoch_result['loading']['mode']}: {epoch_result['loading'].get('reason')}")
        print(f"  one epoch in {epoch_result['seconds']:.0f} s ({epoch_result['images'] / epoch_result['seconds']:.0f}"
              f" images/s, 2 workers); peak PSS of the process and its workers {peak_pss:.0f} MiB; peak RSS of the "
              f"main process {epoch_result['main_peak_rss_mib']:.0f} MiB, of the largest worker "
              f"{epoch_result['largest_worker_peak_rss_mib']:.0f} MiB")
        print(f"load average after: {load()}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
