"""The runner: one lifecycle for every run (a search, a retraining), around an algorithm without I/O.

An algorithm (:class:`Task`: :class:`dnas.bilevel.step.SearchStep`, :class:`dnas.retrain.step.TrainStep`)
knows how to take one iteration, what its epoch record holds, and its state; it reads no files,
installs no signal handler and prints nothing. The :class:`Runner` drives it in a run directory::

    runner.open()          # lock the directory, build the algorithm, resume from the checkpoint
    while not runner.done:
        runner.step()      # one iteration + meters, logs, checkpoints, the epoch end, stop requests
    runner.finish()        # the result files; releases the directory

and owns everything around the iteration: the run directory and its checkpoints
(:class:`~dnas.runtime.rundir.RunDir`), the position (epoch, step), the meters (per-batch losses
and correct counts summed on the device, read on the host only every ``log_every`` steps), the
metric records, the progress bar, graceful stops (SIGINT/SIGTERM: save, then stop with
:class:`~dnas.errors.Interrupted`), the non-finite check before every checkpoint, and the
data-parallel group of a ``torchrun`` launch (every rank takes the same decisions; only rank 0
writes).

A checkpoint holds the algorithm's ``state_dict()`` merged with the runner's own state (position,
elapsed time, meters, global random state), so a run killed at any instant resumes to the
bit-identical result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch
from torch import Tensor

from dnas.errors import DnasError, Interrupted, NonFiniteLossError
from dnas.runtime.allocator import retain_freed_memory
from dnas.runtime.distributed import Group
from dnas.runtime.distributed import setup as setup_distributed
from dnas.runtime.environment import resolve_device, rng_state, set_rng_state
from dnas.runtime.files import CHECKPOINT
from dnas.runtime.progress import progress_bar
from dnas.runtime.rundir import RunDir
from dnas.runtime.signals import GracefulStop


@dataclass(frozen=True)
class Position:
    """Where a run stands: before step ``step`` of epoch ``epoch``, ``global_step`` steps taken in all."""

    epoch: int
    step: int
    global_step: int
    epochs: int
    steps_per_epoch: int

    @property
    def epochs_elapsed(self) -> float:
        """Fractional epochs before this step: ``epoch + step / steps_per_epoch``."""
        return self.epoch + self.step / self.steps_per_epoch


@dataclass
class Observation:
    """What one step measured on one split: the batch's mean loss, its correct predictions, its size."""

    split: str
    loss: Tensor
    correct: Tensor
    images: int


@dataclass
class StepOutput:
    """An iteration's observations, and gauges: values logged as they last were (e.g. a diagnostic
    computed every few steps), kept until the next log record."""

    observations: list[Observation]
    gauges: dict[str, Tensor] = field(default_factory=dict)


