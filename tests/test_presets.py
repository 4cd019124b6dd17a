"""Every preset's full hyper-parameter table, written from the papers and the official code (the
source of each value in a comment), against what the preset resolves to; presets as changes of
`darts`; and `dnas methods` (where each component is defined, `--show NAME`)."""

from __future__ import annotations

import pytest

from dnas.bilevel.methods import METHODS, SLOT_KEYS, darts_protocol, with_changes
from dnas.cli import main
from dnas.config.resolve import resolve_config
from dnas.config.search import IMAGE_KEYS, LIST_SLOTS, RECURRENT_KEYS, SINGLE_SLOTS
from dnas.errors import DnasError

# keys of a search configuration that are not hyper-parameters of a method
NOT_HYPER = {"space", "method", "dataset", "data_root", "download", "image_size", "max_images", "seed",
             "crop_padding", "flip", "alignment_every", "hessian_every", "benchmark_table", "log_every",
             "checkpoint_every", "device", "log", "data_mode", "workers", "nb201_splits", "train_fraction",
             "val_fraction", "precision", "plugins"}


def flat(cfg) -> dict:
    """The resolved configuration as ``key=value`` pairs: slots by name, components' parameters as
    ``slot.param`` (list slots: ``slot.member.param``); the keys of the other kind of space (images or
    text) left out, since they must keep their defaults there."""
    out = {}
    foreign = IMAGE_KEYS if cfg.space == "rnn" else RECURRENT_KEYS
    for key, value in cfg.to_dict().items():
        if key in NOT_HYPER or key in foreign:
            continue
        if key in SINGLE_SLOTS:
            out[key] = value["name"]
            out.update({f"{key}.{p}": v for p, v in value["params"].items()})
        elif key in LIST_SLOTS:
            out[key] = ",".join(c["name"] for c in value) or "none"
            out.update({f"{key}.{c['name']}.{p}": v for c in value for p, v in c["params"].items()})
        else:
            out[key] = value
    return out


# ----- the DARTS bases ------------------------------------------------------------------------------
# quark0/darts cnn/train_search.py (argparse defaults), architect.py, model_search.py
DARTS_CODE = {
    "epochs": 50,  # --epochs 50
    "batch_size": 64,  # --batch_size 64
    "train_portion": 0.5,  # --train_portion 0.5
    "channels": None,  # --init_channels 16 = the space default
    "layers": None,  # --layers 8 = the space default
    "cutout": 0,  # --cutout off in the search
    "w_lr": 0.025,  # --learning_rate 0.025
    "w_lr_min": 0.001,  # --learning_rate_min 0.001
    "w_momentum": 0.9,  # --momentum 0.9
    "w_nesterov": False,  # torch.optim.SGD(..., momentum, weight_decay): no nesterov
    "w_weight_decay": 3e-4,  # --weight_decay 3e-4
    "grad_clip": 5.0,  # --grad_clip 5
    "a_lr": 3e-4,  # --arch_learning_rate 3e-4
    "a_beta1": 0.5,  # architect.py Adam betas=(0.5, 0.999)
    "a_beta2": 0.999,
    "a_weight_decay": 1e-3,  # --arch_weight_decay 1e-3
    "activation": "softmax",  # model_search.py F.softmax(alphas)
    "activation.init_std": 1e-3,  # model_search.py 1e-3 * torch.randn
    "activation.exclude": "",  # genotypes.py PRIMITIVES: 8 ops, none included
    "schedule": "alternate",  # one architect.step per iteration
    "schedule.order": "arch-first",  # train(): architect.step before the weight step
    "estimator": "first-order",  # --unrolled off
    "discretizer": "darts",  # model_search.py genotype(): top-2 edges by best non-none op
    "discretizer.edges_per_node": 2,
    "weight_regularizers": "none",
    "arch_regularizers": "none",
    "perturbation": "none",  # the weight step trains under the softmax weights themselves
    "auxiliary": "none",  # model_search.py MixedOp: nothing outside the softmax-weighted sum
    "progression": "none",  # one stage
    "partial_channels": 1,  # every op sees all channels
    "edge_normalization": False,  # no edge weights
    "warmup_epochs": 0,  # architect.step from the first iteration
    "guard": "off",  # the search runs all its epochs
}
# AutoDL-Projects: configs/nas-benchmark/algos/DARTS.config, scripts-search/NAS-Bench-201-algos/DARTS-V1.sh,
# exps/NAS-Bench-201-algos/DARTS-V1.py, xautodl/models/cell_searchs/search_model_darts.py
AUTODL_NB201 = {
    **DARTS_CODE,
    "layers": None,  # DARTS-V1.sh num_cells=5 = the space default; channel=16
    "w_nesterov": True,  # DARTS.config nesterov 1
    "w_weight_decay": 5e-4,  # DARTS.config decay 0.0005 (epochs 50, batch 64, LR 0.025, eta_min 0.001 as DARTS)
    "schedule.order": "weight-first",  # DARTS-V1.py search_func: w_optimizer.step, then a_optimizer.step
    "discretizer": "argmax",  # search_model_darts.py genotype(): arg-max op per edge, none included
}
del AUTODL_NB201["discretizer.edges_per_node"]
BASE = {"darts": DARTS_CODE, "nb201": AUTODL_NB201}

