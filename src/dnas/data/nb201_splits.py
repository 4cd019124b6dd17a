"""NAS-Bench-201's split files, and the search split each one defines.

The files are AutoDL-Projects' ``configs/nas-benchmark/*.txt``: JSON objects whose values are
``[type, values]`` pairs, the indices written as strings::

    {"train": ["int", ["0", "5", "7", ...]], "valid": ["int", ["1", "2", ...]]}

================================  ====================  ==========================================
file                              keys                  indexes
================================  ====================  ==========================================
``cifar-split.txt``               train, valid          CIFAR-10's 50,000 training images
``cifar100-test-split.txt``       xvalid, xtest         CIFAR-100's 10,000 test images
``imagenet-16-120-test-split.txt`` xvalid, xtest        ImageNet16-120's 6,000 validation images
``ImageNet16-120-split.txt``      train, valid          ImageNet16-120's 151,700 training images
================================  ====================  ==========================================

A search uses them as AutoDL-Projects' ``get_nas_search_loaders`` does
(``xautodl/datasets/get_dataset_with_transform.py``), the loaders behind NAS-Bench-201's search
results: with a ``train``/``valid`` file the weights train on ``train`` and the architecture on
``valid``, both parts of the training set; with an ``xvalid``/``xtest`` file the weights train on
the whole training set and the architecture on the ``xvalid`` part of the test set (with the
training augmentation, as there). The table columns that match: ``*-val`` is measured on the
images the architecture was trained on (``valid`` / ``xvalid``); only ``*-test`` is unseen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dnas.data.limits import clip, read_file
from dnas.errors import DnasError
from dnas.runtime.reading import file_status

#: the file AutoDL-Projects' search loaders read for each dataset, when a folder of them is given
SEARCH_FILES = {"cifar10": "cifar-split.txt", "cifar100": "cifar100-test-split.txt",
                "imagenet16-120": "imagenet-16-120-test-split.txt"}
#: md5 of the published files (AutoDL-Projects at commit f46486e)
PUBLISHED_MD5 = {
    "cifar-split.txt": "2da7627956f17981dc0b841ab8385f37",
    "cifar100-test-split.txt": "16f51963f0ccd95cb6c08c33ca4c1665",
    "imagenet-16-120-test-split.txt": "670c7749b090d2e937e20d10e811be22",
    "ImageNet16-120-split.txt": "106aae0b5917ef58b972ba74a5e9d164",
}
_KEYS = ("train", "valid", "xvalid", "xtest")


@dataclass(frozen=True)
class SplitFile:
    """The index lists of one split file (absent keys are None) and whether it is a published file."""

    path: Path
    train: np.ndarray | None
    valid: np.ndarray | None
    xvalid: np.ndarray | None
    xtest: np.ndarray | None
    published: bool

    @property
    def uses_test_set(self) -> bool:
        """Whether the architecture half comes from the test set (an ``xvalid``/``xtest`` file)."""
        return self.train is None


def read_split_file(path: Path) -> SplitFile:
    """Parse a split file (see the module docstring): every list holds distinct whole numbers >= 0;
    a file has ``train`` and ``valid`` (disjoint) or ``xvalid``."""
    raw = read_file(path, "NAS-Bench-201 split file")
    try:
        content = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise DnasError(f"The split file {path} is not JSON ({clip(str(e), 60)}): give one of NAS-Bench-201's "
                        "split files.") from None
    if not isinstance(content, dict):
        raise DnasError(f"The split file {path} does not hold a JSON object: give one of NAS-Bench-201's split files.")
    lists: dict[str, np.ndarray] = {}
    for key in _KEYS:
        if key not in content:
            continue
        value = content[key]
        if not (isinstance(value, list) and len(value) == 2 and value[0] == "int" and isinstance(value[1], list)):
            raise DnasError(f"The entry {key!r} of the split file {path} is not [\"int\", [indices]].")
        try:
            indices = np.asarray([int(v) for v in value[1] if isinstance(v, (str, int)) and str(v).isdigit()],
                                 dtype=np.int64)
        except (ValueError, OverflowError):
            indices = np.zeros(0, dtype=np.int64)
        if len(indices) != len(value[1]) or len(indices) == 0:
            raise DnasError(f"The entry {key!r} of the split file {path} holds values that are not indices >= 0 "
                            "(or none): give one of NAS-Bench-201's split files.")
        if len(np.unique(indices)) != len(indices):
            raise DnasError(f"The entry {key!r} of the split file {path} repeats an index.")
        lists[key] = indices
    if not ({"train", "valid"} <= set(lists) or "xvalid" in lists):
        raise DnasError(f"The split file {path} has neither train + valid nor xvalid indices: give one of "
                        "NAS-Bench-201's split files.")
    if "train" in lists and "valid" in lists and np.intersect1d(lists["train"], lists["valid"]).size:
        raise DnasError(f"The train and valid indices of the split file {path} overlap.")
    published = PUBLISHED_MD5.get(path.name) == hashlib.md5(raw).hexdigest()
    return SplitFile(path, lists.get("train"), lists.get("valid"), lists.get("xvalid"), lists.get("xtest"),
                     published)


def find_split_file(spec: str, dataset: str) -> SplitFile:
    """The split file ``spec`` names: a file, or a folder holding AutoDL-Projects' files, where the
    one its search loaders read for ``dataset`` (:data:`SEARCH_FILES`) is taken."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if dataset not in SEARCH_FILES:
            raise DnasError(f"NAS-Bench-201 split files exist for cifar10, cifar100 and imagenet16-120, not for "
                            f"{dataset}: leave nb201_splits unset")
        path = path / SEARCH_FILES[dataset]
        if not path.exists():
            raise DnasError(f"{path.parent} lacks {path.name}, the split file of {dataset}: give its path or the "
                            "folder configs/nas-benchmark of AutoDL-Projects")
    file_status(path, "NAS-Bench-201 split file")
    return read_split_file(path)


def check_range(indices: np.ndarray, size: int, what: str, path: Path) -> torch.Tensor:
    """``indices`` as a tensor, when they all lie below ``size`` (the set they index)."""
    if indices.max() >= size:
        raise DnasError(f"The split file {path} indexes up to {int(indices.max())} but {what} has {size} images: "
                        "give the file of this dataset (and the whole dataset, not a subset).")
    return torch.from_numpy(indices.copy())
