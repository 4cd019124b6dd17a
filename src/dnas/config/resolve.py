"""Resolve a search configuration: defaults < method preset < config file < flags < overrides, then validate.

The ``plugins`` of all three sources are imported first, and the configuration keeps them all."""

from __future__ import annotations

from typing import Any

from dnas.bilevel.methods import METHODS
from dnas.bilevel.precision import check_precision
from dnas.components import ACTIVATIONS, GUARDS, PROGRESSIONS, SLOTS
from dnas.config.base import parse_value, suggest
from dnas.config.search import (
    IMAGE_KEYS,
    LIST_SLOTS,
    RECURRENT_KEYS,
    ComponentConfig,
    SearchConfig,
    apply_override,
    apply_overrides,
    build_component,
    resolve_component,
)
from dnas.data.loading import MODES
from dnas.errors import DnasError, expect_type
from dnas.runtime.metrics import SINKS
from dnas.runtime.plugins import load_plugins, plugin_names
from dnas.runtime.reading import shorten
from dnas.runtime.resources import MAX_SEED
from dnas.spaces import get_space


def resolve_config(flags: dict[str, Any] | None = None, overrides: list[str] | None = None,
                   base: dict[str, Any] | None = None) -> SearchConfig:
    """``base``: the keys of a ``--config`` file (a run's own ``config.yaml`` replays that run);
    ``flags``: explicit settings (e.g. from CLI options; None values are ignored);
    ``overrides``: ``key=value`` strings, applied last."""
    expect_type("flags", flags, dict, type(None))
    expect_type("overrides", overrides, list, tuple, type(None))
    expect_type("base", base, dict, type(None))
    if overrides and not all(isinstance(o, str) for o in overrides):
        raise DnasError("overrides takes a list of key=value strings")
    base = dict(base or {})
    unknown = sorted(set(base) - set(SearchConfig.field_names()))
    if unknown:
        raise DnasError(f"unknown config key(s) {', '.join(shorten(k, 40) for k in unknown[:3])} in the config file"
                        f"{suggest(str(unknown[0]), SearchConfig.field_names())}")
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    overrides = list(overrides or [])
    picked: dict[str, Any] = {k: base[k] for k in ("space", "method") if k in base}
    picked.update(flags)
    # the plugins of the file, the flags and the overrides, all of them, imported before any name is looked up
    plugins = [*plugin_names(base.get("plugins")), *plugin_names(flags.get("plugins"))]
    for item in overrides:  # space and method decide the preset, wherever they are given
        key, _, value = item.partition("=")
        if key.strip() in ("space", "method"):
            picked[key.strip()] = parse_value(value.strip())
        elif key.strip() == "plugins":
            plugins += plugin_names(parse_value(value.strip()))
    plugins = load_plugins(plugins)
    cfg = SearchConfig()
    cfg.space = str(picked.get("space", cfg.space))
    cfg.method = str(picked.get("method", cfg.method))
    space = get_space(cfg.space)
    method = METHODS.get(cfg.method)
    apply_overrides(cfg, method.overrides(space.name))
    for key, value in base.items():
        cfg.set(key, value)
    for key, value in flags.items():
        apply_override(cfg, key, value)
    apply_overrides(cfg, overrides)
    cfg.plugins = plugins
    if cfg.discretizer is None:
        cfg.discretizer = ComponentConfig(space.derivation)
    for slot, registry in SLOTS.items():
        if slot in LIST_SLOTS:
            setattr(cfg, slot, [resolve_component(registry, c) for c in getattr(cfg, slot)])
        else:
            setattr(cfg, slot, resolve_component(registry, getattr(cfg, slot)))
    guard = GUARDS.get(cfg.guard.name)(**cfg.guard.params)
    if guard.hessian_every and not cfg.hessian_every:  # the guard reads the eigenvalue: measure it as often
        cfg.hessian_every = guard.hessian_every
    validate(cfg)
    return cfg


def _validate_partial_channels(cfg: SearchConfig) -> None:
    """``partial_channels`` or the progression's channel groups: each divides the channels (the reduction
    cells' stride-2 edges then get an even number of the doubled channels); one of the two; no auxiliary op."""
    space = get_space(cfg.space)
    channels = cfg.channels or space.default_channels
    if cfg.partial_channels < 1:
        raise DnasError(f"partial_channels must be at least 1, got {cfg.partial_channels}")
    groups = [cfg.partial_channels]
    if cfg.progression.name != "none":
        progression = build_component(PROGRESSIONS, cfg.progression)
        progression.check(cfg.epochs)
        if cfg.partial_channels != 1:
            raise DnasError(f"the {cfg.progression.name} progression sets the partial channels of every stage; "
                            "leave partial_channels at 1")
        groups = list(progression.partial)
        if not ACTIVATIONS.get(cfg.activation.name).prunable:
            raise DnasError(f"the {cfg.progression.name} progression prunes ops, which activation "
                            f"{cfg.activation.name} does not allow (its own masks); use another activation")
    for k in groups:
        if channels % k:
            raise DnasError(f"{k} channel groups must divide the {channels} channels")
    if max(groups) > 1 and cfg.auxiliary.name != "none":
        raise DnasError("partial channel connections and an auxiliary operation do not combine; drop one of them")


