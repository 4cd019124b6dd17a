"""Typed search configuration, presets and ``key=value`` overrides.

Resolution order: dataclass defaults < method preset < command-line flags and overrides. The
resolved configuration (every component with all its hyper-parameters) is written to
``config.yaml`` in the run directory, and a run resumes only with the same configuration.

Override keys:
    ``epochs=10``                      a top-level field
    ``estimator=amended``              choose a slot's implementation (its defaults apply)
    ``estimator.eta=0.2``              a hyper-parameter of the chosen implementation
    ``arch_regularizers=pr-darts,prox`` the list slots take comma-separated names (or ``none``)
    ``arch_regularizers.prox.rho=0.2`` a hyper-parameter of one member of a list slot
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from dnas.errors import DnasError
from dnas.registry import keyword_defaults

LIST_SLOTS = ("weight_regularizers", "arch_regularizers")
SINGLE_SLOTS = ("activation", "schedule", "estimator", "discretizer")


@dataclass
class ComponentConfig:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchConfig:
    # what to search
    space: str = "nb201"
    method: str = "darts"
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None  # resize every image to this side once at load time
    max_images: int | None = None  # class-balanced subset of the training images (CPU budgets)
    train_portion: float = 0.5  # share of the training images used for w; the rest drives alpha
    # budget
    epochs: int = 50
    batch_size: int = 64
    seed: int = 0
    channels: int | None = None  # supernet width C (None: the space's default, 16)
    layers: int | None = None  # DARTS family: cells; NB201: cells per stage (None: 8 / 5)
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
    # diagnostics and bookkeeping
    alignment_every: int = 50  # steps between logs of the per-cell gradient alignment (0: off)
    hessian_every: int = 0  # epochs between logs of the dominant eigenvalue of grad^2_alpha L_val (0: off)
    benchmark_table: str | None = None  # nb201: a table keyed by arch string; each epoch's cell is looked up
    log_every: int = 10
    checkpoint_every: int = 100  # steps between mid-epoch checkpoints (0: end of epoch only)
    device: str = "cpu"

    # ----- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DnasError(f"unknown config key(s) {', '.join(unknown)}; see `dnas search --help` for the keys")
        for slot in SINGLE_SLOTS:
            if isinstance(data.get(slot), dict):
                data[slot] = ComponentConfig(**data[slot])
        for slot in LIST_SLOTS:
            if slot in data:
                data[slot] = [ComponentConfig(**c) for c in data[slot]]
        return cls(**data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_value(text: str) -> Any:
    """A YAML scalar; ``3e-4`` is a number (YAML 1.1 would read it as a string: no dot)."""
    if _EXPONENT_FLOAT.fullmatch(text.strip()):
        return float(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(SearchConfig)}


def apply_override(cfg: SearchConfig, key: str, value: Any) -> None:
    """Apply one ``key=value`` override (see the module docstring for the key forms)."""
    head, _, rest = key.partition(".")
    if head not in _field_names():
        raise DnasError(
            f"unknown override key {key!r}; top-level keys are: {', '.join(sorted(_field_names()))}"
        )
    if head in SINGLE_SLOTS:
        if not rest:
            auto = head == "discretizer" and value in (None, "auto")
            setattr(cfg, head, None if auto else ComponentConfig(str(value)))
            return
        comp = getattr(cfg, head)
        if comp is None:
            raise DnasError(f"set {head}=NAME before {key}")
        comp.params[rest] = value
        return
    if head in LIST_SLOTS:
        if not rest:
            names = [] if value in (None, "", "none") else [n.strip() for n in str(value).split(",") if n.strip()]
            setattr(cfg, head, [ComponentConfig(n) for n in names])
            return
        name, _, param = rest.partition(".")
        members = [c for c in getattr(cfg, head) if c.name == name]
        if not members or not param:
            raise DnasError(f"{key!r}: {head} has no member {name!r}; add it with {head}=...,{name} first")
        members[0].params[param] = value
        return
    if rest:
        raise DnasError(f"{head!r} is not a component, so {key!r} is not a valid key")
    current = getattr(cfg, head)
    if isinstance(current, bool) and not isinstance(value, bool):
        raise DnasError(f"{head} takes true or false, got {value!r}")
    if isinstance(current, (int, float)) and not isinstance(current, bool) and not isinstance(value, (int, float)):
        raise DnasError(f"{head} takes a number, got {value!r}")
    if isinstance(current, float) and isinstance(value, int):
        value = float(value)
    setattr(cfg, head, value)


def apply_overrides(cfg: SearchConfig, overrides: list[str] | dict[str, Any]) -> None:
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    for key, value in items:
        apply_override(cfg, key, value if not isinstance(overrides, list) else parse_value(value))


def _split(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise DnasError(f"override {text!r} is not of the form key=value")
    return key.strip(), value.strip()


def resolve_component(registry, comp: ComponentConfig) -> ComponentConfig:
    """Fill the defaults of ``comp`` and check that every given parameter exists."""
    factory = registry.get(comp.name)
    defaults = keyword_defaults(factory)
    unknown = sorted(set(comp.params) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "none"
        raise DnasError(f"{registry.kind} {comp.name!r} has no parameter {', '.join(unknown)}; it takes: {allowed}")
    return ComponentConfig(comp.name, {**defaults, **comp.params})


def build_component(registry, comp: ComponentConfig):
    try:
        return registry.get(comp.name)(**comp.params)
    except TypeError as err:
        raise DnasError(f"bad parameters for {registry.kind} {comp.name!r}: {err}") from None
