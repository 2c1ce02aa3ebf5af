"""Run every benchmark and assemble bench/RESULTS.md and bench/results.json (`make bench`).

Each benchmark is a script run as its own subprocess (so one crashing, hanging or leaking cannot
take the others down), its output streamed with a prefix, and writes ``bench/.cache/<name>.json``
(and optionally ``<name>.md``, included in RESULTS.md as its details).

A benchmark's JSON may declare its targets in any of these shapes (all are understood):

* ``"targets": [{"name", "target", "measured", "met", "unit"?}, ...]``
* ``"targets": {name: {"target", "measured", "met"}}``
* ``"targets": {name: goal}`` with ``"met": {name: bool}`` and/or the measured number under a
  top-level key (``name`` itself, or see MEASURED_KEYS), judged as "measured <= goal" unless
  DIRECTIONS says otherwise.

Outcome per benchmark: ``ok`` (it wrote fresh results; missed targets are results, not failures),
``not run`` (script absent), ``failed`` (non-zero exit without fresh results, no results at all,
or a timeout). Exit status: 1 when a benchmark failed, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CACHE = BENCH / ".cache"
RESULTS_MD = BENCH / "RESULTS.md"
RESULTS_JSON = BENCH / "results.json"

#: (name, script, what it measures) in run order.
BENCHMARKS = (
    ("engine", "engine.py", "decision engine: time and memory per policy evaluation"),
    ("operator_cycle", "operator_cycle.py", "operator polling cycle: requests, API writes, CPU per cycle"),
    ("sdk_overhead", "sdk_overhead.py", "producer SDK overhead over plain confluent-kafka"),
    ("control_quality", "control_quality.py", "closed-loop control quality (simulated): none vs origin vs Sluice"),
    ("drain_control", "drain_control.py", "DrainTime control (simulated): none vs origin vs zones vs drain, 20 seeds"),
)
#: Where the measured number of a `{name: goal}` target lives, when it is not under `name`.
MEASURED_KEYS = {
    "engine": {"us_per_evaluation": "cpu_us_per_evaluation_mean"},
    "sdk_overhead": {"ratio": "ratio_vs_plain_poll"},
}
#: Comparison of a `{name: goal}` target when it is not "measured <= goal".
DIRECTIONS: dict[str, dict[str, str]] = {}
#: How to print a bare-number goal of a `{name: {"target": goal, ...}}` target.
GOAL_PREFIX = {
    "operator_cycle": {
        "cpu_seconds_per_cycle": "<",
        "prometheus_requests_per_cycle": "=",
        "steady_writes_per_cycle": "=",
    }
}
DEFAULT_TIMEOUT = 1800.0


@dataclass
class Outcome:
    """What one benchmark run produced."""

    name: str
    script: str
    about: str
    status: str = "not run"
    returncode: int | None = None
    seconds: float | None = None
    reason: str = ""
    result: dict[str, Any] | None = None
    details_md: str | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    kept: bool = False  # not run this time: the previous run's result (see previous_outcomes)


def log(message: str) -> None:
    print(message, flush=True)


def rel(path: Path) -> str:
    """`path` relative to the repository when it is inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare numbers across machines."""
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "nproc": usable,
        "cpuCount": os.cpu_count(),
        "cpuModel": cpu_model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "commit": commit or None,
        "loadAverage": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def run_script(outcome: Outcome, timeout: float) -> None:
    """Run one benchmark, streaming its output; fill in status, result and timing."""
    script = BENCH / outcome.script
    if not script.exists():
        outcome.status, outcome.reason = "not run", f"bench/{outcome.script} does not exist"
        log(f"--- {outcome.name}: not run ({outcome.reason})")
        return
    out_json = CACHE / f"{outcome.name}.json"
    started_wall = time.time()
    started = time.perf_counter()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "operator"), str(ROOT / "sdk"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    log(f"--- {outcome.name}: running bench/{outcome.script} (timeout {timeout:.0f} s)")
    process = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group: a timeout kills its children too
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            outcome.tail = [*outcome.tail[-29:], line]
            log(f"  {outcome.name} | {line}")
        outcome.returncode = process.wait()
    finally:
        timer.cancel()
    outcome.seconds = time.perf_counter() - started
    fresh = out_json.exists() and out_json.stat().st_mtime >= started_wall - 1
    if timed_out.is_set():
        outcome.status, outcome.reason = "failed", f"timed out after {timeout:.0f} s"
    elif not fresh:
        outcome.status = "failed"
        outcome.reason = f"exit code {outcome.returncode}, no fresh {rel(out_json)}"
    else:
        outcome.status = "ok"
        if outcome.returncode:
            outcome.reason = f"exit code {outcome.returncode} (a target was missed)"
    if fresh:
        try:
            outcome.result = json.loads(out_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            outcome.status, outcome.reason = "failed", f"unreadable {out_json.name}: {exc}"
        md = out_json.with_suffix(".md")
        if md.exists() and md.stat().st_mtime >= started_wall - 1:
            outcome.details_md = md.read_text(encoding="utf-8")
    if outcome.status == "ok" and isinstance(outcome.result, dict):
        outcome.targets = normalize_targets(outcome.name, outcome.result)
    why = f"; {outcome.reason}" if outcome.reason else ""
    log(f"--- {outcome.name}: {outcome.status} in {outcome.seconds:.1f} s{why}")


def _measured(name: str, key: str, doc: dict[str, Any]) -> Any:
    hinted = MEASURED_KEYS.get(name, {}).get(key)
    if hinted is not None and hinted in doc:
        return doc[hinted]
    if key in doc and not isinstance(doc[key], dict | list):
        return doc[key]
    matches = [k for k, v in doc.items() if key in k and isinstance(v, int | float) and not isinstance(v, bool)]
    return doc[matches[0]] if len(matches) == 1 else None


def _compare(measured: Any, goal: Any, direction: str) -> bool | None:
    if not isinstance(measured, int | float) or not isinstance(goal, int | float):
        return None
    return {"<=": measured <= goal, "<": measured < goal, ">=": measured >= goal, ">": measured > goal}.get(
        direction, measured == goal
    )


def normalize_targets(name: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of one benchmark's JSON as rows {name, target, measured, met, unit}."""
    raw = doc.get("targets")
    rows: list[dict[str, Any]] = []
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict):
                rows.append(
                    {
                        "name": str(item.get("name", "?")),
                        "target": item.get("target"),
                        "measured": item.get("measured"),
                        "met": item.get("met"),
                        "unit": item.get("unit", ""),
                        "scenario": item.get("scenario"),
                        "note": item.get("aggregate"),
                    }
                )
        return rows
    if not isinstance(raw, dict):
        return rows
    met_map = doc.get("met") if isinstance(doc.get("met"), dict) else {}
    overall = doc.get("ok", doc.get("met") if isinstance(doc.get("met"), bool) else None)
    for key, spec in raw.items():
        if isinstance(spec, dict):
            goal = spec.get("target")
            prefix = GOAL_PREFIX.get(name, {}).get(key)
            rows.append(
                {
                    "name": key,
                    "target": f"{prefix} {goal}" if prefix and isinstance(goal, int | float) else goal,
                    "measured": spec.get("measured"),
                    "met": spec.get("met"),
                    "unit": spec.get("unit", ""),
                }
            )
            continue
        direction = DIRECTIONS.get(name, {}).get(key, "<=")
        measured = _measured(name, key, doc)
        met = met_map.get(key) if isinstance(met_map, dict) and key in met_map else _compare(measured, spec, direction)
        if met is None and isinstance(overall, bool):
            met = overall
        rows.append({"name": key, "target": f"{direction} {spec}", "measured": measured, "met": met, "unit": ""})
    return rows


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def verdict(met: Any) -> str:
    return "**MET**" if met is True else ("**NOT MET**" if met is False else "unknown")


