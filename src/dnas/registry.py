"""Name registries, in the spirit of timm's ``register_model`` / ``list_models``.

Spaces, methods, datasets and every slot of the search loop are looked up by name, so that the
CLI, configs and presets all speak the same vocabulary and unknown names fail with the list of
known ones.

The registries are public: a module of your own adds a component to a slot with the slot's
registry as a decorator (``@dnas.components.ARCH_REGULARIZERS.register("l2")``), a search space with
:func:`dnas.register_space` and an op with :func:`dnas.register_op` (see ``docs/extending.md``). A
name is registered once; registering it again is a :class:`~dnas.errors.DnasError`.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from dnas.errors import DnasError

T = TypeVar("T")

#: what a registered name may look like: it appears in ``key=value`` overrides, comma-separated lists,
#: dotted parameter keys and NAS-Bench-201 arch strings, so it holds letters, digits, ``_`` and ``-`` only
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def check_name(name: object, kind: str) -> None:
    """One sentence unless ``name`` is a usable name of a ``kind`` (see :data:`NAME`)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise DnasError(f"a {kind} name takes letters, digits, '_' and '-' only, got {name!r}")


class Registry(Generic[T]):
    """A mapping from names to factories (classes or functions) of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Register ``obj`` as ``name``; a class also gets ``name`` as its ``name`` attribute.

        Used as a decorator (``@REGISTRY.register("name")``) or called (``REGISTRY.register("name")(obj)``).
        A name already taken is refused with one sentence (nothing is replaced).
        """
        check_name(name, self.kind)

        def decorator(obj: T) -> T:
            if name in self._items:
                raise DnasError(f"{self.kind} {name!r} is already registered; choose another name")
            self._items[name] = obj
            if inspect.isclass(obj):
                obj.name = name  # type: ignore[attr-defined]
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise DnasError(f"unknown {self.kind} {name!r}; choose one of: {known}") from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def keyword_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """The keyword-only parameters of ``factory`` with their defaults (its hyper-parameters)."""
    params = inspect.signature(factory).parameters
    return {
        name: p.default
        for name, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    }
