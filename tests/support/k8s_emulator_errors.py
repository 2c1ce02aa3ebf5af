"""Kubernetes-shaped API errors for the emulator.

Clients (Kopf, the `kubernetes` package) decide what to do from the HTTP code *and* the Status body's
`reason`, so every failure the emulator produces is rendered the way a real API server renders it.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

# The `reason` a real API server puts into a Status for each HTTP code (metav1.StatusReason).
REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An API failure; `status_body()` is the exact JSON a real API server would answer with."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: JSON | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code} {reason or REASONS.get(code, 'Unknown')}: {message}")
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details
        self.retry_after = retry_after

    def status_body(self) -> JSON:
        """The metav1.Status object for this error."""
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(plural: str, group: str, name: str | None) -> JSON:
    details: JSON = {"kind": plural}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return details


def _qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    """404 for a missing object, worded like kube-apiserver."""
    return ApiError(404, f'{_qualified(plural, group)} "{name}" not found',
                    details=_details(plural, group, name))


def already_exists(plural: str, group: str, name: str) -> ApiError:
    """409 AlreadyExists for a POST of an existing name."""
    return ApiError(409, f'{_qualified(plural, group)} "{name}" already exists',
                    reason="AlreadyExists", details=_details(plural, group, name))


def conflict(plural: str, group: str, name: str) -> ApiError:
    """409 Conflict for a write against a stale resourceVersion (optimistic concurrency)."""
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {_qualified(plural, group)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        details=_details(plural, group, name),
    )


def namespace_terminating(plural: str, group: str, name: str, namespace: str) -> ApiError:
    """403 for creates in a Terminating namespace (NamespaceLifecycle admission)."""
    details = _details(plural, group, name)
    details["causes"] = [{
        "reason": "NamespaceTerminating",
        "message": f"namespace {namespace} is being terminated",
        "field": "metadata.namespace",
    }]
    return ApiError(
        403,
        f'{_qualified(plural, group)} "{name}" is forbidden: unable to create new content in '
        f"namespace {namespace} because it is being terminated",
        details=details,
    )


def invalid(plural: str, group: str, name: str | None, message: str) -> ApiError:
    """422 Invalid, e.g. a failing JSON-patch `test` op or an immutable field change."""
    what = f'{_qualified(plural, group)} "{name}"' if name else _qualified(plural, group)
    return ApiError(422, f"{what} is invalid: {message}", details=_details(plural, group, name))


def bad_request(message: str) -> ApiError:
    """400 BadRequest (unparsable selectors, bodies, mismatched names)."""
    return ApiError(400, message)


def resource_not_found() -> ApiError:
    """404 for an unknown resource or URL, worded like kube-apiserver."""
    return ApiError(404, "the server could not find the requested resource")


def expired(since: int, oldest: int) -> ApiError:
    """410 Expired for a watch from a compacted resourceVersion."""
    return ApiError(410, f"too old resource version: {since} ({oldest})")
