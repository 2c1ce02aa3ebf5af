"""Time as the engine sees it: float epoch seconds, kept at microsecond resolution.

Status stores timestamps as RFC 3339 strings with microseconds. Quantizing every time the engine
keeps to whole microseconds makes float -> string -> float exact, so an operator restarted from
its status takes exactly the decisions it would have taken without the restart.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["from_rfc3339", "quantize", "rfc3339", "timestamp", "to_rfc3339"]

_US = 1_000_000
_SECONDS = "%Y-%m-%dT%H:%M:%SZ"  # metav1.Time (conditions, Events)
_MICROSECONDS = "%Y-%m-%dT%H:%M:%S.%fZ"  # metav1.MicroTime (Leases) and the engine's own timestamps


def rfc3339(when: datetime | None = None, *, micro: bool = False) -> str:
    """`when` (default: now) in UTC as Kubernetes writes it: whole seconds, or microseconds."""
    return (when or datetime.now(UTC)).strftime(_MICROSECONDS if micro else _SECONDS)


def quantize(t: float) -> float:
    """`t` rounded to the nearest microsecond (the resolution status timestamps keep)."""
    return round(t * _US) / _US


def to_rfc3339(t: float) -> str:
    """UTC RFC 3339 with microseconds, e.g. ``2024-05-01T12:00:00.250000Z``."""
    return rfc3339(datetime.fromtimestamp(t, UTC), micro=True)


def timestamp(dt: datetime) -> float:
    """Epoch seconds of `dt`; a naive datetime is taken as UTC (Kubernetes writes UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return quantize(dt.timestamp())


def from_rfc3339(text: str) -> float:
    """Parse what `to_rfc3339` wrote (or any ISO 8601 time); raises ValueError on garbage."""
    return timestamp(datetime.fromisoformat(text))
