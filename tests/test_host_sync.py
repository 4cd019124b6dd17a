"""No host synchronisation inside a search step: on a GPU, reading a device value on the host
(``.item()``, ``.tolist()``, ``.cpu()``, ``bool()``/``int()``/``float()`` of a tensor) waits for every
queued kernel and stalls the step. On the CPU the calls are counted instead: every preset takes two
iterations (not logging steps) and no dnas code may make such a call, except where the design needs a
host value and says so:

- the activations whose zero weights skip ops (hard-concrete, Gumbel) copy their masks to the host
  once per forward pass (``active_mask``), DARTS-PRIME's clamp every ``mask_sync_every`` weight steps
  (``after_weight_step``), and the fused supernet selects members with those host masks
  (``FusedSource.forward``);
- DARTS-PRIME's schedule decides on the host whether to take an architecture step, from a copy
  started asynchronously one step earlier (``take_arch_step``).

(On CUDA, ``tests/test_device.py`` runs with ``torch.cuda.set_sync_debug_mode``.)
"""

from __future__ import annotations

import collections
import traceback

import pytest
import torch

from dnas.bilevel.methods import METHODS
from dnas.bilevel.step import SearchStep
from dnas.config.resolve import resolve_config
from dnas.runtime.runner import Position

HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")
#: (file, function) of the host reads the design needs (module docstring)
ALLOWED = {("supernet/fused.py", "forward"), ("components/hard_concrete.py", "active_mask"),
           ("components/gdas.py", "active_mask"), ("components/prime.py", "after_weight_step"),
           ("components/prime.py", "take_arch_step")}
EXTRA = {"pc-darts": ["warmup_epochs=0"], "drnas": ["channels=8"], "darts-prime": ["schedule.threshold=1e9"],
         "darts-prime-v1": ["schedule.threshold=1e9"]}


@pytest.fixture
def host_reads(monkeypatch):
    """Counts of the host reads made by dnas code while ``reads.active`` is set, by (file, function)."""

    class Reads(collections.Counter):
        active = False

    reads = Reads()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            if reads.active:
                caller = traceback.extract_stack(limit=3)[-2]
                if "/dnas/" in caller.filename:
                    reads[(caller.filename.split("/dnas/", 1)[1], caller.name, _name)] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return reads


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_a_search_step_reads_nothing_back_from_the_device(method, host_reads, tiny):
    cfg = resolve_config({"method": method, "epochs": 2, "batch_size": 16},
                         [*tiny, "max_images=192", "alignment_every=0", "log_every=1000", *EXTRA.get(method, [])])
    search = SearchStep(cfg)
    search.begin_epoch(1)
    steps = search.steps_per_epoch
    search.iterate(Position(1, 0, steps, 2, steps))  # first calls: lazy initialisation
    host_reads.active = True
    for step in (1, 2):
        search.iterate(Position(1, step, steps + step, 2, steps))
    host_reads.active = False
    unexpected = {key: n for key, n in host_reads.items() if key[:2] not in ALLOWED}
    assert not unexpected, f"{method}: host reads in a search step {unexpected}"
