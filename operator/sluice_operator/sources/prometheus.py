"""Backlog and failure signals from Prometheus.

:class:`PrometheusClient` runs instant queries without blocking the event loop and classifies every
answer into a :class:`~sluice_operator.sources.reading.Reading` (a number, "unknown for now", or
"your spec is wrong"), so the fallback policy, not a library's hidden retries, decides what happens
next. The safe query builder for structured specs lives in `lag_query` and is re-exported here.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from sluice_operator.api.policy import Aggregate, EmptyResult
from sluice_operator.sources.reading import MESSAGE_LIMIT, Reading, SignalStatus, truncate

__all__ = ["NO_RETRY", "Answer", "PrometheusClient", "classify"]


# -- reading Prometheus ---------------------------------------------------------

#: urllib3 retries switched off: prometheus-api-client's default re-sends on 5xx
#: with backoff, which would blow the per-call timeout. Our fallback policy retries.
NO_RETRY = Retry(total=0, read=False, redirect=False, raise_on_status=False)


@dataclass(frozen=True, slots=True)
class Answer:
    """What one HTTP request produced (input of :func:`classify`); shared by all callers of a query."""

    http_status: int = 0
    body: Any = None  # parsed JSON, or None when the body was not JSON
    text: str = ""  # start of a non-JSON body, for the message
    failure: Reading | None = None  # transport failure: no HTTP answer at all


def _num(raw: Any) -> float:
    # Prometheus encodes sample values as strings: "1234", "NaN", "+Inf", "-Inf".
    return float(raw)


def _describe(metric: Any) -> str:
    if not isinstance(metric, dict) or not metric:
        return "{}"
    name = metric.get("__name__", "")
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{labels}}}"


def classify(
    answer: Answer,
    *,
    aggregate: Aggregate | None = None,
    empty_result: EmptyResult = "unavailable",
) -> Reading:
    """Turn one HTTP answer into a :class:`Reading` (pure; unit-testable)."""
    if answer.failure is not None:
        return answer.failure
    body = answer.body if isinstance(answer.body, dict) else None
    code = answer.http_status
    if body is None:
        snippet = answer.text.strip() or "(empty body)"
        if code == 200:
            return _unavailable("BadResponse", f"Prometheus answered 200 with a non-JSON body: {snippet}")
        return _unavailable("HTTPError", f"HTTP {code}: {snippet}")

    raw_warnings = body.get("warnings") or []
    warnings = [str(w) for w in raw_warnings] if isinstance(raw_warnings, list) else [str(raw_warnings)]
    partial = bool(warnings)

    if code != 200 or body.get("status") != "success":
        error_type = str(body.get("errorType", ""))
        error = str(body.get("error", "")) or f"HTTP {code}"
        if error_type == "bad_data" and code == 400:
            return Reading(SignalStatus.SPEC_ERROR, None, "BadQuery", truncate(error), partial)
        if error_type == "timeout":
            return _unavailable("Timeout", f"Prometheus gave up evaluating the query: {error}", partial)
        if error_type == "execution" or code == 422:
            return _unavailable("ExecutionError", error, partial)
        return _unavailable("HTTPError", f"HTTP {code} {error_type}: {error}".replace("  ", " "), partial)

    data = body.get("data")
    if not isinstance(data, dict):
        return _unavailable("BadResponse", "Prometheus answered success without a data object", partial)
    result_type = data.get("resultType")
    result = data.get("result")
    try:
        if result_type == "scalar" and isinstance(result, list) and len(result) == 2:
            values = [_num(result[1])]
        elif result_type == "vector" and isinstance(result, list):
            if len(result) > 1 and aggregate is None:
                shown = ", ".join(_describe(item.get("metric")) for item in result[:3])
                more = ", ..." if len(result) > 3 else ""
                return Reading(
                    SignalStatus.SPEC_ERROR,
                    reason="MultipleSeries",
                    message=truncate(
                        f"query returned {len(result)} series but one number is needed: set "
                        f"`aggregate: max` or `aggregate: sum`, or narrow the query to one series "
                        f"(got {shown}{more})"
                    ),
                    partial=partial,
                    series=len(result),
                )
            values = [_num(item["value"][1]) for item in result]
        else:
            return Reading(
                SignalStatus.SPEC_ERROR,
                reason="BadResultType",
                message=truncate(
                    f"query returns a {result_type} result; an instant vector or scalar is needed "
                    "(wrap a range vector in e.g. max_over_time(...))"
                ),
                partial=partial,
            )
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as err:
        return _unavailable("BadResponse", f"cannot read sample values from Prometheus: {err!r}", partial)

    series = len(values)
    note = truncate("Prometheus warned: " + "; ".join(warnings)) if partial else ""
    if not values:
        if empty_result == "zero":
            return Reading(SignalStatus.OK, 0.0, "EmptyAsZero", note or "no series; emptyResult: zero",
                           partial, 0)
        return _unavailable(
            "Empty",
            "query returned no series: the value is unknown, not zero "
            "(set emptyResult: zero to read no series as 0)",
            partial,
        )
    if not all(math.isfinite(v) for v in values):
        bad = sum(1 for v in values if not math.isfinite(v))
        return Reading(SignalStatus.UNAVAILABLE, None, "NaN",
                       truncate(f"{bad} of {series} series is NaN or infinite"), partial, series)
    value = values[0] if series == 1 else (max(values) if aggregate == "max" else math.fsum(values))
    return Reading(SignalStatus.OK, value, "PartialData" if partial else "Ok", note, partial, series)


def _unavailable(reason: str, message: str, partial: bool = False) -> Reading:
    return Reading(SignalStatus.UNAVAILABLE, reason=reason, message=truncate(message), partial=partial)


@dataclass(slots=True)
class _CacheEntry:
    answer: Answer
    expires: float


class PrometheusClient:
    """Instant PromQL queries against one Prometheus, without blocking the event loop.

    prometheus-api-client's session does the HTTP (headers, auth, TLS); the
    blocking call runs in a bounded thread pool and is bounded twice: by the
    HTTP timeout and by ``asyncio.wait_for``. Callers asking the same query
    within ``cache_ttl`` seconds, or while it is in flight, share one request.
    """

    def __init__(
        self,
        url: str,
        *,
        max_workers: int = 4,
        cache_ttl: float = 1.0,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        verify_tls: bool | str = True,
        auth: tuple[str, str] | None = None,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if cache_ttl < 0 or timeout <= 0:
            raise ValueError("cache_ttl must be >= 0 and timeout > 0")
        self.url = url.rstrip("/")
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        self._prom = PrometheusConnect(
            url=self.url,
            headers=dict(headers) if headers else {},
            disable_ssl=verify_tls is False,
            retry=NO_RETRY,
            auth=auth,
        )
        session = self._prom._session
        if isinstance(verify_tls, str):
            session.verify = verify_tls  # a CA bundle path
        # Replace the library's adapter: no retries, and a pool as large as our thread pool.
        session.mount(self.url, HTTPAdapter(max_retries=NO_RETRY, pool_maxsize=max(max_workers, 1)))
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sluice-prom")
        self._count_lock = threading.Lock()
        self._requests_sent = 0
        self._cache: dict[str, _CacheEntry] = {}
        self._inflight: dict[str, asyncio.Future[Answer]] = {}
        self._readings: dict[tuple[int, Aggregate | None, EmptyResult], tuple[Answer, Reading]] = {}
        self._closed = False

    @property
    def requests_sent(self) -> int:
        """HTTP requests actually sent to Prometheus (cache hits and joins excluded)."""
        with self._count_lock:
            return self._requests_sent

    async def read(
        self,
        query: str,
        *,
        aggregate: Aggregate | None = None,
        empty_result: EmptyResult = "unavailable",
        timeout: float | None = None,  # also bounds the HTTP call in the worker
    ) -> Reading:
        """Evaluate ``query`` now and classify the answer; never raises for Prometheus' sake."""
        limit = self.timeout if timeout is None else timeout
        if self._closed:
            return _unavailable("Closed", "the Prometheus source is closed")
        answer = self._cached(query)
        if answer is None:
            future = self._inflight.get(query)
            if future is None:
                future = asyncio.ensure_future(self._fetch(query, limit))
                self._inflight[query] = future
                future.add_done_callback(functools.partial(self._settle, query))
            try:
                async with asyncio.timeout(limit):  # cheaper than wait_for for the many callers joining
                    answer = await asyncio.shield(future)
            except TimeoutError:
                answer = _timeout_answer(limit)
        return self._classify(answer, aggregate, empty_result)

    def _classify(self, answer: Answer, aggregate: Aggregate | None, empty_result: EmptyResult) -> Reading:
        """`classify`, once per shared answer and reading options (Readings are immutable)."""
        key = (id(answer), aggregate, empty_result)
        hit = self._readings.get(key)
        if hit is not None and hit[0] is answer:
            return hit[1]
        reading = classify(answer, aggregate=aggregate, empty_result=empty_result)
        if len(self._readings) >= 256:
            self._readings.clear()  # the live set is one answer per query and option set
        self._readings[key] = (answer, reading)
        return reading

    def _cached(self, query: str) -> Answer | None:
        entry = self._cache.get(query)
        if entry is None:
            return None
        if entry.expires > time.monotonic():
            return entry.answer
        del self._cache[query]
        return None

    def _settle(self, query: str, future: asyncio.Future[Answer]) -> None:
        if self._inflight.get(query) is future:
            del self._inflight[query]
        if self.cache_ttl <= 0 or future.cancelled() or future.exception() is not None:
            return
        now = time.monotonic()
        if len(self._cache) > 1024:  # drop expired entries now and then; the live set is small
            self._cache = {q: e for q, e in self._cache.items() if e.expires > now}
        self._cache[query] = _CacheEntry(future.result(), now + self.cache_ttl)

    async def _fetch(self, query: str, limit: float) -> Answer:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._request, query, limit), limit
            )
        except TimeoutError:
            return _timeout_answer(limit)
        except RuntimeError as err:  # executor shut down by close()
            return Answer(failure=_unavailable("Closed", str(err)))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # really cancelled: propagate
            # close() dropped our queued request; waiters get an answer, not a CancelledError.
            return Answer(failure=_unavailable("Closed", "the Prometheus source was closed"))

    def _request(self, query: str, limit: float) -> Answer:
        """Blocking: one GET /api/v1/query through the library's session (runs in a worker)."""
        with self._count_lock:
            self._requests_sent += 1
        prom = self._prom
        session = prom._session
        try:
            response = session.request(
                method="GET",
                url=f"{self.url}/api/v1/query",
                # Prometheus stops evaluating a bit before we stop waiting, and says so.
                params={"query": query, "timeout": f"{max(limit * 0.9, 0.05):.3f}"},
                headers=prom.headers,
                auth=prom.auth,
                verify=session.verify,
                cert=session.cert,
                timeout=(limit, limit),
            )
        except requests.Timeout:
            return _timeout_answer(limit)
        except requests.ConnectionError as err:
            return Answer(failure=_unavailable("ConnectionError", f"cannot reach {self.url}: {err}"))
        except requests.RequestException as err:
            return Answer(failure=_unavailable("RequestError", f"request to {self.url} failed: {err}"))
        try:
            body = response.json()
            text = ""
        except ValueError:
            body, text = None, response.text[:MESSAGE_LIMIT]
        return Answer(http_status=response.status_code, body=body, text=text)

    def close(self) -> None:
        """Stop the workers (queued requests are dropped) and close the HTTP session."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._prom.close()

    async def aclose(self) -> None:
        """:meth:`close`, then wait (off the loop) for requests already running; each is time-bounded."""
        self.close()
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _timeout_answer(limit: float) -> Answer:
    return Answer(failure=_unavailable("Timeout", f"no answer from Prometheus within {limit:g}s"))
