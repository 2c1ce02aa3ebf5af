"""librdkafka's built-in mock Kafka cluster, hosted in a child process.

Why a child process: the mock brokers are threads inside a librdkafka client.
Hosted in the test process they could only be "set down" (connections refused
at once), which is not what a hung cluster looks like. In a child process the
whole cluster can be frozen with SIGSTOP: sockets stay open, the kernel still
accepts connections, nothing answers, so every client sees genuine request
timeouts; SIGCONT brings it back with its data intact.

The child drives librdkafka's mock API (``rdkafka_mock.h``) through ctypes on
the very library confluent-kafka loaded: ``rd_kafka_mock_cluster_new`` creates
the brokers, ``rd_kafka_mock_cluster_bootstraps`` reports their addresses and
``rd_kafka_mock_topic_create`` creates topics with exact partition counts (the
mock does not implement the CreateTopics admin request). The parent talks to
the child over its stdin/stdout, one JSON object per line.

Use::

    with MockKafkaCluster(topics={"orders": 3}) as cluster:
        producer = Producer({"bootstrap.servers": cluster.bootstrap_servers})
        cluster.pause()   # the cluster hangs: requests time out
        cluster.resume()  # and answers again

Run ``python -m sluice.testing.mockcluster`` to get a cluster on the command
line (prints the bootstrap servers, runs until Ctrl-C or stdin closes).

The child dies with its parent: it closes on stdin EOF, and on Linux it also
asks for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``, which also
reaches a paused child). Linux sends that signal when the *thread* that forked
exits, so every child is forked by one process-lifetime spawner thread: a
cluster started from a short-lived worker thread (``asyncio.to_thread``) is
not killed when that worker exits.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import queue
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

__all__ = ["MockClusterError", "MockKafkaCluster"]

#: The script the child process runs (stdlib and librdkafka only: it starts fast).
CHILD = Path(__file__).resolve().with_name("mockcluster_child.py")



class MockClusterError(RuntimeError):
    """The mock cluster could not be started or did not do what it was asked."""


class MockKafkaCluster:
    """A librdkafka mock cluster in a child process that can be paused for real.

    ``topics`` maps topic name to partition count; they exist before
    :meth:`start` returns. ``group_initial_rebalance_delay_ms`` defaults to 0
    (Kafka's broker default is 3000) so consumer groups join in milliseconds.
    """

    def __init__(
        self,
        num_brokers: int = 3,
        topics: Mapping[str, int] | None = None,
        *,
        replication_factor: int | None = None,
        group_initial_rebalance_delay_ms: int = 0,
        start_timeout: float = 15.0,
        log_level: int = 3,
    ) -> None:
        if num_brokers < 1:
            raise ValueError("num_brokers must be >= 1")
        self.num_brokers = num_brokers
        self.replication_factor = replication_factor or min(3, num_brokers)
        self._initial_topics = dict(topics or {})
        self._rebalance_delay_ms = group_initial_rebalance_delay_ms
        self._start_timeout = start_timeout
        self._log_level = log_level
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._bootstrap: str | None = None
        self._paused = False
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> MockKafkaCluster:
        """Start the child, wait until its brokers listen, create the initial topics."""
        if self._proc is not None:
            raise MockClusterError("mock cluster already started")
        args = {
            "num_brokers": self.num_brokers,
            "replication_factor": self.replication_factor,
            "topics": self._initial_topics,
            "group_initial_rebalance_delay_ms": self._rebalance_delay_ms,
            "log_level": self._log_level,
            "parent_pid": os.getpid(),
        }
        # Kept open for the child's lifetime (closed in stop()), so no context manager.
        self._stderr = tempfile.TemporaryFile(prefix="sluice-mockcluster-")  # noqa: SIM115
        # Run by path: the child needs only confluent-kafka, not the sluice package on its sys.path.
        command = [sys.executable, str(CHILD), json.dumps(args)]
        stderr = self._stderr
        self._proc = _spawn(
            lambda: subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, close_fds=True
            )
        )
        self._finalizer = weakref.finalize(self, _kill_child, self._proc)
        try:
            hello = self._read_reply(self._start_timeout)
        except MockClusterError:
            self.stop()
            raise
        if not hello.get("ok"):
            self.stop()
            raise MockClusterError(f"mock cluster failed to start: {hello.get('error')}")
        self._bootstrap = str(hello["bootstrap_servers"])
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the child (resuming it first if paused); idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            self._paused = False
            with contextlib.suppress(OSError, ValueError):
                assert proc.stdin is not None
                proc.stdin.write(b'{"op": "stop"}\n')
                proc.stdin.flush()
                proc.stdin.close()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        for stream in (proc.stdin, proc.stdout, self._stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        if self._finalizer is not None:
            self._finalizer.detach()
        self._proc = None
        self._stderr = None
        self._bootstrap = None

    def __enter__(self) -> MockKafkaCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- properties --------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated ``127.0.0.1:port`` list of the mock brokers."""
        if self._bootstrap is None:
            raise MockClusterError("mock cluster not started")
        return self._bootstrap

    @property
    def pid(self) -> int:
        """Process id of the child hosting the brokers."""
        if self._proc is None:
            raise MockClusterError("mock cluster not started")
        return self._proc.pid

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused

    @property
    def running(self) -> bool:
        """True while the child process exists (paused or not)."""
        return self._proc is not None and self._proc.poll() is None

    # -- fault injection ---------------------------------------------------------------------

    def pause(self, timeout: float = 2.0) -> None:
        """Freeze every broker (SIGSTOP): connections stay open, nothing answers."""
        proc = self._require_running()
        os.kill(proc.pid, signal.SIGSTOP)
        self._paused = True
        _wait_for_state(proc.pid, stopped=True, timeout=timeout)

    def resume(self, timeout: float = 2.0) -> None:
        """Thaw the brokers (SIGCONT); requests still in flight get their answers."""
        proc = self._require_running()
        os.kill(proc.pid, signal.SIGCONT)
        self._paused = False
        _wait_for_state(proc.pid, stopped=False, timeout=timeout)

    # -- data --------------------------------------------------------------------------------

    def create_topics(self, topics: Mapping[str, int], replication_factor: int | None = None) -> None:
        """Create topics (name -> partition count) through the mock API."""
        for name, partitions in topics.items():
            self._command(
                {
                    "op": "create_topic",
                    "topic": name,
                    "partitions": partitions,
                    "replication_factor": replication_factor or self.replication_factor,
                }
            )

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int | None = None) -> None:
        """Create one topic."""
        self.create_topics({name: partitions}, replication_factor)

    def delete_records(self, topic: str, partition: int, before_offset: int) -> None:
        """Delete records below ``before_offset`` (what retention does): the low watermark moves up."""
        self._command({"op": "delete_records", "topic": topic, "partition": partition, "offset": before_offset})

    # -- plumbing ----------------------------------------------------------------------------

    def _require_running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise MockClusterError("mock cluster is not running")
        return proc

    def _command(self, cmd: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        with self._lock:
            proc = self._require_running()
            if self._paused:
                raise MockClusterError(f"mock cluster is paused; cannot {cmd['op']}")
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(cmd).encode() + b"\n")
            proc.stdin.flush()
            reply = self._read_reply(timeout)
        if not reply.get("ok"):
            raise MockClusterError(f"{cmd['op']} failed: {reply.get('error')}")
        return reply

    def _read_reply(self, timeout: float) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MockClusterError(f"mock cluster did not answer within {timeout}s{self._stderr_tail()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1)  # byte-wise: never read past the reply line
            if not chunk:
                raise MockClusterError(f"mock cluster exited (rc={proc.poll()}){self._stderr_tail()}")
            line += chunk
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            tail = self._stderr.read()[-2000:].decode(errors="replace").strip()
            return f"; child stderr: {tail}" if tail else ""
        return ""


_T = TypeVar("_T")
_spawner_lock = threading.Lock()
_spawner: tuple[int, queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]] | None = None


