"""`sluice simulate`: the closed loop in discrete time, driven by the real engine, without Kafka.

Pure: a scenario and a policy spec in, a `SimulationResult` out; `metrics` turns it into the
canonical metrics.json document and `plot.render` (matplotlib, imported lazily) into timeline.png.
The same seed gives byte-identical metrics.
"""

from sluice_operator.simulate.loop import (
    MODE_ALIASES,
    MODES,
    SIM_EPOCH,
    Mode,
    SimulationResult,
    canonical_mode,
    simulate,
    spec_for_mode,
)
from sluice_operator.simulate.metrics import dumps, metrics
from sluice_operator.simulate.scenario import Scenario, ScenarioError, ScenarioProblem, parse_scenario

__all__ = [
    "MODES",
    "MODE_ALIASES",
    "SIM_EPOCH",
    "Mode",
    "Scenario",
    "ScenarioError",
    "ScenarioProblem",
    "SimulationResult",
    "canonical_mode",
    "dumps",
    "metrics",
    "parse_scenario",
    "simulate",
    "spec_for_mode",
]
