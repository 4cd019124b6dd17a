"""`dnas compare --jobs 2` as a real process: SIGTERM stops it cleanly, `kill -9` leaves no worker behind."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from Linux /proc")]



def _command(out, tiny, epochs=24):
    return [sys.executable, "-m", "dnas", "compare", "--methods", "darts", "--seeds", "0,1", "--jobs", "2",
            "--epochs", str(epochs), "--batch-size", "16", "--quiet", "--out", str(out), *tiny, "checkpoint_every=2"]


def _stat(pid):
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _alive(pid):
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has ended, only its entry waits to be reaped


def _children(pid):
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(entry.name)
            if stat is not None and stat[1] == pid:
                kids.append(int(entry.name))
    return kids


def _start_and_wait_for_the_searches(out, tiny, epochs=24):
    """Start the grid; return it once both searches have written a checkpoint at step 2 of their 5 x ``epochs``
    (so they are mid-search)."""
    # output to files, not pipes: workers that outlived the grid would keep a pipe open (and the test waiting)
    err = out.parent / "stderr.txt"
    with open(out.parent / "stdout.txt", "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(_command(out, tiny, epochs), stdout=stdout, stderr=stderr)
    deadline = time.monotonic() + 180
    while not all((out / "runs" / f"darts-s{s}" / "checkpoint.pt").exists() for s in (0, 1)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the grid did not start both searches: {err.read_text()}")
        time.sleep(0.05)
    return process


def _wait_until_gone(pids, seconds):
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_sigterm_stops_the_grid_cleanly_and_the_next_call_resumes(tmp_path, tiny):
    out = tmp_path / "cmp"
    grid = _start_and_wait_for_the_searches(out, tiny)
    workers = _children(grid.pid)
    assert len(workers) >= 2
    grid.send_signal(signal.SIGTERM)
    assert grid.wait(timeout=120) == 2
    err = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("dnas: error: interrupted; finished runs are kept and unfinished ones "
                                            "resume from their checkpoints: run the same command again")
    searches = [int((out / "runs" / f"darts-s{s}" / ".lock").read_text()) for s in (0, 1)]  # pids of the workers
    assert set(searches) <= set(workers) and not [p for p in searches if _alive(p)]  # the grid waited for them
    assert _wait_until_gone(workers, 10) == []  # and multiprocessing's resource tracker follows the grid
    for seed in (0, 1):
        run = out / "runs" / f"darts-s{seed}"
        assert (run / "checkpoint.pt").exists() and not (run / "results.json").exists()
    again = subprocess.run(_command(out, tiny), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    with open(out / "per_run.csv", newline="") as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["ok", "ok"]


def test_kill_9_of_the_grid_leaves_no_worker(tmp_path, tiny):
    import torch

    out = tmp_path / "cmp"
    grid = _start_and_wait_for_the_searches(out, tiny, epochs=1000)  # 5,000 steps: far from done when the grid dies
    workers = _children(grid.pid)  # the two workers and multiprocessing's resource tracker
    assert len(workers) >= 2
    os.kill(grid.pid, signal.SIGKILL)
    grid.wait()
    # well within ORPHAN_GRACE (60 s): the orphans stopped their searches, they did not time out or finish
    assert _wait_until_gone(workers, 30) == []
    for seed in (0, 1):  # each search saved its state at the step it was stopped, and can resume from it
        run = out / "runs" / f"darts-s{seed}"
        state = torch.load(run / "checkpoint.pt", weights_only=False)
        assert not (run / "results.json").exists() and 0 < state["global_step"] < 5000
