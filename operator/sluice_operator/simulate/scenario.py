"""The scenario file of `sluice simulate`: load, consumer capacity and delays over time.

A scenario is YAML (camelCase, like the CRDs). Rates are piecewise constant: a list of
``{at: seconds, rate: msgs/s}`` points, each rate holding from its ``at`` until the next point.
Each producer group is one of two kinds (see `simulate.loop`):

* ``kind: closed`` (the default): a caller loop. Offered ``rate`` msgs/s and told to sleep
  ``delayMs`` per message, it sends at most ``1 / (1/rate + delayMs/1000)`` msgs/s.
* ``kind: open``: request-driven. Every arriving message is one produce call in its own task, so
  a delay adds latency and in-flight calls (rate x delay, Little's law) and removes load only
  where the producer's ``poolSize`` (at most that many calls in flight per producer) fills:
  arrivals that find the pool full are lost (counted apart from shed).

Problems come back as `ScenarioError` listing every one with file, line and field path, in the
same plain words as `sluice validate`.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from sluice.decision import PRIORITIES, Priority
from sluice_operator.problems import Problem, ProblemsError
from sluice_operator.validation import YamlLoader, explain, format_path

__all__ = [
    "Consumer",
    "Noise",
    "Pacing",
    "ProducerGroup",
    "Producers",
    "Propagation",
    "RatePoint",
    "Scenario",
    "ScenarioError",
    "ScenarioProblem",
    "Schedule",
    "TimeWindow",
    "parse_scenario",
]

#: A week of simulated time is more than any question about a control loop needs.
MAX_DURATION_SECONDS = 7 * 86400
#: Upper bound on time steps, so a typo in stepSeconds cannot hang the command.
MAX_STEPS = 2_000_000


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class RatePoint(_Model):
    """From `at` seconds on (until the next point), the rate is `rate` msgs/s."""

    at: float = Field(ge=0)
    rate: float = Field(ge=0, le=1e9)


def _check_points(points: list[RatePoint]) -> list[RatePoint]:
    if points[0].at != 0:
        raise ValueError(f"the first point must be at 0 (got at {points[0].at:g})")
    for before, after in itertools.pairwise(points):
        if after.at <= before.at:
            raise ValueError(f"points must be in increasing `at` order ({after.at:g} follows {before.at:g})")
    return points


class ProducerGroup(_Model):
    """`count` identical producers of one priority, each offered `rate` msgs/s over time.

    ``kind: closed`` (default) is a caller loop that a delay slows down; ``kind: open`` is
    request-driven, each message one call in its own task, at most ``poolSize`` calls in flight
    per producer (required for open, not allowed for closed).
    """

    count: int = Field(ge=0, le=100_000)
    rate: list[RatePoint] = Field(min_length=1, max_length=10_000)
    kind: Literal["closed", "open"] = "closed"
    pool_size: int | None = Field(default=None, ge=1, le=10_000_000)

    @field_validator("rate")
    @classmethod
    def _ordered(cls, points: list[RatePoint]) -> list[RatePoint]:
        return _check_points(points)

    @model_validator(mode="after")
    def _pool_for_open(self) -> ProducerGroup:
        if self.kind == "open" and self.pool_size is None:
            raise ValueError("kind open needs poolSize (the most produce calls one producer keeps in flight)")
        if self.kind == "closed" and self.pool_size is not None:
            raise ValueError("poolSize applies only to kind: open (a closed-loop caller has one call in flight)")
        return self


class Producers(_Model):
    """Producer groups per priority; a priority left out has no producers."""

    high: ProducerGroup | None = None
    medium: ProducerGroup | None = None
    low: ProducerGroup | None = None

    def get(self, priority: Priority) -> ProducerGroup | None:
        """The group of `priority` (None: no producers)."""
        group: ProducerGroup | None = getattr(self, priority)
        return group


class Consumer(_Model):
    """The consumer group's total drain rate (msgs/s) over time."""

    capacity: list[RatePoint] = Field(min_length=1, max_length=10_000)

    @field_validator("capacity")
    @classmethod
    def _ordered(cls, points: list[RatePoint]) -> list[RatePoint]:
        return _check_points(points)


class Propagation(_Model):
    """Time from a published decision to a producer acting on it.

    Each producer gets its own delay, drawn once from ``[delay - jitter, delay + jitter]`` (its
    kubelet sync phase, in file mode). Watch mode: well under a second; file mode: 60-90 s.
    """

    delay_seconds: float = Field(default=0.5, ge=0, le=3600)
    jitter_seconds: float = Field(default=0.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _jitter_within_delay(self) -> Propagation:
        if self.jitter_seconds > self.delay_seconds:
            raise ValueError(
                f"jitterSeconds ({self.jitter_seconds:g}) must be <= delaySeconds ({self.delay_seconds:g})"
            )
        return self


class Noise(_Model):
    """Randomness from the seeded generator, so edges flap as they do in production.

    ``poisson``: message counts per step are Poisson draws around the rate (offered and consumed).
    ``rateJitter``: relative standard deviation of a slowly wandering multiplier on every offered
    rate and on the capacity (an AR(1) process with ``jitterTimeConstantSeconds``). All zero gives a
    fully deterministic fluid model.
    """

    poisson: bool = True
    rate_jitter: float = Field(default=0.02, ge=0, le=0.5)
    jitter_time_constant_seconds: float = Field(default=20.0, gt=0, le=86400)


class Pacing(_Model):
    """The producers' token bucket under DrainTime control (``--mode drain``).

    A priority with ``admitRatio < 1`` is paced to admitRatio x its own offered rate, measured
    over ``windowSeconds`` (an exponential average). A message of a ``wait`` priority that finds
    no token waits up to ``deadlineSeconds`` (open loop: holding a pool slot; closed loop: the
    caller is blocked) and is then rejected; a ``shed`` priority drops it at once.
    """

    window_seconds: float = Field(default=5.0, gt=0, le=3600)
    deadline_seconds: float = Field(default=5.0, ge=0, le=3600)


class TimeWindow(_Model):
    """A time window `[start, end)` in seconds from the start of the run."""

    start: float = Field(ge=0)
    end: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end:g}) must be > start ({self.start:g})")
        return self


