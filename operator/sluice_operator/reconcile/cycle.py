"""What every evaluation cycle needs, whatever it evaluates."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from typing_extensions import TypedDict

from sluice_operator.metrics import OperatorMetrics
from sluice_operator.reconcile.ports import EventSink, Sink
from sluice_operator.reconcile.signals import Signals


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CycleOptions(TypedDict, total=False):
    """Keyword options every cycle accepts (for `**options: Unpack[CycleOptions]`)."""

    clock: Callable[[], float]
    wallclock: Callable[[], datetime]
    leading: Callable[[], bool]


class Cycle:
    """Signals in; sink, events and metrics out; clocks and the leadership check injected for tests.

    `leading` is asked right before every write, so a replica that lost its Lease mid-cycle never
    publishes.
    """

    def __init__(
        self, signals: Signals, sink: Sink, events: EventSink, metrics: OperatorMetrics, *,
        clock: Callable[[], float] = time.monotonic, wallclock: Callable[[], datetime] = _utcnow,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.signals = signals
        self.sink = sink
        self.events = events
        self.metrics = metrics
        self.clock = clock
        self.wallclock = wallclock
        self.leading = leading
