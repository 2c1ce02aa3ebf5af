"""`sluice decide FILE --backlog N`: the decision the engine makes for a policy, offline.

Prints the `Decision` JSON for the first BackpressurePolicy in FILE, evaluated at `--now`
(default: the current time) exactly as the operator would on its first evaluation.

`--previous-zone P=ZONE` answers "what happens at this backlog if P was in ZONE": P is taken to
have been in ZONE for longer than `hysteresis.minDwellSeconds`, so the dwell has passed and only
the margin can hold it there. (Seeding it "entered just now" would answer "still ZONE" for every
lower backlog: true for the first `minDwellSeconds`, and no help in choosing thresholds.)
Priorities not named start with no memory: their plain zone.

For a ``control.mode: DrainTime`` policy, `--drain-rate` and `--offered HIGH,MEDIUM,LOW` give the
measured rates; without them the decision is the Zones fallback the operator would publish.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sluice.decision import PRIORITIES, Decision, Priority, Zone, to_json
from sluice_operator.api.policy import BackpressurePolicy
from sluice_operator.engine import Rates, build_decision, evaluate, seed

__all__ = ["DecideError", "decide", "run"]

_ZONES: tuple[Zone, ...] = ("green", "yellow", "red")


class DecideError(Exception):
    """A problem the user can fix; the message says what and how."""


def _parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        now = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DecideError(
            f"--now {text!r} is not an ISO 8601 time; write it like 2024-05-01T12:00:00Z"
        ) from None
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _parse_previous(items: Sequence[str]) -> dict[Priority, Zone]:
    zones: dict[Priority, Zone] = {}
    for item in items:
        priority, sep, zone = item.partition("=")
        p = next((x for x in PRIORITIES if x == priority.strip()), None)
        z = next((x for x in _ZONES if x == zone.strip()), None)
        if not sep or p is None or z is None:
            raise DecideError(
                f"--previous-zone {item!r} is not PRIORITY=ZONE; priority is one of "
                f"{', '.join(PRIORITIES)} and zone one of {', '.join(_ZONES)} (e.g. medium=red)"
            )
        zones[p] = z
    return zones


def _parse_rates(drain_rate: float | None, offered: str | None) -> Rates | None:
    if drain_rate is None and offered is None:
        return None
    if drain_rate is None or offered is None:
        raise DecideError("--drain-rate and --offered go together (DrainTime needs both)")
    if not math.isfinite(drain_rate) or drain_rate < 0:
        raise DecideError(f"--drain-rate must be a finite number >= 0 (got {drain_rate:g})")
    try:
        values = [float(part) for part in offered.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise DecideError(f"--offered {offered!r} is not HIGH,MEDIUM,LOW msgs/s (three numbers >= 0, e.g. 200,600,800)")
    return Rates(drain_rate, (values[0], values[1], values[2]))


def _load_policy(path: Path) -> BackpressurePolicy:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DecideError(f"{path}: cannot read the file ({reason}); check the path") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "unparsable"
        raise DecideError(f"{path}: not valid YAML{where}: {problem}; fix the syntax") from None
    policy: dict[str, Any] | None = next(
        (d for d in documents if isinstance(d, dict) and d.get("kind") == "BackpressurePolicy"), None
    )
    if policy is None:
        kinds = sorted({str(d.get("kind")) for d in documents if isinstance(d, dict)})
        found = f" (found: {', '.join(kinds)})" if kinds else ""
        raise DecideError(f"{path}: no BackpressurePolicy in this file{found}; point decide at a policy file")
    try:
        return BackpressurePolicy.model_validate(policy)
    except ValidationError as exc:
        meta = policy.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        lines = [
            f"  {'.'.join(str(part) for part in err['loc']) or '(object)'}: {err['msg']}" for err in exc.errors()
        ]
        raise DecideError(
            f"{path}: BackpressurePolicy/{name or '<unnamed>'} is not valid:\n"
            + "\n".join(lines)
            + f"\nfix these fields (`sluice validate {path}` checks the whole file)"
        ) from None


def decide(
    path: Path, backlog: float, previous: Sequence[str] = (), now_text: str | None = None,
    *, drain_rate: float | None = None, offered: str | None = None,
) -> Decision:
    """The decision for the first BackpressurePolicy in `path` at `backlog`; raises DecideError."""
    if not math.isfinite(backlog) or backlog < 0:
        raise DecideError(f"--backlog must be a finite number >= 0 (got {backlog:g})")
    now = _parse_now(now_text)
    zones = _parse_previous(previous)
    rates = _parse_rates(drain_rate, offered)
    resource = _load_policy(path)
    memory = seed(zones) if zones else None
    outcome = evaluate(resource.spec, backlog, now.timestamp(), memory, rates=rates)
    return build_decision(
        outcome,
        namespace=resource.metadata.namespace or "default",
        name=resource.metadata.name,
        now=now,
        ttl_seconds=resource.spec.output.ttl_seconds,
    )


def run(args: argparse.Namespace) -> int:
    """`sluice decide`: print the Decision JSON, or a plain error and exit 1."""
    try:
        decision = decide(args.file, args.backlog, args.previous_zone, args.now,
                          drain_rate=args.drain_rate, offered=args.offered)
    except DecideError as exc:
        print(f"sluice decide: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(to_json(decision))
    return 0
