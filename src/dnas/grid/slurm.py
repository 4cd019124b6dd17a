"""Running the runs of a grid on a Slurm cluster: one job per unfinished run, submitted as one job array
through ``submitit`` (optional: ``pip install "dnas[cluster]"``).

- **Submit.** Every unfinished run that has no job queued or running gets one; the jobs are one
  array (``--jobs N`` limits how many run at once). Each job runs or resumes the run's search in
  its run directory, with ``threads`` torch threads (default: the job's CPUs).
- **Preemption and time limits.** A job is checkpointable in submitit's sense: when Slurm announces
  a preemption or the time limit, submitit requeues the same job, which resumes the search from its
  last checkpoint (written every ``checkpoint_every`` steps and at every epoch end).
- **Wait or not.** By default the grid waits for its jobs and reports each as it ends; Ctrl-C stops
  the waiting, not the jobs. With ``wait=False`` (``--no-wait``) it returns at once; the job ids are
  in ``OUT/slurm/jobs.json``, and the same command later collects finished runs, leaves the jobs
  still queued or running alone, submits the runs whose jobs ended unfinished (they resume from
  their checkpoints) and writes the report.

``cluster="local"`` (submitit's local executor) runs the jobs as processes of this machine: the
same code path without Slurm, for tests and debugging. Its jobs can be seen as running only by the
process that submitted them; another process takes them for ended.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnas.errors import DnasError, Interrupted
from dnas.grid.run import Done, Run, execute
from dnas.runtime.reading import read_json

INSTALL_HINT = 'the Slurm executor needs submitit: pip install "dnas[cluster]" (or pip install submitit)'
JOBS = "jobs.json"
#: seconds between two looks at the jobs while waiting (submitit itself spaces its calls to sacct)
POLL = 1.0
#: jobs submitted by this process, so that a second call in the same process sees them running
_SUBMITTED: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True)
class SlurmOptions:
    """The resources of every job: ``partition`` (None: the cluster's default), ``gpus`` per job,
    ``time`` limit in minutes, ``cpus`` per job, ``mem`` in GB (None: the cluster's default).
    ``cluster``: submitit's cluster name, ``slurm`` or ``local`` (local processes, see the module docstring)."""

    partition: str | None = None
    gpus: int = 0
    time: int = 60
    cpus: int = 1
    mem: float | None = None
    cluster: str = "slurm"

    def check(self) -> None:
        if self.gpus < 0 or self.time < 1 or self.cpus < 1 or (self.mem is not None and self.mem <= 0):
            raise DnasError(f"--slurm-gpus must be >= 0, --slurm-time and --slurm-cpus >= 1 and --slurm-mem > 0, got "
                            f"{self.gpus}, {self.time}, {self.cpus} and {self.mem}")
        if self.cluster not in ("slurm", "local"):
            raise DnasError(f"unknown submitit cluster {self.cluster!r}; use slurm or local")


def submitit_module():
    """``import submitit``, or one sentence saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise DnasError(INSTALL_HINT) from None
    return submitit


class SearchJob:
    """One run of the grid as a job: ``job(cfg, out, threads)`` runs or resumes its search and returns
    None (finished) or the reason it did not finish. Checkpointable: see :meth:`checkpoint`."""

    def __call__(self, cfg, out: str, threads: int) -> str | None:
        import torch

        torch.set_num_threads(threads)
        try:
            return execute(cfg, Path(out))
        except Interrupted as err:  # SIGTERM: scancel or a preemption; the search saved its checkpoint
            return str(err)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's hook when Slurm preempts the job or its time runs out: requeue the same call, which
        resumes the search from its last checkpoint."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


class SlurmExecutor:
    """Submit, follow and collect the jobs of a grid; their files go to ``folder`` (``OUT/slurm``)."""

    def __init__(self, options: SlurmOptions, folder: Path, jobs: int | None, threads: int | None, echo):
        options.check()
        self.submitit = submitit_module()
        self.options, self.folder, self.jobs = options, Path(folder), jobs
        self.threads = threads or options.cpus
        self.echo = echo

    def run(self, runs: Sequence[Run], done: Done, wait: bool) -> dict[str, str]:
        """Submit what needs a job, then wait for every job (``done`` for each run as its job ends) or,
        without ``wait``, return at once. Returns the status of the runs still queued or running."""
        from dnas.runtime.atomic import atomic_write_text

        recorded = self._recorded()
        pending: dict[str, tuple[Run, Any]] = {}
        submit = []
        for run in runs:
            job = self._job(recorded.get(run.name))
            if job is not None and not job.done():
                pending[run.name] = (run, job)
            else:
                submit.append(run)
        if pending:
            self.echo(f"dnas compare: {len(pending)} runs are still queued or running as Slurm jobs "
                      f"{', '.join(job.job_id for _, job in pending.values())}; not submitted again")
        if submit:
            jobs = self._submit(submit)
            pending.update({run.name: (run, job) for run, job in zip(submit, jobs, strict=True)})
            recorded.update({run.name: job.job_id for run, job in zip(submit, jobs, strict=True)})
            atomic_write_text(self.folder / JOBS, json.dumps({"cluster": self.options.cluster, "jobs": recorded},
                                                             indent=2) + "\n")
            self.echo(f"dnas compare: submitted {len(submit)} runs as Slurm jobs {', '.join(j.job_id for j in jobs)} "
                      f"(ids in {self.folder / JOBS}, logs in {self.folder})")
        if not wait:
            if pending:
                self.echo("dnas compare: not waiting; run the same command again to collect the finished runs and "
                          "write the report (it waits for the jobs still running unless --no-wait is given)")
            return {name: f"not finished: queued or running as Slurm job {job.job_id}"
                    for name, (_, job) in pending.items()}
        self._wait(pending, done)
        return {}

    def _submit(self, runs: Sequence[Run]) -> list[Any]:
        options = self.options
        executor = self.submitit.AutoExecutor(folder=self.folder, cluster=options.cluster)
        parameters = {"name": "dnas-compare", "timeout_min": options.time, "gpus_per_node": options.gpus,
                      "cpus_per_task": options.cpus, "mem_gb": options.mem, "slurm_partition": options.partition,
                      "slurm_array_parallelism": self.jobs}
        executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
        try:
            jobs = executor.map_array(SearchJob(), [r.cfg for r in runs], [str(r.out) for r in runs],
                                      [self.threads] * len(runs))
        except Exception as err:  # noqa: BLE001 - sbatch's refusal comes as one of several exception types
            reason = (str(err).strip().splitlines() or [type(err).__name__])[-1][:200]
            raise DnasError(f"Slurm did not accept the jobs ({reason}); check --slurm-partition and the other "
                            "--slurm-* options") from None
        for job in jobs:
            _SUBMITTED[(str(self.folder), job.job_id)] = job
        return jobs

    def _recorded(self) -> dict[str, str]:
        """The job of each run from earlier calls (none when they used another cluster)."""
        path = self.folder / JOBS
        if not path.exists():
            return {}
        try:
            data = read_json(path, "the record of submitted jobs")
        except DnasError as err:
            raise DnasError(f"{err}; delete it (jobs still queued are then submitted again) or choose another "
                            "--out") from None
        if not isinstance(data, dict) or data.get("cluster") != self.options.cluster:
            return {}
        return {str(k): str(v) for k, v in dict(data.get("jobs") or {}).items()}

    def _job(self, job_id: str | None):
        if job_id is None:
            return None
        live = _SUBMITTED.get((str(self.folder), job_id))
        if live is not None:
            return live
        kind = self.submitit.SlurmJob if self.options.cluster == "slurm" else self.submitit.LocalJob
        return kind(self.folder, job_id)

    def _wait(self, pending: dict[str, tuple[Run, Any]], done: Done) -> None:
        from dnas.runtime.signals import GracefulStop

        with GracefulStop() as stop:
            while pending and not stop.requested:
                for name, (run, job) in list(pending.items()):
                    if job.done():
                        del pending[name]
                        done(run, self._outcome(run, job))
                if pending:
                    time.sleep(POLL)
        if pending:
            ids = ", ".join(job.job_id for _, job in pending.values())
            raise DnasError(f"stopped waiting; {len(pending)} runs go on as Slurm jobs {ids}: run the same command "
                            "again to collect them (scancel stops them)")

    @staticmethod
    def _outcome(run: Run, job) -> str | None:
        """None when the run finished, else why not, naming the job's log."""
        if run.finished:
            return None
        if not job.paths.result_pickle.exists():
            return f"Slurm job {job.job_id} ended without a result (state {job.state}); its log: {job.paths.stderr}"
        try:
            reason = job.result()
        except Exception:  # noqa: BLE001 - the job failed outside the search (e.g. dnas missing on the node)
            return f"Slurm job {job.job_id} failed before or after the search; its log: {job.paths.stderr}"
        return reason or f"Slurm job {job.job_id} ended without finishing the search; its log: {job.paths.stderr}"
