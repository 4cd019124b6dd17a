"""The search loop: bilevel optimisation of supernet weights and architecture parameters.

One iteration (DESIGN.md section 2):

1. the schedule decides whether an architecture step happens; if so, the estimator writes the
   hypergradient of ``L_val + R_arch`` into ``alpha.grad`` (on a validation batch) and Adam steps;
2. the weight step: ``L_train(w, A(alpha))`` on a training batch, backward, weight regularizers
   add their gradients, gradient-norm clipping, SGD step, activation hook (pruning).

The schedule's ``order`` swaps the two (``weight-first``: AutoDL's NAS-Bench-201 DARTS, PR-DARTS).

Everything a resumed run needs is checkpointed atomically: weights, alphas, both optimizers, the
LR schedule, component states, both data streams and the RNG, and the position in the epoch, so
an interrupted search resumes to exactly the same result. Metrics are accumulated on the device
and read on the host only every ``log_every`` steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dnas.allocator import retain_freed_memory
from dnas.benchmarks import load_table, lookup
from dnas.bilevel import BilevelProblem
from dnas.components import (
    ACTIVATIONS,
    ARCH_REGULARIZERS,
    DISCRETIZERS,
    ESTIMATORS,
    SCHEDULES,
    WEIGHT_REGULARIZERS,
)
from dnas.config import SearchConfig, build_component
from dnas.convergence import convergence
from dnas.data import Augment, BatchStream, ImageDataset, load_dataset, split_indices, stratified_subset
from dnas.diagnostics import gradient_alignment
from dnas.distributed import setup as setup_distributed
from dnas.errors import DnasError, Interrupted, NonFiniteLossError
from dnas.hessian import dominant_eigenvalue
from dnas.runs import GracefulStop, RunDir, progress_bar, resolve_device, rng_state, set_rng_state
from dnas.spaces import Genotype, get_space
from dnas.supernet import build_supernet

GENOTYPE = "genotype.json"
RESULTS = "results.json"
# keys that may differ between a run and its resumption (they do not change the result)
RESUME_FREE_KEYS = {"device", "log_every", "checkpoint_every", "log"}
#: ``on_step(search, record)`` / ``on_epoch(search, record)``: called after each logged step / epoch
Callback = Callable[["Search", dict[str, Any]], None]


class Search:
    """A search run in directory ``out``.

    ``run()`` does everything (resuming from ``out/checkpoint.pt`` when present) and returns the
    genotype; ``results.json`` and ``genotype.json`` are written at the end. For a custom loop::

        search = Search(cfg, out).open()     # lock the directory, build, resume
        while not search.done:
            search.step()                    # one iteration: epoch hooks, logging, checkpoints included
        genotype = search.finish()           # results.json, genotype.json; releases the directory

    ``on_step(search, record)`` and ``on_epoch(search, record)`` are called with every logged step
    record and every epoch record (the dicts written to ``metrics.jsonl``).
    """

    _alignment: dict[str, Tensor]  # the last per-cell gradient alignment by cell type (reset with the meters)

    def __init__(self, cfg: SearchConfig, out: str | Path, progress: bool = True, *,
                 on_step: Callback | None = None, on_epoch: Callback | None = None):
        self.cfg = cfg
        self.out = Path(out)
        self.progress = progress
        self.on_step, self.on_epoch = on_step, on_epoch
        retain_freed_memory()  # every iteration reuses the last one's host memory (dnas.allocator)
        self.space = get_space(cfg.space)
        self.group, device = setup_distributed(cfg.device)  # launched by torchrun: data parallel
        self.device = resolve_device(device)
        if cfg.batch_size % self.group.world:
            raise DnasError(f"batch_size {cfg.batch_size} is the global batch of {self.group.world} processes and "
                            "must be divisible by their number")
        self.run_dir = RunDir(self.out, "search", own_files={GENOTYPE, RESULTS}, results={GENOTYPE, RESULTS},
                              resume_free=RESUME_FREE_KEYS, defaults=SearchConfig.comparison_defaults(),
                              group=self.group)
        self._stop = GracefulStop()
        self._opened = False

    # ----- set-up ------------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.activation = build_component(ACTIVATIONS, cfg.activation)
        self.schedule = build_component(SCHEDULES, cfg.schedule)
        self.estimator = build_component(ESTIMATORS, cfg.estimator)
        if cfg.discretizer is None:
            raise DnasError("the config names no discretizer: build it with resolve_config (it picks the space's rule)")
        self.discretizer = build_component(DISCRETIZERS, cfg.discretizer)
        self.weight_regularizers = [build_component(WEIGHT_REGULARIZERS, c) for c in cfg.weight_regularizers]
        self.arch_regularizers = [build_component(ARCH_REGULARIZERS, c) for c in cfg.arch_regularizers]
        self.components = {
            "activation": self.activation,
            "schedule": self.schedule,
            "estimator": self.estimator,
            "discretizer": self.discretizer,
            **{f"weight_regularizers.{i}": r for i, r in enumerate(self.weight_regularizers)},
            **{f"arch_regularizers.{i}": r for i, r in enumerate(self.arch_regularizers)},
        }
        for comp in self.components.values():
            comp.bind(self.space)

        data = load_dataset(cfg.dataset, split="train", download=cfg.download, root=cfg.data_root)
        if cfg.max_images and cfg.max_images < len(data.labels):
            keep = stratified_subset(data.labels, fraction=cfg.max_images / len(data.labels), seed=cfg.seed)
            data = ImageDataset.from_tensors(data.images[keep], data.labels[keep], data.classes, data.name)
        if cfg.image_size and cfg.image_size != data.image_size:
            data = data.resized(cfg.image_size)
        portion = self.schedule.train_portion or cfg.train_portion
        train_idx, val_idx = split_indices(len(data.labels), portion, cfg.seed)
        augment = Augment.for_images(data.image_size, data.channels, crop_padding=cfg.crop_padding, flip=cfg.flip,
                                     cutout=cfg.cutout)
        self.train_stream = BatchStream(data, train_idx, cfg.batch_size, seed=cfg.seed * 2 + 1, augment=augment,
                                        device=self.device, part="train part of the search split")
        self.val_stream = BatchStream(data, val_idx, cfg.batch_size, seed=cfg.seed * 2 + 2, augment=augment,
                                      device=self.device, part="val part of the search split")
        self.steps_per_epoch = self.train_stream.batches_per_epoch
        self.table = load_table(cfg.benchmark_table) if cfg.benchmark_table else None
        # a fixed, unaugmented validation batch: eigenvalues of different epochs stay comparable
        self.diagnostic_batch = next(BatchStream(data, val_idx, min(cfg.batch_size, len(val_idx)), seed=cfg.seed,
                                                 augment=None, device=self.device)) if cfg.hessian_every else None
        self.data = data

        net = build_supernet(self.space, num_classes=data.num_classes, in_channels=data.channels,
                             channels=cfg.channels, layers=cfg.layers, node_bn=self.activation.node_bn)
        generator = torch.Generator().manual_seed(cfg.seed)
        alphas = nn.ParameterDict({
            t: nn.Parameter(self.activation.init_alpha(shape, generator))
            for t, shape in self.space.alpha_shapes().items()
        })
        net.to(self.device)
        alphas.to(self.device)
        self.problem = BilevelProblem(net, alphas, self.activation, self.arch_regularizers, group=self.group)
        self.w_opt = torch.optim.SGD(self.problem.weights, lr=cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay, nesterov=cfg.w_nesterov)
        self.problem.weight_optimizer = self.w_opt  # second-order DARTS' virtual step reads its momentum
        self.lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, cfg.epochs, eta_min=cfg.w_lr_min)
        self.a_opt = torch.optim.Adam(self.problem.arch, lr=cfg.a_lr, betas=(cfg.a_beta1, cfg.a_beta2),
                                      weight_decay=cfg.a_weight_decay)

    # ----- checkpoints -------------------------------------------------------------------------------
    def _state(self, finished: bool) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "step": self.step_in_epoch,
            "global_step": self.global_step,
            "arch_steps": self.arch_steps,
            "finished": finished,
            "elapsed": self.seconds,
            "net": self.problem.net.state_dict(),
            "alphas": self.problem.alphas.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "components": {k: c.state_dict() for k, c in self.components.items()},
            "streams": {"train": self.train_stream.state_dict(), "val": self.val_stream.state_dict()},
            "rng": rng_state(),
            "meters": {"sums": self._sums, "counts": self._counts, "batches": self._batches,
                       "alignment": self._alignment},
        }

    def _save(self, finished: bool = False) -> None:
        self.run_dir.save_checkpoint(self._state(finished))

    def _restore(self, state: dict[str, Any]) -> None:
        self.problem.net.load_state_dict(state["net"])
        self.problem.alphas.load_state_dict(state["alphas"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        for key, comp in self.components.items():
            comp.load_state_dict(state["components"].get(key, {}))
        self.train_stream.load_state_dict(state["streams"]["train"])
        self.val_stream.load_state_dict(state["streams"]["val"])
        set_rng_state(state["rng"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step"]
        self.global_step = state["global_step"]
        self.arch_steps = state["arch_steps"]
        self.elapsed = state["elapsed"]
        meters = state["meters"]  # continue the log window that the checkpoint cut
        self._sums, self._counts, self._batches = meters["sums"], meters["counts"], meters["batches"]
        self._alignment = meters["alignment"]

    # ----- the loop ----------------------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        """Search time so far (over all the processes that ran this search; frozen when it is done)."""
        return self.elapsed + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.epochs

    def open(self) -> Search:
        """Lock the run directory, build everything and restore the checkpoint if there is one."""
        if self._opened:
            return self
        self.run_dir.open()
        try:
            self._build()
            state = self.run_dir.load_checkpoint(self.cfg.to_dict(), self.device)
            self.epoch = self.step_in_epoch = self.global_step = self.arch_steps = 0
            self.elapsed = 0.0
            self._reset_meters()
            if state is None:
                self.run_dir.start(self.cfg.to_yaml())
            else:
                self._restore(state)
            self.log = self.run_dir.metrics(None if state is None else state["metrics_offset"], self.cfg.log,
                                            purge_step=self.global_step)
            self._t0 = None if self.done else time.perf_counter()
            self._stop.__enter__()
            self._bar = progress_bar(self.progress and not self.done, self.cfg.epochs * self.steps_per_epoch,
                                     self.global_step, f"{self.cfg.method} on {self.cfg.space}")
            if not self.done:
                self._begin_epoch()
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

    def run(self) -> Genotype:
        """Run (or resume) the whole search; write ``genotype.json`` and ``results.json``."""
        self.open()
        try:
            while not self.done:
                self.step()
        except BaseException:
            self.close(failed=True)
            raise
        return self.finish()

    def finish(self) -> Genotype:
        """Write the results of a finished search and release its directory; returns the genotype."""
        if not self.done:
            raise DnasError(f"the search in {self.out} has not finished ({self.epoch} of {self.cfg.epochs} epochs)")
        genotype = self.genotype()
        try:
            self.run_dir.write_json(GENOTYPE, genotype.to_dict())
            self.run_dir.write_json(RESULTS, self.results(genotype))
        finally:
            self.close()
        return genotype

    def results(self, genotype: Genotype | None = None) -> dict[str, Any]:
        """What ``results.json`` holds: the derived cell, its counts, the final strengths and the cost."""
        genotype = genotype or self.genotype()
        strengths = self.problem.strengths()
        return {
            "genotype": genotype.to_dict(),
            "skip_connect": genotype.count("skip_connect"),
            "parameter_free": genotype.count_parameter_free(),
            "steps": self.global_step,
            "arch_steps": self.arch_steps,
            "seconds": round(self.seconds, 3),
            "strengths": {t: s.cpu().tolist() for t, s in strengths.items()},
            **convergence(self.space, strengths, self.activation.allows_none),
        }

    def genotype(self) -> Genotype:
        return self.discretizer(self.space, self.problem.strengths())

    def _begin_epoch(self) -> None:
        for comp in self.components.values():
            comp.on_epoch_start(self.epoch, self.cfg.epochs)
        self.problem.weight_lr = float(self.lr_schedule.get_last_lr()[0])

    def _interrupted(self) -> Interrupted:
        return Interrupted(f"interrupted; the search is saved in {self.out}: run the same command again to resume it")

    def step(self) -> dict[str, Any] | None:
        """One iteration (see :meth:`_iteration`) with its bookkeeping: the step record when one is
        logged, checkpoints every ``checkpoint_every`` steps, and at the last step of an epoch the
        epoch record and a checkpoint. Returns the step record, if one was logged."""
        if not self._opened:
            self.open()
        if self.done:
            raise DnasError(f"the search in {self.out} has finished; call finish()")
        cfg, epoch = self.cfg, self.epoch
        self.problem.epochs_elapsed = epoch + self.step_in_epoch / self.steps_per_epoch
        self._iteration(epoch, self.step_in_epoch)
        self.global_step += 1
        self.step_in_epoch += 1
        if self._bar is not None:
            self._bar.update(1)
        record = None
        if self.global_step % cfg.log_every == 0:
            record = self._log_step(epoch)
            if self._bar is not None:
                self._bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.3f}",
                                      refresh=False)
            if self.on_step is not None:
                self.on_step(self, record)
        stop = self.group.any(self._stop.requested, self.device)  # every rank stops at the same step
        if self.step_in_epoch < self.steps_per_epoch:
            if stop or (cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0):
                self._check_finite(epoch)
                self._save()
                if stop:
                    raise self._interrupted()
            return record
        self.lr_schedule.step()
        self._check_finite(epoch)
        epoch_record = self._log_epoch(epoch)
        self.epoch, self.step_in_epoch = epoch + 1, 0
        if self.done:  # the search time ends here, so results.json is the same whenever it is written
            self.elapsed, self._t0 = self.seconds, None
        self._save(finished=self.done)
        if self.on_epoch is not None:
            self.on_epoch(self, epoch_record)
        if stop and not self.done:
            raise self._interrupted()
        if not self.done:
            self._begin_epoch()
        return record

    def _iteration(self, epoch: int, step: int) -> None:
        # every rank draws the same global batch and keeps its shard (the whole batch in one process)
        train_batch = self.group.shard(next(self.train_stream))
        arch_step = self.schedule.take_arch_step(self.global_step)
        if arch_step and not self.schedule.weight_first:
            self._arch_step(train_batch)
        self._weight_step(epoch, train_batch)
        if arch_step and self.schedule.weight_first:
            self._arch_step(train_batch)
        self.group.mean_buffers_(self.problem.net)  # BatchNorm statistics of both steps' forwards

    def _arch_step(self, train_batch: tuple[Tensor, Tensor]) -> None:
        val_batch = self.group.shard(next(self.val_stream))
        self.a_opt.zero_grad(set_to_none=True)
        val_loss, val_logits = self.estimator.arch_gradient(self.problem, train_batch, val_batch)
        self.a_opt.step()
        self.arch_steps += 1
        self._meter("val", val_loss, val_logits, val_batch[1])

    def _weight_step(self, epoch: int, train_batch: tuple[Tensor, Tensor]) -> None:
        cfg = self.cfg
        problem = self.problem
        self.w_opt.zero_grad(set_to_none=True)
        alignment_due = cfg.alignment_every and self.global_step % cfg.alignment_every == 0
        need_cells = alignment_due or any(r.needs_cell_gradients for r in self.weight_regularizers)
        loss, logits, cell_weights = problem.weight_loss(train_batch, cell_gradients=need_cells)
        loss.backward()
        # a cell whose ops were all masked out computed nothing: its gradient is zero, not missing
        cell_grads = [torch.zeros_like(w) if w.grad is None else w.grad for w in cell_weights] if need_cells else []
        weights = problem.weights
        problem.mean_([*(p.grad for p in weights), *cell_grads])
        # the Fisher trace is of grad_w L_train alone (DARTS-PRIME), before any regularizer adds to it
        self.schedule.observe_weight_gradients([p.grad for p in weights if p.grad is not None])
        for reg in self.weight_regularizers:
            reg.add_gradient(problem, train_batch, cell_weights, cell_grads, epoch, cfg.epochs)
        nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
        self.w_opt.step()
        self.activation.after_weight_step(dict(problem.alphas))
        self._meter("train", loss.detach(), logits.detach(), train_batch[1])
        if alignment_due:
            self._alignment = {
                t: gradient_alignment([cell_grads[i] for i in problem.net.cells_of_type(t)])
                for t in problem.cell_types
            }

    # ----- metrics -----------------------------------------------------------------------------------
    def _reset_meters(self) -> None:
        zero = torch.zeros((), device=self.device)
        self._sums = {k: zero.clone() for k in ("train_loss", "train_correct", "val_loss", "val_correct")}
        self._counts = {"train": 0, "val": 0}
        self._batches = {"train": 0, "val": 0}
        self._alignment = {}

    def _meter(self, split: str, loss: Tensor, logits: Tensor, labels: Tensor) -> None:
        self._sums[f"{split}_loss"] += loss
        self._sums[f"{split}_correct"] += (logits.argmax(1) == labels).sum()
        self._counts[split] += len(labels)
        self._batches[split] += 1

    def _window(self) -> dict[str, float]:
        """The log window's loss and accuracy per split, averaged over the ranks (one collective)."""
        keys = ("train_loss", "train_correct", "val_loss", "val_correct")
        sums = self.group.sum(torch.stack([self._sums[k].float() for k in keys])).tolist()
        world, out = self.group.world, {}
        for split in ("train", "val"):
            if self._batches[split]:
                out[f"{split}_loss"] = sums[keys.index(f"{split}_loss")] / (self._batches[split] * world)
                out[f"{split}_acc"] = sums[keys.index(f"{split}_correct")] / (self._counts[split] * world)
        return out

    def _check_finite(self, epoch: int, window: dict[str, float] | None = None) -> None:
        """Stop (on every rank alike) when a loss or ``alpha`` became NaN or infinite."""
        window = self._window() if window is None else window
        kept = (f"the last good checkpoint in {self.out} was kept (rerun with other settings under another --out)"
                if self.run_dir.has_checkpoint else f"no checkpoint had been written, so {self.out} was left as it was")
        for split in ("train", "val"):
            if f"{split}_loss" in window and not math.isfinite(window[f"{split}_loss"]):
                raise NonFiniteLossError(f"the {split} loss became non-finite in epoch {epoch} (step "
                                         f"{self.global_step}); lower w_lr or a_lr or check the data; {kept}")
        for p in self.problem.arch:
            if not torch.isfinite(p).all():
                raise NonFiniteLossError(f"the architecture parameters became non-finite in epoch {epoch}; lower "
                                         f"a_lr; {kept}")

    def _log_step(self, epoch: int) -> dict[str, Any]:
        window = self._window()
        self._check_finite(epoch, window)
        record: dict[str, Any] = {"kind": "step", "epoch": epoch, "step": self.global_step,
                                  "lr": self.lr_schedule.get_last_lr()[0], "arch_steps": self.arch_steps, **window}
        for t, value in self._alignment.items():
            record[f"alignment.{t}"] = float(value)
        for key, comp in self.components.items():
            for name, value in comp.metrics().items():
                record[f"{key}.{name}"] = float(value)
        self.log.write(record)
        self._reset_meters()
        return record

    def _log_epoch(self, epoch: int) -> dict[str, Any]:
        genotype = self.genotype()
        strengths = self.problem.strengths()
        record = {
            "kind": "epoch",
            "epoch": epoch,
            "step": self.global_step,
            "seconds": self.seconds,
            "genotype": genotype.to_dict(),
            "skip_connect": genotype.count("skip_connect"),
            "parameter_free": genotype.count_parameter_free(),
            "strengths": {t: s.cpu().tolist() for t, s in strengths.items()},
            **convergence(self.space, strengths, self.activation.allows_none),
        }
        if self.table is not None:
            record["benchmark"] = lookup(self.table, genotype)
        if self.cfg.hessian_every and (epoch + 1) % self.cfg.hessian_every == 0:
            record["hessian_eigenvalue"] = dominant_eigenvalue(self.problem, self.diagnostic_batch, seed=epoch)
        self.log.write(record)
        return record
