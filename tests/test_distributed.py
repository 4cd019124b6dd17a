"""Data-parallel search and training under torchrun (2 CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnas.bilevel.run import Search
from dnas.config.resolve import resolve_config
from dnas.errors import DnasError

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    """A port no process listens on now (each launch gets its own: a previous one's may linger)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DNAS_DIST_TIMEOUT": "20"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _hashes(folder: Path, name: str) -> tuple[str, str]:
    return tuple((folder / f"hash-{name}-{rank}").read_text() for rank in (0, 1))


def test_every_component_keeps_the_ranks_bit_identical(tmp_path):
    done = _torchrun(str(WORKER), str(tmp_path), "components")
    assert done.returncode == 0, done.stderr[-2000:]
    rank0, rank1 = _hashes(tmp_path, "components")
    assert rank0 == rank1  # weights, alpha, both optimizers, component states, per method; the trained net
    lines = dict(line.split(" ", 1) for line in rank0.splitlines())
    assert set(lines) == {"darts", "darts-2nd", "amended-darts", "lambda-darts", "pr-darts", "darts-prime",
                          "darts-prime-v1", "gdas", "sdarts-adv", "fair-darts", "beta-darts", "darts-minus",
                          "pc-darts", "drnas", "train"}
    # alpha steps were taken (so alpha was reduced)
    for method in ("darts", "darts-prime", "darts-prime-v1", "gdas", "pc-darts", "drnas"):
        assert int(lines[method].split()[1]) > 0
    # one writer: each record once, in order
    for method in ("darts", "lambda-darts", "train"):
        records = [json.loads(x) for x in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in records if r["kind"] == "step"]
        assert steps == sorted(set(steps)) and steps
    env = json.loads((tmp_path / "darts" / "env.json").read_text())
    assert env["torch_threads"] == 1


def test_a_rank_that_dies_stops_the_other_and_the_run_resumes_identical(tmp_path):
    ref = _torchrun(str(WORKER), str(tmp_path), "resume", "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    start = time.monotonic()
    crash = _torchrun(str(WORKER), str(tmp_path), "crash", "run")
    assert crash.returncode != 0 and time.monotonic() - start < 120
    # the surviving rank stops with one sentence (torchrun's own report of the dead rank follows it)
    assert "[rank0]: Traceback" not in crash.stderr and "[rank0]:" not in crash.stderr.split("Root Cause")[0]
    assert "dnas: error: another rank of this distributed run stopped or timed out" in crash.stderr
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    resumed = _torchrun(str(WORKER), str(tmp_path), "resume", "run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _hashes(tmp_path, "run") == _hashes(tmp_path, "ref")
    assert _hashes(tmp_path, "run")[0] == _hashes(tmp_path, "run")[1]
    # resuming a 2-process checkpoint in one process is refused with one sentence
    cfg = resolve_config({"method": "darts", "epochs": 4, "batch_size": 16},
                         ["channels=4", "layers=1", "max_images=192", "log_every=2", "checkpoint_every=3"])
    with pytest.raises(DnasError, match="holds a search run with a different configuration|was run by 2 process"):
        Search(cfg, tmp_path / "run", progress=False).run()


@pytest.fixture
def cli(tiny) -> list[str]:
    """``python -m dnas search`` of a tiny 4-epoch search, one torch thread per process."""
    return ["-m", "dnas", "search", "--epochs", "4", "--batch-size", "16", "--quiet", "--threads", "1", *tiny]


def _results(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    results.pop("seconds")
    return results


def test_torchrun_dnas_search_command_line_and_sigterm_on_one_rank(tmp_path, cli):
    out = tmp_path / "cli"
    done = _torchrun(*cli, "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("nb201 cell:") == 2  # both ranks print the same cell
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if r["kind"] == "epoch"]) == 4  # one writer: each record once
    assert _results(out)["steps"] > 0
    # SIGTERM to one rank only: both stop at the same step with a checkpoint; the rerun ends identical
    stopped = tmp_path / "stopped"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DNAS_DIST_TIMEOUT": "20"}
    agent = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                              "--master_port", str(_free_port()), *cli, "--out", str(stopped)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (stopped / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()
    assert workers
    os.kill(int(workers[-1]), signal.SIGTERM)
    _, err = agent.communicate(timeout=120)
    assert agent.returncode != 0 and "interrupted; the search is saved" in err
    resumed = _torchrun(*cli, "--out", str(stopped))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _results(stopped) == _results(out)


def test_the_global_batch_must_divide_among_the_ranks(tmp_path, tiny):
    done = _torchrun("-m", "dnas", "search", "--epochs", "1", "--batch-size", "15", "--quiet", *tiny,
                     "--out", str(tmp_path / "odd"))
    assert done.returncode != 0 and "must be divisible by their number" in done.stderr
    assert not (tmp_path / "odd").exists()
