"""The search algorithm: bilevel optimisation of supernet weights and architecture parameters.

:class:`SearchStep` is built from a :class:`~dnas.config.search.SearchConfig` (and, optionally, a
dataset already in memory) and takes one iteration at a time; it reads no run directory, prints
nothing and installs no signal handler (:class:`dnas.bilevel.run.Search` runs it in a run
directory). One iteration:

1. the schedule decides whether an architecture step happens; if so, the estimator writes the
   hypergradient of ``L_val + R_arch`` into ``alpha.grad`` (on a validation batch) and Adam steps;
2. the weight step: ``L_train(w, A(alpha))`` on a training batch, backward, weight regularizers
   add their gradients, gradient-norm clipping, SGD step, activation hook (pruning).

The schedule's ``order`` swaps the two (``weight-first``: AutoDL's NAS-Bench-201 DARTS, PR-DARTS).
Both steps use the iteration's training batch; the validation batch is drawn for the architecture
step. :meth:`SearchStep.state_dict` holds everything a resumed search needs besides the runner's
position and random state: weights, alphas, both optimizers, the LR schedule, component states
and both data streams.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from dnas.benchmarks import load_table, lookup, matching_score
from dnas.bilevel.precision import Precision
from dnas.bilevel.problem import Batch, BilevelProblem, StepContext
from dnas.bilevel.readout import SearchReadout
from dnas.components import (
    ACTIVATIONS,
    ARCH_REGULARIZERS,
    AUXILIARIES,
    DISCRETIZERS,
    ESTIMATORS,
    GUARDS,
    PERTURBATIONS,
    PROGRESSIONS,
    SCHEDULES,
    WEIGHT_REGULARIZERS,
)
from dnas.components.progression import prune_to_top
from dnas.config.search import SearchConfig, build_component
from dnas.data import Augment, Images, batch_stream, describe_loading, load_search_data, search_split
from dnas.diagnostics.alignment import gradient_alignment
from dnas.diagnostics.hessian import dominant_eigenvalue
from dnas.errors import DnasError, expect_type
from dnas.runtime.distributed import SINGLE, Group
from dnas.runtime.files import GENOTYPE, RESULTS
from dnas.runtime.resources import parameter_bytes, refuse_unless_fits
from dnas.runtime.runner import Observation, Position, StepOutput
from dnas.spaces import get_space
from dnas.supernet import Supernet, build_supernet
from dnas.supernet.network import op_output_floats
from dnas.supernet.widen import apply_widening, copy_outside_ops, op_parameters, plan_widening


def check_search_fits(cfg: SearchConfig, partial: int, device: torch.device) -> None:
    """Stop with one sentence when the supernet's weights (with their gradients and momentum) and one
    pass's op outputs cannot fit in ``device``'s free memory (:mod:`dnas.runtime.resources`)."""
    space = get_space(cfg.space)
    channels, layers = cfg.channels or space.default_channels, cfg.layers or space.default_layers
    what = (f"a search with channels={channels}, layers={layers}, batch_size={cfg.batch_size}"
            f"{f', image_size={cfg.image_size}' if cfg.image_size else ''}")
    # the smallest image any built-in dataset has when image_size is not given (digits: 8 pixels)
    outputs = op_output_floats(space, channels, layers, cfg.image_size or 8, cfg.batch_size) // partial
    refuse_unless_fits(4 * outputs, what, "lower them", device)  # arithmetic only: before building anything
    weights = parameter_bytes(build_supernet, space, num_classes=10, channels=channels, layers=layers,
                              partial=partial)
    refuse_unless_fits(3 * weights + 4 * outputs, what, "lower them", device)


def search_data(cfg: SearchConfig) -> Images:
    """The images a search of ``cfg`` uses: its dataset in memory or streamed (``data_mode``), its
    predefined split if any (``nb201_splits``, ``train_fraction``/``val_fraction``), the class-balanced
    ``max_images`` subset, resized to ``image_size`` (:func:`dnas.data.load_search_data`)."""
    return load_search_data(cfg.dataset, download=cfg.download, root=cfg.data_root, mode=cfg.data_mode,
                            max_images=cfg.max_images, image_size=cfg.image_size, seed=cfg.seed,
                            nb201_splits=cfg.nb201_splits, train_fraction=cfg.train_fraction,
                            val_fraction=cfg.val_fraction)


class SearchStep(SearchReadout):
    """One search, as an algorithm (see the module docstring).

    ``data``: the images to search on (default: :func:`search_data` of ``cfg``); ``device`` and
    ``group`` (the ranks of a data-parallel run) as the runner sets them up. Its parts are public:
    ``problem`` (weights, alphas, activation, regularizers), the components of every slot, the
    optimizers ``w_opt``/``a_opt`` and the streams ``train_stream``/``val_stream``.
    """

    splits: tuple[str, ...] = ("train", "val")
    advice = "lower w_lr or a_lr or check the data"

    def __init__(self, cfg: SearchConfig, *, data: Images | None = None, device: torch.device | None = None,
                 group: Group = SINGLE):
        expect_type("SearchStep's cfg (resolve_config's result)", cfg, SearchConfig)
        self.cfg = cfg
        self.device = torch.device("cpu") if device is None else device
        self.group = group
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
        self.perturbation = build_component(PERTURBATIONS, cfg.perturbation)
        self.auxiliary = build_component(AUXILIARIES, cfg.auxiliary)
        self.progression = build_component(PROGRESSIONS, cfg.progression)
        self.guard = build_component(GUARDS, cfg.guard)
        self.components = {
            "activation": self.activation,
            "schedule": self.schedule,
            "estimator": self.estimator,
            "discretizer": self.discretizer,
            **{f"weight_regularizers.{i}": r for i, r in enumerate(self.weight_regularizers)},
            **{f"arch_regularizers.{i}": r for i, r in enumerate(self.arch_regularizers)},
            "perturbation": self.perturbation,
            "auxiliary": self.auxiliary,
            "progression": self.progression,
            "guard": self.guard,
        }
        for comp in self.components.values():
            comp.bind(self.space)
        check_search_fits(cfg, self.progression.partial_of(0) or cfg.partial_channels, self.device)

        self.data = data = search_data(cfg) if data is None else data
        portion = self.schedule.train_portion or cfg.train_portion
        train_idx, val_idx = search_split(data, portion, cfg.seed)
        augment = Augment.for_images(data.image_size, data.channels, crop_padding=cfg.crop_padding, flip=cfg.flip,
                                     cutout=cfg.cutout)
        self.train_stream = batch_stream(data, train_idx, cfg.batch_size, seed=cfg.seed * 2 + 1, augment=augment,
                                         device=self.device, part="train part of the search split",
                                         workers=cfg.workers)
        self.val_stream = batch_stream(data, val_idx, cfg.batch_size, seed=cfg.seed * 2 + 2, augment=augment,
                                       device=self.device, part="val part of the search split", workers=cfg.workers)
        self.environment = {"data": describe_loading(data, cfg.workers)}  # for env.json
        self.steps_per_epoch = self.train_stream.batches_per_epoch
        self.epochs = cfg.epochs
        self.table = load_table(cfg.benchmark_table) if cfg.benchmark_table else None
        # a fixed, unaugmented validation batch: eigenvalues of different epochs stay comparable
        self.diagnostic_batch = next(batch_stream(data, val_idx, min(cfg.batch_size, len(val_idx)), seed=cfg.seed,
                                                  augment=None, device=self.device)) if cfg.hessian_every else None

        self.stage = -1  # the progression's stage, entered by begin_epoch
        self.pruned: dict[str, Tensor] = {}  # the ops each stage's pruning left (progression)
        net = self.build_net(self.progression.partial_of(0) or cfg.partial_channels)
        generator = torch.Generator().manual_seed(cfg.seed)
        alphas = nn.ParameterDict({
            t: nn.Parameter(self.activation.init_alpha(shape, generator))
            for t, shape in self.space.alpha_shapes().items()
        })
        # PC-DARTS' edge logits: 1e-3 * randn per edge (model_search.py _initialize_alphas)
        edge_alphas = nn.ParameterDict({
            t: nn.Parameter(1e-3 * torch.randn(edges, generator=generator))
            for t, (edges, _) in self.space.alpha_shapes().items()
        }) if cfg.edge_normalization else None
        net.to(self.device)
        alphas.to(self.device)
        if edge_alphas is not None:
            edge_alphas.to(self.device)
        self.precision = Precision(cfg.precision, self.device)
        self.problem = BilevelProblem(net, alphas, self.activation, self.arch_regularizers, group=group,
                                      edge_alphas=edge_alphas, precision=self.precision)
        self.w_opt, self.lr_schedule = self.weight_optimizer()
        self.a_opt = torch.optim.Adam(self.problem.arch, lr=cfg.a_lr, betas=(cfg.a_beta1, cfg.a_beta2),
                                      weight_decay=cfg.a_weight_decay)
        self.arch_steps = 0

    def build_net(self, partial: int) -> Supernet:
        """The supernet of this search with ``partial`` channel groups, on the device."""
        cfg = self.cfg
        net = build_supernet(self.space, num_classes=self.data.num_classes, in_channels=self.data.channels,
                             channels=cfg.channels, layers=cfg.layers, node_bn=self.activation.node_bn,
                             partial=partial, aux_skip=self.auxiliary.aux_skip)
        return net.to(self.device)

    def weight_optimizer(self, lr: float | None = None) -> tuple[torch.optim.SGD, CosineAnnealingLR]:
        """SGD on the supernet's weights and its cosine schedule over the search (``lr``: the rate to
        continue the schedule at, for an optimizer rebuilt within the search)."""
        cfg = self.cfg
        opt = torch.optim.SGD(self.problem.weights, lr=cfg.w_lr if lr is None else lr, momentum=cfg.w_momentum,
                              weight_decay=cfg.w_weight_decay, nesterov=cfg.w_nesterov)
        if lr is None:
            return opt, CosineAnnealingLR(opt, cfg.epochs, eta_min=cfg.w_lr_min)
        for group in opt.param_groups:
            group["initial_lr"] = cfg.w_lr
        return opt, CosineAnnealingLR(opt, cfg.epochs, eta_min=cfg.w_lr_min, last_epoch=0)

    # ----- the iteration -------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        for comp in self.components.values():
            comp.on_epoch_start(epoch, self.cfg.epochs)
        if self.auxiliary.aux_skip:
            self.problem.net.set_aux_skip(self.auxiliary.coefficient())
        stage = self.progression.stage_of(epoch, self.cfg.epochs)
        if stage != self.stage:
            self.enter_stage(stage)

    def enter_stage(self, stage: int) -> None:
        """The progression's stage boundary: prune the ops to the stage's ``keep``, widen the supernet to
        its ``partial`` channel groups (:mod:`dnas.components.progression`)."""
        keep = self.progression.keep_of(stage)
        alphas = self.problem.alphas
        if keep is not None and any(self._competing(t).sum(dim=1).max() > keep for t in alphas):
            self.pruned = {t: prune_to_top(a, keep, self._competing(t)).cpu() for t, a in alphas.items()}
            self.activation.restrict(self.pruned)
        partial = self.progression.partial_of(stage)
        if partial and partial != self.problem.net.partial:
            self.widen(partial, stage)
        self.stage = stage

    def _competing(self, cell_type: str) -> Tensor:
        alpha = self.problem.alphas[cell_type]
        kept = self.activation.kept(cell_type, alpha)
        return torch.ones_like(alpha, dtype=torch.bool) if kept is None else kept

    def widen(self, partial: int, stage: int) -> None:
        """Rebuild the supernet with ``partial`` channel groups, its ops widened from the current ones by
        net2wider (:mod:`dnas.supernet.widen`), and the weight optimizer with its momentum buffers."""
        old_net, old_opt, old_schedule = self.problem.net, self.w_opt, self.lr_schedule
        with torch.random.fork_rng(devices=[]):  # the new net's initial weights are overwritten: draw none
            new_net = self.build_net(partial)
        copy_outside_ops(old_net, new_net)
        plan = plan_widening(old_net, new_net, torch.Generator().manual_seed(self.cfg.seed * 1009 + stage))
        apply_widening(plan, lambda p: p, lambda p: p)
        self.problem.net = new_net
        self.w_opt, self.lr_schedule = self.weight_optimizer(lr=old_opt.param_groups[0]["lr"])
        self.lr_schedule.load_state_dict(old_schedule.state_dict())
        old_params = dict(old_net.named_parameters())
        op_params = op_parameters(new_net)
        for name, p in new_net.named_parameters():
            old_state = old_opt.state.get(old_params[name], {})
            if "momentum_buffer" not in old_state:
                continue
            self.w_opt.state[p]["momentum_buffer"] = (torch.zeros_like(p) if p in op_params
                                                      else old_state["momentum_buffer"].clone())
        if self.w_opt.state:
            apply_widening(plan, lambda p: old_opt.state[p]["momentum_buffer"],
                           lambda p: self.w_opt.state[p]["momentum_buffer"])

    def context(self, at: Position) -> StepContext:
        """What the components of the iteration at ``at`` receive besides the problem."""
        return StepContext(epoch=at.epoch, epochs=at.epochs, epochs_elapsed=at.epochs_elapsed,
                           weight_lr=float(self.lr_schedule.get_last_lr()[0]), weight_optimizer=self.w_opt)

    def iterate(self, at: Position) -> StepOutput:
        """One iteration at position ``at``: the architecture step (when the schedule takes one) and the
        weight step, in the schedule's order."""
        # every rank draws the same global batch and keeps its shard (the whole batch in one process)
        train_batch = self.group.shard(next(self.train_stream))
        ctx = self.context(at)
        # no architecture step during the warm-up (PC-DARTS: the first 15 epochs train the weights alone) or the
        # frozen epochs of a progression's stage (DrNAS)
        arch_step = (at.epoch >= self.cfg.warmup_epochs and not self.progression.arch_frozen(at.epoch, at.epochs)
                     and self.schedule.take_arch_step(at.global_step))
        alignment_due = bool(self.cfg.alignment_every) and at.global_step % self.cfg.alignment_every == 0
        observations: list[Observation] = []
        if arch_step and not self.schedule.weight_first:
            observations.append(self.arch_step(train_batch, ctx))
        weight, gauges = self.weight_step(train_batch, ctx, alignment=alignment_due)
        observations.append(weight)
        if arch_step and self.schedule.weight_first:
            observations.append(self.arch_step(train_batch, ctx))
        self.group.mean_buffers_(self.problem.net)  # BatchNorm statistics of both steps' forwards
        return StepOutput(observations, gauges)

    def arch_step(self, train_batch: Batch, ctx: StepContext) -> Observation:
        """The architecture step: the estimator's hypergradient on a validation batch, then Adam."""
        val_batch = self.group.shard(next(self.val_stream))
        self.a_opt.zero_grad(set_to_none=True)
        val_loss, val_logits = self.estimator.arch_gradient(self.problem, train_batch, val_batch, ctx)
        scaler = self.precision.arch_scaler  # fp16: unscale, skip a step that overflowed (else a plain step)
        scaler.unscale_(self.a_opt)
        scaler.step(self.a_opt)
        scaler.update()
        self.arch_steps += 1
        return _observe("val", val_loss, val_logits, val_batch[1])

    def weight_step(self, train_batch: Batch, ctx: StepContext, alignment: bool = False
                    ) -> tuple[Observation, dict[str, Tensor]]:
        """The weight step; with ``alignment``, also the per-cell gradient alignment of each cell type
        (gauges ``alignment.TYPE``)."""
        cfg, problem = self.cfg, self.problem
        self.w_opt.zero_grad(set_to_none=True)
        need_cells = alignment or any(r.needs_cell_gradients for r in self.weight_regularizers)
        perturb = None if self.cfg.perturbation.name == "none" else (
            lambda activated: self.perturbation(problem, activated, train_batch, ctx))
        loss, logits, cell_weights = problem.weight_loss(train_batch, cell_gradients=need_cells, perturb=perturb)
        self.precision.scale_weight_loss(loss).backward()
        # a cell whose ops were all masked out computed nothing: its gradient is zero, not missing
        cell_grads = [torch.zeros_like(w) if w.grad is None else w.grad for w in cell_weights] if need_cells else []
        weights = problem.weights
        problem.mean_([*(p.grad for p in weights), *cell_grads])
        scaler = self.precision.weight_scaler  # fp16: the gradients back to their scale (else nothing)
        scaler.unscale_(self.w_opt)
        # the Fisher trace is of grad_w L_train alone (DARTS-PRIME), before any regularizer adds to it
        self.schedule.observe_weight_gradients([p.grad for p in weights if p.grad is not None])
        for reg in self.weight_regularizers:
            reg.add_gradient(problem, train_batch, cell_weights, cell_grads, ctx)
        nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
        scaler.step(self.w_opt)  # fp16: skipped when the gradients overflowed
        scaler.update()
        self.activation.after_weight_step(dict(problem.alphas))
        gauges = {}
        if alignment:
            gauges = {f"alignment.{t}": gradient_alignment([cell_grads[i] for i in problem.net.cells_of_type(t)])
                      for t in problem.cell_types}
        return _observe("train", loss.detach(), logits.detach(), train_batch[1]), gauges

    # ----- records ---------------------------------------------------------------------------------------
    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Anneal the weight learning rate; the epoch record: the cell, benchmark rows, the eigenvalue,
        and the guard's decision when it stops the search after this epoch."""
        self.lr_schedule.step()
        genotype = self.genotype()
        record = self.cell_record(genotype)
        if self.table is not None:
            record["benchmark"] = lookup(self.table, genotype)
            record.update(matching_score(record["benchmark"], self.data.name))  # the column of the searched dataset
        if self.cfg.hessian_every and (epoch + 1) % self.cfg.hessian_every == 0:
            record["hessian_eigenvalue"] = dominant_eigenvalue(self.problem, self.diagnostic_batch, seed=epoch)
        decision = self.guard.observe({"epoch": epoch, **record}, last=epoch + 1 == self.epochs)
        if decision is not None:
            record["guard"] = decision.to_dict()
        return record

    def finished_early(self) -> bool:
        """Whether the guard stopped the search before its last epoch."""
        return self.guard.decision is not None

    def results(self, at: Position, seconds: float) -> dict[str, Any]:
        """The files of a finished search: ``genotype.json`` (the cell) and ``results.json`` (the cell
        record, the steps taken and the search time). A search its guard stopped returns the cell of
        the epoch the guard names, and ``results.json`` records the guard's decision."""
        decision = self.guard.decision
        cell = self.cell_record() if decision is None else self.guard.cell()
        results = {**cell, "steps": at.global_step, "arch_steps": self.arch_steps, "seconds": round(seconds, 3)}
        if self.table is not None:
            results.update(matching_score(lookup(self.table, cell["genotype"]), self.data.name))
        if decision is not None:
            results["guard"] = decision.to_dict()
        return {GENOTYPE: cell["genotype"], RESULTS: results}

    # ----- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "arch_steps": self.arch_steps,
            "net": self.problem.net.state_dict(),
            "alphas": self.problem.alphas.state_dict(),
            **({"edge_alphas": self.problem.edge_alphas.state_dict()} if self.problem.edge_alphas is not None else {}),
            "stage": self.stage,
            **({"precision": self.precision.state_dict()} if self.cfg.precision == "fp16" else {}),
            "pruned": dict(self.pruned),
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "components": {k: c.state_dict() for k, c in self.components.items()},
            "streams": {"train": self.train_stream.state_dict(), "val": self.val_stream.state_dict()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage = state.get("stage", -1)
        partial = self.progression.partial_of(max(self.stage, 0))
        if partial and partial != self.problem.net.partial:  # a later stage's supernet: its shapes first
            with torch.random.fork_rng(devices=[]):
                self.problem.net = self.build_net(partial)
            self.w_opt, self.lr_schedule = self.weight_optimizer()
        self.precision.load_state_dict(state.get("precision", {}))
        self.pruned = dict(state.get("pruned", {}))
        if self.pruned:
            self.activation.restrict(self.pruned)
        self.problem.net.load_state_dict(state["net"])
        self.problem.alphas.load_state_dict(state["alphas"])
        if self.problem.edge_alphas is not None:
            self.problem.edge_alphas.load_state_dict(state["edge_alphas"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        for key, comp in self.components.items():
            comp.load_state_dict(state["components"].get(key, {}))
        self.train_stream.load_state_dict(state["streams"]["train"])
        self.val_stream.load_state_dict(state["streams"]["val"])
        self.arch_steps = state["arch_steps"]


def _observe(split: str, loss: Tensor, logits: Tensor, labels: Tensor) -> Observation:
    return Observation(split, loss, (logits.argmax(1) == labels).sum(), len(labels))