# ----- the methods ----------------------------------------------------------------------------------
SECOND_ORDER = {  # quark0/darts architect.py (--unrolled); AutoDL DARTS-V2.py
    "estimator": "second-order",
    "estimator.xi": None,  # architect.step(..., lr, ...): the current w learning rate
    "estimator.virtual_step": "optimizer",  # _compute_unrolled_model: theta - eta (mu buffer + dtheta + wd theta)
    "estimator.hvp": "fd",  # _hessian_vector_product: central difference
    "estimator.fd_radius": 0.01,  # r=1e-2, R = r / ||v||
    "estimator.clip": None,  # cnn/architect.py: the virtual step's gradient is not clipped
    "schedule.order": "arch-first",  # AutoDL DARTS-V2.py: backward_step_unrolled, then the w step
}
AMENDED = {  # no official code; AdversarialNAS architect.py (HVPs "from openreview BJlgt2EYwr")
    "estimator": "amended",
    "estimator.eta": 0.1,  # the paper's value is not public; AdversarialNAS' configs use 0.1
    "estimator.hvp": "exact",  # chosen by the collapse protocol (docs); AdversarialNAS: fd
    "estimator.fd_radius": 0.01,  # r=1e-2 over ||v|| and over ||u|| (_hessian_vector_product_1 and _2), for hvp=fd
    "schedule.order": "arch-first",  # AdversarialNAS network.py: architect step, then the weight step
}
PR_PAPER = {  # PR-DARTS paper section 5.1 and supplement A.2-A.4
    "activation": "hard-concrete",
    "activation.tau_max": 10.0,  # 5.1: temperature 10, linearly reduced
    "activation.tau_min": 0.1,  # 5.1: ... to 0.1
    "activation.a": -0.1,  # 5.1: a = -0.1
    "activation.b": 1.1,  # 5.1: b = 1.1
    "activation.init_mean": 0.5,  # A.2: beta = 0.5
    "activation.init_std": 0.0,
    "activation.top_k": 2,  # 5.1: two operations per edge per iteration (following GDAS)
    "activation.drop_prob": 0.0,  # not in the paper
    "activation.straight_through": False,  # not in the paper
    "activation.exclude": "",  # 5.1: eight operations, zero included
    "arch_regularizers": "pr-darts",
    "arch_regularizers.pr-darts.lambda1": 0.01,  # 5.1
    "arch_regularizers.pr-darts.lambda2": 0.005,  # 5.1
    "arch_regularizers.pr-darts.lambda3": 0.005,  # 5.1
    "arch_regularizers.pr-darts.variant": "paper",  # 4.1 groups and equation (8): sum of P over O_p per edge
    "arch_regularizers.pr-darts.hinge": 0.2,  # (code variant only)
    "discretizer": "pr-darts",  # 5.1: top two of all non-zero ops from all previous nodes, by P
    "discretizer.pairs_per_node": 2,
    "epochs": 200,  # 5.1: 200 epochs
    "batch_size": 128,  # 5.1: mini-batch size 128
    "w_lr_min": 0.0,  # A.4: 0.025 annealed down to zero
    "schedule.order": "weight-first",  # A.3 Algorithm 1: update W, then beta
}
PR_CODE = {  # salesforce/PR-DARTS PRDARTS_search: test_PRDARTS.py, search_model_prdarts_nasnet.py, configs/
    **PR_PAPER,
    "activation.tau_max": 1.0,  # --tau_max 1
    "activation.init_mean": 0.0,  # 1e-3 * torch.randn
    "activation.init_std": 1e-3,
    "activation.drop_prob": 0.4,  # --dropout_pro 0.4
    "activation.straight_through": True,  # hardwts = hardwts_idx - probs.detach() + probs
    "arch_regularizers.pr-darts.variant": "code",  # get_regularization()
    "arch_regularizers.pr-darts.hinge": 0.2,  # --threshold 0.2
    "discretizer": "pr-darts-code",  # genotype(): softmax(beta) per edge, top-2 (op, input) per node
    "batch_size": 250,  # PRDARTS-NASNet-optimizer.config batch_size 250
    "w_lr_min": 0.001,  # PRDARTS-NASNet-optimizer.config eta_min 0.001
    "w_nesterov": True,  # PRDARTS-NASNet-optimizer.config nesterov 1
    "w_weight_decay": 5e-4,  # PRDARTS-NASNet-optimizer.config decay 0.0005
    "epochs": 200,  # PRDARTS-NASNet-optimizer.config epochs 200
    "schedule.order": "weight-first",  # test_PRDARTS.py search_func: w step, then the arch step
}
LAMBDA = {  # dr-faustus/Lambda-DARTS
    "weight_regularizers": "lambda",
    "weight_regularizers.lambda.lam": 0.25,  # run_search.sh lambda_=0.25; NB201 DARTS-V1.sh lambda=0.25
    "weight_regularizers.lambda.measure": "corr",  # --corr_regularization corr
    "weight_regularizers.lambda.cells": "auto",  # normal cells (DARTS family), all cells (NB201)
    "weight_regularizers.lambda.exact": False,  # finite differences
}
LAMBDA_DARTS = {  # run_search.sh + sota/cnn/train_search.py, spaces.py
    **LAMBDA,
    "weight_regularizers.lambda.eps0": 1e-3,  # run_search.sh epsilon_0=0.001
    "batch_size": 96,  # run_search.sh --batch_size 96
}
LAMBDA_NB201 = {  # NAS-Bench201/scripts-search/algos/DARTS-V1.sh, exps/algos/DARTS-V1.py, the fork's DARTS.config
    **LAMBDA,
    "weight_regularizers.lambda.eps0": 1e-4,  # DARTS-V1.sh epsilon_0=0.0001
    "a_lr": 1e-4,  # DARTS-V1.sh --arch_learning_rate 0.0001
    "epochs": 100,  # the fork's DARTS.config epochs 100
    "w_weight_decay": 3e-4,  # the fork's DARTS.config decay 0.0003
    "w_nesterov": False,  # the fork's DARTS.config nesterov 0
    "schedule.order": "weight-first",  # the fork's DARTS-V1.py: w step (with the regularizer), then alpha
}
FISHER = {  # k8lion/DARTS-PRIME train_scheduled_hard_statebn.py, README: --schedfreq 10 --dyno_split --dyno_schedule
    "schedule": "fisher",
    "schedule.f": 10.0,  # --schedfreq 10
    "schedule.gamma": 0.2,  # --ewma 0.2
    "schedule.threshold": 1.0,  # --init_alpha_threshold 1.0
    "schedule.multiplier": 1.05,  # --threshold_multiplier 1.05
    "schedule.rebalance_split": True,  # --dyno_split
    "schedule.order": "arch-first",  # train(): the alpha step before the weight step
}
PRIME_V3 = {
    **FISHER,
    "arch_regularizers": "prox",  # --reg prox
    "arch_regularizers.prox.rho": 0.1,  # --rho 1e-1
    "arch_regularizers.prox.squared": False,  # prox_loss: .norm()
    "arch_regularizers.prox.ramp": True,  # prox_loss: clock / total_epochs
}
PRIME_V1 = {
    **FISHER,
    "activation": "clamp",  # --crb
    "activation.init_noise": 1e-4,  # 1 / num_ops + 1e-4 * randn
    "activation.mask_sync_every": 1,  # (host copy of the pruning mask; the code prunes after every w step)
    "activation.exclude": "",  # CRBPRIMITIVES drops none; clamp excludes it by itself
    "arch_regularizers": "admm",  # --reg admm
    "arch_regularizers.admm.rho": 0.1,  # --rho 1e-1
    "arch_regularizers.admm.admm_freq": 9,  # --admm_freq 10, (alpha_counter + 1) % 10 == 0, then reset to 0
    "arch_regularizers.admm.variant": "code",  # update_Z, update_U
    "arch_regularizers.admm.kappa": 1.0,  # Network(zuewma=1.0): the script's --zuewma is not passed
    "arch_regularizers.admm.squared": False,  # admm_loss: .norm()
}
GDAS = {  # AutoDL-Projects exps/NAS-Bench-201-algos/GDAS.py, scripts-search/NAS-Bench-201-algos/GDAS.sh, GDAS.config
    "activation": "gumbel",  # search_model_gdas.py: hardwts from gumbel-softmax, only the sampled op runs
    "activation.tau_max": 10.0,  # GDAS.sh --tau_max 10
    "activation.tau_min": 0.1,  # GDAS.sh --tau_min 0.1
    "activation.init_std": 1e-3,  # search_model_gdas.py: 1e-3 * torch.randn
    "activation.exclude": "",  # NAS_BENCH_201 / DARTS_SPACE op lists, none included
    "epochs": 250,  # GDAS.config epochs 250
}
GDAS_DARTS = {  # NASNet-space-search-by-GDAS.sh, search-opts/GDAS-NASNet-CIFAR.config, search_model_gdas_nasnet.py
    **GDAS,
    "schedule.order": "weight-first",  # GDAS.py search_func: w step, then the alpha step
    "w_nesterov": True,  # GDAS-NASNet-CIFAR.config nesterov 1
    "w_weight_decay": 5e-4,  # GDAS-NASNet-CIFAR.config decay 0.0005
    "batch_size": 256,  # GDAS-NASNet-CIFAR.config batch_size 256
    "layers": 6,  # search-archs GDAS-NASNet-CIFAR.config N=2 with nasnet-super: 6 cells
    "discretizer": "gdas",  # genotype(): the two strongest (op, input) pairs per node
}
BETA_DECAY = {  # Sunshine-Ye/Beta-DARTS optimizers/darts/architect.py
    "arch_regularizers": "beta-decay",
    "arch_regularizers.beta-decay.lam": 50.0,  # _backward_step: 0 + 50 * epoch / 100
    "arch_regularizers.beta-decay.ramp_epochs": 100,
}
SMOOTH_NB201 = {  # xiangning-chen/SmoothDARTS nasbench201/train_search.py (beta-DARTS' fork keeps it)
    "schedule.order": "arch-first",  # train(): architect.step, then the w step
    "w_nesterov": False,  # torch.optim.SGD(momentum, weight_decay)
    "w_weight_decay": 3e-4,  # --weight_decay 3e-4
    "epochs": 100,  # --epochs 100
}
SDARTS = {  # SmoothDARTS attacker/perturb.py, train_search.py
    "perturbation.epsilon": 0.3,  # --epsilon_alpha 0.3
    "perturbation.epsilon_min": 0.03,  # 0.03 + (epsilon_alpha - 0.03) * epoch / epochs
}
SDARTS_RS = {**SDARTS, "perturbation": "random"}  # --perturb_alpha random: Random_alpha
SDARTS_ADV = {**SDARTS, "perturbation": "pgd", "perturbation.steps": 7,  # --perturb_alpha pgd_linf: Linf_PGD_alpha
              "perturbation.random_start": True}  # steps=7, random_start=True (its defaults at the call site)
