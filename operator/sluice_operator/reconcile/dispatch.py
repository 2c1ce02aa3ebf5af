"""The one way from the Scheduler to the reconcilers: each object goes to the reconciler of its kind.

The cluster manager and local mode both give their Scheduler a `Dispatcher`, so an object is evaluated
the same way in both; the manager adds its health bookkeeping through `on_cycle`.
"""

from __future__ import annotations

from collections.abc import Callable

from sluice_operator.metrics import OperatorMetrics
from sluice_operator.reconcile.circuit import CircuitReconciler
from sluice_operator.reconcile.policy import PolicyReconciler
from sluice_operator.scheduler import Kind, ScheduleEntry

__all__ = ["Dispatcher", "Reconciler"]

Reconciler = PolicyReconciler | CircuitReconciler


class Dispatcher:
    """Evaluates each scheduled object with its kind's reconciler, and counts the cycles that ran."""

    def __init__(
        self, policies: PolicyReconciler, circuits: CircuitReconciler, metrics: OperatorMetrics, *,
        on_cycle: Callable[[], None] = lambda: None,
    ) -> None:
        self.reconcilers: dict[Kind, Reconciler] = {policies.kind: policies, circuits.kind: circuits}
        self.metrics = metrics
        self.on_cycle = on_cycle
        self.cycles = 0

    async def __call__(self, entry: ScheduleEntry) -> float:
        """One evaluation; the seconds until the next. An unusable spec runs no cycle (and counts as
        none): it is looked at again after its reconciler's default interval."""
        reconciler = self.reconcilers[entry.kind]
        interval = await reconciler.evaluate(entry)
        if interval is None:
            return reconciler.default_interval
        self.cycles += 1
        self.metrics.last_cycle.set_to_current_time()
        self.on_cycle()
        return interval
