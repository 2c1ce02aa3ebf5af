"""What the two simulated benchmarks share: the policy and scenarios they run, seeds, formatting.

`control_quality.py` (zone controllers) and `drain_control.py` (DrainTime against them) run the same
shipped policy over the same scenarios and report in the same style; this is that common part.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT / "operator", ROOT / "sdk"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from sluice_operator.api.policy import BackpressurePolicy, BackpressurePolicySpec  # noqa: E402
from sluice_operator.simulate import Scenario, parse_scenario  # noqa: E402
from sluice_operator.validation import load_objects  # noqa: E402

POLICY = ROOT / "examples" / "policy-sim.yaml"
SCENARIOS = ROOT / "examples" / "scenarios"


def log(message: str) -> None:
    print(message, flush=True)


def load_policy() -> BackpressurePolicySpec:
    objects = [o for o in load_objects(POLICY) if isinstance(o, BackpressurePolicy)]
    if len(objects) != 1:
        raise SystemExit(f"{POLICY}: expected exactly one BackpressurePolicy")
    return objects[0].spec


def load_scenarios() -> dict[str, Scenario]:
    """Every shipped scenario by name, in file order."""
    out = {}
    for path in sorted(SCENARIOS.glob("*.yaml")):
        scenario = parse_scenario(path.read_text(encoding="utf-8"), str(path))
        out[scenario.name] = scenario
    return out


def seeds_for(scenario: Scenario, count: int) -> list[int]:
    """The scenario's own seed, then 1, 2, ... (skipping it): `count` seeds."""
    extra = [s for s in range(1, count + 1) if s != scenario.seed]
    return [scenario.seed, *extra][:count]


def fmt(value: Any, digits: int = 2, *, whole_only: bool = False) -> str:
    """A cell: floats of 100 or more without decimals (`whole_only`: only those that are whole)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        if abs(value) >= 100 and (value.is_integer() or not whole_only):
            return f"{value:,.0f}"
        return f"{value:,.{digits}f}"
    return str(value)


def jsonable(value: Any) -> Any:
    """`value` with infinities as strings, for JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def load_inputs(bench: str) -> tuple[BackpressurePolicySpec, dict[str, Scenario]]:
    """The policy and the scenarios; exit 2 with a one-line reason when they cannot be loaded."""
    try:
        return load_policy(), load_scenarios()
    except Exception as exc:
        print(f"{bench}: cannot load inputs: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def write_results(result: dict[str, Any], out: Path, markdown: Callable[[dict[str, Any]], str], started: float,
                  target_line: Callable[[dict[str, Any]], str]) -> None:
    """Stamp the run (seconds since `started`, machine), write `out` (JSON) and its .md next to it, and
    print each target's verdict (`target_line` says the rest of its line)."""
    result["seconds"] = time.perf_counter() - started
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(jsonable(result), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    markdown_out = out.with_suffix(".md")
    markdown_out.write_text(markdown(result), encoding="utf-8")
    for t in result["targets"]:
        verdict = "MET" if t["met"] else "NOT MET"
        log(f"{verdict:>7}  {target_line(t)}")
    log(f"wrote {out.relative_to(ROOT)} and {markdown_out.name}")
