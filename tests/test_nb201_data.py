"""NAS-Bench-201's datasets and splits: ImageNet16-120 in its published pickles, the split files, and
searches on each dataset scored in the matching table column.

The files are generated here in the published formats (AutoDL-Projects' ``ImageNet16`` pickles and
``configs/nas-benchmark/*.txt`` split files), a few rows each.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dnas.cli import main
from dnas.data import load_dataset, load_search_data
from dnas.data.imagenet16 import TRAIN_FILES
from dnas.data.nb201_splits import read_split_file
from dnas.errors import DnasError
from dnas.spaces.nb201 import NB201_OPS

ROWS, VAL_ROWS = 24, 96  # per training file and in val_data; labels cycle through 1..150


def _imagenet16(folder: Path, rows: int = ROWS, val_rows: int = VAL_ROWS) -> Path:
    """Ten training files and val_data as the published pickles: planar rows (R plane = 3 * label, G plane =
    row number, B plane = file number), labels 1-based, a mean in the training files."""
    folder.mkdir(parents=True)
    counter = itertools.count()
    for number, name in enumerate([*TRAIN_FILES, "val_data"]):
        n = val_rows if name == "val_data" else rows
        labels = [1 + next(counter) % 150 for _ in range(n)]
        data = np.zeros((n, 3, 256), dtype=np.uint8)
        data[:, 0] = (3 * np.asarray(labels) % 256)[:, None]
        data[:, 1] = np.arange(n)[:, None]
        data[:, 2] = number
        entry = {"data": data.reshape(n, 768), "labels": labels}
        if name != "val_data":
            entry["mean"] = data.reshape(n, 768).mean(0)
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    return folder


def _split_file(path: Path, **lists: list[int]) -> Path:
    path.write_text(json.dumps({k: ["int", [str(i) for i in v]] for k, v in lists.items()}))
    return path


def _table(path: Path) -> Path:
    """A benchmark table holding every NB201 cell, its accuracies derived from its arch string."""
    lines = ["arch_str,cifar10-test,cifar100-test,imagenet-test"]
    for ops in itertools.product(NB201_OPS, repeat=6):
        arch = "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)
        score = sum(NB201_OPS.index(op) * 3**i for i, op in enumerate(ops)) % 97
        lines.append(f"{arch},{score},{score + 100},{score + 200}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_imagenet16_120_reads_the_published_files(tmp_path):
    folder = _imagenet16(tmp_path / "root" / "ImageNet16")
    with pytest.warns(UserWarning, match="differ from the published ImageNet16 files"):
        train = load_dataset("imagenet16-120", root=str(tmp_path / "root"))
    all_labels = [1 + i % 150 for i in range(10 * ROWS)]
    kept = [label for label in all_labels if label <= 120]
    assert train.name == "imagenet16-120" and train.num_classes == 120 and train.classes[:2] == ["1", "2"]
    assert train.labels.tolist() == [label - 1 for label in kept]  # file order, 0-based
    assert train.images.shape == (len(kept), 3, 16, 16) and train.loading["mode"] == "memory"
    first = train.images[0]  # planar rows: the red plane first
    assert (first[0] == 3).all() and (first[1] == 0).all() and (first[2] == 0).all()
    assert train.images[-1, 2, 0, 0] == 9  # from the tenth training file
    with pytest.warns(UserWarning):
        test = load_dataset(str(folder), split="test")
    assert test.name == "imagenet16-120" and len(test) == sum(1 + (10 * ROWS + i) % 150 <= 120 for i in range(VAL_ROWS))
    with pytest.warns(UserWarning):
        assert load_dataset("imagenet16-200", root=str(tmp_path / "root")).num_classes == 200
    with pytest.raises(DnasError, match="cannot be downloaded automatically"):
        load_dataset("imagenet16-120", root=str(tmp_path / "elsewhere"))
    with pytest.raises(DnasError, match="format read whole"):
        load_dataset(str(folder), mode="stream")


@pytest.mark.parametrize(("change", "message"), [
    ({"labels": [0] * ROWS}, "has the label 0, outside the ids 1..1000"),
    ({"labels": [1001] * ROWS}, "has the label 1001"),
    ({"labels": [1] * (ROWS - 1)}, "has 24 images but not as many integer labels"),
    ({"data": np.zeros((ROWS, 767), dtype=np.uint8)}, "does not hold uint8 rows of 768 pixels"),
    ({"data": "pixels"}, "does not hold uint8 rows"),
])
def test_malformed_imagenet16_files_are_one_sentence(tmp_path, change, message):
    folder = _imagenet16(tmp_path / "in16")
    with open(folder / "train_data_batch_3", "rb") as f:
        entry = pickle.load(f)
    entry.update(change)
    with open(folder / "train_data_batch_3", "wb") as f:
        pickle.dump(entry, f, protocol=2)
    with pytest.raises(DnasError, match=message):
        load_dataset(str(folder))


def test_imagenet16_files_that_are_missing_or_not_regular(tmp_path):
    folder = _imagenet16(tmp_path / "in16")
    (folder / "train_data_batch_7").unlink()
    with pytest.raises(DnasError, match="lacks the ImageNet16 file train_data_batch_7"):
        load_dataset(str(folder))
    os.mkfifo(folder / "train_data_batch_7")
    with pytest.raises(DnasError, match="is a FIFO"):
        load_dataset(str(folder))


def test_split_files_parse_and_bad_ones_are_refused(tmp_path):
    split = read_split_file(_split_file(tmp_path / "cifar-split.txt", train=[0, 5, 7], valid=[1, 2]))
    assert split.train.tolist() == [0, 5, 7] and split.valid.tolist() == [1, 2] and not split.uses_test_set
    assert not split.published  # not the published file's md5
    test_split = read_split_file(_split_file(tmp_path / "t.txt", xvalid=[3, 1], xtest=[0, 2]))
    assert test_split.uses_test_set and test_split.xvalid.tolist() == [3, 1]
    for lists, message in (({"train": [0, 1], "valid": [1, 2]}, "overlap"),
                           ({"train": [0, 1]}, r"neither train \+ valid nor xvalid"),
                           ({"xvalid": [1, 1]}, "repeats an index")):
        with pytest.raises(DnasError, match=message):
            read_split_file(_split_file(tmp_path / "bad.txt", **lists))
    (tmp_path / "bad.txt").write_text('{"xvalid": ["int", ["1", "-2"]]}')
    with pytest.raises(DnasError, match="not indices >= 0"):
        read_split_file(tmp_path / "bad.txt")
    (tmp_path / "bad.txt").write_text('{"xvalid": ["float", ["1"]]}')
    with pytest.raises(DnasError, match=r'is not \["int", \[indices\]\]'):
        read_split_file(tmp_path / "bad.txt")
    (tmp_path / "bad.txt").write_text("[[[[")
    with pytest.raises(DnasError, match="is not JSON"):
        read_split_file(tmp_path / "bad.txt")


def test_imagenet16_120_search_uses_the_split_files_and_scores_the_imagenet_column(tmp_path, capsys, tiny):
    root = tmp_path / "root"
    _imagenet16(root / "ImageNet16")
    splits = tmp_path / "nas-benchmark"
    splits.mkdir()
    with pytest.warns(UserWarning):
        test = load_dataset("imagenet16-120", split="test", root=str(root))
    _split_file(splits / "imagenet-16-120-test-split.txt", xvalid=list(range(0, len(test), 2)),
                xtest=list(range(1, len(test), 2)))
    with pytest.warns(UserWarning) as warned:
        data = load_search_data("imagenet16-120", root=str(root), nb201_splits=str(splits))
    assert any("is not NAS-Bench-201's protocol" in str(w.message) for w in warned)
    train, val = data.split
    n_train = sum(1 + i % 150 <= 120 for i in range(10 * ROWS))
    assert (len(train), len(val)) == (n_train, (len(test) + 1) // 2) and torch.equal(train, torch.arange(n_train))
    assert torch.equal(data.images[val], test.images[::2])  # the architecture half: xvalid of the test set
    table = _table(tmp_path / "table.csv")
    out = tmp_path / "run"
    with pytest.warns(UserWarning):
        code = main(["search", "--quiet", "--space", "nb201", "--dataset", "imagenet16-120", "--data-root", str(root),
                     "--epochs", "1", "--batch-size", "16", "--out", str(out), *tiny, "max_images=null",
                     f"nb201_splits={splits}", f"benchmark_table={table}"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == n_train // 16 and results["benchmark_column"] == "imagenet-test"
    arch = results["genotype"]["arch_str"]
    row = next(line for line in table.read_text().splitlines() if line.startswith(arch + ","))
    assert results["benchmark_score"] == float(row.split(",")[3])
    assert f"imagenet-test of the cell (the column of the searched dataset): {results['benchmark_score']:.2f}" in (
        capsys.readouterr().out)
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs[-1]["benchmark_column"] == "imagenet-test"


def _cifar10(parent: Path, per_batch: int = 8) -> Path:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f, protocol=2)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                         "labels": [i % 10 for i in range(per_batch)]}, f, protocol=2)
    return folder


def test_cifar10_split_file_gives_the_weights_and_the_architecture_their_halves(tmp_path):
    folder = _cifar10(tmp_path)
    split_file = _split_file(tmp_path / "cifar-split.txt", train=list(range(0, 40, 2)), valid=list(range(1, 40, 2)))
    with pytest.warns(UserWarning, match="differs from NAS-Bench-201's published cifar-split.txt"):
        data = load_search_data(str(folder), nb201_splits=str(split_file))
    whole = load_dataset(str(folder))
    train, val = data.split
    assert torch.equal(data.images[train], whole.images[::2]) and torch.equal(data.images[val], whole.images[1::2])
    with pytest.warns(UserWarning):
        half = load_search_data(str(folder), nb201_splits=str(split_file), max_images=16)
    assert [len(part) for part in half.split] == [8, 8]  # each half keeps 2 of the 5 images of each of its classes
    _split_file(split_file, train=[0, 2, 99], valid=[1])
    with pytest.raises(DnasError, match="indexes up to 99 but the training set of cifar10 has 40 images"):
        load_search_data(str(folder), nb201_splits=str(split_file))
    with pytest.raises(DnasError, match="split files exist for cifar10, cifar100 and imagenet16-120, not for digits"):
        load_search_data("digits", nb201_splits=str(tmp_path))
    with pytest.raises(DnasError, match="lacks cifar-split.txt, the split file of cifar10"):
        load_search_data(str(folder), nb201_splits=str(tmp_path / "cifar-10-batches-py"))
