"""`sluice run --local`: the real command against the librdkafka mock cluster (and the real Prometheus).

Every test runs the command line as a child process, exactly as a person would, reads what it
wrote under the decisions directory, and checks those files with the SDK's own reader.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from sluice.decision import CircuitState, Decision, parse_circuit, parse_decision
from sluice.sources.directory import DirectoryDecisions
from sluice.testing import MockKafkaCluster
from tests.support.prometheus import PrometheusServer

REPO = Path(__file__).resolve().parents[2]
TOPIC = "orders"
GROUP = "orders-consumer"
PER_PARTITION = 10  # 3 partitions: the group never committed, so its lag is every record


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[MockKafkaCluster]:
    with MockKafkaCluster(num_brokers=1, topics={TOPIC: 3}) as mock:
        _produce(mock, PER_PARTITION)
        yield mock


def _produce(mock: MockKafkaCluster, per_partition: int) -> None:
    producer = Producer({"bootstrap.servers": mock.bootstrap_servers})
    for partition in range(3):
        for i in range(per_partition):
            producer.produce(TOPIC, f"m{i}".encode(), partition=partition)
    assert producer.flush(10) == 0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    paths = [str(REPO / "operator"), str(REPO / "sdk"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["SLUICE_LOG_FORMAT"] = "text"
    return env


def _command(policies: Path, decisions: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sluice_operator.cli", "run", "--local", "--policies", str(policies),
            "--decisions-dir", str(decisions), *extra]


def _policy(bootstrap: str, *, name: str = "orders", namespace: str = "shop", medium: str = "20/50/100",
            low: str = "5/10/20", circuit: str | None = None) -> str:
    def window(text: str) -> str:
        green, yellow, red = text.split("/")
        return f"{{green: {green}, yellow: {yellow}, red: {red}}}"

    ref = f"  circuitBreakerRef: {circuit}\n" if circuit else ""
    return f"""\
apiVersion: sluice.dev/v1alpha1
kind: BackpressurePolicy
metadata:
  name: {name}
  namespace: {namespace}
spec:
  source:
    kafka:
      bootstrapServers: "{bootstrap}"
      consumerGroup: {GROUP}
      topics: [{TOPIC}]
      timeoutSeconds: 0.8
  thresholds:
    high: {{green: 1000, yellow: 2000, red: 3000}}
    medium: {window(medium)}
    low: {window(low)}
  hysteresis: {{margin: 0.1, minDwellSeconds: 0}}
  smoothing: {{alpha: 1}}  # the exact backlog, so expected delays follow the formula
  polling: {{intervalSeconds: 1, jitterSeconds: 0, timeoutSeconds: 0.9}}
  output: {{ttlSeconds: 30}}
{ref}"""


def _circuit(name: str, bootstrap: str, namespaces: list[str], failure_threshold: int = 2) -> str:
    return f"""\
apiVersion: sluice.dev/v1alpha1
kind: CircuitBreaker
metadata:
  name: {name}
spec:
  signal:
    kafka:
      bootstrapServers: "{bootstrap}"
      timeoutSeconds: 0.5
  failureThreshold: {failure_threshold}
  tripWindowSeconds: 10
  recoveryTimeoutSeconds: 60
  probeIntervalSeconds: 1
  recoveryThreshold: 1
  namespaces: {json.dumps(namespaces)}
  ttlSeconds: 30
"""


def _read_decision(path: Path) -> Decision | None:
    try:
        return parse_decision(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def _wait_for(what: str, check: Callable[[], Any], proc: subprocess.Popen[bytes] | None = None,
              log: Path | None = None, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}; operator log:\n{tail}")


def _zones(decision: Decision) -> tuple[str, str, str]:
    p = decision.priorities
    return p.high.zone, p.medium.zone, p.low.zone


class Operator:
    """`sluice run --local` in the background; stopped with SIGTERM (it must exit 0)."""

    def __init__(self, policies: Path, decisions: Path, log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(_command(policies, decisions), stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=_env())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()
        return self.proc.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def operator_factory(tmp_path: Path) -> Iterator[Callable[[Path, Path], Operator]]:
    started: list[Operator] = []

    def start(policies: Path, decisions: Path) -> Operator:
        op = Operator(policies, decisions, tmp_path / f"operator-{len(started)}.log")
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


class TornReads:
    """Reads a file as fast as it can, counting reads that were not a whole valid document."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reads = 0
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                time.sleep(0.001)
                continue
            self.reads += 1
            try:
                parse_decision(data)
            except ValueError as error:
                self.bad.append(str(error)[:200])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# -- tests ----------------------------------------------------------------------------------------


