"""The search loop: bilevel optimisation of supernet weights and architecture parameters.

One iteration (DESIGN.md section 2):

1. the schedule decides whether an architecture step happens; if so, the estimator writes the
   hypergradient of ``L_val + R_arch`` into ``alpha.grad`` (on a validation batch) and Adam steps;
2. the weight step: ``L_train(w, A(alpha))`` on a training batch, backward, weight regularizers
   add their gradients, gradient-norm clipping, SGD step, activation hook (pruning).

Everything a resumed run needs is checkpointed atomically: weights, alphas, both optimizers, the
LR schedule, component states, both data streams and the RNG, and the position in the epoch, so
an interrupted search resumes to exactly the same result. Metrics are accumulated on the device
and read on the host only every ``log_every`` steps.
"""

from __future__ import annotations

import json
import math
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import dnas
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
from dnas.errors import DnasError, NonFiniteLossError
from dnas.hessian import dominant_eigenvalue
from dnas.spaces import Genotype, get_space
from dnas.supernet import build_supernet
from dnas.utils import atomic_torch_save, atomic_write_text

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
OWN_FILES = {"config.yaml", "env.json", "metrics.jsonl", CHECKPOINT, "genotype.json", "results.json"}
# keys that may differ between a run and its resumption
RESUME_FREE_KEYS = {"device", "log_every", "checkpoint_every"}


