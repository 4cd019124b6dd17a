"""The configuration of a search: its keys, its component slots and ``key=value`` overrides.

Search resolution order (:func:`dnas.config.resolve.resolve_config`): dataclass defaults < method
preset < ``--config`` file < flags < overrides.

Override keys of a search:
    ``epochs=10``                      a top-level field
    ``plugins=my_module``              modules to import first (``dnas --plugin``; see :mod:`dnas.runtime.plugins`)
    ``estimator=amended``              choose a slot's implementation (its defaults apply)
    ``estimator.eta=0.2``              a hyper-parameter of the chosen implementation
    ``arch_regularizers=pr-darts,prox`` the list slots take comma-separated names (or ``none``)
    ``arch_regularizers.prox.rho=0.2`` a hyper-parameter of one member of a list slot
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dnas.components import SLOTS
from dnas.config.base import Config, coerce, split_override, suggest
from dnas.errors import DnasError
from dnas.registry import keyword_defaults
from dnas.runtime.plugins import plugin_names
from dnas.runtime.reading import shorten

LIST_SLOTS = ("weight_regularizers", "arch_regularizers")
#: keys only the recurrent space reads, and keys only the image spaces read (each must keep its default
#: on the other kind of space)
RECURRENT_KEYS = ("hidden_size", "bptt", "dropout", "dropout_h", "dropout_x", "dropout_i", "dropout_e", "tar",
                  "max_tokens", "eval_batch_size")
IMAGE_KEYS = ("image_size", "max_images", "train_portion", "channels", "partial_channels", "edge_normalization",
              "crop_padding", "flip", "cutout", "benchmark_table", "hessian_every", "data_mode", "workers",
              "nb201_splits", "train_fraction", "val_fraction")
SINGLE_SLOTS = ("activation", "schedule", "estimator", "discretizer", "perturbation", "auxiliary", "progression",
                "guard")


@dataclass
class ComponentConfig:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


def _component(slot: str, value: Any) -> ComponentConfig:
    """A slot value from a config file or the API: a name, or ``{name: ..., params: {...}}``."""
    if isinstance(value, ComponentConfig):
        return ComponentConfig(value.name, dict(value.params))
    if isinstance(value, str):
        return ComponentConfig(value)
    if isinstance(value, dict) and isinstance(value.get("name"), str) and set(value) <= {"name", "params"} \
            and isinstance(value.get("params", {}), dict):
        return ComponentConfig(value["name"], dict(value.get("params", {})))
    raise DnasError(f"{slot} takes a component name or {{name: NAME, params: {{...}}}}, got {value!r}")


@dataclass
class SearchConfig(Config):
    """Everything that defines a search (``config.yaml`` of a search run)."""

    kind: ClassVar[str] = "search"
    removed: ClassVar[dict[str, tuple[Any, str]]] = {}

    # what to search
    plugins: list[str] = field(default_factory=list)  # modules imported first (they register spaces, ops, components)
    space: str = "nb201"
    method: str = "darts"
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None  # resize every image to this side once at load time
    max_images: int | None = None  # class-balanced subset of the training images (CPU budgets)
    train_portion: float = 0.5  # share of the training images used for w; the rest drives alpha
    data_mode: str = "auto"  # where the images live: memory, stream (decoded in workers), auto (memory if they fit)
    workers: int | None = None  # processes decoding streamed images (None: one fewer than the cores, at most 4)
    nb201_splits: str | None = None  # NAS-Bench-201's split file (or AutoDL-Projects' folder): its search split
    train_fraction: float | None = None  # PC-DARTS: the share of every class the weights train on (ImageNet: 0.1)
    val_fraction: float | None = None  # ... and the disjoint share the architecture trains on (ImageNet: 0.025)
    # budget
    epochs: int = 50
    batch_size: int = 64
    seed: int = 0
    channels: int | None = None  # supernet width C (None: the space's default, 16)
    layers: int | None = None  # DARTS family: cells; NB201: cells per stage; rnn: stacked cells (None: 8 / 5 / 1)
    partial_channels: int = 1  # PC-DARTS: the ops of an edge see 1/K of its input channels (K=1: all)
    edge_normalization: bool = False  # PC-DARTS: a learned weight per edge, softmax over each node's edges
    warmup_epochs: int = 0  # epochs that train the weights alone before the first architecture step
    # the recurrent space (language modelling: quark0/darts rnn/train_search.py; rnn only)
    hidden_size: int | None = None  # embedding and hidden size (None: the space's, 300)
    bptt: int = 35  # BPTT length (each step draws it, or half of it with probability 0.05)
    dropout: float = 0.75  # locked dropout on the cell output
    dropout_h: float = 0.25  # variational dropout on the states entering the cell's products
    dropout_x: float = 0.75  # variational dropout on the cell input
    dropout_i: float = 0.2  # locked dropout on the embedded input
    dropout_e: float = 0.0  # embedding dropout (whole word types)
    tar: float = 1e-3  # temporal activation regularization (slowness) of the weight step
    max_tokens: int | None = None  # the first N tokens of the training split (CPU budgets)
    eval_batch_size: int = 10  # batch of the validation perplexity at every epoch end
    # weight optimizer (SGD, cosine-annealed per epoch)
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_nesterov: bool = False
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    # architecture optimizer (Adam)
    a_lr: float = 3e-4
    a_beta1: float = 0.5
    a_beta2: float = 0.999
    a_weight_decay: float = 1e-3
    # augmentation (None: automatic for the dataset)
    crop_padding: int | None = None
    flip: bool | None = None
    cutout: int = 0
    # slots
    activation: ComponentConfig = field(default_factory=lambda: ComponentConfig("softmax"))
    schedule: ComponentConfig = field(default_factory=lambda: ComponentConfig("alternate"))
    estimator: ComponentConfig = field(default_factory=lambda: ComponentConfig("first-order"))
    discretizer: ComponentConfig | None = None  # None: the space's rule
    weight_regularizers: list[ComponentConfig] = field(default_factory=list)
    arch_regularizers: list[ComponentConfig] = field(default_factory=list)
    perturbation: ComponentConfig = field(default_factory=lambda: ComponentConfig("none"))  # of the weight step's A
    auxiliary: ComponentConfig = field(default_factory=lambda: ComponentConfig("none"))  # an op outside the mixing
    progression: ComponentConfig = field(default_factory=lambda: ComponentConfig("none"))  # stages: prune, widen
    guard: ComponentConfig = field(default_factory=lambda: ComponentConfig("off"))  # label-free early stopping
    # diagnostics and bookkeeping
    alignment_every: int = 50  # steps between logs of the per-cell gradient alignment (0: off)
    hessian_every: int = 0  # epochs between logs of the dominant eigenvalue of grad^2_alpha L_val (0: off)
    benchmark_table: str | None = None  # nb201: a table keyed by arch string; each epoch's cell is looked up
    log_every: int = 10
    log: str = "jsonl"  # metric sinks: jsonl, or tensorboard (JSON lines and TensorBoard events)
    checkpoint_every: int = 100  # steps between mid-epoch checkpoints (0: end of epoch only)
    device: str = "cpu"
    precision: str = "fp32"  # bf16 or fp16: mixed-precision forward passes (dnas.bilevel.precision)

    @classmethod
    def comparable(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """``saved`` with the parameters its components lack at their defaults: a parameter a component
        gained after the run was written has a default that does what the component did before."""
        out = dict(saved)
        for slot in SLOTS.keys() & saved.keys():
            value, registry = saved[slot], SLOTS[slot]
            out[slot] = [_with_defaults(registry, v) for v in value] if isinstance(value, list) \
                else _with_defaults(registry, value)
        return out

    def set(self, key: str, value: Any) -> None:
        """A top-level field (component slots take a name, a list of names, or a component mapping)."""
        if key in SINGLE_SLOTS or key in LIST_SLOTS:
            _set_slot(self, key, value)
        elif key == "plugins":
            self.plugins = plugin_names(value)
        else:
            super().set(key, value)




def _set_slot(cfg: SearchConfig, head: str, value: Any) -> None:
    if head in SINGLE_SLOTS:
        auto = head == "discretizer" and value in (None, "auto")
        setattr(cfg, head, None if auto else _component(head, value))
        return
    if value in (None, "", "none"):
        members: list[Any] = []
    elif isinstance(value, str):
        members = [n.strip() for n in value.split(",") if n.strip()]
    elif isinstance(value, list):
        members = value
    else:
        raise DnasError(f"{head} takes comma-separated component names, got {value!r}")
    setattr(cfg, head, [_component(head, m) for m in members])


def apply_override(cfg: SearchConfig, key: str, value: Any) -> None:
    """Apply one ``key=value`` override (see the module docstring for the key forms)."""
    head, _, rest = key.partition(".")
    if head not in cfg.field_names() and not (head in cfg.removed and not rest):
        raise DnasError(f"unknown override key {shorten(key, 40)}{suggest(head, cfg.field_names())}")
    if not rest:
        cfg.set(head, value)
        return
    if head in SINGLE_SLOTS:
        comp = getattr(cfg, head)
        if comp is None:
            raise DnasError(f"set {head}=NAME before {key}")
        comp.params[rest] = value
        return
    if head in LIST_SLOTS:
        name, _, param = rest.partition(".")
        members = [c for c in getattr(cfg, head) if c.name == name]
        if not members or not param:
            raise DnasError(f"{key!r}: {head} has no member {name!r}; add it with {head}=...,{name} first")
        members[0].params[param] = value
        return
    raise DnasError(f"{head!r} is not a component, so {key!r} is not a valid key")


def apply_overrides(cfg: SearchConfig, overrides: list[str] | dict[str, Any]) -> None:
    items = overrides.items() if isinstance(overrides, dict) else [split_override(o) for o in overrides]
    for key, value in items:
        apply_override(cfg, key, value)


def _with_defaults(registry: Any, value: Any) -> Any:
    """A saved component ``{name, params}`` with the parameters it lacks at their defaults (anything
    else, or a component no longer registered, as it is)."""
    if not (isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"] in registry
            and isinstance(value.get("params", {}), dict)):
        return value
    return {**value, "params": {**keyword_defaults(registry.get(value["name"])), **value.get("params", {})}}


def _parameter_types(factory: Any) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - annotations that cannot be evaluated: no type checks
        return {}


def resolve_component(registry, comp: ComponentConfig) -> ComponentConfig:
    """Fill the defaults of ``comp`` and check that every given parameter exists and has its type."""
    factory = registry.get(comp.name)
    defaults = keyword_defaults(factory)
    unknown = sorted(set(comp.params) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "none"
        raise DnasError(f"{registry.kind} {comp.name!r} has no parameter {', '.join(unknown)}; it takes: {allowed}")
    types_ = _parameter_types(factory)
    params = {k: coerce(f"{registry.kind} {comp.name!r} parameter {k}", v, types_.get(k, Any))
              for k, v in comp.params.items()}
    return ComponentConfig(comp.name, {**defaults, **params})


def build_component(registry, comp: ComponentConfig):
    try:
        return registry.get(comp.name)(**comp.params)
    except (TypeError, ValueError) as err:
        raise DnasError(f"bad parameters for {registry.kind} {comp.name!r}: {err}") from None
