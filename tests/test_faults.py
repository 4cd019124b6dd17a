"""Nothing lost, nothing garbled: real processes killed at every write, two processes on one run.

A child process runs ``dnas search`` with its atomic writes instrumented (this file's
``CHILD``): at the k-th write it stops half-way through the temporary file, or just before the
rename, says so on stdout and waits to be killed with SIGKILL. The same command then resumes the
run (in this process) and must end with the results of an uninterrupted run, bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnas.bilevel.run import Search
from dnas.cli import main
from dnas.config.resolve import resolve_config
from dnas.errors import DnasError

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def args(tiny) -> list[str]:
    """The options of the search every test here interrupts (2 epochs, a checkpoint every 3 steps)."""
    return ["--space", "nb201", "--epochs", "2", "--batch-size", "16", "--threads", "1", "--quiet", *tiny,
            "checkpoint_every=3"]


@pytest.fixture(scope="module")
def config(tiny):
    """The same search as a configuration."""
    return resolve_config({"space": "nb201", "epochs": 2, "batch_size": 16}, [*tiny, "checkpoint_every=3"])

CHILD = r"""
import os, sys, time
import dnas.runtime.atomic as atomic

pause_at, mode = int(os.environ["PAUSE_AT"]), os.environ["PAUSE_MODE"]
count = 0
original_write, original_replace = atomic.atomic_write, os.replace


def pause(where):
    print(f"PAUSED {where}", flush=True)
    time.sleep(120)


def instrumented(path, write):
    global count
    count += 1
    print(f"WRITE {count} {path.name}", flush=True)
    if count != pause_at:
        return original_write(path, write)
    if mode == "inside":
        def half(f):
            import io
            buffer = io.BytesIO()
            write(buffer)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            pause(path.name)
        return original_write(path, half)

    def replace(src, dst):
        pause(path.name)

    os.replace = replace
    return original_write(path, write)


atomic.atomic_write = instrumented
from dnas.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _child(out: Path, args: list[str], pause_at: int, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PAUSE_AT": str(pause_at), "PAUSE_MODE": mode}
    return subprocess.Popen([sys.executable, "-c", CHILD, "search", *args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_pause(proc: subprocess.Popen) -> tuple[str, list[str]]:
    writes = []
    for line in proc.stdout:
        if line.startswith("PAUSED"):
            return line.split()[1], writes
        if line.startswith("WRITE"):
            writes.append(line.split()[2])
    raise AssertionError(f"the child ended without pausing: {proc.wait()} {proc.stderr.read()[-500:]}")


def _results(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    results.pop("seconds")
    return results


def _metrics(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, args):
    """An uninterrupted run (in a child process, uninstrumented) and the list of its writes."""
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = _child(out, args, 0, "none")
    writes = [line.split()[2] for line in proc.stdout if line.startswith("WRITE")]
    assert proc.wait() == 0, proc.stderr.read()[-800:]
    return out, writes


def test_the_reference_writes_config_first_and_checkpoints_atomically(reference):
    out, writes = reference
    assert writes[0] == "config.yaml" and writes[1] == "env.json"
    assert writes.count("checkpoint.pt") >= 4 and writes[-2:] == ["genotype.json", "results.json"]


@pytest.mark.parametrize("target,mode", [
    ("config.yaml", "inside"), ("config.yaml", "rename"), ("env.json", "inside"),
    ("checkpoint.pt#1", "inside"), ("checkpoint.pt#1", "rename"), ("checkpoint.pt#3", "inside"),
    ("genotype.json", "inside"), ("results.json", "rename"),
])
def test_a_kill_at_any_write_resumes_to_the_same_result(reference, tmp_path, target, mode, args, config):
    ref_out, writes = reference
    name, _, nth = target.partition("#")
    index = [i for i, w in enumerate(writes) if w == name][int(nth or 1) - 1] + 1
    out = tmp_path / "run"
    proc = _child(out, args, index, mode)
    try:
        paused, _ = _wait_for_pause(proc)
        assert paused == name
        assert any(p.name.startswith(f".{name}.") and p.name.endswith(".tmp") for p in out.iterdir())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    Search(config, out, progress=False).run()  # the same command again (here: in this process)
    assert _results(out) == _results(ref_out)
    assert _metrics(out) == _metrics(ref_out)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_second_process_is_refused_and_a_dead_holder_blocks_nothing(reference, tmp_path, args, config):
    ref_out, writes = reference
    out = tmp_path / "run"
    proc = _child(out, args, writes.index("checkpoint.pt") + 1, "rename")  # holds the lock, paused
    try:
        _wait_for_pause(proc)
        with pytest.raises(DnasError, match=rf"in use by another dnas process \(pid {proc.pid}\)"):
            Search(config, out, progress=False).run()
        assert (out / "config.yaml").exists()  # the refused process removed nothing
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    Search(config, out, progress=False).run()
    assert _results(out) == _results(ref_out)


def test_two_commands_at_once_one_refused_with_one_sentence(reference, tmp_path, capsys, args):
    _, writes = reference
    out = tmp_path / "run"
    proc = _child(out, args, writes.index("checkpoint.pt") + 1, "rename")
    try:
        _wait_for_pause(proc)
        assert main(["search", "--method", "pr-darts", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("dnas: error:") and "in use by another dnas process" in err and "\n" not in err
        assert "darts" in (out / "config.yaml").read_text() and "pr-darts" not in (out / "config.yaml").read_text()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_resuming_with_another_thread_count_is_refused(reference, tmp_path, capsys, args):
    _, writes = reference
    out = tmp_path / "run"
    proc = _child(out, args, writes.index("checkpoint.pt") + 2, "rename")  # a checkpoint exists
    try:
        _wait_for_pause(proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    two = [a if a != "1" or i == 0 or args[i - 1] != "--threads" else "2" for i, a in enumerate(args)]
    assert main(["search", *two, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "was run with 1 torch threads and this process has 2; resume with --threads 1" in err


def test_ctrl_c_saves_and_the_rerun_completes(tmp_path, args, tiny):
    args = [a if a != "2" else "6" for a in args]  # 6 epochs: the signal lands mid-run
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dnas", "search", *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "interrupted; the search is saved" in err and "Traceback" not in err
    cfg = resolve_config({"space": "nb201", "epochs": 6, "batch_size": 16}, [*tiny, "checkpoint_every=3"])
    Search(cfg, out, progress=False).run()
    Search(cfg, tmp_path / "ref", progress=False).run()
    assert _results(out) == _results(tmp_path / "ref")
    assert _metrics(out) == _metrics(tmp_path / "ref")
