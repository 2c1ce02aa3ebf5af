"""`sluice demo`, short: the whole closed loop (mock Kafka, SDK producers, consumer, local mode) end to end."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature, the IHDR CRC and the IEND chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    header = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    assert zlib.crc32(b"IHDR" + header) == crc, "corrupt IHDR"
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", "no IEND chunk: truncated file"
    width, height = struct.unpack(">II", header[:8])
    return width, height


def test_short_demo_contains_surge_and_trips_and_recovers_circuit(tmp_path: Path) -> None:
    out = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "operator"), str(REPO / "sdk"),
                                                     env.get("PYTHONPATH", "")) if p)

    done = subprocess.run(
        [sys.executable, "-m", "sluice_operator.cli", "demo", "--duration", "20", "--no-live", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=90, cwd=tmp_path,
    )

    log = (out / "demo.log").read_text(errors="replace")[-3000:] if (out / "demo.log").exists() else ""
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\nlog tail:\n{log}"
    summary = json.loads((out / "summary.json").read_text())
    verdict = summary["verdict"]
    assert verdict["ok"] is True and verdict["reasons"] == []

    phases = {p["name"]: p for p in summary["phases"]}
    assert list(phases) == ["steady", "surge", "outage", "recovery"]
    outage = phases["outage"]

    # Lag contained: the controlled peak stays far below what the surge would have built unchecked.
    lag = summary["lag"]
    assert lag["peak"] is not None and lag["peak"] > 0
    assert lag["peak"] <= 0.5 * lag["noControlPeakEstimate"]
    assert lag["unavailableReadings"] > 0  # the outage was real: the lag source timed out too

    # The circuit opened during the outage and closed after the brokers came back, in that order.
    transitions = summary["circuit"]["transitions"]
    states = [t["to"] for t in transitions]
    assert "open" in states and states[-1] == "closed"
    opened = next(t for t in transitions if t["to"] == "open")
    assert outage["start"] <= opened["t"] <= outage["end"] + 1.0
    assert transitions[-1]["t"] >= outage["end"]
    assert summary["circuit"]["finalState"] == "closed"

    # Producers felt it: sends were delayed in the surge, rejected while the circuit was open, and
    # high priority was never shed.
    per = summary["perPriority"]
    assert per["medium"]["delayed"] + per["low"]["delayed"] + per["low"]["shed"] > 0
    assert sum(per[p]["rejected"] for p in ("high", "medium", "low")) > 0
    assert per["high"]["shed"] == 0
    assert summary["consumed"] > 0

    # One progress line per second without a terminal, and the verdict at the end.
    progress = [line for line in done.stdout.splitlines() if line.startswith("t=")]
    assert len(progress) >= 10
    assert "LOOP BEHAVED" in done.stdout and "circuit opened at t=" in done.stdout

    width, height = _png_size(out / "timeline.png")
    assert width >= 800 and height >= 600


def test_short_demo_under_drain_control_reports_admit_ratio_or_why_not(tmp_path: Path) -> None:
    out = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "operator"), str(REPO / "sdk"),
                                                     env.get("PYTHONPATH", "")) if p)

    done = subprocess.run(
        [sys.executable, "-m", "sluice_operator.cli", "demo", "--duration", "20", "--no-live", "--control", "drain",
         "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=90, cwd=tmp_path,
    )

    assert done.returncode in (0, 1), f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "control: DrainTime" in done.stdout
    control = json.loads((out / "summary.json").read_text())["control"]
    assert control["mode"] == "drain" and control["samples"] > 0
    # Either the producers held an admitRatio, or the timeline says why DrainTime fell back: never silent.
    assert control["pacedSamples"] > 0 or control["degraded"], control
    width, height = _png_size(out / "timeline.png")
    assert width > 1000 and height > 1400  # the extra admitRatio panel
