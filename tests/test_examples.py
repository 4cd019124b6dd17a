"""The scripts in examples/ run as a user runs them (a subprocess, PYTHONPATH=src), at their tiny size."""

import itertools
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def _run(*command: str, cwd: Path, timeout: float = 180, **env: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **env}
    done = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _nb201_table(path: Path) -> Path:
    """A NAS-Bench-201 table with a (made-up) score for every one of the 15,625 cells."""
    rows = ["arch,cellstr,cifar10-test"]
    for i, ops in enumerate(itertools.product(NB201_OPS, repeat=6)):
        edges = [f"{op}~{src}" for op, src in zip(ops, (0, 0, 1, 0, 1, 2), strict=True)]
        rows.append(f"{i},|{edges[0]}|+|{edges[1]}|{edges[2]}|+|{edges[3]}|{edges[4]}|{edges[5]}|,{i % 100}.5")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_every_example_is_tested_and_documented():
    scripts = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh"))
    tested = {"search_retrain_lookup.py", "combine_components.py", "compare_grid.py", "torchrun_search.sh"}
    assert set(scripts) <= tested | {"custom_space.py", "my_plugin.py"}, f"untested examples: {set(scripts) - tested}"
    for name in tested:
        text = (EXAMPLES / name).read_text()
        assert len(text.splitlines()) <= 60, f"{name} is meant to be short"
        assert text.lstrip().startswith(('"""', "#!")), f"{name} starts without saying what it shows"


def test_search_retrain_lookup(tmp_path):
    out = _run(sys.executable, str(EXAMPLES / "search_retrain_lookup.py"), "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert "found cell: nb201 cell: |" in out and "retrained: test accuracy" in out
    assert "no NAS-Bench-201 table given" in out
    table = _nb201_table(tmp_path / "nb201.csv")
    out = _run(sys.executable, str(EXAMPLES / "search_retrain_lookup.py"), str(table), "--out", str(tmp_path / "b"),
               cwd=tmp_path)
    assert "benchmark row: {" in out and "cifar10-test" in out


def test_combine_components(tmp_path):
    out = _run(sys.executable, str(EXAMPLES / "combine_components.py"), cwd=tmp_path)
    assert "name='hard-concrete'" in out and "name='amended'" in out
    assert "name='fisher'" in out and "name='lambda'" in out


def test_compare_grid(tmp_path):
    out = _run(sys.executable, str(EXAMPLES / "compare_grid.py"), "--out", str(tmp_path / "grid"), cwd=tmp_path)
    assert f"report.md: {tmp_path / 'grid' / 'report.md'} (written)" in out
    assert (tmp_path / "grid" / "summary.csv").read_text().count("\n") == 3  # header, darts, pr-darts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_search(tmp_path):
    bindir = tmp_path / "bin"  # torchrun from this interpreter, whatever is on PATH
    bindir.mkdir()
    (bindir / "torchrun").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m torch.distributed.run "$@"\n')
    (bindir / "torchrun").chmod(0o755)
    out = _run("bash", str(EXAMPLES / "torchrun_search.sh"), str(tmp_path / "ddp"), "2", cwd=tmp_path,
               PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", MASTER_PORT=str(_free_port()),
               DNAS_DIST_TIMEOUT="20")
    assert "nb201" in out
    assert (tmp_path / "ddp" / "results.json").is_file()
