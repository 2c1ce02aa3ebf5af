"""`ThrottledProducer`: a confluent-kafka producer that obeys the operator's decisions.

The hot path (a green decision, no serializers, no headers, no per-message callback) costs one
integer comparison with the source's version, one ``time.monotonic()``, one dict lookup and a
positional ``Producer.produce`` call with a prebuilt per-priority delivery callback. Everything
else (delays, sheds, circuits, staleness, serialization, retries) is on the slow path, computed
from per-priority `Plan` objects that are rebuilt only when a document changes or goes stale.

Delivery reports default to errors only (``delivery.report.only.error``): a Python callback per
successful message would double the cost of producing. The SDK needs only failures to route them;
successes are derived (see `sluice.outcomes`). Pass ``delivery_reports="all"`` to have
``on_delivery`` called for successes too.

Failures are routed by `sluice.classify`. Delivery reports are served inside librdkafka's poll, where
producing again is unsafe, so failed messages are queued and routed (dead-lettered, re-sent under
``at_least_once``, or reported) right after the poll returns, by `produce`, `poll` or `flush`.
Dead letters go through a second, lazily created producer that reports every delivery, so the SDK
knows for certain when a dead letter landed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import CollectorRegistry

from sluice.classify import Route, classify_delivery, classify_exception, classify_serialization
from sluice.decision import PRIORITIES
from sluice.dlq import DeadLetter, Reason, normalize_headers
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
from sluice.metrics import Counts, GaugeState, ProducerMetrics
from sluice.outcomes import ErrorRate, Outcomes
from sluice.plan import CIRCUIT_GAUGE, OnStale, Plan, PlanSet, build_plans
from sluice.retry import Backoff, RetryPolicy
from sluice.watch import DecisionSource

__all__ = ["DeliveryCallback", "ThrottledProducer"]

log = logging.getLogger("sluice.producer")

DeliveryCallback = Callable[[KafkaError | None, Message], None]
OnShed = Literal["raise", "dlq"]
OnTimeout = Literal["dlq", "retry", "report"]
_monotonic = time.monotonic
_NEG_INF = -math.inf
#: Slow-path housekeeping (error-rate samples, fail-closed expiry, stale warnings) at least this often.
_HOUSEKEEPING_S = 5.0
_STALE_WARN_EVERY_S = 60.0
_SIZE_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})


@dataclass(slots=True)
class _Failure:
    """A failed delivery report waiting to be routed outside librdkafka's poll."""

    idx: int
    user_cb: DeliveryCallback | None
    attempt: int
    headers: list[tuple[str, str | bytes | None]] | None
    err: KafkaError
    msg: Message


class _SerializationFailure(Exception):
    def __init__(self, field: str, cause: BaseException) -> None:
        super().__init__(f"{field} serialization failed: {cause}")
        self.field = field
        self.cause = cause


