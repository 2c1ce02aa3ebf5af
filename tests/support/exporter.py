"""A tiny Prometheus exporter that tests drive directly.

Real Prometheus scrapes it over real HTTP on loopback, so a test can put any
backlog number (or NaN, +Inf, several series) in front of the operator without
running Kafka or kafka-exporter.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["Exporter", "format_value", "render_metrics"]

LabelSet = tuple[tuple[str, str], ...]


def _labelset(labels: Mapping[str, str] | None) -> LabelSet:
    return tuple(sorted((labels or {}).items()))


def _escape_label_value(value: str) -> str:
    # Text exposition format 0.0.4: backslash, double quote and newline are escaped.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """Render a sample value the way the text format spells NaN and infinities."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render_metrics(series: Mapping[str, Mapping[LabelSet, float]]) -> str:
    """Render all series in Prometheus text format (one gauge family per name)."""
    lines: list[str] = []
    for name in sorted(series):
        samples = series[name]
        if not samples:
            continue
        lines.append(f"# TYPE {name} gauge")
        for labels, value in sorted(samples.items()):
            if labels:
                body = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in labels)
                lines.append(f"{name}{{{body}}} {format_value(value)}")
            else:
                lines.append(f"{name} {format_value(value)}")
    return "\n".join(lines) + "\n"


class Exporter:
    """An HTTP server on a free 127.0.0.1 port serving ``/metrics`` from a dict.

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._lock = threading.Lock()
        self._series: dict[str, dict[LabelSet, float]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.scrapes = 0

    # -- data ---------------------------------------------------------------

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Create or update one series."""
        with self._lock:
            self._series.setdefault(name, {})[_labelset(labels)] = float(value)

    def remove(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Remove one series; with ``labels=None`` remove every series of ``name``."""
        with self._lock:
            if labels is None:
                self._series.pop(name, None)
            else:
                self._series.get(name, {}).pop(_labelset(labels), None)

    def clear(self) -> None:
        """Remove every series."""
        with self._lock:
            self._series.clear()

    def render(self) -> str:
        """The current ``/metrics`` body."""
        with self._lock:
            snapshot = {name: dict(samples) for name, samples in self._series.items()}
        return render_metrics(snapshot)

    # -- server -------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("exporter is not running")
        return int(self._server.server_address[1])

    @property
    def target(self) -> str:
        """``host:port`` as written in a Prometheus ``static_configs`` target."""
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    def start(self) -> Exporter:
        if self._server is not None:
            return self
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                with exporter._lock:
                    exporter.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # keep test output quiet

        server = ThreadingHTTPServer((self._host, 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="test-exporter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Exporter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
