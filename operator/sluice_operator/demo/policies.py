"""The demo's policy and circuit breaker: examples/demo/*.yaml with the broker address filled in.

The examples hold a `${BOOTSTRAP}` placeholder because the embedded cluster's ports are chosen at
run time. The rendered copies go to a temporary directory that local mode reads, exactly as a
user's policy directory would be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from sluice.decision import PRIORITIES, Priority
from sluice_operator.api.circuit import CircuitBreaker
from sluice_operator.api.policy import BackpressurePolicy, Window

PLACEHOLDER = "${BOOTSTRAP}"
#: spec.control of `sluice demo --control drain`, sized for the demo's consumer (200 msgs/s) and a
#: 90 s run: hold ~150 messages (below low priority's shed level, 360), work an excess off in 10 s.
DRAIN_CONTROL: dict[str, object] = {"mode": "DrainTime", "targetLag": 150, "drainSeconds": 10, "integralSeconds": 60}
POLICY_FILE = "policy.yaml"
CIRCUIT_FILE = "circuit-breaker.yaml"


class DemoSetupError(RuntimeError):
    """The demo cannot start (missing example files, bad YAML); the message says what to do."""


def examples_dir() -> Path:
    """examples/demo of this checkout: next to the source tree, else under the working directory."""
    candidates = [
        Path(__file__).resolve().parents[3] / "examples" / "demo",
        Path.cwd() / "examples" / "demo",
    ]
    for candidate in candidates:
        if (candidate / POLICY_FILE).is_file() and (candidate / CIRCUIT_FILE).is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise DemoSetupError(f"examples/demo/{POLICY_FILE} and {CIRCUIT_FILE} not found (looked in {tried}); "
                         "run the demo from a checkout of the repository")


@dataclass(frozen=True)
class DemoObjects:
    """The rendered objects, parsed, plus where their files were written."""

    policy: BackpressurePolicy
    circuit: CircuitBreaker
    directory: Path

    @property
    def namespace(self) -> str:
        return self.policy.metadata.namespace or "default"

    @property
    def topic(self) -> str:
        kafka = self.policy.spec.source.kafka
        assert kafka is not None
        return kafka.topics[0]

    @property
    def group(self) -> str:
        kafka = self.policy.spec.source.kafka
        assert kafka is not None
        return kafka.consumer_group

    def windows(self) -> dict[Priority, Window]:
        thresholds = self.policy.spec.thresholds
        return {p: getattr(thresholds, p) for p in PRIORITIES}

    def shed_level(self, priority: Priority) -> float | None:
        """Backlog above which `priority` is shed (None when it never is)."""
        shedding = self.policy.spec.shedding
        if priority not in shedding.priorities:
            return None
        window = self.windows()[priority]
        return window.yellow + shedding.red_ratio_above * (window.red - window.yellow)


def render(source: Path, target: Path, bootstrap: str, *, control: str = "zones") -> DemoObjects:
    """Copy the two example files into `target` with the bootstrap servers filled in, and parse them.

    ``control="drain"`` sets the policy's ``spec.control`` to DRAIN_CONTROL (DrainTime mode).
    """
    target.mkdir(parents=True, exist_ok=True)
    parsed: dict[str, object] = {}
    for name in (POLICY_FILE, CIRCUIT_FILE):
        text = (source / name).read_text(encoding="utf-8")
        if PLACEHOLDER not in text:
            raise DemoSetupError(f"{source / name} has no {PLACEHOLDER} placeholder for the broker addresses")
        rendered = text.replace(PLACEHOLDER, bootstrap)
        try:
            doc = yaml.safe_load(rendered)
        except yaml.YAMLError as error:
            raise DemoSetupError(f"{source / name}: {error}") from error
        if name == POLICY_FILE and control == "drain" and isinstance(doc, dict) and isinstance(doc.get("spec"), dict):
            doc["spec"]["control"] = dict(DRAIN_CONTROL)
            rendered = yaml.safe_dump(doc, sort_keys=False)
        (target / name).write_text(rendered, encoding="utf-8")
        parsed[name] = doc
    try:
        policy = BackpressurePolicy.model_validate(parsed[POLICY_FILE])
        circuit = CircuitBreaker.model_validate(parsed[CIRCUIT_FILE])
    except ValueError as error:
        raise DemoSetupError(f"examples/demo is not valid: {error}") from error
    if policy.spec.source.kafka is None:
        raise DemoSetupError(f"{source / POLICY_FILE}: the demo needs a kafka source")
    if policy.spec.circuit_breaker_ref not in (None, circuit.metadata.name):
        raise DemoSetupError(f"{source / POLICY_FILE}: circuitBreakerRef must name {circuit.metadata.name}")
    return DemoObjects(policy, circuit, target)
