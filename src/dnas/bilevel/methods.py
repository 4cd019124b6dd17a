"""Methods are named presets: the DARTS protocol of the search space plus what a paper changes.

``darts`` is the base: every hyper-parameter of the search, as DARTS' official code sets it on the
DARTS-family spaces (quark0/darts ``cnn/train_search.py``) and on the recurrent space
(``rnn/train_search.py``), and as AutoDL's NAS-Bench-201 DARTS-V1 sets it on ``nb201`` (the code
behind the benchmark's DARTS numbers). Every other method is
"``darts`` plus these changes": its ``changes(space)`` name only what its paper and official code
do differently, each value with its source. On ``nb201`` a method without official NAS-Bench-201
code starts from AutoDL's protocol and applies the changes its paper makes to DARTS.

A method is available on the space families its paper or code covers (``Method.families``); on
another space its preset stops with one sentence (PR-DARTS on the recurrent space says why).

Presets are ``key=value`` overrides in the vocabulary of :mod:`dnas.config.search`, so anything a preset
sets can be overridden again on the command line, which is how methods are combined, e.g.
``--method pr-darts estimator=amended weight_regularizers=lambda``. A change that picks another
implementation for a slot (``schedule=fisher``) drops the base's parameters of that slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dnas.config.search import LIST_SLOTS, SINGLE_SLOTS
from dnas.errors import DnasError
from dnas.registry import Registry
from dnas.spaces import get_space

#: the keys whose value picks a component; ``slot.param`` keys set that component's parameters
SLOT_KEYS = SINGLE_SLOTS + LIST_SLOTS


def with_changes(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``changes``; a change of a slot's implementation drops the base's ``slot.*`` keys."""
    replaced = [k for k in changes if k in SLOT_KEYS and changes[k] != base.get(k)]
    merged = {k: v for k, v in base.items() if not any(k.startswith(f"{slot}.") for slot in replaced)}
    merged.update(changes)
    return merged


def darts_protocol(space: str) -> dict[str, Any]:
    """The ``darts`` preset: first-order DARTS with the official hyper-parameters of ``space``."""
    base: dict[str, Any] = {
        "activation": "softmax",
        "activation.init_std": 1e-3,  # model_search.py: alphas = 1e-3 * randn (AutoDL: the same)
        "activation.exclude": "",  # all 8 ops, none included (genotypes.py PRIMITIVES)
        "schedule": "alternate",
        "estimator": "first-order",  # train_search.py --unrolled off (AutoDL: DARTS-V1)
        "weight_regularizers": "none",
        "arch_regularizers": "none",
        "perturbation": "none",  # the weight step trains under A(alpha) itself
        "auxiliary": "none",  # no operation outside the mixing
        "progression": "none",  # one stage: the supernet and its candidates stay as built
        "guard": "off",  # the search runs its epochs to the end (components/guards.py: label-free early stopping)
        "train_portion": 0.5,  # train_search.py --train_portion 0.5 (AutoDL: cifar-split.txt, 25k/25k)
        "w_lr": 0.025,  # train_search.py --learning_rate (AutoDL: DARTS.config LR)
        "w_lr_min": 0.001,  # train_search.py --learning_rate_min (AutoDL: DARTS.config eta_min)
        "w_momentum": 0.9,  # train_search.py --momentum (AutoDL: DARTS.config momentum)
        "grad_clip": 5.0,  # train_search.py --grad_clip (AutoDL: DARTS-V1.py --gradient_clip)
        "a_lr": 3e-4,  # train_search.py --arch_learning_rate (AutoDL: DARTS-V1.sh)
        "a_beta1": 0.5,  # architect.py Adam betas (AutoDL: DARTS-V1.py)
        "a_beta2": 0.999,
        "a_weight_decay": 1e-3,  # train_search.py --arch_weight_decay (AutoDL: DARTS-V1.sh)
        "epochs": 50,  # train_search.py --epochs (AutoDL: DARTS.config)
        "batch_size": 64,  # train_search.py --batch_size (AutoDL: DARTS.config)
    }
    if get_space(space).family == "rnn":
        return recurrent_protocol()
    if get_space(space).family == "nb201":
        return {
            **base,
            "schedule.order": "weight-first",  # AutoDL exps/NAS-Bench-201-algos/DARTS-V1.py: w step, then alpha
            "w_nesterov": True,  # AutoDL configs/nas-benchmark/algos/DARTS.config: nesterov 1
            "w_weight_decay": 5e-4,  # AutoDL configs/nas-benchmark/algos/DARTS.config: decay 0.0005
        }
    return {
        **base,
        "schedule.order": "arch-first",  # train_search.py train(): architect.step, then the w step
        "w_nesterov": False,  # train_search.py: torch.optim.SGD without nesterov
        "w_weight_decay": 3e-4,  # train_search.py --weight_decay
    }


