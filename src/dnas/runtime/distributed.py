"""Data parallelism over ``torch.distributed``, for runs launched by ``torchrun``.

``torchrun --nproc_per_node N -m dnas search ...`` starts N processes (ranks). They run the same
loop on the same seeds, so they draw the same *global* batch of ``--batch-size`` images (same
order, same augmentation, same random numbers) and each keeps its own contiguous shard of
``batch_size / N`` images (:meth:`Group.shard`). Every gradient computed from data is averaged
over the ranks (:meth:`Group.mean_`: one all-reduce of a flat buffer) before anything uses it,
so every rank applies the same update to the same parameters:

    g = (1/N) sum_r grad L(shard_r)  =  grad of the mean loss over the global batch,

and **every rank holds bit-identical weights, architecture weights and optimizer states after
every step** (an all-reduce returns the same bits to every rank; everything else is the same
deterministic computation on every rank; BatchNorm running statistics are averaged after every
step, :meth:`Group.mean_buffers_`). Decisions taken from data (the Fisher schedule's
trace, a stop request) use reduced values too, so all ranks take the same branch.

What is *not* the same as one process with the global batch: BatchNorm normalises each shard
with its own statistics (as ``DistributedDataParallel`` without SyncBatchNorm), so an N-rank run
is a faithful data-parallel run, not a bit-copy of a 1-process run.

Backend: ``nccl`` for CUDA devices (rank r on ``cuda:LOCAL_RANK``), ``gloo`` on CPU. Collectives
time out after ``DNAS_DIST_TIMEOUT`` seconds (default 300), so a rank that dies makes the others
stop with a message instead of hanging. Only rank 0 writes into the run directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import Tensor

from dnas.errors import DnasError


@dataclass
class Group:
    """The ranks of a run: ``world`` processes, this one ``rank`` (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the only writer."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """This rank's contiguous share of a global batch (all of it with one process)."""
        if not self.active:
            return batch
        x, y = batch
        size = x.shape[0] // self.world
        start = self.rank * size
        return x[start:start + size], y[start:start + size]

    def mean_(self, tensors: Sequence[Tensor | None]) -> None:
        """Average ``tensors`` in place over the ranks (one all-reduce of one flat buffer)."""
        present = [t for t in tensors if t is not None]
        if not self.active or not present:
            return
        flat = torch.cat([t.reshape(-1) for t in present])
        _collective(torch.distributed.all_reduce, flat)
        flat /= self.world
        start = 0
        for t in present:
            t.copy_(flat[start:start + t.numel()].view_as(t))
            start += t.numel()

    def mean_buffers_(self, module: torch.nn.Module) -> None:
        """Average the floating-point buffers (BatchNorm running statistics) over the ranks, so that
        every rank holds the same state and evaluates with statistics of the global batch."""
        self.mean_([b for b in module.buffers() if b.is_floating_point()])

    def sum(self, tensor: Tensor) -> Tensor:
        """The sum of ``tensor`` over the ranks (a new tensor)."""
        if not self.active:
            return tensor
        total = tensor.clone()
        _collective(torch.distributed.all_reduce, total)
        return total

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on any rank (a stop request)."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        _collective(torch.distributed.all_reduce, value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        _collective(torch.distributed.broadcast_object_list, box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            _collective(torch.distributed.barrier)


SINGLE = Group()


def _collective(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except RuntimeError as err:  # a peer died or timed out (gloo: connection closed; nccl: watchdog)
        reason = re.sub(r"\[[^\]]*\]\s*", "", str(err).splitlines()[0])[:80].strip() or type(err).__name__
        raise DnasError(f"another rank of this distributed run stopped or timed out ({reason}); the last "
                        "checkpoint is kept: start the same torchrun command again to resume") from None


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> tuple[Group, str]:
    """Join the process group when launched by ``torchrun`` (idempotent); returns the group and the
    device this rank uses (``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    if not launched():
        return SINGLE, device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise DnasError("device cuda was requested but PyTorch sees no CUDA device; use --device cpu")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get("DNAS_DIST_TIMEOUT", "300")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return Group(dist.get_rank(), dist.get_world_size()), device


def group_of_process() -> Group:
    """The group this process belongs to (set up by :func:`setup`), or the single-process group."""
    if launched() and torch.distributed.is_available() and torch.distributed.is_initialized():
        return Group(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return SINGLE
