"""Pace: starts spaced for SEGMIND_RPM, 429 holds, and the estimates (a clock passed in)."""

from __future__ import annotations

import itertools

import pytest

from bot.pacing import (
    INITIAL_LATENCY,
    RATE_LIMIT_FALLBACK,
    SERVED_MIN_CALLS,
    SERVED_WINDOW,
    WAIT_TARGET,
    Pace,
)


def starts_within(pace: Pace, seconds: float, *, step: float = 0.001) -> list[float]:
    """When a queue that always has work starts images, waking every ``step`` seconds."""
    starts: list[float] = []
    now = 0.0
    while now < seconds:
        if pace.delay(now) <= 0:
            pace.started(now)
            starts.append(now)
        now += step
    return starts


def test_without_a_limit_every_image_may_start_at_once() -> None:
    pace = Pace(max_concurrent=8)
    for _ in range(100):
        assert pace.delay(0.0) <= 0
        pace.started(0.0)


@pytest.mark.parametrize("lateness", [0.001, 0.007, 0.03])
def test_a_backlog_is_served_at_the_rpm_and_never_faster(lateness: float) -> None:
    pace = Pace(max_concurrent=8, rpm=600)
    starts = starts_within(pace, 120.0, step=lateness)  # a timer that wakes up that late
    assert 0.98 * 1200 <= len(starts) <= 1200  # 600 a minute, within 2 %
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.05  # never a burst
    # Any 60 s window holds at most 600 starts: nothing for the API to refuse.
    assert max(sum(1 for t in starts if s <= t < s + 60) for s in starts) <= 600


def test_after_an_idle_spell_the_schedule_restarts_without_a_burst() -> None:
    pace = Pace(max_concurrent=8, rpm=60)
    pace.started(0.0)
    assert pace.delay(0.5) == pytest.approx(0.5, rel=0.03)
    pace.started(100.0)  # nothing to do for a while
    assert pace.delay(100.0) == pytest.approx(1.0, rel=0.02)


def test_a_429_holds_every_start_for_as_long_as_the_api_says() -> None:
    pace = Pace(max_concurrent=8)
    assert pace.hold(2.5, now=10.0) == 2.5
    assert pace.delay(10.0) == pytest.approx(2.5)
    assert pace.held_for(11.0) == pytest.approx(1.5)
    assert pace.delay(12.5) <= 0
    # No hint from the API: a fixed wait, and a later, shorter hold never shortens it.
    assert pace.hold(None, now=20.0) == RATE_LIMIT_FALLBACK
    pace.hold(1.0, now=20.0)
    assert pace.delay(20.0) == pytest.approx(RATE_LIMIT_FALLBACK)


def test_the_latency_is_a_moving_average_of_the_measured_calls() -> None:
    pace = Pace(max_concurrent=4)
    assert pace.latency == INITIAL_LATENCY
    pace.observe(2.0)  # the first measure replaces the guess
    assert pace.latency == 2.0
    pace.observe(4.0)
    assert 2.0 < pace.latency < 4.0


def test_the_rate_is_the_slots_over_the_latency_or_the_rpm() -> None:
    pace = Pace(max_concurrent=8)
    pace.observe(0.1)
    assert pace.rate == pytest.approx(80.0)
    limited = Pace(max_concurrent=8, rpm=600)
    limited.observe(0.1)
    assert limited.rate == pytest.approx(10.0, rel=0.01)


def test_the_estimate_counts_the_images_ahead_and_any_hold() -> None:
    pace = Pace(max_concurrent=4, rpm=60)
    pace.observe(1.0)  # 4 slots / 1 s = 4 a second, but 60 a minute = 1 a second
    assert pace.eta(120, now=0.0) == pytest.approx(121.0, rel=0.01)
    pace.hold(30.0, now=0.0)
    assert pace.eta(120, now=0.0) == pytest.approx(151.0, rel=0.01)


def test_the_automatic_cap_is_what_the_bot_makes_within_the_target_wait() -> None:
    pace = Pace(max_concurrent=8)
    pace.observe(0.1)
    assert pace.automatic_cap() == int(80 * WAIT_TARGET)
    slow = Pace(max_concurrent=4, rpm=5)
    slow.observe(3.0)
    assert slow.automatic_cap() in (59, 60)  # 5 a minute for 12 minutes
    assert WAIT_TARGET < 15 * 60


def test_while_images_wait_the_rate_is_the_one_measured_serving_them() -> None:
    # 4 slots at 1 s would make 4 images a second; calls end every 0.5 s instead (other
    # processes on the same database take the rest of the API), so 2 a second.
    pace = Pace(max_concurrent=4)
    pace.observe(1.0)
    for call in range(SERVED_MIN_CALLS - 1):
        pace.served(waiting=True, now=call * 0.5)
    assert pace.rate == pytest.approx(4.0)  # too few calls to say yet
    pace.served(waiting=True, now=(SERVED_MIN_CALLS - 1) * 0.5)
    assert pace.rate == pytest.approx(2.0)
    assert pace.eta(100, now=0.0) == pytest.approx(51.0)
    assert pace.automatic_cap() == int(2 * WAIT_TARGET)


def test_the_measured_rate_never_raises_the_estimate() -> None:
    # Four calls ending together, every second: the formula's 4 a second stands.
    pace = Pace(max_concurrent=4)
    pace.observe(1.0)
    for call in range(4 * SERVED_MIN_CALLS):
        pace.served(waiting=True, now=float(call // 4))
    assert pace.rate == pytest.approx(4.0)


def test_the_measure_starts_again_after_nothing_waited_and_forgets_old_calls() -> None:
    pace = Pace(max_concurrent=4)
    pace.observe(1.0)
    for call in range(SERVED_MIN_CALLS):
        pace.served(waiting=True, now=call * 1.0)
    assert pace.rate == pytest.approx(1.0)
    pace.served(waiting=False, now=10.0)  # the queue ran dry: the bot was not the limit
    assert pace.rate == pytest.approx(4.0)
    for call in range(SERVED_MIN_CALLS):
        pace.served(waiting=True, now=20.0 + call * 1.0)
    late = 20.0 + SERVED_WINDOW + 100.0
    for call in range(SERVED_MIN_CALLS):  # faster now; the slow calls have left the window
        pace.served(waiting=True, now=late + call * 0.5)
    assert pace.rate == pytest.approx(2.0)
