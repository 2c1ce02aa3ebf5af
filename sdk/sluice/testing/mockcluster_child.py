"""The child side of `sluice.testing.mockcluster`: hosts librdkafka's mock brokers in a process
of their own, driven over stdin/stdout as JSON lines (see that module for why a child).

Run as a script by `MockKafkaCluster` (``python mockcluster_child.py '{settings}'``), or through
``python -m sluice.testing.mockcluster`` for a cluster on the command line. It imports nothing
from the SDK, so it starts fast and cannot pull test state in.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import sys
from typing import Any

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1
_RD_KAFKA_PRODUCER = 0

def _load_librdkafka() -> ctypes.CDLL:
    """The librdkafka confluent-kafka uses (same process-wide copy, so same mock API)."""
    import confluent_kafka.cimpl as cimpl

    candidates: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for row in maps:
            path = row.split()[-1] if row.strip() else ""
            if "librdkafka" in os.path.basename(path) and path not in candidates:
                candidates.append(path)
    candidates.append(str(cimpl.__file__))  # statically linked builds export the symbols here
    found = ctypes.util.find_library("rdkafka")
    if found:
        candidates.append(found)
    for path in candidates:
        with contextlib.suppress(OSError, AttributeError):
            lib = ctypes.CDLL(path)
            _ = lib.rd_kafka_mock_cluster_new
            return lib
    raise RuntimeError(f"no librdkafka with the mock API found (tried {candidates})")


def _bind(lib: ctypes.CDLL) -> None:
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    lib.rd_kafka_conf_new.restype = vp
    lib.rd_kafka_conf_set.argtypes = [vp, cp, cp, cp, ctypes.c_size_t]
    lib.rd_kafka_new.restype = vp
    lib.rd_kafka_new.argtypes = [ctypes.c_int, vp, cp, ctypes.c_size_t]
    lib.rd_kafka_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_new.restype = vp
    lib.rd_kafka_mock_cluster_new.argtypes = [vp, ctypes.c_int]
    lib.rd_kafka_mock_cluster_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_bootstraps.restype = cp
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
    lib.rd_kafka_mock_topic_create.argtypes = [vp, cp, ctypes.c_int, ctypes.c_int]
    lib.rd_kafka_mock_partition_delete_records.argtypes = [vp, cp, ctypes.c_int32, ctypes.c_int64]
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [vp, ctypes.c_int32]
    lib.rd_kafka_err2str.restype = cp
    lib.rd_kafka_err2str.argtypes = [ctypes.c_int]


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_pid and os.getppid() != parent_pid:  # parent already gone before prctl took effect
        os._exit(1)


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _serve(args: dict[str, Any], interactive: bool) -> int:
    _die_with_parent(int(args.get("parent_pid", 0)))
    lib = _load_librdkafka()
    _bind(lib)
    errbuf = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    for key, value in (("client.id", "sluice-mockcluster"), ("log_level", str(args.get("log_level", 3)))):
        lib.rd_kafka_conf_set(conf, key.encode(), value.encode(), errbuf, len(errbuf))
    rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errbuf, len(errbuf))
    if not rk:
        _reply({"ok": False, "error": errbuf.value.decode(errors="replace")})
        return 1
    mcluster = lib.rd_kafka_mock_cluster_new(rk, int(args.get("num_brokers", 3)))
    if not mcluster:
        _reply({"ok": False, "error": "rd_kafka_mock_cluster_new failed"})
        return 1
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms(mcluster, int(args.get("group_initial_rebalance_delay_ms", 0)))
    replication = int(args.get("replication_factor", 1))

    def err_text(code: int) -> str:
        raw: bytes = lib.rd_kafka_err2str(code)
        return raw.decode(errors="replace")

    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd.get("op")
        if op == "create_topic":
            topic, parts = str(cmd["topic"]).encode(), int(cmd["partitions"])
            code = lib.rd_kafka_mock_topic_create(mcluster, topic, parts, int(cmd.get("replication_factor", 1)))
        elif op == "delete_records":
            code = lib.rd_kafka_mock_partition_delete_records(
                mcluster, str(cmd["topic"]).encode(), int(cmd["partition"]), int(cmd["offset"])
            )
        elif op == "ping":
            code = 0
        else:
            return {"ok": False, "error": f"unknown op {op!r}"}
        return {"ok": True} if code == 0 else {"ok": False, "error": err_text(code), "code": code}

    for name, parts in dict(args.get("topics", {})).items():
        result = handle({"op": "create_topic", "topic": name, "partitions": parts, "replication_factor": replication})
        if not result["ok"]:
            _reply({"ok": False, "error": f"topic {name}: {result['error']}"})
            return 1
    bootstraps: bytes = lib.rd_kafka_mock_cluster_bootstraps(mcluster)
    if interactive:
        print(f"bootstrap.servers={bootstraps.decode()}  (Ctrl-C or EOF on stdin stops)", flush=True)
    else:
        _reply({"ok": True, "bootstrap_servers": bootstraps.decode(), "pid": os.getpid()})
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                cmd = json.loads(line)
            except ValueError as exc:
                _reply({"ok": False, "error": f"bad command: {exc}"})
                continue
            if cmd.get("op") == "stop":
                break
            _reply(handle(cmd))
    except KeyboardInterrupt:
        pass
    lib.rd_kafka_mock_cluster_destroy(mcluster)
    lib.rd_kafka_destroy(rk)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``argv[0]`` is a JSON object of settings (none: interactive defaults)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        return _serve(json.loads(argv[0]), interactive=False)
    return _serve({"num_brokers": 3, "replication_factor": 3}, interactive=True)


if __name__ == "__main__":
    sys.exit(main())
