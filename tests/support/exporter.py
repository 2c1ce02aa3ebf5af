"""A tiny Prometheus exporter that tests drive directly.

Real Prometheus scrapes it over real HTTP on loopback, so a test can put any
backlog number (or NaN, +Inf, several series) in front of the operator without
running Kafka or kafka-exporter.

:class:`ExporterProcess` is the same exporter in a child process of its own, driven over HTTP
(``POST /control``). A benchmark uses it so that the operator under test is the only thing in its
process: an in-process exporter competes for the GIL with the cycles it feeds, and under load its
scrapes time out, the series go stale and the "steady" signal is lost and restored.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["Exporter", "ExporterProcess", "format_value", "render_metrics"]

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

    def __init__(self, host: str = "127.0.0.1", *, control: bool = False) -> None:
        self._host = host
        self._control = control  # serve POST /control (the child side of ExporterProcess)
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

            def do_POST(self) -> None:
                if not exporter._control or self.path != "/control":
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                command = json.loads(self.rfile.read(length) or b"{}")
                answer = exporter._command(command)
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
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

    def _command(self, command: Mapping[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op == "set":
            self.set(command["name"], float(command["value"]), command.get("labels"))
        elif op == "remove":
            self.remove(command["name"], command.get("labels"))
        elif op == "clear":
            self.clear()
        with self._lock:
            return {"scrapes": self.scrapes}

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


class ExporterProcess:
    """:class:`Exporter` in a child process (same ``set``/``remove``/``clear``/``target`` API).

    ``set`` returns once the child holds the new value, so the next scrape serves it.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._proc: subprocess.Popen[str] | None = None
        self._port: int | None = None

    def start(self) -> ExporterProcess:
        if self._proc is not None:
            return self
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--host", self._host],
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        stdout: IO[str] | None = proc.stdout
        assert stdout is not None
        line = stdout.readline()  # "port <n>" once serving
        if not line.startswith("port "):
            proc.kill()
            proc.wait(5)
            raise RuntimeError(f"the exporter process did not start (said {line!r})")
        self._proc, self._port = proc, int(line.split()[1])
        return self

    def _call(self, command: Mapping[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(f"http://{self.target}/control", data=json.dumps(command).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
        return answer

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        self._call({"op": "set", "name": name, "value": float(value), "labels": dict(labels or {})})

    def remove(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        self._call({"op": "remove", "name": name, "labels": None if labels is None else dict(labels)})

    def clear(self) -> None:
        self._call({"op": "clear"})

    @property
    def scrapes(self) -> int:
        return int(self._call({"op": "count"})["scrapes"])

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("exporter is not running")
        return self._port

    @property
    def target(self) -> str:
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    def stop(self) -> None:
        proc, self._proc, self._port = self._proc, None, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> ExporterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """The child side of :class:`ExporterProcess`: serve until terminated."""
    parser = argparse.ArgumentParser(description="a test exporter driven over POST /control")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    exporter = Exporter(args.host, control=True).start()
    print(f"port {exporter.port}", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
