"""Training a derived cell from scratch, as an algorithm: the network, one SGD step, the test score.

:class:`TrainStep` is built from a :class:`~dnas.config.train.TrainConfig` and a genotype; it
reads no run directory and prints nothing (:class:`dnas.retrain.run.Trainer` runs it in one).

Learning rate at fractional epoch ``t`` of ``E``: cosine ``lr_min + (lr - lr_min)(1 + cos(pi t/E))/2``
(``t`` = the epoch for ``cosine``, epoch + step fraction for ``cosine-step``) or
``lr * gamma**epoch`` for ``exponential``. Loss: ``CE(logits) + w_aux * CE(aux_logits)``, with
label smoothing when configured. Drop-path probability of epoch ``e``: ``p * e / epochs``.

Cutout never covers more than half the image side (``min(cutout, size // 2)``: the published 16
on 32x32 CIFAR, 14 on 28x28, 4 on 8x8 images; a larger square would blank every image).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnas.config.train import TrainConfig
from dnas.data import (
    Augment,
    Images,
    batch_stream,
    class_balanced,
    describe_loading,
    evaluation_batches,
    load_dataset,
    same_images,
)
from dnas.errors import DnasError
from dnas.retrain.counting import count_multiply_adds, count_parameters
from dnas.retrain.network import EvalNetwork, build_eval_network, check_genotype
from dnas.runtime.distributed import SINGLE, Group
from dnas.runtime.files import RESULT
from dnas.runtime.resources import parameter_bytes, refuse_unless_fits
from dnas.runtime.runner import Observation, Position, StepOutput
from dnas.spaces import Genotype


def learning_rate(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate of step ``step`` of epoch ``epoch`` (see the module docstring)."""
    if cfg.lr_schedule == "exponential":
        return cfg.lr * cfg.lr_gamma**epoch
    t = epoch + (step / steps_per_epoch if cfg.lr_schedule == "cosine-step" else 0.0)
    return cfg.lr_min + (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * t / cfg.epochs)) / 2.0


def training_data(cfg: TrainConfig) -> tuple[Images, Images]:
    """The training and test images of ``cfg`` (in memory or streamed, ``data_mode``): subsets and the
    common image size applied, the test images after their centred crop (``test_crop``)."""
    train = load_dataset(cfg.dataset, split="train", download=cfg.download, root=cfg.data_root, mode=cfg.data_mode)
    if cfg.test_dataset is None:
        test = load_dataset(cfg.dataset, split="test", download=cfg.download, root=cfg.data_root, mode=cfg.data_mode)
        if same_images(train, test):
            raise DnasError(f"{cfg.dataset} has no separate test split (image folders and zips are one split); "
                            "pass --test-dataset with the test images, or give a folder with train/ and val/")
    else:
        test = load_dataset(cfg.test_dataset, split="test", download=cfg.download, root=cfg.data_root,
                            mode=cfg.data_mode)
    if test.channels != train.channels or test.num_classes > train.num_classes:
        raise DnasError(f"the test data ({test.channels} channels, {test.num_classes} classes) does not match "
                        f"the training data ({train.channels} channels, {train.num_classes} classes)")
    train = class_balanced(train, cfg.max_images, cfg.seed)
    test = class_balanced(test, cfg.max_test_images, cfg.seed)
    size = cfg.image_size or train.image_size
    return train.resized(size), test.resized(size, cfg.test_crop)


class PlainTraining:
    """What a training step reports beyond its losses: no component scalars, no non-finite check of
    its own (the Runner checks the loss), never stopped early."""

    def metrics(self) -> dict[str, float | Tensor]:
        return {}

    def non_finite(self) -> tuple[str, str] | None:
        return None

    def finished_early(self) -> bool:
        return False


