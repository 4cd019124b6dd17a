"""Streamed data: image folders, zips and tar shards decoded in DataLoader workers.

What a user of a streamed run relies on: the batches are the in-memory ones (same images, same
order), they do not depend on the number of workers, a killed or interrupted run resumes to the
same result (search and training), the ImageNet training command and the PC-DARTS subset search
work on an ImageFolder, the choice of mode is recorded, and no worker outlives its run.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dnas.bilevel.run import Search
from dnas.cli import main
from dnas.config.train import resolve_train_config
from dnas.data import (
    Augment,
    BatchStream,
    LazyImageDataset,
    StreamedBatches,
    batch_stream,
    load_dataset,
    load_search_data,
)
from dnas.errors import DnasError
from dnas.retrain.run import Trainer
from dnas.retrain.step import training_data


def _write_folder(root: Path, classes: int, per_class: int, size=(8, 8), seed: int = 0) -> Path:
    """``classes`` x ``per_class`` random RGB PNGs; ``size`` a (width, height) or a callable of the index."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = size(i) if callable(size) else size
            pixels = (rng.random((h, w, 3)) * 120 + 30 * c).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """4 classes x 40 random 8x8 images."""
    return _write_folder(tmp_path_factory.mktemp("streamed") / "folder", 4, 40)


def _as_zip(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, f"top/{p.relative_to(folder).as_posix()}")
    return path


