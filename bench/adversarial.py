"""Adversarial input across every command and the Python API: each case must end with its exit status
(2 for refused input, with one error line, the last on stderr; 0 where dnas rightly goes on without
the hostile part), no traceback, no hang, and every file the user had unchanged.

    bench/adversarial.sh                        # every case (python bench/adversarial.py: the same)
    python bench/adversarial.py --only utf8     # the cases whose name contains "utf8"
    python bench/adversarial.py --list

A workspace is prepared once (a finished tiny search, an interrupted one, its genotype, a benchmark
table); each case copies what it needs into its own folder, plants its hostile input, snapshots the
user's files (sha256 of every regular file, and the listing), runs the command in a subprocess with
a timeout, and checks the outcome. The summary gives the count tried and passed, and each failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT = 90.0
PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
TINY = ["--epochs", "1", "--batch-size", "16", "channels=4", "layers=1", "max_images=64", "--threads", "1"]
NON_UTF8 = b"space: nb201\nmethod: d\xffarts\n\xfe\xfe\n"


@dataclass
class Case:
    name: str
    #: (workspace, case folder) -> argv after ``python -m dnas`` (or ["-c", code] for the API)
    argv: Callable[[Path, Path], list[str]]
    #: the exit status (or statuses) it may end with: 2 for refused input; 0 where dnas goes on without the
    #: hostile part (a corrupt line of a log is skipped, a broken run of a grid is reported as failed)
    expect_status: int | tuple[int, ...] = 2
    #: text the one line must contain (lowercase comparison)
    message: str = ""
    #: text the standard output must contain (cases that end with status 0)
    stdout: str = ""
    #: files (or folders) of the case folder that dnas itself wrote earlier in the case and may rewrite
    mutable: list[str] = field(default_factory=list)
    #: send SIGINT this many seconds after the start (None: no signal)
    interrupt_after: float | None = None
    #: extra files the case checks (besides everything in its folder)
    protect: list[str] = field(default_factory=list)


def _run(argv: list[str], cwd: Path, interrupt_after: float | None) -> tuple[int | None, str, str]:
    cmd = [PY, *argv] if argv[:1] == ["-c"] else [PY, "-m", "dnas", *argv]
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    try:
        if interrupt_after is not None:
            time.sleep(interrupt_after)
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err


def _snapshot(folder: Path) -> dict[str, str]:
    """sha256 (or the kind) of everything under ``folder``, by relative path; symlinks are not followed."""
    state = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                state[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                state[rel] = "dir"
            else:
                state[rel] = "special"
    return state


def check(case: Case, workspace: Path, folder: Path) -> str | None:
    """None when the case passes, else what went wrong."""
    argv = case.argv(workspace, folder)
    before = _snapshot(folder)
    outside = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in case.protect}
    status, out, err = _run(argv, folder, case.interrupt_after)
    after = _snapshot(folder)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    problems = []
    allowed = case.expect_status if isinstance(case.expect_status, tuple) else (case.expect_status,)
    if status is None:
        problems.append(f"hung (killed after {TIMEOUT:.0f} s)")
    elif status not in allowed:
        problems.append(f"exit {status}, not {' or '.join(map(str, allowed))}")
    if "Traceback" in err or "Traceback" in out:
        problems.append("traceback")
    if status not in (None, 0):  # an error or an interrupt: one line, the last (progress lines may come before)
        errors = [line for line in lines if line.startswith(("dnas: error:", "dnas: interrupted"))]
        python = [line for line in lines if re.match(r"^\s*\w*(Error|Exception|Interrupt|Warning)\b", line)]
        if len(errors) != 1 or lines[-1] != errors[0]:
            problems.append(f"{len(errors)} error lines of {len(lines)} on stderr")
        elif python:
            problems.append(f"python output: {python[0][:80]}")
        elif case.message and case.message.lower() not in errors[0].lower():
            problems.append(f"message lacks {case.message!r}")
        elif len(errors[0]) > 420:
            problems.append(f"a {len(errors[0])}-character line")
    if status == 0 and case.stdout and case.stdout not in out:
        problems.append(f"output lacks {case.stdout!r}")
    # dnas' own lock files get the pid of their latest holder; the mutable paths are dnas' own outputs
    changed = [p for p, h in before.items() if after.get(p) != h and Path(p).name != ".lock"
               and not any(p == m or p.startswith(m.rstrip("/") + "/") for m in case.mutable)]
    if changed:
        problems.append(f"changed or removed {changed[:3]}")
    for p, h in outside.items():
        if not Path(p).exists() or hashlib.sha256(Path(p).read_bytes()).hexdigest() != h:
            problems.append(f"changed {p}")
    if problems:
        return "; ".join(problems) + (f" | {lines[-1][:200]}" if lines else "")
    return None


# ----- the workspace ------------------------------------------------------------------------------------------
def prepare(workspace: Path) -> None:
    run = workspace / "run"
    done = subprocess.run([PY, "-m", "dnas", "search", "--quiet", *TINY, "--out", str(run)], env=ENV,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cannot prepare the workspace: {done.stderr}")
    interrupted = workspace / "partial"
    proc = subprocess.Popen([PY, "-m", "dnas", "search", "--quiet", "--epochs", "30", "--batch-size", "16",
                             "channels=4", "layers=1", "max_images=64", "--threads", "1", "checkpoint_every=1",
                             "--out", str(interrupted)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (interrupted / "checkpoint.pt").exists():
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    shutil.copy(run / "genotype.json", workspace / "genotype.json")
    lines = ["arch_str,cifar10-valid,cifar10-test"]
    lines.append(f"{json.loads((run / 'genotype.json').read_text())['arch_str']},90.0,91.0")
    (workspace / "table.csv").write_text("\n".join(lines) + "\n")


def _copy(workspace: Path, folder: Path, name: str) -> Path:
    target = folder / name
    if (workspace / name).is_dir():
        shutil.copytree(workspace / name, target)
    else:
        shutil.copy(workspace / name, target)
    return target


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _api(code: str) -> Callable[[Path, Path], list[str]]:
    """A Python snippet that must raise DnasError: printed as the CLI would, exit 2."""
    body = textwrap.indent(textwrap.dedent(code).strip(), "    ")
    wrapped = ("import sys\nimport dnas\ntry:\n" + body + "\nexcept dnas.DnasError as err:\n"
               "    print(f'dnas: error: {err}', file=sys.stderr)\n    sys.exit(2)\n"
               "print('dnas: no error raised', file=sys.stderr)\nsys.exit(0)\n")
    return lambda ws, d: ["-c", wrapped]


def cases() -> list[Case]:
    out: list[Case] = []

    def add(name: str, argv: Callable[[Path, Path], list[str]], **kw) -> None:
        out.append(Case(name, argv, **kw))

    # 1. the user's files: never counted as ours, never overwritten or removed
    def tb_failed_start(ws: Path, d: Path) -> list[str]:
        _write(d / "out" / "tensorboard" / "mine.txt", "user data")
        return ["search", *TINY, "w_lr=-1", "--out", str(d / "out")]
    add("own/tensorboard-folder-failed-start", tb_failed_start)

    def tb_ok_start(ws: Path, d: Path) -> list[str]:
        _write(d / "out" / "tensorboard" / "mine.txt", "user data")
        return ["search", *TINY, "--out", str(d / "out")]
    add("own/tensorboard-folder", tb_ok_start)

    def lock_link(ws: Path, d: Path) -> list[str]:
        _write(d / "precious.txt", "do not touch")
        (d / "out").mkdir()
        os.symlink(d / "precious.txt", d / "out" / ".lock")
        return ["search", *TINY, "--out", str(d / "out")]
    add("own/lock-symlink", lock_link)

    def lock_link_existing_run(ws: Path, d: Path) -> list[str]:
        run = _copy(ws, d, "partial")
        _write(d / "precious.txt", "do not touch")
        (run / ".lock").unlink(missing_ok=True)
        os.symlink(d / "precious.txt", run / ".lock")
        return ["search", "--quiet", "--epochs", "30", "--batch-size", "16", "channels=4", "layers=1",
                "max_images=64", "--threads", "1", "checkpoint_every=1", "--out", str(run)]
    add("own/lock-symlink-in-a-run", lock_link_existing_run)

    def lock_dir(ws: Path, d: Path) -> list[str]:
        (d / "out" / ".lock").mkdir(parents=True)
        return ["search", *TINY, "--out", str(d / "out")]
    add("own/lock-is-a-folder", lock_dir)

    for name in ("report.md", "index.html", "summary.csv", "per_run.csv", "curves.csv", "compare.yaml"):
        def compare_over(ws: Path, d: Path, name=name) -> list[str]:
            _write(d / "grid" / name, "user file")
            return ["compare", "--space", "nb201", "--methods", "darts", "--seeds", "0", "--epochs", "1",
                    "--batch-size", "16", "--threads", "1", "--quiet", "channels=4", "layers=1", "max_images=64",
                    "--out", str(d / "grid")]
        add(f"own/compare-over-user-{name}", compare_over)

    def report_over(ws: Path, d: Path) -> list[str]:
        run = _copy(ws, d, "run")
        _write(d / "rep" / "index.html", "user page")
        return ["report", str(run), "--out", str(d / "rep")]
    add("own/report-over-user-index", report_over)

    def report_default_over(ws: Path, d: Path) -> list[str]:
        run = _copy(ws, d, "run")
        _write(d / "run-report" / "index.html", "user page")
        return ["report", str(run)]
    add("own/report-default-folder-user-index", report_default_over)

    def report_out_file(ws: Path, d: Path) -> list[str]:
        run = _copy(ws, d, "run")
        _write(d / "rep.txt", "user file")
        return ["report", str(run), "--out", str(d / "rep.txt")]
    add("own/report-out-is-a-user-file", report_out_file)

    for suffix in ("_normal.svg", "_reduce.svg"):
        def draw_derived(ws: Path, d: Path, suffix=suffix) -> list[str]:
            _write(d / f"cell{suffix}", "<svg>user</svg>")
            return ["draw", "DARTS_V2", "--out", str(d / "cell.svg")]
        add(f"own/draw-derived{suffix}", draw_derived)

    def draw_over(ws: Path, d: Path) -> list[str]:
        _write(d / "cell.svg", "<svg>user</svg>")
        return ["draw", str(ws / "genotype.json"), "--out", str(d / "cell.svg")]
    add("own/draw-over-user-svg", draw_over)

    def draw_default_over(ws: Path, d: Path) -> list[str]:
        _write(d / "darts_v2_normal.svg", "<svg>user</svg>")
        return ["draw", "DARTS_V2"]
    add("own/draw-default-name-over-user", draw_default_over)

    def train_over(ws: Path, d: Path) -> list[str]:
        _write(d / "out" / "notes.txt", "mine")
        return ["train", str(ws / "genotype.json"), "--epochs", "1", "--out", str(d / "out")]
    add("own/train-out-holds-user-files", train_over)

    for name in ("metrics.jsonl", "genotype.json", "results.json", "env.json", "checkpoint.pt"):
        def search_over(ws: Path, d: Path, name=name) -> list[str]:
            _write(d / "out" / name, "user file")
            return ["search", *TINY, "--out", str(d / "out")]
        add(f"own/search-out-holds-user-{name}", search_over)

    def out_is_file(ws: Path, d: Path) -> list[str]:
        _write(d / "out", "a file")
        return ["search", *TINY, "--out", str(d / "out")]
    add("own/search-out-is-a-file", out_is_file)

    def edited_config(ws: Path, d: Path) -> list[str]:
        run = _copy(ws, d, "partial")
        text = (run / "config.yaml").read_text().replace("space: nb201", "space: darts")
        (run / "config.yaml").write_text(text)
        return ["search", "--quiet", "--epochs", "30", "--batch-size", "16", "channels=4", "layers=1",
                "max_images=64", "--threads", "1", "checkpoint_every=1", "--out", str(run)]
    add("own/config-edited-by-hand-resume", edited_config, message="config.yaml")

    def edited_layers(ws: Path, d: Path) -> list[str]:
        run = _copy(ws, d, "partial")
        text = (run / "config.yaml").read_text().replace("layers: 1", "layers: 3")
        (run / "config.yaml").write_text(text)
        return ["search", "--quiet", "--epochs", "30", "--batch-size", "16", "channels=4", "layers=1",
                "max_images=64", "--threads", "1", "checkpoint_every=1", "--out", str(run)]
    add("own/config-layers-edited-resume", edited_layers, message="config.yaml")

    def edited_report(ws: Path, d: Path) -> list[str]:
        run = _copy(ws, d, "run")
        text = (run / "config.yaml").read_text().replace("space: nb201", "space: darts")
        (run / "config.yaml").write_text(text)
        return ["report", str(run), "--out", str(d / "rep")]
    add("own/config-edited-report", edited_report)

    # 2. text that is not text
    def utf8_file(name: str, command: Callable[[Path, Path, Path], list[str]], source: str | None = None):
        def argv(ws: Path, d: Path) -> list[str]:
            target = _copy(ws, d, source) if source else d
            path = target / name if source else d / name
            data = path.read_bytes() if path.exists() else b""
            _write(path, data[: len(data) // 2] + b"\xff\xfe\x80 bad" + data[len(data) // 2:])
            return command(ws, d, target)
        return argv

    add("utf8/search-config", lambda ws, d: ["search", "--config", str(_write(d / "c.yaml", NON_UTF8)),
                                             "--out", str(d / "o")])
    add("utf8/train-config", lambda ws, d: ["train", str(ws / "genotype.json"), "--config",
                                            str(_write(d / "c.yaml", NON_UTF8)), "--out", str(d / "o")])
    add("utf8/compare-config", lambda ws, d: ["compare", "--config", str(_write(d / "c.yaml", NON_UTF8)),
                                              "--out", str(d / "o")])
    add("utf8/query-table", lambda ws, d: ["query", "--table", str(_write(d / "t.csv", b"arch_str,x\n\xff\xfe,1\n")),
                                           "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|"
                                           "skip_connect~1|skip_connect~2|"])
    add("utf8/search-benchmark-table", lambda ws, d: ["search", *TINY, "benchmark_table=" + str(
        _write(d / "t.csv", b"arch_str,cifar10-test\n\xff\xfe,1\n")), "--out", str(d / "o")])
    add("utf8/train-genotype", lambda ws, d: ["train", str(_write(d / "g.json", b'{"space": "nb\xff201"}')),
                                              "--out", str(d / "o")])
    add("utf8/query-genotype", lambda ws, d: ["query", str(_write(d / "g.json", b'{"space": "nb\xff201"}')),
                                              "--table", str(ws / "table.csv")])
    add("utf8/draw-genotype", lambda ws, d: ["draw", str(_write(d / "g.json", b'{"space": "nb\xff201"}')),
                                             "--out", str(d / "x.svg")])
    for name in ("metrics.jsonl", "results.json", "config.yaml", "env.json", "genotype.json"):
        add(f"utf8/report-run-{name}", utf8_file(name, lambda ws, d, run: [
            "report", str(run), "--out", str(d / "rep")], "run"), expect_status=(0, 2))
        add(f"utf8/draw-run-{name}", utf8_file(name, lambda ws, d, run: [
            "draw", str(run), "--out", str(d / "x.svg")], "run"), expect_status=(0, 2))
        add(f"utf8/guard-run-{name}", utf8_file(name, lambda ws, d, run: ["guard", "skip", str(run)], "run"),
            expect_status=(0, 2))
    for name, status in (("metrics.jsonl", (0, 2)), ("config.yaml", 2), ("env.json", (0, 2))):
        # a run's log and environment record are dnas' own: resuming may rewrite them (the log from the checkpoint's
        # offset); its configuration must be readable, it is checked against the checkpoint
        add(f"utf8/resume-{name}", utf8_file(name, lambda ws, d, run: [
            "search", "--quiet", "--epochs", "30", "--batch-size", "16", "channels=4", "layers=1",
            "max_images=64", "--threads", "1", "checkpoint_every=1", "--out", str(run)], "partial"),
            expect_status=status, mutable=["partial"] if status != 2 else [])

    def grid_with_broken_run(ws: Path, d: Path) -> list[str]:
        grid = d / "grid"
        args = ["compare", "--space", "nb201", "--methods", "darts", "--seeds", "0,1", "--epochs", "1",
                "--batch-size", "16", "--threads", "1", "--quiet", "channels=4", "layers=1", "max_images=64",
                "--out", str(grid)]
        subprocess.run([PY, "-m", "dnas", *args], env=ENV, capture_output=True)
        results = grid / "runs" / "darts-s1" / "results.json"
        results.write_bytes(b"\xff\xfe" + results.read_bytes())
        return args
    add("utf8/compare-grid-with-a-broken-run", grid_with_broken_run, expect_status=0, stdout="failed",
        mutable=[f"grid/{name}" for name in ("index.html", "summary.csv", "report.md", "per_run.csv", "curves.csv",
                                             "compare.yaml", ".dnas-files", "reports")])

    # 3. sizes beyond reason
    for key, value in (("channels", "100000"), ("image_size", "20000"), ("layers", "100000"),
                       ("channels", "4096"), ("batch_size", "100000000")):
        add(f"size/search-{key}-{value}", lambda ws, d, k=key, v=value: [
            "search", "--epochs", "1", "--batch-size", "16", f"{k}={v}", "--out", str(d / "o")])
    add("size/search-batch", lambda ws, d: ["search", "--epochs", "1", "--batch-size", "1000000000", "--out",
                                            str(d / "o")])
    add("size/train-channels", lambda ws, d: ["train", str(ws / "genotype.json"), "--epochs", "1", "channels=100000",
                                              "dataset=digits", "--out", str(d / "o")])
    add("size/train-batch", lambda ws, d: ["train", str(ws / "genotype.json"), "--epochs", "1",
                                           "batch_size=1000000000", "dataset=digits", "--out", str(d / "o")])
    for seed in ("18446744073709551616", "100000000000000000000000000000", "-1"):
        add(f"size/seed-{seed[:6]}", lambda ws, d, s=seed: ["search", *TINY, f"seed={s}", "--out", str(d / "o")])
        add(f"size/compare-seeds-{seed[:6]}", lambda ws, d, s=seed: [
            "compare", "--methods", "darts", "--seeds", s, "--out", str(d / "o")])
    for threads in ("5000", "100000", "0", "-2"):
        add(f"size/threads-{threads}", lambda ws, d, t=threads: ["search", *TINY[:-2], "--threads", t, "--out",
                                                                 str(d / "o")])
    add("size/compare-jobs", lambda ws, d: ["compare", "--methods", "darts", "--jobs", "100000", "--epochs", "1",
                                            "--batch-size", "16", "channels=4", "layers=1", "max_images=64",
                                            "--out", str(d / "o")])
    add("size/json-depth-genotype", lambda ws, d: ["train", str(_write(d / "g.json", "[" * 100000 + "]" * 100000)),
                                                   "--out", str(d / "o")])
    add("size/json-depth-draw", lambda ws, d: ["draw", str(_write(d / "g.json", "[" * 100000 + "]" * 100000)),
                                               "--out", str(d / "x.svg")])

    def deep_results(ws: Path, d: Path) -> list[str]:
        run = _copy(ws, d, "run")
        _write(run / "results.json", "{\"a\":" * 100000 + "1" + "}" * 100000)
        return ["report", str(run), "--out", str(d / "rep")]
    add("size/json-depth-results", deep_results, expect_status=(0, 2))  # the report leaves the results out
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))
    add("size/yaml-alias-bomb-search", lambda ws, d: ["search", "--config", str(_write(d / "c.yaml", bomb)),
                                                      "--out", str(d / "o")])
    add("size/yaml-alias-bomb-compare", lambda ws, d: ["compare", "--config", str(_write(d / "c.yaml", bomb)),
                                                       "--out", str(d / "o")])
    many = "".join(f"k{i}: {i}\n" for i in range(200000))
    add("size/yaml-200k-keys", lambda ws, d: ["search", "--config", str(_write(d / "c.yaml", many)),
                                              "--out", str(d / "o")])
    add("size/yaml-huge-file", lambda ws, d: ["search", "--config", str(_write(d / "c.yaml", "# " + "x" * 60_000_000)),
                                              "--out", str(d / "o")])
    add("size/json-huge-genotype", lambda ws, d: ["train", str(_write(d / "g.json", '{"x": "' + "y" * 60_000_000
                                                                      + '"}')), "--out", str(d / "o")])
    long_name = "n" * 300
    add("size/long-out-search", lambda ws, d: ["search", *TINY, "--out", str(d / long_name)])
    add("size/long-out-train", lambda ws, d: ["train", str(ws / "genotype.json"), "--out", str(d / long_name)])
    add("size/long-out-report", lambda ws, d: ["report", str(_copy(ws, d, "run")), "--out", str(d / long_name)])
    add("size/long-out-draw", lambda ws, d: ["draw", "DARTS_V2", "--out", str(d / (long_name + ".svg"))])
    add("size/long-out-compare", lambda ws, d: ["compare", "--methods", "darts", "--out", str(d / long_name)])
    add("size/long-config-path", lambda ws, d: ["search", "--config", str(d / long_name / "c.yaml")])
    add("size/table-many-rows-label", lambda ws, d: ["query", "--table", str(_write(
        d / "t.csv", "arch_str,cifar10-test\n" + "|x~0|,1e400\n")), "DARTS_V2"])

    # 4. inputs that never end
    add("fifo/search-config", lambda ws, d: ["search", "--config", str(_fifo(d / "c.yaml")), "--out", str(d / "o")])
    add("fifo/train-genotype", lambda ws, d: ["train", str(_fifo(d / "g.json")), "--out", str(d / "o")])
    add("fifo/query-table", lambda ws, d: ["query", "--table", str(_fifo(d / "t.csv")), "DARTS_V2"])
    add("fifo/draw-genotype", lambda ws, d: ["draw", str(_fifo(d / "g.json")), "--out", str(d / "x.svg")])
    add("fifo/search-benchmark-table", lambda ws, d: ["search", *TINY, f"benchmark_table={_fifo(d / 't.csv')}",
                                                      "--out", str(d / "o")])
    add("fifo/compare-config", lambda ws, d: ["compare", "--config", str(_fifo(d / "c.yaml")), "--out",
                                              str(d / "o")])
    add("fifo/dataset", lambda ws, d: ["search", *TINY, "--dataset", str(_fifo(d / "data.csv")), "--out",
                                       str(d / "o")])
    add("dev/search-config-zero", lambda ws, d: ["search", "--config", "/dev/zero", "--out", str(d / "o")])
    add("dev/train-genotype-urandom", lambda ws, d: ["train", "/dev/urandom", "--out", str(d / "o")])
    add("dev/query-table-zero", lambda ws, d: ["query", "--table", "/dev/zero", "DARTS_V2"])
    add("dev/draw-genotype-zero", lambda ws, d: ["draw", "/dev/zero", "--out", str(d / "x.svg")])

    def report_metrics_fifo(ws: Path, d: Path) -> list[str]:
        run = _copy(ws, d, "run")
        (run / "metrics.jsonl").unlink()
        _fifo(run / "metrics.jsonl")
        return ["report", str(run), "--out", str(d / "rep")]
    add("fifo/report-run-metrics", report_metrics_fifo)

    # 5. well-formed but wrong
    def bad_checkpoint(payload: str) -> Callable[[Path, Path], list[str]]:
        def argv(ws: Path, d: Path) -> list[str]:
            run = _copy(ws, d, "partial")
            code = f"import torch; s = torch.load({str(run / 'checkpoint.pt')!r}, weights_only=True); {payload}; " \
                   f"torch.save(s, {str(run / 'checkpoint.pt')!r})"
            subprocess.run([PY, "-c", code], check=True, env=ENV)
            return ["search", "--quiet", "--epochs", "30", "--batch-size", "16", "channels=4", "layers=1",
                    "max_images=64", "--threads", "1", "checkpoint_every=1", "--out", str(run)]
        return argv
    for label, payload in (("no-alphas", "s.pop('alphas')"), ("no-net", "s.pop('net')"),
                           ("alphas-shape", "s['alphas']['cell'] = torch.zeros(3, 3)"),
                           ("net-shape", "k = next(iter(s['net'])); s['net'][k] = torch.zeros(1)"),
                           ("net-type", "s['net'] = 'hello'"), ("epoch-type", "s['epoch'] = 'x'"),
                           ("rng-type", "s['rng'] = [1, 2]"), ("meters", "s['meters'] = {}"),
                           ("streams", "s['streams'] = {'train': {}}"), ("w-opt", "s['w_opt'] = {'state': 3}"),
                           ("config-type", "s['config'] = 5"), ("only-format", "s = {'format': 3, 'kind': 'search'}"),
                           ("components", "s['components'] = 'x'"), ("step-negative", "s['global_step'] = -5")):
        add(f"wrong/checkpoint-{label}", bad_checkpoint(payload))

    def results_missing(key: str) -> Callable[[Path, Path], list[str]]:
        def argv(ws: Path, d: Path) -> list[str]:
            run = _copy(ws, d, "run")
            data = json.loads((run / "results.json").read_text())
            data.pop(key, None)
            (run / "results.json").write_text(json.dumps(data))
            return ["report", str(run), "--out", str(d / "rep")]
        return argv
    for key in ("genotype", "strengths", "steps"):  # the report shows the run without its results (or refuses)
        add(f"wrong/report-results-without-{key}", results_missing(key), expect_status=(0, 2))

    def metrics_wrong(ws: Path, d: Path) -> list[str]:
        run = _copy(ws, d, "run")
        (run / "metrics.jsonl").write_text('{"kind": "epoch"}\n{"kind": "step", "step": "x"}\n[1,2]\n')
        return ["report", str(run), "--out", str(d / "rep")]
    add("wrong/report-metrics-missing-keys", metrics_wrong)

    def results_list(ws: Path, d: Path) -> list[str]:
        run = _copy(ws, d, "run")
        (run / "results.json").write_text("[1, 2, 3]")
        return ["report", str(run), "--out", str(d / "rep")]
    add("wrong/report-results-a-list", results_list, expect_status=(0, 2))

    bad_genotypes = {
        "unknown-op": {"space": "nb201", "cell": [["laser", 0]] * 6},
        "input-range": {"space": "nb201", "cell": [["nor_conv_3x3", 9]] * 6},
        "negative-input": {"space": "nb201", "cell": [["nor_conv_3x3", -1]] * 6},
        "short": {"space": "nb201", "cell": [["nor_conv_3x3", 0]]},
        "wrong-types": {"space": "nb201", "cell": [[1, "a"]] * 6},
        "darts-unknown-op": {"space": "darts", "normal": [["laser", 0]] * 8, "reduce": [["skip_connect", 0]] * 8,
                             "normal_concat": [2, 3, 4, 5], "reduce_concat": [2, 3, 4, 5]},
        "darts-concat": {"space": "darts", "normal": [["skip_connect", 0]] * 8, "reduce": [["skip_connect", 0]] * 8,
                         "normal_concat": [99], "reduce_concat": [2]},
        "unknown-space": {"space": "moon", "cell": []},
        "a-list": [1, 2, 3],
        "a-number": 7,
    }
    for label, genotype in bad_genotypes.items():
        for command in ("train", "query", "draw"):
            def argv(ws: Path, d: Path, g=genotype, c=command) -> list[str]:
                path = _write(d / "g.json", json.dumps(g))
                tail = {"train": ["--out", str(d / "o")], "query": ["--table", str(ws / "table.csv")],
                        "draw": ["--out", str(d / "x.svg")]}[c]
                return [c, str(path), *tail]
            add(f"wrong/genotype-{label}-{command}", argv)

    def zip_encrypted(ws: Path, d: Path) -> list[str]:
        path = d / "data.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("a/x.png", b"\x89PNG....")
        raw = bytearray(path.read_bytes())
        raw[6] |= 1  # the local header's "encrypted" flag
        central = raw.rfind(b"PK\x01\x02")
        raw[central + 8] |= 1
        path.write_bytes(bytes(raw))
        return ["search", *TINY, "--dataset", str(path), "--out", str(d / "o")]
    add("wrong/dataset-encrypted-zip", zip_encrypted)

    # 6. options and the API
    for key, value in (("w_lr", "nan"), ("a_lr", "inf"), ("w_lr", "-inf"), ("grad_clip", "nan"),
                       ("w_momentum", "nan"), ("train_portion", "nan"), ("a_lr", "1e400"), ("cutout", "-3"),
                       ("log_every", "0"), ("checkpoint_every", "-1"), ("hessian_every", "-2"),
                       ("alignment_every", "99999999999999999999"), ("log_every", "99999999999999999999"),
                       ("w_weight_decay", "nan"), ("epochs", "0"), ("image_size", "2"), ("channels", "1.5"),
                       ("channels", "true"), ("layers", "[1,2]"), ("seed", "nan"), ("max_images", "-5"),
                       ("activation.init_std", "nan"), ("schedule.f", "inf"), ("estimator.eta", "nan"),
                       ("activation", "laser"), ("crop_padding", "-1"), ("batch_size", "0")):
        add(f"option/search-{key}={value}", lambda ws, d, k=key, v=value: ["search", *TINY, f"{k}={v}", "--out",
                                                                            str(d / "o")])
    for key, value in (("lr", "nan"), ("epochs", "0"), ("drop_path_prob", "nan"), ("drop_path_prob", "2"),
                       ("batch_size", "0"), ("weight_decay", "inf"), ("cutout", "-1"), ("label_smoothing", "nan"),
                       ("auxiliary_weight", "inf"), ("channels", "0")):
        add(f"option/train-{key}={value}", lambda ws, d, k=key, v=value: [
            "train", str(ws / "genotype.json"), "--epochs", "1", f"{k}={v}", "--out", str(d / "o")])
    for flag, value in (("--epochs", "nan"), ("--epochs", "-1"), ("--batch-size", "0"), ("--seeds", "a,b"),
                        ("--seeds", ""), ("--seeds", "1,,2"), ("--jobs", "0"), ("--jobs", "-3")):
        add(f"option/compare{flag}={value or 'empty'}", lambda ws, d, f=flag, v=value: [
            "compare", "--methods", "darts", "--epochs", "1", "--batch-size", "16", "channels=4", "layers=1",
            "max_images=64", f, v, "--out", str(d / "o")])
    add("option/report-interval-nan", lambda ws, d: ["report", str(_copy(ws, d, "run")), "--watch", "--interval",
                                                     "nan", "--out", str(d / "rep")])
    add("option/report-interval-negative", lambda ws, d: ["report", str(_copy(ws, d, "run")), "--watch",
                                                          "--interval", "-1", "--out", str(d / "rep")])
    add("option/guard-unknown", lambda ws, d: ["guard", "laser", str(_copy(ws, d, "run"))])
    add("option/guard-param", lambda ws, d: ["guard", "margin", str(_copy(ws, d, "run")), "patience=nan"])
    add("option/guard-not-a-run", lambda ws, d: ["guard", "skip", str(d)])
    add("option/report-not-a-run", lambda ws, d: ["report", str(d), "--out", str(d / "rep")])
    add("option/methods-show-unknown", lambda ws, d: ["methods", "--show", "laser"])
    add("option/query-unknown-name", lambda ws, d: ["query", "LASER", "--table", str(ws / "table.csv")])

    add("api/search-space-int", _api("dnas.search(space=3, epochs=1)"))
    add("api/search-epochs-str", _api("dnas.search(epochs='x')"))
    add("api/search-overrides-int", _api("dnas.search(epochs=1, overrides=5)"))
    add("api/search-unknown-kw", _api("dnas.search(colour='red')"))
    add("api/train-int", _api("dnas.train(42)"))
    add("api/query-int", _api("dnas.query(123, 't.csv')"))
    add("api/query-none", _api("dnas.query(None, 't.csv')"))
    add("api/compare-methods-int", _api("dnas.compare('nb201', 5, seeds=[0], epochs=1)"))
    add("api/compare-seeds-str", _api("dnas.compare('nb201', ['darts'], seeds='0', epochs=1)"))
    add("api/resolve-config-str", _api("dnas.resolve_config('x')"))
    add("api/resolve-config-overrides-str", _api("dnas.resolve_config({}, 'epochs=1')"))
    add("api/search-algorithm-before-open", _api("""
        import tempfile
        cfg = dnas.resolve_config({'epochs': 1, 'batch_size': 16}, ['channels=4', 'layers=1', 'max_images=64'])
        dnas.Search(cfg, tempfile.mkdtemp() + '/r', progress=False).algorithm"""))
    add("api/search-finish-before-done", _api("""
        import tempfile
        cfg = dnas.resolve_config({'epochs': 1, 'batch_size': 16}, ['channels=4', 'layers=1', 'max_images=64'])
        s = dnas.Search(cfg, tempfile.mkdtemp() + '/r', progress=False).open(); s.finish()"""))
    add("api/search-cfg-dict", _api("import tempfile; dnas.Search({'epochs': 1}, tempfile.mkdtemp()).run()"))
    add("api/searchstep-cfg-none", _api("dnas.SearchStep(None)"))
    add("api/genotype-from-dict-bad", _api("dnas.Genotype.from_dict({'space': 'nb201', 'cell': 5})"))
    add("api/genotype-parse-bad", _api("dnas.Genotype.from_dict('|x~0|')"))
    add("api/trainer-cfg-str", _api("import tempfile; dnas.Trainer('x', None, tempfile.mkdtemp()).run()"))
    add("api/train-genotype-wrong-space", _api("dnas.train('DARTS_V2', space='nb201', epochs=1)"))
    add("api/read-metrics-int", _api("dnas.read_metrics(5)"))

    # 7. signals at start-up and in workers
    add("signal/ctrl-c-during-import", lambda ws, d: ["search", *TINY, "--out", str(d / "o")], expect_status=130,
        interrupt_after=0.3)
    add("signal/ctrl-c-during-search", lambda ws, d: ["search", "--epochs", "500", "--batch-size", "16", "channels=4",
                                                      "layers=1", "max_images=64", "--threads", "1", "--out",
                                                      str(d / "o")], expect_status=2, interrupt_after=8,
        message="interrupted")
    add("signal/ctrl-c-compare-jobs-2", lambda ws, d: [
        "compare", "--space", "nb201", "--methods", "darts,gdas", "--seeds", "0", "--epochs", "500",
        "--batch-size", "16", "--threads", "1", "--jobs", "2", "--quiet", "channels=4", "layers=1",
        "max_images=64", "--out", str(d / "grid")], expect_status=2, interrupt_after=15, message="interrupted")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the case folders")
    args = parser.parse_args()
    selected = [c for c in cases() if args.only in c.name]
    if args.list:
        print("\n".join(c.name for c in selected))
        return
    print(f"# load average before: {os.getloadavg()}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="dnas-adversarial-"))
    workspace = root / "workspace"
    workspace.mkdir()
    prepare(workspace)
    failures = []
    start = time.time()
    for i, case in enumerate(selected, 1):
        folder = root / f"case{i:03d}"
        folder.mkdir()
        try:
            problem = check(case, workspace, folder)
        except Exception as err:  # noqa: BLE001 - the harness reports its own errors per case
            problem = f"harness error: {type(err).__name__}: {err}"
        status = "ok" if problem is None else f"FAIL {problem}"
        print(f"[{i}/{len(selected)}] {case.name}: {status}", flush=True)
        if problem is not None:
            failures.append((case.name, problem))
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{len(selected) - len(failures)} of {len(selected)} cases passed ({time.time() - start:.0f} s)")
    for name, problem in failures:
        print(f"  {name}: {problem}")
    print(f"# load average after: {os.getloadavg()}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
