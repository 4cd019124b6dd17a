"""Datasets, splits, augmentation and the resumable batch stream."""

from dnas.data.augment import Augment
from dnas.data.datasets import DOWNLOADS, Download, ImageDataset, available_datasets, load_dataset
from dnas.data.splits import class_balanced, split_indices, stratified_subset
from dnas.data.stream import BatchStream

__all__ = [
    "DOWNLOADS",
    "Augment",
    "BatchStream",
    "Download",
    "ImageDataset",
    "available_datasets",
    "class_balanced",
    "load_dataset",
    "split_indices",
    "stratified_subset",
]
