"""Hostile and broken dataset files: each stops with one sentence, quickly, without a dump of the input.

The files are generated here, small: the caps (``DNAS_MAX_FILE_BYTES``, ``DNAS_MAX_IMAGE_PIXELS``,
``DNAS_MEMORY_LIMIT``) are lowered for the tests, except for the 20000 x 20000 image, whose header
alone is written.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dnas.cli import main
from dnas.data import LazyImageDataset, load_dataset
from dnas.data.limits import max_classes, open_image
from dnas.errors import DnasError
from dnas.runtime.reading import file_status
from dnas.runtime.resources import format_bytes


def _one_sentence(call: Callable[[], object], match: str, seconds: float = 30) -> str:
    """The message of the DnasError ``call`` raises, which must come within ``seconds`` (a daemon thread:
    a reader that blocks on a FIFO fails the test instead of hanging it)."""
    outcome: dict[str, BaseException | object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the reader blocked for {seconds} s"
    error = outcome.get("error")
    assert isinstance(error, DnasError), f"expected a DnasError, got {outcome}"
    message = str(error)
    assert "\n" not in message and len(message) < 400, message
    assert match in message, message
    return message


def _png(path: Path, size: tuple[int, int] = (8, 8), value: int = 100) -> None:
    Image.new("RGB", size, (value, value, value)).save(path)


def _folder(root: Path, classes: int = 2, per_class: int = 3, size: tuple[int, int] = (8, 8)) -> Path:
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _png(root / f"class{c}" / f"{i}.png", size, 10 * i + c)
    return root


# ----------------------------------------------------------------------------------- not regular files


def test_a_fifo_or_device_given_as_a_dataset_is_one_sentence_not_a_block(tmp_path):
    fifo = tmp_path / "data.zip"
    os.mkfifo(fifo)
    _one_sentence(lambda: load_dataset(str(fifo)), "is a FIFO (named pipe), not a regular file")
    csv_link = tmp_path / "zeros.csv"
    csv_link.symlink_to("/dev/zero")
    _one_sentence(lambda: load_dataset(str(csv_link)), "is a character device, not a regular file")
    shard = tmp_path / "shard.tar"
    os.mkfifo(shard)
    _one_sentence(lambda: load_dataset(str(shard), mode="stream"), "not a regular file")
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    for name in ("batches.meta", "test_batch"):
        os.mkfifo(cifar / name)
    _one_sentence(lambda: load_dataset(str(cifar), split="test"), "not a regular file")
    with pytest.raises(DnasError, match="is a folder"):
        file_status(tmp_path, "dataset file")


def test_an_image_turned_into_a_fifo_after_listing_is_refused_when_streamed(tmp_path):
    folder = _folder(tmp_path / "imgs")
    data = load_dataset(str(folder), mode="stream")
    assert isinstance(data, LazyImageDataset)
    (folder / "class1" / "2.png").unlink()
    os.mkfifo(folder / "class1" / "2.png")
    _one_sentence(lambda: data.load(5), "2.png is a FIFO")


def test_a_large_cap_is_not_allocated_up_front(tmp_path, monkeypatch):
    monkeypatch.setenv("DNAS_MAX_FILE_BYTES", "1T")  # reading up to the cap would ask for a terabyte at once
    folder = _folder(tmp_path / "imgs")
    assert len(load_dataset(str(folder), mode="stream")) == 6
    assert len(load_dataset(str(folder), root=str(tmp_path))) == 6


# ----------------------------------------------------------------------------------- zip archives


def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _png_bytes(size: tuple[int, int] = (8, 8), value: int = 100) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(out, format="PNG")
    return out.getvalue()


def _patch_central(path: Path, offset: int, fmt: str, value: int) -> None:
    """Overwrite a field of the first central-directory entry (offset from its signature)."""
    raw = bytearray(path.read_bytes())
    at = raw.index(b"PK\x01\x02") + offset
    raw[at:at + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(raw))


def test_zip_members_beyond_the_cap_are_refused_by_declared_and_by_actual_size(tmp_path, monkeypatch):
    padded = _png_bytes() + b"\0" * 20_000  # PNG decoders ignore trailing bytes
    archive = _zip(tmp_path / "big.zip", {"a/0.png": padded, "b/0.png": _png_bytes()})
    monkeypatch.setenv("DNAS_MAX_FILE_BYTES", "10K")
    message = _one_sentence(lambda: load_dataset(str(archive)), "more than 10.0 KiB")
    assert "DNAS_MAX_FILE_BYTES" in message
    monkeypatch.delenv("DNAS_MAX_FILE_BYTES")
    # a member that declares 40 bytes but inflates to 20 KiB: the reader stops after 41 bytes
    _patch_central(archive, 24, "<I", 40)
    _one_sentence(lambda: load_dataset(str(archive), mode="stream").load(0), "expands beyond the 40 bytes")
    _one_sentence(lambda: load_dataset(str(archive), mode="memory"), "expands beyond the 40 bytes")


def test_encrypted_and_unsupported_compression_zips_are_refused(tmp_path):
    members = {"a/0.png": _png_bytes(), "b/0.png": _png_bytes(value=7)}
    encrypted = _zip(tmp_path / "encrypted.zip", members)
    _patch_central(encrypted, 8, "<H", 0x1)  # general purpose flag bit 0: encrypted
    _one_sentence(lambda: load_dataset(str(encrypted)), "is encrypted: give an unencrypted zip")
    deflate64 = _zip(tmp_path / "deflate64.zip", members)
    _patch_central(deflate64, 10, "<H", 9)  # method 9: Deflate64, which zipfile cannot read
    _one_sentence(lambda: load_dataset(str(deflate64), mode="stream"), "compression method 9, which is not read")


def test_a_corrupt_zip_member_is_one_sentence(tmp_path):
    archive = _zip(tmp_path / "crc.zip", {"a/0.png": _png_bytes(), "b/0.png": _png_bytes(value=9)},
                   method=zipfile.ZIP_STORED)
    _patch_central(archive, 16, "<I", 12345)  # a wrong CRC-32
    _one_sentence(lambda: load_dataset(str(archive)), "does not match its declared size or CRC")


# ----------------------------------------------------------------------------------- gzip


def _csv_gz(path: Path, rows: int, label: int = 3) -> Path:
    text = "".join(",".join(["7"] * 16) + f",{label}\n" for _ in range(rows))
    with gzip.open(path, "wb") as f:
        f.write(text.encode())
    return path


def test_gzip_beyond_the_cap_is_refused_by_its_trailer_and_while_reading(tmp_path, monkeypatch):
    path = _csv_gz(tmp_path / "big.csv.gz", rows=2000)  # 68 KB of text (66.4 KiB), a few hundred bytes compressed
    monkeypatch.setenv("DNAS_MAX_FILE_BYTES", "16K")
    _one_sentence(lambda: load_dataset(str(path)), "declares 66.4 KiB, more than 16.0 KiB")
    raw = bytearray(path.read_bytes())
    raw[-4:] = (100).to_bytes(4, "little")  # ISIZE lies: 100 bytes
    path.write_bytes(bytes(raw))
    _one_sentence(lambda: load_dataset(str(path)), "expands to more than 16.0 KiB")
    idx = tmp_path / "idx"
    idx.mkdir()
    with gzip.open(idx / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write((0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (1000, 28, 28)) + bytes(784000))
    (idx / "train-labels-idx1-ubyte").write_bytes((0x801).to_bytes(4, "big") + (1000).to_bytes(4, "big") + bytes(1000))
    _one_sentence(lambda: load_dataset(str(idx)), "more than 16.0 KiB")


# ----------------------------------------------------------------------------------- images


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` RGB pixels but holds one empty row: only its header is read."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_a_20000_by_20000_image_is_one_sentence_with_pillows_guard(tmp_path):
    folder = _folder(tmp_path / "imgs")
    (folder / "class0" / "bomb.png").write_bytes(_png_header(20000, 20000))
    with pytest.raises(DnasError, match="bomb.png has more than 178,956,970 pixels, more than the cap"):
        open_image((folder / "class0" / "bomb.png").read_bytes(), "bomb.png")
    _one_sentence(lambda: load_dataset(str(folder), root=str(tmp_path / "c")), "bomb.png has more than")
    streamed = load_dataset(str(folder), mode="stream")
    position = [streamed.describe(i) for i in range(len(streamed))].index(str(folder / "class0" / "bomb.png"))
    _one_sentence(lambda: streamed.load(position), "DNAS_MAX_IMAGE_PIXELS sets it")


def test_the_pixel_cap_can_be_lowered(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "imgs", size=(64, 64))
    monkeypatch.setenv("DNAS_MAX_IMAGE_PIXELS", "1000")
    _one_sentence(lambda: load_dataset(str(folder), root=str(tmp_path / "c")),
                  "has 64x64 = 4,096 pixels, more than the cap of 1,000")


def test_many_large_images_are_estimated_before_allocating(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "imgs", classes=2, per_class=5, size=(64, 64))  # 10 x 3 x 64 x 64 = 120 KiB
    monkeypatch.setenv("DNAS_MEMORY_LIMIT", "100K")  # a dataset may take half: 50 KiB
    message = _one_sentence(lambda: load_dataset(str(folder), root=str(tmp_path / "c"), mode="memory"),
                            "would take about 120.0 KiB in memory, more than the 50.0 KiB")
    assert "(half of the 100.0 KiB DNAS_MEMORY_LIMIT allows)" in message and "data_mode=stream" in message
    auto = load_dataset(str(folder), root=str(tmp_path / "c"), mode="auto")
    assert isinstance(auto, LazyImageDataset) and auto.loading["mode"] == "stream"
    assert auto.loading["estimated_bytes"] == 10 * 3 * 64 * 64 and "more than the" in auto.loading["reason"]
    assert format_bytes(auto.loading["estimated_bytes"]) == "120.0 KiB"


# ----------------------------------------------------------------------------------- labels


def _cifar10(parent: Path, labels: list[int], names: object = None) -> Path:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"class{i}" for i in range(10)] if names is None else names
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f, protocol=2)
    data = np.zeros((len(labels), 3072), dtype=np.uint8)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f, protocol=2)
    return folder


def test_cifar_labels_out_of_range_and_malformed_names_are_refused(tmp_path):
    folder = _cifar10(tmp_path / "a", [0, 3, 57])
    message = _one_sentence(lambda: load_dataset(str(folder)), "has the label 57, outside the 10 classes")
    assert "[0, 3, 57]" not in message
    folder = _cifar10(tmp_path / "b", [0, 1], names=[1, 2, 3])
    _one_sentence(lambda: load_dataset(str(folder)), "malformed class name (class 0)")
    folder = _cifar10(tmp_path / "c", [0, 1], names=["ok", "x" * 10_000])
    message = _one_sentence(lambda: load_dataset(str(folder)), "malformed class name (class 1)")
    assert "xxxx" not in message
    folder = _cifar10(tmp_path / "d", [0, 1], names="not a list")
    _one_sentence(lambda: load_dataset(str(folder)), "holds no list of class names")
    folder = _cifar10(tmp_path / "e", [0, 1, 2])
    with open(folder / "data_batch_1", "wb") as f:  # 2 images, 3 labels
        pickle.dump({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 1, 2]}, f, protocol=2)
    _one_sentence(lambda: load_dataset(str(folder)), "has 2 images but not as many integer labels")


def test_csv_label_ids_of_ten_billion_are_refused_without_allocating(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("".join(",".join(["1"] * 4) + f",{label}\n" for label in (0, 1, 10**10)))
    message = _one_sentence(lambda: load_dataset(str(path)), "has the label 10000000000, beyond the cap of 1,000,000")
    assert "DNAS_MAX_CLASSES" in message and max_classes() == 1_000_000
    path.write_text("1,1,1,1,9" + "9" * 300 + "\n")  # beyond int64: the parser's error, clipped
    message = _one_sentence(lambda: load_dataset(str(path)), "Cannot parse")
    assert "9" * 150 not in message


# ----------------------------------------------------------------------------------- tar shards


def _shard(path: Path, samples: list[tuple[str, bytes, bytes | None]], compress: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for key, image, label in samples:
            for name, data in ((f"{key}.png", image), (f"{key}.cls", label)):
                if data is None:
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_hostile_tar_shards_are_refused(tmp_path, monkeypatch):
    good = [(f"s{i}", _png_bytes(value=i), str(i % 2).encode()) for i in range(4)]
    _shard(tmp_path / "gz.tar", good, compress=True)
    _one_sentence(lambda: load_dataset(str(tmp_path / "gz.tar")), "is gzip-compressed")
    _shard(tmp_path / "label.tar", [*good, ("s9", _png_bytes(), b"10000000000")])
    _one_sentence(lambda: load_dataset(str(tmp_path / "label.tar")), "has the label 10000000000, beyond the cap")
    _shard(tmp_path / "word.tar", [*good, ("s9", _png_bytes(), b"cat" * 5)])
    _one_sentence(lambda: load_dataset(str(tmp_path / "word.tar")), "is not a class id ('catcatcatcatcat')")
    _shard(tmp_path / "missing.tar", [*good, ("s9", _png_bytes(), None)])
    _one_sentence(lambda: load_dataset(str(tmp_path / "missing.tar")), "has no label (.cls) member")
    _shard(tmp_path / "big.tar", [*good, ("s9", _png_bytes() + bytes(30_000), b"1")])
    monkeypatch.setenv("DNAS_MAX_FILE_BYTES", "20K")
    _one_sentence(lambda: load_dataset(str(tmp_path / "big.tar")), "more than 20.0 KiB")


# ----------------------------------------------------------------------------------- the command line


def test_the_command_line_says_one_sentence_and_writes_nothing(tmp_path, capsys, tiny):
    fifo = tmp_path / "data.zip"
    os.mkfifo(fifo)
    out = tmp_path / "run"
    code = main(["search", "--quiet", "--epochs", "1", "--batch-size", "16", *tiny, "--dataset", str(fifo),
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("dnas: error:") and "\n" not in err and "FIFO" in err, err
    assert not out.exists()
