"""The configuration of a training run (``dnas train``): its keys, presets and resolution.

Three presets, each the published protocol of its family (every value can be overridden):

``darts-cifar`` (DARTS family: quark0/darts ``cnn/train.py`` run as its README says, with
``--auxiliary --cutout``; checked against salesforce/PR-DARTS ``PRDARTS_eval/train_cifar.py``,
which shares the values except batch 128 and drop-path 0.3, and against the evaluation settings
of Lambda-DARTS and DARTS-PRIME):
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
``darts-ptb`` (the recurrent space on a word-level corpus: quark0/darts ``rnn/train.py``, DARTS
paper appendix A.2.2):
    one cell of 850 units, tied embedding and decoder, 8000 epochs (the paper: "until convergence"),
    batch 64, SGD lr 20 without momentum, weight decay 8e-7, gradient-norm clip 0.25, BPTT 35 with
    random lengths (``N(35, 5)``, 17.5 with probability 0.05, at least 5, at most 55) and the lr
    scaled by ``length / 35`` per step, dropouts 0.75 (output), 0.25 (states), 0.75 (input),
    0.2 (embedded input), 0.1 (embedding), TAR 1e-3; NT-ASGD: after an epoch whose validation
    loss is worse than the best of all but the last ``nonmono = 5`` epochs, the optimizer becomes
    ASGD (lr 20, averaging from its first step) and the averaged weights are evaluated; the best
    weights on the validation split (batch 10) are scored on the test split (batch 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dnas.config.base import Config, split_override, suggest
from dnas.data.loading import MODES
from dnas.errors import DnasError
from dnas.retrain.network import check_genotype, family_of
from dnas.runtime.files import CONFIG, GENOTYPE
from dnas.runtime.metrics import SINKS
from dnas.runtime.plugins import load_plugins, plugin_names
from dnas.runtime.reading import read_yaml, shorten
from dnas.runtime.resources import MAX_SEED
from dnas.spaces.published import ResolvedGenotype, resolve_genotype

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
    data_mode: str = "auto"  # where the images live: memory, stream (decoded in workers), auto (memory if they fit)
    workers: int | None = None  # processes decoding streamed images (None: one fewer than the cores, at most 4)
    test_crop: float = 1.0  # share of the shorter side the centred test crop keeps before resizing (ImageNet: 0.875)
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
    # the recurrent space (language modelling: quark0/darts rnn/train.py; rnn genotypes only)
    hidden_size: int | None = None  # embedding and hidden size (None: 850)
    bptt: int = 35  # mean BPTT length
    max_seq_len_delta: int = 20  # the longest BPTT segment is bptt + max_seq_len_delta
    dropout: float = 0.75  # locked dropout on the cell output
    dropout_h: float = 0.25  # variational dropout on the states entering the cell's products
    dropout_x: float = 0.75  # variational dropout on the cell input
    dropout_i: float = 0.2  # locked dropout on the embedded input
    dropout_e: float = 0.1  # embedding dropout (whole word types)
    tar: float = 1e-3  # temporal activation regularization (slowness)
    nonmono: int = 5  # NT-ASGD's patience in epochs (0: never switch to ASGD)
    test_batch_size: int = 1  # the test split's batch (the validation split uses eval_batch_size)
    max_tokens: int | None = None  # the first N tokens of the training split (CPU budgets)


PRESETS: dict[str, dict[str, Any]] = {
    "darts-cifar": {"stem": "cifar", "channels": 36, "layers": 20, "epochs": 600, "batch_size": 96, "lr": 0.025,
                    "lr_min": 0.0, "lr_schedule": "cosine", "momentum": 0.9, "nesterov": False,
                    "weight_decay": 3e-4, "grad_clip": 5.0, "auxiliary": True, "auxiliary_weight": 0.4,
                    "drop_path_prob": 0.2, "cutout": 16, "label_smoothing": 0.0},
    "darts-imagenet": {"stem": "imagenet", "channels": 48, "layers": 14, "epochs": 250, "batch_size": 128,
                       "lr": 0.1, "lr_schedule": "exponential", "lr_gamma": 0.97, "momentum": 0.9,
                       "nesterov": False, "weight_decay": 3e-5, "grad_clip": 5.0, "auxiliary": True,
                       "auxiliary_weight": 0.4, "drop_path_prob": 0.0, "cutout": 0, "label_smoothing": 0.1,
                       "resized_crop": True, "color_jitter": 0.4, "hue": 0.2, "image_size": 224, "test_crop": 0.875},
    "nb201": {"stem": "cifar", "channels": 16, "layers": 5, "epochs": 200, "batch_size": 256, "lr": 0.1,
              "lr_min": 0.0, "lr_schedule": "cosine-step", "momentum": 0.9, "nesterov": True,
              "weight_decay": 5e-4, "grad_clip": 0.0, "auxiliary": False, "drop_path_prob": 0.0, "cutout": 0,
              "crop_padding": 4, "label_smoothing": 0.0},
    "darts-ptb": {
        "hidden_size": 850,  # train.py --emsize/--nhid/--nhidlast 850
        "epochs": 8000,  # train.py --epochs 8000
        "batch_size": 64,  # train.py --batch_size 64
        "lr": 20.0,  # train.py --lr 20
        "momentum": 0.0,  # torch.optim.SGD(lr, weight_decay): no momentum
        "nesterov": False,
        "weight_decay": 8e-7,  # train.py --wdecay 8e-7
        "grad_clip": 0.25,  # train.py --clip 0.25
        "bptt": 35,  # train.py --bptt 35
        "max_seq_len_delta": 20,  # train.py --max_seq_len_delta 20
        "dropout": 0.75,  # --dropout 0.75
        "dropout_h": 0.25,  # --dropouth 0.25
        "dropout_x": 0.75,  # --dropoutx 0.75
        "dropout_i": 0.2,  # --dropouti 0.2
        "dropout_e": 0.1,  # --dropoute 0.1
        "tar": 1e-3,  # --beta 1e-3 (AR, --alpha, is 0)
        "nonmono": 5,  # --nonmono 5
        "eval_batch_size": 10,  # eval_batch_size = 10
        "test_batch_size": 1,  # test_batch_size = 1
        # the image keys, neutral: a language model has none of these
        "auxiliary": False,
        "drop_path_prob": 0.0,
        "cutout": 0,
    },
}
FAMILY_PRESETS = {"darts": ("darts-cifar", "darts-imagenet"), "nb201": ("nb201",), "rnn": ("darts-ptb",)}
#: training keys only the recurrent space reads, and keys only the image spaces read
RECURRENT_TRAIN_KEYS = ("hidden_size", "bptt", "max_seq_len_delta", "dropout", "dropout_h", "dropout_x", "dropout_i",
                        "dropout_e", "tar", "nonmono", "test_batch_size", "max_tokens")
IMAGE_TRAIN_KEYS = ("test_dataset", "image_size", "max_images", "max_test_images", "channels", "layers", "stem",
                    "auxiliary", "auxiliary_weight", "drop_path_prob", "lr_min", "lr_schedule", "lr_gamma",
                    "label_smoothing", "crop_padding", "flip", "cutout", "resized_crop", "color_jitter", "hue")


def resolve_train_config(genotype: str | None, flags: dict[str, Any] | None = None,
                         overrides: list[str] | None = None,
                         base: dict[str, Any] | None = None) -> tuple[TrainConfig, ResolvedGenotype]:
    """The training configuration: preset of the genotype's family < ``--config`` file (``base``)
    < flags < ``key=value`` overrides.

    ``preset`` (in the file, flags or overrides) picks ``darts-cifar``/``darts-imagenet`` (DARTS
    family), ``nb201`` or ``darts-ptb`` (recurrent space). ``genotype`` None: the file's. When no
    dataset is given and the genotype
    is the ``genotype.json`` of a search run, the search's dataset and data root are used.
    """
    base = dict(base or {})
    unknown = sorted(set(base) - set(TrainConfig.field_names()))
    if unknown:
        raise DnasError(f"unknown config key(s) {', '.join(shorten(k, 40) for k in unknown[:3])} in the config file"
                        f"{suggest(str(unknown[0]), TrainConfig.field_names())}")
    genotype = genotype if genotype is not None else base.get("genotype")
    if not genotype:
        raise DnasError("give the cell to train: a genotype.json, a published name or an NB201 arch string")
    load_plugins(_search_plugins(str(genotype)))
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
        search_cfg = read_yaml(resolved.search_dir / CONFIG, "the search's configuration") or {}
        if isinstance(search_cfg, dict) and search_cfg.get("dataset"):
            cfg.dataset = search_cfg["dataset"]
            if "data_root" not in given:
                cfg.data_root = search_cfg.get("data_root")
    for key, value in [*flags.items(), *items]:
        if key != "preset":
            cfg.set(key, value)
    validate(cfg, family)
    return cfg, resolved


def _search_plugins(genotype: str) -> list[str]:
    """The plugins a search run recorded, when ``genotype`` is its folder or its ``genotype.json`` (its cell
    may name the plugins' space and ops); else none."""
    path = Path(genotype).expanduser()
    folder = path if path.is_dir() else path.parent
    if not (folder / CONFIG).is_file() or not (path.is_dir() or path.name == GENOTYPE):
        return []
    search_cfg = read_yaml(folder / CONFIG, "the search's configuration")
    return plugin_names(search_cfg.get("plugins")) if isinstance(search_cfg, dict) else []


def _validate_family_keys(cfg: TrainConfig, family: str) -> None:
    """The keys of the other kind of model keep their neutral values (the preset's, else the default)."""
    defaults = TrainConfig()
    if family == "rnn":
        neutral = {k: PRESETS["darts-ptb"].get(k, getattr(defaults, k)) for k in IMAGE_TRAIN_KEYS}
        foreign = [k for k, v in neutral.items() if getattr(cfg, k) != v]
        what = "a language model (rnn genotype)"
    else:
        foreign = [k for k in RECURRENT_TRAIN_KEYS if getattr(cfg, k) != getattr(defaults, k)]
        what = f"a {family} network"
    if foreign:
        verb, pronoun = ("does", "it") if len(foreign) == 1 else ("do", "them")
        raise DnasError(f"{', '.join(foreign)} {verb} not apply to {what}; remove {pronoun}")
    if family == "rnn":
        dropouts = [cfg.dropout, cfg.dropout_h, cfg.dropout_x, cfg.dropout_i, cfg.dropout_e]
        checks = [
            (cfg.hidden_size is None or cfg.hidden_size >= 2, "hidden_size must be at least 2"),
            (cfg.bptt >= 2 and cfg.max_seq_len_delta >= 0, "bptt must be at least 2 and max_seq_len_delta >= 0"),
            (all(0 <= p < 1 for p in dropouts), "dropout rates must lie in [0, 1)"),
            (cfg.tar >= 0 and cfg.nonmono >= 0, "tar and nonmono must be >= 0"),
            (cfg.test_batch_size >= 1, "test_batch_size must be at least 1"),
            (cfg.max_tokens is None or cfg.max_tokens >= 3 * cfg.batch_size,
             f"max_tokens ({cfg.max_tokens}) must leave at least three rows of batch_size tokens"),
        ]
        for ok, message in checks:
            if not ok:
                raise DnasError(message)


def validate(cfg: TrainConfig, family: str) -> None:
    _validate_family_keys(cfg, family)
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
        (0 <= cfg.seed <= MAX_SEED, f"seed must lie in 0..2**32-1, got {cfg.seed}"),
        (cfg.log in SINKS, f"log must be one of {', '.join(SINKS)}, got {cfg.log!r}"),
        (cfg.data_mode in MODES, f"data_mode must be one of {', '.join(MODES)}, got {cfg.data_mode!r}"),
        (cfg.workers is None or cfg.workers >= 0, "workers must be >= 0 (0: decode in the main process)"),
        (0 < cfg.test_crop <= 1, f"test_crop must lie in (0, 1], got {cfg.test_crop}"),
    ]
    for ok, message in checks:
        if not ok:
            raise DnasError(message)
    if family == "darts" and cfg.channels is not None and cfg.channels % 2:
        raise DnasError(f"DARTS evaluation networks need an even number of channels, got {cfg.channels}")
    if family == "nb201" and (cfg.auxiliary or cfg.stem != "cifar"):
        raise DnasError("the NAS-Bench-201 network has no auxiliary head and a fixed stem; "
                        "set auxiliary=false stem=cifar")
