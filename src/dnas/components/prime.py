"""DARTS-PRIME (Maile, Lecarpentier, Luga, Wilson; arXiv 2106.11655, v1 "On Constrained Optimization
in Differentiable NAS", v3 "DARTS-PRIME"): search as a *constrained* bilevel problem

    min_alpha L_val(w*(alpha), alpha)   s.t.   w*(alpha) = argmin_w L_train(w, alpha),   A(alpha) in D

where ``A`` is the activation of the architecture weights and ``D`` the set of discrete cells. Four
components, each usable with any other method through overrides:

* activation ``clamp`` (v1): ``A(alpha) = clamp(alpha, 0, 1)`` with permanent pruning;
* schedule ``fisher``: an architecture step whenever the smoothed trace of the empirical Fisher of
  the weights falls below an adaptive threshold, about one per ``f`` weight steps;
* architecture regularizers ``prox`` (v3) and ``admm`` (v1), which pull ``A(alpha)`` towards its
  projection ``Pi_D`` onto the discrete cells (:func:`project_discrete`).

The ``none`` op. The spaces keep their ``none`` column (DARTS: column 0 of 8; NAS-Bench-201:
column 0 of 5). The ``clamp`` activation cannot express "no edge" by a competition inside the
edge, so, as in the official code (which drops ``none`` from its op list), ``none`` is masked from
the start: its weight is exactly 0 forever and it is never computed. On ``nb201`` the derivation is
the arg-max per edge, ``none`` included; with ``clamp`` ``none`` can therefore only win an edge
whose real ops have *all* been pruned (every weight 0, the tie goes to column 0), which is exactly
"this edge was removed". With the softmax activation of the v3 preset ``none`` stays an ordinary
competitor: it may win the arg-max of an edge, and ``Pi_D`` (arg-max per edge, ``none`` included)
may pull towards it. On the DARTS space the derivation rule ignores ``none`` for any activation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dnas.bilevel.problem import BilevelProblem, StepContext
from dnas.components.activations import ACTIVATIONS, Activation
from dnas.components.discretizers import darts_rule_choices
from dnas.components.regularizers import ARCH_REGULARIZERS, ArchRegularizer
from dnas.components.schedules import SCHEDULES, Schedule
from dnas.errors import DnasError
from dnas.spaces.base import SearchSpace


# ----- projection onto the discrete cells ------------------------------------------------------------
def project_discrete(space: SearchSpace, weights: Mapping[str, Tensor],
                     masks: Mapping[str, Tensor | None] | None = None) -> dict[str, Tensor]:
    """``Pi_D(W)``: per cell type the 0/1 matrix (shape and device of ``W``) of the discrete cell that
    the space's derivation rule derives from ``W`` (official code: ``_parse``).

    * ``darts`` rule (DARTS space, S1-S4): per intermediate node the two incoming edges whose best
      non-``none`` op is strongest, and on each that op: 8 ones per cell type (``darts-rnn`` rule, the
      recurrent space: the one strongest edge per node, as DARTS-PRIME's ``model_search_rnn.py``
      ``_parse``; 8 ones). Computed by
      :func:`~dnas.components.discretizers.darts_rule_choices`, the code of the ``darts``
      discretizer, so the matrix is exactly the cell that discretizer returns (ties included).
    * ``argmax`` rule (NAS-Bench-201): the arg-max op of every edge, ``none`` included (first
      maximum on ties, as the ``argmax`` discretizer): one 1 per edge. Runs on the device.

    ``masks`` (bool, ``False`` = pruned) make pruned entries ``-inf`` so they are never chosen
    while a live alternative exists. The ``darts`` rule reads ``W`` on the host (one small copy).
    """
    out: dict[str, Tensor] = {}
    for cell_type, w in weights.items():
        w = w.detach()
        mask = masks.get(cell_type) if masks else None
        if mask is not None:
            w = w.masked_fill(~mask.to(w.device), float("-inf"))
        if space.derivation in ("darts", "darts-rnn"):
            z = torch.zeros(w.shape, dtype=w.dtype)
            edges_per_node = 1 if space.derivation == "darts-rnn" else 2
            for e, k in darts_rule_choices(space.cells[cell_type], w, edges_per_node):
                z[e, k] = 1.0
            out[cell_type] = z.to(w.device)
        elif space.derivation == "argmax":
            out[cell_type] = F.one_hot(w.argmax(dim=1), w.shape[1]).to(w.dtype)
        else:
            raise DnasError(f"DARTS-PRIME's projection knows the darts and argmax rules, not the {space.name} "
                            f"space's {space.derivation!r}")
    return out


def _distance(diff: Tensor, squared: bool) -> Tensor:
    """Frobenius norm ``||D||`` (official code) or its square ``||D||^2`` (textbook)."""
    return diff.square().sum() if squared else torch.linalg.vector_norm(diff)


def _device_masks(problem: BilevelProblem, activated: Mapping[str, Tensor]) -> dict[str, Tensor | None]:
    """The activation's pruning masks on the device of the weights (None: nothing is pruned)."""
    masks = problem.activation.active_mask(dict(activated)) or {}
    return {t: (m.to(a.device) if (m := masks.get(t)) is not None else None) for t, a in activated.items()}


