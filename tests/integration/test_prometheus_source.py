"""PrometheusClient against the REAL Prometheus server (plus stubs for error shapes only).

The main paths (values, several series, empty, NaN, syntax errors, outage and
recovery, request sharing, escaping) run against ``/usr/bin/prometheus``
scraping a test exporter. Shapes real Prometheus will not produce on demand
(5xx, warnings, a silent peer) come from tiny loopback stubs.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sluice_operator.sources.lag_query import DEFAULT_LAG_TEMPLATE, build_lag_query
from sluice_operator.sources.prometheus import PrometheusClient
from sluice_operator.sources.reading import Reading, SignalStatus
from tests.support.prometheus import PrometheusServer

real = pytest.mark.prometheus
LAG = "kafka_consumergroup_lag"


@pytest.fixture
def source(prom: PrometheusServer) -> Iterator[PrometheusClient]:
    src = PrometheusClient(prom.url, cache_ttl=0.0, timeout=5.0)
    yield src
    src.close()


def _lag(group: str, topic: str = "t1", partition: str = "0") -> dict[str, str]:
    return {"consumergroup": group, "topic": topic, "partition": partition}


# -- real Prometheus ------------------------------------------------------------


@real
async def test_single_series_value(prom: PrometheusServer, source: PrometheusClient) -> None:
    prom.exporter.set(LAG, 1234, _lag("single"))
    query = f'{LAG}{{consumergroup="single"}}'
    await prom.async_wait_for_value(query, 1234)

    reading = await source.read(query)

    assert reading == Reading(SignalStatus.OK, 1234.0, "Ok", "", False, 1)


@real
async def test_several_series_need_an_aggregate(prom: PrometheusServer, source: PrometheusClient) -> None:
    for partition, lag in (("0", 10), ("1", 250), ("2", 40)):
        prom.exporter.set(LAG, lag, _lag("multi", partition=partition))
    query = f'{LAG}{{consumergroup="multi"}}'
    await prom.async_wait_for_value(f"count({query})", 3)

    plain = await source.read(query)
    assert plain.status is SignalStatus.SPEC_ERROR
    assert plain.reason == "MultipleSeries"
    assert plain.series == 3
    assert "3 series" in plain.message and "aggregate: max" in plain.message
    assert plain.value is None

    biggest = await source.read(query, aggregate="max")
    total = await source.read(query, aggregate="sum")
    assert (biggest.status, biggest.value, biggest.series) == (SignalStatus.OK, 250.0, 3)
    assert (total.status, total.value, total.series) == (SignalStatus.OK, 300.0, 3)


@real
async def test_empty_result_is_unknown_unless_zero_is_asked(source: PrometheusClient) -> None:
    query = f'{LAG}{{consumergroup="nobody-has-this-group"}}'

    unknown = await source.read(query)
    zero = await source.read(query, empty_result="zero")

    assert (unknown.status, unknown.reason, unknown.value) == (SignalStatus.UNAVAILABLE, "Empty", None)
    assert (zero.status, zero.value, zero.series) == (SignalStatus.OK, 0.0, 0)


@real
async def test_series_removed_from_exporter_becomes_empty(
    prom: PrometheusServer, source: PrometheusClient
) -> None:
    prom.exporter.set(LAG, 5, _lag("vanishing"))
    query = f'{LAG}{{consumergroup="vanishing"}}'
    await prom.async_wait_for_value(query, 5)
    assert (await source.read(query)).value == 5.0

    prom.exporter.remove(LAG, _lag("vanishing"))
    await prom.async_wait_for_value(query, None)

    assert (await source.read(query)).reason == "Empty"


@real
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_nan_or_inf_is_unavailable(prom: PrometheusServer, source: PrometheusClient, bad: float) -> None:
    group = f"nan-{bad}"
    prom.exporter.set(LAG, 7, _lag(group, partition="0"))
    prom.exporter.set(LAG, bad, _lag(group, partition="1"))
    query = f'{LAG}{{consumergroup="{group}"}}'
    await prom.async_wait_for_value(f"count({query})", 2)

    one = await source.read(f'{LAG}{{consumergroup="{group}",partition="1"}}')
    folded = await source.read(query, aggregate="max")

    assert (one.status, one.reason) == (SignalStatus.UNAVAILABLE, "NaN")
    assert (folded.status, folded.reason, folded.series) == (SignalStatus.UNAVAILABLE, "NaN", 2)


@real
async def test_scalar_result(source: PrometheusClient) -> None:
    reading = await source.read("scalar(vector(6)) * 7")
    assert (reading.status, reading.value) == (SignalStatus.OK, 42.0)


@real
async def test_range_vector_is_a_spec_error(prom: PrometheusServer, source: PrometheusClient) -> None:
    reading = await source.read(f"{LAG}[1m]")
    assert (reading.status, reading.reason) == (SignalStatus.SPEC_ERROR, "BadResultType")


@real
async def test_syntax_error_carries_prometheus_message(prom: PrometheusServer, source: PrometheusClient) -> None:
    broken = f'sum({LAG}{{consumergroup="g"'
    qs = urllib.parse.urlencode({"query": broken})
    with pytest.raises(urllib.error.HTTPError) as raised:
        await asyncio.to_thread(urllib.request.urlopen, f"{prom.url}/api/v1/query?{qs}", None, 5.0)
    expected = json.loads(raised.value.read())

    reading = await source.read(broken)

    assert expected["errorType"] == "bad_data"
    assert (reading.status, reading.reason) == (SignalStatus.SPEC_ERROR, "BadQuery")
    assert reading.message == expected["error"][:512]
    assert "parse error" in reading.message


@real
async def test_hostile_structured_fields_stay_label_values(
    prom: PrometheusServer, source: PrometheusClient
) -> None:
    hostile = 'g"}) or vector(1) or sum(x{a="'
    for group, lag in ((hostile, 11), ("g", 500), ("a\\b\n\ufffd", 12)):
        prom.exporter.set(LAG, lag, _lag(group, topic="orders.v1"))
        # A topic a careless regex would also match: "." is a wildcard.
        prom.exporter.set(LAG, lag * 1000, _lag(group, topic="ordersXv1"))
    await prom.async_wait_for_value(f'count({LAG}{{topic=~"orders.v1"}})', 6)

    for group, expected in ((hostile, 11.0), ("a\\b\n\ufffd", 12.0)):
        query = build_lag_query(DEFAULT_LAG_TEMPLATE, group, ["orders.v1", "a|b(", "c]"])
        reading = await source.read(query)
        assert (reading.status, reading.value, reading.series) == (SignalStatus.OK, expected, 1), query


@real
async def test_down_then_back(make_prometheus: Callable[..., PrometheusServer]) -> None:
    server = make_prometheus()
    server.exporter.set(LAG, 77, _lag("restart"))
    query = f'{LAG}{{consumergroup="restart"}}'
    await server.async_wait_for_value(query, 77)

    async with PrometheusClient(server.url, cache_ttl=0.0, timeout=2.0) as src:
        assert (await src.read(query)).value == 77.0

        await server.async_stop()
        down = await src.read(query)
        assert (down.status, down.reason) == (SignalStatus.UNAVAILABLE, "ConnectionError")
        assert server.url in down.message

        # Ready is enough: samples from before the stop answer within the lookback delta,
        # otherwise the first new scrape does.
        await server.async_start(wait_for_scrape=False)
        await server.async_wait_for_value(query, 77)
        back = await src.read(query)
        assert (back.status, back.value) == (SignalStatus.OK, 77.0)


@real
async def test_concurrent_reads_share_requests(prom: PrometheusServer) -> None:
    for i in range(3):
        prom.exporter.set(LAG, 100 + i, _lag(f"shared-{i}"))
    queries = [f'{LAG}{{consumergroup="shared-{i}"}}' for i in range(3)]
    await prom.async_wait_for_value(f'count({LAG}{{consumergroup=~"shared-.*"}})', 3)

    async with PrometheusClient(prom.url, cache_ttl=30.0, max_workers=2) as src:
        readings = await asyncio.gather(*(src.read(queries[i % 3]) for i in range(100)))
        assert src.requests_sent == 3
        assert [r.value for r in readings] == [100.0 + i % 3 for i in range(100)]

        # Within the TTL a later caller is served from the cache, too.
        assert (await src.read(queries[0])).value == 100.0
        assert src.requests_sent == 3


@real
async def test_cache_expires(prom: PrometheusServer) -> None:
    prom.exporter.set(LAG, 1, _lag("ttl"))
    query = f'{LAG}{{consumergroup="ttl"}}'
    await prom.async_wait_for_value(query, 1)

    async with PrometheusClient(prom.url, cache_ttl=0.2) as src:
        await src.read(query)
        await src.read(query)
        assert src.requests_sent == 1
        await asyncio.sleep(0.25)
        await src.read(query)
        assert src.requests_sent == 2


# -- loopback stubs for shapes real Prometheus will not produce on demand ----------


class _Stub:
    """Answers every request with a fixed status and body, counting hits."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.hits = 0
        self.headers: list[dict[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.hits += 1
                stub.headers.append(dict(self.headers.items()))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def stub_factory() -> Iterator[Callable[..., _Stub]]:
    stubs: list[_Stub] = []

    def make(status: int, body: Any, content_type: str = "application/json") -> _Stub:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        stub = _Stub(status, raw, content_type)
        stubs.append(stub)
        return stub

    yield make
    for stub in stubs:
        stub.close()


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_unavailable_and_not_retried(stub_factory: Callable[..., _Stub], status: int) -> None:
    stub = stub_factory(status, {"status": "error", "errorType": "unavailable", "error": "overloaded"})
    src = PrometheusClient(stub.url, cache_ttl=0.0, timeout=3.0)

    reading = await src.read("up")
    await src.aclose()  # any retry the library might still run has finished by now

    assert (reading.status, reading.reason) == (SignalStatus.UNAVAILABLE, "HTTPError")
    assert str(status) in reading.message and "overloaded" in reading.message
    assert stub.hits == 1
    assert src.requests_sent == 1


async def test_non_json_error_from_a_proxy(stub_factory: Callable[..., _Stub]) -> None:
    stub = stub_factory(502, b"<html>Bad Gateway</html>", "text/html")
    async with PrometheusClient(stub.url) as src:
        reading = await src.read("up")
    assert (reading.status, reading.reason) == (SignalStatus.UNAVAILABLE, "HTTPError")
    assert "502" in reading.message and "Bad Gateway" in reading.message


async def test_warnings_mark_partial_data(stub_factory: Callable[..., _Stub]) -> None:
    body = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {"a": "1"}, "value": [1.0, "321"]}]},
        "warnings": ["remote read from store eu-1 failed"],
    }
    stub = stub_factory(200, body)
    async with PrometheusClient(stub.url) as src:
        reading = await src.read("lag")
    assert (reading.status, reading.value, reading.partial) == (SignalStatus.OK, 321.0, True)
    assert reading.reason == "PartialData"
    assert "eu-1" in reading.message