def _validate_data(cfg: SearchConfig) -> None:
    """The data keys: a mode, a worker count, and at most one way of predefining the search split."""
    if cfg.data_mode not in MODES:
        raise DnasError(f"data_mode must be one of {', '.join(MODES)}, got {cfg.data_mode!r}")
    if cfg.workers is not None and cfg.workers < 0:
        raise DnasError(f"workers must be >= 0 (0: decode in the main process), got {cfg.workers}")
    if (cfg.train_fraction is None) != (cfg.val_fraction is None):
        raise DnasError("set both train_fraction and val_fraction (PC-DARTS on ImageNet: 0.1 and 0.025), or neither")
    if cfg.train_fraction is not None and cfg.val_fraction is not None:
        if not (0 < cfg.train_fraction < 1 and 0 < cfg.val_fraction < 1
                and cfg.train_fraction + cfg.val_fraction <= 1):
            raise DnasError(f"train_fraction and val_fraction must be positive and sum to at most 1, got "
                            f"{cfg.train_fraction} and {cfg.val_fraction}")
        if cfg.nb201_splits is not None:
            raise DnasError("nb201_splits and train_fraction/val_fraction both predefine the search split; keep one")


#: the components the recurrent search can run, per slot (the others need an image supernet)
RECURRENT_COMPONENTS = {
    "activation": ("softmax",),
    "weight_regularizers": ("lambda",),
    "arch_regularizers": ("prox", "admm", "beta-decay"),
    "discretizer": ("darts-rnn",),
    "perturbation": ("none",),
    "auxiliary": ("none",),
    "progression": ("none",),
    "guard": ("off",),
}


def _validate_recurrent(cfg: SearchConfig) -> None:
    """The recurrent space: its own keys in range, the image keys and components it cannot use refused."""
    defaults = SearchConfig()
    for key in IMAGE_KEYS:
        if getattr(cfg, key) != getattr(defaults, key):
            raise DnasError(f"{key} does not apply to the {cfg.space} space (a text corpus); remove it")
    for slot, allowed in RECURRENT_COMPONENTS.items():
        chosen = getattr(cfg, slot)
        for comp in (chosen if slot in LIST_SLOTS else [chosen]):
            if comp.name not in allowed:
                raise DnasError(f"{slot.rstrip('s').replace('_', ' ')} {comp.name} is not available on the {cfg.space} "
                                f"space; it takes {', '.join(allowed)}")
    if cfg.precision != "fp32":
        raise DnasError(f"precision={cfg.precision} is not available on the {cfg.space} space; its search runs in "
                        "float32 (precision=fp32)")
    dropouts = {k: getattr(cfg, k) for k in ("dropout", "dropout_h", "dropout_x", "dropout_i", "dropout_e")}
    checks = [
        (cfg.hidden_size is None or cfg.hidden_size >= 2, "hidden_size must be at least 2"),
        (cfg.bptt >= 2, f"bptt must be at least 2, got {cfg.bptt}"),
        (cfg.batch_size >= 2, f"batch_size must be at least 2 (the search cell's BatchNorm), got {cfg.batch_size}"),
        (all(0 <= p < 1 for p in dropouts.values()), f"dropout rates must lie in [0, 1), got {dropouts}"),
        (cfg.tar >= 0, f"tar must be >= 0, got {cfg.tar}"),
        (cfg.max_tokens is None or cfg.max_tokens >= 3 * cfg.batch_size,
         f"max_tokens ({cfg.max_tokens}) must leave at least three rows of batch_size tokens"),
        (cfg.eval_batch_size >= 1, f"eval_batch_size must be at least 1, got {cfg.eval_batch_size}"),
    ]
    for ok, message in checks:
        if not ok:
            raise DnasError(message)
    if any(c.name == "lambda" for c in cfg.weight_regularizers) and (cfg.layers or 1) < 2:
        raise DnasError("weight regularizer lambda aligns the architecture gradients of stacked cells, and the "
                        f"{cfg.space} space has one cell unless layers >= 2 (Lambda-DARTS' RNN code stacks two)")