FAIR = {  # xiaomi-automl/FairDARTS fairdarts/model_search.py, separate_loss.py
    "activation": "sigmoid",  # F.sigmoid(alphas), per op
    "activation.init_mean": 0.0,  # alphas = zeros
    "activation.init_std": 0.0,
    "activation.exclude": "",
    "arch_regularizers": "zero-one",  # ConvSeparateLoss
    "arch_regularizers.zero-one.weight": 10.0,  # --aux_loss_weight 10
    "arch_regularizers.zero-one.norm": "l2",  # --sep_loss l2: -mse(sigmoid, 0.5)
}
FAIR_DARTS = {  # fairdarts/train_search.py argparse defaults
    **FAIR,
    "discretizer": "fair-darts",  # --parse_method threshold_sparse
    "discretizer.threshold": 0.85,  # --op_threshold 0.85
    "discretizer.edges_per_node": 2,  # at most two edges per node
    "batch_size": 128,  # --batch_size 128
    "w_lr": 0.005,  # --learning_rate 0.005
    "a_lr": 3e-3,  # --arch_learning_rate 3e-3
    "a_beta1": 0.9,  # --arch_lr_gamma 0.9
}
DARTS_MINUS = {  # Meituan-AutoML/DARTS- scripts/run_darts_minus.sh, src/search/model_search.py, src/utils.py
    "auxiliary": "skip",  # --auxiliary_skip: Identity (stride 1) / FactorizedReduce (stride 2) outside the mix
    "auxiliary.beta": 1.0,  # --skip_beta 1
    "auxiliary.decay": "linear",  # --decay linear: base * (T_max - epoch) / T_max
    "auxiliary.decay_epochs": None,  # --decay_max_epoch 50 = --epochs 50
}
PC = {  # yuhuixu1993/PC-DARTS model_search.py, train_search.py
    "partial_channels": 4,  # MixedOp self.k = 4
    "edge_normalization": True,  # betas, softmax per node over its incoming edges
    "warmup_epochs": 15,  # if epoch >= 15: architect.step
}
PC_DARTS = {  # train_search.py argparse defaults
    **PC,
    "batch_size": 256,  # --batch_size 256
    "w_lr": 0.1,  # --learning_rate 0.1
    "w_lr_min": 0.0,  # --learning_rate_min 0.0
    "a_lr": 6e-4,  # --arch_learning_rate 6e-4
}
DRNAS = {  # xiangning-chen/DrNAS utils.py process_step_vector, architect.py
    "activation": "dirichlet",  # Dirichlet(elu(alpha) + 1).rsample()
    "activation.init_std": 1e-3,  # 1e-3 * torch.randn
    "activation.exclude": "",
    "progression": "stages",
    "progression.frozen_epochs": 10,  # train(): if epoch >= 10: architect.step (per stage)
}
DRNAS_NB201 = {  # 201-space/train_search_progressive.py
    **DRNAS,
    "progression.stage_epochs": "50,50",  # train_epochs = [50, 50]
    "progression.partial": "4,2",  # ks = [4, 2]
    "progression.keep": "5,3",  # num_keeps = [5, 3]
    "epochs": 100,  # CosineAnnealingLR(optimizer, sum(train_epochs))
    "schedule.order": "arch-first",  # architect.step before the weight step
    "w_nesterov": False,  # torch.optim.SGD(momentum, weight_decay)
    "w_weight_decay": 3e-4,  # --weight_decay 3e-4
}
DRNAS_DARTS = {  # DARTS-space/train_search.py
    **DRNAS,
    "progression.stage_epochs": "25,25",  # train_epochs = [25, 25]
    "progression.partial": "6,4",  # ks = [6, 4]
    "progression.keep": "7,4",  # num_keeps = [7, 4]
    "channels": 36,  # --init_channels 36
    "layers": 20,  # --layers 20
    "w_lr": 0.1,  # --learning_rate 0.1
    "w_lr_min": 0.0,  # --learning_rate_min 0.0
    "a_lr": 6e-4,  # --arch_learning_rate 6e-4
}


