"""What `sluice validate`, local mode and the simulator report: problems as data, never tracebacks.

A problem names the file, the line and the field path where it is known, and what is wrong there in
plain words; an error raised for a file carries all of its problems at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Problem", "ProblemsError"]

P = TypeVar("P", bound="Problem")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one object (or with a file that holds no object at all)."""

    file: str
    message: str
    kind: str | None = None
    name: str | None = None
    path: str = ""
    line: int | None = None

    @property
    def subject(self) -> str:
        """`Kind/name` of the object, or `document` when the document is not an object."""
        if self.kind is None:
            return "document"
        return f"{self.kind}/{self.name or '<unnamed>'}"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        field = f"{self.path}: " if self.path else ""
        return f"{where}: {self.subject}: {field}{self.message}"


class ProblemsError(ValueError, Generic[P]):
    """Raised with every problem found, one a line; `problems` holds them as data."""

    def __init__(self, problems: list[P]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems
