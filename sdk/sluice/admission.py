"""One message's way into librdkafka, as a state machine that does no I/O.

`Admission` decides and the producer's drivers act: a blocking one for ``produce()`` and an
asyncio one for ``aproduce()``, the shape tenacity (``BaseRetrying.iter`` driven by ``Retrying`` and
``AsyncRetrying``) and httpx (``auth_flow`` driven by sync and async flows) use. Each method takes
what just happened (the time, the plan now in force, an exception) and returns the next `Step`:

``WAIT``         sleep ``wait_s`` seconds (serving delivery reports), then call `Admission.waited`;
``SERIALIZE``    run the serializers, then `serialized` or `serialize_failed`;
``ENQUEUE``      hand the message to librdkafka, then `enqueued` or `enqueue_failed`;
``DEAD_LETTER``  hand ``letter`` to the dead-letter path (a shed, data that can never be produced);
``DONE``         accepted.

Refusals (open circuit, shed with ``on_shed="raise"``, stale, closed, budget spent, no pacing token
in time) are raised from the method that finds them: the message was not accepted.

Every admission counts one offered call (``sluice_producer_offered_total``) when it is created.

A delay is measured once, from the moment the message first had to wait, and is the larger of the
decision's delay and a broker's throttle. A re-check after each wait slice can lengthen it, shorten
it, shed or reject the message; it never restarts the delay, and the message is counted in
``delayed`` and in the delay histogram once.

DrainTime pacing (a plan with ``admit_ratio < 1``, `sluice.pacing`) comes after the delay: the
message needs a token from its priority's bucket. With ``excess="shed"`` a message that finds none is
shed like a zone shed (counted in ``shed`` and in ``paced{action="shed"}``). With ``excess="wait"`` it
takes a ticket and waits for its token in slices of at most `RECHECK_WAIT_S`, re-checking the plan
after each like a delay does (a circuit that opens rejects it, a new ratio applies, pacing that ends
lets it go); it is counted in ``paced{action="wait"}`` once, and after ``pacing_max_wait_s`` it gives
its ticket back and is refused with `PacedError` (counted in ``rejected_paced``). A message that is
refused or abandoned while it holds a ticket gives it back (`Admission.abandon`).
"""

from __future__ import annotations

import enum
from typing import Any

from confluent_kafka import KafkaError

from sluice.admission_host import AdmissionHost
from sluice.classify import Route, classify_exception, classify_serialization
from sluice.dlq import DeadLetter, Reason, normalize_headers
from sluice.errors import (
    CircuitOpenError,
    FatalProducerError,
    PacedError,
    PermanentMessageError,
    ProducerClosedError,
    RetryBudgetExceededError,
    ShedError,
    StaleDecisionError,
    TopicUnavailableError,
)
from sluice.plan import Plan, Probe
from sluice.retry import Backoff
from sluice.routing import DeliveryCallback
from sluice.serde import SerializationFailure

__all__ = ["RECHECK_WAIT_S", "Admission", "AdmissionHost", "Step"]

#: While a message waits out a delay, re-check the decision this often (a circuit may open).
RECHECK_WAIT_S = 0.1


class Step(enum.Enum):
    """What the driver does next."""

    WAIT = "wait"
    SERIALIZE = "serialize"
    ENQUEUE = "enqueue"
    DEAD_LETTER = "dead-letter"
    DONE = "done"


