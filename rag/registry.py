"""Backends by name: a small dict registry with a dotted import path as the escape hatch.

A spec is `name` or `name:argument` (e.g. `sentence-transformers:/models/bge-small-zh`). A spec that
is not registered but looks like `package.module:attr` is imported and called with the same arguments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

from rag.errors import ConfigError

T = TypeVar("T")
Factory = Callable[..., T]


class Registry(Generic[T]):
    """Maps backend names to factories `factory(argument: str, **kwargs) -> T`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Factory[T]] = {}

    def register(self, name: str, factory: Factory[T] | None = None) -> Callable[[Factory[T]], Factory[T]] | Factory[T]:
        def add(f: Factory[T]) -> Factory[T]:
            self._factories[name] = f
            return f

        return add(factory) if factory is not None else add

    def unregister(self, name: str) -> None:
        self._factories.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def create(self, spec: str, **kwargs: object) -> T:
        name, _, argument = spec.partition(":")
        factory = self._factories.get(name)
        if factory is not None:
            return factory(argument, **kwargs)
        if "." in name and argument:  # dotted escape hatch: "mypkg.backends:MyEmbedder"
            try:
                obj = getattr(importlib.import_module(name), argument)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"{self.kind} {spec!r}: cannot import it ({exc})") from exc
            return obj("", **kwargs)
        raise ConfigError(f"unknown {self.kind} {spec!r}; known: {', '.join(self.names())}")
