"""A small async Kubernetes REST client for the writes Sluice makes itself.

Kopf watches and dispatches; status, ConfigMaps and Leases are written here so that every request
has an explicit timeout, retries are ours, and tests can count exactly what we send.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, overload

import aiohttp

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
#: A token file is re-read at most this often (and at once on a 401): projected ServiceAccount tokens
#: are rotated by the kubelet long before they expire; client-go re-reads on the same order.
TOKEN_RECHECK_SECONDS = 10.0
#: Leader election's writes bypass the write limit: a queue of ConfigMap writes must not cost the Lease.
LEASES = "/apis/coordination.k8s.io/"
IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate (a subset of kopf.ConnectionInfo)."""

    server: str
    token: str | None = None
    ca_path: str | None = None
    ca_data: str | None = None
    insecure: bool = False
    certificate_path: str | None = None
    private_key_path: str | None = None
    default_namespace: str | None = None
    token_path: str | None = None  # a token file that is re-read when it changes (rotated tokens)

    def current_token(self) -> str | None:
        """The token to send now: the file's content when there is a token file, else the fixed one."""
        if self.token_path:
            try:
                with open(self.token_path, encoding="utf-8") as handle:
                    return handle.read().strip() or self.token
            except OSError as error:
                log.warning("cannot read the token file %s (%s); using the last token read", self.token_path, error)
        return self.token

    @classmethod
    def from_kopf(cls, info: Any, token_path: str | None = None) -> Connection:
        """Adopt what Kopf's login handlers found (kubeconfig, in-cluster service account, ...)."""
        ca_data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        return cls(
            server=str(info.server).rstrip("/"),
            token=info.token,
            ca_path=str(info.ca_path) if info.ca_path else None,
            ca_data=ca_data,
            insecure=bool(info.insecure),
            certificate_path=str(info.certificate_path) if info.certificate_path else None,
            private_key_path=str(info.private_key_path) if info.private_key_path else None,
            default_namespace=info.default_namespace,
            token_path=token_path,
        )


class _StatusIs:
    """A read-only flag of an `ApiError`: true when its HTTP status is `code`."""

    def __init__(self, code: HTTPStatus) -> None:
        self.code = code

    @overload
    def __get__(self, error: None, owner: type[ApiError]) -> _StatusIs: ...
    @overload
    def __get__(self, error: ApiError, owner: type[ApiError]) -> bool: ...
    def __get__(self, error: ApiError | None, owner: type[ApiError]) -> bool | _StatusIs:
        return self if error is None else error.status == self.code


class ApiError(Exception):
    """A non-2xx answer, with the API server's own Status reason and message."""

    not_found = _StatusIs(HTTPStatus.NOT_FOUND)
    conflict = _StatusIs(HTTPStatus.CONFLICT)
    unauthorized = _StatusIs(HTTPStatus.UNAUTHORIZED)
    forbidden = _StatusIs(HTTPStatus.FORBIDDEN)

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def namespace_terminating(self) -> bool:
        """Kubernetes refuses new objects in a Terminating namespace with 403 and this text."""
        return self.forbidden and "being terminated" in self.message