class Scenario(_Model):
    """One closed-loop experiment: who offers what, how fast the consumer drains, for how long.

    ``pollingIntervalSeconds`` / ``pollingJitterSeconds`` default to the policy's ``polling``;
    ``signalAgeSeconds`` is how old the backlog reading is (e.g. a Prometheus scrape interval);
    during a ``signalOutages`` window the reading is unavailable and the policy's fallback applies.
    In drain mode the operator also reads the drain rate (consumed msgs/s) and the offered rate per
    priority, each averaged over the last ``rateWindowSeconds`` and as old as the backlog reading.
    ``surge`` marks the overload window the report measures (goodput, settling, recovery).
    """

    name: str = Field(min_length=1, max_length=253)
    description: str = Field(default="", max_length=10_000)
    seed: int = Field(default=1, ge=0, le=2**63 - 1)
    duration_seconds: float = Field(gt=0, le=MAX_DURATION_SECONDS)
    step_seconds: float = Field(default=0.5, gt=0, le=60)
    polling_interval_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    polling_jitter_seconds: float | None = Field(default=None, ge=0, le=600)
    signal_age_seconds: float = Field(default=0.0, ge=0, le=3600)
    rate_window_seconds: float = Field(default=30.0, gt=0, le=3600)
    pacing: Pacing = Pacing()
    propagation: Propagation = Propagation()
    consumer: Consumer
    producers: Producers
    initial_backlog: float = Field(default=0.0, ge=0, le=1e12)
    surge: TimeWindow | None = None
    signal_outages: list[TimeWindow] = Field(default_factory=list, max_length=1000)
    noise: Noise = Noise()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if all(self.producers.get(p) is None for p in PRIORITIES):
            raise ValueError("producers: give at least one of high, medium, low")
        steps = self.duration_seconds / self.step_seconds
        if steps < 1:
            raise ValueError(
                f"stepSeconds ({self.step_seconds:g}) must be <= durationSeconds ({self.duration_seconds:g})"
            )
        if steps > MAX_STEPS:
            raise ValueError(
                f"durationSeconds / stepSeconds is {steps:.0f} steps; at most {MAX_STEPS} are allowed "
                "(use a coarser stepSeconds)"
            )
        if self.surge is not None and self.surge.end > self.duration_seconds:
            raise ValueError(f"surge.end ({self.surge.end:g}) must be <= durationSeconds ({self.duration_seconds:g})")
        if all(self.producers.get(p) is None for p in PRIORITIES):
            raise ValueError("producers: give at least one of high, medium, low")
        return self


class Schedule:
    """A piecewise-constant rate, looked up by time (the last point with `at <= t`)."""

    def __init__(self, points: Sequence[RatePoint]) -> None:
        self._times = [p.at for p in points]
        self._rates = [p.rate for p in points]

    def at(self, t: float) -> float:
        """The rate at time `t`."""
        return self._rates[max(bisect.bisect_right(self._times, t) - 1, 0)]


@dataclass(frozen=True)
class ScenarioProblem(Problem):
    """One thing wrong with a scenario file."""

    @property
    def subject(self) -> str:
        return "scenario"


class ScenarioError(ProblemsError[ScenarioProblem]):
    """The scenario cannot be used; `problems` says every reason."""


def _node_line(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Line of the deepest YAML node along `loc` (the parent's line for a missing field)."""
    if node is None:
        return None
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1


def _load_yaml(text: str, filename: str) -> tuple[yaml.Node | None, Any]:
    loader = YamlLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        raise ScenarioError([ScenarioProblem(filename, f"invalid YAML: {reason}", line=line)]) from None
    finally:
        loader.dispose()
    return node, data


def parse_scenario(text: str, filename: str = "<scenario>") -> Scenario:
    """The scenario in `text`; raises ScenarioError with every problem, each with its line."""
    node, data = _load_yaml(text, filename)
    if not isinstance(data, dict):
        got = "nothing" if data is None else f"{type(data).__name__}"
        raise ScenarioError([ScenarioProblem(filename, f"expected a mapping (field: value), got {got}")])
    try:
        # Through JSON so YAML-only types (dates, sets) fail plainly instead of being coerced.
        return Scenario.model_validate_json(json.dumps(data, default=str))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            problems.append(ScenarioProblem(filename, explain(err, Scenario), path=format_path(loc),
                                            line=_node_line(node, loc)))
        raise ScenarioError(problems) from None
