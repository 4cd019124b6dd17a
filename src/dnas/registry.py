"""Name registries, in the spirit of timm's ``register_model`` / ``list_models``.

Spaces, methods, datasets and every slot of the search loop are looked up by name, so that the
CLI, configs and presets all speak the same vocabulary and unknown names fail with the list of
known ones.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from dnas.errors import DnasError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories (classes or functions) of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Register ``obj`` as ``name``; a class also gets ``name`` as its ``name`` attribute."""

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
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
