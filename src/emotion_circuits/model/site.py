"""`Site`: where in a model a tensor lives. The one grammar for TransformerLens hook names
(`blocks.{L}.hook_resid_pre`) in tensor keys, parquet columns and metrics: built and parsed here, nowhere else."""

from __future__ import annotations

import re
from dataclasses import dataclass

from emotion_circuits.errors import ParamsError

HOOKS = ("resid_pre", "resid_post")
_NAME = re.compile(r"^blocks\.(\d+)\.hook_([a-z_]+)(?:\.(.+))?$")


@dataclass(frozen=True, order=True)
class Site:
    """A residual-stream hook point: layer + hook (`resid_pre` reads block L's input, `resid_post` its output)."""

    layer: int
    hook: str = "resid_pre"

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise ParamsError(f"a layer must be a non-negative integer, got {self.layer!r}")
        if self.hook not in HOOKS:
            raise ParamsError(f"unknown hook point {self.hook!r} (allowed: {', '.join(HOOKS)})")

    @property
    def name(self) -> str:
        """The TransformerLens hook name, `blocks.{L}.hook_{hook}`."""
        return f"blocks.{self.layer}.hook_{self.hook}"

    def __str__(self) -> str:
        return self.name

    def key(self, *parts: str) -> str:
        """A tensor key under this site: `blocks.7.hook_resid_pre.emotion_vectors`."""
        return ".".join((self.name, *parts))

    @classmethod
    def parse(cls, name: str) -> Site:
        """`blocks.7.hook_resid_pre` -> Site(7, "resid_pre"); a key with a suffix is an error (see `split_key`)."""
        site, rest = cls.split_key(name)
        if rest:
            raise ValueError(f"not a hook name: {name!r} (has a suffix {rest!r})")
        return site

    @classmethod
    def split_key(cls, key: str) -> tuple[Site, str]:
        """`blocks.7.hook_resid_pre.pca.anger.components` -> (Site(7, "resid_pre"), "pca.anger.components")."""
        m = _NAME.match(key)
        if m is None:
            raise ValueError(f"not a hook name or key: {key!r} (expected blocks.{{L}}.hook_<hook>[.<suffix>])")
        return cls(int(m.group(1)), m.group(2)), m.group(3) or ""

    @staticmethod
    def is_key(key: str) -> bool:
        return _NAME.match(key) is not None

    def within(self, n_layers: int, what: str) -> Site:
        """This site, checked against a model's depth; the error says which knob and what the range is."""
        if self.layer >= n_layers:
            raise ParamsError(f"{what}: layer {self.layer} is beyond the model's {n_layers} layers "
                              f"(valid: 0..{n_layers - 1})")
        return self
