"""A recording, fault-injecting HTTP proxy in front of the real kube-apiserver.

The real server decides everything; the proxy only records each request (for the RBAC-usage test and
for counting writes) and, when a test asks, answers in its place with what a real server produces only
under load or churn: a 409, a 500 or 429, a slow answer, a watch dropped mid-stream, 410 Gone on a
resumed watch. The operator talks plain HTTP to the proxy; the proxy talks TLS to the API server and
passes the client's own Authorization header through, so authentication and RBAC stay real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding",
              "upgrade", "proxy-authorization", "te", "trailer"}


@dataclass(frozen=True)
class ApiRequest:
    """What a request means to RBAC: verb, group, resource, subresource, namespace, name."""

    method: str
    path: str
    query: dict[str, str]
    verb: str
    group: str
    version: str
    resource: str
    subresource: str
    namespace: str | None
    name: str | None
    body: Any = None
    status: int = 0
    user_agent: str = ""
    error: str = ""  # the API server's message for an answer >= 400

    @property
    def denied(self) -> bool:
        """A 403 from RBAC (not the 403 a Terminating namespace gives every create)."""
        return self.status == 403 and "being terminated" not in self.error

    @property
    def ref(self) -> str:
        """The emulator-style reference: 'configmaps' for core, 'group/version/plural' otherwise."""
        return self.resource if not self.group else f"{self.group}/{self.version}/{self.resource}"


def classify(method: str, path: str, query: dict[str, str]) -> ApiRequest | None:
    """Parse a Kubernetes API path; None for discovery, /healthz and other non-resource paths."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else ""
    watching = query.get("watch") in ("true", "1")
    verb = {
        "GET": "watch" if watching else ("get" if name else "list"),
        "POST": "create", "PUT": "update", "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }.get(method, method.lower())
    return ApiRequest(method, path, query, verb, group, version, resource, subresource, namespace, name)


@dataclass
class Fault:
    """Answer matching requests in the server's place, `times` times (None: until removed)."""

    status: int | None = None  # answer with this HTTP status and a Status body
    reason: str = ""
    delay: float = 0.0  # wait this long before forwarding
    drop_watch_after: int | None = None  # forward this many bytes of a watch stream, then cut it
    gone_on_resume: bool = False  # a watch with a resourceVersion gets an ERROR event with 410 Gone
    times: int | None = 1
    match: Callable[[ApiRequest], bool] = lambda request: True
    hits: list[ApiRequest] = field(default_factory=list)

    def take(self, request: ApiRequest) -> bool:
        if self.times is not None and len(self.hits) >= self.times:
            return False
        if not self.match(request):
            return False
        self.hits.append(request)
        return True


def matcher(*, resource: str | None = None, method: str | list[str] | None = None, verb: str | None = None,
            name: str | None = None, namespace: str | None = None, subresource: str | None = None,
            watch: bool | None = None) -> Callable[[ApiRequest], bool]:
    methods = [method] if isinstance(method, str) else method

    def match(request: ApiRequest) -> bool:
        return ((resource is None or resource in (request.resource, request.ref))
                and (methods is None or request.method in methods)
                and (verb is None or request.verb == verb)
                and (name is None or request.name == name)
                and (namespace is None or request.namespace == namespace)
                and (subresource is None or request.subresource == subresource)
                and (watch is None or (request.verb == "watch") == watch))
    return match


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class FaultProxy:
    """Runs on its own thread and event loop, so sync tests and operators on any loop can use it."""

    def __init__(self, upstream: str, ca_file: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=ca_file)
        self.requests: list[ApiRequest] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._thread: threading.Thread | None = None
        self._watches: set[asyncio.Transport] = set()
        self.url = ""

    # -- test API --------------------------------------------------------------------------------

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def inject_fault(self, status: int, *, reason: str = "", times: int | None = 1, **match: Any) -> Fault:
        return self.inject(Fault(status=status, reason=reason, times=times, match=matcher(**match)))

    @property
    def open_watches(self) -> int:
        with self._lock:
            return len(self._watches)

    def drop_watches(self) -> int:
        """Cut every open watch stream mid-flight, as an API server restart or a load balancer does."""
        with self._lock:
            transports = list(self._watches)
        if self._loop is not None:
            for transport in transports:
                self._loop.call_soon_threadsafe(transport.close)
        return len(transports)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def recorded(self, **match: Any) -> list[ApiRequest]:
        check = matcher(**match)
        with self._lock:
            return [r for r in self.requests if check(r)]

    def writes(self, **match: Any) -> list[ApiRequest]:
        return [r for r in self.recorded(**match) if r.method in ("POST", "PUT", "PATCH", "DELETE")]

    # -- serving ---------------------------------------------------------------------------------

    def _fault_for(self, request: ApiRequest) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.take(request):
                    return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = {k: v[-1] for k, v in parse_qs(request.query_string, keep_blank_values=True).items()}
        body = await request.read()
        info = classify(request.method, request.path, query)
        parsed_body: Any = None
        if body and request.method != "GET":
            with contextlib.suppress(ValueError):
                parsed_body = json.loads(body)
        fault = self._fault_for(info) if info is not None else None
        if info is not None and fault is not None and fault.status is not None:
            text = f"injected by the test proxy: {fault.reason or fault.status}"
            self._record(info, parsed_body, fault.status, request, text)
            return web.json_response(status_body(fault.status, fault.reason or "InternalError", text),
                                     status=fault.status, headers={"Retry-After": "1"} if fault.status == 429 else None)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if info is not None and fault is not None and fault.gone_on_resume and info.verb == "watch" \
                and info.query.get("resourceVersion") not in (None, "", "0"):
            self._record(info, parsed_body, 410, request)
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await response.prepare(request)
            event = {"type": "ERROR", "object": status_body(410, "Expired", "too old resource version (test proxy)")}
            await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
            return response
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        assert self._session is not None
        upstream = await self._session.request(
            request.method, self.upstream + request.path_qs, data=body or None, headers=headers, ssl=self._ssl,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None), auto_decompress=False,
        )
        if upstream.status >= 400:
            payload = await upstream.read()
            upstream.release()
            if info is not None:
                self._record(info, parsed_body, upstream.status, request, payload.decode(errors="replace")[:500])
            return web.Response(status=upstream.status, body=payload, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP})
        if info is not None:
            self._record(info, parsed_body, upstream.status, request)
        response = web.StreamResponse(status=upstream.status, headers={
            k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP})
        sent = 0
        watching = info is not None and info.verb == "watch" and request.transport is not None
        if watching:
            with self._lock:
                self._watches.add(request.transport)  # type: ignore[arg-type]
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                sent += len(chunk)
                if fault is not None and fault.drop_watch_after is not None and sent >= fault.drop_watch_after:
                    if request.transport is not None:
                        request.transport.close()  # cut mid-stream, as a load balancer would
                    return response
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientError, asyncio.CancelledError):
            pass
        finally:
            upstream.release()
            if watching:
                with self._lock:
                    self._watches.discard(request.transport)  # type: ignore[arg-type]
        return response

    def _record(self, info: ApiRequest, body: Any, status: int, request: web.Request, error: str = "") -> None:
        done = ApiRequest(info.method, info.path, info.query, info.verb, info.group, info.version, info.resource,
                          info.subresource, info.namespace, info.name, body, status,
                          request.headers.get("User-Agent", ""), error)
        with self._lock:
            self.requests.append(done)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        ready = threading.Event()

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None
            port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            self._stopped = asyncio.Event()
            await self._stopped.wait()
            await self._runner.cleanup()
            await self._session.close()

        self._thread = threading.Thread(target=lambda: asyncio.run(serve()), name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)
