"""Run the REAL Prometheus server (Debian package ``prometheus``) for tests.

The server scrapes a test-controlled :class:`~tests.support.exporter.Exporter`
every second on loopback, keeps its TSDB in a temp dir, and can be stopped and
started again on the same port and data dir ("Prometheus is down, then back").

In a test module::

    from tests.support.prometheus import prometheus_fixture

    prom = prometheus_fixture(scope="module")

    def test_lag(prom: PrometheusServer) -> None:
        prom.exporter.set("kafka_consumergroup_lag", 7, {"consumergroup": "g"})
        prom.wait_for_value('sum(kafka_consumergroup_lag{consumergroup="g"})', 7)

Without the binary the fixtures skip with an install hint; with ``CI=true``
they fail instead, so CI can never silently skip the real-Prometheus tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pytest

from tests.support.exporter import Exporter, ExporterProcess

__all__ = [
    "INSTALL_HINT",
    "PrometheusServer",
    "find_prometheus_binary",
    "free_port",
    "prometheus_factory_fixture",
    "prometheus_fixture",
    "require_prometheus_binary",
]

INSTALL_HINT = "the real Prometheus server is needed: apt-get install prometheus"
DEFAULT_BINARY = "/usr/bin/prometheus"
JOB = "exporter"

FixtureScope = Literal["function", "class", "module", "package", "session"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def find_prometheus_binary() -> str | None:
    """``$SLUICE_PROMETHEUS_BIN``, else ``prometheus`` on PATH, else the Debian path."""
    explicit = os.environ.get("SLUICE_PROMETHEUS_BIN")
    candidates = [explicit] if explicit else [shutil.which("prometheus"), DEFAULT_BINARY]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_prometheus_binary() -> str:
    """The binary path; skip the test without it (fail instead when ``CI=true``)."""
    binary = find_prometheus_binary()
    if binary is None:
        if _in_ci():
            pytest.fail(f"Prometheus binary not found and CI=true: {INSTALL_HINT}", pytrace=False)
        pytest.skip(f"Prometheus binary not found; {INSTALL_HINT}")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _sample_equals(actual: float, expected: float) -> bool:
    if math.isnan(expected):
        return math.isnan(actual)
    return actual == expected or math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12)


class PrometheusError(RuntimeError):
    """The server did not start, or did not answer in time."""


class PrometheusServer:
    """One real Prometheus process scraping one :class:`Exporter`.

    ``start()`` after ``stop()`` reuses the same port, config and TSDB dir.
    """

    def __init__(
        self,
        exporter: Exporter | ExporterProcess,
        *,
        binary: str | None = None,
        workdir: Path | None = None,
        port: int | None = None,
        scrape_interval: str = "1s",
        lookback_delta: str = "5s",
        startup_timeout: float = 30.0,
    ) -> None:
        self.exporter = exporter
        self.binary = binary or find_prometheus_binary() or DEFAULT_BINARY
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="sluice-prom-")) if workdir is None else workdir
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "prometheus.yml"
        self.log_path = self.workdir / "prometheus.log"
        self.port = port or free_port()
        self.scrape_interval = scrape_interval
        self.lookback_delta = lookback_delta
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    # -- lifecycle ----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # JSON is valid YAML: no YAML library needed, no quoting surprises.
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [self.exporter.target]}]}],
        }
        self.config_path.write_text(json.dumps(config, indent=2))

    def start(self, *, wait_for_scrape: bool = True) -> PrometheusServer:
        """Start (or restart) the process and wait until it is ready."""
        if self.running:
            return self
        self.exporter.start()
        args = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--query.lookback-delta={self.lookback_delta}",
            "--log.level=warn",
        ]
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir
            )
        finally:
            log.close()
        try:
            self._wait_ready()
            if wait_for_scrape:
                self.wait_for_scrape()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {self._proc.returncode}; log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready after {self.startup_timeout}s:\n{self.log_tail()}")

    def wait_for_scrape(self, timeout: float | None = None) -> None:
        """Wait until this process has scraped the exporter successfully.

        The targets API (not ``up``) is asked because after a restart ``up``
        still shows the previous run's samples; a target's health starts at
        ``unknown`` in every new process. Prometheus hands targets to the
        scraper only every 5 s, so the first scrape takes ~5-6 s.
        """
        limit = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/targets?state=active", timeout=2.0) as resp:
                    targets = json.loads(resp.read())["data"]["activeTargets"]
                healths = [t.get("health") for t in targets if t.get("labels", {}).get("job") == JOB]
                last = repr(healths)
                if healths and all(h == "up" for h in healths):
                    return
            except (urllib.error.URLError, OSError, ValueError, KeyError) as err:
                last = repr(err)
            time.sleep(0.2)
        raise PrometheusError(f"no successful scrape within {limit}s (last: {last}):\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL); keeps port and data dir for a restart."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def close(self) -> None:
        """Stop the process and remove the temp dir (when we made it)."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> PrometheusServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- queries ------------------------------------------------------------

    def query(self, promql: str, timeout: float = 5.0) -> dict[str, Any]:
        """The ``data`` object of an instant query (raises on an API error)."""
        qs = urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise PrometheusError(f"query {promql!r} failed: {err.code} {err.read()[:500]!r}") from err
        if body.get("status") != "success":
            raise PrometheusError(f"query {promql!r} failed: {body}")
        data: dict[str, Any] = body["data"]
        return data

    def values(self, promql: str) -> list[float]:
        """Every sample value of an instant query (a scalar gives one value)."""
        data = self.query(promql)
        if data["resultType"] == "scalar":
            return [float(data["result"][1])]
        return [float(item["value"][1]) for item in data["result"]]

    def wait_for_value(self, promql: str, expected: float | None, timeout: float = 15.0) -> list[float]:
        """Poll until the query returns exactly one sample equal to ``expected``.

        ``expected=None`` waits for an empty result (e.g. a removed series gone stale).
        Returns the last values seen.
        """
        deadline = time.monotonic() + timeout
        last: list[float] | str = "no answer"
        while True:
            try:
                values = self.values(promql)
                last = values
                if expected is None and not values:
                    return values
                if expected is not None and len(values) == 1 and _sample_equals(values[0], expected):
                    return values
            except (PrometheusError, urllib.error.URLError, OSError) as err:
                last = repr(err)
            if time.monotonic() >= deadline:
                raise AssertionError(f"{promql!r}: wanted {expected!r} within {timeout}s, last saw {last!r}")
            time.sleep(0.2)

    async def async_wait_for_value(
        self,
        promql: str,
        expected: float | None,
        timeout: float = 15.0,
    ) -> list[float]:
        """:meth:`wait_for_value` in a thread, so an async test's event loop keeps running."""
        return await asyncio.to_thread(self.wait_for_value, promql, expected, timeout)

    async def async_stop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def async_start(self, *, wait_for_scrape: bool = True) -> PrometheusServer:
        return await asyncio.to_thread(functools.partial(self.start, wait_for_scrape=wait_for_scrape))


