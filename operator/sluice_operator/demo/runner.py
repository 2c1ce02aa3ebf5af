"""Runs the demo's closed loop: cluster, consumer, operator (local mode), producers, scenario.

The embedded cluster is started from the calling (main) thread: its child process is tied to the
thread that forked it. Everything that waits runs in one asyncio loop; the blocking parts (the
clients' threads, pausing the cluster, closing producers) stay off that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from sluice.decision import CIRCUIT_KEY, DECISION_KEY, PRIORITIES, Priority
from sluice.testing import MockKafkaCluster
from sluice_operator.api.policy import KafkaSource
from sluice_operator.demo import scenario
from sluice_operator.demo.policies import DemoObjects, DemoSetupError, examples_dir, render
from sluice_operator.demo.timeline import LagReading, Sample, Timeline, Transition
from sluice_operator.demo.workload import WORKERS, CappedConsumer, ProducerFleet
from sluice_operator.local import LocalOperator
from sluice_operator.reconcile.rates import OFFERED_METRIC
from sluice_operator.settings import Settings
from sluice_operator.sources.reading import Reading, SignalStatus
from sluice_operator.wiring import build_signals

log = logging.getLogger("sluice_operator.demo")

#: Seconds kept free at the end of --duration for stopping the clients and drawing the report.
TEARDOWN_RESERVE = 5.0
SAMPLE_EVERY = 0.5
PARTITIONS = 6
BROKERS = 3
_TRANSITION = re.compile(r"^(?P<old>[\w-]+) -> (?P<new>[\w-]+): (?P<reason>.*)$", re.S)
#: The engine's reason text under DrainTime (engine.evaluate): the allowed rate R and mu-hat.
_DRAIN_REASON = re.compile(r"DrainTime: admitting (?P<allowed>[-+.\deE]+)/s of .*?\(drain rate (?P<mu>[-+.\deE]+)/s")
_DEGRADED_REASON = re.compile(r"DrainTime degraded to Zones: (?P<why>[^;]*)")


#: Window of the demo's offered-rate answer (msgs/s of produce() calls per priority).
OFFERED_WINDOW = 5.0
_OFFERED_PRIORITY = re.compile(r'label_replace\(vector\(1\), "priority", "(?P<priority>high|medium|low)"')


class FleetOffered:
    """The demo's stand-in for Prometheus, for one question only: the offer per priority.

    DrainTime needs lambda per priority, which in a cluster comes from the SDK's
    ``sluice_producer_offered_total`` scraped by Prometheus. The demo has no Prometheus, but its
    producers run in this process: the answer is their produce() calls per second over the last
    few seconds. Every other query is unavailable, as it would be without a Prometheus URL.
    """

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline

    async def read(self, query: str, *, aggregate: Literal["max", "sum"] | None = None,
                   empty_result: Literal["unavailable", "zero"] = "unavailable",
                   timeout: float | None = None) -> Reading:
        match = _OFFERED_PRIORITY.search(query)
        if OFFERED_METRIC not in query or match is None:
            return Reading(SignalStatus.UNAVAILABLE, reason="NoPrometheus",
                           message="the demo has no Prometheus; it answers only the offered rate per priority")
        if not self.timeline.samples:
            return Reading(SignalStatus.UNAVAILABLE, reason="Empty", message="no producer has started yet")
        priority: Priority = match["priority"]  # type: ignore[assignment]
        return Reading(SignalStatus.OK, value=self.timeline.rate(priority, "attempted", OFFERED_WINDOW), reason="Ok",
                       series=1)


class View(Protocol):
    """Where progress goes while the demo runs (a rich Live view, or plain lines)."""

    def update(self, timeline: Timeline) -> None: ...


class ViewFactory(Protocol):
    """Opens a View for the run (a context manager, so a live display is torn down cleanly)."""

    def __call__(self, timeline: Timeline, objects: DemoObjects) -> contextlib.AbstractContextManager[View]: ...


@dataclass(frozen=True)
class DemoConfig:
    duration: float = 90.0
    capacity: float = scenario.CAPACITY
    workers: int = WORKERS
    control: str = "zones"  # zones | drain (the policy in DrainTime mode)


@dataclass
class DemoRun:
    """Everything the report needs."""

    timeline: Timeline
    objects: DemoObjects
    setup_seconds: float
    scenario_seconds: float
    problems: list[str]


class _Clock:
    """Seconds since the scenario's start (negative during setup)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            await asyncio.sleep(delay)


