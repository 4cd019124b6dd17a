"""The device subset: what must hold on the accelerator a user searches on.

    DNAS_TEST_DEVICE=cuda python -m pytest -m device        # bench/device_check.sh runs it and the benchmark

Without ``DNAS_TEST_DEVICE`` every test here is skipped. ``DNAS_TEST_DEVICE=cpu`` runs the same
checks on the CPU (how they are kept working on a machine without an accelerator). On CUDA, the
search steps run under ``torch.cuda.set_sync_debug_mode("warn")``: a synchronising call made by dnas
code outside the places whose design needs a host value (``tests/test_host_sync.py`` lists them)
fails the test, with the file and line that made it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from ddp_worker import tiny_trainer

from dnas.bilevel.methods import METHODS
from dnas.bilevel.run import Search
from dnas.bilevel.step import SearchStep
from dnas.config.resolve import resolve_config
from dnas.errors import DnasError
from dnas.runtime.runner import Position

DEVICE = os.environ.get("DNAS_TEST_DEVICE", "")
CUDA = DEVICE.startswith("cuda")
pytestmark = [
    pytest.mark.device,
    pytest.mark.skipif(not DEVICE, reason="set DNAS_TEST_DEVICE (cuda, or cpu) to run the device subset"),
    pytest.mark.skipif(CUDA and not torch.cuda.is_available(), reason="DNAS_TEST_DEVICE=cuda but no CUDA device"),
]
WORKER = Path(__file__).with_name("ddp_worker.py")
#: the files whose host reads the design needs (tests/test_host_sync.py: ALLOWED)
SYNC_ALLOWED = ("supernet/fused.py", "components/hard_concrete.py", "components/gdas.py", "components/prime.py")
EXTRA = {"pc-darts": ["warmup_epochs=0"], "drnas": ["channels=8"], "darts-prime": ["schedule.threshold=1e9"],
         "darts-prime-v1": ["schedule.threshold=1e9"]}


def _overrides(tiny, *extra: str) -> list[str]:
    return [*tiny, f"device={DEVICE}", *extra]


class _Syncs:
    """Synchronising calls made by dnas code (CUDA's sync debug mode warns on each), by file:line."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._catch = warnings.catch_warnings(record=True)

    def __enter__(self) -> _Syncs:
        self._log = self._catch.__enter__()
        warnings.simplefilter("always")
        if CUDA:
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc) -> None:
        if CUDA:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("default")
        self._catch.__exit__(*exc)
        for w in self._log or []:
            where = str(w.filename).replace("\\", "/")
            if "synchroniz" in str(w.message) and "/dnas/" in where:
                name = where.split("/dnas/", 1)[1]
                if not name.startswith(SYNC_ALLOWED):
                    self.seen.append(f"{name}:{w.lineno}")


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_preset_steps_on_the_device_without_host_syncs(method, tiny):
    cfg = resolve_config({"method": method, "epochs": 2, "batch_size": 16},
                         _overrides(tiny, "max_images=192", "alignment_every=0", "log_every=1000",
                                    *EXTRA.get(method, [])))
    search = SearchStep(cfg)
    search.begin_epoch(1)
    steps = search.steps_per_epoch
    search.iterate(Position(1, 0, steps, 2, steps))  # lazy initialisation outside the count
    with _Syncs() as syncs:
        for step in (1, 2):
            search.iterate(Position(1, step, steps + step, 2, steps))
    assert not syncs.seen, f"{method}: host synchronisations in a search step at {sorted(set(syncs.seen))}"
    device_type = torch.device(DEVICE).type
    for tensor in [*search.problem.weights, *search.problem.arch]:
        assert tensor.device.type == device_type
        assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_on_the_device(precision, tiny):
    cfg = resolve_config({"epochs": 2, "batch_size": 16}, _overrides(tiny, "max_images=96", f"precision={precision}"))
    search = SearchStep(cfg)
    search.begin_epoch(0)
    for step in range(3):
        output = search.iterate(Position(0, step, step, 2, search.steps_per_epoch))
    assert all(torch.isfinite(o.loss) for o in output.observations)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in search.problem.arch)


def test_a_search_on_the_device_resumes_to_the_same_result(tiny_search, tmp_path, interrupt_at, tiny):
    extra = ["max_images=64", "checkpoint_every=2", "log_every=1", f"device={DEVICE}"]
    reference = tiny_search(epochs=2, batch_size=8, name="ref", overrides=extra)
    reference.run()
    interrupt_at(Search, 5)
    with pytest.raises(DnasError, match="interrupted"):
        tiny_search(epochs=2, batch_size=8, name="resumed", overrides=extra).run()
    interrupt_at(Search, None)
    resumed = tiny_search(epochs=2, batch_size=8, name="resumed", overrides=extra)
    resumed.run()
    assert torch.equal(resumed.problem.alphas["cell"].cpu(), reference.problem.alphas["cell"].cpu())
    assert yaml.safe_load((tmp_path / "ref" / "config.yaml").read_text())["device"] == DEVICE


def test_dnas_train_on_the_device(tmp_path):
    trainer = tiny_trainer(tmp_path / "train")
    result = trainer.run()
    assert 0.0 <= result["test_acc"] <= 100.0
    assert next(trainer.algorithm.net.parameters()).device.type == torch.device(DEVICE).type


def test_the_command_line_searches_on_the_device(tmp_path, tiny):
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "dnas", "search", "--method", "pr-darts", "--device", DEVICE,
                           "--epochs", "1", "--batch-size", "16", "--quiet", "--out", str(out), *tiny],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["genotype"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not CUDA or torch.cuda.device_count() < 2, reason="a 2-rank NCCL run needs two CUDA devices")
def test_two_ranks_over_nccl_stay_bit_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DNAS_DIST_TIMEOUT": "60"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(_free_port()), str(WORKER), str(tmp_path), "components"],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    rank0, rank1 = ((tmp_path / f"hash-components-{rank}").read_text() for rank in (0, 1))
    assert rank0 == rank1
