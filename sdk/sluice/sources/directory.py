"""`DirectoryDecisions`: decision documents read from a directory, by a polling thread.

The directory is either a ConfigMap mounted as a volume (zero RBAC; the kubelet refreshes it every
60-90 s) or one policy's directory written by the operator's local mode
(``DIR/<namespace>/<name>/``). Both hold ``decision.json`` and maybe ``circuit.json``.

The kubelet updates a mounted ConfigMap atomically: it writes the new files into a fresh
``..<timestamp>`` directory, points a ``..data_tmp`` symlink at it, renames that over ``..data``,
and each visible file is a symlink ``decision.json -> ..data/decision.json``. Opening the visible
path therefore yields either the whole old or the whole new file. The poller ``stat``s through the
symlinks and re-reads only when the target changed (inode, size, mtime), so an idle poll costs a
few syscalls. Writers that do not rename atomically can expose a half-written file: it fails to
parse, is counted and logged once, and the last good document stays in force.

A missing file is treated the same way for both documents: a deleted ``decision.json`` or
``circuit.json`` (an ``rm`` before a rewrite, a botched volume) keeps the last good document until
it goes stale, so an open circuit does not close because its file vanished for a moment. A circuit
is forgotten only when its removal is deliberate: the kubelet swapped in a ``..data`` without the key
(the key left the ConfigMap), or a circuit *subdirectory* disappeared as a whole (local mode).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from pydantic import ValidationError

from sluice.decision import CIRCUIT_KEY, DECISION_KEY, CircuitState, Decision, parse_circuit, parse_decision
from sluice.sources.base import LOGGER_NAME, DecisionSource
from sluice.stale import DEFAULT_MAX_CLOCK_SKEW_S, MAX_TTL_SECONDS

__all__ = ["DirectoryDecisions"]

log = logging.getLogger(LOGGER_NAME)

_Signature = tuple[int, int, int, int, int]
_MISSING: _Signature = (-1, -1, -1, -1, -1)


class DirectoryDecisions(DecisionSource):
    """Poll ``path/decision.json`` and every ``circuit.json`` in ``path``, its subdirectories and
    ``circuit_paths`` (directories holding a ``circuit.json``, or the files themselves).

    The first read happens in the constructor, so a producer built right after sees the documents.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        poll_interval: float = 0.5,
        *,
        circuit_paths: Iterable[str | os.PathLike[str]] = (),
        max_ttl: float = MAX_TTL_SECONDS,
        max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW_S,
        start: bool = True,
    ) -> None:
        self.path = Path(path)
        super().__init__(f"directory:{self.path}", max_ttl=max_ttl, max_clock_skew=max_clock_skew)
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0")
        self.poll_interval = poll_interval
        self.circuit_paths = tuple(Path(p) for p in circuit_paths)
        self._signatures: dict[str, _Signature] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.poll_once()
        if start:
            self.start()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> DirectoryDecisions:
        """Start the polling thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"sluice-dir-{self.path.name}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the polling thread."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(2.0, 2 * self.poll_interval))

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll_once()
            except Exception:  # a poller that dies silently would freeze the decision
                log.exception("sluice %s: poll failed", self.description)

    # -- reading -------------------------------------------------------------------------------

    def poll_once(self) -> None:
        """Read whatever changed since the last poll."""
        self._read(self.path / DECISION_KEY, parse_decision, self._on_decision, report_missing=True)
        keep: list[str] = []
        for file in self._circuit_files():
            key = str(file)
            held = key in self._circuits and not _removed_by_kubelet(file)
            if self._read(file, parse_circuit, partial(self._on_circuit, key), report_missing=held) or held:
                keep.append(key)  # a vanished file keeps its last good document until it goes stale
        self._drop_circuits_except(keep)

    def _on_decision(self, doc: Decision | CircuitState) -> None:
        assert isinstance(doc, Decision)
        self._accept_decision(doc, str(self.path / DECISION_KEY))

    def _on_circuit(self, key: str, doc: Decision | CircuitState) -> None:
        assert isinstance(doc, CircuitState)
        self._accept_circuit(key, doc, key)

    def _circuit_files(self) -> list[Path]:
        files = [self.path / CIRCUIT_KEY]
        try:
            entries = sorted(os.scandir(self.path), key=lambda e: e.name)
        except OSError:
            entries = []
        # Skip the kubelet's "..data" and "..<timestamp>" entries: their files are the same documents.
        files += [Path(e.path) / CIRCUIT_KEY for e in entries if not e.name.startswith(".") and e.is_dir()]
        for extra in self.circuit_paths:
            files.append(extra if extra.suffix == ".json" and not extra.is_dir() else extra / CIRCUIT_KEY)
        return files

    def _read(
        self,
        file: Path,
        parse: Callable[[bytes], Decision | CircuitState],
        accept: Callable[[Decision | CircuitState], None],
        *,
        report_missing: bool,
    ) -> bool:
        """Read ``file`` if it changed; returns whether it exists. Bad content keeps the old document."""
        key = str(file)
        try:
            st = os.stat(file)  # follows the ..data symlinks
            signature: _Signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except FileNotFoundError:
            signature = _MISSING
        except OSError as exc:
            self._report_error(key, f"cannot stat: {exc.strerror or exc}")
            return True
        if self._signatures.get(key) == signature:
            return signature != _MISSING
        if signature == _MISSING:
            self._signatures[key] = signature
            if report_missing:
                self._report_error(key, "missing")
            return False
        try:
            data = file.read_bytes()
        except FileNotFoundError:  # swapped away between stat and open: the next poll sees the new one
            return False
        except OSError as exc:
            self._report_error(key, f"cannot read: {exc.strerror or exc}")
            return True
        self._signatures[key] = signature
        try:
            doc = parse(data)
        except ValidationError as exc:
            self._report_error(key, _describe(exc))
            return True
        except ValueError as exc:
            self._report_error(key, f"invalid: {type(exc).__name__}")
            return True
        accept(doc)
        self._clear_error(key)
        return True


def _removed_by_kubelet(file: Path) -> bool:
    """The file's directory is a ConfigMap volume whose current ``..data`` no longer has the key."""
    data = file.parent / "..data"
    return data.is_symlink() and not (data / file.name).exists()


def _describe(exc: ValidationError) -> str:
    """A short, stable summary (so the same problem is logged once, not once per partial write)."""
    kinds = sorted({str(err.get("type")) for err in exc.errors()})
    if "json_invalid" in kinds:
        return "invalid JSON (partially written?)"
    fields = sorted({".".join(str(p) for p in err.get("loc", ())) or "<root>" for err in exc.errors()})
    return f"not a valid document: {', '.join(fields[:5])}"
