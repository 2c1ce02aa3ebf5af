"""The local backend: the same documents a ConfigMap would carry, as files under DIR/<namespace>/<name>/.

Each file is written to a temporary name in the same directory and renamed over the target, so a
reader never sees half a document.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sluice_operator.publish.configmap import Owner
from sluice_operator.publish.outcome import PublishOutcome, PublishResult

__all__ = ["DirectoryPublisher", "DirectorySink", "write_atomic"]


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DirectoryPublisher:
    """Writes each key of `data` as a file in `root/<namespace>/<name>/`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def publish(self, namespace: str, name: str, data: Mapping[str, str]) -> PublishResult:
        """Write changed files in a worker thread: fsync must not stall the event loop."""
        return await asyncio.to_thread(self._publish, namespace, name, data)

    def _publish(self, namespace: str, name: str, data: Mapping[str, str]) -> PublishResult:
        directory = self.root / namespace / name
        target = str(directory)
        changed = False
        try:
            for key, text in data.items():
                path = directory / key
                if path.exists() and path.read_text(encoding="utf-8") == text:
                    continue
                write_atomic(path, text)
                changed = True
        except OSError as error:
            return PublishResult(PublishOutcome.FAILED, target, f"{type(error).__name__}: {error}")
        return PublishResult(PublishOutcome.UPDATED if changed else PublishOutcome.UNCHANGED, target)

    def remove(self, namespace: str, name: str, keys: tuple[str, ...]) -> None:
        directory = self.root / namespace / name
        for key in keys:
            (directory / key).unlink(missing_ok=True)
        try:
            directory.rmdir()
        except OSError:
            pass


class DirectorySink:
    """Local mode: DIR/<namespace>/<name>/decision.json (+ status.json for people and tests)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = DirectoryPublisher(root)

    async def publish(self, namespace: str, configmap: str, owner: Owner, data: Mapping[str, str]) -> PublishResult:
        # The directory is named after the object, as documented: DIR/<namespace>/<name>/.
        return await self.files.publish(namespace, owner.name, data)

    async def write_status(self, plural: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> bool:
        path = self.root / (namespace or "_cluster") / name / "status.json"
        try:
            await asyncio.to_thread(write_atomic, path, json.dumps(status, indent=2, sort_keys=True) + "\n")
        except OSError:
            return False
        return True

    async def unpublish_circuit(self, owner: Owner, configmap: str, namespaces: frozenset[str]) -> list[str]:
        return await asyncio.to_thread(self._unpublish_circuit, owner.name, lambda ns: ns in namespaces)

    async def sweep_circuit(self, owner: Owner, keep: frozenset[str], scope: frozenset[str] | None) -> list[str]:
        return await asyncio.to_thread(self._unpublish_circuit, owner.name, lambda ns: ns not in keep)

    def _unpublish_circuit(self, circuit: str, remove: Callable[[str], bool]) -> list[str]:
        removed = []
        for directory in self.root.glob(f"*/{circuit}"):
            namespace = directory.parent.name
            if not remove(namespace) or not (directory / "circuit.json").exists():
                continue
            self.files.remove(namespace, circuit, ("circuit.json",))
            removed.append(f"{namespace}/{circuit}")
        return removed
