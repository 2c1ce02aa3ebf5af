"""`ThrottledProducer`: a confluent-kafka producer that obeys the operator's decisions.

The hot path (a green decision, no serializers, no headers, no per-message callback) costs one
``time.monotonic()`` compared with a deadline, one dict lookup and a positional ``Producer.produce``
call with a prebuilt per-priority delivery callback. Everything else (delays, sheds, circuits,
staleness, broker throttles, serialization, retries) goes through one admission path: the
`sluice.admission.Admission` state machine, run by the two drivers at the end of this module
(``_admit`` for ``produce()``, ``_aadmit`` for ``aproduce()``). Instead of ``poll(0)`` after every message the
producer "ticks" at most every millisecond (`sluice.core`): it polls, routes failures and notices a
new document version, so a change applies within about a millisecond.

Delivery reports default to failures only (``delivery.report.only.error``): a Python callback per
successful message would double the cost of producing, and the SDK needs only failures to route
them (`sluice.routing`); successes are derived (`sluice.outcomes`). ``delivery_reports="all"`` has
``on_delivery`` called for successes too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal, TypedDict, Unpack

from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry

from sluice.admission import Admission, Step
from sluice.callbacks import inside_callback
from sluice.config import (
    DEFAULT_CLOSE_TIMEOUT_S,
    DEFAULT_PACING_MAX_WAIT_S,
    DEFAULT_PACING_WINDOW_S,
    validate_options,
)
from sluice.core import NEG_INF, ProducerCore, _monotonic
from sluice.decision import PRIORITIES
from sluice.dlq import DeadLetter, normalize_headers
from sluice.errors import ProducerClosedError
from sluice.health import health_report
from sluice.outcomes import Outcomes
from sluice.plan import OnStale, build_plans
from sluice.retry import RetryPolicy
from sluice.routing import DeliveryCallback, OnTimeout
from sluice.serde import SerializationFailure, Serializer, serialize
from sluice.sources.base import DecisionSource

__all__ = ["DeliveryCallback", "ThrottledProducer"]

log = logging.getLogger("sluice.producer")

OnShed = Literal["raise", "dlq"]
#: After close() purged what was left, how long it serves the purge reports.
_PURGE_REPORTS_S = 2.0
#: aflush() yields to the event loop this often while messages are in flight.
_AFLUSH_STEP_S = 0.005
#: flush() waits for the queues in slices this long (routing failures in between).
_FLUSH_STEP_S = 0.1


class ProduceOptions(TypedDict, total=False):
    """The keyword arguments of `produce` and `aproduce`, with produce's defaults (defined once)."""

    priority: str  # "high", "medium" (default) or "low"
    headers: Any  # as confluent-kafka takes them (default none)
    on_delivery: DeliveryCallback | None  # the message's one outcome (default: the producer's on_delivery)


_OPTIONS = frozenset(ProduceOptions.__annotations__)


