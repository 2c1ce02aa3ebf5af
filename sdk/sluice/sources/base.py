"""Decision sources: where a producer gets its Decision and CircuitState documents.

A source keeps the latest *valid* documents in memory and is fed by a background thread (a
directory poller, a Kubernetes watch) or by the caller (`StaticDecisions`). The producer's hot path
only compares the integer `DecisionSource.version` with the one it last saw, so producing never
does I/O and never takes a lock. A bad document never replaces a good one: the problem is logged
once and counted, and the last good document stays until it goes stale.

Implementations live beside it: `sluice.sources.directory` (a ConfigMap mounted as a volume, or local
mode's directory) and `sluice.sources.configmap` (the Kubernetes API watch; imports the ``kubernetes``
package only when a source is created).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sluice.decision import CircuitState, Decision
from sluice.stale import DEFAULT_MAX_CLOCK_SKEW_S, MAX_TTL_SECONDS, Tracked, track

__all__ = ["LOGGER_NAME", "DecisionSource", "SourceView", "StaticDecisions"]

#: One logger for every decision source, so an operator can turn their messages up or down together.
LOGGER_NAME = "sluice.sources"
log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True, slots=True)
class SourceView:
    """An immutable snapshot of what a source holds."""

    version: int
    decision: Tracked[Decision] | None
    circuits: tuple[Tracked[CircuitState], ...]
    errors: int
    last_error: str | None
    connected: bool
    description: str


class DecisionSource:
    """Base class: the in-memory store every source feeds, with change counting and error logging."""

    #: Bumped on every change; the producer polls it without a lock (an int read is atomic).
    version: int

    def __init__(
        self, description: str, *, max_ttl: float = MAX_TTL_SECONDS, max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW_S
    ) -> None:
        if max_clock_skew < 0:
            raise ValueError("max_clock_skew must be >= 0")
        self.description = description
        self.version = 0
        self._max_ttl = max_ttl
        #: A document that expired longer ago than this (by the wall clock) is stale on arrival.
        self.max_clock_skew = max_clock_skew
        self._cond = threading.Condition()
        self._decision: Tracked[Decision] | None = None
        self._circuits: dict[str, Tracked[CircuitState]] = {}
        self._errors = 0
        self._last_error: str | None = None
        self._logged: dict[str, str] = {}
        self._connected = True

    # -- reading -------------------------------------------------------------------------------

    def view(self) -> SourceView:
        """A consistent snapshot of the documents held now."""
        with self._cond:
            return SourceView(
                version=self.version,
                decision=self._decision,
                circuits=tuple(self._circuits[key] for key in sorted(self._circuits)),
                errors=self._errors,
                last_error=self._last_error,
                connected=self._connected,
                description=self.description,
            )

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Block until ``predicate(view)`` is true (re-checked on every change) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(self.view()):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def wait_for_decision(self, timeout: float = 5.0) -> bool:
        """Block until a decision document is held (startup helper)."""
        return self.wait_for(lambda v: v.decision is not None, timeout)

    # -- lifecycle (sources with threads override) ----------------------------------------------

    def start(self) -> DecisionSource:
        """Start background work; a no-op for sources without any."""
        return self

    def close(self) -> None:
        """Stop background work."""

    def __enter__(self) -> DecisionSource:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- feeding (for subclasses) ---------------------------------------------------------------

    def _bump(self) -> None:
        self.version += 1
        self._cond.notify_all()

    def _accept_decision(self, doc: Decision, origin: str) -> None:
        with self._cond:
            tracked = track(
                doc, self._decision, time.monotonic(), origin, self._max_ttl, max_clock_skew=self.max_clock_skew
            )
            if tracked is not self._decision:
                self._decision = tracked
                self._bump()

    def _accept_circuit(self, key: str, doc: CircuitState, origin: str) -> None:
        with self._cond:
            previous = self._circuits.get(key)
            tracked = track(doc, previous, time.monotonic(), origin, self._max_ttl, max_clock_skew=self.max_clock_skew)
            if tracked is not previous:
                self._circuits[key] = tracked
                self._bump()

    def _drop_circuit(self, key: str) -> None:
        with self._cond:
            if self._circuits.pop(key, None) is not None:
                self._bump()

    def _drop_circuits_except(self, keys: Iterable[str]) -> None:
        keep = set(keys)
        with self._cond:
            gone = [key for key in self._circuits if key not in keep]
            for key in gone:
                del self._circuits[key]
            if gone:
                self._bump()

    def _set_connected(self, connected: bool) -> None:
        with self._cond:
            if self._connected != connected:
                self._connected = connected
                self._bump()

    def _report_error(self, key: str, problem: str) -> None:
        """Count a problem with ``key``; log it only when it differs from the last one logged."""
        with self._cond:
            self._errors += 1
            self._last_error = f"{key}: {problem}"
            first = self._logged.get(key) != problem
            self._logged[key] = problem
            self._bump()
        if first:
            log.warning("sluice %s: %s: %s (keeping the last good document)", self.description, key, problem)

    def _clear_error(self, key: str) -> None:
        with self._cond:
            if self._logged.pop(key, None) is not None:
                log.info("sluice %s: %s is readable again", self.description, key)


class StaticDecisions(DecisionSource):
    """Documents set by the caller: for tests and local use without an operator."""

    def __init__(
        self,
        decision: Decision | None = None,
        circuits: Iterable[CircuitState] = (),
        *,
        max_ttl: float = MAX_TTL_SECONDS,
        max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW_S,
    ) -> None:
        super().__init__("static", max_ttl=max_ttl, max_clock_skew=max_clock_skew)
        if decision is not None:
            self.set_decision(decision)
        for circuit in circuits:
            self.set_circuit(circuit)

    def set_decision(self, decision: Decision) -> None:
        """Replace the decision (counts as received now)."""
        self._accept_decision(decision, "static")

    def set_circuit(self, circuit: CircuitState) -> None:
        """Add or replace a circuit document, keyed by its name."""
        self._accept_circuit(circuit.name, circuit, "static")

    def remove_circuit(self, name: str) -> None:
        """Forget a circuit document."""
        self._drop_circuit(name)

    def clear(self) -> None:
        """Forget every document (a producer then sees "no document": stale)."""
        with self._cond:
            self._decision = None
            self._circuits.clear()
            self._bump()
