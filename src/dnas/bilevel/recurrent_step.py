"""The search algorithm on the recurrent space: DARTS' ``rnn/train_search.py`` loop with the slots of
the search (estimator, schedule, regularizers) as components.

Data (``train_search.py``): the training split batchified into ``batch_size`` streams for ``w``,
the **validation split** batchified the same way for ``alpha`` (DARTS does not halve the training
split for the recurrent cell), and the validation split again, in ``eval_batch_size`` streams, for
the perplexity reported at every epoch end. One iteration at position ``i`` of the training rows:

1. the BPTT length ``L`` of this step (:func:`dnas.data.text.search_lengths`: 35, or 17 with
   probability 0.05) and the step's learning rate ``lr * L / bptt``;
2. the architecture step (when the schedule takes one, in its order): the estimator's hypergradient
   on the validation segment of ``bptt`` rows at ``i mod (rows_val - 1)``, starting from the carried
   validation state, then Adam; the state of its objective's forward is carried on;
3. the weight step on the training segment ``[i, i + L)`` from the carried training state:
   ``L_train + TAR`` backward, the schedule sees the weight gradients, weight regularizers add
   theirs, gradient-norm clipping (``grad_clip``), SGD; the state of its forward is carried on;
4. ``i += L``. The epoch ends when ``i`` reaches ``rows - 2``; the next epoch starts again at row 0
   from zero states.

Hidden states are detached between segments (truncated BPTT). :meth:`RecurrentSearchStep.state_dict`
holds the weights, alphas, both optimizers, the learning-rate schedule, component states, the
position in the epoch and both carried states; an epoch's BPTT lengths are a function of the seed
and the epoch, and the dropout masks come from the global generator the runner saves.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from dnas.bilevel.problem import StepContext
from dnas.bilevel.readout import SearchReadout
from dnas.bilevel.recurrent_problem import RecurrentProblem, Segment
from dnas.components import ACTIVATIONS, ARCH_REGULARIZERS, DISCRETIZERS, ESTIMATORS, SCHEDULES, WEIGHT_REGULARIZERS
from dnas.config.search import SearchConfig, build_component
from dnas.data.text import Corpus, batchify, epoch_generator, load_corpus, search_lengths, segment
from dnas.diagnostics.alignment import gradient_alignment
from dnas.errors import DnasError
from dnas.runtime.distributed import SINGLE, Group
from dnas.runtime.files import GENOTYPE, RESULTS
from dnas.runtime.runner import Observation, Position, StepOutput
from dnas.spaces import get_space
from dnas.spaces.recurrent_ops import corpus_loss
from dnas.supernet.recurrent import RecurrentSupernet


def search_corpus(cfg: SearchConfig) -> Corpus:
    """The text corpus of a recurrent search (``--dataset``: a folder with the three splits)."""
    if cfg.dataset in ("digits", "cifar10", "cifar100"):
        raise DnasError(f"the {cfg.space} space searches a text corpus: give --dataset FOLDER holding train.txt, "
                        "valid.txt and test.txt (or ptb.train.txt, ptb.valid.txt, ptb.test.txt)")
    return load_corpus(cfg.dataset)


def observe(split: str, loss: Tensor, logits: Tensor, targets: Tensor) -> Observation:
    """A segment's mean cross-entropy and its next-word accuracy (per token)."""
    return Observation(split, loss, (logits.argmax(1) == targets.reshape(-1)).sum(), targets.numel())


