"""The machinery under `ThrottledProducer`: ticks, plan tables, housekeeping, broker throttles.

`ProducerCore` holds what the public class in ``sluice.producer`` runs on (the client and router
set-up too), so that module keeps only the public API and the two admission drivers. The
attributes the hot path reads (``_table``, ``_deadline``, ``_produce``, ``_sent``) live on the same
object, so splitting the code costs the hot path nothing.

`sluice.link.Link` is what the failure router and the admission state machine call back into.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import CollectorRegistry

from sluice.callbacks import FailureLog, inside_callback
from sluice.config import client_conf
from sluice.decision import PRIORITIES
from sluice.dlq import DeadLetter
from sluice.link import Link
from sluice.metrics import Counts, GaugeState, ProducerMetrics
from sluice.outcomes import ErrorRate
from sluice.pacing import Pacer
from sluice.plan import CIRCUIT_GAUGE, OnStale, Plan, PlanSet, build_plans
from sluice.retry import RetryPolicy
from sluice.routing import DeliveryCallback, Failure, FailureRouter, OnTimeout
from sluice.sources.base import DecisionSource

__all__ = ["ProducerCore"]

log = logging.getLogger("sluice.producer")

_monotonic = time.monotonic
NEG_INF = -math.inf
#: How often produce() serves delivery reports and looks for a new document version.
TICK_S = 0.001
#: Slow-path housekeeping (error-rate samples, fail-closed expiry, stale warnings) at least this often.
HOUSEKEEPING_S = 5.0
STALE_WARN_EVERY_S = 60.0
#: After a fatal error, how long the old producer's purge reports are served before it is replaced.
RECREATE_DRAIN_S = 5.0

Report = Callable[[KafkaError | None, Message], None]


class ProducerCore:
    """State and slow-path machinery shared by the public API and both drivers."""

    _source: DecisionSource
    _producer: Producer
    _produce: Callable[..., None]
    _poll: Callable[[float], int]
    _conf: dict[str, Any]
    _router: FailureRouter
    _drs: tuple[Report, ...]
    _default_cb: DeliveryCallback | None
    _key_serializer: Any
    _value_serializer: Any
    counts: Counts
    metrics: ProducerMetrics
    dlq_topic: str | None
    on_shed: str
    on_stale: OnStale
    policy: str | None
    fail_closed_seconds: float
    retry: RetryPolicy
    pacing_window_s: float
    pacing_max_wait_s: float
    delivery_reports: Literal["errors", "all"]
    on_timeout: OnTimeout

    def _init_core(self) -> None:
        self._lock = threading.RLock()
        self._blocked: dict[str, tuple[float, str]] = {}
        self._closed = False
        self._fatal_pending = False
        self._rejected_errors = 0
        self._recreated = 0
        self._error_rate = ErrorRate()
        self._failure_log = FailureLog()
        self._stale_warned: tuple[tuple[str, ...], float] = ((), NEG_INF)
        self._planset: PlanSet | None = None
        self._table: dict[str, tuple[Report | None, int, Plan]] = {}
        self._seen_version = -1
        self._recheck_at = NEG_INF
        self._deadline = NEG_INF
        self._throttle_until = NEG_INF
        self._throttle_total = 0.0
        self._throttle_last: tuple[str, float] | None = None
        self._link = Link(self)
        now = _monotonic()
        #: One token bucket per priority (DrainTime pacing), fed with the offered counters on ticks.
        self._pacers = tuple(Pacer(self.pacing_window_s, now) for _ in PRIORITIES)
        self._sample_at = NEG_INF

    def _init_client(
        self, conf: Mapping[str, Any], dlq_conf: Mapping[str, Any] | None,
        on_dead_letter: Callable[[DeadLetter], None] | None, metrics_registry: CollectorRegistry | None,
    ) -> None:
        """The librdkafka producer, the failure router with its DLQ producer, and the metrics."""
        self._default_cb: DeliveryCallback | None = conf.get("on_delivery")
        own = {"throttle_cb": self._link.on_throttle}
        self._conf = client_conf(conf, only_errors=self.delivery_reports == "errors", own_callbacks=own)
        self._producer = Producer(dict(self._conf))
        self._produce = self._producer.produce
        self._poll = self._producer.poll

        self.counts = Counts()
        self._sent = self.counts.fast_sent  # the passthrough path's one counter (sent and offered)
        client_id = f"{self._conf.get('client.id', 'sluice')}-dlq"
        dlq_full_conf = client_conf({**conf, "client.id": client_id, **(dlq_conf or {})}, only_errors=False,
                                    own_callbacks=own)
        self._router = FailureRouter(
            self._link,
            self.counts,
            dlq_topic=self.dlq_topic,
            dlq_conf=dlq_full_conf,
            on_timeout=self.on_timeout,
            retry=self.retry,
            max_message_bytes=int(self._conf.get("message.max.bytes", 1_000_000)),
            on_dead_letter=on_dead_letter,
            failure_log=self._failure_log,
        )
        self._drs = tuple(
            functools.partial(self._router.on_report, i, self._default_cb, 1, None) for i in range(len(PRIORITIES))
        )
        self.unflushed = 0
        self.metrics = ProducerMetrics(self.counts, self._gauges, metrics_registry, self._policy_labels)
        self._refresh()

    @property
    def serializing(self) -> bool:
        """Serializers are configured (every message takes the slow path)."""
        return self._key_serializer is not None or self._value_serializer is not None

    # ================================================================== ticks, plans, housekeeping

    def _tick(self) -> None:
        """At most every millisecond: serve delivery reports, route failures, pick up new documents.

        Not from inside a callback: that thread is already in a poll or in the routing loop.
        """
        if inside_callback():
            return
        self._serve()
        now = _monotonic()
        if now >= self._sample_at:
            self._sample_offered(now)
        if (
            self._router.pending
            or self._fatal_pending
            or self._closed
            or now > self._recheck_at
            or self._seen_version != self._source.version
        ):
            self._refresh()
        else:
            self._deadline = min(now + TICK_S, self._recheck_at)

    def _serve(self) -> None:
        """Serve both producers' queues (delivery reports, error and throttle events)."""
        try:
            self._poll(0)
        except KafkaException as exc:
            self._on_poll_exception(exc)
        self._router.poll(0)

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
            throttled = self._throttle_until > now
            slow = self._closed or self.serializing or bool(self._blocked) or throttled
            # dr is None where the plan needs the slow path.
            self._table = {
                p: (self._drs[plan.idx] if plan.passthrough and not slow else None, plan.idx, plan)
                for p, plan in planset.plans.items()
            }
            self._seen_version = view.version
            waits = [planset.recheck_at, now + HOUSEKEEPING_S, *(u for u, _ in self._blocked.values())]
            self._recheck_at = min(waits + ([self._throttle_until] if throttled else []))
            self._deadline = NEG_INF if (self._closed or self._router.pending) else min(now + TICK_S, self._recheck_at)
            self._error_rate.sample(now, *self._attempts_and_errors())
            self._failure_log.flush(now)
            self._warn_stale(planset, now)

    def _sample_offered(self, now: float) -> None:
        """Feed each pacer's rate estimator with its priority's offered counter (once per slot)."""
        offered = self.counts.offered
        for pacer, total in zip(self._pacers, offered, strict=True):
            pacer.observe(now, total)
        self._sample_at = now + self._pacers[0].estimator.slot_s

    def _entry(self, priority: str) -> tuple[Report | None, int, Plan]:
        """The admission table's entry for ``priority`` (tick first when the deadline has passed)."""
        if _monotonic() > self._deadline:
            self._tick()
        try:
            return self._table[priority]
        except KeyError:
            raise ValueError(f"priority must be one of {PRIORITIES}, not {priority!r}") from None

    def _current_plan(self, priority: str) -> Plan:
        """The plan in force for ``priority`` after a tick (picks up new documents)."""
        self._tick()
        return self._table[priority][2]

    def _warn_stale(self, planset: PlanSet, now: float) -> None:
        stale, last = self._stale_warned
        if not planset.stale:
            if stale:
                log.info("sluice: decisions fresh again")
                self._stale_warned = ((), NEG_INF)
            return
        if planset.stale != stale or now - last >= STALE_WARN_EVERY_S:
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

    def _wait(self, seconds: float) -> None:
        """Sleep while serving delivery reports (frees queue space during backoffs and delays)."""
        if inside_callback():  # polling again from inside a poll is not safe: just sleep
            time.sleep(seconds)
            return
        deadline = _monotonic() + seconds
        while (remaining := deadline - _monotonic()) > 0:
            try:
                self._poll(remaining)
            except KafkaException as exc:
                self._on_poll_exception(exc)
                time.sleep(max(0.0, deadline - _monotonic()))
                return

    # ================================================================== broker throttling (KIP-219)

    def _on_throttle(self, event: Any) -> None:
        """librdkafka's throttle_cb: hold messages back until the broker's throttle has passed."""
        seconds = float(getattr(event, "throttle_time", 0.0) or 0.0)
        if seconds <= 0:
            return
        now = _monotonic()
        until = now + seconds
        with self._lock:
            if until > self._throttle_until:
                self._throttle_total += until - max(self._throttle_until, now)
                self._throttle_until = until
            self._throttle_last = (str(getattr(event, "broker_name", "?")), seconds)
            self._recheck_at = self._deadline = NEG_INF

    def _throttle_health(self, now: float) -> dict[str, Any]:
        last = self._throttle_last
        return {
            "active": self._throttle_until > now,
            "remaining_seconds": max(0.0, self._throttle_until - now),
            "total_seconds": self._throttle_total,
            "last_broker": last[0] if last else None,
            "last_seconds": last[1] if last else None,
        }

    # ================================================================== router and admission hooks

    def _resend(self, failure: Failure) -> bool:
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

    def _block_topic(self, topic: str, err: KafkaError) -> None:
        """Fail closed: refuse the topic at produce time for ``fail_closed_seconds``."""
        with self._lock:
            if topic not in self._blocked:
                log.error("sluice: %r fails every message (%s); failing closed for %.0fs", topic, err.name(),
                          self.fail_closed_seconds)
            self._blocked[topic] = (_monotonic() + self.fail_closed_seconds, err.name())
            self._recheck_at = self._deadline = NEG_INF

    def _mark_fatal(self) -> None:
        """Recreate the main producer at the next opportunity."""
        self._fatal_pending = True
        self._deadline = NEG_INF

    def _wake(self) -> None:
        """Route queued failures at the next produce call."""
        self._deadline = NEG_INF

    def _count_rejected(self, idx: int) -> None:
        self.counts.failed[idx] += 1
        self._rejected_errors += 1

    # ================================================================== the underlying producer

    def _on_poll_exception(self, exc: KafkaException) -> None:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is not None and (err.fatal() or err.code() == KafkaError._FATAL):
            log.error("sluice: fatal producer error: %s; the producer will be recreated", err)
            self._mark_fatal()
            return
        raise exc

    def _recreate(self, err: KafkaError | None) -> None:
        """Replace the main producer after a fatal error; its queued messages are reported."""
        with self._lock:
            self._fatal_pending = False
            old = self._producer
            with contextlib.suppress(KafkaException, RuntimeError):
                old.purge(True, True, False)
            deadline = _monotonic() + RECREATE_DRAIN_S
            while len(old) and _monotonic() < deadline:  # serve the purge reports: failures to route
                with contextlib.suppress(KafkaException):
                    old.poll(0.05)
            self._producer = Producer(dict(self._conf))
            self._produce = self._producer.produce
            self._poll = self._producer.poll
            self._recreated += 1
            log.error("sluice: recreated the producer after a fatal error (%s)", err)
            self._recheck_at = self._deadline = NEG_INF

    def _in_flight_now(self) -> int:
        """Messages (and, until the next poll, librdkafka events) in either producer or in routing."""
        return len(self._producer) + self._router.in_flight

    def _gauges(self) -> GaugeState:
        planset = self._planset
        view = self._source.view()
        state = planset.circuit_state if planset is not None else "closed"
        policy = self._policy_labels(view)
        return GaugeState(
            decision_age=view.decision.age(_monotonic()) if view.decision is not None else None,
            circuit_state=CIRCUIT_GAUGE[state],
            applied_epoch=planset.epoch if planset is not None else -1,
            in_flight=self._in_flight_now(),
            decision_errors=view.errors,
            recreated=self._recreated,
            broker_throttle_seconds=self._throttle_total,
            policy_namespace=policy[0],
            policy_name=policy[1],
        )

    def _policy_labels(self, view: Any = None) -> tuple[str, str]:
        """(namespace, name) of the policy whose decision applies: the document's, else ``policy=``."""
        tracked = (view if view is not None else self._source.view()).decision
        doc = tracked.doc if tracked is not None else None
        if doc is not None:
            return doc.policy.namespace, doc.policy.name
        configured = getattr(self, "policy", None)
        if configured:
            namespace, _, name = str(configured).partition("/")
            return namespace, name
        return "", ""