class ThrottledProducer:
    """Produce to Kafka while obeying Sluice decisions; see the module docstring and docs/sdk.md.

    ``conf`` is a confluent-kafka configuration; idempotence (``enable.idempotence=true``,
    ``acks=all``) is the default. ``policy`` (``"namespace/name"``) makes the producer ignore
    documents of any other policy (a mis-mounted ConfigMap). The source is not closed by `close`.
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
        key_serializer: Callable[..., Any] | None = None,
        value_serializer: Callable[..., Any] | None = None,
        policy: str | None = None,
        delivery_reports: Literal["errors", "all"] = "errors",
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
        fail_closed_seconds: float = 10.0,
        error_rate_threshold: float = 0.05,
    ) -> None:
        if on_shed not in ("raise", "dlq"):
            raise ValueError("on_shed must be 'raise' or 'dlq'")
        if on_shed == "dlq" and not dlq_topic:
            raise ValueError("on_shed='dlq' needs dlq_topic")
        if on_stale not in ("allow", "conservative", "block"):
            raise ValueError("on_stale must be 'allow', 'conservative' or 'block'")
        if on_timeout is None:
            on_timeout = "retry" if at_least_once else "dlq"
        if on_timeout not in ("dlq", "retry", "report"):
            raise ValueError("on_timeout must be 'dlq', 'retry' or 'report'")
        if on_timeout == "retry" and not at_least_once:
            raise ValueError("on_timeout='retry' may duplicate messages: it needs at_least_once=True")
        if delivery_reports not in ("errors", "all"):
            raise ValueError("delivery_reports must be 'errors' or 'all'")
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
        self._on_dead_letter = on_dead_letter

        user_conf = dict(conf)
        self._default_cb: DeliveryCallback | None = user_conf.pop("on_delivery", None)
        user_conf.setdefault("enable.idempotence", True)
        user_conf.setdefault("acks", "all")
        user_conf["delivery.report.only.error"] = delivery_reports == "errors"
        self._conf = user_conf
        self._max_message_bytes = int(user_conf.get("message.max.bytes", 1_000_000))
        self._producer = Producer(dict(user_conf))
        self._produce = self._producer.produce
        self._poll = self._producer.poll
        self._dlq: Producer | None = None

        self._lock = threading.RLock()
        self._pending: collections.deque[_Failure] = collections.deque()
        self._blocked: dict[str, tuple[float, str]] = {}
        self._closed = False
        self._fatal_pending = False
        self.counts = Counts()
        self._drs: tuple[Callable[[KafkaError | None, Message], None], ...] = tuple(
            functools.partial(self._on_report, i, self._default_cb, 1, None) for i in range(len(PRIORITIES))
        )
        self._direct_dlq = 0
        self._failed_accepted = 0
        self._errors = 0
        self._rejected_errors = 0
        self._recreated = 0
        self._error_rate = ErrorRate()
        self._stale_warned: tuple[tuple[str, ...], float] = ((), _NEG_INF)
        self._planset: PlanSet | None = None
        self._table: dict[str, tuple[bool, Plan, Callable[[KafkaError | None, Message], None]]] = {}
        self._seen_version = -1
        self._recheck_at = _NEG_INF
        self.unflushed = 0
        self.metrics = ProducerMetrics(self.counts, self._gauges, metrics_registry)
        self._refresh()

    # ================================================================== produce: the hot path

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
        if self._seen_version != self._source.version or _monotonic() > self._recheck_at:
            self._refresh()
        try:
            fast, plan, dr = self._table[priority]
        except KeyError:
            raise ValueError(f"priority must be one of {PRIORITIES}, not {priority!r}") from None
        if fast and headers is None and on_delivery is None:
            try:
                self._produce(topic, value, key, -1, dr)
            except (BufferError, KafkaException) as exc:
                self._send(topic, value, key, plan, None, None, exc)
                return
            self.counts.sent[plan.idx] += 1
            try:
                self._poll(0)
            except KafkaException as exc:
                self._on_poll_exception(exc)
            return
        delay = self._gate(plan, topic, value, key, headers, on_delivery)
        if delay is None:
            return
        if delay > 0:
            self._wait(delay)
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
        """`produce` for asyncio: delays and backoffs are awaited, serializers run in a thread."""
        if self._seen_version != self._source.version or _monotonic() > self._recheck_at:
            self._refresh()
        try:
            _, plan, _ = self._table[priority]
        except KeyError:
            raise ValueError(f"priority must be one of {PRIORITIES}, not {priority!r}") from None
        delay = self._gate(plan, topic, value, key, headers, on_delivery)
        if delay is None:
            return
        if delay > 0:
            await asyncio.sleep(delay)
        backoff = Backoff(self.retry, _monotonic())
        if self._key_serializer is not None or self._value_serializer is not None:
            while True:
                try:
                    key, value = await asyncio.to_thread(self._serialize, topic, key, value, headers)
                    break
                except _SerializationFailure as failure:
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
        """Apply circuits, staleness, observe counting, fail-closed topics and sheds.

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
            counts.failed[idx] += 1
            self._rejected_errors += 1
            raise TopicUnavailableError(
                f"topic {topic!r} fails every message ({blocked[1]}); failing closed",
                topic=topic,
                route=Route.PERMANENT_ALL,
            )
        if plan.shed:
            counts.shed[idx] += 1
            if self.on_shed == "dlq":
                self._accept_dead_letter(
                    DeadLetter(
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
                    ),
                    idx,
                    on_delivery or self._default_cb,
                    None,
                )
                return None
            raise ShedError(plan.priority, plan.zone, plan.epoch)
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
        """Serialize and enqueue with bounded backoff (blocking variant)."""
        backoff = Backoff(self.retry, _monotonic())
        if first_error is None and (self._key_serializer is not None or self._value_serializer is not None):
            while True:
                try:
                    key, value = self._serialize(topic, key, value, headers)
                    break
                except _SerializationFailure as failure:
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

    def _serialize(self, topic: str, key: Any, value: Any, headers: Any) -> tuple[Any, Any]:
        if self._key_serializer is not None:
            try:
                key = self._key_serializer(key, SerializationContext(topic, MessageField.KEY, headers))
            except Exception as exc:
                raise _SerializationFailure("key", exc) from exc
        if self._value_serializer is not None:
            try:
                value = self._value_serializer(value, SerializationContext(topic, MessageField.VALUE, headers))
            except Exception as exc:
                raise _SerializationFailure("value", exc) from exc
        return key, value

    def _serialization_failed(
        self,
        failure: _SerializationFailure,
        topic: str,
        value: Any,
        key: Any,
        plan: Plan,
        headers: Any,
        on_delivery: DeliveryCallback | None,
        backoff: Backoff,
    ) -> float | None:
        """Registry outage: the delay before retrying. Bad data: dead-letter (None) or raise."""
        idx = plan.idx
        code = KafkaError._KEY_SERIALIZATION if failure.field == "key" else KafkaError._VALUE_SERIALIZATION
        err = KafkaError(code, str(failure.cause))
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
        self._errors += 1
        self._accept_dead_letter(
            DeadLetter(
                topic=topic,
                partition=-1,
                key=key,
                value=value,
                priority=plan.priority,
                reason="serialization",
                error_name=err.name(),
                error_code=code,
                error_reason=f"{type(failure.cause).__name__}: {failure.cause}",
                attempts=backoff.attempts,
                original_headers=normalize_headers(headers),
            ),
            idx,
            on_delivery or self._default_cb,
            err,
        )
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
                hdrs = normalize_headers(headers) or None
                dr = functools.partial(self._on_report, idx, user_cb, 1, hdrs)
            try:
                self._produce(topic, value, key, -1, dr, None, 0, headers)
            except (BufferError, KafkaException) as exc:
                error = exc
            else:
                self.counts.sent[idx] += 1
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
            self._errors += 1
            self._accept_dead_letter(
                DeadLetter(
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
                    truncate_to=self._max_message_bytes // 2 if err.code() in _SIZE_ERRORS else None,
                ),
                idx,
                on_delivery or self._default_cb,
                err,
            )
            return None
        self._count_rejected(idx)
        if route is Route.PERMANENT_ALL and err is not None:
            self._block_topic(topic, err)
            raise TopicUnavailableError(
                f"topic {topic!r}: {err.str()}", topic=topic, route=route, error=err, attempts=backoff.attempts
            ) from error
        if route is Route.FATAL:
            self._recreate(err)
            raise FatalProducerError(
                f"fatal producer error, producer recreated: {err.str() if err else error}",
                topic=topic,
                route=route,
                error=err,
                attempts=backoff.attempts,
            ) from error
        if route is Route.PERMANENT_MESSAGE and err is None:
            raise error  # not a Kafka error (e.g. a TypeError for a bad value): the caller's bug
        raise PermanentMessageError(
            f"cannot produce to {topic!r}: {err.str() if err else error}",
            topic=topic,
            route=route,
            error=err,
            attempts=backoff.attempts,
        ) from error

    def _count_rejected(self, idx: int) -> None:
        self.counts.failed[idx] += 1
        self._rejected_errors += 1

    def _wait(self, seconds: float) -> None:
        """Sleep while serving delivery reports (frees queue space during backoff and delays)."""
        deadline = _monotonic() + seconds
        while True:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                return
            try:
                self._poll(remaining)
            except KafkaException as exc:
                self._on_poll_exception(exc)
                time.sleep(max(0.0, deadline - _monotonic()))
                return

    # ================================================================== plans and housekeeping

    def _refresh(self) -> None:
        """Rebuild the per-priority table; route queued failures; housekeeping. Slow path only."""
        with self._lock:
            if self._fatal_pending:
                self._recreate(None)
            if self._pending:
                self._drain()
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
            self._table = {
                p: (plan.passthrough and not slow, plan, self._drs[plan.idx]) for p, plan in planset.plans.items()
            }
            self._seen_version = view.version
            recheck = min(planset.recheck_at, now + _HOUSEKEEPING_S)
            if self._blocked:
                recheck = min(recheck, *(until for until, _ in self._blocked.values()))
            self._recheck_at = _NEG_INF if (self._closed or self._pending) else recheck
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
        attempts = sum(self.counts.sent) + self._direct_dlq + self._rejected_errors
        return attempts, self._errors + self._rejected_errors

    # ================================================================== delivery reports and routing

    def _on_report(
        self,
        idx: int,
        user_cb: DeliveryCallback | None,
        attempt: int,
        headers: list[tuple[str, str | bytes | None]] | None,
        err: KafkaError | None,
        msg: Message,
    ) -> None:
        """Delivery report of the main producer (inside its poll): successes go to the caller,
        failures are queued for routing once the poll returns."""
        if err is None:
            if user_cb is not None:
                _call_user(user_cb, None, msg)
            return
        self._pending.append(_Failure(idx, user_cb, attempt, headers, err, msg))
        self._recheck_at = _NEG_INF

    def _drain(self) -> None:
        """Route queued failures (never inside librdkafka's poll)."""
        with self._lock:
            while self._pending:
                failure = self._pending.popleft()
                self._errors += 1
                try:
                    self._route(failure)
                except Exception:  # a routing bug must not lose the message silently
                    log.exception("sluice: routing a failed message raised; reporting it failed")
                    self._report_failed(failure.idx, failure.user_cb, failure.err, failure.msg)

    def _route(self, f: _Failure) -> None:
        route = classify_delivery(f.err)
        topic = f.msg.topic() or ""
        if route is Route.TIMED_OUT:
            if self.on_timeout == "retry" and f.attempt < self.retry.max_attempts and self._resend(f):
                return
            if self.on_timeout in ("dlq", "retry") and self.dlq_topic is not None:
                self._dead_letter_failure(f, "timeout", maybe_delivered=True)
                return
        elif route is Route.PERMANENT_MESSAGE:
            if self.dlq_topic is not None:
                self._dead_letter_failure(f, "permanent", maybe_delivered=False)
                return
        elif route is Route.PERMANENT_ALL:
            self._block_topic(topic, f.err)
        elif route is Route.FATAL:
            self._fatal_pending = True
        self._report_failed(f.idx, f.user_cb, f.err, f.msg)

    def _resend(self, f: _Failure) -> bool:
        """at_least_once: produce a timed-out message again (it may already be written)."""
        dr = functools.partial(self._on_report, f.idx, f.user_cb, f.attempt + 1, f.headers)
        try:
            self._produce(f.msg.topic() or "", f.msg.value(), f.msg.key(), -1, dr, None, 0, f.headers)
        except BufferError:
            return False  # the queue is full: dead-letter or report instead of blocking here
        except KafkaException as exc:
            log.warning("sluice: re-sending a timed-out message failed: %s", exc)
            return False
        self.counts.retried[f.idx] += 1
        return True

    def _dead_letter_failure(self, f: _Failure, reason: Reason, *, maybe_delivered: bool) -> None:
        partition = f.msg.partition()
        self._enqueue_dead_letter(
            DeadLetter(
                topic=f.msg.topic() or "",
                partition=-1 if partition is None else partition,
                key=f.msg.key(),
                value=f.msg.value(),
                priority=PRIORITIES[f.idx],
                reason=reason,
                error_name=f.err.name(),
                error_code=f.err.code(),
                error_reason=f.err.str(),
                attempts=f.attempt,
                maybe_delivered=maybe_delivered,
                original_headers=list(f.headers or ()),
                truncate_to=self._max_message_bytes // 2 if f.err.code() in _SIZE_ERRORS else None,
            ),
            f.idx,
            f.user_cb,
            f.err,
        )

    def _accept_dead_letter(
        self, letter: DeadLetter, idx: int, user_cb: DeliveryCallback | None, err: KafkaError | None
    ) -> None:
        """A message accepted straight into the dead-letter path at produce time (shed, bad data)."""
        with self._lock:
            self._direct_dlq += 1
            self._enqueue_dead_letter(letter, idx, user_cb, err)

    def _enqueue_dead_letter(
        self, letter: DeadLetter, idx: int, user_cb: DeliveryCallback | None, err: KafkaError | None
    ) -> None:
        assert self.dlq_topic is not None
        dlq = self._dlq_producer()
        value, headers = letter.payload()
        dr = functools.partial(self._on_dlq_report, letter, idx, user_cb, err)
        backoff = Backoff(self.retry, _monotonic())
        while True:
            try:
                dlq.produce(self.dlq_topic, value, letter.key_bytes(), -1, dr, None, 0, headers)
                break
            except BufferError:
                wait = backoff.next_delay(_monotonic())
                if wait is None:
                    self._report_failed(idx, user_cb, err or KafkaError(KafkaError._QUEUE_FULL), _as_message(letter))
                    return
                self.counts.retried[idx] += 1
                dlq.poll(wait)
            except KafkaException as exc:
                log.error("sluice: dead-letter topic %r refused a message: %s", self.dlq_topic, exc)
                dlq_err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                self._report_failed(idx, user_cb, err or dlq_err or KafkaError(KafkaError._FAIL), _as_message(letter))
                return
        with contextlib.suppress(KafkaException):
            dlq.poll(0)

    def _on_dlq_report(
        self,
        letter: DeadLetter,
        idx: int,
        user_cb: DeliveryCallback | None,
        original: KafkaError | None,
        err: KafkaError | None,
        msg: Message,
    ) -> None:
        if err is None:
            self.counts.dead_lettered[idx] += 1
            if self._on_dead_letter is not None:
                try:
                    self._on_dead_letter(letter)
                except Exception:
                    log.exception("sluice: on_dead_letter callback raised")
            return
        log.error("sluice: dead letter to %r failed (%s); reporting the message failed", self.dlq_topic, err)
        self._report_failed(idx, user_cb, original or err, _as_message(letter))

    def _report_failed(self, idx: int, user_cb: DeliveryCallback | None, err: KafkaError, msg: Message) -> None:
        self.counts.failed[idx] += 1
        self._failed_accepted += 1
        if user_cb is not None:
            _call_user(user_cb, err, msg)
        else:
            log.warning("sluice: message to %r failed and no on_delivery was given: %s", msg.topic(), err)

    def _block_topic(self, topic: str, err: KafkaError) -> None:
        with self._lock:
            if topic not in self._blocked:
                log.error("sluice: %r fails every message (%s); failing closed for %.0fs", topic, err.name(),
                          self.fail_closed_seconds)
            self._blocked[topic] = (_monotonic() + self.fail_closed_seconds, err.name())
            self._recheck_at = _NEG_INF

    # ================================================================== the underlying producers

    def _dlq_producer(self) -> Producer:
        with self._lock:
            if self._dlq is None:
                conf = dict(self._conf)
                conf["delivery.report.only.error"] = False
                conf["client.id"] = f"{conf.get('client.id', 'sluice')}-dlq"
                self._dlq = Producer(conf)
            return self._dlq

    def _on_poll_exception(self, exc: KafkaException) -> None:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is not None and (err.fatal() or err.code() == KafkaError._FATAL):
            log.error("sluice: fatal producer error: %s; the producer will be recreated", err)
            self._fatal_pending = True
            self._recheck_at = _NEG_INF
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
            while len(old) and _monotonic() < deadline:
                with contextlib.suppress(KafkaException):
                    old.poll(0.05)
            self._producer = Producer(dict(self._conf))
            self._produce = self._producer.produce
            self._poll = self._producer.poll
            self._recreated += 1
            log.error("sluice: recreated the producer after a fatal error (%s)", err)
            self._recheck_at = _NEG_INF

    # ================================================================== public API

    def poll(self, timeout: float = 0) -> int:
        """Serve delivery reports (both producers) and route failures; returns events served."""
        try:
            served = self._poll(timeout)
        except KafkaException as exc:
            self._on_poll_exception(exc)
            served = 0
        if self._dlq is not None:
            with contextlib.suppress(KafkaException):
                served += self._dlq.poll(0)
        if self._pending:
            self._drain()
        return served

    def flush(self, timeout: float | None = None) -> int:
        """Wait for every accepted message to reach its outcome; returns how many are still in flight."""
        deadline = math.inf if timeout is None else _monotonic() + timeout
        while True:
            if self._fatal_pending:
                self._recreate(None)
            self._drain()
            remaining = deadline - _monotonic()
            step = max(0.0, min(remaining, 0.1))
            try:
                self._producer.flush(step)
            except KafkaException as exc:
                self._on_poll_exception(exc)
            if self._dlq is not None:
                with contextlib.suppress(KafkaException):
                    self._dlq.flush(step if len(self._producer) == 0 else 0)
            self._drain()
            left = self.in_flight
            if left == 0 or _monotonic() >= deadline:
                return left

    async def aflush(self, timeout: float | None = None) -> int:
        """`flush` for asyncio: polls without blocking the event loop."""
        deadline = math.inf if timeout is None else _monotonic() + timeout
        while True:
            self.poll(0)
            left = self.in_flight
            if left == 0 or _monotonic() >= deadline:
                return left
            await asyncio.sleep(0.01)

    def close(self, timeout: float = 10.0) -> int:
        """Flush, then purge and report failed whatever is still in flight; returns that count."""
        if self._closed:
            return self.unflushed
        left = self.flush(timeout)
        with self._lock:
            if left:
                log.warning("sluice: closing with %d message(s) in flight; reporting them failed", left)
                for producer in (self._producer, self._dlq):
                    if producer is not None:
                        with contextlib.suppress(KafkaException, RuntimeError):
                            producer.purge(True, True, False)
                self.flush(2.0)
                still = self.in_flight
                if still:
                    log.error("sluice: %d message(s) could not be accounted for at close", still)
            self._closed = True
            self._recheck_at = _NEG_INF
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
        """Accepted messages without an outcome yet (either producer's queue, or awaiting routing)."""
        dlq = len(self._dlq) if self._dlq is not None else 0
        return len(self._producer) + dlq + len(self._pending)

    def outcomes(self) -> Outcomes:
        """Where accepted messages are (exact after `flush`)."""
        with self._lock:
            accepted = sum(self.counts.sent) + self._direct_dlq
            dead = sum(self.counts.dead_lettered)
            in_flight = self.in_flight
            return Outcomes(
                accepted=accepted,
                delivered=accepted - dead - self._failed_accepted - in_flight,
                dead_lettered=dead,
                failed=self._failed_accepted,
                in_flight=in_flight,
            )

    def health(self) -> dict[str, Any]:
        """Decision freshness, circuit state, messages in flight and the recent error rate."""
        now = _monotonic()
        view = self._source.view()
        previous = self._planset
        probes = previous.probes if previous else None
        planset = build_plans(view, now, self.on_stale, policy=self.policy, probes=probes)
        rate = self._error_rate.rate(*self._attempts_and_errors())
        decision = view.decision
        healthy = (
            planset.circuit_state != "open"
            and planset.decision_status == "fresh"
            and rate <= self.error_rate_threshold
            and not self._closed
        )
        return {
            "healthy": healthy,
            "decision": {
                "source": view.description,
                "connected": view.connected,
                "status": planset.decision_status,
                "age_seconds": planset.decision_age,
                "ttl_seconds": decision.ttl if decision is not None else None,
                "epoch": planset.epoch,
                "enforcement": planset.enforcement,
                "stale": list(planset.stale),
                "errors": view.errors,
                "last_error": view.last_error,
            },
            "circuit": {"state": planset.circuit_state, "names": list(planset.circuit_names)},
            "in_flight": self.in_flight,
            "error_rate": rate,
            "error_rate_threshold": self.error_rate_threshold,
            "blocked_topics": sorted(t for t, (until, _) in self._blocked.items() if until > now),
            "producer_recreated": self._recreated,
            "closed": self._closed,
        }

    def _gauges(self) -> GaugeState:
        planset = self._planset
        view = self._source.view()
        now = _monotonic()
        age = view.decision.age(now) if view.decision is not None else None
        state = planset.circuit_state if planset is not None else "closed"
        return GaugeState(
            decision_age=age,
            circuit_state=CIRCUIT_GAUGE[state],
            applied_epoch=planset.epoch if planset is not None else -1,
            in_flight=self.in_flight,
            decision_errors=view.errors,
            recreated=self._recreated,
        )


def _call_user(cb: DeliveryCallback, err: KafkaError | None, msg: Message) -> None:
    try:
        cb(err, msg)
    except Exception:  # a raising callback must not break routing of other messages
        log.exception("sluice: on_delivery callback raised")


def _as_message(letter: DeadLetter) -> Message:
    """A Message describing the original (for on_delivery when the original one is not at hand)."""
    value, _ = letter.payload()
    return Message(topic=letter.topic, partition=letter.partition, key=letter.key_bytes(), value=value)
