"""`ThrottledProducer`: a confluent-kafka producer that obeys the operator's decisions.

The hot path (a green decision, no serializers, no headers, no per-message callback) costs one
``time.monotonic()`` compared with a deadline, one dict lookup and a positional ``Producer.produce``
call with a prebuilt per-priority delivery callback. Everything else (delays, sheds, circuits,
staleness, serialization, retries) is on the slow path, driven by per-priority `Plan` objects that
are rebuilt only when a document changes or goes stale. Instead of ``poll(0)`` after every message
(a large share of a produce call's cost) the producer "ticks" at most every millisecond: it polls,
routes failures and notices a new document version, so a change applies within about a millisecond.

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
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import CollectorRegistry

from sluice.classify import Route, classify_exception, classify_serialization
from sluice.decision import PRIORITIES
from sluice.dlq import DeadLetter, normalize_headers
from sluice.errors import (
    CircuitOpenError,
    FatalProducerError,
    PermanentMessageError,
    ProducerClosedError,
    RetryBudgetExceededError,
    ShedError,
    StaleDecisionError,
    TopicUnavailableError,
)
from sluice.health import health_report
from sluice.metrics import Counts, GaugeState, ProducerMetrics
from sluice.outcomes import ErrorRate, Outcomes
from sluice.plan import CIRCUIT_GAUGE, OnStale, Plan, PlanSet, build_plans
from sluice.retry import Backoff, RetryPolicy
from sluice.routing import DeliveryCallback, Failure, FailureRouter, OnTimeout
from sluice.serde import SerializationFailure, Serializer, serialize
from sluice.watch import DecisionSource

__all__ = ["DeliveryCallback", "ThrottledProducer"]

log = logging.getLogger("sluice.producer")

OnShed = Literal["raise", "dlq"]
_monotonic = time.monotonic
_NEG_INF = -math.inf
#: How often produce() serves delivery reports and looks for a new document version.
_TICK_S = 0.001
#: While a message waits out a delay, re-check the decision this often (a circuit may open).
_RECHECK_WAIT_S = 0.1
#: Slow-path housekeeping (error-rate samples, fail-closed expiry, stale warnings) at least this often.
_HOUSEKEEPING_S = 5.0
_STALE_WARN_EVERY_S = 60.0

_Report = Callable[[KafkaError | None, Message], None]


class ThrottledProducer:
    """Produce to Kafka while obeying Sluice decisions (see docs/sdk.md).

    ``conf`` is a confluent-kafka configuration; idempotence (``enable.idempotence=true``,
    ``acks=all``) is the default. Dead letters go through a second producer built from ``conf``
    updated with ``dlq_conf`` (a longer ``message.timeout.ms``, another cluster...). ``policy``
    (``"namespace/name"``) ignores documents of any other policy (a mis-mounted ConfigMap). The
    decision source belongs to the caller: `close` does not close it.
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
    ) -> None:
        on_timeout = on_timeout or ("retry" if at_least_once else "dlq")
        _validate(on_shed, dlq_topic, on_stale, on_timeout, at_least_once, delivery_reports)
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
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer

        main_conf = dict(conf)
        self._default_cb: DeliveryCallback | None = main_conf.pop("on_delivery", None)
        main_conf.setdefault("enable.idempotence", True)
        main_conf.setdefault("acks", "all")
        main_conf["delivery.report.only.error"] = delivery_reports == "errors"
        self._conf = main_conf
        self._producer = Producer(dict(main_conf))
        self._produce = self._producer.produce
        self._poll = self._producer.poll

        self.counts = Counts()
        self._sent = self.counts.sent
        dlq_full_conf = {**main_conf, "client.id": f"{main_conf.get('client.id', 'sluice')}-dlq", **(dlq_conf or {})}
        self._router = FailureRouter(
            self,
            self.counts,
            dlq_topic=dlq_topic,
            dlq_conf=dlq_full_conf,
            on_timeout=on_timeout,
            retry=retry,
            max_message_bytes=int(main_conf.get("message.max.bytes", 1_000_000)),
            on_dead_letter=on_dead_letter,
        )
        self._drs: tuple[_Report, ...] = tuple(
            functools.partial(self._router.on_report, i, self._default_cb, 1, None) for i in range(len(PRIORITIES))
        )
        self._lock = threading.RLock()
        self._blocked: dict[str, tuple[float, str]] = {}
        self._closed = False
        self._fatal_pending = False
        self._rejected_errors = 0
        self._recreated = 0
        self._error_rate = ErrorRate()
        self._stale_warned: tuple[tuple[str, ...], float] = ((), _NEG_INF)
        self._planset: PlanSet | None = None
        self._table: dict[str, tuple[_Report | None, int, Plan]] = {}
        self._seen_version = -1
        self._recheck_at = _NEG_INF
        self._deadline = _NEG_INF
        self.unflushed = 0
        self.metrics = ProducerMetrics(self.counts, self._gauges, metrics_registry)
        self._refresh()

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

        Raises `CircuitOpenError`, `ShedError`, `StaleDecisionError` or a `ProduceError` when the
        message is not accepted. An accepted message ends in exactly one of: delivered,
        dead-lettered, or reported failed through ``on_delivery``.
        """
        if _monotonic() > self._deadline:
            self._tick()
        try:
            dr, idx, plan = self._table[priority]
        except KeyError:
            raise ValueError(f"priority must be one of {PRIORITIES}, not {priority!r}") from None
        if dr is not None and headers is None and on_delivery is None:
            try:
                self._produce(topic, value, key, -1, dr)
            except (BufferError, KafkaException) as exc:
                self._send(topic, value, key, plan, None, None, exc)
                return
            self._sent[idx] += 1
            return
        delay = self._gate(plan, topic, value, key, headers, on_delivery)
        if delay is None:
            return
        started = _monotonic()
        while delay > 0:
            newer = self._wait_for_decision(priority, plan, started + delay)
            if newer is None:
                break
            # The decision changed while this message waited (a circuit opened, shedding began,
            # the delay changed): apply the new one, counting the time already waited.
            plan = newer
            gated = self._gate(plan, topic, value, key, headers, on_delivery)
            if gated is None:
                return
            delay = gated - (_monotonic() - started)
        self._send(topic, value, key, plan, headers, on_delivery, None)

    async def aproduce(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        *,
        priority: str = "medium",
        headers: Any = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """`produce` for asyncio: delays and backoffs are awaited, serializers run in a worker thread."""
        if _monotonic() > self._deadline:
            self._tick()
        try:
            plan = self._table[priority][2]
        except KeyError:
            raise ValueError(f"priority must be one of {PRIORITIES}, not {priority!r}") from None
        delay = self._gate(plan, topic, value, key, headers, on_delivery)
        if delay is None:
            return
        started = _monotonic()
        while delay > 0:
            deadline = started + delay
            newer = None
            while (remaining := deadline - _monotonic()) > 0:
                await asyncio.sleep(min(remaining, _RECHECK_WAIT_S))
                newer = self._newer_plan(priority, plan)
                if newer is not None:
                    break
            if newer is None:
                break
            plan = newer
            gated = self._gate(plan, topic, value, key, headers, on_delivery)
            if gated is None:
                return
            delay = gated - (_monotonic() - started)
        backoff = Backoff(self.retry, _monotonic())
        if self._key_serializer is not None or self._value_serializer is not None:
            while True:
                try:
                    key, value = await asyncio.to_thread(
                        serialize, topic, key, value, headers, self._key_serializer, self._value_serializer
                    )
                    break
                except SerializationFailure as failure:
                    wait = self._serialization_failed(failure, topic, value, key, plan, headers, on_delivery, backoff)
                    if wait is None:
                        return
                    await asyncio.sleep(wait)
        while True:
            wait = self._try_enqueue(topic, value, key, plan, headers, on_delivery, backoff, None)
            if wait is None:
                return
            await asyncio.sleep(wait)
            self.poll(0)

    # ================================================================== the slow path

    def _gate(
        self, plan: Plan, topic: str, value: Any, key: Any, headers: Any, on_delivery: DeliveryCallback | None
    ) -> float | None:
        """Circuits, staleness, Observe counting, fail-closed topics and sheds, in that order.

        Returns the delay to wait, or None when the message was already handled (shed to the DLQ).
        """
        if self._closed:
            raise ProducerClosedError("producer is closed")
        counts, idx = self.counts, plan.idx
        if plan.stale_block is not None:
            counts.rejected_stale[idx] += 1
            raise StaleDecisionError(plan.stale_block, plan.stale_age)
        if plan.reject is not None:
            counts.rejected_open[idx] += 1
            raise CircuitOpenError(plan.reject[0], plan.reject[1], plan.priority)
        if plan.probe is not None and not plan.probe.admit():
            counts.rejected_open[idx] += 1
            raise CircuitOpenError(plan.probe.circuit, "half-open", plan.priority)
        for action in plan.observe:
            counts.observed[action][idx] += 1
        if plan.observe_probe is not None and not plan.observe_probe.admit():
            counts.observed["reject_open"][idx] += 1
        blocked = self._blocked.get(topic)
        if blocked is not None and _monotonic() < blocked[0]:
            self._count_rejected(idx)
            raise TopicUnavailableError(
                f"topic {topic!r} fails every message ({blocked[1]}); failing closed",
                topic=topic,
                route=Route.PERMANENT_ALL,
            )
        if plan.shed:
            counts.shed[idx] += 1
            if self.on_shed == "raise":
                raise ShedError(plan.priority, plan.zone, plan.epoch)
            letter = DeadLetter(
                topic=topic,
                partition=-1,
                key=key,
                value=value,
                priority=plan.priority,
                reason="shed",
                error_name="SLUICE_SHED",
                error_code=0,
                error_reason=f"shed by decision epoch {plan.epoch} (zone {plan.zone})",
                attempts=0,
                original_headers=normalize_headers(headers),
            )
            self._router.accept(letter, idx, on_delivery or self._default_cb, None)
            return None
        if plan.delay_s > 0:
            counts.delayed[idx] += 1
            self.metrics.observe_delay(plan.priority, plan.delay_s)
        return plan.delay_s

    def _send(
        self,
        topic: str,
        value: Any,
        key: Any,
        plan: Plan,
        headers: Any,
        on_delivery: DeliveryCallback | None,
        first_error: BaseException | None,
    ) -> None:
        """Serialize and enqueue with bounded backoff (the blocking variant)."""
        backoff = Backoff(self.retry, _monotonic())
        if first_error is None and (self._key_serializer is not None or self._value_serializer is not None):
            while True:
                try:
                    key, value = serialize(topic, key, value, headers, self._key_serializer, self._value_serializer)
                    break
                except SerializationFailure as failure:
                    wait = self._serialization_failed(failure, topic, value, key, plan, headers, on_delivery, backoff)
                    if wait is None:
                        return
                    self._wait(wait)
        while True:
            wait = self._try_enqueue(topic, value, key, plan, headers, on_delivery, backoff, first_error)
            first_error = None
            if wait is None:
                return
            self._wait(wait)

    def _serialization_failed(
        self,
        failure: SerializationFailure,
        topic: str,
        value: Any,
        key: Any,
        plan: Plan,
        headers: Any,
        on_delivery: DeliveryCallback | None,
        backoff: Backoff,
    ) -> float | None:
        """A registry outage gives the delay before retrying; bad data is dead-lettered (None) or raised."""
        idx, err = plan.idx, failure.kafka_error()
        if classify_serialization(failure.cause) is Route.TRANSIENT:
            wait = backoff.next_delay(_monotonic())
            if wait is not None:
                self.counts.retried[idx] += 1
                return wait
            self._count_rejected(idx)
            raise RetryBudgetExceededError(
                f"serializer kept failing (registry unavailable?) after {backoff.attempts} attempts: {failure.cause}",
                topic=topic,
                route=Route.TRANSIENT,
                error=err,
                attempts=backoff.attempts,
            ) from failure.cause
        if self.dlq_topic is None:
            self._count_rejected(idx)
            raise PermanentMessageError(
                str(failure), topic=topic, route=Route.PERMANENT_MESSAGE, error=err
            ) from failure.cause
        letter = DeadLetter(
            topic=topic,
            partition=-1,
            key=key,
            value=value,
            priority=plan.priority,
            reason="serialization",
            error_name=err.name(),
            error_code=failure.code,
            error_reason=err.str(),
            attempts=backoff.attempts,
            original_headers=normalize_headers(headers),
        )
        self._router.accept(letter, idx, on_delivery or self._default_cb, err)
        return None

    def _try_enqueue(
        self,
        topic: str,
        value: Any,
        key: Any,
        plan: Plan,
        headers: Any,
        on_delivery: DeliveryCallback | None,
        backoff: Backoff,
        error: BaseException | None,
    ) -> float | None:
        """One attempt to hand the message to librdkafka; a delay means "wait, then call again"."""
        idx = plan.idx
        if error is None:
            user_cb = on_delivery or self._default_cb
            if headers is None and user_cb is self._default_cb:
                dr = self._drs[idx]
            else:
                dr = functools.partial(self._router.on_report, idx, user_cb, 1, normalize_headers(headers) or None)
            try:
                self._produce(topic, value, key, -1, dr, None, 0, headers)
            except (BufferError, KafkaException) as exc:
                error = exc
            else:
                self._sent[idx] += 1
                self.poll(0)
                return None
        route, err = classify_exception(error)
        if route in (Route.BACKPRESSURE, Route.TRANSIENT):
            wait = backoff.next_delay(_monotonic())
            if wait is not None:
                self.counts.retried[idx] += 1
                return wait
            self._count_rejected(idx)
            raise RetryBudgetExceededError(
                f"could not enqueue to {topic!r} after {backoff.attempts} attempts: {error}",
                topic=topic,
                route=route,
                error=err,
                attempts=backoff.attempts,
            ) from error
        if route is Route.PERMANENT_MESSAGE and err is not None and self.dlq_topic is not None:
            letter = DeadLetter(
                topic=topic,
                partition=-1,
                key=key,
                value=value,
                priority=plan.priority,
                reason="permanent",
                error_name=err.name(),
                error_code=err.code(),
                error_reason=err.str(),
                attempts=backoff.attempts,
                original_headers=normalize_headers(headers),
                truncate_to=self._router.truncation(err),
            )
            self._router.accept(letter, idx, on_delivery or self._default_cb, err)
            return None
        if route is Route.PERMANENT_MESSAGE and err is None:
            raise error  # not a Kafka error (e.g. a TypeError for a dict value): the caller's bug
        self._count_rejected(idx)
        text = err.str() if err is not None else str(error)
        if route is Route.PERMANENT_ALL and err is not None:
            self.block_topic(topic, err)
            raise TopicUnavailableError(
                f"topic {topic!r}: {text}", topic=topic, route=route, error=err, attempts=backoff.attempts
            ) from error
        if route is Route.FATAL:
            self._recreate(err)
            raise FatalProducerError(
                f"fatal producer error, producer recreated: {text}",
                topic=topic,
                route=route,
                error=err,
                attempts=backoff.attempts,
            ) from error
        raise PermanentMessageError(
            f"cannot produce to {topic!r}: {text}", topic=topic, route=route, error=err, attempts=backoff.attempts
        ) from error

    def _count_rejected(self, idx: int) -> None:
        self.counts.failed[idx] += 1
        self._rejected_errors += 1

    def _newer_plan(self, priority: str, plan: Plan) -> Plan | None:
        """The plan now in force for `priority` when it differs from `plan` (picks up new documents)."""
        self._tick()
        current: Plan = self._table[priority][2]
        return None if current is plan else current

    def _wait_for_decision(self, priority: str, plan: Plan, deadline: float) -> Plan | None:
        """Wait until `deadline`, serving delivery reports; return early with a newer plan if one arrives."""
        while (remaining := deadline - _monotonic()) > 0:
            self._wait(min(remaining, _RECHECK_WAIT_S))
            newer = self._newer_plan(priority, plan)
            if newer is not None:
                return newer
        return None

    def _wait(self, seconds: float) -> None:
        """Sleep while serving delivery reports (frees queue space during backoffs and delays)."""
        deadline = _monotonic() + seconds
        while (remaining := deadline - _monotonic()) > 0:
            try:
                self._poll(remaining)
            except KafkaException as exc:
                self._on_poll_exception(exc)
                time.sleep(max(0.0, deadline - _monotonic()))
                return

    # ================================================================== ticks, plans, housekeeping

    def _tick(self) -> None:
        """At most every millisecond: serve delivery reports, route failures, pick up new documents."""
        try:
            self._poll(0)
        except KafkaException as exc:
            self._on_poll_exception(exc)
        self._router.poll(0)
        now = _monotonic()
        if (
            self._router.pending
            or self._fatal_pending
            or self._closed
            or now > self._recheck_at
            or self._seen_version != self._source.version
        ):
            self._refresh()
        else:
            self._deadline = min(now + _TICK_S, self._recheck_at)

    def _refresh(self) -> None:
        """Rebuild the per-priority table; route queued failures; housekeeping."""
        with self._lock:
            if self._fatal_pending:
                self._recreate(None)
            self._router.drain()
            now = _monotonic()
            view = self._source.view()
            previous = self._planset
            planset = build_plans(
                view, now, self.on_stale, policy=self.policy, probes=previous.probes if previous else None
            )
            self._planset = planset
            for topic in [t for t, (until, _) in self._blocked.items() if until <= now]:
                del self._blocked[topic]
            serializing = self._key_serializer is not None or self._value_serializer is not None
            slow = self._closed or serializing or bool(self._blocked)
            # dr is None where the plan needs the slow path.
            self._table = {
                p: (self._drs[plan.idx] if plan.passthrough and not slow else None, plan.idx, plan)
                for p, plan in planset.plans.items()
            }
            self._seen_version = view.version
            recheck = min([planset.recheck_at, now + _HOUSEKEEPING_S, *(u for u, _ in self._blocked.values())])
            self._recheck_at = recheck
            self._deadline = _NEG_INF if (self._closed or self._router.pending) else min(now + _TICK_S, recheck)
            self._error_rate.sample(now, *self._attempts_and_errors())
            self._warn_stale(planset, now)

    def _warn_stale(self, planset: PlanSet, now: float) -> None:
        stale, last = self._stale_warned
        if not planset.stale:
            if stale:
                log.info("sluice: decisions fresh again")
                self._stale_warned = ((), _NEG_INF)
            return
        if planset.stale != stale or now - last >= _STALE_WARN_EVERY_S:
            age = "never received" if planset.decision_age is None else f"{planset.decision_age:.0f}s old"
            log.warning(
                "sluice: stale: %s (decision %s, %s); on_stale=%s",
                ", ".join(planset.stale),
                planset.decision_status,
                age,
                self.on_stale,
            )
            self._stale_warned = (planset.stale, now)

    def _attempts_and_errors(self) -> tuple[int, int]:
        attempts = sum(self.counts.sent) + self._router.direct + self._rejected_errors
        return attempts, self._router.errors + self._rejected_errors

    # ================================================================== RouterHost

    def resend(self, failure: Failure) -> bool:
        """at_least_once: produce a timed-out message again (it may already be written)."""
        msg = failure.msg
        dr = functools.partial(self._router.on_report, failure.idx, failure.user_cb, failure.attempt + 1,
                               failure.headers)
        try:
            self._produce(msg.topic() or "", msg.value(), msg.key(), -1, dr, None, 0, failure.headers)
        except BufferError:
            return False  # queue full: dead-letter or report rather than block inside routing
        except KafkaException as exc:
            log.warning("sluice: re-sending a timed-out message failed: %s", exc)
            return False
        return True

    def block_topic(self, topic: str, err: KafkaError) -> None:
        """Fail closed: refuse the topic at produce time for ``fail_closed_seconds``."""
        with self._lock:
            if topic not in self._blocked:
                log.error("sluice: %r fails every message (%s); failing closed for %.0fs", topic, err.name(),
                          self.fail_closed_seconds)
            self._blocked[topic] = (_monotonic() + self.fail_closed_seconds, err.name())
            self._recheck_at = self._deadline = _NEG_INF

    def mark_fatal(self) -> None:
        """Recreate the main producer at the next opportunity."""
        self._fatal_pending = True
        self._deadline = _NEG_INF

    def wake(self) -> None:
        """Route queued failures at the next produce call."""
        self._deadline = _NEG_INF

    # ================================================================== the underlying producer

    def _on_poll_exception(self, exc: KafkaException) -> None:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is not None and (err.fatal() or err.code() == KafkaError._FATAL):
            log.error("sluice: fatal producer error: %s; the producer will be recreated", err)
            self.mark_fatal()
            return
        raise exc

    def _recreate(self, err: KafkaError | None) -> None:
        """Replace the main producer after a fatal error; its queued messages are reported failed."""
        with self._lock:
            self._fatal_pending = False
            old = self._producer
            with contextlib.suppress(KafkaException, RuntimeError):
                old.purge(True, True, False)
            deadline = _monotonic() + 5.0
            while len(old) and _monotonic() < deadline:  # serve the purge reports: failures to route
                with contextlib.suppress(KafkaException):
                    old.poll(0.05)
            self._producer = Producer(dict(self._conf))
            self._produce = self._producer.produce
            self._poll = self._producer.poll
            self._recreated += 1
            log.error("sluice: recreated the producer after a fatal error (%s)", err)
            self._recheck_at = self._deadline = _NEG_INF

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
            step = max(0.0, min(deadline - _monotonic(), 0.1))
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
            await asyncio.sleep(0.005)

    def close(self, timeout: float = 10.0) -> int:
        """Flush; then purge whatever is still in flight and report it failed. Returns that count."""
        if self._closed:
            return self.unflushed
        left = self.flush(timeout)
        with self._lock:
            if left:
                log.warning("sluice: closing with %d message(s) in flight; reporting them failed", left)
                with contextlib.suppress(KafkaException, RuntimeError):
                    self._producer.purge(True, True, False)
                self._router.purge()
                if self.flush(2.0):
                    log.error("sluice: %d message(s) could not be accounted for at close", self.in_flight)
            self._closed = True
            self._recheck_at = self._deadline = _NEG_INF
            self.unflushed = left
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
        """Accepted messages without an outcome yet (in either producer, or awaiting routing)."""
        return len(self._producer) + self._router.in_flight

    def outcomes(self) -> Outcomes:
        """Where accepted messages are (exact after `flush`)."""
        with self._lock:
            accepted = sum(self.counts.sent) + self._router.direct
            dead = sum(self.counts.dead_lettered)
            failed = self._router.failed
            in_flight = self.in_flight
            return Outcomes(
                accepted=accepted,
                delivered=accepted - dead - failed - in_flight,
                dead_lettered=dead,
                failed=failed,
                in_flight=in_flight,
            )

    def health(self) -> dict[str, Any]:
        """Decision source status and age, circuit state, messages in flight, recent error rate, healthy."""
        now = _monotonic()
        view = self._source.view()
        probes = self._planset.probes if self._planset is not None else None
        planset = build_plans(view, now, self.on_stale, policy=self.policy, probes=probes)
        return health_report(
            view,
            planset,
            in_flight=self.in_flight,
            error_rate=self._error_rate.rate(*self._attempts_and_errors()),
            error_rate_threshold=self.error_rate_threshold,
            blocked_topics=[t for t, (until, _) in self._blocked.items() if until > now],
            recreated=self._recreated,
            closed=self._closed,
        )

    def _gauges(self) -> GaugeState:
        planset = self._planset
        view = self._source.view()
        state = planset.circuit_state if planset is not None else "closed"
        return GaugeState(
            decision_age=view.decision.age(_monotonic()) if view.decision is not None else None,
            circuit_state=CIRCUIT_GAUGE[state],
            applied_epoch=planset.epoch if planset is not None else -1,
            in_flight=self.in_flight,
            decision_errors=view.errors,
            recreated=self._recreated,
        )


def _validate(
    on_shed: str, dlq_topic: str | None, on_stale: str, on_timeout: str, at_least_once: bool, reports: str
) -> None:
    if on_shed not in ("raise", "dlq"):
        raise ValueError("on_shed must be 'raise' or 'dlq'")
    if on_shed == "dlq" and not dlq_topic:
        raise ValueError("on_shed='dlq' needs dlq_topic")
    if on_stale not in ("allow", "conservative", "block"):
        raise ValueError("on_stale must be 'allow', 'conservative' or 'block'")
    if on_timeout not in ("dlq", "retry", "report"):
        raise ValueError("on_timeout must be 'dlq', 'retry' or 'report'")
    if on_timeout == "retry" and not at_least_once:
        raise ValueError("on_timeout='retry' may duplicate messages: it needs at_least_once=True")
    if reports not in ("errors", "all"):
        raise ValueError("delivery_reports must be 'errors' or 'all'")
