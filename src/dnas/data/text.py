"""Word-level corpora for language modelling, tokenised and batched as DARTS' code does
(quark0/darts ``rnn/data.py``, ``rnn/utils.py``, the AWD-LSTM conventions).

* A corpus is a folder holding the three splits as ``train.txt``, ``valid.txt``, ``test.txt`` (the
  names of DARTS' ``data/penn``) or ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt`` (Mikolov's
  PTB package). Files are read as UTF-8.
* Tokens: every line is ``line.split() + ["<eos>"]`` (whitespace split, an end-of-sentence token at
  the end of every line, empty lines included). There is no unknown-word handling: the standard PTB
  files already hold ``<unk>``. One vocabulary for the three splits, ids in order of first
  appearance in train, then valid, then test.
* ``batchify(ids, B)``: the stream cut to a multiple of ``B`` and laid out as ``B`` contiguous
  columns, shape ``(len // B, B)``; row ``t`` holds the ``t``-th token of every column.
* ``segment(source, i, L)``: inputs ``source[i : i+L']`` and targets ``source[i+1 : i+1+L']`` with
  ``L' = min(L, rows - 1 - i)``.
* Truncated back-propagation through time with random lengths: :func:`search_lengths` (the search,
  ``rnn/train_search.py``: 35, or 17 with probability 0.05) and :func:`training_lengths`
  (retraining, ``rnn/train.py``: ``max(5, int(N(b, 5)))`` capped at ``bptt + 20``, ``b`` = 35 or 17.5).
  Both draw one epoch's lengths at once from a generator seeded per epoch, so an epoch's number of
  steps is known when it begins and a resumed run draws the same lengths.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dnas.errors import DnasError

EOS = "<eos>"
SPLITS = ("train", "valid", "test")
#: the file names a corpus folder may use for each split, in order of preference
SPLIT_FILES = {split: (f"{split}.txt", f"ptb.{split}.txt") for split in SPLITS}


@dataclass(frozen=True)
class Corpus:
    """Token ids of the three splits (1-D int64 tensors) and the vocabulary (``words[id]``)."""

    words: tuple[str, ...]
    train: Tensor
    valid: Tensor
    test: Tensor
    source: str

    @property
    def vocabulary_size(self) -> int:
        return len(self.words)

    def split(self, name: str) -> Tensor:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def corpus_files(path: str | Path) -> dict[str, Path]:
    """The file of each split in the folder ``path`` (module docstring), or one sentence saying what is missing."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DnasError(f"the text corpus {str(path)!r} is not a folder; give a folder holding train.txt, valid.txt "
                        "and test.txt (or ptb.train.txt, ptb.valid.txt and ptb.test.txt)")
    files = {}
    for split, names in SPLIT_FILES.items():
        found = [folder / name for name in names if (folder / name).is_file()]
        if not found:
            raise DnasError(f"the text corpus {folder} has no {split} split: expected {' or '.join(names)} in it")
        files[split] = found[0]
    return files


def tokenize(lines: Iterable[str], ids: dict[str, int]) -> Tensor:
    """The ids of ``line.split() + ["<eos>"]`` for every line, adding new words to ``ids`` as they appear."""
    out: list[int] = []
    for line in lines:
        for word in line.split() + [EOS]:
            index = ids.get(word)
            if index is None:
                index = ids[word] = len(ids)
            out.append(index)
    return torch.tensor(out, dtype=torch.long)


def load_corpus(path: str | Path) -> Corpus:
    """The corpus in the folder ``path``, tokenised as the module docstring says."""
    files = corpus_files(path)
    ids: dict[str, int] = {}
    splits = {}
    for split in SPLITS:
        try:
            with open(files[split], encoding="utf-8") as handle:
                splits[split] = tokenize(handle, ids)
        except UnicodeDecodeError:
            raise DnasError(f"{files[split]} is not UTF-8 text; a corpus holds plain text, one sentence per line") \
                from None
        except OSError as err:
            raise DnasError(f"cannot read {files[split]} ({err.strerror})") from None
        if len(splits[split]) < 2:
            raise DnasError(f"{files[split]} holds fewer than two tokens; a corpus split needs text to predict")
    return Corpus(words=tuple(ids), train=splits["train"], valid=splits["valid"], test=splits["test"],
                  source=str(Path(path).expanduser()))


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """``ids`` as ``batch_size`` contiguous columns: shape ``(len(ids) // batch_size, batch_size)``."""
    rows = len(ids) // batch_size
    return ids[: rows * batch_size].view(batch_size, rows).t().contiguous()


def segment(source: Tensor, start: int, length: int) -> tuple[Tensor, Tensor]:
    """Inputs ``source[start : start+L]`` and the next tokens as targets, ``L = min(length, rows - 1 - start)``."""
    length = min(length, len(source) - 1 - start)
    return source[start: start + length], source[start + 1: start + 1 + length]


def search_lengths(rows: int, bptt: int, generator: torch.Generator) -> list[int]:
    """One search epoch's BPTT lengths over ``rows`` rows: ``bptt``, or ``int(bptt / 2)`` with probability
    0.05, until the position ``sum`` reaches ``rows - 2`` (``rnn/train_search.py``; its normal jitter is
    commented out there)."""
    lengths: list[int] = []
    position = 0
    while position < rows - 2:
        half = float(torch.rand((), generator=generator)) >= 0.95
        lengths.append(int(bptt / 2) if half else bptt)
        position += lengths[-1]
    return lengths


def training_lengths(rows: int, bptt: int, max_delta: int, generator: torch.Generator) -> list[int]:
    """One training epoch's BPTT lengths (``rnn/train.py``): ``b = bptt`` (or ``bptt / 2`` with probability
    0.05), ``L = min(max(5, int(N(b, 5))), bptt + max_delta)``, until the position reaches ``rows - 2``."""
    lengths: list[int] = []
    position = 0
    while position < rows - 2:
        base = bptt / 2 if float(torch.rand((), generator=generator)) >= 0.95 else float(bptt)
        drawn = int(base + 5.0 * float(torch.randn((), generator=generator)))
        lengths.append(min(max(5, drawn), bptt + max_delta))
        position += lengths[-1]
    return lengths


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's BPTT lengths: a function of the run's seed and the epoch alone."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)