class TrainStep(PlainTraining):
    """The training of ``genotype``'s evaluation network under ``cfg`` (see the module docstring).

    Its parts are public: ``net``, ``optimizer``, ``stream`` and the datasets ``train_data`` /
    ``test_data``; :meth:`evaluate` scores the test set.
    """

    splits: tuple[str, ...] = ("train",)
    advice = "lower lr or check the data"

    def __init__(self, cfg: TrainConfig, genotype: Genotype, *, device: torch.device | None = None,
                 group: Group = SINGLE):
        check_genotype(genotype)
        self.cfg, self.genotype = cfg, genotype
        self.device = torch.device("cpu") if device is None else device
        self.group = group
        torch.manual_seed(cfg.seed)
        self.train_data, self.test_data = data, _ = training_data(cfg)
        self.cutout = min(cfg.cutout, data.image_size // 2)
        augment = Augment.for_images(data.image_size, data.channels, crop_padding=cfg.crop_padding, flip=cfg.flip,
                                     cutout=self.cutout, resized_crop=cfg.resized_crop,
                                     color_jitter=cfg.color_jitter, hue=cfg.hue)
        self.stream = batch_stream(data, torch.arange(len(data)), cfg.batch_size, seed=cfg.seed * 2 + 1,
                                   augment=augment, device=self.device, part="training set", workers=cfg.workers)
        self.environment = {"data": describe_loading(data, cfg.workers),  # for env.json
                            "test_data": describe_loading(self.test_data, cfg.workers)}
        self.steps_per_epoch = self.stream.batches_per_epoch
        self.epochs = cfg.epochs
        def build() -> EvalNetwork:
            return build_eval_network(genotype, num_classes=data.num_classes, in_channels=data.channels,
                                      channels=cfg.channels, layers=cfg.layers, auxiliary=cfg.auxiliary, stem=cfg.stem)

        # lower bounds: the weights with their gradients and momentum, and the stem's output (C x H x W per image)
        stem_floats = cfg.batch_size * (cfg.channels or 16) * data.image_size ** 2
        refuse_unless_fits(3 * parameter_bytes(build) + 4 * stem_floats,
                           f"training with channels={cfg.channels}, layers={cfg.layers}, batch_size={cfg.batch_size}",
                           "lower them", self.device)
        self.net: EvalNetwork = build().to(self.device)
        self.params = count_parameters(self.net)
        self.multiply_adds = count_multiply_adds(self.net, (data.channels, data.image_size, data.image_size))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        self.last_test: dict[str, float] = {}  # the latest test-set evaluation (empty before the first)

    # ----- the iteration -------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        self.net.drop_path_prob = self.cfg.drop_path_prob * epoch / self.cfg.epochs

    def loss(self, logits: Tensor, aux: Tensor | None, y: Tensor) -> Tensor:
        loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
        if aux is not None and self.cfg.auxiliary_weight:
            loss = loss + self.cfg.auxiliary_weight * F.cross_entropy(aux, y, label_smoothing=self.cfg.label_smoothing)
        return loss

    def iterate(self, at: Position) -> StepOutput:
        """One SGD step on the next training batch, at the learning rate of ``at``."""
        cfg = self.cfg
        lr = learning_rate(cfg, at.epoch, at.step, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.net.train()
        x, y = self.group.shard(next(self.stream))  # every rank draws the global batch, keeps its shard
        self.optimizer.zero_grad(set_to_none=True)
        logits, aux = self.net(x)
        loss = self.loss(logits, aux, y)
        loss.backward()
        self.group.mean_([p.grad for p in self.net.parameters()])  # data parallel: the global batch's gradient
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.group.mean_buffers_(self.net)
        return StepOutput([Observation("train", loss.detach(), (logits.detach().argmax(1) == y).sum(), len(y))])

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
        for images, labels in evaluation_batches(data, first, last, self.cfg.eval_batch_size, device=self.device,
                                            workers=self.cfg.workers):
            logits, _ = self.net((images.float() / 255 - mean) / std)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
        self.net.train()
        loss_sum, correct = self.group.sum(torch.stack([loss_sum, correct.float()])).tolist()
        return {"test_loss": loss_sum / len(data), "test_acc": correct / len(data)}

    # ----- records ---------------------------------------------------------------------------------------
    def log_fields(self, at: Position) -> dict[str, Any]:
        return {"lr": learning_rate(self.cfg, at.epoch, at.step, self.steps_per_epoch)}

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """The epoch record's fields: the drop-path probability and, every ``eval_every`` epochs and
        at the last, the test loss and accuracy."""
        record: dict[str, Any] = {"drop_path_prob": self.net.drop_path_prob}
        if epoch + 1 == self.cfg.epochs or (epoch + 1) % self.cfg.eval_every == 0:
            self.last_test = self.evaluate()
            record.update(self.last_test)
        return record

    def results(self, at: Position, seconds: float) -> dict[str, Any]:
        """``result.json``: test accuracy (fraction), parameters, multiply-adds and the budget."""
        data = self.train_data
        return {RESULT: {
            "genotype": self.genotype.to_dict(),
            "test_acc": self.last_test.get("test_acc"),
            "test_loss": self.last_test.get("test_loss"),
            "params": self.params,
            "multiply_adds": self.multiply_adds,
            "counting": "params without the auxiliary head; multiply-adds of conv and linear layers for one "
                        f"{data.channels}x{data.image_size}x{data.image_size} image (dnas.retrain.counting)",
            "dataset": self.cfg.dataset,
            "train_images": len(data),
            "test_images": len(self.test_data),
            "image_size": data.image_size,
            "cutout": self.cutout,
            "num_classes": data.num_classes,
            "epochs": self.cfg.epochs,
            "steps": at.global_step,
            "seconds": round(seconds, 3),
        }}

    # ----- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"genotype": self.genotype.to_dict(), "net": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(), "stream": self.stream.state_dict(),
                "last_test": self.last_test}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["stream"])
        self.last_test = state["last_test"]
