"""Routing of failed messages: dead-letter, re-send (at-least-once) or report, exactly once each.

librdkafka serves delivery reports inside ``poll()``, where producing again is unsafe (a full queue
could only be relieved by polling, re-entrantly). So `FailureRouter.on_report` only queues a failed
message; `FailureRouter.drain` routes the queue after the poll returned. Dead letters go through a
second producer that reports every delivery (the main one reports failures only, for speed), so a
message counts as *dead-lettered* only once its dead letter is acknowledged, and as failed or in
doubt if that write fails too. Together with the producer's own counters this keeps the invariant:
every accepted message ends in exactly one of delivered, dead-lettered, failed or in doubt.

`drain` is iterative and not re-entrant: a caller's ``on_delivery`` that produces again (a common
retry pattern) only adds to the queue the running drain is emptying, never a nested drain. A
failure taken off the queue stays counted in `FailureRouter.in_flight` until it has an outcome, and
a routing error reports it rather than dropping it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from sluice.callbacks import FailureLog, shielded
from sluice.classify import Route, classify_delivery, in_doubt
from sluice.decision import PRIORITIES
from sluice.dlq import DeadLetter, Header, Reason
from sluice.metrics import Counts
from sluice.retry import Backoff, RetryPolicy

__all__ = ["DeliveryCallback", "Failure", "FailureRouter", "RouterHost", "call_user"]

log = logging.getLogger("sluice.producer")

DeliveryCallback = Callable[[KafkaError | None, Message], None]
OnTimeout = Literal["dlq", "retry", "report"]
SIZE_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})


@dataclass(slots=True)
class Failure:
    """A failed delivery report waiting to be routed outside librdkafka's poll."""

    idx: int
    user_cb: DeliveryCallback | None
    attempt: int
    headers: list[Header] | None
    err: KafkaError
    msg: Message
    #: set once the failure has an outcome (or has been handed on: re-sent, dead letter queued)
    settled: bool = False


class RouterHost(Protocol):
    """What the router needs from the producer that owns it (a private link, not its public API)."""

    def resend(self, failure: Failure) -> bool:
        """Produce a timed-out message again (at-least-once); False when it could not be enqueued."""

    def block_topic(self, topic: str, err: KafkaError) -> None:
        """Fail closed for a topic that fails every message."""

    def mark_fatal(self) -> None:
        """The main producer must be recreated."""

    def wake(self) -> None:
        """Make the next produce() call take the slow path (to drain the queue)."""