def recurrent_protocol() -> dict[str, Any]:
    """The ``darts`` preset on the recurrent space: DARTS' ``rnn/train_search.py`` (argparse defaults),
    ``rnn/architect.py`` and ``rnn/model_search.py``."""
    return {
        "activation": "softmax",
        "activation.init_std": 1e-3,  # model_search.py: weights = 1e-3 * randn(36, 5)
        "activation.exclude": "",  # genotypes.py PRIMITIVES: 5 ops, none included
        "schedule": "alternate",
        "schedule.order": "arch-first",  # train(): architect.step, then the w step, on every batch
        "estimator": "first-order",  # --unrolled off
        "weight_regularizers": "none",
        "arch_regularizers": "none",
        "perturbation": "none",
        "auxiliary": "none",
        "progression": "none",
        "guard": "off",
        "w_lr": 20.0,  # --lr 20, scaled by seq_len / bptt for each step
        "w_lr_min": 20.0,  # no schedule: the lr stays 20 for the whole search
        "w_momentum": 0.0,  # torch.optim.SGD(lr, weight_decay): no momentum
        "w_nesterov": False,
        "w_weight_decay": 5e-7,  # --wdecay 5e-7
        "grad_clip": 0.25,  # --clip 0.25
        "a_lr": 3e-3,  # --arch_lr 3e-3
        "a_beta1": 0.9,  # architect.py: Adam with its default betas (0.9, 0.999)
        "a_beta2": 0.999,
        "a_weight_decay": 1e-3,  # --arch_wdecay 1e-3
        "epochs": 50,  # --epochs 50
        "batch_size": 256,  # --batch_size 256 (the validation split is batched the same for alpha)
        "hidden_size": None,  # --emsize / --nhid / --nhidlast 300 = the space default
        "layers": None,  # one cell (RNNModel: rnns = [cell])
        "bptt": 35,  # --bptt 35 (17 with probability 0.05)
        "dropout": 0.75,  # --dropout 0.75
        "dropout_h": 0.25,  # --dropouth 0.25
        "dropout_x": 0.75,  # --dropoutx 0.75
        "dropout_i": 0.2,  # --dropouti 0.2
        "dropout_e": 0.0,  # --dropoute 0
        "tar": 1e-3,  # --beta 1e-3 (the AR term, --alpha, is 0)
        "eval_batch_size": 10,  # eval_batch_size = 10
    }


#: the method families a method is defined for unless it says otherwise
IMAGE_FAMILIES = ("darts", "nb201")


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    reference: str
    changes: Callable[[str], dict[str, Any]]  # what the method changes in darts_protocol(space)
    families: tuple[str, ...] = IMAGE_FAMILIES  # the space families it is available on
    refusal: str | None = None  # why it is not available elsewhere (None: it has no version there)

    def supports(self, space: str) -> bool:
        return get_space(space).family in self.families

    def overrides(self, space: str) -> dict[str, Any]:
        if not self.supports(space):
            why = self.refusal or f"{self.name} has no version for the {space} space in its paper or code"
            available = ", ".join(n for n in METHODS.names() if METHODS.get(n).supports(space))
            raise DnasError(f"{why}; on {space} use {available}")
        return with_changes(darts_protocol(space), self.changes(space))


METHODS: Registry[Method] = Registry("method")


