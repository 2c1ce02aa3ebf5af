"""Local mode: the operator engine without Kubernetes.

Policies and circuit breakers are YAML files in a directory (reloaded when they change); decisions
are the exact `decision.json` / `circuit.json` documents a ConfigMap would carry, written atomically
to DIR/<namespace>/<name>/. Producers on VMs or in docker-compose read them with the SDK's
DirectoryDecisions, unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sluice.decision import CircuitState
from sluice_operator.api.circuit import CircuitBreaker, CircuitBreakerSpec
from sluice_operator.api.policy import BackpressurePolicy
from sluice_operator.metrics import OperatorMetrics
from sluice_operator.publish.events import LogEvents
from sluice_operator.reconcile.circuit import CircuitCycle, CircuitRuntime
from sluice_operator.reconcile.policy import PolicyCycle, PolicyState
from sluice_operator.reconcile.signals import Signals
from sluice_operator.reconcile.sinks import DirectorySink
from sluice_operator.settings import Settings
from sluice_operator.validation import KINDS, Problem, YamlLoader, read_text, validate_object

log = logging.getLogger("sluice_operator.local")
RELOAD_EVERY = 1.0
#: The label Kubernetes sets on every namespace (its own name); the only one local namespaces have.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass
class _Entry:
    obj: BackpressurePolicy | CircuitBreaker
    due: float = 0.0


@dataclass
class LoadReport:
    loaded: int = 0
    problems: list[str] = field(default_factory=list)
    broken_files: set[str] = field(default_factory=set)
    origin: dict[str, str] = field(default_factory=dict)  # object key -> file it came from


def load_directory(root: Path) -> tuple[dict[str, BackpressurePolicy | CircuitBreaker], LoadReport]:
    """Every valid object under `root` keyed by kind/namespace/name, and what was wrong with the rest.

    Objects are checked by the same validator as `sluice validate` (and so as the CRD); documents of
    other kinds (Deployments, ...) may share the directory and are skipped.
    """
    objects: dict[str, BackpressurePolicy | CircuitBreaker] = {}
    report = LoadReport()
    for path in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
        text = read_text(path)
        try:
            if isinstance(text, Problem):
                raise OSError(text.message)
            documents = list(yaml.load_all(text, Loader=YamlLoader))
        except (OSError, yaml.YAMLError) as error:
            report.problems.append(f"{path}: cannot read YAML: {error}")
            report.broken_files.add(str(path))
            continue
        for index, doc in enumerate(documents):
            if doc is None or (isinstance(doc, dict) and doc.get("kind") not in KINDS):
                continue
            result = validate_object(doc, f"{path} (document {index + 1})")
            if isinstance(result, list):
                report.broken_files.add(str(path))
                report.problems.extend(str(problem) for problem in result)
                continue
            if isinstance(result, BackpressurePolicy):
                key = f"BackpressurePolicy/{result.metadata.namespace or 'default'}/{result.metadata.name}"
            else:
                key = f"CircuitBreaker/{result.metadata.name}"
            objects[key] = result
            report.loaded += 1
            report.origin[key] = str(path)
    return objects, report


def _fingerprint(root: Path) -> tuple[tuple[str, float, int], ...]:
    entries = []
    for path in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((str(path), stat.st_mtime, stat.st_size))
    return tuple(entries)


class LocalOperator:
    """Evaluates every loaded object on its own interval and writes documents to a directory."""

    def __init__(self, policies_dir: Path, decisions_dir: Path, signals: Signals,
                 metrics: OperatorMetrics | None = None) -> None:
        self.policies_dir = policies_dir
        self.sink = DirectorySink(decisions_dir)
        self.events = LogEvents()
        self.metrics = metrics or OperatorMetrics()
        self.signals = signals
        self.entries: dict[str, _Entry] = {}
        self.policy_states: dict[str, PolicyState] = {}
        self.circuit_states: dict[str, CircuitRuntime] = {}
        self.circuit_docs: dict[str, CircuitState] = {}
        self.policy_cycle = PolicyCycle(signals, self.sink, self.events, self.metrics, circuits=self.circuit_docs.get)
        self.circuit_cycle = CircuitCycle(signals, self.sink, self.events, self.metrics, namespaces=self._namespaces)
        self._seen: tuple[tuple[str, float, int], ...] | None = None
        self._problems: list[str] = []
        self._origin: dict[str, str] = {}
        self.cycles = 0

    def _namespaces(self) -> tuple[dict[str, dict[str, str]], frozenset[str]]:
        """Locally, a namespace exists when a loaded policy lives in it or a circuit lists it.

        Its only label is the one Kubernetes puts on every namespace (`kubernetes.io/metadata.name`),
        so a namespaceSelector on that label works locally too.
        """
        names: set[str] = set()
        for entry in self.entries.values():
            if isinstance(entry.obj, BackpressurePolicy):
                names.add(entry.obj.metadata.namespace or "default")
            else:
                names.update(entry.obj.spec.namespaces or [])
        return {ns: {NAMESPACE_NAME_LABEL: ns} for ns in sorted(names)}, frozenset()

    def _circuit_spec(self, circuit: CircuitBreaker) -> CircuitBreakerSpec:
        """The circuit's spec with the namespaces of the policies that reference it added to its list.

        Locally there are no namespace labels to select on, so a circuit is published where it is
        listed (or selected by name) and in the namespace of every policy whose circuitBreakerRef
        names it, so those producers find circuit.json next to their decision.
        """
        name = circuit.metadata.name
        referencing = {
            e.obj.metadata.namespace or "default" for e in self.entries.values()
            if isinstance(e.obj, BackpressurePolicy) and e.obj.spec.circuit_breaker_ref == name
        }
        listed = list(circuit.spec.namespaces or [])
        extra = sorted(referencing - set(listed))
        if not extra:
            return circuit.spec
        return circuit.spec.model_copy(update={"namespaces": listed + extra})

    async def reload(self, *, force: bool = False) -> LoadReport | None:
        """Re-read the directory when any file changed; the file I/O runs in a worker thread."""
        seen = await asyncio.to_thread(_fingerprint, self.policies_dir)
        if not force and seen == self._seen:
            return None
        self._seen = seen
        objects, report = await asyncio.to_thread(load_directory, self.policies_dir)
        for problem in report.problems:
            if problem not in self._problems:
                log.error("%s (fix the file; the last valid version stays in force)", problem)
        self._problems = report.problems
        for key in list(self.entries):
            if key not in objects:
                # An object whose file is broken right now keeps its last valid version.
                if self._origin.get(key) in report.broken_files:
                    continue
                log.info("%s removed", key)
                self.entries.pop(key)
                self.policy_states.pop(key, None)
                if key.startswith("CircuitBreaker/"):
                    name = key.split("/", 1)[1]
                    self.circuit_states.pop(name, None)
                    self.circuit_docs.pop(name, None)
        self._origin.update(report.origin)
        for key, obj in objects.items():
            entry = self.entries.get(key)
            if entry is None:
                log.info("%s loaded", key)
                self.entries[key] = _Entry(obj)
            elif entry.obj != obj:
                log.info("%s changed", key)
                entry.obj, entry.due = obj, 0.0
        return report

    async def run_due(self, now: float) -> float:
        """Evaluate every object that is due; return the next due time."""
        # Circuits first, so policies embedding them see this cycle's state.
        ordered = sorted(self.entries.items(), key=lambda kv: (not kv[0].startswith("CircuitBreaker/"), kv[0]))
        for key, entry in ordered:
            if entry.due > now:
                continue
            obj = entry.obj
            if isinstance(obj, CircuitBreaker):
                name = obj.metadata.name
                runtime = self.circuit_states.setdefault(name, CircuitRuntime(name=name, uid=None))
                spec = self._circuit_spec(obj)
                self.circuit_docs[name] = await self.circuit_cycle.run(runtime, spec, obj.metadata.generation)
                entry.due = now + obj.spec.probe_interval_seconds
            else:
                namespace = obj.metadata.namespace or "default"
                state = self.policy_states.setdefault(key, PolicyState(namespace, obj.metadata.name, None))
                await self.policy_cycle.run(state, obj.spec, obj.metadata.generation)
                entry.due = now + obj.spec.polling.interval_seconds
            self.cycles += 1
        return min((e.due for e in self.entries.values()), default=now + RELOAD_EVERY)

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> int:
        await self.reload(force=True)
        if not self.entries:
            log.warning("no BackpressurePolicy or CircuitBreaker found in %s", self.policies_dir)
        self.metrics.leader.set(1)  # the only replica: it always acts
        while not stop.is_set():
            next_due = await self.run_due(time.monotonic())
            self.metrics.last_cycle.set_to_current_time()
            if once:
                return 1 if self._problems else 0
            wait = max(0.05, min(RELOAD_EVERY, next_due - time.monotonic()))
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass
            await self.reload()
        return 0


def run_local(args: argparse.Namespace, settings: Settings) -> int:
    """`sluice run --local --policies DIR --decisions-dir DIR [--prometheus URL] [--once]`."""
    from sluice_operator.wiring import build_signals

    if args.policies is None or args.decisions_dir is None:
        print("sluice run --local needs --policies DIR and --decisions-dir DIR", file=sys.stderr)
        return 2
    if not args.policies.is_dir():
        print(f"sluice run --local: {args.policies} is not a directory of policy YAML", file=sys.stderr)
        return 2
    args.decisions_dir.mkdir(parents=True, exist_ok=True)
    explicit = args.prometheus is not None or "SLUICE_PROMETHEUS_URL" in os.environ
    signals = build_signals(settings, prometheus_url=args.prometheus, with_prometheus=explicit)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        operator = LocalOperator(args.policies, args.decisions_dir, signals)
        log.info("local mode: policies from %s, decisions to %s, prometheus %s", args.policies,
                 args.decisions_dir, args.prometheus or (settings.prometheus_url if explicit else "(none)"))
        return await operator.run(stop, once=args.once)

    return asyncio.run(main())


__all__ = ["LocalOperator", "load_directory", "run_local"]
