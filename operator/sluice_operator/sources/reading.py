"""The one result type every signal source returns.

Sources never raise into the engine: they say *what* they saw (a number, a
transient outage, or a mistake in the user's spec) so the fallback policy and
the status conditions can treat each case differently.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["MESSAGE_LIMIT", "Reading", "SignalStatus", "truncate"]

#: Longest human message kept on a Reading (status conditions must stay small).
MESSAGE_LIMIT = 512


class SignalStatus(enum.StrEnum):
    """How usable a reading is (a ``str``: compares equal to ``"ok"`` etc., JSON-friendly)."""

    OK = "ok"  # a usable number
    UNAVAILABLE = "unavailable"  # transient: Prometheus down, timeout, HTTP error, NaN/Inf, empty result
    SPEC_ERROR = "spec_error"  # the user's spec is wrong: PromQL syntax error, several series w/o aggregate


@dataclass(frozen=True, slots=True)
class Reading:
    """One observation of a signal, with the reason when it is not a number."""

    status: SignalStatus
    value: float | None = None
    reason: str = ""  # CamelCase: Ok, Empty, NaN, Timeout, HTTPError, ConnectionError, BadQuery, ...
    message: str = ""  # human text, <= MESSAGE_LIMIT chars (Prometheus' own message where there is one)
    partial: bool = False  # Prometheus returned warnings; the data is used but flagged PartialData
    series: int = 0
    #: Kafka source only: the group's position summed over partitions (committed, or the low
    #: watermark), so two readings give the drain rate (DrainTime control).
    consumed: float | None = None

    @property
    def ok(self) -> bool:
        """True when ``value`` is a usable number."""
        return self.status is SignalStatus.OK


def truncate(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "\u2026"
