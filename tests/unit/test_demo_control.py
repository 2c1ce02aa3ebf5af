"""`sluice demo --control drain`: the policy it renders and what the timeline shows (no Kafka here)."""

from __future__ import annotations

from pathlib import Path

from sluice.decision import PRIORITIES
from sluice_operator.demo.policies import DRAIN_CONTROL, examples_dir, render
from sluice_operator.demo.report import _control
from sluice_operator.demo.scenario import schedule
from sluice_operator.demo.timeline import Sample, Timeline
from sluice_operator.demo.view import progress_line
from sluice_operator.demo.workload import PriorityCounts


def test_drain_renders_the_policy_in_draintime_mode(tmp_path: Path) -> None:
    zones = render(examples_dir(), tmp_path / "zones", "127.0.0.1:9092")
    drain = render(examples_dir(), tmp_path / "drain", "127.0.0.1:9092", control="drain")
    assert zones.policy.spec.control.mode == "Zones"
    assert drain.policy.spec.control.mode == "DrainTime"
    assert drain.policy.spec.control.target_lag == DRAIN_CONTROL["targetLag"]
    assert "127.0.0.1:9092" in (tmp_path / "drain" / "policy.yaml").read_text(encoding="utf-8")
    assert drain.policy.spec.thresholds == zones.policy.spec.thresholds  # only spec.control differs


def _sample(t: float, admit: float | None, mu: float | None, degraded: str | None = None) -> Sample:
    return Sample(
        t=t, phase="surge", lag=120.0, source="kafka", epoch=3,
        zones=dict.fromkeys(PRIORITIES, "yellow"), delays=dict.fromkeys(PRIORITIES, 0),
        shed=dict.fromkeys(PRIORITIES, False), circuit="closed", circuit_epoch=1,
        counts={p: PriorityCounts(sent=int(10 * t)) for p in PRIORITIES}, consumed=int(30 * t),
        admit={"high": 1.0 if admit is not None else None, "medium": admit, "low": 0.0 if admit is not None else None},
        operator_mu=mu, allowed=None if mu is None else mu * 0.9, degraded=degraded,
    )


def test_timeline_shows_admit_ratio_and_mu_hat_and_says_when_degraded() -> None:
    timeline = Timeline(phases=schedule(60.0), capacity=200.0, control="drain")
    timeline.samples += [_sample(1.0, 0.42, 198.0), _sample(2.0, 0.42, 198.0)]
    line = progress_line(timeline)
    assert "medium yellow 0ms sent 10/s admit 0.42" in line
    assert "mu-hat 198/s R 178/s" in line
    assert timeline.admitted_series()[-1] == (2.0, 30.0)
    timeline.samples.append(_sample(3.0, None, None, degraded="no consumption rate (mu)"))
    assert "DrainTime degraded: no consumption rate (mu)" in progress_line(timeline)
    control = _control(timeline)
    assert control["mode"] == "drain" and control["pacedSamples"] == 2 and control["samples"] == 3
    assert control["minAdmitRatio"] == {"high": 1.0, "medium": 0.42, "low": 0.0}
    assert control["degraded"] == ["no consumption rate (mu)"]
