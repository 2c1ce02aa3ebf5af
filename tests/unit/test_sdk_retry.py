"""The SDK's backoff schedule: Hypothesis properties plus the exact schedule at the jitter extremes."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.retry import Backoff, RetryPolicy


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    max_delay = draw(st.floats(1e-4, 60.0, allow_nan=False))
    initial = draw(st.floats(1e-4, max_delay, allow_nan=False))
    return RetryPolicy(
        max_attempts=draw(st.integers(1, 60)),
        initial_delay=initial,
        max_delay=max_delay,
        deadline=draw(st.floats(1e-3, 600.0, allow_nan=False)),
    )


jitter = st.lists(st.floats(0.0, 1.0, allow_nan=False, exclude_max=True), min_size=1, max_size=80)


def _rand_from(values: list[float]) -> Callable[[], float]:
    """A `rand()` that replays Hypothesis-chosen jitter values (cycling)."""
    it = iter(values * 100)
    return lambda: next(it)


@settings(max_examples=300)
@given(policy=policies(), values=jitter)
def test_schedule_never_exceeds_max_delay_deadline_or_attempts(policy: RetryPolicy, values: list[float]) -> None:
    delays = list(policy.schedule(_rand_from(values)))
    assert len(delays) <= policy.max_attempts - 1
    assert all(0.0 <= d <= policy.max_delay for d in delays)
    assert math.fsum(delays) <= policy.deadline + 1e-9


@settings(max_examples=300)
@given(policy=policies(), values=jitter)
def test_each_delay_is_full_jitter_within_its_exponential_cap(policy: RetryPolicy, values: list[float]) -> None:
    backoff = Backoff(policy, start=0.0, rand=_rand_from(values))
    elapsed, retry = 0.0, 0
    while (delay := backoff.next_delay(elapsed)) is not None:
        cap = min(policy.max_delay, policy.initial_delay * 2**retry)
        assert 0.0 <= delay <= cap + 1e-12
        # The jittered value itself, unless the remaining deadline cut it shorter.
        expected = values[retry % len(values)] * cap
        assert delay == pytest.approx(min(expected, policy.deadline - elapsed), abs=1e-12)
        elapsed += delay
        retry += 1


@given(policy=policies())
def test_real_time_passing_ends_the_schedule_at_the_deadline(policy: RetryPolicy) -> None:
    backoff = Backoff(policy, start=0.0)
    assert backoff.next_delay(policy.deadline) is None
    assert backoff.next_delay(policy.deadline + 1.0) is None


def test_jitter_extremes_give_zero_and_the_exact_exponential_caps() -> None:
    policy = RetryPolicy(max_attempts=7, initial_delay=0.01, max_delay=0.1, deadline=100.0)
    top = list(policy.schedule(lambda: 1.0))
    assert top == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.1, 0.1])
    assert list(policy.schedule(lambda: 0.0)) == [0.0] * 6


def test_a_short_deadline_truncates_the_last_delay() -> None:
    policy = RetryPolicy(max_attempts=100, initial_delay=1.0, max_delay=1.0, deadline=2.5)
    assert list(policy.schedule(lambda: 1.0)) == pytest.approx([1.0, 1.0, 0.5])


def test_one_attempt_means_no_retry() -> None:
    assert list(RetryPolicy(max_attempts=1).schedule()) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_delay": -1.0},
        {"initial_delay": 2.0, "max_delay": 1.0},
        {"deadline": -1.0},
        {"initial_delay": 0.0},  # retries that never wait would spin
        {"deadline": 0.0},  # retries allowed but none could start
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_the_default_policy_can_reach_its_deadline() -> None:
    """Issue 10 item 7: 8 attempts capped at 0.5 s could wait 0.64 s against a 10 s deadline."""
    policy = RetryPolicy()
    assert policy.reachable_budget() >= policy.deadline
    assert math.fsum(policy.cap(i) for i in range(policy.max_attempts - 1)) == pytest.approx(28.635)
    # At the top of the jitter the retries last the whole deadline, not a fraction of a second.
    assert math.fsum(policy.schedule(lambda: 1.0)) == pytest.approx(policy.deadline)


def test_an_unreachable_deadline_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="sluice.retry"):
        RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02, deadline=5.0)
    assert "attempts run out first" in caplog.text


def test_no_deadline_is_allowed() -> None:
    policy = RetryPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.02, deadline=math.inf)
    assert list(policy.schedule(lambda: 1.0)) == pytest.approx([0.01, 0.02, 0.02])