class ThrottledProducer(ProducerCore):
    """Produce to Kafka while obeying Sluice decisions (see the README's SDK section).

    ``conf`` is a confluent-kafka configuration; idempotence (``enable.idempotence=true``,
    ``acks=all``) is the default. Dead letters go through a second producer built from ``conf``
    updated with ``dlq_conf`` (a longer ``message.timeout.ms``, another cluster...), at construction,
    so a bad ``dlq_conf`` is refused here. ``policy`` (``"namespace/name"``) ignores documents of any
    other policy (a mis-mounted ConfigMap). ``close_timeout`` bounds `close` and leaving a ``with``
    block. The decision source belongs to the caller: `close` does not close it. Under a decision
    with ``admitRatio < 1`` (DrainTime control) a priority is paced to that share of its offered
    rate measured over ``pacing_window_s``; a message of an ``excess: wait`` priority waits at most
    ``pacing_max_wait_s`` for a token (`sluice.pacing`, docs/sdk.md).
    """

    def __init__(
        self,
        conf: Mapping[str, Any],
        decisions: DecisionSource,
        *,
        dlq_topic: str | None = None,
        on_shed: OnShed = "raise",
        on_stale: OnStale = "allow",
        on_timeout: OnTimeout | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, safe as a default
        metrics_registry: CollectorRegistry | None = None,
        at_least_once: bool = False,
        key_serializer: Serializer | None = None,
        value_serializer: Serializer | None = None,
        policy: str | None = None,
        delivery_reports: Literal["errors", "all"] = "errors",
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
        dlq_conf: Mapping[str, Any] | None = None,
        fail_closed_seconds: float = 10.0,
        error_rate_threshold: float = 0.05,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT_S,
        pacing_window_s: float = DEFAULT_PACING_WINDOW_S,
        pacing_max_wait_s: float = DEFAULT_PACING_MAX_WAIT_S,
    ) -> None:
        on_timeout = on_timeout or ("retry" if at_least_once else "dlq")
        validate_options(on_shed=on_shed, dlq_topic=dlq_topic, dlq_conf=dlq_conf, on_stale=on_stale,
                         on_timeout=on_timeout, at_least_once=at_least_once, reports=delivery_reports,
                         close_timeout=close_timeout, pacing_window_s=pacing_window_s,
                         pacing_max_wait_s=pacing_max_wait_s)
        self._source = decisions
        self.dlq_topic = dlq_topic
        self.on_shed: OnShed = on_shed
        self.on_stale: OnStale = on_stale
        self.on_timeout: OnTimeout = on_timeout
        self.retry = retry
        self.at_least_once = at_least_once
        self.policy = policy
        self.delivery_reports = delivery_reports
        self.fail_closed_seconds = fail_closed_seconds
        self.error_rate_threshold = error_rate_threshold
        self.close_timeout = close_timeout
        self.pacing_window_s = pacing_window_s
        self.pacing_max_wait_s = pacing_max_wait_s
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._init_core()

        self._init_client(conf, dlq_conf, on_dead_letter, metrics_registry)

    # ================================================================== produce

    def produce(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        priority: str = "medium",
        headers: Any = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Produce one message, applying the decision in force for ``priority``.

        Raises `CircuitOpenError`, `ShedError`, `PacedError`, `StaleDecisionError`,
        `ProducerClosedError` or a `ProduceError` when the message is not accepted. An accepted
        message ends in exactly one of: delivered, dead-lettered, failed (known not written) or in
        doubt (may have been written).
        """
        if _monotonic() > self._deadline:  # `_entry`, inline: this is the hot path
            self._tick()
        try:
            dr, idx, plan = self._table[priority]
        except KeyError:
            raise ValueError(f"priority must be one of {PRIORITIES}, not {priority!r}") from None
        if dr is not None and headers is None and on_delivery is None:
            try:
                self._produce(topic, value, key, -1, dr)
            except (BufferError, KafkaException) as exc:
                adm = Admission(self._link, plan, topic, value, key, None, self._default_cb)
                self._admit(adm, adm.enqueue_failed(exc, _monotonic()))
                return
            self._sent[idx] += 1
            return
        adm = Admission(self._link, plan, topic, value, key, headers, on_delivery or self._default_cb)
        self._admit(adm, adm.begin(_monotonic()))

    async def aproduce(self, topic: str, value: Any = None, key: Any = None, **options: Unpack[ProduceOptions]) -> None:
        """`produce` for asyncio, with the same arguments: delays and backoffs are awaited, serializers run
        in a worker thread."""
        if not _OPTIONS.issuperset(options):
            unknown = ", ".join(sorted(options.keys() - _OPTIONS))
            raise TypeError(f"aproduce() got unexpected keyword arguments: {unknown}")
        plan = self._entry(options.get("priority", "medium"))[2]
        adm = Admission(self._link, plan, topic, value, key, options.get("headers"),
                        options.get("on_delivery") or self._default_cb)
        await self._aadmit(adm, adm.begin(_monotonic()))

    # ================================================================== public API

    def poll(self, timeout: float = 0) -> int:
        """Serve delivery reports (both producers) and route failures; returns events served."""
        try:
            served = self._poll(timeout)
        except KafkaException as exc:
            self._on_poll_exception(exc)
            served = 0
        served += self._router.poll(0)
        if self._router.pending:
            self._router.drain()
        return served

    def flush(self, timeout: float | None = None) -> int:
        """Wait for every accepted message to reach its outcome; returns how many are still in flight."""
        deadline = math.inf if timeout is None else _monotonic() + timeout
        while True:
            if self._fatal_pending:
                self._recreate(None)
            self._router.drain()
            step = max(0.0, min(deadline - _monotonic(), _FLUSH_STEP_S))
            try:
                self._producer.flush(step)
            except KafkaException as exc:
                self._on_poll_exception(exc)
            self._router.flush(step if len(self._producer) == 0 else 0)
            self._router.drain()
            left = self.in_flight
            if left == 0 or _monotonic() >= deadline:
                return left

    async def aflush(self, timeout: float | None = None) -> int:
        """`flush` for asyncio: polls without blocking the event loop."""
        deadline = math.inf if timeout is None else _monotonic() + timeout
        while True:
            if self._fatal_pending:
                self._recreate(None)
            self.poll(0)
            left = self.in_flight
            if left == 0 or _monotonic() >= deadline:
                return left
            await asyncio.sleep(_AFLUSH_STEP_S)

    def close(self, timeout: float | None = None) -> int:
        """Refuse new messages, flush (up to ``timeout``, default ``close_timeout``), then purge.

        What is still in flight after the timeout is purged: messages never sent are reported
        failed, messages already sent are reported in doubt. Returns how many were purged.
        """
        with self._lock:
            if self._closed:
                return self.unflushed
            self._closed = True  # from here on no enqueue succeeds, including one backing off now
            self._refresh()
        left = self.flush(self.close_timeout if timeout is None else timeout)
        with self._lock:
            if left:
                log.warning("sluice: closing with %d message(s) in flight; purging them", left)
                with contextlib.suppress(KafkaException, RuntimeError):
                    self._producer.purge(True, True, False)
                self._router.purge()
                if self.flush(_PURGE_REPORTS_S):
                    log.error("sluice: %d message(s) could not be accounted for at close", self.in_flight)
            self._recheck_at = self._deadline = NEG_INF
            self.unflushed = left
            self._failure_log.flush(_monotonic(), force=True)
        return left

    def __enter__(self) -> ThrottledProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __len__(self) -> int:
        return self.in_flight

    @property
    def in_flight(self) -> int:
        """Accepted messages without an outcome yet (in either producer, or awaiting routing).

        librdkafka's queue length also counts queued events (errors, throttles, report batches), so
        they are served first, like ``poll(0)`` (except from inside a callback).
        """
        if not inside_callback():
            self._serve()
        return self._in_flight_now()

    def outcomes(self) -> Outcomes:
        """Where accepted messages are (exact after `flush`)."""
        with self._lock:
            in_flight = self.in_flight
            accepted = sum(self.counts.sent) + self._router.direct
            dead = sum(self.counts.dead_lettered)
            failed, doubt = self._router.failed, self._router.in_doubt
            return Outcomes(
                accepted=accepted,
                delivered=accepted - dead - failed - doubt - in_flight,
                dead_lettered=dead,
                failed=failed,
                in_flight=in_flight,
                in_doubt=doubt,
            )

    def health(self) -> dict[str, Any]:
        """Decision source status and age, circuit state, messages in flight, error rate, broker throttle."""
        now = _monotonic()
        view = self._source.view()
        probes = self._planset.probes if self._planset is not None else None
        planset = build_plans(view, now, self.on_stale, policy=self.policy, probes=probes)
        report = health_report(
            view,
            planset,
            in_flight=self.in_flight,
            error_rate=self._error_rate.rate(*self._attempts_and_errors()),
            error_rate_threshold=self.error_rate_threshold,
            blocked_topics=[t for t, (until, _) in self._blocked.items() if until > now],
            recreated=self._recreated,
            closed=self._closed,
        )
        report["broker_throttle"] = self._throttle_health(now)
        return report

    # ================================================================== the two drivers

    def _admit(self, adm: Admission, step: Step) -> None:
        """Run an admission to its end, blocking (waits serve delivery reports)."""
        try:
            self._drive(adm, step)
        except BaseException:
            adm.abandon(_monotonic())  # e.g. KeyboardInterrupt in a wait: give back a pacing ticket
            raise

    def _drive(self, adm: Admission, step: Step) -> None:
        while True:
            if step is Step.WAIT:
                self._wait(adm.wait_s)
                step = self._waited(adm)
            elif step is Step.SERIALIZE:
                step = self._serialized(adm, self._serialize(adm))
            elif (step := self._advance(adm, step)) is Step.DONE:
                return

    async def _aadmit(self, adm: Admission, step: Step) -> None:
        """Run an admission to its end without blocking the event loop."""
        try:
            await self._adrive(adm, step)
        except BaseException:
            adm.abandon(_monotonic())  # e.g. the task was cancelled while it waited for a token
            raise

    async def _adrive(self, adm: Admission, step: Step) -> None:
        while True:
            if step is Step.WAIT:
                await asyncio.sleep(adm.wait_s)
                step = self._waited(adm)
            elif step is Step.SERIALIZE:
                step = self._serialized(adm, await asyncio.to_thread(self._serialize, adm))
            elif (step := self._advance(adm, step)) is Step.DONE:
                return

    # The steps both drivers share; only waiting and serializing differ between them (above).

    def _waited(self, adm: Admission) -> Step:
        return adm.waited(_monotonic(), self._current_plan(adm.plan.priority))

    def _serialize(self, adm: Admission) -> tuple[Any, Any] | SerializationFailure:
        try:
            return serialize(adm.topic, adm.key, adm.value, adm.headers, self._key_serializer, self._value_serializer)
        except SerializationFailure as failure:
            return failure

    @staticmethod
    def _serialized(adm: Admission, result: tuple[Any, Any] | SerializationFailure) -> Step:
        if isinstance(result, SerializationFailure):
            return adm.serialize_failed(result, _monotonic())
        return adm.serialized(*result)

    def _advance(self, adm: Admission, step: Step) -> Step:
        """Enqueue, or finish an admission at its end step (then `Step.DONE`)."""
        if step is Step.ENQUEUE:
            return self._enqueue(adm)
        self._finish(adm, step)
        return Step.DONE

    def _enqueue(self, adm: Admission) -> Step:
        """One attempt to hand the message to librdkafka; refused for good once `close` began."""
        idx = adm.plan.idx
        if adm.headers is None and adm.user_cb is self._default_cb:
            dr = self._drs[idx]
        else:
            dr = functools.partial(self._router.on_report, idx, adm.user_cb, 1, normalize_headers(adm.headers) or None)
        with self._lock:
            if self._closed:
                raise ProducerClosedError("producer is closed")
            try:
                self._produce(adm.topic, adm.value, adm.key, -1, dr, None, 0, adm.headers)
            except (BufferError, KafkaException) as exc:
                return adm.enqueue_failed(exc, _monotonic())
        return adm.enqueued()

    def _finish(self, adm: Admission, step: Step) -> None:
        if step is Step.DEAD_LETTER and adm.letter is not None:
            self._router.accept(adm.letter, adm.plan.idx, adm.user_cb, adm.letter_err)