class RecurrentSearchStep(SearchReadout):
    """One recurrent search, as an algorithm (module docstring); the same public parts as
    :class:`dnas.bilevel.step.SearchStep`: ``problem``, the components, ``w_opt``/``a_opt``."""

    splits: tuple[str, ...] = ("train", "val")
    advice = "lower w_lr or a_lr"

    def __init__(self, cfg: SearchConfig, *, corpus: Corpus | None = None, device: torch.device | None = None,
                 group: Group = SINGLE):
        if group.world > 1:
            raise DnasError("the recurrent search runs in one process; start it without torchrun")
        self.cfg = cfg
        self.device = torch.device("cpu") if device is None else device
        self.space = get_space(cfg.space)
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

        self.corpus = corpus = search_corpus(cfg) if corpus is None else corpus
        train = corpus.train if cfg.max_tokens is None else corpus.train[: cfg.max_tokens]
        self.train_data = batchify(train, cfg.batch_size).to(self.device)
        self.search_data = batchify(corpus.valid, cfg.batch_size).to(self.device)  # alpha: the validation split
        self.eval_data = batchify(corpus.valid, cfg.eval_batch_size).to(self.device)
        for name, data in (("training", self.train_data), ("validation", self.search_data)):
            if data.shape[0] < 3:
                raise DnasError(f"the {name} split holds {data.shape[0]} rows of batch_size {cfg.batch_size} tokens; "
                                "a search needs at least 3: lower batch_size or use a larger corpus")
        if self.eval_data.shape[0] < 2:
            raise DnasError(f"the validation split is too short for eval_batch_size {cfg.eval_batch_size}")

        self.hidden_size = cfg.hidden_size or self.space.default_channels
        self.net = RecurrentSupernet(self.space, corpus.vocabulary_size, self.hidden_size,
                                     layers=cfg.layers or self.space.default_layers, dropout=cfg.dropout,
                                     dropout_h=cfg.dropout_h, dropout_x=cfg.dropout_x, dropout_i=cfg.dropout_i,
                                     dropout_e=cfg.dropout_e).to(self.device)
        generator = torch.Generator().manual_seed(cfg.seed)
        alphas = nn.ParameterDict({
            t: nn.Parameter(self.activation.init_alpha(shape, generator))
            for t, shape in self.space.alpha_shapes().items()
        }).to(self.device)
        self.problem = RecurrentProblem(self.net, alphas, self.activation, self.arch_regularizers, tar=cfg.tar)
        self.w_opt = torch.optim.SGD(self.problem.weights, lr=cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay, nesterov=cfg.w_nesterov)
        self.lr_schedule = CosineAnnealingLR(self.w_opt, cfg.epochs, eta_min=cfg.w_lr_min)
        self.a_opt = torch.optim.Adam(self.problem.arch, lr=cfg.a_lr, betas=(cfg.a_beta1, cfg.a_beta2),
                                      weight_decay=cfg.a_weight_decay)
        self.epochs = cfg.epochs
        self.arch_steps = 0
        self.position = 0  # the training row the next step starts at
        self.hidden = self.net.init_hidden(cfg.batch_size)  # carried state of the training streams
        self.hidden_val = self.net.init_hidden(cfg.batch_size)  # ... and of the validation streams (alpha)
        self.valid_loss: float | None = None
        self.lengths = self.epoch_lengths(0)

    # ----- the iteration -------------------------------------------------------------------------------
    def epoch_lengths(self, epoch: int) -> list[int]:
        return search_lengths(self.train_data.shape[0], self.cfg.bptt, epoch_generator(self.cfg.seed, epoch))

    @property
    def steps_per_epoch(self) -> int:
        return len(self.lengths)

    def begin_epoch(self, epoch: int) -> None:
        for comp in self.components.values():
            comp.on_epoch_start(epoch, self.cfg.epochs)
        self.lengths = self.epoch_lengths(epoch)

    def context(self, at: Position, lr: float) -> StepContext:
        return StepContext(epoch=at.epoch, epochs=at.epochs, epochs_elapsed=at.epochs_elapsed, weight_lr=lr,
                           weight_optimizer=self.w_opt)

    def iterate(self, at: Position) -> StepOutput:
        """One iteration at ``at`` (module docstring): the architecture step when the schedule takes one
        and the weight step, in the schedule's order, at the learning rate scaled by the step's length."""
        cfg = self.cfg
        self.net.train()
        length = self.lengths[at.step]
        base_lr = float(self.lr_schedule.get_last_lr()[0])
        lr = base_lr * length / cfg.bptt  # train_search.py: lr2 * seq_len / args.bptt, for this step only
        for group in self.w_opt.param_groups:
            group["lr"] = lr
        train = Segment(*segment(self.train_data, self.position, length), self.hidden)
        ctx = self.context(at, lr)
        arch_step = at.epoch >= cfg.warmup_epochs and self.schedule.take_arch_step(at.global_step)
        alignment_due = (bool(cfg.alignment_every) and at.global_step % cfg.alignment_every == 0
                         and len(self.net.cells) > 1)
        observations: list[Observation] = []
        if arch_step and not self.schedule.weight_first:
            observations.append(self.arch_step(train, ctx))
        weight, gauges = self.weight_step(train, ctx, alignment=alignment_due)
        observations.append(weight)
        if arch_step and self.schedule.weight_first:
            observations.append(self.arch_step(train, ctx))
        for group in self.w_opt.param_groups:
            group["lr"] = base_lr
        self.position += length
        return StepOutput(observations, gauges)

    def arch_step(self, train: Segment, ctx: StepContext) -> Observation:
        """The architecture step on the validation segment at the training position (``train_search.py``:
        ``get_batch(search_data, i % (search_data.size(0) - 1))``, ``bptt`` rows)."""
        rows = self.search_data.shape[0]
        val = Segment(*segment(self.search_data, self.position % (rows - 1), self.cfg.bptt), self.hidden_val)
        self.a_opt.zero_grad(set_to_none=True)
        loss, logits = self.estimator.arch_gradient(self.problem, train, val, ctx)
        self.a_opt.step()
        self.arch_steps += 1
        if val.carried is not None:
            self.hidden_val = val.carried
        return observe("val", loss, logits, val[1])

    def weight_step(self, train: Segment, ctx: StepContext, alignment: bool = False
                    ) -> tuple[Observation, dict[str, Tensor]]:
        """The weight step on the training segment; with ``alignment``, the per-cell gradient alignment
        of the stacked cells (gauge ``alignment.recurrent``)."""
        problem = self.problem
        self.w_opt.zero_grad(set_to_none=True)
        need_cells = alignment or any(r.needs_cell_gradients for r in self.weight_regularizers)
        objective, logits, cell_weights = problem.weight_loss(train, cell_gradients=need_cells)
        objective.backward()
        cell_grads = [torch.zeros_like(w) if w.grad is None else w.grad for w in cell_weights] if need_cells else []
        weights = problem.weights
        # the Fisher trace is of grad_w (L_train + TAR), before any regularizer adds to it (DARTS-PRIME's track_FI)
        self.schedule.observe_weight_gradients([p.grad for p in weights if p.grad is not None])
        for reg in self.weight_regularizers:
            reg.add_gradient(problem, train, cell_weights, cell_grads, ctx)
        nn.utils.clip_grad_norm_(weights, self.cfg.grad_clip)
        self.w_opt.step()
        self.activation.after_weight_step(dict(problem.alphas))
        if train.carried is not None:
            self.hidden = train.carried
        gauges = {}
        if alignment:
            gauges = {f"alignment.{t}": gradient_alignment([cell_grads[i] for i in self.net.cells_of_type(t)])
                      for t in problem.cell_types}
        assert problem.last_loss is not None
        return observe("train", problem.last_loss, logits.detach(), train[1]), gauges

    # ----- records ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float:
        """The supernet's mean cross-entropy on the validation split (eval mode, ``eval_batch_size``
        streams, ``bptt`` segments, the state carried: ``train_search.py`` ``evaluate``)."""
        net = self.net
        net.eval()
        weights = net.per_cell(self.problem.activated())
        try:
            return corpus_loss(lambda x, h: net(x, h, weights)[:2], self.eval_data,
                               net.init_hidden(self.eval_data.shape[1]), self.cfg.bptt)
        finally:
            net.train()

    def finished_early(self) -> bool:
        return False

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Anneal the learning rate (none in DARTS' preset); the validation perplexity and the cell; the
        next epoch starts at row 0 from zero states (``train()`` of ``train_search.py``)."""
        self.lr_schedule.step()
        self.valid_loss = self.evaluate()
        self.position = 0
        self.hidden = self.net.init_hidden(self.cfg.batch_size)
        self.hidden_val = self.net.init_hidden(self.cfg.batch_size)
        return {**self.cell_record(), **self.valid_record()}

    def valid_record(self) -> dict[str, Any]:
        if self.valid_loss is None:
            return {}
        return {"valid_loss": self.valid_loss, "valid_ppl": math.exp(min(self.valid_loss, 700.0))}

    def results(self, at: Position, seconds: float) -> dict[str, Any]:
        cell = self.cell_record()
        results = {**cell, **self.valid_record(), "steps": at.global_step, "arch_steps": self.arch_steps,
                   "seconds": round(seconds, 3)}
        return {GENOTYPE: cell["genotype"], RESULTS: results}

    # ----- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "arch_steps": self.arch_steps,
            "net": self.net.state_dict(),
            "alphas": self.problem.alphas.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "components": {k: c.state_dict() for k, c in self.components.items()},
            "streams": {"position": self.position, "hidden": [h.cpu() for h in self.hidden],
                        "hidden_val": [h.cpu() for h in self.hidden_val]},
            "valid_loss": self.valid_loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.problem.alphas.load_state_dict(state["alphas"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        for key, comp in self.components.items():
            comp.load_state_dict(state["components"].get(key, {}))
        streams = state["streams"]
        self.position = streams["position"]
        self.hidden = [h.to(self.device) for h in streams["hidden"]]
        self.hidden_val = [h.to(self.device) for h in streams["hidden_val"]]
        self.arch_steps = state["arch_steps"]
        self.valid_loss = state["valid_loss"]
