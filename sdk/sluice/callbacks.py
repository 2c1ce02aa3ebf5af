"""The caller's callbacks, shielded, and the failure log that replaces one warning per message.

Every callback the caller hands the SDK (``on_delivery``, ``on_dead_letter``, librdkafka's
``error_cb``, ``throttle_cb`` and ``stats_cb``) runs through `shielded`: an exception it raises is
logged and swallowed, because it would otherwise escape from ``produce()``, ``flush()`` or
``close()`` (confluent-kafka re-raises callback exceptions from ``poll``) and leave the producer
half-way through its bookkeeping.

While a callback runs, the thread is *inside* the SDK (`inside_callback`): a ``produce()`` called
from it must not poll librdkafka again (that would re-enter the poll that is calling it) nor route
failures (the routing loop that called it is already doing so, iteratively).

`FailureLog` aggregates failures of messages without an ``on_delivery``: the first failure of a
topic and reason is logged at once, the rest are counted and logged as one line per topic and
reason per interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["FAILURE_LOG_INTERVAL_S", "FailureLog", "inside_callback", "shield_conf_callbacks", "shielded"]

log = logging.getLogger("sluice.producer")

#: Failures of one topic and reason are logged at most once per this many seconds.
FAILURE_LOG_INTERVAL_S = 10.0
#: librdkafka callbacks in a client configuration that the SDK shields.
CONF_CALLBACKS = ("error_cb", "throttle_cb", "stats_cb")

_local = threading.local()
R = TypeVar("R")


def inside_callback() -> bool:
    """True while this thread runs a caller's callback for the SDK."""
    return bool(getattr(_local, "depth", 0))


@contextmanager
def _entered() -> Iterator[None]:
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def shielded(what: str, fn: Callable[..., R], *args: Any) -> R | None:
    """Call ``fn(*args)`` as a callback: marked as inside the SDK, exceptions logged, never raised."""
    with _entered():
        try:
            return fn(*args)
        except Exception:
            log.exception("sluice: %s callback raised (ignored)", what)
            return None


def shield_conf_callbacks(conf: dict[str, Any], extra: dict[str, Callable[..., None]] | None = None) -> None:
    """Wrap the librdkafka callbacks in ``conf`` in place; ``extra`` callbacks run first, unshielded."""
    for name in CONF_CALLBACKS:
        user = conf.get(name)
        own = (extra or {}).get(name)
        if user is None and own is None:
            continue
        conf[name] = _chain(name, own, user)


def _chain(name: str, own: Callable[..., None] | None, user: Callable[..., Any] | None) -> Callable[..., None]:
    def callback(*args: Any) -> None:
        if own is not None:
            own(*args)
        if user is not None:
            shielded(name, user, *args)

    return callback


class FailureLog:
    """One log line per topic and reason per interval, with counts, instead of one per message."""

    def __init__(self, interval: float = FAILURE_LOG_INTERVAL_S) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        #: (topic, reason) -> (when the last line was written, failures since)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def note(self, topic: str, reason: str, now: float) -> None:
        """Count one failure; log at once if this topic and reason were quiet for an interval."""
        key = (topic, reason)
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.interval:
                self._seen[key] = (last[0], last[1] + 1)
                return
            self._seen[key] = (now, 0)
        log.warning("sluice: a message to %r failed (%s) and no on_delivery was given", topic, reason)

    def flush(self, now: float, *, force: bool = False) -> None:
        """Log the counts gathered for keys whose interval ended (all of them with ``force``)."""
        lines: list[tuple[str, str, int]] = []
        with self._lock:
            for key, (since, count) in list(self._seen.items()):
                if force or now - since >= self.interval:
                    if count:
                        lines.append((key[0], key[1], count))
                        self._seen[key] = (now, 0)
                    else:
                        del self._seen[key]
        for topic, reason, count in lines:
            log.warning("sluice: %d more message(s) to %r failed (%s) and no on_delivery was given",
                        count, topic, reason)