def run_demo(config: DemoConfig, view_factory: ViewFactory, *, started: float | None = None) -> DemoRun:
    """Set up, run the scenario, tear down; returns what happened (raises DemoSetupError early).

    `started` (monotonic) is when the whole command started: the scenario gets what is left of
    `config.duration` after setup, minus `TEARDOWN_RESERVE`.
    """
    started = time.monotonic() if started is None else started
    source = examples_dir()
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sluice-demo-")))
        cluster = stack.enter_context(MockKafkaCluster(num_brokers=BROKERS))
        objects = render(source, root / "policies", cluster.bootstrap_servers, control=config.control)
        cluster.create_topics({objects.topic: PARTITIONS})
        consumer = CappedConsumer(cluster.bootstrap_servers, objects.group, objects.topic, config.capacity)
        consumer.start()
        stack.callback(consumer.stop)
        return asyncio.run(_run(config, view_factory, cluster, consumer, objects, root / "decisions", started))
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow exceptions


async def _run(config: DemoConfig, view_factory: ViewFactory, cluster: MockKafkaCluster, consumer: CappedConsumer,
               objects: DemoObjects, decisions: Path, started: float) -> DemoRun:
    clock = _Clock()
    problems: list[str] = []
    timeline = Timeline(phases=(), capacity=config.capacity, control=config.control)
    signals = build_signals(Settings.from_env({}), with_prometheus=False)
    read_lag = signals.kafka_lag
    assert read_lag is not None

    async def recording_lag(source: KafkaSource, client_config: Mapping[str, str]) -> Reading:
        reading = await read_lag(source, client_config)
        timeline.readings.append(LagReading(clock.now(), reading.value if reading.ok else None, reading.reason))
        return reading

    signals.kafka_lag = recording_lag
    if config.control == "drain":
        signals.prometheus = FleetOffered(timeline)  # lambda per priority from the in-process producers
    operator = LocalOperator(objects.directory, decisions, signals)
    stop = asyncio.Event()
    operator_task = asyncio.create_task(operator.run(stop), name="sluice-local-operator")
    policy_dir = decisions / objects.namespace / objects.policy.metadata.name
    circuit_dir = decisions / objects.namespace / objects.circuit.metadata.name
    fleet: ProducerFleet | None = None
    paused = False
    try:
        await _wait_for_files([policy_dir / DECISION_KEY, circuit_dir / CIRCUIT_KEY], operator_task, 15.0)
        if not await asyncio.to_thread(consumer.assigned.wait, 15.0):
            raise DemoSetupError("the consumer group did not get its partitions within 15 s")

        scenario_seconds = config.duration - (time.monotonic() - started) - TEARDOWN_RESERVE
        phases = scenario.schedule(scenario_seconds)
        timeline.phases = phases
        end = phases[-1].end

        def offered(priority: Priority) -> float:
            return scenario.phase_at(phases, clock.now()).offered()[priority]

        fleet = ProducerFleet(cluster.bootstrap_servers, objects.topic, policy_dir, [circuit_dir], offered,
                              workers=config.workers)
        setup_seconds = time.monotonic() - started
        clock.t0 = time.monotonic()
        fleet.start()
        log.info("scenario: %s", ", ".join(f"{p.name} {p.start:.1f}-{p.end:.1f}s" for p in phases))
        with view_factory(timeline, objects) as view:
            watcher = asyncio.create_task(_watch_events(operator, timeline, clock, stop))
            sampler = asyncio.create_task(_sample(fleet, consumer, objects, timeline, clock, view, end))
            outage = scenario.find(phases, "outage")
            await clock.sleep_until(outage.start)
            await asyncio.to_thread(cluster.pause)
            paused = True
            timeline.events.append((clock.now(), "brokers paused (SIGSTOP)"))
            await clock.sleep_until(outage.end)
            await asyncio.to_thread(cluster.resume)
            paused = False
            timeline.events.append((clock.now(), "brokers resumed (SIGCONT)"))
            await sampler
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if operator_task.done() and operator_task.exception() is not None:
            problems.append(f"the operator stopped: {operator_task.exception()!r}")
        return DemoRun(timeline, objects, setup_seconds, end, problems)
    finally:
        if paused:
            await asyncio.to_thread(cluster.resume)
        if fleet is not None:
            await asyncio.to_thread(fleet.stop)
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(operator_task, 10.0)