async def test_headers_and_auth_reach_prometheus(stub_factory: Callable[..., _Stub]) -> None:
    body = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "1"]}}
    stub = stub_factory(200, body)
    async with PrometheusClient(stub.url, headers={"X-Scope-OrgID": "team-a"}, auth=("u", "p")) as src:
        reading = await src.read("1")
    assert reading.value == 1.0
    (sent,) = stub.headers
    assert sent["X-Scope-OrgID"] == "team-a"
    assert sent["Authorization"] == "Basic dTpw"


async def test_prometheus_timeout_error_shape(stub_factory: Callable[..., _Stub]) -> None:
    body = {"status": "error", "errorType": "timeout", "error": "query timed out in expression evaluation"}
    stub = stub_factory(503, body)
    async with PrometheusClient(stub.url) as src:
        reading = await src.read("lag")
    assert (reading.status, reading.reason) == (SignalStatus.UNAVAILABLE, "Timeout")
    assert stub.hits == 1


async def test_long_messages_are_truncated(stub_factory: Callable[..., _Stub]) -> None:
    stub = stub_factory(400, {"status": "error", "errorType": "bad_data", "error": "x" * 5000})
    async with PrometheusClient(stub.url) as src:
        reading = await src.read("lag")
    assert reading.reason == "BadQuery"
    assert len(reading.message) == 512


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


async def test_timeout_keeps_the_event_loop_running(silent_server: str) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with PrometheusClient(silent_server, timeout=5.0) as src:
        task = asyncio.create_task(ticker())
        try:
            readings = await asyncio.gather(src.read("up", timeout=0.5), src.read("other", timeout=0.5))
        finally:
            task.cancel()
    assert [(r.status, r.reason) for r in readings] == [(SignalStatus.UNAVAILABLE, "Timeout")] * 2
    assert "0.5s" in readings[0].message
    assert ticks >= 10  # the loop kept ticking while both requests hung