def demote(markdown: str) -> str:
    """A benchmark's own Markdown, headings pushed two levels down to nest under ours."""
    out = []
    for line in markdown.splitlines():
        out.append("##" + line if line.startswith("#") else line)
    return "\n".join(out).strip()


def previous_outcomes(names: list[str]) -> dict[str, Outcome]:
    """The last results of the benchmarks in `names`, from results.json and RESULTS.md (for --only).

    A partial run keeps every benchmark it did not run as the previous run left it, so
    `--only drain_control` does not erase the other sections.
    """
    try:
        previous = json.loads(RESULTS_JSON.read_text(encoding="utf-8")).get("benchmarks", {})
        markdown = RESULTS_MD.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return {}
    sections: dict[str, str] = {}
    for chunk in ("\n" + markdown).split("\n## ")[1:]:
        title, _, body = chunk.partition("\n")
        sections[title.strip()] = body
    about = {b[0]: b[2] for b in BENCHMARKS}
    out = {}
    for name in names:
        entry = previous.get(name)
        if not isinstance(entry, dict):
            continue
        outcome = Outcome(name, str(entry.get("script", "")).removeprefix("bench/"), about.get(name, ""))
        outcome.status = str(entry.get("status", "not run"))
        outcome.reason = str(entry.get("reason") or "")
        outcome.returncode = entry.get("returncode")
        outcome.seconds = entry.get("seconds")
        outcome.result = entry.get("result")
        outcome.targets = list(entry.get("targets") or [])
        body = sections.get(name, "")
        lines = body.strip().splitlines()
        if lines and lines[0].startswith("`bench/"):
            lines = lines[1:]  # our own "`bench/x.py`: what." line, written again
        outcome.details_md = "\n".join(lines).strip() or None
        out[name] = outcome
    return out


