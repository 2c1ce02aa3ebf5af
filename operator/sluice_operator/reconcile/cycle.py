"""What every evaluation cycle needs, whatever it evaluates."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime

from sluice_operator.metrics import OperatorMetrics
from sluice_operator.reconcile.ports import EventSink, Sink
from sluice_operator.reconcile.signals import Signals


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class Cycle:
    """Signals in; sink, events and metrics out; clocks and the leadership check injected for tests.

    `leading` is asked right before every write, so a replica that lost its Lease mid-cycle never
    publishes.
    """

    signals: Signals
    sink: Sink
    events: EventSink
    metrics: OperatorMetrics
    _: KW_ONLY
    clock: Callable[[], float] = time.monotonic
    wallclock: Callable[[], datetime] = _utcnow
    leading: Callable[[], bool] = lambda: True
