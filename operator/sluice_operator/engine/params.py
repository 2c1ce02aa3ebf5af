"""A policy spec compiled once into the plain numbers `evaluate` needs.

Reading a pydantic model on every evaluation would cost more than the whole evaluation, so the
spec is flattened into slotted objects. `compile_policy` caches the result per spec *object*
(keyed by identity, held through a weak reference, so a replaced spec frees its entry).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Literal

from sluice.decision import PRIORITIES, Enforcement
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine.clock import timestamp, to_rfc3339
from sluice_operator.engine.drain import DrainParams
from sluice_operator.engine.zones import PriorityParams

__all__ = ["FallbackMode", "OverrideMode", "PolicyParams", "compile_policy"]

FallbackMode = Literal["LastKnown", "Conservative", "Permissive"]
OverrideMode = Literal["None", "Disable", "ForceRed"]


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """The compiled policy: per-priority formula parameters plus the loop settings."""

    priorities: tuple[PriorityParams, PriorityParams, PriorityParams]  # high, medium, low
    min_dwell_seconds: float
    alpha: float
    max_relax_ratio: float
    enforcement: Enforcement
    fallback_mode: FallbackMode
    stale_after_seconds: float
    override_mode: OverrideMode
    override_until: float | None  # epoch seconds; the override is ignored from this time on
    override_text: str  # e.g. "override ForceRed until 2024-05-01T12:00:00.000000Z: incident 42"
    conservative_ms: tuple[int, int, int]  # fallback.conservative, high/medium/low
    drain: DrainParams | None = None  # spec.control in DrainTime mode; None: Zones


def _override_text(mode: str, until: float | None, reason: str | None) -> str:
    text = f"override {mode}" + (f" until {to_rfc3339(until)}" if until is not None else "")
    return f"{text}: {reason}" if reason else text


def _compile(spec: BackpressurePolicySpec) -> PolicyParams:
    margin = spec.hysteresis.margin
    yellow_d, red_d = spec.delays.yellow, spec.delays.red
    shed = frozenset(spec.shedding.priorities)
    conservative = spec.fallback.conservative
    per: list[PriorityParams] = []
    for p in PRIORITIES:
        window = getattr(spec.thresholds, p)
        per.append(
            PriorityParams(
                priority=p,
                green=window.green,
                yellow=window.yellow,
                red=window.red,
                green_exit=window.green * (1.0 - margin),
                yellow_exit=window.yellow * (1.0 - margin),
                yellow_min_ms=float(yellow_d.min_ms),
                yellow_span_ms=float(yellow_d.max_ms - yellow_d.min_ms),
                red_min_ms=float(red_d.min_ms),
                red_span_ms=float(red_d.max_ms - red_d.min_ms),
                scale=float(getattr(spec.priority_scale, p)),
                red_floor_ms=float(yellow_d.max_ms),
                sheds=p in shed,
                shed_ratio_above=spec.shedding.red_ratio_above,
                conservative_ms=int(getattr(conservative, p)),
            )
        )
    override = spec.override
    until = timestamp(override.until) if override.until is not None else None
    control = spec.control
    drain = None
    if control.mode == "DrainTime":
        drain = DrainParams(
            target_lag=control.target_lag,
            drain_seconds=control.drain_seconds,
            integral_seconds=control.integral_seconds,
            rate_smoothing=control.rate_smoothing,
            deadband=control.deadband,
            floors=(control.floors.high, control.floors.medium, control.floors.low),
            excess=(
                "shed" if per[0].sheds else "wait",
                "shed" if per[1].sheds else "wait",
                "shed" if per[2].sheds else "wait",
            ),
        )
    return PolicyParams(
        priorities=(per[0], per[1], per[2]),
        min_dwell_seconds=spec.hysteresis.min_dwell_seconds,
        alpha=spec.smoothing.alpha,
        max_relax_ratio=spec.smoothing.max_relax_ratio_per_interval,
        enforcement=spec.enforcement,
        fallback_mode=spec.fallback.mode,
        stale_after_seconds=spec.fallback.stale_after_seconds,
        override_mode=override.mode,
        override_until=until,
        override_text=_override_text(override.mode, until, override.reason),
        conservative_ms=(conservative.high, conservative.medium, conservative.low),
        drain=drain,
    )


_CACHE: dict[int, tuple[weakref.ref[BackpressurePolicySpec], PolicyParams]] = {}


def compile_policy(spec: BackpressurePolicySpec | PolicyParams) -> PolicyParams:
    """The compiled form of `spec`, computed once per spec object (PolicyParams pass through)."""
    if isinstance(spec, PolicyParams):
        return spec
    key = id(spec)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is spec:
        return hit[1]
    params = _compile(spec)

    def _forget(ref: weakref.ref[BackpressurePolicySpec], key: int = key) -> None:
        entry = _CACHE.get(key)
        if entry is not None and entry[0] is ref:
            del _CACHE[key]

    _CACHE[key] = (weakref.ref(spec, _forget), params)
    return params