def validate(cfg: SearchConfig) -> None:
    space = get_space(cfg.space)
    if space.family == "rnn":
        _validate_recurrent(cfg)
    else:
        defaults = SearchConfig()
        for key in RECURRENT_KEYS:
            if getattr(cfg, key) != getattr(defaults, key):
                raise DnasError(f"{key} applies to the recurrent space (rnn) only, not to {cfg.space}; remove it")
    checks = [
        (cfg.epochs >= 1, f"epochs must be at least 1, got {cfg.epochs}"),
        (cfg.batch_size >= 1, f"batch_size must be at least 1, got {cfg.batch_size}"),
        (0.0 < cfg.train_portion < 1.0, f"train_portion must lie strictly between 0 and 1, got {cfg.train_portion}"),
        (cfg.w_lr > 0 and cfg.a_lr >= 0, "learning rates must be positive"),
        (0 <= cfg.w_momentum < 1, f"w_momentum must lie in [0, 1), got {cfg.w_momentum}"),
        (0 <= cfg.a_beta1 < 1 and 0 <= cfg.a_beta2 < 1,
         f"a_beta1 and a_beta2 must lie in [0, 1), got {cfg.a_beta1} and {cfg.a_beta2}"),
        (cfg.w_weight_decay >= 0 and cfg.a_weight_decay >= 0, "weight decays must be >= 0"),
        (cfg.w_lr_min >= 0, f"w_lr_min must be >= 0, got {cfg.w_lr_min}"),
        (0 <= cfg.seed <= MAX_SEED, f"seed must lie in 0..2**32-1, got {cfg.seed}"),
        (cfg.crop_padding is None or cfg.crop_padding >= 0, "crop_padding must be >= 0"),
        (cfg.cutout >= 0, f"cutout must be >= 0, got {cfg.cutout}"),
        (cfg.checkpoint_every >= 0, "checkpoint_every must be >= 0 (0: at epoch ends only)"),
        (cfg.log in SINKS, f"log must be one of {', '.join(SINKS)}, got {cfg.log!r}"),
        (cfg.w_lr_min <= cfg.w_lr, f"w_lr_min ({cfg.w_lr_min}) must not exceed w_lr ({cfg.w_lr})"),
        (cfg.grad_clip > 0, f"grad_clip must be positive, got {cfg.grad_clip}"),
        (not cfg.w_nesterov or cfg.w_momentum > 0, "w_nesterov needs w_momentum > 0"),
        (cfg.log_every >= 1, f"log_every must be at least 1, got {cfg.log_every}"),
        (cfg.channels is None or cfg.channels >= 2, "channels must be at least 2"),
        (cfg.layers is None or cfg.layers >= 1, "layers must be at least 1"),
        (cfg.image_size is None or cfg.image_size >= 4, "image_size must be at least 4"),
        (cfg.max_images is None or cfg.max_images >= 2 * cfg.batch_size,
         f"max_images ({cfg.max_images}) must leave at least one batch for each of the train and val halves"),
    ]
    for ok, message in checks:
        if not ok:
            raise DnasError(message)
    if cfg.channels is not None and get_space(cfg.space).family == "darts" and cfg.channels % 2:
        raise DnasError(f"the {cfg.space} space needs an even number of channels (factorized reduce), "
                        f"got {cfg.channels}")
    if cfg.layers is not None and get_space(cfg.space).family == "darts" and cfg.layers < 3:
        raise DnasError(f"the {cfg.space} space needs layers >= 3 so that it has normal and reduction cells, "
                        f"got {cfg.layers}")
    _validate_partial_channels(cfg)
    check_precision(cfg.precision, cfg.estimator.name, [r.name for r in cfg.weight_regularizers])
    _validate_data(cfg)
    if not 0 <= cfg.warmup_epochs < cfg.epochs:
        raise DnasError(f"warmup_epochs must lie in [0, epochs): {cfg.warmup_epochs} warm-up epochs of {cfg.epochs} "
                        f"leave no architecture step; set warmup_epochs=N with N < {cfg.epochs}")
    if cfg.benchmark_table and cfg.space != "nb201":
        raise DnasError(f"benchmark_table holds NAS-Bench-201 cells; it only applies to --space nb201, not {cfg.space}")
    if cfg.hessian_every < 0 or cfg.alignment_every < 0:
        raise DnasError("hessian_every and alignment_every must be 0 (off) or positive")
    every = cfg.guard.params.get("every")
    if cfg.guard.name == "hessian" and cfg.hessian_every != every:
        raise DnasError(f"guard hessian reads an eigenvalue every {every} epochs but hessian_every is "
                        f"{cfg.hessian_every}; set both to the same value")
    names = [c.name for c in cfg.arch_regularizers] + [c.name for c in cfg.weight_regularizers]
    if len(names) != len(set(names)):
        raise DnasError(f"a regularizer is listed twice: {', '.join(names)}")
