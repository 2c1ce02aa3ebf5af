"""HTTP-level plumbing of the emulator: Kubernetes URL parsing and kmock Request construction.

kmock 0.8 parses `/api/v1/namespaces` (the namespaces collection) as a namespace with no resource
and fails; this parser handles the namespaces resource and its `status`/`finalize` subresources.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import kmock


@dataclass(frozen=True)
class ApiPath:
    """A Kubernetes API URL taken apart (handles /api/v1/namespaces/{name}[/status] correctly)."""

    group: str
    version: str | None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_api_path(path: str) -> ApiPath | None:
    """Split /api/... and /apis/... paths; None for anything else (/version, /api, /apis)."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 2 and parts[0] == "apis":
        if len(parts) == 2:
            return ApiPath(group=parts[1], version=None)
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return ApiPath(group=group, version=version)
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    return ApiPath(
        group=group,
        version=version,
        plural=rest[0],
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource="/".join(rest[2:]) or None,
    )


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def _action(path: ApiPath | None, method: str, query: Mapping[str, str]) -> kmock.action | None:
    if path is None or path.plural is None:
        return None
    if method == "GET":
        if truthy(query.get("watch")):
            return kmock.action.WATCH
        return kmock.action.FETCH if path.name else kmock.action.LIST
    if method == "POST" and path.name is None:
        return kmock.action.CREATE
    if method in ("PATCH", "PUT") and path.name is not None:
        return kmock.action.UPDATE
    if method == "DELETE" and path.name is not None:
        return kmock.action.DELETE
    return None


async def parse_request(raw: aiohttp.web.BaseRequest, *, request_id: int) -> kmock.Request:
    """Build kmock's Request with our own URL parsing (kmock 0.8 crashes on /api/v1/namespaces)."""
    body = await raw.read()
    text = body.decode("utf-8", errors="replace")
    try:
        data: Any = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    path = parse_api_path(raw.path)
    resource = None if path is None else kmock.resource(group=path.group, version=path.version,
                                                        plural=path.plural)
    return kmock.Request(
        id=request_id,
        raw_request=raw,
        url=raw.url,
        method=raw.method,
        params=dict(raw.query),
        headers=dict(raw.headers),
        cookies=dict(raw.cookies),
        body=body,
        text=text,
        data=data,
        action=_action(path, raw.method.upper(), raw.query),
        resource=resource,
        namespace=path.namespace if path else None,
        name=path.name if path else None,
        subresource=path.subresource if path else None,
    )