def test_once_writes_decision_with_zones_from_kafka_lag(cluster: MockKafkaCluster, tmp_path: Path) -> None:
    policies, decisions = tmp_path / "policies", tmp_path / "decisions"
    policies.mkdir()
    (policies / "orders.yaml").write_text(_policy(cluster.bootstrap_servers))

    done = subprocess.run(_command(policies, decisions, "--once"), capture_output=True, env=_env(), timeout=60)

    assert done.returncode == 0, done.stderr.decode(errors="replace")
    decision = parse_decision((decisions / "shop" / "orders" / "decision.json").read_bytes())
    assert decision.policy.namespace == "shop" and decision.policy.name == "orders"
    assert decision.source == "kafka"
    assert decision.backlog == 3 * PER_PARTITION
    # backlog 30: high (green 1000) green; medium (20/50/100) yellow; low (5/10/20) red at ratio 1: shed.
    assert _zones(decision) == ("green", "yellow", "red")
    assert decision.priorities.high.delay_ms == 0
    assert decision.priorities.medium.delay_ms == round(10 + 490 * (30 - 20) / (50 - 20))
    assert decision.priorities.low.shed is True
    assert decision.epoch >= 1
    assert decision.expires_at > decision.generated_at


def test_once_reports_broken_file_and_exits_nonzero(cluster: MockKafkaCluster, tmp_path: Path) -> None:
    policies, decisions = tmp_path / "policies", tmp_path / "decisions"
    policies.mkdir()
    (policies / "good.yaml").write_text(_policy(cluster.bootstrap_servers))
    (policies / "bad.yaml").write_text(_policy(cluster.bootstrap_servers, name="bad", medium="80/60/100"))

    done = subprocess.run(_command(policies, decisions, "--once"), capture_output=True, env=_env(), timeout=60)

    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 1, stderr
    assert "bad.yaml" in stderr and "thresholds must increase" in stderr
    # The valid policy next to it was still evaluated and published; the broken one was not.
    assert (decisions / "shop" / "orders" / "decision.json").is_file()
    assert not (decisions / "shop" / "bad").exists()