def _needs_space(component: str, space: SearchSpace | None) -> SearchSpace:
    if space is None:
        raise DnasError(f"{component} needs the search space: call bind(space) before using it outside a Search")
    return space


# ----- activation ----------------------------------------------------------------------------------------
@ACTIVATIONS.register("clamp")
class Clamp(Activation):
    """DARTS-PRIME v1 activation ("CRB" in the code): no softmax, so no competition inside an edge
    and weights comparable across edges::

        A(alpha) = clamp(alpha, 0, 1) * M            M: 0/1 mask of the ops still alive

    * init ``alpha = 1/|O_e| + init_noise * N(0, 1)``, ``|O_e|`` the real (non-``none``) ops of the
      edge (1/7 on the DARTS space); ``none`` starts at 0 and masked (module docstring), as does any
      op named in ``exclude``.
    * gradient: ``dA/dalpha = M * 1[0 <= alpha <= 1]``, zero for alpha outside [0, 1].
    * permanent pruning (``after_weight_step``, after every weight step): every alpha <= 0 is set to
      0 and masked forever; ``active_mask`` hands the mask to the supernet, which then skips the op.
      Adam's weight decay and momentum may still move a pruned alpha during an architecture step;
      this is harmless (``A`` is masked, so the entry's weight and gradient stay exactly 0) and the
      hook resets it to exactly 0 after the following weight step, so a pruned alpha is 0 at every
      iteration boundary (and in every checkpoint).
    * node sums are no longer convex combinations: ``node_bn`` puts a non-affine BatchNorm on every
      intermediate node (official code ``Cell._bns``).

    Host synchronisation: the mask lives on the device (no sync to prune); the supernet needs a
    host copy, refreshed every ``mask_sync_every`` weight steps (one (E, K) bool copy per cell type).
    Between refreshes an op that was just pruned is still computed but multiplied by exactly 0, so
    the results are the same and only the saved compute comes later.

    Data parallel: pruning masks are functions of ``alpha`` alone, which every rank holds
    bit-identical, so every rank prunes the same ops without communicating.
    """

    node_bn = True
    allows_none = False

    def __init__(self, *, init_noise: float = 1e-4, mask_sync_every: int = 1, exclude: str = ""):
        super().__init__(exclude=exclude)
        if init_noise < 0:
            raise DnasError(f"activation clamp needs init_noise >= 0, got {init_noise}")
        if mask_sync_every < 1:
            raise DnasError(f"activation clamp needs mask_sync_every >= 1, got {mask_sync_every}")
        self.init_noise = init_noise
        self.mask_sync_every = mask_sync_every
        self._space: SearchSpace | None = None
        self._masks: dict[str, Tensor] = {}  # the truth, on the device of alpha once used
        self._host: dict[str, Tensor] = {}  # CPU copies for the supernet (maybe a few steps old)
        self._steps = 0

    def bind(self, space: SearchSpace) -> None:
        super().bind(space)  # none (and any ``exclude``) out of the competition from the start
        self._space = space
        self._masks = {t: self._live_ops(space, t) for t in space.cells}
        self._host = {t: m.clone() for t, m in self._masks.items()}

    def _live_ops(self, space: SearchSpace, cell_type: str) -> Tensor:
        kept = self._kept.get(cell_type)
        topo = space.cells[cell_type]
        return kept.clone() if kept is not None else torch.ones(topo.num_edges, topo.ops_per_edge, dtype=torch.bool)

    def init_alpha(self, shape: tuple[int, int], generator: torch.Generator) -> Tensor:
        noise = self.init_noise * torch.randn(shape, generator=generator)
        live = torch.ones(shape, dtype=torch.bool)
        if self._space is not None:  # the excluded columns of the cell types of this shape, if they agree
            patterns = [self._live_ops(self._space, t) for t, c in self._space.cells.items()
                        if (c.num_edges, c.ops_per_edge) == tuple(shape)]
            if patterns and all(torch.equal(p, patterns[0]) for p in patterns):
                live = patterns[0]
        per_edge = live.sum(dim=1, keepdim=True).clamp(min=1)
        return torch.where(live, 1.0 / per_edge + noise, torch.zeros(()))

    def _mask(self, cell_type: str, like: Tensor) -> Tensor:
        mask = self._masks.get(cell_type)
        if mask is None:  # unbound: every op is a real op
            mask = torch.ones(like.shape, dtype=torch.bool, device=like.device)
            self._masks[cell_type], self._host[cell_type] = mask, mask.cpu()
        elif mask.device != like.device:
            mask = self._masks[cell_type] = mask.to(like.device)
        if mask.shape != like.shape:
            raise DnasError(f"activation clamp holds a {tuple(mask.shape)} mask for cell type {cell_type!r} but "
                            f"alpha has shape {tuple(like.shape)}")
        return mask

    def __call__(self, alpha: Tensor, cell_type: str) -> Tensor:
        return alpha.clamp(0.0, 1.0).masked_fill(~self._mask(cell_type, alpha), 0.0)

    def active_mask(self, weights: dict[str, Tensor]) -> dict[str, Tensor | None] | None:
        if not self._host:
            return None
        return {t: self._host.get(t) for t in weights}

    def after_weight_step(self, alphas: dict[str, Tensor]) -> None:
        """Prune: ``M <- M * 1[alpha > 0]``, ``alpha <- alpha * M`` (on the device, no sync)."""
        with torch.no_grad():
            for t, alpha in alphas.items():
                mask = self._mask(t, alpha) & (alpha > 0)
                alpha.masked_fill_(~mask, 0.0)
                self._masks[t] = mask
        self._steps += 1
        if self._steps % self.mask_sync_every == 0:  # the host copy the supernet skips pruned ops by
            self._host = dict(self._masks)
            for t, mask in self._host.items():
                self._host[t] = mask.cpu()

    def metrics(self) -> dict[str, float | Tensor]:
        return {f"active.{t}": float(m.sum()) for t, m in self._host.items()}  # host copies: no sync

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {t: m.cpu() for t, m in self._masks.items()},
                "host_masks": {t: m.clone() for t, m in self._host.items()},
                "steps": self._steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._masks = {t: m.to(torch.bool) for t, m in state["masks"].items()}
        self._host = {t: m.to("cpu", torch.bool) for t, m in state["host_masks"].items()}
        self._steps = int(state["steps"])


