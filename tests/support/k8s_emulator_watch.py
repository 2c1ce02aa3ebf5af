"""Watch plumbing: the change log kept for `?watch=true&resourceVersion=N` and per-stream filters.

A watcher translates store changes the way the apiserver's watch cache does for a filtered stream:
an object that starts matching the selector arrives as ADDED, one that stops matching as DELETED.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from tests.support.k8s_emulator_resources import ResourceSpec
from tests.support.k8s_emulator_selectors import FieldSelector, LabelSelector

JSON = dict[str, Any]
WatchItem = tuple[str, JSON]  # (type, object)


@dataclass(frozen=True)
class ChangeEvent:
    """One committed change: the new (or final) state and the state before it."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    spec: ResourceSpec
    namespace: str | None
    name: str
    obj: JSON
    old: JSON | None


@dataclass(eq=False)
class Watcher:
    """One open watch stream: its filters and the queue the store feeds (None closes it)."""

    spec: ResourceSpec
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    queue: asyncio.Queue[WatchItem | None] = field(default_factory=asyncio.Queue)

    def matches(self, obj: JSON | None) -> bool:
        """Whether an object state is visible through this stream's namespace and selectors."""
        if obj is None:
            return False
        if self.namespace is not None and (obj.get("metadata") or {}).get("namespace") != self.namespace:
            return False
        return self.labels.matches(obj) and self.fields.matches(obj)

    def translate(self, event: ChangeEvent) -> WatchItem | None:
        """The event this stream should see for a change, or None if it is invisible here."""
        if event.spec != self.spec:
            return None
        new_ok = self.matches(event.obj)
        if event.type == "ADDED":
            return ("ADDED", event.obj) if new_ok else None
        if event.type == "DELETED":
            return ("DELETED", event.obj) if new_ok or self.matches(event.old) else None
        old_ok = self.matches(event.old)
        if old_ok and new_ok:
            return ("MODIFIED", event.obj)
        if new_ok:
            return ("ADDED", event.obj)
        if old_ok:
            return ("DELETED", event.obj)
        return None

    def deliver(self, event: ChangeEvent) -> None:
        """Queue the translated event (called in the event-loop thread)."""
        item = self.translate(event)
        if item is not None:
            self.queue.put_nowait(item)

    def close(self) -> None:
        """End the stream: the HTTP side finishes the response when it sees None."""
        self.queue.put_nowait(None)
