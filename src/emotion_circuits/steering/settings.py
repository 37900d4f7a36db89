"""Steering settings: named ways of steering that the sweep runs side by side on one grid of layers x alphas.

A setting is `steering_common`'s knobs with a few overridden (which vectors: position, direction method, unit;
how they are added: window, schedule, iterative) plus what only a sweep varies: a multi-layer `band` and the
norm-preserving `mode`s of the engine. `steering_sweep.settings` in params.yaml names them, e.g. the seeds'
semantics (token-based vectors added at every step) beside today's default (sentence-end vectors over the last
3 prompt tokens), so the report can say per emotion and layer which setting steers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emotion_circuits.errors import ParamsError
from emotion_circuits.params import SteeringCommonParams

COMMON_KEYS = ("vector_position", "direction", "unit", "window", "window_n", "positions", "schedule", "decay",
               "iterative")
OWN_KEYS = ("band", "mode", "layers", "alphas")
SEEDS = "seeds"  # the setting whose name marks the seeds' semantics (its verdict is reported beside the best)


@dataclass(frozen=True)
class Setting:
    """One named way of steering and the layers x alphas it runs at."""

    name: str
    common: SteeringCommonParams
    layers: tuple[int, ...]
    alphas: tuple[float, ...]
    band: int = 1
    mode: str = "add"

    @property
    def vectors(self) -> tuple[str, str, str]:
        """(position, direction method, unit): which stored directions this setting steers with."""
        c = self.common
        return c.vector_position, c.direction, c.unit

    def condition(self, prompt: str, layer: int, alpha: float, direction, alpha_scale: float = 1.0):
        """The engine condition of this setting at one grid point."""
        from emotion_circuits.steering.engine import Condition, Window

        c = self.common
        return Condition(prompt, layer, float(alpha) * alpha_scale, direction,
                         Window(c.window, c.window_n, tuple(c.positions)), c.schedule, c.decay, c.iterative,
                         band=self.band, mode=self.mode)

    def describe(self) -> str:
        """One line for tables and the report: vectors, window, band, mode."""
        c = self.common
        window = f"last {c.window_n} prompt tokens" if c.window == "last" else {
            "all": "every position (prompt and each generated step)", "generated": "each generated step",
            "positions": f"prompt positions {list(c.positions)}"}[c.window]
        parts = [f"{c.vector_position} {c.direction} ({c.unit})", window]
        if c.iterative and c.window not in ("all", "generated"):
            parts.append("re-applied at each generated step")
        if self.band > 1:
            parts.append(f"spread over {self.band} layers")
        if self.mode != "add":
            parts.append({"norm": "residual norm kept", "project": "emotion component replaced"}[self.mode])
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        c = self.common
        return {"name": self.name, "description": self.describe(), "layers": list(self.layers),
                "alphas": list(self.alphas), "band": self.band, "mode": self.mode,
                **{k: (list(getattr(c, k)) if k == "positions" else getattr(c, k)) for k in COMMON_KEYS}}


def build_setting(name: str, overrides: Mapping[str, Any], common: SteeringCommonParams,
                  layers: Sequence[int], alphas: Sequence[float], n_layers: int | None = None) -> Setting:
    """A `Setting` from one params entry; unknown keys, bad values and (with `n_layers`) a band past the last
    layer are one ParamsError naming `steering_sweep.settings.<name>`."""
    where = f"steering_sweep.settings.{name}"
    if not isinstance(overrides, Mapping):
        raise ParamsError(f"{where} must be a mapping of overrides (e.g. {{window: all}}), got {overrides!r}")
    unknown = sorted(set(overrides) - set(COMMON_KEYS) - set(OWN_KEYS))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: "
                          f"{', '.join(COMMON_KEYS + OWN_KEYS)})")
    try:
        c = dataclasses.replace(common, **{k: v for k, v in overrides.items() if k in COMMON_KEYS})
    except ParamsError as err:
        raise ParamsError(f"{where}: {err}") from None
    from emotion_circuits.steering.engine import MODES  # the engine's ways of adding a delta (torch: imported late)

    band, mode = overrides.get("band", 1), overrides.get("mode", "add")
    if isinstance(band, bool) or not isinstance(band, int) or band < 1:
        raise ParamsError(f"{where}.band must be a positive integer, got {band!r}")
    if mode not in MODES:
        raise ParamsError(f"{where}.mode must be one of {', '.join(MODES)}, got {mode!r}")
    layers = tuple(overrides.get("layers", layers))
    alphas = tuple(float(a) for a in overrides.get("alphas", alphas))
    if not layers or any(isinstance(L, bool) or not isinstance(L, int) or L < 0 for L in layers):
        raise ParamsError(f"{where}.layers must be a non-empty list of non-negative integers, got {list(layers)}")
    if not alphas or 0.0 in alphas:
        raise ParamsError(f"{where}.alphas must be a non-empty list of non-zero numbers (alpha 0 is the unsteered "
                          f"baseline every prompt has), got {list(alphas)}")
    if n_layers is not None:
        for L in layers:
            if L + band - 1 >= n_layers:
                raise ParamsError(f"{where}: layer {L} with band {band} reaches layer {L + band - 1}, past the "
                                  f"model's last layer {n_layers - 1}")
    return Setting(name, c, layers, alphas, band, mode)


def settings_from(common: SteeringCommonParams, settings: Mapping[str, Mapping], layers: Sequence[int],
                  alphas: Sequence[float], n_layers: int | None = None) -> list[Setting]:
    """Every named setting of `steering_sweep.settings`, in params order."""
    if not settings:
        raise ParamsError("steering_sweep.settings must name at least one setting")
    return [build_setting(name, o or {}, common, layers, alphas, n_layers) for name, o in settings.items()]
