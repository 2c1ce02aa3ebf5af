"""Test hooks of the emulator: the request log entry and injected faults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any

import aiohttp.web

from tests.support.k8s_emulator_errors import REASONS, ApiError
from tests.support.k8s_emulator_http import truthy

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class RecordedRequest:
    """One API request as the emulator saw it, with the HTTP status it answered."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str | None
    group: str | None
    version: str | None
    resource: str | None  # the plural, e.g. "configmaps"
    namespace: str | None
    name: str | None
    subresource: str | None
    status: int | None = None
    faulted: bool = False  # answered by an injected fault; nothing was written

    @property
    def is_write(self) -> bool:
        """POST, PUT, PATCH or DELETE."""
        return self.method in WRITE_METHODS

    @property
    def is_watch(self) -> bool:
        """A ?watch=true stream."""
        return self.method == "GET" and truthy(self.query.get("watch"))


@dataclass
class Fault:
    """An injected failure: the next `times` matching requests answer `status` and change nothing."""

    status: int
    times: int | None = 1  # None: forever (until clear_faults)
    methods: frozenset[str] | None = None
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | EllipsisType | None = ...
    predicate: Callable[[RecordedRequest], bool] | None = None
    writes_only: bool = True
    reason: str | None = None
    message: str | None = None
    retry_after: float | None = None
    hits: list[RecordedRequest] = field(default_factory=list)

    @property
    def exhausted(self) -> bool:
        """Whether it has fired `times` times already."""
        return self.times is not None and len(self.hits) >= self.times

    def matches(self, record: RecordedRequest) -> bool:
        """Whether this (not yet exhausted) fault applies to the request."""
        if self.exhausted or (self.writes_only and not record.is_write):
            return False
        if self.methods is not None and record.method not in self.methods:
            return False
        if self.resource is not None and record.resource != self.resource:
            return False
        if self.namespace is not None and record.namespace != self.namespace:
            return False
        if self.name is not None and record.name != self.name:
            return False
        if not isinstance(self.subresource, EllipsisType) and record.subresource != self.subresource:
            return False
        return self.predicate is None or bool(self.predicate(record))

    def render(self, record: RecordedRequest) -> aiohttp.web.Response:
        """The Status response a real server would send for this code."""
        name = record.name or ""
        message = self.message or f"injected fault for {record.method} {record.path}"
        error = ApiError(self.status, message, reason=self.reason or REASONS.get(self.status),
                         details={"name": name, "kind": record.resource or ""})
        headers = {"Retry-After": str(int(self.retry_after))} if self.retry_after is not None else None
        return aiohttp.web.json_response(error.status_body(), status=self.status, headers=headers)
