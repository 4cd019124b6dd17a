"""Training a recurrent-space genotype as a word-level language model, as an algorithm
(quark0/darts ``rnn/train.py``; :class:`dnas.retrain.run.Trainer` runs it in a run directory).

Per step at training row ``i``: a BPTT length ``L`` (:func:`dnas.data.text.training_lengths`), the
learning rate ``lr * L / bptt`` for this step only, the segment ``[i, i + L)`` from the carried
(detached) state, ``CE + TAR`` backward, gradient-norm clipping, the optimizer step, ``i += L``.

NT-ASGD at every epoch end (``train.py``): while the optimizer is SGD, the validation loss (eval
mode, ``eval_batch_size`` streams, state carried) is compared with the list of earlier epochs'
losses; when the list is longer than ``nonmono`` and the loss is worse than the best of all but the
last ``nonmono`` entries, the optimizer becomes ASGD (same lr and weight decay, averaging from its
first step, no decay of the rate). Under ASGD the averaged weights are evaluated. Whichever weights
score best on the validation split are kept (DARTS saves them as ``model.pt``); at the end they are
scored on the test split (``test_batch_size`` streams) and ``result.json`` holds both perplexities.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dnas.config.train import TrainConfig
from dnas.data.text import Corpus, batchify, epoch_generator, load_corpus, segment, training_lengths
from dnas.errors import DnasError
from dnas.retrain.counting import count_parameters
from dnas.retrain.recurrent import build_recurrent_model
from dnas.retrain.step import PlainTraining
from dnas.runtime.distributed import SINGLE, Group
from dnas.runtime.files import RESULT
from dnas.runtime.runner import Observation, Position, StepOutput
from dnas.spaces import Genotype
from dnas.spaces.recurrent import EVAL_HIDDEN
from dnas.spaces.recurrent_ops import corpus_loss, temporal_activation_regularization


def perplexity(loss: float | None) -> float | None:
    return None if loss is None else math.exp(min(loss, 700.0))


def training_corpus(cfg: TrainConfig) -> Corpus:
    if cfg.dataset in ("digits", "cifar10", "cifar100"):
        raise DnasError("a recurrent genotype trains on a text corpus: give --dataset FOLDER holding train.txt, "
                        "valid.txt and test.txt (or ptb.train.txt, ptb.valid.txt, ptb.test.txt)")
    return load_corpus(cfg.dataset)


class LanguageTrainStep(PlainTraining):
    """The training of ``genotype``'s language model under ``cfg`` (module docstring); its parts are
    public: ``net``, ``optimizer``, the batchified splits ``train_data``, ``val_data``, ``test_data``."""

    splits: tuple[str, ...] = ("train",)
    advice = "lower lr or check the data"

    def __init__(self, cfg: TrainConfig, genotype: Genotype, *, corpus: Corpus | None = None,
                 device: torch.device | None = None, group: Group = SINGLE):
        if group.world > 1:
            raise DnasError("a language model trains in one process; start it without torchrun")
        self.cfg, self.genotype = cfg, genotype
        self.device = torch.device("cpu") if device is None else device
        torch.manual_seed(cfg.seed)
        self.corpus = corpus = training_corpus(cfg) if corpus is None else corpus
        train = corpus.train if cfg.max_tokens is None else corpus.train[: cfg.max_tokens]
        self.train_data = batchify(train, cfg.batch_size).to(self.device)
        self.val_data = batchify(corpus.valid, cfg.eval_batch_size).to(self.device)
        self.test_data = batchify(corpus.test, cfg.test_batch_size).to(self.device)
        for name, data in (("training", self.train_data), ("validation", self.val_data), ("test", self.test_data)):
            if data.shape[0] < 3:
                raise DnasError(f"the {name} split holds {data.shape[0]} rows at its batch size; lower the batch size "
                                "or use a larger corpus")
        self.hidden_size = cfg.hidden_size or EVAL_HIDDEN
        self.net = build_recurrent_model(genotype, corpus.vocabulary_size, self.hidden_size, dropout=cfg.dropout,
                                         dropout_h=cfg.dropout_h, dropout_x=cfg.dropout_x, dropout_i=cfg.dropout_i,
                                         dropout_e=cfg.dropout_e).to(self.device)
        self.params = count_parameters(self.net)
        self.optimizer: torch.optim.Optimizer = self.sgd()
        self.averaging = False  # the optimizer is ASGD
        self.history: list[float] = []  # the validation losses of the SGD epochs (NT-ASGD's record)
        self.best_loss: float | None = None
        self.best_state: dict[str, Tensor] | None = None
        self.last_valid: float | None = None
        self.test_loss: float | None = None
        self.position = 0
        self.hidden = self.net.init_hidden(cfg.batch_size)
        self.epochs = cfg.epochs
        self.lengths = self.epoch_lengths(0)

    def sgd(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum,
                               weight_decay=self.cfg.weight_decay, nesterov=self.cfg.nesterov)

    def asgd(self) -> torch.optim.Optimizer:
        """``train.py``: ``ASGD(lr, t0=0, lambd=0, weight_decay)``: the average starts at once, the rate stays."""
        return torch.optim.ASGD(self.net.parameters(), lr=self.cfg.lr, t0=0, lambd=0.0,
                                weight_decay=self.cfg.weight_decay)

    def epoch_lengths(self, epoch: int) -> list[int]:
        return training_lengths(self.train_data.shape[0], self.cfg.bptt, self.cfg.max_seq_len_delta,
                                epoch_generator(self.cfg.seed, epoch))

    @property
    def steps_per_epoch(self) -> int:
        return len(self.lengths)

    # ----- the iteration -------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        self.lengths = self.epoch_lengths(epoch)

    def iterate(self, at: Position) -> StepOutput:
        cfg = self.cfg
        self.net.train()
        length = self.lengths[at.step]
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * length / cfg.bptt  # train.py: lr2 * seq_len / args.bptt, this step only
        inputs, targets = segment(self.train_data, self.position, length)
        self.optimizer.zero_grad(set_to_none=True)
        logits, finals, raw = self.net(inputs, self.hidden)
        loss = F.cross_entropy(logits, targets.reshape(-1))
        objective = loss + temporal_activation_regularization(raw, cfg.tar) if cfg.tar else loss
        objective.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.optimizer.step()
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr
        self.hidden = [h.detach() for h in finals]
        self.position += length
        correct = (logits.detach().argmax(1) == targets.reshape(-1)).sum()
        return StepOutput([Observation("train", loss.detach(), correct, targets.numel())])

    @torch.no_grad()
    def evaluate(self, data: Tensor) -> float:
        """Mean cross-entropy over the batchified split ``data`` (eval mode, state carried)."""
        self.net.eval()
        try:
            return corpus_loss(lambda x, h: self.net(x, h)[:2], data, self.net.init_hidden(data.shape[1]),
                               self.cfg.bptt)
        finally:
            self.net.train()

    def averaged_weights(self) -> dict[str, Tensor]:
        """The weights with ASGD's averages in place of the parameters (the buffers as they are)."""
        state = dict(self.net.state_dict())
        names = {id(p): name for name, p in self.net.named_parameters()}
        for p in self.net.parameters():
            avg = self.optimizer.state.get(p, {}).get("ax")
            if avg is not None:
                state[names[id(p)]] = avg
        return state

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """NT-ASGD and the best weights (module docstring); the next epoch starts at row 0 from zero states."""
        cfg = self.cfg
        if self.averaging:
            current = copy.deepcopy(self.net.state_dict())
            averaged = self.averaged_weights()
            self.net.load_state_dict(averaged)
            loss = self.evaluate(self.val_data)
            self.net.load_state_dict(current)
            candidate = averaged
        else:
            loss = self.evaluate(self.val_data)
            candidate = self.net.state_dict()
        switched = False
        if self.best_loss is None or loss < self.best_loss:
            self.best_loss = loss
            self.best_state = {k: v.detach().clone() for k, v in candidate.items()}
        if not self.averaging:
            if cfg.nonmono and len(self.history) > cfg.nonmono and loss > min(self.history[: -cfg.nonmono]):
                self.optimizer, self.averaging, switched = self.asgd(), True, True
            self.history.append(loss)
        self.last_valid = loss
        self.position = 0
        self.hidden = self.net.init_hidden(cfg.batch_size)
        record: dict[str, Any] = {"valid_loss": loss, "valid_ppl": perplexity(loss),
                                  "best_valid_ppl": perplexity(self.best_loss),
                                  "optimizer": "asgd" if self.averaging else "sgd"}
        if switched:
            record["switched_to_asgd"] = True
        return record

    # ----- records ---------------------------------------------------------------------------------------
    def log_fields(self, at: Position) -> dict[str, Any]:
        return {"lr": self.cfg.lr, "optimizer": "asgd" if self.averaging else "sgd"}

    def results(self, at: Position, seconds: float) -> dict[str, Any]:
        """``result.json``: the best validation perplexity and the test perplexity of those weights."""
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        if self.test_loss is None:
            self.test_loss = self.evaluate(self.test_data)
        cfg = self.cfg
        return {RESULT: {
            "genotype": self.genotype.to_dict(),
            "valid_ppl": perplexity(self.best_loss),
            "test_ppl": perplexity(self.test_loss),
            "valid_loss": self.best_loss,
            "test_loss": self.test_loss,
            "params": self.params,
            "counting": "every parameter once (the embedding and the decoder share their weight)",
            "dataset": cfg.dataset,
            "vocabulary": self.corpus.vocabulary_size,
            "train_tokens": int(self.train_data.numel()),
            "hidden_size": self.hidden_size,
            "optimizer": "asgd" if self.averaging else "sgd",
            "epochs": cfg.epochs,
            "steps": at.global_step,
            "seconds": round(seconds, 3),
        }}

    # ----- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"genotype": self.genotype.to_dict(), "net": self.net.state_dict(),
                "averaging": self.averaging, "optimizer": self.optimizer.state_dict(),
                "history": list(self.history), "best_loss": self.best_loss, "best_state": self.best_state,
                "last_valid": self.last_valid, "position": self.position,
                "hidden": [h.cpu() for h in self.hidden]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.averaging = state["averaging"]
        self.optimizer = self.asgd() if self.averaging else self.sgd()
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state["history"])
        self.best_loss = state["best_loss"]
        self.best_state = state["best_state"]
        self.last_valid = state["last_valid"]
        self.position = state["position"]
        self.hidden = [h.to(self.device) for h in state["hidden"]]