def results_markdown(outcomes: list[Outcome], info: dict[str, Any], date: str) -> str:
    lines = [
        "# Sluice benchmark results",
        "",
        f"Generated by `make bench` (bench/run_all.py) on {date}.",
        "",
        f"Machine: {info['nproc']} usable CPUs (nproc; {info['cpuCount']} online)"
        + (f", {info['cpuModel']}" if info["cpuModel"] else "")
        + f"; {info['implementation']} {info['python']}; {info['platform']}"
        + (f"; commit {info['commit']}" if info["commit"] else "")
        + (f"; load average {info['loadAverage'][0]:.2f} at the start" if info["loadAverage"] else "")
        + ".",
        "",
        "## Summary",
        "",
        "| benchmark | what | status | targets met | time (s) |",
        "|---|---|---|---:|---:|",
    ]
    for o in outcomes:
        met = sum(1 for t in o.targets if t["met"] is True)
        counted = f"{met}/{len(o.targets)}" if o.targets else "-"
        status = o.status + (f" ({o.reason})" if o.reason else "") + (" (previous run)" if o.kept else "")
        lines.append(f"| {o.name} | {o.about} | {status} | {counted} | {fmt(o.seconds and round(o.seconds, 1))} |")
    lines += [
        "",
        "## Targets",
        "",
        "| benchmark | target | goal | measured | verdict |",
        "|---|---|---|---:|---|",
    ]
    for o in outcomes:
        if o.status != "ok":
            lines.append(f"| {o.name} | (all) | - | {o.status} | {'not run' if o.status == 'not run' else 'FAILED'} |")
            continue
        if not o.targets:
            lines.append(f"| {o.name} | (no targets declared) | - | - | - |")
        for t in o.targets:
            label = f"{t['scenario']}: {t['name']}" if t.get("scenario") else t["name"]
            unit = t.get("unit") or ""
            note = f" ({t['note']})" if t.get("note") else ""
            lines.append(
                f"| {o.name} | {label} | {fmt(t['target'])} | {fmt(t['measured'])}{unit}{note} | {verdict(t['met'])} |"
            )
    for o in outcomes:
        lines += ["", f"## {o.name}", "", f"`bench/{o.script}`: {o.about}.", ""]
        if o.status == "not run":
            lines.append(f"Not run: {o.reason}.")
        elif o.status == "failed":
            lines += [f"Failed: {o.reason}. Last lines of its output:", "", "```", *o.tail[-20:], "```"]
        elif o.details_md and o.kept:
            lines.append(o.details_md)
        elif o.details_md:
            lines.append(demote(o.details_md))
        elif isinstance(o.result, dict):
            lines += ["| key | value |", "|---|---:|"]
            for key, value in o.result.items():
                if not isinstance(value, dict | list):
                    lines.append(f"| {key} | {fmt(value)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Sluice benchmarks and write bench/RESULTS.md")
    parser.add_argument("--only", action="append", choices=[b[0] for b in BENCHMARKS], help="run only this one")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per benchmark")
    args = parser.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    info = machine()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    log(f"Sluice benchmarks: {info['nproc']} CPUs, Python {info['python']}, {date}")
    outcomes = []
    chosen = [b for b in BENCHMARKS if not args.only or b[0] in args.only]
    kept = previous_outcomes([b[0] for b in BENCHMARKS if b not in chosen]) if args.only else {}
    for i, (name, script, about) in enumerate(chosen, 1):
        log(f"[{i}/{len(chosen)}] {name}")
        outcome = Outcome(name, script, about)
        try:
            run_script(outcome, args.timeout)
        except Exception as exc:  # one broken benchmark must not stop the others
            outcome.status, outcome.reason = "failed", f"{type(exc).__name__}: {exc}"
            log(f"--- {name}: failed ({outcome.reason})")
        outcomes.append(outcome)
    if kept:
        log(f"kept the previous results of {', '.join(kept)} (not run this time)")
        for outcome in kept.values():
            outcome.kept = True
        ran = {o.name: o for o in outcomes}
        outcomes = [ran.get(b[0]) or kept[b[0]] for b in BENCHMARKS if b[0] in ran or b[0] in kept]

    RESULTS_MD.write_text(results_markdown(outcomes, info, date), encoding="utf-8")
    RESULTS_JSON.write_text(
        json.dumps(
            {
                "generatedAt": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": info,
                "benchmarks": {
                    o.name: {
                        "script": f"bench/{o.script}",
                        "status": o.status,
                        "reason": o.reason or None,
                        "returncode": o.returncode,
                        "seconds": None if o.seconds is None else round(o.seconds, 2),
                        "targets": o.targets,
                        "result": o.result,
                    }
                    for o in outcomes
                },
            },
            indent=2,
            sort_keys=True,
        )
        + "\n",
        encoding="utf-8",
    )
    log("")
    for o in outcomes:
        met = sum(1 for t in o.targets if t["met"] is True)
        missed = [t["name"] for t in o.targets if t["met"] is False]
        summary = f"{met}/{len(o.targets)} targets met" if o.targets else (o.reason or "no targets")
        log(f"{o.name:<16} {o.status:<8} {summary}" + (f"; NOT MET: {', '.join(missed)}" if missed else ""))
    log(f"wrote {rel(RESULTS_MD)} and {rel(RESULTS_JSON)}")
    failed = [o.name for o in outcomes if o.status == "failed"]
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
