"""Kubernetes-style conditions kept in memory and written only when they change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sluice_operator.engine.clock import rfc3339

__all__ = ["Conditions", "Status", "rfc3339"]

Status = Literal["True", "False", "Unknown"]


@dataclass
class Conditions:
    """The current set; `set()` keeps lastTransitionTime when only the message changes."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_status(cls, status: Any) -> Conditions:
        items: dict[str, dict[str, Any]] = {}
        for condition in (status or {}).get("conditions") or []:
            if isinstance(condition, dict) and condition.get("type"):
                items[str(condition["type"])] = dict(condition)
        return cls(items)

    def set(self, type_: str, status: Status, reason: str, message: str = "", generation: int | None = None) -> bool:
        """Set one condition; True when anything a user would notice changed."""
        old = self.items.get(type_)
        message = str(message or "")[:1024]  # never null: the CRD types it as a string
        if old is not None and old.get("status") == status and old.get("reason") == reason \
                and old.get("message") == message and old.get("observedGeneration") == generation:
            return False  # the steady case: no new dict, no clock read
        new: dict[str, Any] = {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": (old.get("lastTransitionTime") if old is not None and old.get("status") == status
                                   else None) or rfc3339(),
        }
        if generation is not None:
            new["observedGeneration"] = generation
        self.items[type_] = new
        return True

    def remove(self, type_: str) -> bool:
        return self.items.pop(type_, None) is not None

    def get(self, type_: str) -> dict[str, Any] | None:
        return self.items.get(type_)

    def is_true(self, type_: str) -> bool:
        item = self.items.get(type_)
        return bool(item and item.get("status") == "True")

    def as_list(self) -> list[dict[str, Any]]:
        order = ["Ready", "Valid", "SignalAvailable", "Published", "Conflict", "PartialData"]
        return sorted(self.items.values(), key=lambda c: (order.index(c["type"]) if c["type"] in order else 99))
