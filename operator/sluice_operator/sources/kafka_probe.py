"""The CircuitBreaker's ``kafka`` signal: is the cluster answering metadata requests?

An evaluation fails when a Metadata request (``list_topics``) fails or does
not answer within the timeout. A hung broker keeps its sockets open and never
answers, so only a timeout catches it; that is why the probe measures a real
request rather than connection state.

``list_topics`` blocks, so each probe runs in its own daemon thread. Threads
are bounded without sharing a queue between clusters (a hung cluster must not
make a healthy one look slow): at most ``max_in_flight`` probes per client
and ``max_total_in_flight`` overall. A probe that finds its cluster's probes
still stuck reports unhealthy at once (reason ``ProbeBacklog``): the earlier
probe has not even timed out yet, which is itself a failing evaluation.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import KafkaException

from sluice_operator.sources.kafka import (
    ClientCache,
    ProcessWide,
    drain_logs,
    kafka_error_reason,
    kafka_exception_error,
    redact,
)
from sluice_operator.sources.reading import truncate

__all__ = ["KafkaProbe", "ProbeResult", "probe"]

T = TypeVar("T")

_DEFAULT_TIMEOUT = 3.0
_GRACE = 0.5


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One health evaluation: ``latency`` is seconds from start to answer (or give-up)."""

    healthy: bool
    reason: str  # Ok, Timeout, Transport, NoBrokers, ProbeBacklog, InvalidConfig, ...
    latency: float
    message: str = ""


class _Slots:
    """At most `per_key` holders per key and `total` over all keys, taken and given back from any thread."""

    def __init__(self, per_key: int, total: int) -> None:
        self._per_key = per_key
        self._max_total = total
        self._held: dict[str, int] = {}
        self._total = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Slots held now, over all keys."""
        with self._lock:
            return self._total

    def acquire(self, key: str) -> bool:
        """Take a slot of `key`; False when `key`, or the whole, has none left."""
        with self._lock:
            count = self._held.get(key, 0)
            if count >= self._per_key or self._total >= self._max_total:
                return False
            self._held[key] = count + 1
            self._total += 1
            return True

    def release(self, key: str) -> None:
        """Give back a slot `acquire` gave."""
        with self._lock:
            count = self._held.get(key, 0) - 1
            if count > 0:
                self._held[key] = count
            else:
                self._held.pop(key, None)
            self._total -= 1


class KafkaProbe:
    """Metadata-request health probes with one cached AdminClient per bootstrap + config."""

    def __init__(self, *, max_in_flight: int = 2, max_total_in_flight: int = 32, max_clients: int = 16) -> None:
        if max_in_flight < 1 or max_total_in_flight < 1:
            raise ValueError("in-flight caps must be >= 1")
        self._cache = ClientCache("sluice-operator-probe", max_clients)
        self._slots = _Slots(max_in_flight, max_total_in_flight)

    @property
    def in_flight(self) -> int:
        """Probe threads currently running (for tests and metrics)."""
        return self._slots.held

    async def probe(
        self,
        bootstrap_servers: str,
        *,
        config: Mapping[str, str] | None = None,
        timeout_seconds: float = _DEFAULT_TIMEOUT,
    ) -> ProbeResult:
        """One evaluation: healthy when the cluster answers a metadata request within ``timeout_seconds``."""
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        start = time.monotonic()
        key = bootstrap_servers + "\0" + repr(sorted((config or {}).items()))
        if not self._slots.acquire(key):
            return ProbeResult(
                False, "ProbeBacklog", 0.0, "earlier probes of this cluster are still waiting for an answer"
            )
        try:
            fut = _in_thread(
                lambda: self._probe_blocking(bootstrap_servers, config, timeout_seconds, start),
                on_done=lambda: self._slots.release(key),
            )
        except BaseException:
            self._slots.release(key)
            raise
        try:
            return await asyncio.wait_for(fut, timeout_seconds + _GRACE)
        except TimeoutError:
            return ProbeResult(False, "Timeout", time.monotonic() - start, f"no answer within {timeout_seconds}s")

    def _probe_blocking(
        self, bootstrap_servers: str, config: Mapping[str, str] | None, timeout: float, start: float
    ) -> ProbeResult:
        try:
            admin = self._cache.get(bootstrap_servers, config)
        except (KafkaException, ValueError, TypeError) as exc:
            message = redact(f"Kafka client config rejected: {exc}", config)
            return ProbeResult(False, "InvalidConfig", 0.0, truncate(message))
        remaining = max(0.01, timeout - (time.monotonic() - start))
        try:
            metadata = admin.list_topics(timeout=remaining)
        except KafkaException as exc:
            error = kafka_exception_error(exc)
            text = error.str() if error is not None else str(exc)
            return ProbeResult(False, kafka_error_reason(error), time.monotonic() - start, truncate(text))
        finally:
            drain_logs(admin)
        latency = time.monotonic() - start
        if not metadata.brokers:
            return ProbeResult(False, "NoBrokers", latency, "metadata lists no brokers")
        return ProbeResult(True, "Ok", latency, f"{len(metadata.brokers)} brokers answered")

    def close(self) -> None:
        """Drop the cached clients (running probes keep theirs until they end)."""
        self._cache.clear()


def _in_thread(fn: Callable[[], T], on_done: Callable[[], None]) -> asyncio.Future[T]:
    """Run ``fn`` in a fresh daemon thread; the returned future may be abandoned safely."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T) -> None:
        if not future.done():  # done: the caller gave up (timeout/cancel)
            future.set_result(result)

    def fail(exc: BaseException) -> None:
        if not future.done():
            future.set_exception(exc)

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:
            on_done()
            _call_soon(loop, fail, exc)
            return
        on_done()
        _call_soon(loop, deliver, result)

    threading.Thread(target=run, name="sluice-kafka-probe", daemon=True).start()
    return future


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[T], None], arg: T) -> None:
    try:
        loop.call_soon_threadsafe(fn, arg)
    except RuntimeError:  # the loop closed meanwhile; nobody is waiting
        pass


_default = ProcessWide(KafkaProbe)


async def probe(*args: Any, **kwargs: Any) -> ProbeResult:
    """:meth:`KafkaProbe.probe` (same arguments) on a process-wide prober."""
    return await _default.get().probe(*args, **kwargs)
