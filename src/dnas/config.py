"""Typed run configurations, ``key=value`` overrides and config files.

One mechanism for every kind of run: a configuration is a dataclass deriving from :class:`Config`,
and every value that reaches it (a command-line flag, a ``key=value`` override, a key of a
``--config`` file, a keyword of the Python API) goes through :meth:`Config.set`, which checks it
against the field's type annotation before anything is written:

- numbers parse as users write them (``3e-4``, ``1E-3``, ``.5``, ``1_000``; :func:`parse_value`);
- integers must be whole (``epochs=1.5`` is refused), floats finite, booleans ``true``/``false``;
- ``None`` only where the field is optional (``null``, ``~`` or ``auto``).

Ranges are checked by each configuration's ``validate`` (e.g. :func:`dnas.resolve.validate`).

Search resolution order: dataclass defaults < method preset < ``--config`` file < flags < overrides.
The resolved configuration (every component with all its hyper-parameters) is written to
``config.yaml`` in the run directory, and a run resumes only with the same configuration; that
file given back as ``--config`` replays the run.

Override keys of a search:
    ``epochs=10``                      a top-level field
    ``estimator=amended``              choose a slot's implementation (its defaults apply)
    ``estimator.eta=0.2``              a hyper-parameter of the chosen implementation
    ``arch_regularizers=pr-darts,prox`` the list slots take comma-separated names (or ``none``)
    ``arch_regularizers.prox.rho=0.2`` a hyper-parameter of one member of a list slot
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from dnas.errors import DnasError
from dnas.registry import keyword_defaults

LIST_SLOTS = ("weight_regularizers", "arch_regularizers")
SINGLE_SLOTS = ("activation", "schedule", "estimator", "discretizer")

_INT = re.compile(r"[+-]?\d(?:_?\d)*")
_FLOAT = re.compile(r"[+-]?(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d+)?")


def parse_value(text: str) -> Any:
    """A command-line value: a number in any usual spelling, else YAML (``true``, ``null``, lists),
    else the text itself."""
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text.replace("_", ""))
    if _FLOAT.fullmatch(text):
        return float(text.replace("_", ""))
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``(inner type, optional)`` of an annotation such as ``int | None``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return annotation, False


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """``value`` as the type ``annotation`` asks for, or a one-sentence :class:`DnasError`."""
    kind, optional = _optional(annotation)
    if isinstance(value, str) and kind in (int, float, bool):
        parsed = parse_value(value)
        value = parsed if not isinstance(parsed, str) else value
    if value is None or (optional and value == "auto"):
        if optional:
            return None
        raise DnasError(f"{name} needs a value, got nothing")
    if kind is bool:
        if not isinstance(value, bool):
            raise DnasError(f"{name} takes true or false, got {value!r}")
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DnasError(f"{name} takes a number, got {value!r}")
        if not math.isfinite(value):
            raise DnasError(f"{name} takes a finite number, got {value!r}")
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise DnasError(f"{name} takes a whole number, got {value!r}")
            return int(value)
        return float(value)
    if kind is str:
        if isinstance(value, (dict, list, bool)):
            raise DnasError(f"{name} takes a name or a path, got {value!r}")
        return str(value)
    return value


@dataclass
class Config:
    """Base of the run configurations: typed setting, dict/YAML round trip, config files."""

    #: what the configuration configures, for messages ("search", "training")
    kind: ClassVar[str] = "run"
    #: keys an older dnas wrote and this one no longer has: key -> (the value under which the saved
    #: configuration means what this dnas does without the key, why the key went); see :meth:`set`
    removed: ClassVar[dict[str, tuple[Any, str]]] = {}

    @classmethod
    def comparison_defaults(cls) -> dict[str, Any]:
        """The value of every key a saved configuration may lack or hold in excess, for
        :func:`dnas.runs.config_differences`: today's defaults and the removed keys' neutral values."""
        return {**{k: value for k, (value, _) in cls.removed.items()}, **cls().to_dict()}

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def set(self, key: str, value: Any) -> None:
        """Set the top-level field ``key`` to ``value``, checked against its type. A removed key is
        accepted at its neutral value (configurations saved before it went) and refused otherwise."""
        if key in self.removed:
            neutral, why = self.removed[key]
            if value != neutral:
                raise DnasError(f"{key}={value} is no longer available ({why}); remove the key")
            return
        if key not in self.field_names():
            raise DnasError(f"unknown {self.kind} key {key!r}; keys are: {', '.join(sorted(self.field_names()))}")
        setattr(self, key, coerce(key, value, self.field_types()[key]))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise DnasError(f"unknown config key(s) {', '.join(map(str, unknown))}; keys are: "
                            f"{', '.join(sorted(cls.field_names()))}")
        cfg = cls()
        for key, value in data.items():
            cfg.set(key, value)
        return cfg


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (a run's own ``config.yaml``, or a hand-written subset)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.yaml"  # a run directory
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise DnasError(f"cannot read the config file {path} ({err.strerror})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise DnasError(f"the config file {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DnasError(f"the config file {path} must hold a mapping of keys to values, not a {type(data).__name__}")
    return data


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
    removed: ClassVar[dict[str, tuple[Any, str]]] = {
        # bfloat16 autocast of the forward passes (issue 14): faster on CPUs with bf16 units, but its searches
        # end on other cells than float32's, far more often than a float32 change of rounding does (README, speed)
        "precision": ("fp32", "bf16 searches do not decide like float32 ones, README: speed"),
    }

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
    log: str = "jsonl"  # metric sinks: jsonl, or tensorboard (JSON lines and TensorBoard events)
    checkpoint_every: int = 100  # steps between mid-epoch checkpoints (0: end of epoch only)
    device: str = "cpu"

    def set(self, key: str, value: Any) -> None:
        """A top-level field (component slots take a name, a list of names, or a component mapping)."""
        if key in SINGLE_SLOTS or key in LIST_SLOTS:
            _set_slot(self, key, value)
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
        raise DnasError(f"unknown override key {key!r}; top-level keys are: {', '.join(sorted(cfg.field_names()))}")
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


def split_override(text: str) -> tuple[str, Any]:
    """``key=value`` as ``(key, parsed value)``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise DnasError(f"override {text!r} is not of the form key=value")
    return key.strip(), parse_value(value)


def apply_overrides(cfg: SearchConfig, overrides: list[str] | dict[str, Any]) -> None:
    items = overrides.items() if isinstance(overrides, dict) else [split_override(o) for o in overrides]
    for key, value in items:
        apply_override(cfg, key, value)


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