# -- pytest fixture factories -----------------------------------------------


def prometheus_fixture(
    *, scope: FixtureScope = "module", lookback_delta: str = "5s"
) -> Callable[..., Iterator[PrometheusServer]]:
    """Make a fixture that yields a started :class:`PrometheusServer` with its own exporter.

    Assign it in a test module: ``prom = prometheus_fixture(scope="module")``.
    """

    @pytest.fixture(scope=scope)
    def _prometheus() -> Iterator[PrometheusServer]:
        binary = require_prometheus_binary()
        with Exporter() as exporter, PrometheusServer(
            exporter, binary=binary, lookback_delta=lookback_delta
        ) as server:
            yield server

    return _prometheus


def prometheus_factory_fixture(
    *, scope: FixtureScope = "function"
) -> Callable[..., Iterator[Callable[..., PrometheusServer]]]:
    """Make a fixture yielding ``make(**PrometheusServer kwargs) -> started server``.

    Every server and exporter it made is stopped and removed at teardown, even
    when the test failed half-way (e.g. while Prometheus was deliberately down).
    """

    @pytest.fixture(scope=scope)
    def _factory() -> Iterator[Callable[..., PrometheusServer]]:
        binary = require_prometheus_binary()
        made: list[tuple[Exporter, PrometheusServer]] = []

        def make(**kwargs: Any) -> PrometheusServer:
            exporter = kwargs.pop("exporter", None) or Exporter().start()
            server = PrometheusServer(exporter, binary=binary, **kwargs)
            made.append((exporter, server))
            try:
                return server.start()
            except BaseException:
                server.close()
                raise

        try:
            yield make
        finally:
            for exporter, server in reversed(made):
                with contextlib.suppress(Exception):
                    server.close()
                with contextlib.suppress(Exception):
                    exporter.stop()

    return _factory