# ----- the recurrent space -------------------------------------------------------------------------------
# quark0/darts rnn/train_search.py (argparse defaults), rnn/architect.py, rnn/model_search.py
DARTS_RNN = {
    "epochs": 50,  # --epochs 50
    "batch_size": 256,  # --batch_size 256 (train_data and search_data, the validation split, alike)
    "layers": None,  # one cell (RNNModel: rnns = [cell])
    "hidden_size": None,  # --emsize/--nhid/--nhidlast 300 = the space default
    "bptt": 35,  # --bptt 35; seq_len = 35, or int(17.5) with probability 0.05
    "dropout": 0.75,  # --dropout 0.75
    "dropout_h": 0.25,  # --dropouth 0.25
    "dropout_x": 0.75,  # --dropoutx 0.75
    "dropout_i": 0.2,  # --dropouti 0.2
    "dropout_e": 0.0,  # --dropoute 0
    "tar": 1e-3,  # --beta 1e-3 (--alpha, AR, is 0)
    "max_tokens": None,  # the whole training split
    "eval_batch_size": 10,  # eval_batch_size = 10
    "w_lr": 20.0,  # --lr 20
    "w_lr_min": 20.0,  # no lr schedule: lr stays 20 (scaled by seq_len / bptt per step)
    "w_momentum": 0.0,  # torch.optim.SGD(params, lr, weight_decay): no momentum
    "w_nesterov": False,
    "w_weight_decay": 5e-7,  # --wdecay 5e-7
    "grad_clip": 0.25,  # --clip 0.25
    "a_lr": 3e-3,  # --arch_lr 3e-3
    "a_beta1": 0.9,  # architect.py torch.optim.Adam(..., lr, weight_decay): default betas
    "a_beta2": 0.999,
    "a_weight_decay": 1e-3,  # --arch_wdecay 1e-3
    "activation": "softmax",  # F.softmax(self.weights, dim=-1)
    "activation.init_std": 1e-3,  # torch.randn(k, len(PRIMITIVES)).mul_(1e-3)
    "activation.exclude": "",  # genotypes.py PRIMITIVES: 5 ops, none included
    "schedule": "alternate",  # architect.step on every batch
    "schedule.order": "arch-first",  # train(): architect.step before the w step
    "estimator": "first-order",  # --unrolled off
    "discretizer": "darts-rnn",  # genotype(): per node the strongest (predecessor, non-none op)
    "weight_regularizers": "none",
    "arch_regularizers": "none",
    "perturbation": "none",
    "auxiliary": "none",
    "progression": "none",
    "warmup_epochs": 0,  # architect.step from the first batch
    "guard": "off",  # all epochs
}
SECOND_ORDER_RNN = {  # rnn/architect.py (--unrolled)
    **SECOND_ORDER,
    "estimator.clip": 0.25,  # _clip(grads, args.clip) in _compute_unrolled_model and _clip(dtheta, ...)
}
LAMBDA_RNN = {  # dr-faustus/Lambda-DARTS sota/rnn/run.sh, model.py, model_search.py, train_search.py
    **LAMBDA,
    "weight_regularizers.lambda.eps0": 1e-3,  # run.sh --epsilon_0=0.001
    "layers": 2,  # model.py RNNModel: two stacked cells sharing alpha, the gradients aligned
    "hidden_size": 200,  # run.sh --emsize=200 --nhid=200 --nhidlast=200
}
PRIME_RNN = {  # k8lion/DARTS-PRIME src/train_search_rnn.py with the README's --reg prox --schedfreq 10 ...
    **PRIME_V3,
    "schedule.gamma": 1.0,  # --ewma 1.0 (its default in the RNN script)
    "schedule.rebalance_split": False,  # --dyno_split: train_portion is never read by the RNN script
}


