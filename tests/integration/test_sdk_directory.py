"""A running producer whose decisions change underneath it, read from a kubelet-style ConfigMap volume."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sluice import CircuitOpenError, DirectoryDecisions, ShedError, ThrottledProducer
from sluice.decision import to_json
from tests.support.sdk_helpers import InProcessKafka, consume, kubelet_write, make_circuit, make_decision


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def test_decisions_swapped_by_the_kubelet_apply_to_a_running_producer(tmp_path: Path) -> None:
    volume = tmp_path / "sluice-decision"
    kubelet_write(volume, {"decision.json": to_json(make_decision(epoch=1))})
    with (
        InProcessKafka() as kafka,
        DirectoryDecisions(volume, poll_interval=0.02) as source,
        ThrottledProducer({"bootstrap.servers": kafka.bootstrap_servers}, source) as producer,
    ):
        producer.produce("orders", b"green-low", priority="low")

        # The operator turns red: low priority is shed, medium delayed.
        kubelet_write(volume, {"decision.json": to_json(
            make_decision(epoch=2, zone="red", shed=("low",), delay_ms={"high": 0, "medium": 150, "low": 0}))})

        def shed_now() -> bool:
            try:
                producer.produce("orders", b"maybe", priority="low")
            except ShedError:
                return True
            return False

        assert _eventually(shed_now)
        assert producer.health()["decision"]["epoch"] == 2
        start = time.monotonic()
        producer.produce("orders", b"delayed", priority="medium")
        assert time.monotonic() - start >= 0.15

        # A CircuitBreaker key appears in the same ConfigMap, open.
        kubelet_write(volume, {"decision.json": to_json(make_decision(epoch=3)),
                               "circuit.json": to_json(make_circuit("brokers", "open"))})

        def rejected() -> bool:
            try:
                producer.produce("orders", b"maybe", priority="high")
            except CircuitOpenError:
                return True
            return False

        assert _eventually(rejected)

        # Back to green: the circuit key is removed, everything flows.
        kubelet_write(volume, {"decision.json": to_json(make_decision(epoch=4))})
        assert _eventually(lambda: producer.health()["circuit"]["state"] == "closed")
        producer.produce("orders", b"green-again", priority="low")
        assert producer.flush(10) == 0
        delivered = producer.outcomes().delivered
        assert source.view().errors == 0
        values = [m.value() for m in consume(kafka.bootstrap_servers, "orders", delivered)]
        assert b"green-low" in values and b"delayed" in values and b"green-again" in values
        assert len(values) == delivered


def test_a_corrupt_update_keeps_the_producer_on_the_last_good_decision(tmp_path: Path) -> None:
    volume = tmp_path / "local"
    volume.mkdir()
    (volume / "decision.json").write_text(to_json(make_decision(epoch=1, shed=("low",), zone="red")))
    with (
        InProcessKafka() as kafka,
        DirectoryDecisions(volume, poll_interval=0.02) as source,
        ThrottledProducer({"bootstrap.servers": kafka.bootstrap_servers}, source) as producer,
    ):
        (volume / "decision.json").write_text('{"apiVersion": "sluice.dev/v1alpha1", "kind": "Deci')
        assert _eventually(lambda: source.view().errors >= 1)
        with pytest.raises(ShedError):
            producer.produce("orders", b"still shed", priority="low")
        assert producer.health()["decision"]["errors"] >= 1
