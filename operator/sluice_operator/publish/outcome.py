"""The result of one publish attempt, which the reconciler turns into conditions and Events."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PublishOutcome(enum.Enum):
    UNCHANGED = "unchanged"      # the target already holds these bytes: no write
    CREATED = "created"
    UPDATED = "updated"
    CONFLICT = "conflict"        # the target exists and Sluice does not own it: left untouched
    TERMINATING = "terminating"  # the namespace is being deleted: writes are refused
    FAILED = "failed"            # a transient error; retried on the next cycle

    @property
    def ok(self) -> bool:
        return self in (PublishOutcome.UNCHANGED, PublishOutcome.CREATED, PublishOutcome.UPDATED)

    @property
    def wrote(self) -> bool:
        return self in (PublishOutcome.CREATED, PublishOutcome.UPDATED)


@dataclass(frozen=True)
class PublishResult:
    outcome: PublishOutcome
    target: str
    message: str = ""