def test_reload_on_edit_keeps_last_valid_policy_on_broken_edit(
    cluster: MockKafkaCluster, tmp_path: Path, operator_factory: Callable[[Path, Path], Operator]
) -> None:
    policies, decisions = tmp_path / "policies", tmp_path / "decisions"
    policies.mkdir()
    policy_file = policies / "orders.yaml"
    policy_file.write_text(_policy(cluster.bootstrap_servers))
    target = decisions / "shop" / "orders" / "decision.json"
    op = operator_factory(policies, decisions)

    first = _wait_for("the first decision", lambda: _read_decision(target), op.proc, op.log)
    assert _zones(first) == ("green", "yellow", "red")
    torn = TornReads(target)
    try:
        # 1. Edit the thresholds: the operator reloads the file and publishes a new decision.
        policy_file.write_text(_policy(cluster.bootstrap_servers, medium="40/60/100", low="50/100/200"))
        relaxed = _wait_for(
            "the decision of the edited policy",
            lambda: (d := _read_decision(target)) is not None and _zones(d) == ("green", "green", "green") and d,
            op.proc, op.log,
        )
        assert relaxed.epoch > first.epoch
        assert relaxed.priorities.low.shed is False

        # 2. A broken edit (thresholds out of order) is reported, and the last valid policy stays in force.
        policy_file.write_text(_policy(cluster.bootstrap_servers, medium="80/60/100", low="50/100/200"))
        _wait_for("the problem to be logged", lambda: "thresholds must increase" in op.text(), op.proc, op.log)
        assert "orders.yaml" in op.text()
        _produce(cluster, PER_PARTITION)  # backlog 30 -> 60: evaluated with the last valid thresholds
        held = _wait_for(
            "a decision at the new backlog",
            lambda: (d := _read_decision(target)) is not None and d.backlog == 6 * PER_PARTITION and d,
            op.proc, op.log,
        )
        # medium 40/60/100 -> yellow at ratio 1; low 50/100/200 -> yellow. (The broken file would say
        # medium green 80: had it been applied, medium would be green.)
        assert _zones(held) == ("green", "yellow", "yellow")
        assert held.priorities.medium.delay_ms == 500

        # 3. Fixing the file applies it.
        policy_file.write_text(_policy(cluster.bootstrap_servers, medium="100/200/300", low="50/100/200"))
        fixed = _wait_for(
            "the decision of the fixed policy",
            lambda: (d := _read_decision(target)) is not None and _zones(d) == ("green", "green", "yellow") and d,
            op.proc, op.log,
        )
        assert fixed.epoch > held.epoch
    finally:
        torn.stop()

    # Every read of the file, taken while it was being rewritten, was one whole document.
    assert torn.reads > 100
    assert torn.bad == []
    assert not [p.name for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    assert op.stop() == 0  # SIGTERM: a clean exit


def test_circuit_breaker_published_where_referenced_and_listed(
    cluster: MockKafkaCluster, tmp_path: Path, operator_factory: Callable[[Path, Path], Operator]
) -> None:
    policies, decisions = tmp_path / "policies", tmp_path / "decisions"
    policies.mkdir()
    bootstrap = cluster.bootstrap_servers
    (policies / "orders.yaml").write_text(_policy(bootstrap, circuit="brokers"))
    (policies / "circuits.yaml").write_text(
        _circuit("brokers", bootstrap, ["payments"])
        + "---\n"
        # Nothing answers on this address: the probe fails at once, so this circuit opens.
        + _circuit("nowhere", f"127.0.0.1:{_closed_port()}", ["billing"], failure_threshold=1)
    )
    op = operator_factory(policies, decisions)

    def circuit_doc(namespace: str, name: str) -> CircuitState | None:
        try:
            return parse_circuit((decisions / namespace / name / "circuit.json").read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    # Listed namespace, and the namespace of the policy that references it.
    listed = _wait_for("circuit.json in the listed namespace", lambda: circuit_doc("payments", "brokers"),
                       op.proc, op.log)
    referenced = _wait_for("circuit.json in the referencing policy's namespace",
                           lambda: circuit_doc("shop", "brokers"), op.proc, op.log)
    assert listed.state == referenced.state == "closed"
    assert listed.name == "brokers"
    opened = _wait_for("the failing circuit to open",
                       lambda: (d := circuit_doc("billing", "nowhere")) is not None and d.state == "open" and d,
                       op.proc, op.log)
    assert opened.rejects_all
    # Nobody references "nowhere" from shop, and shop is not listed: nothing published there.
    assert circuit_doc("shop", "nowhere") is None
    assert circuit_doc("payments", "nowhere") is None

    # The policy embeds the state of the circuit it references.
    decision_file = decisions / "shop" / "orders" / "decision.json"
    decision = _wait_for("the decision", lambda: _read_decision(decision_file), op.proc, op.log)
    assert decision.circuit is not None and decision.circuit.name == "brokers"
    assert decision.circuit.state == "closed"

    # The SDK's directory reader sees exactly the files the operator wrote, unchanged.
    source = DirectoryDecisions(decisions / "shop" / "orders", poll_interval=0.1,
                                circuit_paths=[decisions / "shop" / "brokers"], start=False)
    try:
        view = source.view()
        assert view.errors == 0, view.last_error
        assert view.decision is not None
        on_disk = parse_decision(decision_file.read_bytes())
        if view.decision.doc.epoch == on_disk.epoch:
            assert view.decision.doc == on_disk
        assert [c.doc.name for c in view.circuits] == ["brokers"]
        assert view.circuits[0].doc.state == "closed"
    finally:
        source.close()
    assert op.stop() == 0


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.prometheus
def test_once_with_prometheus_source(prom: PrometheusServer, tmp_path: Path) -> None:
    prom.exporter.set("kafka_consumergroup_lag", 700, {"consumergroup": GROUP, "topic": TOPIC})
    prom.wait_for_value(f'sum(kafka_consumergroup_lag{{consumergroup="{GROUP}"}})', 700)
    policies, decisions = tmp_path / "policies", tmp_path / "decisions"
    policies.mkdir()
    (policies / "orders.yaml").write_text(f"""\
apiVersion: sluice.dev/v1alpha1
kind: BackpressurePolicy
metadata: {{name: orders, namespace: shop}}
spec:
  source:
    prometheus: {{consumerGroup: {GROUP}, topics: [{TOPIC}]}}
""")

    done = subprocess.run(_command(policies, decisions, "--once", "--prometheus", prom.url),
                          capture_output=True, env=_env(), timeout=60)

    assert done.returncode == 0, done.stderr.decode(errors="replace")
    decision = parse_decision((decisions / "shop" / "orders" / "decision.json").read_bytes())
    assert decision.source == "prometheus"
    assert decision.backlog == 700
    # Defaults: high 1000/5000/10000 green, medium 500/2000/5000 yellow, low 100/500/1000 red.
    assert _zones(decision) == ("green", "yellow", "red")
