"""Structured logging: one JSON object per line, carrying the object's namespace/name."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """Every extra attribute (namespace, name, kind, ...) becomes a JSON field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in out and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the object reference up front."""

    def format(self, record: logging.LogRecord) -> str:
        ref = ""
        namespace = getattr(record, "namespace", None)
        name = getattr(record, "name_", None) or getattr(record, "object", None)
        if name:
            ref = f"[{namespace}/{name}] " if namespace else f"[{name}] "
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {ref}{record.getMessage()}"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def setup(level: str = "INFO", fmt: str = "json") -> None:
    """Configure the root logger once; Kopf's per-object loggers add namespace/name themselves."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def for_object(
    logger: logging.Logger, kind: str, namespace: str | None, name: str
) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose every line names the object it is about."""
    return logging.LoggerAdapter(logger, {"kind": kind, "namespace": namespace or "", "object": name})