def register_method(name: str, summary: str, reference: str, families: tuple[str, ...] = IMAGE_FAMILIES,
                    refusal: str | None = None):
    def decorator(changes: Callable[[str], dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
        METHODS.register(name)(Method(name, summary, reference, changes, families, refusal))
        return changes

    return decorator


ALL_FAMILIES = (*IMAGE_FAMILIES, "rnn")


def _family(space: str) -> str:
    return get_space(space).family


@register_method(
    "darts",
    "first-order DARTS: softmax relaxation, alternating SGD/Adam steps, no correction term (nb201: AutoDL's "
    "DARTS-V1 protocol, weight step first)",
    "Liu, Simonyan, Yang. DARTS: Differentiable Architecture Search. ICLR 2019",
    families=ALL_FAMILIES,
)
def _darts(space: str) -> dict[str, Any]:
    return {}


@register_method(
    "darts-2nd",
    "second-order DARTS: gradient through one virtual step of w with the optimizer's momentum and weight "
    "decay (xi = current w lr), mixed Hessian-vector product by central finite difference",
    "Liu, Simonyan, Yang. DARTS: Differentiable Architecture Search. ICLR 2019",
    families=ALL_FAMILIES,
)
def _darts_2nd(space: str) -> dict[str, Any]:
    changes = {
        "estimator": "second-order",  # train_search.py --unrolled (AutoDL: DARTS-V2.py)
        "estimator.xi": None,  # architect.step(..., lr, ...): the current w learning rate
        "estimator.virtual_step": "optimizer",  # architect.py _compute_unrolled_model: w - lr (mu m + g + wd w)
        "estimator.hvp": "fd",  # architect.py _hessian_vector_product
        "estimator.fd_radius": 0.01,  # architect.py _hessian_vector_product(r=1e-2)
        **_arch_first_on_nb201(space),
    }
    if _family(space) == "rnn":  # rnn/architect.py: _clip(grads, args.clip) on the virtual step and on dtheta
        changes["estimator.clip"] = 0.25
    return changes


def _arch_first_on_nb201(space: str) -> dict[str, Any]:
    """AutoDL's NAS-Bench-201 DARTS-V2.py (second order) takes the alpha step first, as DARTS' own code."""
    return {"schedule.order": "arch-first"} if _family(space) == "nb201" else {}


@register_method(
    "amended-darts",
    "Amended-DARTS: DARTS with the implicit term's inverse Hessian replaced by eta*H (eta 0.1) at the current "
    "weights, two exact Hessian-vector products (hvp=fd: finite differences, as the public implementation)",
    "Bi, Hu, Xie, Chen, Wei, Tian. Stabilizing DARTS with Amended Gradient Estimation on Architectural "
    "Parameters. arXiv 1910.11831",
    families=ALL_FAMILIES,  # PTB experiments in the paper's later versions; no code for them: DARTS' RNN protocol
)
def _amended_darts(space: str) -> dict[str, Any]:
    # No official code is public; the only implementation (chengaopro/AdversarialNAS architect.py, Hessian-vector
    # products "from openreview BJlgt2EYwr") gives the estimator and its radii. The paper's eta was not available.
    return {
        "estimator": "amended",
        "estimator.eta": 0.1,  # not public in the paper; AdversarialNAS configs use 0.1 (flag default 0 = off)
        # exact double-backward products, chosen by the collapse protocol (docs: collapse protocol): 0 of 3 seeds
        # collapsed against 1 of 3 with AdversarialNAS' finite differences (architect.py _hessian_vector_product_1/_2,
        # r=1e-2 over ||v|| and ||u||), which hvp=fd keeps
        "estimator.hvp": "exact",
        "estimator.fd_radius": 0.01,  # (used with hvp=fd) AdversarialNAS architect.py: r=1e-2 for both products
        **_arch_first_on_nb201(space),  # AdversarialNAS network.py also steps the architecture first
    }


#: why PR-DARTS is not offered on the recurrent space
PR_DARTS_CNN_ONLY = ("PR-DARTS is defined on CNN cells only: its regularizer and its theory are about skip "
                     "connections and convolution paths, which the recurrent cell does not have")


def _pr_darts_common(space: str) -> dict[str, Any]:
    changes = {
        "activation": "hard-concrete",
        "activation.a": -0.1,  # paper section 5.1 / test_PRDARTS.py --a_min/--a_max
        "activation.b": 1.1,  # paper section 5.1 / test_PRDARTS.py --b_min/--b_max
        "activation.top_k": 2,  # paper 5.1: two ops per edge per iteration / test_PRDARTS.py --k 2
        "arch_regularizers": "pr-darts",
        "arch_regularizers.pr-darts.lambda1": 0.01,  # paper 5.1 / test_PRDARTS.py --regular_lambda1
        "arch_regularizers.pr-darts.lambda2": 0.005,  # paper 5.1 / test_PRDARTS.py --regular_lambda2
        "arch_regularizers.pr-darts.lambda3": 0.005,  # paper 5.1 / test_PRDARTS.py --regular_lambda3
        "epochs": 200,  # paper 5.1 / configs/PRDARTS-NASNet-optimizer.config epochs
    }
    if _family(space) == "darts":  # (AutoDL's nb201 protocol takes the weight step first already)
        changes["schedule.order"] = "weight-first"  # supplement Algorithm 1 / test_PRDARTS.py search_func
    return changes


@register_method(
    "pr-darts",
    "PR-DARTS (paper values): hard-concrete gate per op (tau 10->0.1, beta0 0.5, 2 ops run per edge), "
    "skip/non-skip group sparsity + path-depth reward (0.01/0.005/0.005), first order, top-2 pairs by P",
    "Zhou, Xiong, Socher, Hoi. Theory-Inspired Path-Regularized Differential Network Architecture Search. "
    "NeurIPS 2020",
    refusal=PR_DARTS_CNN_ONLY,
)
def _pr_darts(space: str) -> dict[str, Any]:
    return {
        **_pr_darts_common(space),
        "activation.tau_max": 10.0,  # paper 5.1: "We set temperature tau = 10 and linearly reduce it to 0.1"
        "activation.tau_min": 0.1,
        "activation.init_mean": 0.5,  # supplement A.2: beta = 0.5, so that P(g != 0) ~ 1 at tau = 10
        "activation.init_std": 0.0,
        "arch_regularizers.pr-darts.variant": "paper",  # section 4.1 groups, equation (8) path
        "discretizer": "pr-darts",  # paper 5.1: top two of all non-zero ops of all previous nodes by P
        "batch_size": 128,  # paper 5.1: mini-batch size 128
        "w_lr_min": 0.0,  # supplement A.4: 0.025 "annealed down to zero via cosine decay"
    }


@register_method(
    "pr-darts-code",
    "PR-DARTS (official code values): tau 1->0.1, beta0 ~ 1e-3 N(0,1), top-2 ops per edge with drop 0.4 and "
    "straight-through weights, hinged skip/non-skip/pooling groups (0.2), per-edge softmax derivation",
    "Zhou, Xiong, Socher, Hoi. NeurIPS 2020; code: salesforce/PR-DARTS (PRDARTS_search)",
    refusal=PR_DARTS_CNN_ONLY,
)
def _pr_darts_code(space: str) -> dict[str, Any]:
    changes = {
        **_pr_darts_common(space),
        "activation.tau_max": 1.0,  # test_PRDARTS.py --tau_max 1
        "activation.tau_min": 0.1,  # test_PRDARTS.py --tau_min 0.1
        "activation.init_mean": 0.0,  # search_model_prdarts_nasnet.py: 1e-3 * randn
        "activation.init_std": 1e-3,
        "activation.drop_prob": 0.4,  # test_PRDARTS.py --dropout_pro 0.4
        "activation.straight_through": True,  # get_gumbel_prob: hardwts = hardwts_idx - probs.detach() + probs
        "arch_regularizers.pr-darts.variant": "code",  # get_regularization
        "arch_regularizers.pr-darts.hinge": 0.2,  # test_PRDARTS.py --threshold 0.2
        "discretizer": "pr-darts-code",  # genotype(): per-edge softmax, top two (op, input) pairs per node
        "batch_size": 250,  # configs/PRDARTS-NASNet-optimizer.config batch_size
    }
    if _family(space) == "darts":  # PR-DARTS' search code is AutoDL's: on nb201 these are the base already
        changes.update({
            "w_nesterov": True,  # configs/PRDARTS-NASNet-optimizer.config nesterov 1
            "w_weight_decay": 5e-4,  # configs/PRDARTS-NASNet-optimizer.config decay 0.0005 (eta_min 0.001 as DARTS)
            "layers": 6,  # PRDARTS-NASNet-archs.config N=2, nasnet-super: normal x2, reduce, normal, reduce, normal
        })
    return changes


@register_method(
    "lambda-darts",
    "Lambda-DARTS: first-order DARTS whose weight step also maximises the alignment (corr) of the per-cell "
    "architecture gradients (lambda 0.25 ramped over the epochs, finite differences of norm eps0)",
    "Movahedi, Adabinejad, Imani, Keshavarz, Dehghani, Shakery, Araabi. Lambda-DARTS: Mitigating Performance "
    "Collapse by Harmonizing Operation Selection among Cells. ICLR 2023",
    families=ALL_FAMILIES,
)
def _lambda_darts(space: str) -> dict[str, Any]:
    # Official code: dr-faustus/Lambda-DARTS. DARTS-family spaces: run_search.sh + sota/cnn/train_search.py;
    # NAS-Bench-201: NAS-Bench201/scripts-search/algos/DARTS-V1.sh + exps/algos/DARTS-V1.py, whose config is the
    # fork's configs/nas-benchmark/algos/DARTS.config (100 epochs, wd 3e-4, no nesterov, batch 64).
    changes: dict[str, Any] = {
        "weight_regularizers": "lambda",
        "weight_regularizers.lambda.lam": 0.25,  # run_search.sh lambda_=0.25; DARTS-V1.sh lambda=0.25
        "weight_regularizers.lambda.measure": "corr",  # run_search.sh reg_type='corr'; DARTS-V1.sh: corr
        "weight_regularizers.lambda.cells": "auto",  # model_search.py: normal cells only; NB201: every cell
        "weight_regularizers.lambda.exact": False,  # finite differences (get_perturbations, get_reg_grads)
    }
    if _family(space) == "rnn":  # sota/rnn/run.sh and sota/rnn/model.py, model_search.py, train_search.py
        return {
            **changes,
            "weight_regularizers.lambda.eps0": 1e-3,  # run.sh --epsilon_0=0.001
            # model.py RNNModel: rnns = [cell, cell], two stacked cells sharing alpha: the gradients aligned are
            # those of the two cells (one cell would leave nothing to align)
            "layers": 2,
            "hidden_size": 200,  # run.sh --emsize=200 --nhid=200 --nhidlast=200
        }  # lambda 0.25 (run.sh --lambda_=0.25, --lambda_scheduling: ramped over the epochs); the rest DARTS'
    if _family(space) == "nb201":
        return {
            **changes,
            "weight_regularizers.lambda.eps0": 1e-4,  # DARTS-V1.sh epsilon_0=0.0001
            "a_lr": 1e-4,  # DARTS-V1.sh --arch_learning_rate 0.0001 (its plain-DARTS command keeps 0.0003)
            "epochs": 100,  # fork's DARTS.config epochs 100 (the run logs are named "100iters-lowlr")
            "w_weight_decay": 3e-4,  # fork's DARTS.config decay 0.0003
            "w_nesterov": False,  # fork's DARTS.config nesterov 0
        }
    changes.update({
        "weight_regularizers.lambda.eps0": 1e-3,  # run_search.sh epsilon_0=0.001
        "batch_size": 96,  # run_search.sh --batch_size 96
    })
    if space == "darts":
        changes["activation.exclude"] = "none"  # sota/cnn/spaces.py: s5 ("original DARTS space") has 7 ops, no none
    return changes  # s1-s4: RobustDARTS' op sets as they are (spaces.py s3 keeps none)


def _fisher_schedule() -> dict[str, Any]:
    # DARTS-PRIME train_scheduled_hard_statebn.py with the README's --schedfreq 10 --dyno_split --dyno_schedule
    return {
        "schedule": "fisher",
        "schedule.f": 10.0,  # --schedfreq 10
        "schedule.gamma": 0.2,  # --ewma 0.2
        "schedule.threshold": 1.0,  # --init_alpha_threshold 1.0
        "schedule.multiplier": 1.05,  # --threshold_multiplier 1.05
        "schedule.rebalance_split": True,  # --dyno_split: train_portion = 1 - 1/(1 + schedfreq)
        "schedule.order": "arch-first",  # train(): the alpha step is taken before the w step
    }


@register_method(
    "darts-prime",
    "DARTS-PRIME (v3): softmax over all ops, Fisher-informed dynamic schedule (f=10, split f/(1+f)), proximity "
    "regularization towards the discrete cell ramped to rho=0.1",
    "Maile, Lecarpentier, Luga, Wilson. DARTS-PRIME: Regularization and Scheduling Improve Constrained "
    "Optimization in Differentiable NAS. arXiv 2106.11655v3, 2021",
    families=ALL_FAMILIES,
)
def _darts_prime(space: str) -> dict[str, Any]:
    # k8lion/DARTS-PRIME README command: --reg prox --schedfreq 10 --dyno_split --dyno_schedule (softmax over the
    # 8 ops of genotypes.py PRIMITIVES, none included; the optimizers keep the DARTS values of its argparse)
    schedule = _fisher_schedule()
    if _family(space) == "rnn":  # src/train_search_rnn.py with the same flags (its argparse: DARTS' RNN values)
        schedule.update({
            "schedule.gamma": 1.0,  # --ewma 1.0 (its default there: no smoothing)
            "schedule.rebalance_split": False,  # --dyno_split sets args.train_portion, which the RNN script never
            # reads: alpha trains on the validation split, as in DARTS
        })
    return {
        **schedule,
        "arch_regularizers": "prox",
        "arch_regularizers.prox.rho": 0.1,  # --rho 0.1
        "arch_regularizers.prox.squared": False,  # prox_loss: (A - disc).norm(), not squared
        "arch_regularizers.prox.ramp": True,  # prox_loss: clock / total_epochs * rho / 2
    }


@register_method(
    "darts-prime-v1",
    "DARTS-PRIME v1: clamp activation with permanent pruning (no `none`), Fisher-informed dynamic "
    "schedule (f=10, split f/(1+f)), ADMM towards the discrete cell (rho=0.1, Z/U after every 9th arch step)",
    "Maile, Lecarpentier, Luga, Wilson. On Constrained Optimization in Differentiable Neural Architecture "
    "Search. arXiv 2106.11655v1, 2021",
)
def _darts_prime_v1(space: str) -> dict[str, Any]:
    # k8lion/DARTS-PRIME train_scheduled_hard_statebn.py --crb --reg admm --schedfreq 10 --dyno_split --dyno_schedule
    return {
        **_fisher_schedule(),
        "activation": "clamp",  # --crb: clamp(alpha, 0, 1) over CRBPRIMITIVES (7 ops, no none)
        "activation.init_noise": 1e-4,  # model_admm_hard_statebn.py: 1 / num_ops + 1e-4 * randn
        "arch_regularizers": "admm",
        "arch_regularizers.admm.rho": 0.1,  # --rho 0.1
        "arch_regularizers.admm.admm_freq": 9,  # --admm_freq 10 with (alpha_counter + 1) % 10 == 0, then reset
        "arch_regularizers.admm.variant": "code",  # update_Z: Pi(A(alpha + U)); update_U: U + alpha - Z
        "arch_regularizers.admm.kappa": 1.0,  # Network(zuewma=1.0): --zuewma is never passed to it
        "arch_regularizers.admm.squared": False,  # admm_loss: (...).norm(), not squared
    }


# ----- the baselines the remedies are compared with ------------------------------------------------
@register_method(
    "gdas",
    "GDAS: one op per edge sampled by a hard Gumbel-softmax (tau 10 -> 0.1) with the straight-through gradient; "
    "only the sampled op runs",
    "Dong, Yang. Searching for A Robust Neural Architecture in Four GPU Hours. CVPR 2019; code: "
    "D-X-Y/AutoDL-Projects (GDAS)",
)
def _gdas(space: str) -> dict[str, Any]:
    # AutoDL-Projects exps/NAS-Bench-201-algos/GDAS.py with scripts-search/NAS-Bench-201-algos/GDAS.sh and
    # configs/nas-benchmark/algos/GDAS.config (DARTS space: NASNet-space-search-by-GDAS.sh, GDAS-NASNet-CIFAR.config)
    changes: dict[str, Any] = {
        "activation": "gumbel",
        "activation.tau_max": 10.0,  # GDAS.sh --tau_max 10
        "activation.tau_min": 0.1,  # GDAS.sh --tau_min 0.1
        "epochs": 250,  # GDAS.config epochs 250
    }
    if _family(space) == "darts":
        changes.update({
            "schedule.order": "weight-first",  # GDAS.py search_func: the w step, then the alpha step
            "w_nesterov": True,  # search-opts/GDAS-NASNet-CIFAR.config nesterov 1
            "w_weight_decay": 5e-4,  # search-opts/GDAS-NASNet-CIFAR.config decay 0.0005
            "batch_size": 256,  # search-opts/GDAS-NASNet-CIFAR.config batch_size 256
            "layers": 6,  # search-archs/GDAS-NASNet-CIFAR.config N=2, nasnet-super: 6 cells
            "discretizer": "gdas",  # search_model_gdas_nasnet.py genotype: top-2 (op, input) pairs per node
        })
    return changes


@register_method(
    "beta-darts",
    "beta-DARTS: DARTS with the Beta-decay regularization of the architecture logits (mean log-sum-exp per "
    "edge), its weight ramped linearly (50 * epoch / 100)",
    "Ye, Li, Li, Ouyang, Tian, Zhao. beta-DARTS: Beta-Decay Regularization for Differentiable Architecture Search. "
    "CVPR 2022; code: Sunshine-Ye/Beta-DARTS",
)
def _beta_darts(space: str) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "arch_regularizers": "beta-decay",
        "arch_regularizers.beta-decay.lam": 50.0,  # architect.py _backward_step: 50 * epoch / 100
        "arch_regularizers.beta-decay.ramp_epochs": 100,
    }
    if _family(space) == "nb201":  # nasbench201/train_search.py (the SmoothDARTS script the fork extends)
        changes.update({
            "schedule.order": "arch-first",  # train(): architect.step, then the w step
            "w_nesterov": False,  # torch.optim.SGD without nesterov
            "w_weight_decay": 3e-4,  # --weight_decay 3e-4
            "epochs": 100,  # --epochs 100
        })
    # The DARTS spaces: the repository's sota/cnn/train_search.py cannot run (it calls the architect without the
    # epoch); the preset applies the NAS-Bench-201 loss and ramp to DARTS' own protocol (both cell types summed).
    return changes


def _sdarts(space: str, perturbation: str) -> dict[str, Any]:
    # xiangning-chen/SmoothDARTS: nasbench201/train_search.py and sota/cnn/train_search.py, --perturb_alpha
    changes: dict[str, Any] = {
        "perturbation": perturbation,
        "perturbation.epsilon": 0.3,  # --epsilon_alpha 0.3
        "perturbation.epsilon_min": 0.03,  # epsilon_alpha = 0.03 + (args.epsilon_alpha - 0.03) * epoch / epochs
    }
    if perturbation == "pgd":
        changes.update({"perturbation.steps": 7, "perturbation.random_start": True})  # Linf_PGD_alpha defaults
    if _family(space) == "nb201":
        changes.update({
            "schedule.order": "arch-first",  # train(): architect.step, then the w step
            "w_nesterov": False,  # torch.optim.SGD without nesterov
            "w_weight_decay": 3e-4,  # --weight_decay 3e-4
            "epochs": 100,  # --epochs 100
        })
    elif space == "darts":
        changes["activation.exclude"] = "none"  # sota/cnn/spaces.py: s5 ("original DARTS space") has 7 ops, no none
    return changes  # s1-s4: RobustDARTS' op sets as they are (the script's --search_space s1 .. s4)


@register_method(
    "sdarts-rs",
    "SDARTS-RS: the weight step trains under the softmax weights plus uniform noise (radius 0.03 -> 0.3), "
    "clipped and renormalised per edge",
    "Chen, Hsieh. Stabilizing Differentiable Architecture Search via Perturbation-based Regularization. ICML 2020; "
    "code: xiangning-chen/SmoothDARTS",
)
def _sdarts_rs(space: str) -> dict[str, Any]:
    return _sdarts(space, "random")


@register_method(
    "sdarts-adv",
    "SDARTS-ADV: the weight step trains under a 7-step PGD attack on the softmax weights (radius 0.03 -> 0.3)",
    "Chen, Hsieh. Stabilizing Differentiable Architecture Search via Perturbation-based Regularization. ICML 2020; "
    "code: xiangning-chen/SmoothDARTS",
)
def _sdarts_adv(space: str) -> dict[str, Any]:
    return _sdarts(space, "pgd")


@register_method(
    "fair-darts",
    "Fair DARTS: an independent sigmoid weight per op (no softmax competition), a zero-one loss pushing the "
    "weights to 0 or 1 (weight 10), threshold derivation (0.85; DARTS spaces)",
    "Chu, Zhou, Zhang, Li. Fair DARTS: Eliminating Unfair Advantages in Differentiable Architecture Search. "
    "ECCV 2020; code: xiaomi-automl/FairDARTS",
)
def _fair_darts(space: str) -> dict[str, Any]:
    # xiaomi-automl/FairDARTS fairdarts/train_search.py (argparse defaults, as the README runs it)
    changes: dict[str, Any] = {
        "activation": "sigmoid",
        "activation.init_mean": 0.0,  # model_search.py: alphas = zeros (sigmoid 0.5)
        "activation.init_std": 0.0,
        "arch_regularizers": "zero-one",
        "arch_regularizers.zero-one.weight": 10.0,  # --aux_loss_weight 10
        "arch_regularizers.zero-one.norm": "l2",  # --sep_loss l2: ConvSeparateLoss, -mse(sigmoid, 0.5)
    }
    if _family(space) == "darts":  # no NAS-Bench-201 code: there, the loss and activation on AutoDL's protocol
        changes.update({
            "discretizer": "fair-darts",
            "discretizer.threshold": 0.85,  # --parse_method threshold_sparse --op_threshold 0.85
            "batch_size": 128,  # --batch_size 128
            "w_lr": 0.005,  # --learning_rate 0.005
            "a_lr": 3e-3,  # --arch_learning_rate 3e-3
            "a_beta1": 0.9,  # --arch_lr_gamma 0.9: Adam betas (0.9, 0.999)
        })
        if space == "darts":
            changes["activation.exclude"] = "none"  # genotypes.py PRIMITIVES: 7 ops, no none
    return changes


@register_method(
    "darts-minus",
    "DARTS-: DARTS with an auxiliary skip connection outside the mixing on every edge, its coefficient "
    "decayed linearly from 1 over the search; skip_connect stays a candidate",
    "Chu, Wang, Zhang, Zhang, Wei, Yan. DARTS-: Robustly Stepping out of Performance Collapse Without "
    "Indicators. ICLR 2021; code: Meituan-AutoML/DARTS-",
)
def _darts_minus(space: str) -> dict[str, Any]:
    # Meituan-AutoML/DARTS- scripts/run_darts_minus.sh: --auxiliary_skip --skip_beta 1 --decay linear, with
    # src/search/args.py's DARTS protocol (50 epochs, batch 64, lr 0.025 -> 0.001, a_lr 3e-4, first order) and
    # --decay_max_epoch 50 = the search's epochs. The repository has no NAS-Bench-201 code: there, the auxiliary
    # skip on AutoDL's DARTS protocol.
    return {
        "auxiliary": "skip",
        "auxiliary.beta": 1.0,  # --skip_beta 1
        "auxiliary.decay": "linear",  # --decay linear (utils.py DecayScheduler)
        "auxiliary.decay_epochs": None,  # --decay_max_epoch 50 = --epochs 50
    }


@register_method(
    "pc-darts",
    "PC-DARTS: the ops of an edge see a quarter of its channels (the rest bypass, shuffled back), edge "
    "normalization (a softmax-weighted logit per edge), the weights trained alone for the first 15 epochs",
    "Xu, Xie, Zhang, Chen, Qi, Tian, Xiong. PC-DARTS: Partial Channel Connections for Memory-Efficient "
    "Architecture Search. ICLR 2020; code: yuhuixu1993/PC-DARTS",
)
def _pc_darts(space: str) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "partial_channels": 4,  # model_search.py MixedOp: self.k = 4
        "edge_normalization": True,  # betas_normal / betas_reduce, softmax over each node's incoming edges
        "warmup_epochs": 15,  # train_search.py: if epoch >= 15: architect.step(...)
    }
    if _family(space) == "darts":  # train_search.py argparse defaults
        changes.update({
            "batch_size": 256,  # --batch_size 256
            "w_lr": 0.1,  # --learning_rate 0.1
            "w_lr_min": 0.0,  # --learning_rate_min 0.0
            "a_lr": 6e-4,  # --arch_learning_rate 6e-4
        })
    # No NAS-Bench-201 code in the repository: there, the method on AutoDL's DARTS protocol.
    return changes