def environment() -> dict[str, Any]:
    return {
        "dnas": dnas.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "argv": sys.argv,
    }


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, flushed at once; truncated to the checkpoint on resume."""

    def __init__(self, path: Path, resume_offset: int | None):
        self.path = path
        if resume_offset is None or not path.exists():
            path.write_text("")
        else:
            with open(path, "r+b") as f:
                f.truncate(resume_offset)
        self._file = open(path, "a")  # noqa: SIM115 - kept open for the whole run

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    @property
    def offset(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DnasError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DnasError("device cuda was requested but PyTorch sees no CUDA device; use --device cpu")
    return device


class Search:
    """A search run in directory ``out``; ``run()`` resumes from ``out/checkpoint.pt`` when present."""

    def __init__(self, cfg: SearchConfig, out: str | Path, progress: bool = True):
        self.cfg = cfg
        self.out = Path(out)
        self.progress = progress
        self.space = get_space(cfg.space)
        self.device = _device(cfg.device)
        self._stop_requested = False

    # ----- set-up ------------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.activation = build_component(ACTIVATIONS, cfg.activation)
        self.schedule = build_component(SCHEDULES, cfg.schedule)
        self.estimator = build_component(ESTIMATORS, cfg.estimator)
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
        self.problem = BilevelProblem(net, alphas, self.activation, self.arch_regularizers)
        self.w_opt = torch.optim.SGD(self.problem.weights, lr=cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay)
        self.lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, cfg.epochs, eta_min=cfg.w_lr_min)
        self.a_opt = torch.optim.Adam(self.problem.arch, lr=cfg.a_lr, betas=(cfg.a_beta1, cfg.a_beta2),
                                      weight_decay=cfg.a_weight_decay)

    # ----- checkpoints -------------------------------------------------------------------------------
    def _state(self, epoch: int, step: int, finished: bool) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "epoch": epoch,
            "step": step,
            "global_step": self.global_step,
            "arch_steps": self.arch_steps,
            "finished": finished,
            "elapsed": self.elapsed + time.perf_counter() - self._t0,
            "net": self.problem.net.state_dict(),
            "alphas": self.problem.alphas.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "components": {k: c.state_dict() for k, c in self.components.items()},
            "streams": {"train": self.train_stream.state_dict(), "val": self.val_stream.state_dict()},
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "metrics_offset": self.log.offset,
            "meters": {"sums": self._sums, "counts": self._counts, "batches": self._batches,
                       "alignment": self._alignment},
        }

    def _save(self, epoch: int, step: int, finished: bool = False) -> None:
        atomic_torch_save(self._state(epoch, step, finished), self.out / CHECKPOINT)

    def _load_checkpoint(self) -> dict[str, Any] | None:
        path = self.out / CHECKPOINT
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
            if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
                raise ValueError("not a dnas search checkpoint")
        except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
            raise DnasError(
                f"checkpoint {path} is unreadable or corrupt ({type(err).__name__}); delete it to restart the "
                "search from scratch, or choose another --out"
            ) from None
        saved, current = state["config"], self.cfg.to_dict()
        differ = sorted(k for k in set(saved) | set(current)
                        if k not in RESUME_FREE_KEYS and saved.get(k) != current.get(k))
        if differ:
            raise DnasError(
                f"{self.out} holds a search with a different configuration ({', '.join(differ)}); "
                "run with the same settings to resume it, or choose another --out"
            )
        return state

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
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
        self.global_step = state["global_step"]
        self.arch_steps = state["arch_steps"]
        self.elapsed = state["elapsed"]
        self._resumed_meters = state["meters"]

    def _check_out_dir(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise DnasError(f"--out {self.out} is a file; give a directory")
        if self.out.is_dir() and not (self.out / CHECKPOINT).exists():
            foreign = sorted(p.name for p in self.out.iterdir() if p.name not in OWN_FILES)
            if foreign:
                raise DnasError(
                    f"--out {self.out} already holds other files ({', '.join(foreign[:3])}); choose an empty "
                    "or new directory"
                )
            config = self.out / "config.yaml"
            if config.exists() and config.read_text() != self.cfg.to_yaml():
                raise DnasError(
                    f"{self.out} holds the config of a different search and no checkpoint; choose another --out"
                )

    # ----- the loop ----------------------------------------------------------------------------------
    def run(self) -> Genotype:
        self._check_out_dir()
        self.out.mkdir(parents=True, exist_ok=True)
        self._build()
        state = self._load_checkpoint()
        self.global_step, self.arch_steps, self.elapsed = 0, 0, 0.0
        self._resumed_meters: dict[str, Any] | None = None
        self._t0 = time.perf_counter()
        if state is None:
            atomic_write_text(self.out / "config.yaml", self.cfg.to_yaml())
            atomic_write_text(self.out / "env.json", json.dumps(environment(), indent=2) + "\n")
        else:
            self._restore(state)
        self.log = MetricsLog(self.out / "metrics.jsonl", None if state is None else state["metrics_offset"])
        start_epoch, start_step = (0, 0) if state is None else (state["epoch"], state["step"])
        if state is not None and state["finished"]:
            self.log.close()
            return self.genotype()
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for s in previous:
                signal.signal(s, self._request_stop)
        except ValueError:  # not the main thread: no graceful interruption
            previous = {}
        try:
            self._loop(start_epoch, start_step)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.log.close()
        return self.genotype()

    def _request_stop(self, signum, frame) -> None:  # noqa: ARG002
        self._stop_requested = True

    def genotype(self) -> Genotype:
        return self.discretizer(self.space, self.problem.strengths())

    def _loop(self, start_epoch: int, start_step: int) -> None:
        cfg = self.cfg
        total = cfg.epochs * self.steps_per_epoch
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=self.global_step, unit="step", dynamic_ncols=True, mininterval=1.0,
                       file=sys.stderr, desc=f"{cfg.method} on {cfg.space}")
        self._reset_meters()
        if self._resumed_meters is not None:  # continue the log window that the checkpoint cut
            meters = self._resumed_meters
            self._sums, self._counts, self._batches = meters["sums"], meters["counts"], meters["batches"]
            self._alignment = meters["alignment"]
        for epoch in range(start_epoch, cfg.epochs):
            for comp in self.components.values():
                comp.on_epoch_start(epoch, cfg.epochs)
            self.problem.weight_lr = self.lr_schedule.get_last_lr()[0]
            first = start_step if epoch == start_epoch else 0
            for step in range(first, self.steps_per_epoch):
                self.problem.epochs_elapsed = epoch + step / self.steps_per_epoch
                self._iteration(epoch, step)
                self.global_step += 1
                if bar is not None:
                    bar.update(1)
                if self.global_step % cfg.log_every == 0:
                    record = self._log_step(epoch)
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.3f}",
                                        refresh=False)
                last = step + 1 == self.steps_per_epoch
                if not last and (self._stop_requested or
                                 (cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0)):
                    self._check_finite(epoch)
                    self._save(epoch, step + 1)
                    if self._stop_requested:
                        raise DnasError(f"interrupted; the search is saved in {self.out}: run the same command "
                                        "again to resume it")
            self.lr_schedule.step()
            self._check_finite(epoch)
            self._log_epoch(epoch)
            self._save(epoch + 1, 0, finished=epoch + 1 == cfg.epochs)
            if self._stop_requested and epoch + 1 < cfg.epochs:
                raise DnasError(f"interrupted; the search is saved in {self.out}: run the same command again to "
                                "resume it")
        if bar is not None:
            bar.close()

    def _iteration(self, epoch: int, step: int) -> None:
        cfg = self.cfg
        problem = self.problem
        train_batch = next(self.train_stream)
        if self.schedule.take_arch_step(self.global_step):
            val_batch = next(self.val_stream)
            self.a_opt.zero_grad(set_to_none=True)
            val_loss, val_logits = self.estimator.arch_gradient(problem, train_batch, val_batch)
            self.a_opt.step()
            self.arch_steps += 1
            self._meter("val", val_loss, val_logits, val_batch[1])

        # weight step
        self.w_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            activated = problem.activated()
        alignment_due = cfg.alignment_every and self.global_step % cfg.alignment_every == 0
        need_cells = alignment_due or any(r.needs_cell_gradients for r in self.weight_regularizers)
        if need_cells:
            cell_weights = [w.clone().requires_grad_(True) for w in problem.net.per_cell(activated)]
        else:
            cell_weights = problem.net.per_cell(activated)
        masks = self.activation.active_mask(activated)
        x, y = train_batch
        logits = problem.net(x, cell_weights, masks)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        cell_grads = [w.grad for w in cell_weights] if need_cells else []
        weights = problem.weights
        # the Fisher trace is of grad_w L_train alone (DARTS-PRIME), before any regularizer adds to it
        self.schedule.observe_weight_gradients([p.grad for p in weights if p.grad is not None])
        for reg in self.weight_regularizers:
            reg.add_gradient(problem, train_batch, cell_weights, cell_grads, epoch, cfg.epochs)
        nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
        self.w_opt.step()
        self.activation.after_weight_step(dict(problem.alphas))
        self._meter("train", loss.detach(), logits.detach(), y)
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
        self._alignment: dict[str, Tensor] = {}

    def _meter(self, split: str, loss: Tensor, logits: Tensor, labels: Tensor) -> None:
        self._sums[f"{split}_loss"] += loss
        self._sums[f"{split}_correct"] += (logits.argmax(1) == labels).sum()
        self._counts[split] += len(labels)
        self._batches[split] += 1

    def _check_finite(self, epoch: int) -> None:
        for split in ("train", "val"):
            if self._batches[split] and not math.isfinite(self._sums[f"{split}_loss"].item()):
                raise NonFiniteLossError(
                    f"the {split} loss became non-finite in epoch {epoch} (step {self.global_step}); lower w_lr or "
                    f"a_lr or check the data; the last good checkpoint in {self.out} was kept"
                )
        for p in self.problem.arch:
            if not torch.isfinite(p).all():
                raise NonFiniteLossError(
                    f"the architecture parameters became non-finite in epoch {epoch}; lower a_lr; the last good "
                    f"checkpoint in {self.out} was kept"
                )

    def _log_step(self, epoch: int) -> dict[str, Any]:
        self._check_finite(epoch)
        record: dict[str, Any] = {"kind": "step", "epoch": epoch, "step": self.global_step,
                                  "lr": self.lr_schedule.get_last_lr()[0], "arch_steps": self.arch_steps}
        for split in ("train", "val"):
            if self._batches[split]:
                record[f"{split}_loss"] = self._sums[f"{split}_loss"].item() / self._batches[split]
                record[f"{split}_acc"] = self._sums[f"{split}_correct"].item() / self._counts[split]
        for t, value in self._alignment.items():
            record[f"alignment.{t}"] = float(value)
        for key, comp in self.components.items():
            for name, value in comp.metrics().items():
                record[f"{key}.{name}"] = float(value)
        self.log.write(record)
        self._reset_meters()
        return record

    def _log_epoch(self, epoch: int) -> None:
        genotype = self.genotype()
        strengths = self.problem.strengths()
        record = {
            "kind": "epoch",
            "epoch": epoch,
            "step": self.global_step,
            "seconds": self.elapsed + time.perf_counter() - self._t0,
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


def write_results(search: Search, genotype: Genotype) -> None:
    out = search.out
    strengths = search.problem.strengths()
    genotype.save(out / "genotype.json")
    results = {
        "genotype": genotype.to_dict(),
        "skip_connect": genotype.count("skip_connect"),
        "parameter_free": genotype.count_parameter_free(),
        "steps": search.global_step,
        "arch_steps": search.arch_steps,
        "seconds": round(search.elapsed + time.perf_counter() - search._t0, 3),
        "strengths": {t: s.cpu().tolist() for t, s in strengths.items()},
        **convergence(search.space, strengths, search.activation.allows_none),
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
