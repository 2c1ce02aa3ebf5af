"""The simulator's modes: which policy the operator evaluates, and whether producers obey it.

Apart from the loop so that the result types and the CLI can name a mode without importing the loop.
"""

from __future__ import annotations

from typing import Literal

from sluice_operator.api.control import Control
from sluice_operator.api.policy import BackpressurePolicySpec, Fallback, Hysteresis, Smoothing

__all__ = ["MODES", "MODE_ALIASES", "Mode", "canonical_mode", "spec_for_mode"]

#: Accepted mode names; ``sluice`` is the old name of ``zones``.
Mode = Literal["none", "origin", "zones", "drain", "sluice"]
MODES: tuple[Mode, ...] = ("none", "origin", "zones", "drain")
MODE_ALIASES: dict[str, Mode] = {"sluice": "zones"}

def canonical_mode(mode: str) -> Mode:
    """`mode` with its alias resolved (``sluice`` -> ``zones``); ValueError for an unknown one."""
    resolved = MODE_ALIASES.get(mode, mode)
    for m in MODES:
        if m == resolved:
            return m
    raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")


def spec_for_mode(spec: BackpressurePolicySpec, mode: Mode) -> BackpressurePolicySpec:
    """The spec the operator evaluates in `mode` (`none` observes with the origin formulas).

    ``zones`` and ``drain`` keep every field of the policy and set only ``control.mode``.
    """
    mode = canonical_mode(mode)
    control = spec.control
    if mode in ("zones", "drain"):
        wanted = "DrainTime" if mode == "drain" else "Zones"
        if control.mode == wanted:
            return spec
        return spec.model_copy(update={"control": control.model_copy(update={"mode": wanted})})
    return spec.model_copy(
        update={
            "hysteresis": Hysteresis(margin=0.0, min_dwell_seconds=0.0),
            "smoothing": Smoothing(alpha=1.0, max_relax_ratio_per_interval=1.0),
            "fallback": Fallback(mode="Conservative", conservative=spec.fallback.conservative),
            "control": Control() if control.mode != "Zones" else control,
        }
    )