class Task(Protocol):
    """What a runner drives (see the module docstring)."""

    #: the splits its observations come from, in the order their averages are logged
    splits: tuple[str, ...]
    #: what to change when a loss becomes non-finite ("lower lr or check the data")
    advice: str

    @property
    def epochs(self) -> int: ...
    @property
    def steps_per_epoch(self) -> int: ...
    def begin_epoch(self, epoch: int) -> None: ...
    def iterate(self, at: Position) -> StepOutput: ...
    def end_epoch(self, epoch: int) -> dict[str, Any]: ...
    def log_fields(self, at: Position) -> dict[str, Any]: ...
    def metrics(self) -> dict[str, float | Tensor]: ...
    def non_finite(self) -> tuple[str, str] | None: ...
    def finished_early(self) -> bool: ...
    def results(self, at: Position, seconds: float) -> dict[str, Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Sums:
    """The running sums of one split: per-batch mean losses, correct predictions (on the device), counts."""

    loss: Tensor
    correct: Tensor
    batches: int = 0
    images: int = 0


class Meter:
    """Sums of the per-batch mean losses and correct counts of each split, kept on the device."""

    def __init__(self, splits: Sequence[str], device: torch.device):
        self.splits, self.device = tuple(splits), device
        self.reset()

    def reset(self) -> None:
        zero = torch.zeros((), device=self.device)
        self.sums = {s: Sums(zero.clone(), zero.clone()) for s in self.splits}

    def add(self, obs: Observation) -> None:
        sums = self.sums[obs.split]
        sums.loss += obs.loss
        sums.correct += obs.correct
        sums.batches += 1
        sums.images += obs.images

    def averages(self, group: Group) -> dict[str, float]:
        """``{split}_loss`` and ``{split}_acc`` of every split with batches, over all ranks (one collective)."""
        stacked = torch.stack([t.float() for s in self.splits for t in (self.sums[s].loss, self.sums[s].correct)])
        totals = group.sum(stacked).tolist()
        out = {}
        for i, split in enumerate(self.splits):
            sums = self.sums[split]
            if sums.batches:
                out[f"{split}_loss"] = totals[2 * i] / (sums.batches * group.world)
                out[f"{split}_acc"] = totals[2 * i + 1] / (sums.images * group.world)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {s: dict(vars(v)) for s, v in self.sums.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for split, sums in state.items():
            self.sums[split] = Sums(sums["loss"].to(self.device), sums["correct"].to(self.device), sums["batches"],
                                    sums["images"])


def upgrade_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of format 2 (each kind of run kept its meters its own way) in format 3."""
    if state.get("format") != 2:
        return state
    meters = state["meters"]
    if state["kind"] == "search":
        sums, counts, batches = meters["sums"], meters["counts"], meters["batches"]
        window = {s: {"loss": sums[f"{s}_loss"], "correct": sums[f"{s}_correct"], "batches": batches[s],
                      "images": counts[s]} for s in ("train", "val")}
        gauges = {f"alignment.{t}": v for t, v in meters["alignment"].items()}
        state["meters"] = {"window": window, "gauges": gauges, "epoch": None}
    else:
        state["meters"] = {"window": {"train": meters["window"]}, "gauges": {}, "epoch": {"train": meters["epoch"]}}
    return {**state, "format": 3}


#: ``callback(runner, record)``: called with every logged step record / every epoch record
Callback = Callable[[Any, dict[str, Any]], None]
R = TypeVar("R")
RunnerT = TypeVar("RunnerT", bound="Runner[Any]")


class Runner(Generic[R]):
    """The lifecycle of a run in directory ``out`` (see the module docstring).

    Subclasses name their kind and files and build their algorithm in :meth:`build`, which runs
    under the directory's lock (a dataset that fails to load leaves nothing behind).
    ``epoch_meter``: also average the losses over each epoch, for the epoch record.
    """

    kind: ClassVar[str] = "run"  # "search" or "train": the checkpoint's kind
    noun: ClassVar[str] = "run"  # how messages name it ("the search", "the training run")
    #: keys that may differ between a run and its resumption (they do not change the result)
    resume_free: ClassVar[frozenset[str]] = frozenset({"device", "log_every", "checkpoint_every", "log", "workers",
                                                       "data_mode"})
    epoch_meter: ClassVar[bool] = False

    def __init__(self, cfg: Any, out: str | Path, *, progress: bool = True, on_step: Callback | None = None,
                 on_epoch: Callback | None = None, own_files: set[str], results: set[str],
                 start_files: Mapping[str, Any] | None = None):
        self.cfg = cfg
        self.out = Path(out)
        self.progress = progress
        self.on_step, self.on_epoch = on_step, on_epoch
        self.start_files = dict(start_files or {})
        retain_freed_memory()  # every iteration reuses the last one's host memory (dnas.runtime.allocator)
        self.group, device = setup_distributed(cfg.device)  # launched by torchrun: data parallel
        self.device = resolve_device(device)
        if cfg.batch_size % self.group.world:
            raise DnasError(f"batch_size {cfg.batch_size} is the global batch of {self.group.world} processes and "
                            "must be divisible by their number")
        self.run_dir = RunDir(self.out, self.kind, own_files=own_files, results=results,
                              resume_free=self.resume_free, defaults=type(cfg).comparison_defaults(),
                              comparable=type(cfg).comparable, group=self.group)
        self._stop = GracefulStop()
        self._opened = False
        self._bar = None
        self._t0: float | None = None
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.elapsed = 0.0
        self.ended_early = False  # the algorithm ended before its last epoch (finished_early)

    # ----- what a subclass provides ----------------------------------------------------------------------
    def build(self) -> Task:  # pragma: no cover - interface
        """The algorithm of this run, built from ``self.cfg`` on ``self.device`` in ``self.group``."""
        raise NotImplementedError

    def outcome(self, files: dict[str, Any]) -> R:  # pragma: no cover - interface
        """What :meth:`finish` returns, from the result files it wrote."""
        raise NotImplementedError

    def differences(self, state: dict[str, Any]) -> list[str]:
        """Differences between the checkpoint and this run beyond the configuration (names, or none)."""
        return []

    @property
    def description(self) -> str:
        """The progress bar's label."""
        return self.out.name

    # ----- position and time -----------------------------------------------------------------------------
    @property
    def position(self) -> Position:
        return Position(self.epoch, self.step_in_epoch, self.global_step, self.task.epochs, self.task.steps_per_epoch)

    @property
    def done(self) -> bool:
        """All epochs taken, or the algorithm ended before its last one (a search its guard stopped)."""
        return self.epoch >= self.cfg.epochs or self.ended_early

    @property
    def seconds(self) -> float:
        """Run time so far (over all the processes that ran this run; frozen when it is done)."""
        return self.elapsed + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    # ----- lifecycle -------------------------------------------------------------------------------------
    def open(self: RunnerT) -> RunnerT:
        """Lock the run directory, build the algorithm and restore the checkpoint if there is one."""
        if self._opened:
            return self
        self.run_dir.open()
        try:
            self.task = self.build()
            state = self.run_dir.load_checkpoint(self.cfg.to_dict(), self.device, self.differences)
            self.window = Meter(self.task.splits, self.device)
            self.epoch_sums = Meter(self.task.splits, self.device) if self.epoch_meter else None
            self.gauges: dict[str, Tensor] = {}
            if state is None:
                self.run_dir.start(self.cfg.to_yaml(), getattr(self.task, "environment", None))
                for name, data in self.start_files.items():
                    self.run_dir.write_json(name, data)
            else:
                try:
                    self._restore(upgrade_checkpoint(state))
                except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as err:
                    raise DnasError(f"checkpoint {self.run_dir.file(CHECKPOINT)} does not hold a complete "
                                    f"{self.noun} state ({type(err).__name__}); delete it to start the run from "
                                    "scratch, or choose another --out") from None
                self.ended_early = self.task.finished_early()
            self.log = self.run_dir.metrics(None if state is None else state["metrics_offset"], self.cfg.log,
                                            purge_step=self.global_step)
            self._t0 = None if self.done else time.perf_counter()
            self._stop.__enter__()
            self._bar = progress_bar(self.progress and not self.done, self.cfg.epochs * self.task.steps_per_epoch,
                                     self.global_step, self.description)
            if not self.done:
                self.task.begin_epoch(self.epoch)
        except BaseException:
            self.run_dir.abandon()
            raise
        self._opened = True
        return self

    def close(self, failed: bool = False) -> None:
        """Release the run directory (a failed first start leaves nothing behind)."""
        if not self._opened:
            return
        self._opened = False
        self._stop.__exit__()
        if self._bar is not None:
            self._bar.close()
        if failed:
            self.run_dir.abandon()
        else:
            self.run_dir.close()

    def run_steps(self, stop_after: int | None = None) -> bool:
        """Open, then step until the end (or until ``stop_after`` steps in all, with the checkpoint
        saved); returns whether the run is done. Any failure releases the directory."""
        self.open()
        try:
            while not self.done:
                self.step()
                if stop_after is not None and self.global_step >= stop_after and not self.done:
                    self._check_finite()
                    self._save()
                    self.close()
                    return False
        except BaseException:
            self.close(failed=True)
            raise
        return True

    def finish(self) -> R:
        """Write the result files of a finished run and release its directory; returns its outcome."""
        if not self._opened:
            self.open()
        if not self.done:
            raise DnasError(f"the {self.noun} in {self.out} has not finished ({self.epoch} of {self.cfg.epochs}"
                            " epochs)")
        try:
            files = self.task.results(self.position, self.seconds)
            for name, data in files.items():
                self.run_dir.write_json(name, data)
        finally:
            self.close()
        return self.outcome(files)

    def request_stop(self) -> None:
        """Save and stop after the current step, as SIGINT and SIGTERM do (:class:`~dnas.errors.Interrupted`)."""
        self._stop.requested = True

    # ----- one step --------------------------------------------------------------------------------------
    def step(self) -> dict[str, Any] | None:
        """One iteration with its bookkeeping: the step record when one is logged, checkpoints every
        ``checkpoint_every`` steps, and at the last step of an epoch the epoch record and a checkpoint.
        Returns the step record, if one was logged."""
        if not self._opened:
            self.open()
        if self.done:
            raise DnasError(f"the {self.noun} in {self.out} has finished; call finish()")
        cfg, at = self.cfg, self.position
        output = self.task.iterate(at)
        for obs in output.observations:
            self.window.add(obs)
            if self.epoch_sums is not None:
                self.epoch_sums.add(obs)
        self.gauges.update(output.gauges)
        self.global_step += 1
        self.step_in_epoch += 1
        if self._bar is not None:
            self._bar.update(1)
        record = None
        if self.global_step % cfg.log_every == 0:
            record = self._log_step(at)
        stop = self.group.any(self._stop.requested, self.device)  # every rank stops at the same step
        if self.step_in_epoch < self.task.steps_per_epoch:
            if stop or (cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0):
                self._check_finite()
                self._save()
                if stop:
                    raise self._interrupted()
            return record
        self._end_epoch(stop)
        return record

    def _end_epoch(self, stop: bool) -> None:
        epoch = self.epoch
        self._check_finite()
        record: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": self.global_step}
        if self.epoch_sums is not None:
            record.update(self._finite(self.epoch_sums.averages(self.group)))
            self.epoch_sums.reset()
        record.update(self.task.end_epoch(epoch))
        self.ended_early = self.task.finished_early()
        record["seconds"] = self.seconds
        self.log.write(record)
        self.epoch, self.step_in_epoch = epoch + 1, 0
        if self.done:  # the run time ends here, so the result files are the same whenever they are written
            self.elapsed, self._t0 = self.seconds, None
        self._save(finished=self.done)
        if self.on_epoch is not None:
            self.on_epoch(self, record)
        if stop and not self.done:
            raise self._interrupted()
        if not self.done:
            self.task.begin_epoch(self.epoch)

    # ----- records ---------------------------------------------------------------------------------------
    def _log_step(self, at: Position) -> dict[str, Any]:
        window = self._finite(self.window.averages(self.group))
        record: dict[str, Any] = {"kind": "step", "epoch": at.epoch, "step": self.global_step,
                                  **self.task.log_fields(at), **window}
        record.update({name: float(value) for name, value in self.gauges.items()})
        record.update({name: float(value) for name, value in self.task.metrics().items()})
        self.log.write(record)
        self.window.reset()
        self.gauges = {}
        if self._bar is not None and "train_loss" in record:
            self._bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.3f}", refresh=False)
        if self.on_step is not None:
            self.on_step(self, record)
        return record

    def _kept(self) -> str:
        if self.run_dir.has_checkpoint:
            return f"the last good checkpoint in {self.out} was kept (rerun with other settings under another --out)"
        return f"no checkpoint had been written, so {self.out} was left as it was"

    def _finite(self, averages: dict[str, float]) -> dict[str, float]:
        """``averages``, or a :class:`NonFiniteLossError` (on every rank alike) when a loss is NaN or infinite."""
        for split in self.task.splits:
            loss = averages.get(f"{split}_loss")
            if loss is not None and not math.isfinite(loss):
                raise NonFiniteLossError(f"the {split} loss became non-finite in epoch {self.epoch} (step "
                                         f"{self.global_step}); {self.task.advice}; {self._kept()}")
        return averages

    def _check_finite(self) -> None:
        """Stop before a checkpoint or a record when a loss or the algorithm's state became non-finite."""
        self._finite(self.window.averages(self.group))
        problem = self.task.non_finite()
        if problem is not None:
            what, advice = problem
            raise NonFiniteLossError(f"{what} became non-finite in epoch {self.epoch}; {advice}; {self._kept()}")

    def _interrupted(self) -> Interrupted:
        return Interrupted(f"interrupted; the {self.noun} is saved in {self.out}: run the same command again "
                           "to resume it")

    # ----- checkpoints -----------------------------------------------------------------------------------
    def _save(self, finished: bool = False) -> None:
        self.run_dir.save_checkpoint({
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "step": self.step_in_epoch,
            "global_step": self.global_step,
            "finished": finished,
            "elapsed": self.seconds,
            "rng": rng_state(),
            "meters": {"window": self.window.state_dict(), "gauges": dict(self.gauges),
                       "epoch": self.epoch_sums.state_dict() if self.epoch_sums is not None else None},
            **self.task.state_dict(),
        })

    def _restore(self, state: dict[str, Any]) -> None:
        steps = self.task.steps_per_epoch
        position = (state["epoch"], state["step"], state["global_step"])
        if not all(type(v) is int for v in position) or not (
                0 <= state["epoch"] <= self.cfg.epochs and 0 <= state["step"] <= steps
                and state["global_step"] == state["epoch"] * steps + state["step"]):
            raise ValueError("its position is not a position of this run")
        self.task.load_state_dict(state)
        set_rng_state(state["rng"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step"]
        self.global_step = state["global_step"]
        self.elapsed = state["elapsed"]
        meters = state["meters"]  # continue the log window that the checkpoint cut
        self.window.load_state_dict(meters["window"])
        self.gauges = dict(meters["gauges"])
        if self.epoch_sums is not None and meters["epoch"] is not None:
            self.epoch_sums.load_state_dict(meters["epoch"])