class Admission:
    """The state of one message between ``produce()`` and librdkafka's queue."""

    __slots__ = (
        "_backoff", "_delay_counted", "_delay_observed", "_host", "_pace_counted", "_pace_start", "_phase",
        "_probe", "_ticket", "_wait_start", "headers", "key", "letter", "letter_err", "plan", "topic", "user_cb",
        "value", "wait_s",
    )

    def __init__(
        self, host: AdmissionHost, plan: Plan, topic: str, value: Any, key: Any, headers: Any,
        user_cb: DeliveryCallback | None,
    ) -> None:
        self._host = host
        self.plan = plan
        self.topic, self.value, self.key, self.headers, self.user_cb = topic, value, key, headers, user_cb
        self.wait_s = 0.0
        self.letter: DeadLetter | None = None
        self.letter_err: KafkaError | None = None
        self._phase = Step.WAIT  # WAIT: still gated by the decision; then SERIALIZE or ENQUEUE
        self._wait_start: float | None = None
        self._delay_counted = False
        self._delay_observed = False
        self._probe: Probe | None = None
        self._backoff: Backoff | None = None
        self._ticket: int | None = None  # a pacing ticket this message holds
        self._pace_start = 0.0
        self._pace_counted = False
        host.counts.slow_offered[plan.idx] += 1

    # -- the decision, and waiting it out -----------------------------------------------------------

    def begin(self, now: float) -> Step:
        """Apply the plan: refuse, dead-letter, wait, or go on."""
        if self._gate(now, first=True):
            return Step.DEAD_LETTER
        return self._schedule(now)

    def waited(self, now: float, plan: Plan) -> Step:
        """A wait ended; ``plan`` is the one in force now."""
        try:
            if self._host.closed():
                raise ProducerClosedError("producer is closed")
            if self._phase is not Step.WAIT:
                return self._phase  # a backoff ended: try the same step again
            if plan != self.plan:
                self.plan = plan
                if self._gate(now, first=False):
                    self.abandon(now)
                    return Step.DEAD_LETTER
            return self._schedule(now)
        except BaseException:
            self.abandon(now)
            raise

    def abandon(self, now: float) -> None:
        """The message will not go on (refused, cancelled): give back a pacing ticket it holds."""
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            idx = self.plan.idx
            self._host.pacer(idx).cancel(ticket, now, self.plan.admit_ratio, self._host.counts.offered_of(idx))

    def _schedule(self, now: float) -> Step:
        plan, host = self.plan, self._host
        start = now if self._wait_start is None else self._wait_start
        release = max(start + plan.delay_s, host.throttled_until())
        if plan.delay_s > 0 and not self._delay_counted and release > now:
            self._delay_counted = True
            host.counts.delayed[plan.idx] += 1
        if release > now:
            self._wait_start = start
            self.wait_s = min(release - now, RECHECK_WAIT_S)
            return Step.WAIT
        if self._delay_counted and not self._delay_observed:
            self._delay_observed = True
            host.observe_delay(plan.priority, max(0.0, release - start))
        if plan.paced or self._ticket is not None:
            step = self._pace(now)
            if step is not None:
                return step
        self._phase = Step.SERIALIZE if host.serializing else Step.ENQUEUE
        return self._phase

    def _pace(self, now: float) -> Step | None:
        """A token, or what to do without one (None: go on)."""
        plan, host = self.plan, self._host
        idx, ratio = plan.idx, plan.admit_ratio
        pacer, total = host.pacer(idx), host.counts.offered_of(idx)
        if not plan.paced:  # pacing ended while this message waited
            self.abandon(now)
            return None
        if self._ticket is None:
            if plan.excess == "shed":
                return None if pacer.try_take(now, ratio, total) else self._pace_shed()
            self._ticket = pacer.reserve(now, ratio, total)
            self._pace_start = now
        wait = pacer.wait_for(self._ticket, now, ratio, total)
        if wait <= 0:
            self._ticket = None  # its token is used
            return None
        if plan.excess == "shed":  # the decision turned this priority to shedding while it waited
            self.abandon(now)
            return self._pace_shed()
        if not self._pace_counted:
            self._pace_counted = True
            host.counts.paced["wait"][idx] += 1
        remaining = self._pace_start + host.pacing_max_wait_s - now
        if remaining <= 0:
            self.abandon(now)
            host.counts.rejected_paced[idx] += 1
            raise PacedError(plan.priority, now - self._pace_start, ratio, plan.epoch)
        self.wait_s = min(wait, RECHECK_WAIT_S, remaining)
        return Step.WAIT

    def _pace_shed(self) -> Step:
        """No token and ``excess="shed"``: shed as a zone shed does."""
        plan, host = self.plan, self._host
        host.counts.shed[plan.idx] += 1
        host.counts.paced["shed"][plan.idx] += 1
        if host.on_shed == "raise":
            raise ShedError(plan.priority, plan.zone, plan.epoch, paced=True)
        text = f"shed by pacing (admitRatio {plan.admit_ratio:g}, decision epoch {plan.epoch})"
        self._dead_letter("shed", "SLUICE_SHED", 0, text, None)
        return Step.DEAD_LETTER

    def _gate(self, now: float, *, first: bool) -> bool:
        """Circuits, staleness, Observe counting, fail-closed topics and sheds, in that order.

        True when the message goes to the dead-letter path (a shed with ``on_shed="dlq"``).
        """
        host, plan = self._host, self.plan
        counts, idx = host.counts, plan.idx
        if host.closed():
            raise ProducerClosedError("producer is closed")
        if plan.stale_block is not None:
            counts.rejected_stale[idx] += 1
            raise StaleDecisionError(plan.stale_block, plan.stale_age)
        if plan.reject is not None:
            counts.rejected_open[idx] += 1
            raise CircuitOpenError(plan.reject[0], plan.reject[1], plan.priority)
        if plan.probe is not None and plan.probe is not self._probe:  # one probe slot per half-open circuit
            self._probe = plan.probe
            if not plan.probe.admit():
                counts.rejected_open[idx] += 1
                raise CircuitOpenError(plan.probe.circuit, "half-open", plan.priority)
        if first:
            for action in plan.observe:
                counts.observed[action][idx] += 1
            if plan.observe_probe is not None and not plan.observe_probe.admit():
                counts.observed["reject_open"][idx] += 1
        reason = host.blocked(self.topic, now)
        if reason is not None:
            host.count_rejected(idx)
            raise TopicUnavailableError(
                f"topic {self.topic!r} fails every message ({reason}); failing closed",
                topic=self.topic,
                route=Route.PERMANENT_ALL,
            )
        if not plan.shed:
            return False
        counts.shed[idx] += 1
        if host.on_shed == "raise":
            raise ShedError(plan.priority, plan.zone, plan.epoch)
        self._dead_letter("shed", "SLUICE_SHED", 0, f"shed by decision epoch {plan.epoch} (zone {plan.zone})", None)
        return True

    # -- serialization ---------------------------------------------------------------------------------

    def serialized(self, key: Any, value: Any) -> Step:
        """The serializers succeeded."""
        self.key, self.value = key, value
        self._phase = Step.ENQUEUE
        return Step.ENQUEUE

    def serialize_failed(self, failure: SerializationFailure, now: float) -> Step:
        """A registry outage backs off; data the schema rejects is dead-lettered or raised."""
        err = failure.kafka_error()
        if classify_serialization(failure.cause) is Route.TRANSIENT:
            if self._retry(now):
                return Step.WAIT
            attempts = self._attempts
            raise RetryBudgetExceededError(
                f"serializer kept failing (registry unavailable?) after {attempts} attempts: {failure.cause}",
                topic=self.topic, route=Route.TRANSIENT, error=err, attempts=attempts,
            ) from failure.cause
        if not self._host_has_dlq():
            self._host.count_rejected(self.plan.idx)
            raise PermanentMessageError(
                str(failure), topic=self.topic, route=Route.PERMANENT_MESSAGE, error=err
            ) from failure.cause
        self._dead_letter("serialization", err.name(), failure.code, err.str(), err)
        return Step.DEAD_LETTER

    # -- librdkafka's queue ------------------------------------------------------------------------------

    def enqueued(self) -> Step:
        """librdkafka took the message: it is accepted."""
        self._host.counts.slow_sent[self.plan.idx] += 1
        return Step.DONE

    def enqueue_failed(self, error: BaseException, now: float) -> Step:
        """``Producer.produce`` raised: back off, dead-letter, or refuse."""
        self._phase = Step.ENQUEUE
        route, err = classify_exception(error)
        topic, host = self.topic, self._host
        if route in (Route.BACKPRESSURE, Route.TRANSIENT):
            if self._retry(now):
                return Step.WAIT
            attempts = self._attempts
            raise RetryBudgetExceededError(
                f"could not enqueue to {topic!r} after {attempts} attempts: {error}",
                topic=topic, route=route, error=err, attempts=attempts,
            ) from error
        if route is Route.PERMANENT_MESSAGE and err is not None and self._host_has_dlq():
            self._dead_letter("permanent", err.name(), err.code(), err.str(), err, host.truncation(err))
            return Step.DEAD_LETTER
        if route is Route.PERMANENT_MESSAGE and err is None:
            raise error  # not a Kafka error (e.g. a TypeError for a dict value): the caller's bug
        host.count_rejected(self.plan.idx)
        text = err.str() if err is not None else str(error)
        if route is Route.PERMANENT_ALL and err is not None:
            host.block_topic(topic, err)
            raise TopicUnavailableError(
                f"topic {topic!r}: {text}", topic=topic, route=route, error=err, attempts=self._attempts
            ) from error
        if route is Route.FATAL:
            host.mark_fatal()
            raise FatalProducerError(
                f"fatal producer error, the producer is being recreated: {text}",
                topic=topic, route=route, error=err, attempts=self._attempts,
            ) from error
        raise PermanentMessageError(
            f"cannot produce to {topic!r}: {text}", topic=topic, route=route, error=err, attempts=self._attempts
        ) from error

    # -- helpers ----------------------------------------------------------------------------------------

    @property
    def _attempts(self) -> int:
        return self._backoff.attempts if self._backoff is not None else 1

    def _retry(self, now: float) -> bool:
        """Schedule a retry after a backoff (True), or count the refusal when the budget is spent."""
        if self._backoff is None:
            self._backoff = Backoff(self._host.retry, now)
        wait = self._backoff.next_delay(now)
        if wait is None:
            self._host.count_rejected(self.plan.idx)
            return False
        self._host.counts.retried[self.plan.idx] += 1
        self.wait_s = wait
        return True

    def _host_has_dlq(self) -> bool:
        return self._host.dlq_topic is not None

    def _dead_letter(
        self, reason: Reason, name: str, code: int, text: str, err: KafkaError | None, truncate_to: int | None = None
    ) -> None:
        self.letter = DeadLetter(
            topic=self.topic,
            partition=-1,
            key=self.key,
            value=self.value,
            priority=self.plan.priority,
            reason=reason,
            error_name=name,
            error_code=code,
            error_reason=text,
            attempts=self._attempts if reason != "shed" else 0,
            original_headers=normalize_headers(self.headers),
            truncate_to=truncate_to,
        )
        self.letter_err = err