# ----- schedule -------------------------------------------------------------------------------------------
@SCHEDULES.register("fisher")
class FisherSchedule(Schedule):
    """DARTS-PRIME's dynamic, informed schedule (code ``track_FI`` and ``--dyno_schedule``).

    After the backward pass of every weight step (before clipping) the trace of the empirical
    Fisher of the weights on the current training batch, and its moving average::

        FI_t = sum_w (dL_train/dw)^2,        E_t = gamma FI_t + (1 - gamma) E_{t-1}     (E_0 = FI_0)

    Before each weight step: if ``0 < E < theta`` take one architecture step (before the weight step,
    as the official code; ``order="weight-first"`` puts it after) and ``theta <- theta d``,
    else ``theta <- theta m``; ``theta_0 = threshold``, ``m = multiplier``, ``d = m^(-f)``. A bounded
    ``theta`` needs ``(#steps without) = f (#steps with)``, so in the long run one architecture step
    comes after every ``f`` weight steps without one (a share ``1/(1+f)`` of the iterations). Since
    ``theta`` moves by a factor ``m`` per step it follows slow trends of the Fisher, and the steps
    land where the Fisher dips below its recent level (a flat, settled moment). ``rebalance_split``
    (code ``--dyno_split``) sets the train share of the split to ``f/(1+f)``, so both halves are
    consumed at about the same rate.

    No per-step host synchronisation for the signal: ``FI`` (one ``_foreach_norm``) and ``E`` stay on
    the device. ``theta`` is a host number (it only changes by the constant factors). As in the code,
    the decision before step ``t+1`` uses ``E_t``, so it is computed on the device right after the
    backward pass of step ``t`` and sent to the host asynchronously (pinned buffer + CUDA event);
    ``take_arch_step`` waits for that one boolean, i.e. for the backward pass of the previous step,
    not for its clipping and optimizer step. This single read per step is inherent to a data-
    dependent schedule; on the CPU it is free.

    Data parallel: the loop hands it the weight gradients after they are averaged over the ranks,
    so the trace, its EWMA and the step decision are the global batch's, the same on every rank.
    """


    def __init__(self, *, f: float = 10.0, gamma: float = 0.2, threshold: float = 1.0, multiplier: float = 1.05,
                 rebalance_split: bool = True, order: str = "arch-first"):
        super().__init__(order=order)
        if f <= 0:
            raise DnasError(f"schedule fisher needs f > 0, got {f}")
        if not 0 < gamma <= 1:
            raise DnasError(f"schedule fisher needs 0 < gamma <= 1, got {gamma}")
        if threshold <= 0 or multiplier <= 1:
            raise DnasError(f"schedule fisher needs threshold > 0 and multiplier > 1, got {threshold}, {multiplier}")
        self.f, self.gamma, self.multiplier, self.rebalance_split = f, gamma, multiplier, rebalance_split
        self.divider = multiplier ** (-f)  # d
        self.theta = threshold  # the current threshold
        self.arch_steps = 0
        self._fisher: Tensor | None = None
        self._ewma: Tensor | None = None
        self._next: Tensor | bool = False  # decision for the next step (device/host tensor or bool)
        self._pinned: Tensor | None = None
        self._event: Any = None

    @property
    def train_portion(self) -> float | None:
        return self.f / (1 + self.f) if self.rebalance_split else None

    def take_arch_step(self, step: int) -> bool:
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        take = bool(self._next)
        self._next = False
        self.theta *= self.divider if take else self.multiplier
        self.arch_steps += int(take)
        return take

    def observe_weight_gradients(self, grads: Sequence[Tensor]) -> None:
        if not grads:
            return
        with torch.no_grad():
            fisher = torch.stack([n.float() for n in torch._foreach_norm(list(grads))]).square().sum()
            ewma = fisher if self._ewma is None else self.gamma * fisher + (1 - self.gamma) * self._ewma
            self._fisher, self._ewma = fisher, ewma
            decision = (ewma > 0) & (ewma < self.theta)
        if decision.device.type == "cuda":
            if self._pinned is None:
                self._pinned = torch.zeros((), dtype=torch.bool).pin_memory()
            self._pinned.copy_(decision, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
            self._next = self._pinned
        else:
            self._next = decision

    def metrics(self) -> dict[str, float | Tensor]:
        out: dict[str, float | Tensor] = {"threshold": self.theta, "arch_steps": float(self.arch_steps)}
        if self._fisher is not None and self._ewma is not None:  # both are set by the same step
            out["fisher"], out["fisher_ewma"] = self._fisher, self._ewma
        return out

    def state_dict(self) -> dict[str, Any]:
        if self._event is not None:
            self._event.synchronize()
        return {"threshold": self.theta, "arch_steps": self.arch_steps, "next": bool(self._next),
                "fisher": self._fisher, "ewma": self._ewma}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.theta = float(state["threshold"])
        self.arch_steps = int(state["arch_steps"])
        self._next = bool(state["next"])
        self._fisher, self._ewma = state["fisher"], state["ewma"]
        self._event = None


# ----- architecture regularizers ------------------------------------------------------------------------
@ARCH_REGULARIZERS.register("prox")
class Proximity(ArchRegularizer):
    """DARTS-PRIME's proximity regularization (code ``prox_loss``), for each cell type::

        R = (t / T) (rho / 2) || A(alpha) - Pi_D(A(alpha)) ||          (squared=True: ||.||^2)

    ``t`` the fractional epochs elapsed before the current iteration (``ctx.epochs_elapsed``),
    ``T`` the number of search epochs: a linear ramp from 0 to ``rho/2`` (``ramp=False``: always
    ``rho/2``). ``Pi_D`` (:func:`project_discrete`) is recomputed at every call on the detached
    weights, so the gradient is ``(t/T)(rho/2) (A - Pi)/||A - Pi||`` through ``A`` only.

    Norm: the official code uses the plain Frobenius norm, not its square, and so do we by default:
    the pull then has the constant magnitude ``(t/T) rho/2`` whatever the distance (it does not fade
    as ``A`` nears the cell, and it does not grow with the number of entries away from it); the
    paper's form is not known. ``squared=True`` gives the usual quadratic proximity term.

    Data parallel: a function of ``alpha`` alone, identical on every rank (nothing to reduce).
    """


    def __init__(self, *, rho: float = 0.1, squared: bool = False, ramp: bool = True):
        if rho < 0:
            raise DnasError(f"arch regularizer prox needs rho >= 0, got {rho}")
        self.rho, self.squared, self.ramp = rho, squared, ramp
        self._space: SearchSpace | None = None
        self._last: dict[str, Tensor | float] = {}

    def bind(self, space: SearchSpace) -> None:
        self._space = space

    def coefficient(self, ctx: StepContext | None) -> float:
        """``(t/T) rho/2`` (``rho/2`` without a ramp or outside a search)."""
        if not self.ramp or ctx is None:
            return self.rho / 2
        return min(ctx.epochs_elapsed / ctx.epochs, 1.0) * self.rho / 2

    def __call__(self, problem: BilevelProblem, activated: Mapping[str, Tensor],
                 ctx: StepContext | None = None) -> dict[str, Tensor]:
        space = _needs_space("arch regularizer prox", self._space)
        targets = project_discrete(space, activated, _device_masks(problem, activated))
        coef = self.coefficient(ctx)
        terms: dict[str, Tensor] = {}
        self._last = {"coefficient": coef}
        for t, a in activated.items():
            dist = _distance(a - targets[t], self.squared)
            terms[f"prox.{t}"] = coef * dist
            self._last[f"distance.{t}"] = dist.detach()
            self._last[f"value.{t}"] = terms[f"prox.{t}"].detach()
        return terms

    def metrics(self) -> dict[str, float | Tensor]:
        return dict(self._last)

    def state_dict(self) -> dict[str, Any]:
        return {"last": dict(self._last)}  # the logged values, so a resumed log is identical

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._last = dict(state["last"])


@ARCH_REGULARIZERS.register("admm")
class ADMM(ArchRegularizer):
    """DARTS-PRIME v1's ADMM regularization (code ``admm_loss``, ``update_Z``, ``update_U``).

    The constraint ``A(alpha) in D`` is split with an auxiliary discrete ``Z`` and handled by the
    scaled-form augmented Lagrangian with dual ``U``; per cell type (``M`` the pruning mask)::

        R = (rho / 2) || (A(alpha) - Z + U) * M ||                  (squared=True: ||.||^2)

    and after every ``admm_freq`` architecture steps, with ``alpha`` and ``A`` detached:

    * ``variant="code"`` (official code, default):  ``Z <- Pi_D(A(alpha + U))``,
      ``U <- (kappa U + alpha - Z) * M``; initially ``Z = alpha_0``, ``U = 0``. It mixes spaces (the
      dual is added to the raw ``alpha`` before the activation and updated with the raw ``alpha``,
      not ``A(alpha)``); with the clamp activation and alpha in [0, 1] the two readings differ only
      where ``alpha + U`` leaves [0, 1], which the clamp saturates before projecting.
    * ``variant="textbook"``:  ``Z <- Pi_D(A + U)``,  ``U <- (kappa U + A - Z) * M``; initially
      ``Z = A(alpha_0)``, ``U = 0`` (no pull until the first update).

    Timing. The official training loop (``train_scheduled_hard_statebn.py``) counts architecture
    steps and, after each weight step, updates ``Z`` and ``U`` when ``(counter + 1) % admm_freq == 0``,
    then resets the counter to 0: with its ``--admm_freq 10`` the update comes after every 9th
    architecture step, before the next one. Here ``admm_freq`` is that period itself (the default 9
    is the official timing; textbook ADMM updates every 10th: ``admm_freq=10``). The update is
    made lazily, right before the loss of the next architecture step; between the weight step
    after which the official code updates and that loss, ``alpha`` and the mask do not change, so
    the two are the same. Architecture steps are counted by calls: the estimators evaluate ``R``
    once per architecture step.

    ``kappa`` (code ``zuewma``, which the official ``Network`` leaves at 1.0: the script's
    ``--zuewma`` is never passed to it) < 1 forgets old residuals; ADMM is ``kappa = 1``.
    Pruned ops can never enter ``Z`` (the official projection ignores the pruning mask and may
    pick a pruned op while a live one exists; we mask it, see :func:`project_discrete`).

    Norm: the official code uses the non-squared Frobenius norm, the default here, so that the
    published configuration is reproduced: the pull towards ``Z - U`` then has the constant
    magnitude ``rho/2`` (an exact-penalty-like term that does not fade near the constraint).
    Textbook ADMM uses the squared norm, whose minimiser the scaled dual update ``U += A - Z``
    assumes; ``squared=True`` gives that form.

    ``Z`` and ``U`` are state (checkpointed).

    Data parallel: ``Z`` and ``U`` are updated from ``alpha`` alone, at the same architecture step
    on every rank, so they stay identical without communication.
    """


    def __init__(self, *, rho: float = 0.1, admm_freq: int = 9, variant: str = "code", kappa: float = 1.0,
                 squared: bool = False):
        if rho < 0 or admm_freq < 1:
            raise DnasError(f"arch regularizer admm needs rho >= 0 and admm_freq >= 1, got {rho}, {admm_freq}")
        if variant not in ("textbook", "code"):
            raise DnasError(f"arch regularizer admm has the variants textbook and code, not {variant!r}")
        self.rho, self.admm_freq, self.variant, self.kappa, self.squared = rho, admm_freq, variant, kappa, squared
        self._space: SearchSpace | None = None
        self.z: dict[str, Tensor] = {}
        self.u: dict[str, Tensor] = {}
        self.calls = 0
        self.updates = 0
        self._last: dict[str, Tensor | float] = {}

    def bind(self, space: SearchSpace) -> None:
        self._space = space

    def update(self, problem: BilevelProblem, activated: Mapping[str, Tensor]) -> None:
        """One ``Z``, ``U`` update from the current weights (see the class docstring)."""
        space = _needs_space("arch regularizer admm", self._space)
        masks = _device_masks(problem, activated)
        with torch.no_grad():
            if self.variant == "textbook":
                current = {t: a.detach() for t, a in activated.items()}
                shifted = {t: current[t] + self.u[t] for t in current}
            else:
                current = {t: problem.alphas[t].detach() for t in activated}
                shifted = {t: problem.activation(current[t] + self.u[t], t) for t in current}
            self.z = project_discrete(space, shifted, masks)
            for t in current:
                u = self.kappa * self.u[t] + current[t] - self.z[t]
                mask = masks[t]
                self.u[t] = u if mask is None else u * mask
        self.updates += 1

    def __call__(self, problem: BilevelProblem, activated: Mapping[str, Tensor],
                 ctx: StepContext | None = None) -> dict[str, Tensor]:
        if not self.z:
            with torch.no_grad():
                init = activated if self.variant == "textbook" else {t: problem.alphas[t] for t in activated}
                self.z = {t: a.detach().clone() for t, a in init.items()}
                self.u = {t: torch.zeros_like(a) for t, a in init.items()}
        else:
            for t, a in activated.items():  # after a resume the state may sit on another device
                self.z[t], self.u[t] = self.z[t].to(a.device), self.u[t].to(a.device)
            if self.calls % self.admm_freq == 0:
                self.update(problem, activated)
        self.calls += 1
        masks = _device_masks(problem, activated)
        terms: dict[str, Tensor] = {}
        self._last = {"updates": float(self.updates)}
        for t, a in activated.items():
            mask = masks[t]
            keep = 1.0 if mask is None else mask
            terms[f"admm.{t}"] = self.rho / 2 * _distance((a - self.z[t] + self.u[t]) * keep, self.squared)
            with torch.no_grad():
                self._last[f"value.{t}"] = terms[f"admm.{t}"].detach()
                self._last[f"primal.{t}"] = torch.linalg.vector_norm((a - self.z[t]) * keep)  # ||(A - Z) M||
                self._last[f"dual.{t}"] = torch.linalg.vector_norm(self.u[t])  # ||U||
        return terms

    def metrics(self) -> dict[str, float | Tensor]:
        return dict(self._last)

    def state_dict(self) -> dict[str, Any]:
        return {"z": dict(self.z), "u": dict(self.u), "calls": self.calls, "updates": self.updates,
                "last": dict(self._last)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.z, self.u = dict(state["z"]), dict(state["u"])
        self.calls, self.updates = int(state["calls"]), int(state["updates"])
        self._last = dict(state["last"])
