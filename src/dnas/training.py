"""``dnas train``: train a derived architecture from scratch and report its test accuracy.

The evaluation network comes from :mod:`dnas.evalnet`; the schedule from one of three presets,
each the published protocol of its family (every value can be overridden):

``darts-cifar`` (DARTS family: quark0/darts ``cnn/train.py`` run as its README says, with
``--auxiliary --cutout``; that file is not in our reference index, so the values were checked
against PR-DARTS ``PRDARTS_eval/train_cifar.py``, which shares them except batch 128 and
drop-path 0.3, and the Lambda-DARTS / DARTS-PRIME eval defaults in spec/methods.md 2.3, 3.6):
    20 cells, C=36, 600 epochs, batch 96, SGD momentum 0.9, lr 0.025 cosine-annealed per epoch
    to 0, weight decay 3e-4, gradient-norm clip 5, auxiliary head weight 0.4, cutout 16,
    drop-path probability ramped linearly ``p_e = 0.2 * e / epochs``.
``darts-imagenet`` (quark0/darts ``cnn/train_imagenet.py``; 250 epochs and C=48 are the DARTS
paper's mobile setting, the code's defaults at the commit read were 1000 and 50):
    14 cells, C=48, ImageNet stem, 250 epochs, batch 128, lr 0.1 multiplied by 0.97 after every
    epoch, weight decay 3e-5, label smoothing 0.1, auxiliary weight 0.4, clip 5, no drop-path.
    Augmentation as that script: random-resized crop, flip, colour jitter 0.4 (brightness,
    contrast, saturation) and hue 0.2, as batched tensor ops (:class:`dnas.data.Augment`: fixed
    jitter order, bilinear resize without antialiasing), on images stored at their final size.
``nb201`` (NAS-Bench-201's 200-epoch protocol: AutoDL-Projects
``configs/nas-benchmark/hyper-opts/200E.config`` and ``lib/procedures/funcs_nasbench.py``):
    C=16, N=5, 200 epochs, batch 256, SGD lr 0.1 with Nesterov momentum 0.9, cosine-annealed to
    0 **per iteration** (``t = epoch + step / steps_per_epoch``), weight decay 5e-4, no gradient
    clipping, no cutout, no drop-path, no auxiliary head; random crop (padding 4) and flip.

Cutout never covers more than half the image side (``min(cutout, size // 2)``: the published 16
on 32x32 CIFAR, 14 on 28x28, 4 on 8x8 images; a larger square would blank every image).

Learning rate at fractional epoch ``t`` of ``E``: cosine ``lr_min + (lr - lr_min)(1 + cos(pi t/E))/2``
(``t`` = the epoch for ``cosine``, epoch + step fraction for ``cosine-step``) or
``lr * gamma**epoch`` for ``exponential``. Loss: ``CE(logits) + w_aux * CE(aux_logits)``.

A run directory holds ``config.yaml``, ``env.json``, ``genotype.json``, ``metrics.jsonl`` (step
records every ``log_every`` steps, an epoch record with the test accuracy every ``eval_every``
epochs), ``checkpoint.pt`` (full state, written atomically every ``checkpoint_every`` steps and at
every epoch end) and at the end ``result.json`` (test accuracy as a fraction, parameter count
without the auxiliary head, multiply-adds; see :mod:`dnas.counting`). Running again with the same
directory resumes from the checkpoint to exactly the weights an uninterrupted run reaches.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from dnas.allocator import retain_freed_memory
from dnas.config import Config, split_override
from dnas.counting import count_multiply_adds, count_parameters
from dnas.data import Augment, BatchStream, ImageDataset, load_dataset, stratified_subset
from dnas.distributed import setup as setup_distributed
from dnas.errors import DnasError, NonFiniteLossError
from dnas.evalnet import EvalNetwork, build_eval_network, check_genotype, family_of
from dnas.genotypes import ResolvedGenotype, resolve_genotype
from dnas.runs import SINKS, GracefulStop, RunDir, progress_bar, resolve_device, rng_state, set_rng_state
from dnas.spaces import Genotype

GENOTYPE = "genotype.json"
RESULT = "result.json"
RESUME_FREE_KEYS = {"device", "log_every", "checkpoint_every", "log"}
LR_SCHEDULES = ("cosine", "cosine-step", "exponential")


@dataclass
class TrainConfig(Config):
    """Everything that defines a training run (``config.yaml`` of a training run)."""

    kind: ClassVar[str] = "training"

    genotype: str = "DARTS_V2"  # as given: a genotype.json path, a published name or an NB201 arch string
    preset: str = "darts-cifar"
    # data
    dataset: str = "cifar10"
    test_dataset: str | None = None  # None: the test split of ``dataset``
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None
    max_images: int | None = None  # class-balanced subset of the training images (CPU budgets)
    max_test_images: int | None = None
    # network
    channels: int | None = None
    layers: int | None = None
    stem: str = "cifar"
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2
    # optimisation
    epochs: int = 600
    batch_size: int = 96
    lr: float = 0.025
    lr_min: float = 0.0
    lr_schedule: str = "cosine"
    lr_gamma: float = 0.97
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # 0: no clipping
    label_smoothing: float = 0.0
    # augmentation (None: automatic for the dataset)
    crop_padding: int | None = None
    flip: bool | None = None
    cutout: int = 16
    resized_crop: bool = False  # Inception-style random-resized crop instead of the padded crop
    color_jitter: float = 0.0  # brightness / contrast / saturation strength (RGB)
    hue: float = 0.0  # hue jitter range (RGB)
    # bookkeeping
    seed: int = 0
    eval_every: int = 1
    eval_batch_size: int = 256
    log_every: int = 50
    log: str = "jsonl"  # metric sinks: jsonl, or tensorboard (JSON lines and TensorBoard events)
    checkpoint_every: int = 200
    device: str = "cpu"


PRESETS: dict[str, dict[str, Any]] = {
    "darts-cifar": {"stem": "cifar", "channels": 36, "layers": 20, "epochs": 600, "batch_size": 96, "lr": 0.025,
                    "lr_min": 0.0, "lr_schedule": "cosine", "momentum": 0.9, "nesterov": False,
                    "weight_decay": 3e-4, "grad_clip": 5.0, "auxiliary": True, "auxiliary_weight": 0.4,
                    "drop_path_prob": 0.2, "cutout": 16, "label_smoothing": 0.0},
    "darts-imagenet": {"stem": "imagenet", "channels": 48, "layers": 14, "epochs": 250, "batch_size": 128,
                       "lr": 0.1, "lr_schedule": "exponential", "lr_gamma": 0.97, "momentum": 0.9,
                       "nesterov": False, "weight_decay": 3e-5, "grad_clip": 5.0, "auxiliary": True,
                       "auxiliary_weight": 0.4, "drop_path_prob": 0.0, "cutout": 0, "label_smoothing": 0.1,
                       "resized_crop": True, "color_jitter": 0.4, "hue": 0.2},
    "nb201": {"stem": "cifar", "channels": 16, "layers": 5, "epochs": 200, "batch_size": 256, "lr": 0.1,
              "lr_min": 0.0, "lr_schedule": "cosine-step", "momentum": 0.9, "nesterov": True,
              "weight_decay": 5e-4, "grad_clip": 0.0, "auxiliary": False, "drop_path_prob": 0.0, "cutout": 0,
              "crop_padding": 4, "label_smoothing": 0.0},
}
FAMILY_PRESETS = {"darts": ("darts-cifar", "darts-imagenet"), "nb201": ("nb201",)}


# ------------------------------------------------------------------------------------ resolution


def resolve_train_config(genotype: str | None, flags: dict[str, Any] | None = None,
                         overrides: list[str] | None = None,
                         base: dict[str, Any] | None = None) -> tuple[TrainConfig, ResolvedGenotype]:
    """The training configuration: preset of the genotype's family < ``--config`` file (``base``)
    < flags < ``key=value`` overrides.

    ``preset`` (in the file, flags or overrides) picks ``darts-cifar``/``darts-imagenet`` (DARTS
    family) or ``nb201``. ``genotype`` None: the file's. When no dataset is given and the genotype
    is the ``genotype.json`` of a search run, the search's dataset and data root are used.
    """
    base = dict(base or {})
    unknown = sorted(set(base) - set(TrainConfig.field_names()))
    if unknown:
        raise DnasError(f"unknown config key(s) {', '.join(map(str, unknown))} in the config file; keys are: "
                        f"{', '.join(sorted(TrainConfig.field_names()))}")
    genotype = genotype if genotype is not None else base.get("genotype")
    if not genotype:
        raise DnasError("give the cell to train: a genotype.json, a published name or an NB201 arch string")
    resolved = resolve_genotype(str(genotype))
    check_genotype(resolved.genotype)
    family = family_of(resolved.genotype)
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    items = [split_override(o) for o in overrides or []]
    preset = dict(items).get("preset", flags.get("preset", base.get("preset", FAMILY_PRESETS[family][0])))
    if preset not in PRESETS:
        raise DnasError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if preset not in FAMILY_PRESETS[family]:
        raise DnasError(f"preset {preset!r} does not fit a {resolved.genotype.space} genotype; use "
                        f"{' or '.join(FAMILY_PRESETS[family])}")
    cfg = TrainConfig(genotype=str(genotype), preset=preset)
    for key, value in PRESETS[preset].items():
        cfg.set(key, value)
    for key, value in base.items():
        if key not in ("genotype", "preset"):
            cfg.set(key, value)
    given = set(flags) | {k for k, _ in items} | set(base)
    if "dataset" not in given and resolved.search_dir is not None:
        search_cfg = yaml.safe_load((resolved.search_dir / "config.yaml").read_text()) or {}
        if search_cfg.get("dataset"):
            cfg.dataset = search_cfg["dataset"]
            if "data_root" not in given:
                cfg.data_root = search_cfg.get("data_root")
    for key, value in [*flags.items(), *items]:
        if key != "preset":
            cfg.set(key, value)
    validate(cfg, family)
    return cfg, resolved


def validate(cfg: TrainConfig, family: str) -> None:
    checks = [
        (cfg.epochs >= 1, f"epochs must be at least 1, got {cfg.epochs}"),
        (cfg.batch_size >= 2, f"batch_size must be at least 2 (BatchNorm), got {cfg.batch_size}"),
        (cfg.eval_batch_size >= 1, "eval_batch_size must be at least 1"),
        (cfg.lr > 0 and 0 <= cfg.lr_min <= cfg.lr, "need 0 <= lr_min <= lr and lr > 0"),
        (cfg.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}"),
        (0 < cfg.lr_gamma <= 1, "lr_gamma must lie in (0, 1]"),
        (cfg.grad_clip >= 0, "grad_clip must be >= 0 (0 turns clipping off)"),
        (0 <= cfg.drop_path_prob < 1, "drop_path_prob must lie in [0, 1)"),
        (0 <= cfg.label_smoothing < 1, "label_smoothing must lie in [0, 1)"),
        (cfg.auxiliary_weight >= 0, "auxiliary_weight must be >= 0"),
        (cfg.eval_every >= 1 and cfg.log_every >= 1, "eval_every and log_every must be at least 1"),
        (cfg.checkpoint_every >= 0, "checkpoint_every must be >= 0 (0: at epoch ends only)"),
        (cfg.channels is None or cfg.channels >= 2, "channels must be at least 2"),
        (cfg.layers is None or cfg.layers >= 1, "layers must be at least 1"),
        (cfg.image_size is None or cfg.image_size >= 4, "image_size must be at least 4"),
        (cfg.max_images is None or cfg.max_images >= cfg.batch_size, "max_images must be at least one batch"),
        (cfg.max_test_images is None or cfg.max_test_images >= 1, "max_test_images must be at least 1"),
        (cfg.stem in ("cifar", "imagenet"), f"stem must be cifar or imagenet, got {cfg.stem!r}"),
        (0 <= cfg.momentum < 1, f"momentum must lie in [0, 1), got {cfg.momentum}"),
        (cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}"),
        (cfg.crop_padding is None or cfg.crop_padding >= 0, "crop_padding must be >= 0"),
        (cfg.cutout >= 0, f"cutout must be >= 0, got {cfg.cutout}"),
        (cfg.color_jitter >= 0 and 0 <= cfg.hue <= 0.5, "color_jitter must be >= 0 and hue in [0, 0.5]"),
        (cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}"),
        (cfg.log in SINKS, f"log must be one of {', '.join(SINKS)}, got {cfg.log!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise DnasError(message)
    if family == "darts" and cfg.channels is not None and cfg.channels % 2:
        raise DnasError(f"DARTS evaluation networks need an even number of channels, got {cfg.channels}")
    if family == "nb201" and (cfg.auxiliary or cfg.stem != "cifar"):
        raise DnasError("the NAS-Bench-201 network has no auxiliary head and a fixed stem; "
                        "set auxiliary=false stem=cifar")


def learning_rate(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate of step ``step`` of epoch ``epoch`` (see the module docstring)."""
    if cfg.lr_schedule == "exponential":
        return cfg.lr * cfg.lr_gamma**epoch
    t = epoch + (step / steps_per_epoch if cfg.lr_schedule == "cosine-step" else 0.0)
    return cfg.lr_min + (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * t / cfg.epochs)) / 2.0


