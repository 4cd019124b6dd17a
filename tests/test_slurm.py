"""`dnas compare --executor slurm`: submitit job arrays, waiting or not, collection, requeue from checkpoints.

Jobs run through submitit's local cluster (``SlurmOptions(cluster="local")``: the same code path,
jobs as processes of this machine)."""

import csv
import functools
import json
import os
import signal
import sys
import time

import pytest

import dnas.cli.compare
from dnas.cli import main
from dnas.config.search import SearchConfig
from dnas.grid import Compare, SlurmOptions, parse_methods
from dnas.grid.slurm import INSTALL_HINT, SearchJob

submitit = pytest.importorskip("submitit", reason="submitit not installed (pip install -e '.[cluster]')")
LOCAL = SlurmOptions(cluster="local")


def _statuses(out):
    with open(out / "per_run.csv", newline="") as f:
        return {f"{r['entry']}-s{r['seed']}": r["status"] for r in csv.DictReader(f)}


def _strengths(run_dir):
    return json.loads((run_dir / "results.json").read_text())["strengths"]


def _grid(out, tiny, epochs=1, extra=(), slurm=LOCAL, **kwargs):
    return Compare("nb201", parse_methods("darts"), kwargs.pop("seeds", [0, 1]), out,
                   flags={"epochs": epochs, "batch_size": 16}, overrides=[*tiny, *extra], slurm=slurm,
                   progress=False, echo=kwargs.pop("echo", lambda line: None), **kwargs)


def _uninterrupted(cfg: SearchConfig, out):
    from dnas.bilevel.run import Search

    Search(cfg, out, progress=False).run()
    return _strengths(out)


def test_without_submitit_the_slurm_executor_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    out = tmp_path / "cmp"
    assert main(["compare", "--executor", "slurm", "--methods", "darts", "--seeds", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"dnas: error: {INSTALL_HINT}\n"
    assert not out.exists()


@pytest.mark.parametrize("args,message", [
    (["--slurm-gpus", "1"], "--slurm-gpus applies only to --executor slurm"),
    (["--no-wait"], "--no-wait applies only to --executor slurm"),
    (["--executor", "slurm", "--slurm-time", "0"], "--slurm-time and --slurm-cpus >= 1"),
])
def test_slurm_option_errors_are_one_sentence(args, message, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "darts", "--seeds", "0", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_the_checkpoint_hook_requeues_the_same_call():
    job = SearchJob()
    again = job.checkpoint("cfg", "out", 3)
    assert again.function is job and again.args == ("cfg", "out", 3) and again.kwargs == {}


@pytest.mark.slow
def test_jobs_run_the_grid_and_a_preempted_run_resumes_from_its_checkpoint(tmp_path, tiny):
    from dnas.bilevel.run import Search

    out = tmp_path / "cmp"
    compare = _grid(out, tiny, epochs=2, extra=["checkpoint_every=2"])
    preempted = compare.runs[0]
    search = Search(preempted.cfg, preempted.out, progress=False).open()  # a job that died at step 3
    for _ in range(3):
        search.step()
    search.close()
    started = json.loads((preempted.out / "env.json").read_text())
    report = compare.run()
    assert [r.status for r in report.records] == ["ok", "ok"]
    assert json.loads((preempted.out / "env.json").read_text()) == started  # resumed, not started over
    assert _strengths(preempted.out) == _uninterrupted(preempted.cfg, tmp_path / "fresh")
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert jobs["cluster"] == "local" and sorted(jobs["jobs"]) == ["darts-s0", "darts-s1"]


@pytest.mark.slow
def test_no_wait_returns_at_once_and_the_same_command_collects(tmp_path, monkeypatch, capsys, tiny):
    monkeypatch.setattr(dnas.cli.compare, "SlurmOptions", functools.partial(SlurmOptions, cluster="local"))
    out = tmp_path / "cmp"
    command = ["compare", "--executor", "slurm", "--methods", "darts", "--seeds", "0,1", "--epochs", "1",
               "--batch-size", "16", "--quiet", "--out", str(out), *tiny]
    assert main([*command, "--no-wait"]) == 0
    err = capsys.readouterr().err
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())["jobs"]
    assert f"submitted 2 runs as Slurm jobs {jobs['darts-s0']}, {jobs['darts-s1']}" in err
    assert "run the same command again to collect" in err
    assert _statuses(out) == {name: f"not finished: queued or running as Slurm job {job}"
                              for name, job in jobs.items()}
    assert main(command) == 0  # waits for the jobs of the first call (or finds them finished): no new job
    assert "dnas compare: submitted" not in capsys.readouterr().err
    assert json.loads((out / "slurm" / "jobs.json").read_text())["jobs"] == jobs
    assert len(list((out / "slurm").glob("*_submitted.pkl"))) == 2
    assert _statuses(out) == {"darts-s0": "ok", "darts-s1": "ok"}


@pytest.mark.slow
def test_a_job_at_its_time_limit_is_requeued_and_resumes(tmp_path, tiny):
    # with a 1-minute limit, submitit takes the warning signal for the time limit (not a preemption): only a
    # checkpointable job is requeued then
    one_minute = SlurmOptions(cluster="local", time=1)
    out = tmp_path / "cmp"
    compare = _grid(out, tiny, epochs=10, extra=["checkpoint_every=2"], slurm=one_minute, seeds=[0], wait=False)
    compare.run()
    run = compare.runs[0]
    deadline = time.monotonic() + 180
    while not (run.out / "checkpoint.pt").exists():  # mid-search: 2 of 50 steps done
        assert time.monotonic() < deadline, "the job did not start its search"
        time.sleep(0.05)
    os.kill(int((run.out / ".lock").read_text()), signal.SIGUSR2)  # what Slurm sends before the time limit
    report = _grid(out, tiny, epochs=10, extra=["checkpoint_every=2"], slurm=one_minute, seeds=[0]).run()
    assert report.records[0].ok
    (log,) = (out / "slurm").glob("*_0_log.out")  # submitit's own log of the job
    assert "Requeued job" in log.read_text()
    assert _strengths(run.out) == _uninterrupted(run.cfg, tmp_path / "fresh")
