"""The admission state machine, driven by hand with an injected clock: no Kafka, no sleeping.

Also the other pure pieces issue 10 touched: failure-log aggregation, staleness on arrival, the
librdkafka configuration the SDK derives, and header truncation in dead letters.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from sluice.admission import RECHECK_WAIT_S, Admission, Step
from sluice.callbacks import FailureLog, shield_conf_callbacks, shielded
from sluice.config import client_conf
from sluice.decision import to_json, utcnow
from sluice.dlq import H_HEADERS_TRUNCATED, DeadLetter
from sluice.errors import CircuitOpenError, ProducerClosedError, RetryBudgetExceededError
from sluice.metrics import Counts
from sluice.plan import Plan, build_plans
from sluice.retry import RetryPolicy
from sluice.sources.directory import DirectoryDecisions
from sluice.stale import track
from tests.support.sdk_helpers import make_circuit, make_decision


class FakeHost:
    """What an admission reads from a producer, as plain fields."""

    def __init__(self) -> None:
        self.counts = Counts()
        self.on_shed = "raise"
        self.dlq_topic: str | None = None
        self.retry = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02, deadline=1.0)
        self.serializing = False
        self.is_closed = False
        self.throttle = float("-inf")
        self.delays: list[float] = []
        self.rejected = 0

    def closed(self) -> bool:
        return self.is_closed

    def blocked(self, topic: str, now: float) -> str | None:
        return None

    def throttled_until(self) -> float:
        return self.throttle

    def truncation(self, err: KafkaError) -> int | None:
        return None

    def observe_delay(self, priority: str, seconds: float) -> None:
        self.delays.append(seconds)

    def count_rejected(self, idx: int) -> None:
        self.rejected += 1

    def block_topic(self, topic: str, err: KafkaError) -> None:
        pass

    def mark_fatal(self) -> None:
        pass


def _plan(delay_s: float = 0.0, **kwargs: object) -> Plan:
    return Plan(priority="medium", idx=1, delay_s=delay_s, **kwargs)  # type: ignore[arg-type]


def _run_waits(adm: Admission, step: Step, now: float, plans: dict[float, Plan]) -> float:
    """Drive WAIT steps like the blocking driver, handing over a rebuilt plan at the given times."""
    while step is Step.WAIT:
        now += adm.wait_s
        plan = adm.plan
        for at in sorted(plans):
            if at <= now:
                plan = plans.pop(at)
        step = adm.waited(now, plan)
    assert step is Step.ENQUEUE
    return now


def test_a_12s_delay_survives_plan_rebuilds_every_5s() -> None:
    """Issue 10 item 2: housekeeping rebuilds the plans every 5 s; the delay must stay 12 s, not 7."""
    host = FakeHost()
    adm = Admission(host, _plan(12.0), "t", b"v", None, None, None)
    # A rebuilt plan is a new object with the same content, then one with a new epoch.
    rebuilt = {5.0: _plan(12.0), 10.0: dataclasses.replace(_plan(12.0), epoch=2)}
    released = _run_waits(adm, adm.begin(0.0), 0.0, rebuilt)
    assert released == pytest.approx(12.0)
    assert host.counts.delayed == [0, 1, 0] and host.delays == [pytest.approx(12.0)]


def test_a_recheck_lengthens_or_shortens_from_the_first_wait() -> None:
    host = FakeHost()
    adm = Admission(host, _plan(1.0), "t", b"v", None, None, None)
    assert _run_waits(adm, adm.begin(0.0), 0.0, {0.5: _plan(3.0)}) == pytest.approx(3.0)  # lengthened
    adm = Admission(host, _plan(5.0), "t", b"v", None, None, None)
    assert _run_waits(adm, adm.begin(10.0), 10.0, {11.0: _plan(2.0)}) == pytest.approx(12.0)  # shortened
    assert host.counts.delayed == [0, 2, 0] and len(host.delays) == 2


def test_a_recheck_can_reject_a_waiting_message() -> None:
    host = FakeHost()
    adm = Admission(host, _plan(5.0), "t", b"v", None, None, None)
    step = adm.begin(0.0)
    assert step is Step.WAIT and adm.wait_s == pytest.approx(RECHECK_WAIT_S)
    with pytest.raises(CircuitOpenError):
        adm.waited(0.1, _plan(5.0, reject=("kafka", "open")))
    assert host.counts.rejected_open == [0, 1, 0] and host.delays == []


def test_the_delay_is_the_larger_of_decision_and_broker_throttle() -> None:
    host = FakeHost()
    host.throttle = 2.0
    adm = Admission(host, _plan(0.5), "t", b"v", None, None, None)
    assert _run_waits(adm, adm.begin(0.0), 0.0, {}) == pytest.approx(2.0)
    host.throttle = 0.3
    adm = Admission(host, _plan(0.0), "t", b"v", None, None, None)
    assert _run_waits(adm, adm.begin(0.0), 0.0, {}) == pytest.approx(0.3)
    assert host.counts.delayed == [0, 1, 0]  # a throttle alone is not a decision delay


def test_close_during_a_backoff_refuses_the_retry() -> None:
    host = FakeHost()
    adm = Admission(host, _plan(), "t", b"v", None, None, None)
    assert adm.begin(0.0) is Step.ENQUEUE
    assert adm.enqueue_failed(BufferError("full"), 0.0) is Step.WAIT
    host.is_closed = True
    with pytest.raises(ProducerClosedError):
        adm.waited(adm.wait_s, _plan())


def test_backoff_budget_spent_is_raised_with_the_attempts() -> None:
    host = FakeHost()
    adm = Admission(host, _plan(), "t", b"v", None, None, None)
    adm.begin(0.0)
    now = 0.0
    step = adm.enqueue_failed(BufferError("full"), now)
    with pytest.raises(RetryBudgetExceededError) as info:
        while step is Step.WAIT:
            now += adm.wait_s
            assert adm.waited(now, _plan()) is Step.ENQUEUE
            step = adm.enqueue_failed(BufferError("full"), now)
    assert info.value.attempts == 3 and host.counts.retried == [0, 2, 0]


# -- failure log ----------------------------------------------------------------------------------------


def test_failures_are_logged_once_per_topic_and_reason_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    flog = FailureLog(interval=10.0)
    with caplog.at_level(logging.WARNING, logger="sluice.producer"):
        for i in range(500):
            flog.note("orders", "_MSG_TIMED_OUT", now=i * 0.01)
        flog.note("orders", "UNKNOWN_TOPIC_OR_PART", now=1.0)
        flog.flush(now=6.0)  # the interval has not ended: nothing yet
        flog.flush(now=10.5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "499 more" in lines[-1] and "_MSG_TIMED_OUT" in lines[-1]


def test_a_raising_callback_is_shielded(caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise RuntimeError("user bug")

    with caplog.at_level(logging.ERROR, logger="sluice.producer"):
        assert shielded("error_cb", boom) is None
    assert "error_cb callback raised" in caplog.text


# -- staleness on arrival (max_clock_skew) ----------------------------------------------------------------


def test_expired_longer_ago_than_the_skew_is_stale_on_arrival() -> None:
    now = utcnow()
    doc = make_decision(ttl=60)
    old = doc.model_copy(update={"expires_at": now - timedelta(seconds=121)})
    assert not track(old, None, 0.0, "t", wall_now=now).is_fresh(0.0)
    within = doc.model_copy(update={"expires_at": now - timedelta(seconds=119)})
    assert track(within, None, 0.0, "t", wall_now=now).is_fresh(0.0)  # plausibly skew: arrival-relative
    assert track(old, None, 0.0, "t", wall_now=now, max_clock_skew=300).is_fresh(0.0)


# -- a vanished circuit.json ------------------------------------------------------------------------------


def test_a_deleted_circuit_file_keeps_the_open_circuit_until_it_goes_stale(tmp_path: Path) -> None:
    """Issue 10 item 8: rm + rewrite must not close an open circuit in between."""
    (tmp_path / "decision.json").write_text(to_json(make_decision()))
    (tmp_path / "circuit.json").write_text(to_json(make_circuit("kafka", "open", ttl=60)))
    source = DirectoryDecisions(tmp_path, start=False)
    (tmp_path / "circuit.json").unlink()
    source.poll_once()
    view = source.view()
    assert [c.doc.state for c in view.circuits] == ["open"] and view.errors == 1
    received = view.circuits[0].received_at
    assert build_plans(view, received + 1, "allow").circuit_state == "open"
    assert build_plans(view, received + 61, "allow").stale == ("circuit kafka",)  # then stale, like a decision


# -- configuration ---------------------------------------------------------------------------------------------


def test_the_topic_propagation_wait_is_set_below_the_message_timeout() -> None:
    conf = client_conf({"message.timeout.ms": 3000}, only_errors=True, own_callbacks={})
    assert conf["topic.metadata.propagation.max.ms"] == 1500
    assert client_conf({}, only_errors=True, own_callbacks={})["topic.metadata.propagation.max.ms"] == 30000
    with pytest.raises(ValueError):
        client_conf({"message.timeout.ms": 3000, "topic.metadata.propagation.max.ms": 3000},
                    only_errors=True, own_callbacks={})


def test_oversized_original_headers_are_cut_and_flagged() -> None:
    letter = DeadLetter(topic="t", partition=-1, key=b"k", value=b"v", priority="low", reason="permanent",
                        error_name="MSG_SIZE_TOO_LARGE", error_code=10, error_reason="too large", attempts=1,
                        original_headers=[("a", b"12345"), ("big", b"x" * 5000), ("after", b"y")],
                        headers_budget=1000)
    _, headers = letter.payload()
    as_dict = dict(headers)
    assert as_dict[H_HEADERS_TRUNCATED] == str(1 + 5 + 3 + 5000 + 5 + 1)
    assert as_dict["a"] == b"12345" and len(as_dict["big"] or b"") == 1000 - 6 - 3 and "after" not in as_dict


@pytest.mark.parametrize("name", ["error_cb", "throttle_cb", "stats_cb"])
def test_librdkafka_callbacks_in_conf_are_shielded_and_the_sdks_own_run_first(name: str) -> None:
    calls: list[str] = []

    def user(*_: object) -> None:
        calls.append("user")
        raise RuntimeError("user bug")

    conf: dict[str, object] = {name: user}
    shield_conf_callbacks(conf, {name: lambda *_: calls.append("sdk")})
    conf[name]("event")  # type: ignore[operator]
    assert calls == ["sdk", "user"]