async def _wait_for_files(files: list[Path], operator_task: asyncio.Task[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(f.is_file() for f in files):
        if operator_task.done():
            error = operator_task.exception()
            raise DemoSetupError(f"the operator stopped before publishing: {error!r}")
        if time.monotonic() > deadline:
            missing = ", ".join(str(f) for f in files if not f.is_file())
            raise DemoSetupError(f"the operator published nothing within {timeout:.0f} s (missing {missing})")
        await asyncio.sleep(0.05)


async def _watch_events(operator: LocalOperator, timeline: Timeline, clock: _Clock, stop: asyncio.Event) -> None:
    """Stamp the operator's Events (circuit transitions, zone changes) with the scenario's time."""
    seen = 0
    while not stop.is_set():
        emitted = operator.events.emitted
        for event in emitted[seen:]:
            t = clock.now()
            timeline.events.append((t, f"{event.reason}: {event.message}"))
            if event.kind == "CircuitBreaker" and event.reason.startswith("Circuit"):
                match = _TRANSITION.match(event.message)
                if match:
                    timeline.transitions.append(Transition(t, match["old"], match["new"], match["reason"]))
        seen = len(emitted)
        await asyncio.sleep(0.05)


async def _sample(fleet: ProducerFleet, consumer: CappedConsumer, objects: DemoObjects, timeline: Timeline,
                  clock: _Clock, view: View, end: float) -> None:
    source = fleet.sources["high"]
    circuit_name = objects.circuit.metadata.name
    tick = 0
    while True:
        t = tick * SAMPLE_EVERY
        await clock.sleep_until(t)
        now = clock.now()
        held = source.view()
        decision = held.decision.doc if held.decision is not None else None
        circuit = next((c.doc for c in held.circuits if c.doc.name == circuit_name), None)
        if circuit is None and decision is not None:
            circuit = decision.circuit
        lag = timeline.readings[-1].value if timeline.readings else None
        priorities = decision.priorities if decision is not None else None
        reason = (decision.reason or "") if decision is not None else ""
        drain, degraded = _DRAIN_REASON.search(reason), _DEGRADED_REASON.search(reason)
        timeline.samples.append(Sample(
            t=now,
            phase=scenario.phase_at(timeline.phases, now).name,
            lag=lag,
            source=decision.source if decision is not None else None,
            epoch=decision.epoch if decision is not None else None,
            zones={p: (priorities.get(p).zone if priorities else "green") for p in PRIORITIES},
            delays={p: (priorities.get(p).delay_ms if priorities else 0) for p in PRIORITIES},
            shed={p: (priorities.get(p).shed if priorities else False) for p in PRIORITIES},
            circuit=circuit.state if circuit is not None else "none",
            circuit_epoch=circuit.epoch if circuit is not None else None,
            counts=fleet.snapshot(),
            consumed=consumer.consumed,
            admit={p: (priorities.get(p).admit_ratio if priorities else None) for p in PRIORITIES},
            operator_mu=float(drain["mu"]) if drain else None,
            allowed=float(drain["allowed"]) if drain else None,
            degraded=degraded["why"].strip() if degraded else None,
        ))
        view.update(timeline)
        if now >= end:
            return
        tick += 1


def process_age() -> float:
    """Seconds since this process started (0 where /proc is missing): imports count against --duration."""
    try:
        stat = Path("/proc/self/stat").read_text(encoding="ascii")
        uptime = float(Path("/proc/uptime").read_text(encoding="ascii").split()[0])
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 to `path` while the demo runs.

    librdkafka's own clients (the operator's admin clients too) print connection errors straight to
    fd 2 during the broker outage; on the terminal they would tear the live view apart.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as target:
        os.dup2(target.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
