"""Datasets in memory or streamed, splits, augmentation and the resumable batch streams.

Modules: :mod:`.loading` (names and paths to datasets, the memory/stream choice, batch streams),
:mod:`.datasets` (formats read whole, in-memory decoding), :mod:`.listing` (image folders and zips
read one image at a time), :mod:`.webdataset` (tar shards), :mod:`.imagenet16` (NAS-Bench-201's
ImageNet16-120), :mod:`.nb201_splits` (its split files), :mod:`.streamed` (lazy datasets and their
DataLoader stream), :mod:`.stream` (the in-memory stream), :mod:`.splits`, :mod:`.augment`,
:mod:`.limits` (the caps on what a file may make dnas read and hold).
"""

from dnas.data.augment import Augment
from dnas.data.datasets import DOWNLOADS, Download, ImageDataset
from dnas.data.loading import (
    MODES,
    Batches,
    available_datasets,
    batch_stream,
    default_workers,
    describe_loading,
    evaluation_batches,
    load_dataset,
    load_search_data,
    same_images,
)
from dnas.data.splits import Images, class_balanced, class_fractions, search_split, split_indices, stratified_subset
from dnas.data.stream import BatchStream
from dnas.data.streamed import LazyImageDataset, StreamedBatches

__all__ = [
    "DOWNLOADS",
    "MODES",
    "Augment",
    "BatchStream",
    "Batches",
    "Download",
    "ImageDataset",
    "Images",
    "LazyImageDataset",
    "StreamedBatches",
    "available_datasets",
    "batch_stream",
    "class_balanced",
    "class_fractions",
    "default_workers",
    "describe_loading",
    "load_dataset",
    "load_search_data",
    "same_images",
    "search_split",
    "split_indices",
    "stratified_subset",
    "evaluation_batches",
]
