"""Backends by name: a small dict registry with a dotted import path as the escape hatch.

A spec is `name` or `name:argument` (e.g. `sentence-transformers:/models/bge-small-zh`). A spec that
is not registered but looks like `package.module:attr[:argument]` (`mypkg.backends:MyEmbedder`) is
imported and `attr` is called like a registered factory: `attr(argument, **kwargs)`, argument "" when
the spec has none. Only identifiers make a dotted spec, so a file path (`./model.gguf`, `C:\\x`) never
looks like one.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

from rag.errors import ConfigError

T = TypeVar("T")
Factory = Callable[..., T]

_DOTTED = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+):(?P<attr>[A-Za-z_]\w*)(?::(?P<argument>.*))?", re.S)


def is_dotted(spec: str) -> bool:
    """Whether `spec` is a `package.module:attr[:argument]` import path (the escape hatch)."""
    return _DOTTED.fullmatch(spec) is not None


class Registry(Generic[T]):
    """Maps backend names to factories `factory(argument: str, **kwargs) -> T`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Factory[T]] = {}
        self._requires: dict[str, tuple[tuple[str, ...], str]] = {}

    def register(
        self, name: str, factory: Factory[T] | None = None, *, requires: Sequence[str] = (), hint: str = ""
    ) -> Callable[[Factory[T]], Factory[T]] | Factory[T]:
        """Add a backend. `requires` names the optional libraries it imports lazily (deep inside, at first
        use): `create` imports them first, so a missing one is a ConfigError carrying `hint`
        ("pip install faiss-cpu") when the backend is chosen, not a bare ImportError mid-operation."""

        def add(f: Factory[T]) -> Factory[T]:
            self._factories[name] = f
            if requires:
                self._requires[name] = (tuple(requires), hint)
            else:
                self._requires.pop(name, None)
            return f

        return add(factory) if factory is not None else add

    def unregister(self, name: str) -> None:
        self._factories.pop(name, None)
        self._requires.pop(name, None)

    def _check_requires(self, name: str) -> None:
        modules, hint = self._requires.get(name, ((), ""))
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(
                    f"{self.kind} {name!r} needs the {module!r} package, which is not installed ({exc}): {hint}"
                ) from exc

    @contextmanager
    def registered(self, name: str, factory: Factory[T]) -> Iterator[None]:
        """`name` maps to `factory` inside the block; afterwards whatever it was before (or nothing)."""
        previous, previous_requires = self._factories.get(name), self._requires.pop(name, None)
        self._factories[name] = factory
        try:
            yield
        finally:
            if previous is None:
                self._factories.pop(name, None)
            else:
                self._factories[name] = previous
            if previous_requires is not None:
                self._requires[name] = previous_requires

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def accepts(self, spec: str) -> bool:
        """Whether `create(spec)` would find a factory (registered name or dotted path; not imported here)."""
        return spec.partition(":")[0] in self._factories or is_dotted(spec)

    def create(self, spec: str, **kwargs: object) -> T:
        name, _, argument = spec.partition(":")
        factory = self._factories.get(name)
        if factory is not None:
            self._check_requires(name)
            return factory(argument, **kwargs)
        dotted = _DOTTED.fullmatch(spec)
        if dotted is not None:
            return self._import(spec, dotted["module"], dotted["attr"])(dotted["argument"] or "", **kwargs)
        raise ConfigError(
            f"unknown {self.kind} {spec!r}; known: {', '.join(self.names())} (or package.module:Factory for your own)"
        )

    def _import(self, spec: str, module: str, attr: str) -> Factory[T]:
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{self.kind} {spec!r}: cannot import it ({exc})") from exc
        if not callable(obj):
            raise ConfigError(f"{self.kind} {spec!r}: {module}.{attr} is not callable")
        return obj  # type: ignore[no-any-return]