@register_method(
    "drnas",
    "DrNAS: the mixing weights are samples of a Dirichlet per edge (concentration elu(alpha) + 1, pathwise "
    "gradient); progressive stages prune the ops and widen the partial-channel supernet",
    "Chen, Wang, Cheng, Tang, Hsieh. DrNAS: Dirichlet Neural Architecture Search. ICLR 2021; code: "
    "xiangning-chen/DrNAS",
)
def _drnas(space: str) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "activation": "dirichlet",  # utils.py process_step_vector(method='dirichlet')
        "activation.init_std": 1e-3,  # 1e-3 * torch.randn
        "progression": "stages",
        "progression.frozen_epochs": 10,  # train(): if epoch >= 10: architect.step (the stage's own epochs)
        # the L2 regularizer (--reg_type l2 --reg_scale 1e-3) is Adam's weight decay: a_weight_decay 1e-3
    }
    if _family(space) == "nb201":  # 201-space/train_search_progressive.py (the README's command)
        changes.update({
            "progression.stage_epochs": "50,50",  # train_epochs = [50, 50]
            "progression.partial": "4,2",  # ks = [4, 2]
            "progression.keep": "5,3",  # num_keeps = [5, 3]
            "epochs": 100,  # CosineAnnealingLR(optimizer, sum(train_epochs))
            "schedule.order": "arch-first",  # train(): architect.step, then the weight step
            "w_nesterov": False,  # torch.optim.SGD(momentum, weight_decay)
            "w_weight_decay": 3e-4,  # --weight_decay 3e-4
        })
    else:  # DARTS-space/train_search.py
        changes.update({
            "progression.stage_epochs": "25,25",  # train_epochs = [25, 25]
            "progression.partial": "6,4",  # ks = [6, 4]
            "progression.keep": "7,4",  # num_keeps = [7, 4]
            "channels": 36,  # --init_channels 36
            "layers": 20,  # --layers 20
            "w_lr": 0.1,  # --learning_rate 0.1
            "w_lr_min": 0.0,  # --learning_rate_min 0.0
            "a_lr": 6e-4,  # --arch_learning_rate 6e-4
        })
        if space == "darts":
            changes["activation.exclude"] = "none"  # genotypes.py PRIMITIVES: 'none' commented out
    return changes