def _spawner_loop(jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]) -> None:
    while True:
        fn, future = jobs.get()
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)


def _spawn(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` (a Popen) on the process-lifetime spawner thread, the parent PR_SET_PDEATHSIG watches."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner[0] != os.getpid():  # none yet, or we are a fork without it
            jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = queue.SimpleQueue()
            threading.Thread(target=_spawner_loop, args=(jobs,), name="sluice-mockcluster-spawner", daemon=True).start()
            _spawner = (os.getpid(), jobs)
        jobs = _spawner[1]
    future: concurrent.futures.Future[_T] = concurrent.futures.Future()
    jobs.put((fn, future))
    return future.result()


def _kill_child(proc: subprocess.Popen[bytes]) -> None:
    """Finalizer: a forgotten cluster must not outlive the test session."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def _proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def _wait_for_state(pid: int, *, stopped: bool, timeout: float) -> None:
    """Wait until the kernel has (un)stopped the child; a no-op where /proc is missing."""
    if not Path("/proc/self/stat").exists():
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (_proc_state(pid) in ("T", "t")) == stopped:
            return
        time.sleep(0.005)
    raise MockClusterError(f"child {pid} did not {'stop' if stopped else 'continue'} within {timeout}s")


if __name__ == "__main__":
    from sluice.testing.mockcluster_child import main

    sys.exit(main())
