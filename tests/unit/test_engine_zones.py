"""Zone, ratio and delay formulas: every boundary, for every priority, default and custom numbers."""

from __future__ import annotations

import math
from typing import Any

import pytest

from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine import compile_policy, evaluate
from sluice_operator.engine.zones import plain, round_ms

SOURCE = {"prometheus": {"query": "sum(lag)"}}


def make_spec(**fields: Any) -> BackpressurePolicySpec:
    return BackpressurePolicySpec.model_validate({"source": SOURCE, **fields})


DEFAULT = make_spec()
WINDOWS = {"high": (1000, 5000, 10000), "medium": (500, 2000, 5000), "low": (100, 500, 1000)}
SCALE = {"high": 0.5, "medium": 1.0, "low": 1.5}
INDEX = {"high": 0, "medium": 1, "low": 2}


def up(x: float) -> float:
    """The next float above x: "just past" a threshold."""
    return math.nextafter(x, math.inf)


def decide(spec: BackpressurePolicySpec, priority: str, backlog: float) -> tuple[str, float, int, bool]:
    return plain(compile_policy(spec).priorities[INDEX[priority]], backlog)


@pytest.mark.parametrize("priority", ["high", "medium", "low"])
def test_default_boundaries(priority: str) -> None:
    green, yellow, red = WINDOWS[priority]
    scale = SCALE[priority]
    assert decide(DEFAULT, priority, 0) == ("green", 0.0, 0, False)
    assert decide(DEFAULT, priority, green) == ("green", 0.0, 0, False)
    zone, ratio, delay, shed = decide(DEFAULT, priority, up(green))
    assert (zone, delay, shed) == ("yellow", 10, False) and 0 < ratio < 1e-9
    assert decide(DEFAULT, priority, (green + yellow) / 2) == ("yellow", 0.5, 255, False)
    assert decide(DEFAULT, priority, yellow) == ("yellow", 1.0, 500, False)
    zone, ratio, delay, shed = decide(DEFAULT, priority, up(yellow))
    # bottom of red: 500 ms scaled, but never below the top of yellow (500 ms)
    assert (zone, delay, shed) == ("red", max(500, round_ms(500 * scale)), False) and 0 < ratio < 1e-9
    mid = (yellow + red) / 2
    assert decide(DEFAULT, priority, mid) == ("red", 0.5, max(500, round_ms(2750 * scale)), False)
    sheds = priority == "low"
    assert decide(DEFAULT, priority, red) == ("red", 1.0, round_ms(5000 * scale), sheds)
    assert decide(DEFAULT, priority, up(red)) == ("red", 1.0, round_ms(5000 * scale), sheds)
    assert decide(DEFAULT, priority, 1e12) == ("red", 1.0, round_ms(5000 * scale), sheds)


@pytest.mark.parametrize("priority", ["high", "medium", "low"])
def test_shed_boundary_is_strictly_above_ratio(priority: str) -> None:
    spec = make_spec(shedding={"priorities": ["high", "medium", "low"], "redRatioAbove": 0.8})
    _, yellow, red = WINDOWS[priority]
    at = yellow + 0.8 * (red - yellow)
    zone, ratio, _, shed = decide(spec, priority, at)
    assert zone == "red" and ratio == pytest.approx(0.8) and ratio <= 0.8 and shed is False
    zone, ratio, _, shed = decide(spec, priority, up(at))
    assert ratio > 0.8 and shed is True


def test_default_shedding_is_low_only_and_needs_ratio_above_08() -> None:
    assert decide(DEFAULT, "low", 900) == ("red", 0.8, 6150, False)  # (500 + 4500*0.8) * 1.5
    assert decide(DEFAULT, "low", up(900))[3] is True
    assert decide(DEFAULT, "medium", 1e9)[3] is False
    assert decide(DEFAULT, "high", 1e9)[3] is False


CUSTOM = make_spec(
    thresholds={
        "high": {"green": 10, "yellow": 20, "red": 40},
        "medium": {"green": 0, "yellow": 100, "red": 200},
        "low": {"green": 1, "yellow": 2, "red": 3},
    },
    delays={"yellow": {"minMs": 100, "maxMs": 300}, "red": {"minMs": 1000, "maxMs": 2000}},
    priorityScale={"high": 2.0, "medium": 0.1, "low": 1.0},
    shedding={"priorities": ["medium"], "redRatioAbove": 0.5},
)


def test_custom_numbers_high() -> None:
    assert decide(CUSTOM, "high", 10) == ("green", 0.0, 0, False)
    assert decide(CUSTOM, "high", up(10))[2] == 100
    assert decide(CUSTOM, "high", 15) == ("yellow", 0.5, 200, False)
    assert decide(CUSTOM, "high", 20) == ("yellow", 1.0, 300, False)
    assert decide(CUSTOM, "high", up(20))[:3:2] == ("red", 2000)  # 1000 ms * 2
    assert decide(CUSTOM, "high", 30) == ("red", 0.5, 3000, False)  # (1000 + 500) * 2
    assert decide(CUSTOM, "high", 40) == ("red", 1.0, 4000, False)


def test_custom_numbers_medium_scale_below_floor_and_shedding() -> None:
    assert decide(CUSTOM, "medium", 0) == ("green", 0.0, 0, False)
    assert decide(CUSTOM, "medium", up(0))[0] == "yellow"
    assert decide(CUSTOM, "medium", 100) == ("yellow", 1.0, 300, False)
    # (1000 + 1000 r) * 0.1 <= 200 < 300: the floor at yellow.maxMs keeps the delay monotonic
    assert decide(CUSTOM, "medium", up(100))[2] == 300
    assert decide(CUSTOM, "medium", 200) == ("red", 1.0, 300, True)
    assert decide(CUSTOM, "medium", 150) == ("red", 0.5, 300, False)
    assert decide(CUSTOM, "medium", up(150))[3] is True


def test_custom_numbers_low_never_shed_when_not_listed() -> None:
    assert decide(CUSTOM, "low", 1.5) == ("yellow", 0.5, 200, False)
    assert decide(CUSTOM, "low", 3) == ("red", 1.0, 2000, False)
    assert decide(CUSTOM, "low", 1e12)[3] is False


def test_rounding_is_half_up_to_whole_milliseconds() -> None:
    spec = make_spec(
        thresholds={"high": {"green": 0, "yellow": 4, "red": 8}},
        delays={"yellow": {"minMs": 0, "maxMs": 3}, "red": {"minMs": 0, "maxMs": 4}},
    )
    assert decide(spec, "high", 1)[2] == 1  # 0.75
    assert decide(spec, "high", 2)[2] == 2  # 1.5 -> 2 (half up)
    assert decide(spec, "high", 4 / 6)[2] == 1  # 0.5 -> 1 (half up, not to even)
    assert round_ms(2.5) == 3 and round_ms(2.4999) == 2


@pytest.mark.parametrize(
    ("backlog", "expected"),
    [
        (3000, {"high": ("yellow", 255, False), "medium": ("red", 2000, False), "low": ("red", 7500, True)}),
        (12000, {"high": ("red", 2500, False), "medium": ("red", 5000, False), "low": ("red", 7500, True)}),
    ],
)
def test_acceptance_numbers(backlog: float, expected: dict[str, tuple[str, int, bool]]) -> None:
    outcome = evaluate(DEFAULT, backlog, 1_700_000_000.0, None)
    got = {p.priority: (p.zone, p.delay_ms, p.shed) for p in outcome.priorities}
    assert got == expected
    assert outcome.source == "prometheus" and outcome.epoch == 1