def rnn_tables() -> dict[str, dict]:
    """The table every preset available on the recurrent space must resolve to there."""
    replaced_schedule = _drop(DARTS_RNN, "schedule.order")
    return {
        "darts": DARTS_RNN,
        "darts-2nd": {**DARTS_RNN, **SECOND_ORDER_RNN},
        "amended-darts": {**DARTS_RNN, **AMENDED},
        "lambda-darts": {**DARTS_RNN, **LAMBDA_RNN},
        "darts-prime": {**replaced_schedule, **PRIME_RNN},
    }


def _drop(table: dict, *keys: str) -> dict:
    return {k: v for k, v in table.items() if k not in keys}


def tables(space: str) -> dict[str, dict]:
    """The table every preset must resolve to on ``space`` (DARTS-family spaces share the darts tables)."""
    family = "nb201" if space == "nb201" else "darts"
    base = BASE[family]
    replaced_schedule = _drop(base, "schedule.order")
    return {
        "darts": base,
        "darts-2nd": {**base, **SECOND_ORDER},
        "amended-darts": {**base, **AMENDED},
        "pr-darts": {**_drop(base, "activation.init_std", "discretizer.edges_per_node"), **PR_PAPER},
        "pr-darts-code": {**_drop(base, "activation.init_std", "discretizer.edges_per_node"), **PR_CODE,
                          "layers": 6 if family == "darts" else None},  # PRDARTS-NASNet-archs.config N=2: 6 cells
        "lambda-darts": {**base, **(LAMBDA_NB201 if family == "nb201" else LAMBDA_DARTS),
                         # sota/cnn/spaces.py: s5 (the DARTS space) has 7 ops, no none; s1-s4 as RobustDARTS'
                         "activation.exclude": "none" if space == "darts" else ""},
        "darts-prime": {**replaced_schedule, **PRIME_V3},
        "darts-prime-v1": {**_drop(replaced_schedule, "activation.init_std"), **PRIME_V1},
        "gdas": {**_drop(base, "discretizer.edges_per_node"), **(GDAS if family == "nb201" else GDAS_DARTS)},
        "beta-darts": {**base, **BETA_DECAY, **(SMOOTH_NB201 if family == "nb201" else {})},
        "sdarts-rs": {**base, **SDARTS_RS, **(SMOOTH_NB201 if family == "nb201" else {}),
                      "activation.exclude": "none" if space == "darts" else ""},  # sota/cnn/spaces.py s5: no none
        "sdarts-adv": {**base, **SDARTS_ADV, **(SMOOTH_NB201 if family == "nb201" else {}),
                       "activation.exclude": "none" if space == "darts" else ""},
        "fair-darts": {**_drop(base, "activation.init_std", "discretizer.edges_per_node"),
                       **(FAIR if family == "nb201" else FAIR_DARTS),
                       "activation.exclude": "none" if space == "darts" else ""},  # genotypes.py: 7 ops, no none
        "darts-minus": {**base, **DARTS_MINUS},  # spaces.py s5 = the DARTS space with none; s1-s4 as RobustDARTS'
        "pc-darts": {**base, **(PC if family == "nb201" else PC_DARTS)},
        "drnas": {**base, **(DRNAS_NB201 if family == "nb201" else DRNAS_DARTS),
                  "activation.exclude": "none" if space == "darts" else ""},  # genotypes.py: none commented out
    }


