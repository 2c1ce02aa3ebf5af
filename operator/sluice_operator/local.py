"""Local mode: the operator engine without Kubernetes.

Policies and circuit breakers are YAML files in a directory (reloaded when they change); decisions
are the exact `decision.json` / `circuit.json` documents a ConfigMap would carry, written atomically
to DIR/<namespace>/<name>/. Producers on VMs or in docker-compose read them with the SDK's
DirectoryDecisions, unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sluice_operator.api.circuit import CircuitBreaker
from sluice_operator.api.policy import BackpressurePolicy
from sluice_operator.metrics import OperatorMetrics
from sluice_operator.problems import Problem
from sluice_operator.publish.directory import DirectorySink
from sluice_operator.publish.events import LogEvents
from sluice_operator.reconcile.circuit import CircuitCycle, CircuitReconciler
from sluice_operator.reconcile.dispatch import Dispatcher
from sluice_operator.reconcile.namespaces import NamespaceView
from sluice_operator.reconcile.policy import PolicyCycle, PolicyReconciler
from sluice_operator.reconcile.ports import SignalReader
from sluice_operator.scheduler import Kind, Kinds, ScheduleEntry, Scheduler
from sluice_operator.settings import Settings
from sluice_operator.validation import KINDS, YamlLoader, read_text, validate_object

log = logging.getLogger("sluice_operator.local")
RELOAD_EVERY = 1.0


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
    """Feeds the objects of a directory to the same Scheduler and reconcilers as the cluster manager.

    It keeps only the loaded files (`objects`); all per-object memory lives in the reconcilers, keyed
    by a local uid (`local:<kind>/<namespace>/<name>`), and all timing in the Scheduler.
    """

    def __init__(self, policies_dir: Path, decisions_dir: Path, signals: SignalReader,
                 metrics: OperatorMetrics | None = None) -> None:
        self.policies_dir = policies_dir
        self.sink = DirectorySink(decisions_dir)
        self.events = LogEvents()
        self.metrics = metrics or OperatorMetrics()
        self.signals = signals
        self.namespaces = NamespaceView()
        self.circuits = CircuitReconciler(
            CircuitCycle(signals, self.sink, self.events, self.metrics, namespaces=self.namespaces.view),
            default_interval=RELOAD_EVERY)
        self.policies = PolicyReconciler(
            PolicyCycle(signals, self.sink, self.events, self.metrics, circuits=self.circuits.document),
            default_interval=RELOAD_EVERY)
        self.dispatch = Dispatcher(self.policies, self.circuits, self.metrics)
        self.scheduler = Scheduler(self.dispatch, concurrency=8)
        self.objects: dict[str, BackpressurePolicy | CircuitBreaker] = {}
        self._seen: tuple[tuple[str, float, int], ...] | None = None
        self._problems: list[str] = []
        self._origin: dict[str, str] = {}

    def _bodies(self) -> dict[str, tuple[Kind, str | None, str, dict[str, Any]]]:
        """The loaded objects as the scheduler keeps them (plain bodies), circuits widened for local use.

        Locally there are no namespace labels to select on, so a circuit is published where it is
        listed (or selected by name) and in the namespace of every policy whose circuitBreakerRef
        names it, so those producers find circuit.json next to their decision.
        """
        referencing: dict[str, set[str]] = {}
        for obj in self.objects.values():
            if isinstance(obj, BackpressurePolicy) and obj.spec.circuit_breaker_ref:
                referencing.setdefault(obj.spec.circuit_breaker_ref, set()).add(obj.metadata.namespace or "default")
        bodies: dict[str, tuple[Kind, str | None, str, dict[str, Any]]] = {}
        for key, obj in self.objects.items():
            body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
            if isinstance(obj, CircuitBreaker):
                listed = list(obj.spec.namespaces or [])
                extra = sorted(referencing.get(obj.metadata.name, set()) - set(listed))
                if extra:
                    body.setdefault("spec", {})["namespaces"] = listed + extra
                bodies[key] = ("CircuitBreaker", None, obj.metadata.name, body)
            else:
                bodies[key] = ("BackpressurePolicy", obj.metadata.namespace or "default", obj.metadata.name, body)
        return bodies

    def _sync_namespaces(self) -> None:
        names: set[str] = set()
        for obj in self.objects.values():
            if isinstance(obj, BackpressurePolicy):
                names.add(obj.metadata.namespace or "default")
            else:
                names.update(obj.spec.namespaces or [])
        self.namespaces.replace(names)

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
        for key in list(self.objects):
            if key not in objects:
                # An object whose file is broken right now keeps its last valid version.
                if self._origin.get(key) in report.broken_files:
                    continue
                log.info("%s removed", key)
                self.objects.pop(key)
                entry = self.scheduler.remove(f"local:{key}")
                if entry is not None and entry.kind == "CircuitBreaker":
                    await self.circuits.forget(entry)
                elif entry is not None:
                    self.policies.forget(entry)
        self._origin.update(report.origin)
        changed: list[str] = []
        for key, obj in objects.items():
            old = self.objects.get(key)
            if old is None:
                log.info("%s loaded", key)
            elif old != obj:
                log.info("%s changed", key)
                changed.append(key)
            self.objects[key] = obj
        self._sync_namespaces()
        fresh: list[ScheduleEntry] = []
        for key, (kind, namespace, name, body) in self._bodies().items():
            known = self.scheduler.objects.get(f"local:{key}")
            entry = self.scheduler.upsert(kind, namespace, name, f"local:{key}", body)
            if (known is None or key in changed) and not entry.running:  # (a running one picks it up next time)
                entry.running = True  # ours until evaluated below; set before any await, so no race
                fresh.append(entry)
        await self._evaluate_in_order(fresh)
        return report

    async def _evaluate_in_order(self, entries: list[ScheduleEntry]) -> None:
        """New and changed objects at once, circuits first, so a new policy embeds its circuit's state."""
        try:
            for kind in Kinds:
                for entry in sorted(entries, key=lambda e: e.uid):
                    if entry.kind == kind and not entry.deleted:
                        entry.due = self.scheduler.clock() + await self.dispatch(entry)
        finally:
            for entry in entries:
                entry.running = False
                self.scheduler.reschedule(entry, entry.due)  # the Scheduler's turn again

    async def run_once(self) -> None:
        """Every object once, circuits first (policies embed this cycle's circuit state)."""
        for kind in Kinds:
            for entry in sorted(self.scheduler.objects.values(), key=lambda e: e.uid):
                if entry.kind == kind:
                    await self.dispatch(entry)

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> int:
        await self.reload(force=True)
        if not self.objects:
            log.warning("no BackpressurePolicy or CircuitBreaker found in %s", self.policies_dir)
        if once:
            await self.run_once()
            return 1 if self._problems else 0
        self.metrics.leader.set(1)  # the only replica: it always acts
        scheduler_stop = asyncio.Event()
        scheduler = asyncio.ensure_future(self.scheduler.run(scheduler_stop))
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=RELOAD_EVERY)
                await self.reload()
        finally:
            scheduler_stop.set()
            self.scheduler.poke(lambda e: False)
            await scheduler
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
                 args.decisions_dir, args.prometheus or (settings.prometheus.url if explicit else "(none)"))
        return await operator.run(stop, once=args.once)

    return asyncio.run(main())


__all__ = ["LocalOperator", "load_directory", "run_local"]