class FailureRouter:
    """Queues failed delivery reports and routes them; owns the dead-letter producer."""

    def __init__(
        self,
        host: RouterHost,
        counts: Counts,
        *,
        dlq_topic: str | None,
        dlq_conf: Mapping[str, Any],
        on_timeout: OnTimeout,
        retry: RetryPolicy,
        max_message_bytes: int,
        on_dead_letter: Callable[[DeadLetter], None] | None,
        failure_log: FailureLog,
    ) -> None:
        self._host = host
        self._counts = counts
        self.dlq_topic = dlq_topic
        self.on_timeout: OnTimeout = on_timeout
        self._retry = retry
        self._max_message_bytes = max_message_bytes
        self._on_dead_letter = on_dead_letter
        self._failure_log = failure_log
        self._lock = threading.RLock()
        self._drain_lock = threading.Lock()
        self.pending: collections.deque[Failure] = collections.deque()
        #: failures taken off `pending` and not settled yet
        self.routing = 0
        self.dlq: Producer | None = None
        if dlq_topic is not None:
            # Built now, so a bad dlq_conf fails the constructor instead of the first shed.
            conf = dict(dlq_conf)
            conf["delivery.report.only.error"] = False  # the SDK must see each dead letter land
            try:
                self.dlq = Producer(conf)
            except (KafkaException, TypeError, ValueError) as exc:
                raise ValueError(f"invalid dead-letter producer configuration (dlq_conf): {exc}") from exc
        #: accepted at produce time straight into the dead-letter path (shed, bad data)
        self.direct = 0
        #: accepted messages reported failed (known not written)
        self.failed = 0
        #: accepted messages reported in doubt (may have been written)
        self.in_doubt = 0
        #: delivery failures of accepted messages (for the error rate)
        self.errors = 0

    # -- inside librdkafka's poll ---------------------------------------------------------------

    def on_report(
        self,
        idx: int,
        user_cb: DeliveryCallback | None,
        attempt: int,
        headers: list[Header] | None,
        err: KafkaError | None,
        msg: Message,
    ) -> None:
        """Delivery report of the main producer: successes go to the caller, failures are queued."""
        if err is None:
            if user_cb is not None:
                call_user(user_cb, None, msg)
            return
        self.pending.append(Failure(idx, user_cb, attempt, headers, err, msg))
        self._host.wake()

    # -- outside it --------------------------------------------------------------------------------

    def drain(self) -> None:
        """Route every queued failure; a nested call (from a callback) returns at once."""
        if not self._drain_lock.acquire(blocking=False):
            return  # another drain (maybe our caller's) is emptying the queue
        try:
            while True:
                try:
                    failure = self.pending.popleft()
                except IndexError:
                    return
                self.routing += 1
                self.errors += 1
                try:
                    self._route(failure)
                except Exception:  # a routing bug must not lose the message silently
                    log.exception("sluice: routing a failed message raised; reporting it")
                    if not failure.settled:
                        self.report(failure.idx, failure.user_cb, failure.err, failure.msg)
                except BaseException:
                    if not failure.settled:  # KeyboardInterrupt and the like: keep it for the next drain
                        self.pending.appendleft(failure)
                        self.errors -= 1
                    raise
                finally:
                    self.routing -= 1
        finally:
            self._drain_lock.release()

    def _route(self, f: Failure) -> None:
        route = classify_delivery(f.err)
        if route is Route.TIMED_OUT:
            if self.on_timeout == "retry" and f.attempt < self._retry.max_attempts and self._host.resend(f):
                f.settled = True
                self._counts.retried[f.idx] += 1
                return
            if self.on_timeout != "report" and self.dlq_topic is not None:
                self._dead_letter_failure(f, "timeout", maybe_delivered=True)
                return
        elif route is Route.PERMANENT_MESSAGE:
            if self.dlq_topic is not None:
                self._dead_letter_failure(f, "permanent", maybe_delivered=False)
                return
        elif route is Route.PERMANENT_ALL:
            self._host.block_topic(f.msg.topic() or "", f.err)
        elif route is Route.FATAL:
            self._host.mark_fatal()
        f.settled = True
        self.report(f.idx, f.user_cb, f.err, f.msg)

    def _dead_letter_failure(self, f: Failure, reason: Reason, *, maybe_delivered: bool) -> None:
        partition = f.msg.partition()
        letter = DeadLetter(
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
            truncate_to=self.truncation(f.err),
        )
        f.settled = True
        self._enqueue(letter, f.idx, f.user_cb, f.err)

    def truncation(self, err: KafkaError) -> int | None:
        """A value rejected for its size would be rejected again in the DLQ: keep half the limit."""
        return self._max_message_bytes // 2 if err.code() in SIZE_ERRORS else None

    @property
    def headers_budget(self) -> int:
        """Room for the original's own headers in a dead letter: a quarter of ``message.max.bytes``."""
        return self._max_message_bytes // 4

    def accept(self, letter: DeadLetter, idx: int, user_cb: DeliveryCallback | None, err: KafkaError | None) -> None:
        """A message accepted at produce time straight into the dead-letter path (shed, bad data)."""
        with self._lock:
            self.direct += 1
            if err is not None:
                self.errors += 1
            self._enqueue(letter, idx, user_cb, err)

    def _enqueue(self, letter: DeadLetter, idx: int, user_cb: DeliveryCallback | None, err: KafkaError | None) -> None:
        assert self.dlq_topic is not None and self.dlq is not None
        dlq = self.dlq
        letter.headers_budget = self.headers_budget
        value, headers = letter.payload()
        dr = functools.partial(self._on_dlq_report, letter, idx, user_cb, err)
        backoff = Backoff(self._retry, time.monotonic())
        while True:
            try:
                dlq.produce(self.dlq_topic, value, letter.key_bytes(), -1, dr, None, 0, headers)
                break
            except BufferError:
                wait = backoff.next_delay(time.monotonic())
                if wait is None:
                    self.report(idx, user_cb, err or KafkaError(KafkaError._QUEUE_FULL), as_message(letter))
                    return
                self._counts.retried[idx] += 1
                dlq.poll(wait)
            except KafkaException as exc:
                log.error("sluice: dead-letter topic %r refused a message: %s", self.dlq_topic, exc)
                dlq_err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                self.report(idx, user_cb, err or dlq_err or KafkaError(KafkaError._FAIL), as_message(letter))
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
            self._counts.dead_lettered[idx] += 1
            if self._on_dead_letter is not None:
                shielded("on_dead_letter", self._on_dead_letter, letter)
            return
        self._failure_log.note(str(self.dlq_topic), f"dead letter: {err.name()}", time.monotonic())
        # A dead letter that timed out or was purged in flight may have been written: the message is
        # in doubt, not failed (it may sit in the DLQ). Otherwise the original error says why it failed.
        self.report(idx, user_cb, err if in_doubt(err) else (original or err), as_message(letter))

    def report(self, idx: int, user_cb: DeliveryCallback | None, err: KafkaError, msg: Message) -> None:
        """The accepted message's final outcome is *failed* or *in doubt* (by ``err``): tell the caller."""
        if in_doubt(err):
            self._counts.in_doubt[idx] += 1
            self.in_doubt += 1
        else:
            self._counts.failed[idx] += 1
            self.failed += 1
        if user_cb is not None:
            call_user(user_cb, err, msg)
        else:
            self._failure_log.note(msg.topic() or "", err.name(), time.monotonic())

    # -- the dead-letter producer ----------------------------------------------------------------

    def poll(self, timeout: float = 0) -> int:
        """Serve the dead-letter producer's delivery reports."""
        if self.dlq is None:
            return 0
        with contextlib.suppress(KafkaException):
            return self.dlq.poll(timeout)
        return 0

    def flush(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for dead letters to be acknowledged."""
        if self.dlq is not None:
            with contextlib.suppress(KafkaException):
                self.dlq.flush(timeout)

    def purge(self) -> None:
        """Abandon queued dead letters (their messages are then reported failed)."""
        if self.dlq is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                self.dlq.purge(True, True, False)

    @property
    def in_flight(self) -> int:
        """Failures awaiting routing or being routed, plus dead letters awaiting acknowledgement."""
        return len(self.pending) + self.routing + (len(self.dlq) if self.dlq is not None else 0)


def call_user(cb: DeliveryCallback, err: KafkaError | None, msg: Message) -> None:
    """Call the caller's on_delivery; a raising callback must not break routing of other messages."""
    shielded("on_delivery", cb, err, msg)


def as_message(letter: DeadLetter) -> Message:
    """A Message describing the original (for on_delivery when the original one is not at hand)."""
    value, _ = letter.payload()
    return Message(topic=letter.topic, partition=letter.partition, key=letter.key_bytes(), value=value)
