"""ImageNet16-120: NAS-Bench-201's third dataset, read from its published files.

The files are Chrabaszcz, Loshchilov and Hutter's downsampled ImageNet (2017) at 16x16, as
NAS-Bench-201 uses them (D-X-Y/AutoDL-Projects ``xautodl/datasets/DownsampledImageNet.py``)::

    FOLDER/train_data_batch_1 ... train_data_batch_10   the 1,281,167 training images
    FOLDER/val_data                                     the 50,000 validation images

Each file is a Python pickle of a dict: ``data``, a uint8 array ``(N, 768)`` of planar
channel-first rows (256 red values, then 256 green, then 256 blue, each row by row); ``labels``,
a list of N class ids 1..1000 (the line order of ILSVRC's ``map_clsloc.txt``); the training
files also hold ``mean``, which is not used.

``ImageNet16-N`` keeps the images whose id is at most N (NAS-Bench-201: N = 120, 151,700
training and 6,000 validation images), in file order, with labels ``id - 1``; its test split is
the kept part of ``val_data``. Class names are the published ids ("1" .. "120"). The files are
checked against the md5 sums AutoDL-Projects publishes; other files load with a warning that
their results are not comparable with NAS-Bench-201's.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from dnas.data.datasets import ImageDataset, unpickle
from dnas.data.limits import check_fits, read_file
from dnas.errors import DnasError
from dnas.runtime.reading import file_status

TRAIN_FILES = tuple(f"train_data_batch_{i}" for i in range(1, 11))
VAL_FILE = "val_data"
FOLDER = "ImageNet16"  # AutoDL-Projects' folder name under its data root
#: md5 of each published file (AutoDL-Projects ``ImageNet16.train_list`` / ``valid_list``)
PUBLISHED_MD5 = {
    "train_data_batch_1": "27846dcaa50de8e21a7d1a35f30f0e91",
    "train_data_batch_2": "c7254a054e0e795c69120a5727050e3f",
    "train_data_batch_3": "4333d3df2e5ffb114b05d2ffc19b1e87",
    "train_data_batch_4": "1620cdf193304f4a92677b695d70d10f",
    "train_data_batch_5": "348b3c2fdbb3940c4e9e834affd3b18d",
    "train_data_batch_6": "6e765307c242a1b3d7d5ef9139b48945",
    "train_data_batch_7": "564926d8cbf8fc4818ba23d2faac7564",
    "train_data_batch_8": "f4755871f718ccb653440b9dd0ebac66",
    "train_data_batch_9": "bb6dd660c38c58552125b1a92f86b5d4",
    "train_data_batch_10": "8f03f34ac4b42271a294f91bf480f29b",
    "val_data": "3410e3017fdaefba8d5073aaa65e4bd6",
}
_NAME = re.compile(r"imagenet16(?:-(\d+))?")
_PIXELS = 3 * 16 * 16


def imagenet16_classes(spec: str) -> int | None:
    """The class count a dataset name asks for (``imagenet16-120`` -> 120, ``imagenet16`` -> 1000), or
    None when ``spec`` is not such a name."""
    match = _NAME.fullmatch(spec.lower())
    if match is None:
        return None
    count = int(match.group(1) or 1000)
    if not 1 <= count <= 1000:
        raise DnasError(f"{spec} asks for {count} classes; ImageNet16 has 1 to 1000 (NAS-Bench-201: imagenet16-120)")
    return count


def is_imagenet16_folder(path: Path) -> bool:
    return (path / VAL_FILE).exists() and (path / TRAIN_FILES[0]).exists()


def load_imagenet16(folder: Path, split: str, classes: int = 120) -> ImageDataset:
    """The ``split`` (``train``: the ten training files, ``test``: ``val_data``) of ImageNet16-``classes``."""
    files = list(TRAIN_FILES) if split == "train" else [VAL_FILE]
    for f in files:
        if not (folder / f).exists():
            raise DnasError(f"{folder} lacks the ImageNet16 file {f}: it needs train_data_batch_1 .. "
                            f"train_data_batch_10 and val_data.")
    sizes = [file_status(folder / f, "ImageNet16 file").st_size for f in files]
    # one file is held whole while it is filtered; the kept rows are about classes / 1000 of all
    check_fits(max(sizes) * 2 + sum(sizes) * classes // 1000, f"ImageNet16-{classes} ({split}) in {folder}",
               streamable=False)
    images, labels, unpublished = [], [], []
    for f in files:
        path = folder / f
        raw = read_file(path, "ImageNet16 file")
        if hashlib.md5(raw).hexdigest() != PUBLISHED_MD5[f]:
            unpublished.append(f)
        entry = unpickle(raw, path, "ImageNet16 file", "replace it with the published file")
        del raw
        if "data" not in entry or "labels" not in entry:
            raise DnasError(f"The ImageNet16 file {path} lacks 'data' or 'labels': replace it with the published file.")
        data, label = np.asarray(entry["data"]), np.asarray(entry["labels"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
            raise DnasError(f"The ImageNet16 file {path} does not hold uint8 rows of {_PIXELS} pixels: replace it "
                            "with the published file.")
        if label.ndim != 1 or label.dtype.kind not in "iu" or len(label) != len(data):
            raise DnasError(f"The ImageNet16 file {path} has {len(data)} images but not as many integer labels: "
                            "replace it with the published file.")
        if len(label) and (label.min() < 1 or label.max() > 1000):
            bad = int(label.min()) if label.min() < 1 else int(label.max())
            raise DnasError(f"The ImageNet16 file {path} has the label {bad}, outside the ids 1..1000: replace it "
                            "with the published file.")
        keep = label <= classes
        images.append(data[keep].reshape(-1, 3, 16, 16))
        labels.append(label[keep].astype(np.int64) - 1)
    if unpublished:
        warnings.warn(f"{', '.join(unpublished)} in {folder} differ from the published ImageNet16 files (md5): "
                      "results on them are not comparable with NAS-Bench-201's", stacklevel=3)
    name = "imagenet16" if classes == 1000 else f"imagenet16-{classes}"
    return ImageDataset.from_tensors(torch.from_numpy(np.concatenate(images)),
                                     torch.from_numpy(np.concatenate(labels)),
                                     [str(i) for i in range(1, classes + 1)], name)
