"""Retry backoff: capped, growing, jittered; then the event is dead."""

from __future__ import annotations

import random

import pytest

from domain.backoff import RetryPolicy


class Extreme(random.Random):
    """Jitter that always lands on the upper (or lower) end of its range."""

    def __init__(self, upper: bool) -> None:
        super().__init__(0)
        self.upper = upper

    def uniform(self, a: float, b: float) -> float:
        return b if self.upper else a


@pytest.mark.parametrize("upper", [True, False], ids=["upper", "lower"])
def test_retry_delays_grow_until_they_reach_the_cap(upper: bool) -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=20.0, rng=Extreme(upper))

    delays = [policy.delay_s(failures) for failures in range(1, 9)]

    ceilings = [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0, 20.0]
    assert delays == (ceilings if upper else [c / 2 for c in ceilings])


def test_a_retry_delay_is_jittered_between_half_and_all_of_its_ceiling() -> None:
    policy = RetryPolicy(base_delay_s=2.0, max_delay_s=300.0, rng=random.Random(7))

    for failures in range(0, 40):
        ceiling = min(300.0, 2.0 * 2 ** max(failures - 1, 0))
        for _ in range(20):
            assert ceiling / 2 <= policy.delay_s(failures) <= ceiling


def test_a_later_retry_never_waits_less_than_an_earlier_one() -> None:
    policy = RetryPolicy(rng=random.Random(3))

    for failures in range(1, 30):
        assert policy.delay_s(failures + 1) >= policy.delay_s(failures) / 2
        assert max(policy.delay_s(failures) for _ in range(5)) <= policy.max_delay_s


def test_a_retry_delay_after_very_many_failures_is_still_capped() -> None:
    policy = RetryPolicy(max_attempts=5000, max_delay_s=300.0, rng=Extreme(upper=True))

    assert not policy.is_exhausted(2000)
    assert policy.delay_s(2000) == 300.0


def test_an_event_is_exhausted_once_it_reaches_max_failures() -> None:
    policy = RetryPolicy(max_attempts=3)

    assert [policy.is_exhausted(n) for n in range(5)] == [False, False, False, True, True]
