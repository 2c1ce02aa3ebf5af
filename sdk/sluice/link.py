"""`Link`: the failure router's and the admission machine's way back into the producer.

It holds the producer weakly (a dropped producer is freed at once, no reference cycle) and keeps
those hooks off the producer's public surface; it is the `sluice.routing.RouterHost` and the
`sluice.admission_host.AdmissionHost` of a `sluice.core.ProducerCore`.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from confluent_kafka import KafkaError

from sluice.metrics import Counts
from sluice.pacing import Pacer
from sluice.retry import RetryPolicy
from sluice.routing import Failure

if TYPE_CHECKING:
    from sluice.core import ProducerCore

__all__ = ["Link"]

T = TypeVar("T")


class _Forwarded(Generic[T]):
    """A read-only attribute of `Link` that is the producer's attribute of the same name."""

    def __set_name__(self, owner: type[Link], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, link: None, owner: type[Link]) -> _Forwarded[T]: ...
    @overload
    def __get__(self, link: Link, owner: type[Link]) -> T: ...
    def __get__(self, link: Link | None, owner: type[Link]) -> T | _Forwarded[T]:
        if link is None:
            return self
        value: T = getattr(link._core(), self._name)
        return value


class Link:
    """The router's and the admission machine's way back into the producer (held weakly)."""

    __slots__ = ("_ref",)

    def __init__(self, core: ProducerCore) -> None:
        self._ref = weakref.ref(core)

    def _core(self) -> Any:
        core = self._ref()
        if core is None:
            raise ReferenceError("the producer is gone")
        return core

    # RouterHost
    def resend(self, failure: Failure) -> bool:
        ok: bool = self._core()._resend(failure)
        return ok

    def block_topic(self, topic: str, err: KafkaError) -> None:
        self._core()._block_topic(topic, err)

    def mark_fatal(self) -> None:
        self._core()._mark_fatal()

    def wake(self) -> None:
        core = self._ref()
        if core is not None:
            core._wake()

    def on_throttle(self, event: Any) -> None:
        core = self._ref()
        if core is not None:
            core._on_throttle(event)

    # AdmissionHost: the producer's tallies and settings, read as they are at each use
    counts = _Forwarded[Counts]()
    on_shed = _Forwarded[str]()
    dlq_topic = _Forwarded[str | None]()
    retry = _Forwarded[RetryPolicy]()
    serializing = _Forwarded[bool]()
    pacing_max_wait_s = _Forwarded[float]()

    def pacer(self, idx: int) -> Pacer:
        pacer: Pacer = self._core()._pacers[idx]
        return pacer

    def closed(self) -> bool:
        return bool(self._core()._closed)

    def blocked(self, topic: str, now: float) -> str | None:
        entry = self._core()._blocked.get(topic)
        return entry[1] if entry is not None and now < entry[0] else None

    def throttled_until(self) -> float:
        until: float = self._core()._throttle_until
        return until

    def truncation(self, err: KafkaError) -> int | None:
        cut: int | None = self._core()._router.truncation(err)
        return cut

    def observe_delay(self, priority: str, seconds: float) -> None:
        self._core().metrics.observe_delay(priority, seconds)

    def count_rejected(self, idx: int) -> None:
        self._core()._count_rejected(idx)