@pytest.mark.parametrize("space", ["darts", "nb201", "s1", "s3"])
@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_preset_resolves_to_its_table(method, space):
    got = flat(resolve_config({"method": method, "space": space}))
    want = tables(space)[method]
    differ = {k: (got.get(k, "<missing>"), want.get(k, "<missing>")) for k in set(got) | set(want)
              if got.get(k, "<missing>") != want.get(k, "<missing>")}
    assert not differ, f"{method} on {space}: (resolved, table) {differ}"


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_preset_resolves_to_its_table_on_the_recurrent_space_or_is_refused(method):
    table = rnn_tables().get(method)
    if table is None:  # not available there: one sentence naming what is
        with pytest.raises(DnasError, match=r"on rnn use amended-darts, darts, darts-2nd, darts-prime, lambda-darts$"):
            resolve_config({"method": method, "space": "rnn"})
        return
    got = flat(resolve_config({"method": method, "space": "rnn"}))
    differ = {k: (got.get(k, "<missing>"), table.get(k, "<missing>")) for k in set(got) | set(table)
              if got.get(k, "<missing>") != table.get(k, "<missing>")}
    assert not differ, f"{method} on rnn: (resolved, table) {differ}"
    changes = METHODS.get(method).changes("rnn")
    by_hand = resolve_config({"method": "darts", "space": "rnn"}, [_override(k, v) for k, v in changes.items()])
    by_hand.method = method
    assert resolve_config({"method": method, "space": "rnn"}) == by_hand


