"""The librdkafka mock cluster in a child process: real sockets, real hangs, no leaks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from sluice.testing import MockClusterError, MockKafkaCluster

SDK_ROOT = Path(__file__).resolve().parents[2] / "sdk"


@pytest.fixture
def cluster() -> Iterator[MockKafkaCluster]:
    with MockKafkaCluster(num_brokers=3, topics={"events": 3}) as mock:
        yield mock


def _process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie is dead; reaping is its new parent's business


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _process_gone(pid):
            return True
        time.sleep(0.05)
    return False


def _produce(
    bootstrap: str, topic: str, values: list[bytes], partitions: int = 3, **extra: str | int
) -> list[KafkaError | None]:
    outcomes: list[KafkaError | None] = []
    producer = Producer({"bootstrap.servers": bootstrap, **extra})
    for i, value in enumerate(values):
        producer.produce(topic, value, partition=i % partitions, on_delivery=lambda err, _msg: outcomes.append(err))
    producer.flush(10)
    return outcomes


def test_brokers_listen_on_loopback_and_topics_exist(cluster: MockKafkaCluster) -> None:
    hosts = cluster.bootstrap_servers.split(",")
    assert len(hosts) == 3
    assert all(h.startswith("127.0.0.1:") for h in hosts)
    metadata = AdminClient({"bootstrap.servers": cluster.bootstrap_servers}).list_topics(timeout=5)
    assert len(metadata.brokers) == 3
    assert len(metadata.topics["events"].partitions) == 3


def test_produce_and_consume_through_the_mock(cluster: MockKafkaCluster) -> None:
    values = [f"m{i}".encode() for i in range(9)]
    assert _produce(cluster.bootstrap_servers, "events", values) == [None] * 9

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap_servers, "group.id": "roundtrip"})
    consumer.assign([TopicPartition("events", p, 0) for p in range(3)])
    got: list[Message] = []
    deadline = time.monotonic() + 10
    while len(got) < 9 and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            got.append(msg)
    consumer.close()
    assert sorted(m.value() or b"" for m in got) == sorted(values)
    assert {m.partition() for m in got} == {0, 1, 2}


def test_pause_makes_requests_time_out_and_resume_heals(cluster: MockKafkaCluster) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    admin.list_topics(timeout=5)  # connections are up before the hang

    cluster.pause()
    assert cluster.paused
    with pytest.raises(KafkaException) as excinfo:
        admin.list_topics(timeout=1.0)
    # Timed out (request sent, never answered) or, when no connection had finished its handshake
    # before the freeze, "no usable broker within the timeout" (transport failure).
    assert excinfo.value.args[0].code() in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT)
    outcomes = _produce(cluster.bootstrap_servers, "events", [b"lost"], **{"message.timeout.ms": 1000})
    assert [e.code() if e else None for e in outcomes] == [KafkaError._MSG_TIMED_OUT]

    cluster.resume()
    assert not cluster.paused
    assert len(admin.list_topics(timeout=5).brokers) == 3
    assert _produce(cluster.bootstrap_servers, "events", [b"after"]) == [None]


def test_create_topics_and_delete_records(cluster: MockKafkaCluster) -> None:
    cluster.create_topics({"fresh": 5, "single": 1})
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    topics = admin.list_topics(timeout=5).topics
    assert len(topics["fresh"].partitions) == 5
    assert len(topics["single"].partitions) == 1

    assert _produce(cluster.bootstrap_servers, "single", [b"x"] * 3, partitions=1) == [None] * 3
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap_servers, "group.id": "wm"})
    before = consumer.get_watermark_offsets(TopicPartition("single", 0), timeout=5)
    cluster.delete_records("single", 0, 2)
    after = consumer.get_watermark_offsets(TopicPartition("single", 0), timeout=5)
    consumer.close()
    assert before == (0, 3)
    assert after == (2, 3)


def test_commands_refused_while_paused(cluster: MockKafkaCluster) -> None:
    cluster.pause()
    try:
        with pytest.raises(MockClusterError, match="paused"):
            cluster.create_topic("nope")
    finally:
        cluster.resume()


def test_stop_reaps_the_child_even_when_paused() -> None:
    mock = MockKafkaCluster(num_brokers=1).start()
    pid = mock.pid
    mock.pause()
    mock.stop()
    assert not mock.running
    assert _process_gone(pid)
    mock.stop()  # idempotent
    with pytest.raises(MockClusterError):
        _ = mock.bootstrap_servers


def test_cluster_started_from_a_worker_thread_outlives_that_thread() -> None:
    started: list[MockKafkaCluster] = []
    worker = threading.Thread(target=lambda: started.append(MockKafkaCluster(num_brokers=1).start()))
    worker.start()
    worker.join(30)
    (mock,) = started
    try:
        time.sleep(0.2)  # PR_SET_PDEATHSIG would have fired by now if the worker were the parent
        assert mock.running
        metadata = AdminClient({"bootstrap.servers": mock.bootstrap_servers}).list_topics(timeout=5)
        assert len(metadata.brokers) == 1
    finally:
        mock.stop()


@pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
def test_child_dies_with_its_parent(paused: bool) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from sluice.testing import MockKafkaCluster
        mock = MockKafkaCluster(num_brokers=1).start()
        if {paused!r}:
            mock.pause()
        print(mock.pid, flush=True)
        time.sleep(60)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SDK_ROOT), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert not _process_gone(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _wait_gone(child_pid), f"mock cluster child {child_pid} outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
