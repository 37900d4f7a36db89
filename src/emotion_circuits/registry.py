"""Named extension points (direction methods, alignment nulls, evaluators): a registry per kind, filled by the
modules of one package, so adding a method is one new file and every table, verdict and statistics family that
loops over the registry picks it up (nothing registered can be silently dropped)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from emotion_circuits.errors import ParamsError

T = TypeVar("T")


class Registry(Generic[T]):
    """name -> object. `kind` names the extension point in errors (`unknown direction method 'x'`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@METHODS.register("mean_diff")`. A name registered twice is a programming error."""
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj
        return add

    def __getitem__(self, name: str) -> T:
        if name not in self._items:
            raise ParamsError(f"unknown {self.kind} {name!r} (registered: {', '.join(self.names()) or 'none'})")
        return self._items[name]

    def check(self, knob: str, names) -> None:
        """Each of `names` (one name or a list) is registered; else one ParamsError naming the params key."""
        for name in [names] if isinstance(names, str) else names:
            if name not in self._items:
                raise ParamsError(f"{knob}: unknown {self.kind} {name!r} (registered: {', '.join(self.names())})")

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """Registered names in registration order (which follows module order: deterministic)."""
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())


def autoload(package: str, path) -> None:
    """Import every module of `package` (its `__init__` passes `__name__, __path__`), in sorted order, so each
    module's `register` calls run. dvc.yaml lists such a package as a folder: any file added there is a dep."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