def resource_path(
    api_version: str, plural: str, *, namespace: str | None = None, name: str | None = None,
    subresource: str | None = None,
) -> str:
    """/api/v1/... for the core group, /apis/<group>/<version>/... otherwise."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class WriteLimiter:
    """A token bucket for our own writes: `qps` per second sustained, `burst` at once; qps 0 is no limit.

    Reservation style: each write takes a token now and, when the bucket is in debt, waits until the
    debt is paid, so concurrent writers are spaced 1/qps apart in arrival order without a lock.
    """

    def __init__(self, qps: float, burst: int, *, clock: Any = time.monotonic) -> None:
        self.qps = qps
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._updated = clock()
        self.waits = 0
        self.waited_seconds = 0.0

    def reserve(self) -> float:
        """Take one token; return how long the caller must wait before using it."""
        if self.qps <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.qps)
        self._updated = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            self.waits += 1
            self.waited_seconds += delay
            await asyncio.sleep(delay)


class KubeClient:
    """JSON in, JSON out; every call bounded by `timeout` seconds; writes limited to `qps` / `burst`."""

    def __init__(self, connection: Connection, *, timeout: float = 10.0, qps: float = 100.0,
                 burst: int = 200) -> None:
        self.connection = connection
        self.timeout = timeout
        self.limiter = WriteLimiter(qps, burst)
        #: answers 429 Too Many Requests (API Priority and Fairness rejected the request)
        self.too_many_requests = 0
        self._session: aiohttp.ClientSession | None = None
        self.requests_sent = 0
        self.writes_sent = 0
        self._token = connection.token
        self._token_read_at: float | None = None
        #: Called with (method, status code) after every answer (the operator's request metrics).
        self.on_response: Callable[[str, int], None] | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.connection.server.startswith("https"):
            return False
        if self.connection.insecure:
            return False
        context = ssl.create_default_context(cafile=self.connection.ca_path, cadata=self.connection.ca_data)
        if self.connection.certificate_path and self.connection.private_key_path:
            context.load_cert_chain(self.connection.certificate_path, self.connection.private_key_path)
        return context

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json", "User-Agent": "sluice-operator"}
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=32)
            self._session = aiohttp.ClientSession(headers=headers, connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _current_token(self, *, force: bool = False) -> str | None:
        """The bearer token, re-read from the token file every TOKEN_RECHECK_SECONDS or when forced."""
        if not self.connection.token_path:
            return self._token
        now = time.monotonic()
        if force or self._token_read_at is None or now - self._token_read_at >= TOKEN_RECHECK_SECONDS:
            token = await asyncio.to_thread(self.connection.current_token)
            if token and token != self._token and self._token_read_at is not None:
                log.info("the token file %s changed; using the new token", self.connection.token_path)
            self._token = token
            self._token_read_at = now
        return self._token

    async def request(
        self, method: str, path: str, *, body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None, content_type: str = "application/json",
    ) -> JSON:
        """Send one request; raise ApiError on a non-2xx answer, asyncio.TimeoutError on a timeout.

        A 401 re-reads the token file once and retries with the new token if it changed: a rotated
        or replaced ServiceAccount token must not need an operator restart.
        """
        token = await self._current_token()
        try:
            return await self._send(method, path, body, params, content_type, token)
        except ApiError as error:
            if not error.unauthorized or not self.connection.token_path:
                raise
            fresh = await self._current_token(force=True)
            if fresh == token:
                raise ApiError(401, error.reason, f"{error.message} (the token in {self.connection.token_path} "
                               "is not accepted; it may have expired or its ServiceAccount was recreated)") from None
            return await self._send(method, path, body, params, content_type, fresh)

    async def _send(self, method: str, path: str, body: Mapping[str, Any] | None,
                    params: Mapping[str, str] | None, content_type: str, token: str | None) -> JSON:
        if method != "GET" and not path.startswith(LEASES):
            await self.limiter.acquire()  # Lease renewals never queue behind a burst of writes
        session = await self._get_session()
        self.requests_sent += 1
        if method != "GET":
            self.writes_sent += 1
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with asyncio.timeout(self.timeout):
            async with session.request(
                method, self.connection.server + path, data=data, params=params, headers=headers
            ) as response:
                if self.on_response is not None:
                    self.on_response(method, response.status)
                text = await response.text()
                payload: JSON = {}
                if text:
                    try:
                        payload = json.loads(text)
                    except ValueError:
                        payload = {"message": text[:500]}
                if response.status == 429:
                    self.too_many_requests += 1
                if response.status >= 400:
                    raise ApiError(
                        response.status,
                        str(payload.get("reason") or response.reason or ""),
                        str(payload.get("message") or text[:500]),
                    )
                return payload

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: Mapping[str, Any]) -> JSON:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: Mapping[str, Any]) -> JSON:
        return await self.request("PUT", path, body=body)

    async def patch(self, path: str, body: Mapping[str, Any]) -> JSON:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def delete(self, path: str) -> JSON:
        return await self.request("DELETE", path)
