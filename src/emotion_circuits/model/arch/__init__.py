"""Architecture adapters, one module per model family; every module in this package is imported, so a new
family is one new file that calls `register` (see base.py)."""

from __future__ import annotations

import importlib
import pkgutil

from emotion_circuits.model.arch.base import REGISTRY, Adapter, Grouping, adapter_for, register

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["REGISTRY", "Adapter", "Grouping", "adapter_for", "register"]