def _as_shards(folder: Path, out: Path, per_shard: int = 50) -> Path:
    """The folder's images in listing order as WebDataset shards of ``per_shard`` samples."""
    out.mkdir()
    files = sorted(folder.rglob("*.png"))
    classes = sorted({p.parent.name for p in files})
    for start in range(0, len(files), per_shard):
        with tarfile.open(out / f"part-{start // per_shard:03d}.tar", "w") as tar:
            for i, p in enumerate(files[start:start + per_shard], start):
                for name, data in ((f"sample{i:05d}.png", p.read_bytes()),
                                   (f"sample{i:05d}.cls", str(classes.index(p.parent.name)).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return out


def test_streamed_batches_are_the_in_memory_ones_for_folders_zips_and_shards(folder, tmp_path):
    memory = load_dataset(str(folder), root=str(tmp_path))
    shards = _as_shards(folder, tmp_path / "shards")
    specs = [str(folder), str(_as_zip(folder, tmp_path / "f.zip")), str(shards), str(shards / "part-{000..003}.tar")]
    indices = torch.arange(20, 150)
    for spec in specs:
        lazy = load_dataset(spec, mode="stream")
        assert isinstance(lazy, LazyImageDataset) and len(lazy) == 160 and lazy.loading["mode"] == "stream"
        assert torch.equal(lazy.labels, memory.labels) and lazy.num_classes == 4
        assert (lazy.channels, lazy.image_size) == (3, 8) and lazy.mean == memory.mean and lazy.std == memory.std
        reference = BatchStream(memory, indices, 16, seed=3, augment=None)
        streamed = batch_stream(lazy, indices, 16, seed=3, augment=None, workers=0)
        assert isinstance(streamed, StreamedBatches) and streamed.batches_per_epoch == 8
        for _ in range(11):  # across an epoch boundary
            (x, y), (x2, y2) = next(reference), next(streamed)
            assert torch.equal(x, x2) and torch.equal(y, y2)


def test_augmented_batches_do_not_depend_on_workers_and_resume_mid_epoch(tmp_path):
    sizes = lambda i: (10 + i % 7, 9 + i % 5)  # noqa: E731 - images of many sizes, cropped on the originals
    lazy = load_dataset(str(_write_folder(tmp_path / "mixed", 3, 20, size=sizes)), mode="stream").resized(8)
    augment = Augment.for_images(8, 3, cutout=3, resized_crop=True, color_jitter=0.4, hue=0.1)
    indices = torch.arange(len(lazy))
    alone = StreamedBatches(lazy, indices, 8, seed=5, augment=augment, workers=0)
    helped = StreamedBatches(lazy, indices, 8, seed=5, augment=augment, workers=2)
    for _ in range(9):  # 7 per epoch
        (x, y), (x2, y2) = next(alone), next(helped)
        assert torch.equal(x, x2) and torch.equal(y, y2) and x.shape == (8, 3, 8, 8)
    state = helped.state_dict()
    assert state == {"streamed": True, "epoch": 1, "position": 2, "seed": 5, "num_indices": 60, "batch_size": 8}
    resumed = StreamedBatches(lazy, indices, 8, seed=5, augment=augment, workers=1)
    resumed.load_state_dict(state)
    for _ in range(6):
        assert torch.equal(next(helped)[0], next(resumed)[0])
    helped.close()
    resumed.close()
    memory = BatchStream(load_dataset("digits"), torch.arange(64), 8, seed=5, augment=None)
    with pytest.raises(DnasError, match="held its images in memory"):
        resumed.load_state_dict(memory.state_dict())
    with pytest.raises(DnasError, match="read its images lazily"):
        memory.load_state_dict(state)


def _final(search: Search) -> tuple[dict, list[torch.Tensor]]:
    return dict(search.problem.alphas.items()), [p.detach().clone() for p in search.problem.weights]


def _metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_streamed_search_does_not_depend_on_workers_and_resumes_exactly(folder, tiny_search, tmp_path,
                                                                          interrupt_at):
    common = dict(epochs=2, dataset=str(folder), overrides=("data_mode=stream", "image_size=8", "checkpoint_every=3"))
    reference = tiny_search(workers=0, name="ref", **common)
    g_ref = reference.run()
    interrupt_at(Search, 7)
    with pytest.raises(DnasError, match="interrupted; the search is saved"):
        tiny_search(workers=2, name="resumed", **common).run()
    interrupt_at(Search, None)
    resumed = tiny_search(workers=1, name="resumed", **common)  # another worker count on resume
    assert resumed.run() == g_ref
    (alphas, weights), (alphas_ref, weights_ref) = _final(resumed), _final(reference)
    assert all(torch.equal(alphas[k], alphas_ref[k]) for k in alphas_ref)
    assert all(torch.equal(p, q) for p, q in zip(weights, weights_ref, strict=True))
    assert _metrics(tmp_path / "resumed") == _metrics(tmp_path / "ref")
    env = json.loads((tmp_path / "ref" / "env.json").read_text())
    assert env["data"] == {"dataset": "folder", "mode": "stream", "reason": "data_mode=stream", "images": 160,
                           "memory_budget_bytes": env["data"]["memory_budget_bytes"], "workers": 0}


def test_a_run_resumed_under_the_other_mode_says_so(folder, tiny_search, interrupt_at):
    interrupt_at(Search, 2)
    with pytest.raises(DnasError, match="interrupted"):
        tiny_search(dataset=str(folder), overrides=("data_mode=memory", "checkpoint_every=1")).run()
    interrupt_at(Search, None)
    with pytest.raises(DnasError, match="held its images in memory but this run streams them: resume with "
                                        "data_mode=memory"):
        tiny_search(dataset=str(folder), overrides=("data_mode=stream", "checkpoint_every=1")).run()


def test_a_pc_darts_subset_of_an_image_folder_streams(folder, tiny_search, tmp_path, monkeypatch):
    subset = load_search_data(str(folder), mode="stream", train_fraction=0.1, val_fraction=0.025, seed=1)
    assert isinstance(subset, LazyImageDataset) and len(subset) == 4 * (4 + 1)
    train, val = subset.split
    assert subset.labels[train].bincount().tolist() == [4] * 4 and subset.labels[val].bincount().tolist() == [1] * 4
    entries = subset.entries.tolist()
    assert len(set(entries)) == len(entries)  # disjoint halves of the folder
    monkeypatch.setenv("DNAS_MEMORY_LIMIT", "50K")  # 160 x 3 x 8 x 8 = 30 KiB decoded: more than half of 50 KiB
    search = tiny_search(dataset=str(folder), overrides=("train_fraction=0.5", "val_fraction=0.25", "workers=1"))
    search.run()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 80 // 16
    env = json.loads((tmp_path / "run" / "env.json").read_text())["data"]
    assert env["mode"] == "stream" and "decoded, more than the 25.0 KiB a dataset may take" in env["reason"]


def _imagenet_folder(root: Path) -> Path:
    """An ImageNet-like folder: train/ and val/, 3 classes, images of many sizes and aspect ratios."""
    sizes = lambda i: (36 + 5 * (i % 4), 30 + 7 * (i % 3))  # noqa: E731
    _write_folder(root / "train", 3, 16, size=sizes, seed=1)
    _write_folder(root / "val", 3, 4, size=sizes, seed=2)
    return root


def test_imagenet_training_streams_a_folder_and_resumes_exactly(tmp_path, interrupt_at, capsys):
    data = _imagenet_folder(tmp_path / "imagenet")
    options = ["epochs=2", "batch_size=8", "channels=4", "layers=3", "image_size=32", "auxiliary=false",
               "eval_batch_size=5", "checkpoint_every=4", "log_every=2"]
    out = tmp_path / "cli"
    assert main(["train", "DARTS_V2", "--dataset", str(data), "--workers", "2", "--quiet", "--out", str(out),
                 "preset=darts-imagenet", *options]) == 0
    assert "test accuracy" in capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert (result["train_images"], result["test_images"], result["image_size"]) == (48, 12, 32)
    env = json.loads((out / "env.json").read_text())
    assert env["data"]["mode"] == env["test_data"]["mode"] == "stream"
    assert env["data"]["reason"] == "the images differ in size" and env["data"]["workers"] == 2
    cfg, resolved = resolve_train_config("DARTS_V2", {"dataset": str(data), "workers": 0},
                                         ["preset=darts-imagenet", *options])
    assert (cfg.resized_crop, cfg.test_crop, cfg.color_jitter) == (True, 0.875, 0.4)
    interrupt_at(Trainer, 5)
    with pytest.raises(DnasError, match="interrupted"):
        Trainer(cfg, resolved.genotype, tmp_path / "api", progress=False).run()
    interrupt_at(Trainer, None)
    again = Trainer(cfg, resolved.genotype, tmp_path / "api", progress=False).run()
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in result.items() if k != "seconds"}
    assert _metrics(tmp_path / "api") == _metrics(out)


def test_folders_without_a_test_split_and_images_of_many_sizes_say_what_to_do(folder, tmp_path):
    cfg, _ = resolve_train_config("DARTS_V2", {"dataset": str(folder)}, ["data_mode=stream"])
    with pytest.raises(DnasError, match="has no separate test split"):
        training_data(cfg)
    mixed = load_dataset(str(_write_folder(tmp_path / "mixed", 2, 3, size=lambda i: (8 + i, 8))), mode="stream")
    with pytest.raises(DnasError, match=r"differ in size \(e.g. 8x8 and 9x8\): set image_size"):
        _ = mixed.image_size
    assert mixed.resized(6).load(1).shape == (3, 6, 6)
    train_only = tmp_path / "split"
    _write_folder(train_only / "train", 2, 3)
    with pytest.raises(DnasError, match="has a train/ folder but no val/ or test/ folder"):
        load_dataset(str(train_only), split="test", mode="stream")
    assert load_dataset(str(train_only), mode="stream").name == "train"


# ------------------------------------------------------------------------------------------- processes


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except OSError:
        return False


def _start(folder: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dnas", "search", "--quiet", "--dataset", str(folder), "--epochs",
                             "200", "--batch-size", "16", "--workers", "2", "--out", str(out), "channels=4", "layers=1",
                             "data_mode=stream", "checkpoint_every=2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _workers_of(proc: subprocess.Popen, out: Path) -> list[int]:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "checkpoint.pt").exists() and len(_children(proc.pid)) >= 2:
            return _children(proc.pid)
        time.sleep(0.2)
    error = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
    raise AssertionError(f"the search did not start its workers (exit status {proc.poll()}): {error}")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_no_worker_outlives_a_killed_or_interrupted_streamed_search(folder, tmp_path):
    proc = _start(folder, tmp_path / "killed")
    workers = _workers_of(proc, tmp_path / "killed")
    proc.kill()
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "a DataLoader worker outlived its killed search"

    proc = _start(folder, tmp_path / "interrupted")
    workers = _workers_of(proc, tmp_path / "interrupted")
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group, workers included
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "interrupted; the search is saved" in err and "Traceback" not in err, err
    assert not any(_alive(w) for w in workers)