def test_the_tables_name_exactly_the_registered_methods():
    """A preset added without a table, or a table left for a preset that is gone, fails here."""
    for space in ("darts", "nb201"):
        assert sorted(tables(space)) == sorted(METHODS.names())


# ----- presets as changes of darts -----------------------------------------------------------------
def _override(key: str, value) -> str:
    text = {True: "true", False: "false", None: "null"}.get(value, value) if not isinstance(value, int | float) \
        or isinstance(value, bool) else repr(value)
    return f"{key}={text}"


@pytest.mark.parametrize("space", ["darts", "nb201", "s2"])
def test_a_preset_is_darts_plus_its_changes(space):
    """Every preset resolves to what a user gets from ``--method darts`` and its changes typed as
    ``key=value`` overrides (the claim of `dnas methods --show`), through the command-line path."""
    assert METHODS.get("darts").changes(space) == {}
    for method in METHODS.names():
        changes = METHODS.get(method).changes(space)
        by_hand = resolve_config({"method": "darts", "space": space}, [_override(k, v) for k, v in changes.items()])
        by_hand.method = method
        assert resolve_config({"method": method, "space": space}) == by_hand, method


@pytest.mark.parametrize("space", ["darts", "nb201", "s3"])
def test_a_preset_restates_no_value_of_darts(space):
    """Changes are differences: outside the slots a method replaces, no change repeats the base value."""
    base = darts_protocol(space)
    for method in METHODS.names():
        changes = METHODS.get(method).changes(space)
        replaced = {k for k in changes if k in SLOT_KEYS and changes[k] != base.get(k)}
        same = [k for k, v in changes.items()
                if k.split(".")[0] not in replaced and k in base and base[k] == v]
        assert not same, f"{method} on {space} restates {same}"