def _same_images(a: ImageDataset, b: ImageDataset) -> bool:
    return a.images.shape == b.images.shape and torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)


# --------------------------------------------------------------------------------------- trainer


class Trainer:
    """A training run in directory ``out``; :meth:`run` resumes from ``out/checkpoint.pt`` when present."""

    last_test: dict[str, float]  # the latest test-set evaluation (empty before the first)

    def __init__(self, cfg: TrainConfig, genotype: Genotype, out: str | Path, progress: bool = True):
        check_genotype(genotype)
        retain_freed_memory()  # every step reuses the last one's host memory (dnas.allocator)
        self.cfg = cfg
        self.genotype = genotype
        self.out = Path(out)
        self.progress = progress
        self.group, device = setup_distributed(cfg.device)  # launched by torchrun: data parallel
        self.device = resolve_device(device)
        if cfg.batch_size % self.group.world:
            raise DnasError(f"batch_size {cfg.batch_size} is the global batch of {self.group.world} processes and "
                            "must be divisible by their number")
        self.run_dir = RunDir(self.out, "train", own_files={GENOTYPE, RESULT}, results={RESULT},
                              resume_free=RESUME_FREE_KEYS | {"genotype"}, defaults=TrainConfig.comparison_defaults(),
                              group=self.group)

    # ----- set-up ------------------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg = self.cfg
        train = load_dataset(cfg.dataset, split="train", download=cfg.download, root=cfg.data_root)
        if cfg.test_dataset is None:
            test = load_dataset(cfg.dataset, split="test", download=cfg.download, root=cfg.data_root)
            if _same_images(train, test):
                raise DnasError(f"{cfg.dataset} has no separate test split (image folders and zips are one split); "
                                "pass --test-dataset with the test images")
        else:
            test = load_dataset(cfg.test_dataset, split="test", download=cfg.download, root=cfg.data_root)
        if test.channels != train.channels or test.num_classes > train.num_classes:
            raise DnasError(f"the test data ({test.channels} channels, {test.num_classes} classes) does not match "
                            f"the training data ({train.channels} channels, {train.num_classes} classes)")
        train = self._subset(train, cfg.max_images)
        test = self._subset(test, cfg.max_test_images)
        size = cfg.image_size or train.image_size
        self.train_data, self.test_data = train.resized(size), test.resized(size)

    def _subset(self, data: ImageDataset, limit: int | None) -> ImageDataset:
        if not limit or limit >= len(data):
            return data
        keep = stratified_subset(data.labels, fraction=limit / len(data), seed=self.cfg.seed)
        return ImageDataset.from_tensors(data.images[keep], data.labels[keep], data.classes, data.name)

    def _build(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self._load_data()
        data = self.train_data
        self.cutout = min(cfg.cutout, data.image_size // 2)
        augment = Augment.for_images(data.image_size, data.channels, crop_padding=cfg.crop_padding, flip=cfg.flip,
                                     cutout=self.cutout, resized_crop=cfg.resized_crop,
                                     color_jitter=cfg.color_jitter, hue=cfg.hue)
        self.stream = BatchStream(data, torch.arange(len(data)), cfg.batch_size, seed=cfg.seed * 2 + 1,
                                  augment=augment, device=self.device, part="training set")
        self.steps_per_epoch = self.stream.batches_per_epoch
        self.net: EvalNetwork = build_eval_network(
            self.genotype, num_classes=data.num_classes, in_channels=data.channels, channels=cfg.channels,
            layers=cfg.layers, auxiliary=cfg.auxiliary, stem=cfg.stem,
        ).to(self.device)
        self.params = count_parameters(self.net)
        self.multiply_adds = count_multiply_adds(self.net, (data.channels, data.image_size, data.image_size))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)

    # ----- checkpoints -------------------------------------------------------------------------------
    def _state(self, epoch: int, step: int, finished: bool) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "genotype": self.genotype.to_dict(),
            "epoch": epoch,
            "step": step,
            "global_step": self.global_step,
            "finished": finished,
            "elapsed": self.elapsed + time.perf_counter() - self._t0,
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "stream": self.stream.state_dict(),
            "meters": {"window": self._window, "epoch": self._epoch_sums},
            "last_test": self.last_test,
            "rng": rng_state(),
        }

    def _save(self, epoch: int, step: int, finished: bool = False) -> None:
        self.run_dir.save_checkpoint(self._state(epoch, step, finished))

    def _load_checkpoint(self) -> dict[str, Any] | None:
        # the genotype is compared as a cell, not as the text that named it
        return self.run_dir.load_checkpoint(
            self.cfg.to_dict(), self.device,
            lambda state: ["the genotype"] if state["genotype"] != self.genotype.to_dict() else [])

    def _restore(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["stream"])
        self._window, self._epoch_sums = ({k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in m.items()}
                                          for m in (state["meters"]["window"], state["meters"]["epoch"]))
        self.last_test = state["last_test"]
        set_rng_state(state["rng"])
        self.global_step = state["global_step"]
        self.elapsed = state["elapsed"]

    # ----- the loop ----------------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> dict[str, Any] | None:
        """Train to the end and return the result (also written to ``result.json``).

        ``stop_after``: stop once the run has taken that many steps in total, with the checkpoint
        saved, and return None (what an interruption does; running again resumes).
        """
        self.run_dir.open()
        failed = True
        try:
            self._build()
            state = self._load_checkpoint()
            self.global_step, self.elapsed = 0, 0.0
            self._reset_window()
            self._reset_epoch()
            self.last_test = {}
            if state is None:
                self.run_dir.start(self.cfg.to_yaml())
                self.run_dir.write_json(GENOTYPE, self.genotype.to_dict())
            else:
                self._restore(state)
            self._t0 = time.perf_counter()
            self.log = self.run_dir.metrics(None if state is None else state["metrics_offset"], self.cfg.log,
                                            purge_step=self.global_step)
            if state is not None and state["finished"] and self.run_dir.file(RESULT).exists():
                failed = False
                return self.run_dir.read_json(RESULT)
            start: tuple[int, int] = (0, 0) if state is None else (state["epoch"], state["step"])
            with GracefulStop() as self._stop:
                finished = self._loop(*start, stop_after)
            result = self._write_result() if finished else None
            failed = False
            return result
        finally:
            if failed:
                self.run_dir.abandon()
            else:
                self.run_dir.close()

    def _interrupted(self) -> DnasError:
        return DnasError(f"interrupted; the training run is saved in {self.out}: run the same command again to "
                         "resume it")

    def _loop(self, start_epoch: int, start_step: int, stop_after: int | None) -> bool:
        cfg = self.cfg
        bar = progress_bar(self.progress, cfg.epochs * self.steps_per_epoch, self.global_step,
                           f"train {self.out.name}")
        try:
            for epoch in range(start_epoch, cfg.epochs):
                self.net.drop_path_prob = cfg.drop_path_prob * epoch / cfg.epochs
                first = start_step if epoch == start_epoch else 0
                for step in range(first, self.steps_per_epoch):
                    self._step(epoch, step)
                    self.global_step += 1
                    if bar is not None:
                        bar.update(1)
                    if self.global_step % cfg.log_every == 0:
                        self._log_step(epoch, step)
                    requested = self.group.any(self._stop.requested, self.device)  # all ranks stop together
                    stop = requested or (stop_after is not None and self.global_step >= stop_after)
                    if stop or (cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0):
                        self._averages(self._epoch_sums, epoch)  # never checkpoint non-finite weights
                        self._save(epoch, step + 1)
                    if stop:
                        if requested:
                            raise self._interrupted()
                        return False
                self._end_epoch(epoch)
        finally:
            if bar is not None:
                bar.close()
        return True

    def _loss(self, logits: Tensor, aux: Tensor | None, y: Tensor) -> Tensor:
        loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        if aux is not None and self.cfg.auxiliary_weight:
            loss = loss + self.cfg.auxiliary_weight * F.cross_entropy(aux, y, label_smoothing=self.cfg.label_smoothing)
        return loss

    def _step(self, epoch: int, step: int) -> None:
        cfg = self.cfg
        lr = learning_rate(cfg, epoch, step, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.net.train()
        x, y = self.group.shard(next(self.stream))  # every rank draws the global batch, keeps its shard
        self.optimizer.zero_grad(set_to_none=True)
        logits, aux = self.net(x)
        loss = self._loss(logits, aux, y)
        loss.backward()
        self.group.mean_([p.grad for p in self.net.parameters()])  # data parallel: the global batch's gradient
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.group.mean_buffers_(self.net)
        loss, correct = loss.detach(), (logits.detach().argmax(1) == y).sum()
        for sums in (self._window, self._epoch_sums):
            sums["loss"] += loss
            sums["correct"] += correct
            sums["batches"] += 1
            sums["images"] += len(y)

    # ----- metrics -----------------------------------------------------------------------------------
    def _zeros(self) -> dict[str, Any]:
        zero = torch.zeros((), device=self.device)
        return {"loss": zero.clone(), "correct": zero.clone(), "batches": 0, "images": 0}

    def _reset_window(self) -> None:
        self._window = self._zeros()

    def _reset_epoch(self) -> None:
        self._epoch_sums = self._zeros()

    def _averages(self, sums: dict[str, Any], epoch: int) -> tuple[float, float]:
        """Mean loss and accuracy of a window, over all ranks (every rank stops alike on a NaN)."""
        total = self.group.sum(torch.stack([sums["loss"].float(), sums["correct"].float()])).tolist()
        world = self.group.world
        loss = total[0] / max(sums["batches"] * world, 1)
        if not math.isfinite(loss):
            kept = (f"the last good checkpoint in {self.out} was kept (rerun with other settings under another --out)"
                    if self.run_dir.has_checkpoint else f"no checkpoint had been written, so {self.out} was left as "
                    "it was")
            raise NonFiniteLossError(f"the training loss became non-finite in epoch {epoch} (step {self.global_step});"
                                     f" lower lr or check the data; {kept}")
        return loss, total[1] / max(sums["images"] * world, 1)

    def _log_step(self, epoch: int, step: int) -> None:
        loss, acc = self._averages(self._window, epoch)
        self.log.write({"kind": "step", "epoch": epoch, "step": self.global_step,
                        "lr": learning_rate(self.cfg, epoch, step, self.steps_per_epoch),
                        "train_loss": loss, "train_acc": acc})
        self._reset_window()

    def _end_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        loss, acc = self._averages(self._epoch_sums, epoch)
        record: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": self.global_step, "train_loss": loss,
                                  "train_acc": acc, "drop_path_prob": self.net.drop_path_prob}
        last = epoch + 1 == cfg.epochs
        if last or (epoch + 1) % cfg.eval_every == 0:
            self.last_test = self.evaluate()
            record.update(self.last_test)
        record["seconds"] = self.elapsed + time.perf_counter() - self._t0
        self.log.write(record)
        self._reset_epoch()
        self._save(epoch + 1, 0, finished=last)
        if self.group.any(self._stop.requested, self.device) and not last:
            raise self._interrupted()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Test loss and accuracy (fraction), BatchNorm in inference mode, train-set normalisation
        (data parallel: each rank scores a contiguous part of the test set, the sums are reduced)."""
        self.net.eval()
        data = self.test_data
        part = -(-len(data) // self.group.world)
        first, last = self.group.rank * part, min(len(data), (self.group.rank + 1) * part)
        mean = torch.tensor(self.train_data.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(self.train_data.std, device=self.device).view(1, -1, 1, 1).clamp(min=1e-8)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for start in range(first, last, self.cfg.eval_batch_size):
            end = min(last, start + self.cfg.eval_batch_size)
            images = data.images[start:end].to(self.device)
            labels = data.labels[start:end].to(self.device)
            logits, _ = self.net((images.float() / 255 - mean) / std)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
        self.net.train()
        loss_sum, correct = self.group.sum(torch.stack([loss_sum, correct.float()])).tolist()
        return {"test_loss": loss_sum / len(data), "test_acc": correct / len(data)}

    def _write_result(self) -> dict[str, Any]:
        data = self.train_data
        result = {
            "genotype": self.genotype.to_dict(),
            "test_acc": self.last_test.get("test_acc"),
            "test_loss": self.last_test.get("test_loss"),
            "params": self.params,
            "multiply_adds": self.multiply_adds,
            "counting": "params without the auxiliary head; multiply-adds of conv and linear layers for one "
                        f"{data.channels}x{data.image_size}x{data.image_size} image (dnas.counting)",
            "dataset": self.cfg.dataset,
            "train_images": len(data),
            "test_images": len(self.test_data),
            "image_size": data.image_size,
            "cutout": self.cutout,
            "num_classes": data.num_classes,
            "epochs": self.cfg.epochs,
            "steps": self.global_step,
            "seconds": round(self.elapsed + time.perf_counter() - self._t0, 3),
        }
        self.run_dir.write_json(RESULT, result)
        return result


def train(genotype: str, out: str | Path, flags: dict[str, Any] | None = None, overrides: list[str] | None = None,
          progress: bool = False) -> dict[str, Any] | None:
    """Resolve ``genotype`` and the configuration, then train in ``out`` (resuming when possible)."""
    cfg, resolved = resolve_train_config(genotype, flags, overrides)
    return Trainer(cfg, resolved.genotype, out, progress=progress).run()
