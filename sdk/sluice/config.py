"""The producer's options and librdkafka configuration, checked once at construction.

Everything that can be wrong with a configuration is refused here, before a message is accepted:
contradictory options, a dead-letter configuration librdkafka rejects (the DLQ producer is built
at construction), and a ``topic.metadata.propagation.max.ms`` that would let a missing topic time
out instead of failing as unknown.

librdkafka waits up to ``topic.metadata.propagation.max.ms`` (30 s by default) for a topic to
appear before it fails its messages with ``UNKNOWN_TOPIC_OR_PART``. With a shorter
``message.timeout.ms`` the messages time out first, so a missing topic looks like a broker outage:
dead-lettered as "maybe delivered" instead of failing closed. The SDK therefore sets the propagation
wait to half the message timeout (at most librdkafka's 30 s) unless the caller set it, and refuses
a value that is not below the message timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sluice.callbacks import shield_conf_callbacks

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT_S",
    "DEFAULT_PACING_MAX_WAIT_S",
    "DEFAULT_PACING_WINDOW_S",
    "LIBRDKAFKA_MESSAGE_TIMEOUT_MS",
    "LIBRDKAFKA_PROPAGATION_MS",
    "client_conf",
    "validate_options",
]

#: How long ``close()`` (and leaving a ``with`` block) waits for messages in flight by default.
DEFAULT_CLOSE_TIMEOUT_S = 10.0
#: DrainTime pacing: the window over which a producer measures its own offered rate per priority.
#: Long enough to average out request bursts, short next to the operator's evaluation interval and
#: its one-minute offered-rate query, so a change of load reaches the bucket within a few seconds.
DEFAULT_PACING_WINDOW_S = 2.0
#: DrainTime pacing: how long a message of an ``excess: wait`` priority waits for a token at most
#: before `PacedError` (a request handler should not hold its caller much longer than this).
DEFAULT_PACING_MAX_WAIT_S = 5.0
#: librdkafka's default topic.metadata.propagation.max.ms.
LIBRDKAFKA_PROPAGATION_MS = 30_000
#: librdkafka's default message.timeout.ms (delivery.timeout.ms).
LIBRDKAFKA_MESSAGE_TIMEOUT_MS = 300_000
_PROPAGATION = "topic.metadata.propagation.max.ms"


def client_conf(
    conf: Mapping[str, Any], *, only_errors: bool, own_callbacks: dict[str, Callable[..., None]]
) -> dict[str, Any]:
    """A librdkafka configuration with the SDK's defaults, its callbacks and the caller's shielded."""
    out = dict(conf)
    out.pop("on_delivery", None)
    out.setdefault("enable.idempotence", True)
    out.setdefault("acks", "all")
    out["delivery.report.only.error"] = only_errors
    timeout_ms = int(out.get("message.timeout.ms", out.get("delivery.timeout.ms", LIBRDKAFKA_MESSAGE_TIMEOUT_MS)))
    if _PROPAGATION in out:
        if timeout_ms > 0 and int(out[_PROPAGATION]) >= timeout_ms:
            raise ValueError(
                f"{_PROPAGATION} ({out[_PROPAGATION]}) must be below message.timeout.ms ({timeout_ms}): "
                "a missing topic would time out instead of failing as unknown"
            )
    elif timeout_ms > 0:
        out[_PROPAGATION] = min(LIBRDKAFKA_PROPAGATION_MS, timeout_ms // 2)
    shield_conf_callbacks(out, own_callbacks)
    return out


def validate_options(
    *,
    on_shed: str,
    dlq_topic: str | None,
    dlq_conf: Mapping[str, Any] | None,
    on_stale: str,
    on_timeout: str,
    at_least_once: bool,
    reports: str,
    close_timeout: float,
    pacing_window_s: float = DEFAULT_PACING_WINDOW_S,
    pacing_max_wait_s: float = DEFAULT_PACING_MAX_WAIT_S,
) -> None:
    """Refuse contradictory options with a message naming them."""
    if on_shed not in ("raise", "dlq"):
        raise ValueError("on_shed must be 'raise' or 'dlq'")
    if on_shed == "dlq" and not dlq_topic:
        raise ValueError("on_shed='dlq' needs dlq_topic")
    if dlq_conf is not None and not dlq_topic:
        raise ValueError("dlq_conf needs dlq_topic")
    if on_stale not in ("allow", "conservative", "block"):
        raise ValueError("on_stale must be 'allow', 'conservative' or 'block'")
    if on_timeout not in ("dlq", "retry", "report"):
        raise ValueError("on_timeout must be 'dlq', 'retry' or 'report'")
    if on_timeout == "retry" and not at_least_once:
        raise ValueError("on_timeout='retry' may duplicate messages: it needs at_least_once=True")
    if reports not in ("errors", "all"):
        raise ValueError("delivery_reports must be 'errors' or 'all'")
    if not close_timeout >= 0:
        raise ValueError("close_timeout must be >= 0")
    if not 0 < pacing_window_s < float("inf"):
        raise ValueError("pacing_window_s must be > 0 (and finite)")
    if not pacing_max_wait_s >= 0:
        raise ValueError("pacing_max_wait_s must be >= 0")