def test_changing_a_slot_drops_the_base_parameters_of_that_slot():
    base = {"schedule": "alternate", "schedule.order": "weight-first", "activation": "softmax",
            "activation.init_std": 1e-3, "epochs": 50}
    merged = with_changes(base, {"schedule": "fisher", "schedule.f": 5.0, "activation.exclude": "none"})
    assert merged == {"schedule": "fisher", "activation": "softmax", "activation.init_std": 1e-3, "epochs": 50,
                      "schedule.f": 5.0, "activation.exclude": "none"}
    assert list(merged).index("schedule") < list(merged).index("schedule.f")  # a slot before its parameters
    # naming the same implementation again keeps its parameters
    assert with_changes(base, {"schedule": "alternate"})["schedule.order"] == "weight-first"


# ----- dnas methods ----------------------------------------------------------------------------------
def test_methods_lists_where_each_component_is_defined(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "hard-concrete    dnas.components.hard_concrete.HardConcrete" in out
    assert "fisher           dnas.components.prime.FisherSchedule" in out
    assert "lambda           dnas.components.lambda_darts.LambdaRegularizer" in out


def test_methods_show_prints_the_resolved_preset(capsys):
    assert main(["methods", "--show", "lambda-darts", "--space", "darts"]) == 0
    out = capsys.readouterr().out
    changes = out.split("changes from darts:")[1].split("implementations:")[0]
    assert "batch_size=96" in changes and "activation.exclude=none" in changes
    assert "weight_regularizers.lambda.exact=false" in changes and "epochs" not in changes
    assert "weight_regularizers  lambda           dnas.components.lambda_darts.LambdaRegularizer" in out
    resolved = out.split("resolved configuration:")[1]
    assert "batch_size: 96" in resolved and "w_weight_decay: 0.0003" in resolved and "exclude: none" in resolved
    assert main(["methods", "--show", "darts"]) == 0
    out = capsys.readouterr().out
    assert "darts on nb201" in out and "(none: this is the base)" in out and "w_nesterov: true" in out


def test_methods_show_of_an_unknown_method_is_one_sentence(capsys):
    assert main(["methods", "--show", "magic"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'magic'" in err and len(err.strip().splitlines()) == 1
