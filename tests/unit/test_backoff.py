"""Backoff arithmetic and the give-up rule: deterministic (seeded rng), plus properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.backoff import backoff_ceiling, compute_backoff, should_give_up

attempts = st.integers(min_value=1, max_value=5000)
bases = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)
caps = st.floats(min_value=0.0, max_value=1e7, allow_nan=False)
seeds = st.integers(min_value=0, max_value=2**32)


def test_ceiling_doubles_from_base_then_stops_at_cap() -> None:
    got = [backoff_ceiling(n, base=30.0, cap=3600.0) for n in range(1, 10)]
    assert got == [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0]


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert backoff_ceiling(100_000, base=30.0, cap=3600.0) == 3600.0
    assert 0.0 <= compute_backoff(100_000, base=30.0, cap=3600.0) <= 3600.0


def test_full_jitter_is_uniform_over_zero_to_ceiling() -> None:
    # Random.uniform(a, b) is a + (b - a) * random(): the same seed gives the same fraction.
    fraction = random.Random(7).random()
    assert compute_backoff(3, base=30.0, cap=3600.0, rng=random.Random(7)) == pytest.approx(
        120.0 * fraction
    )
    draws = [compute_backoff(4, base=30.0, cap=3600.0, rng=random.Random(s)) for s in range(200)]
    assert all(0.0 <= d <= 240.0 for d in draws)
    # full jitter spreads over the whole range, not just near the top
    assert min(draws) < 24.0 and max(draws) > 216.0


def test_retry_after_is_a_floor_and_may_exceed_the_cap() -> None:
    rng = random.Random(1)
    assert compute_backoff(1, base=30.0, cap=60.0, rng=rng, retry_after=7200.0) == 7200.0
    # a small Retry-After does not shorten a longer draw
    plain = compute_backoff(8, base=30.0, cap=3600.0, rng=random.Random(3))
    floored = compute_backoff(8, base=30.0, cap=3600.0, rng=random.Random(3), retry_after=0.5)
    assert floored == max(plain, 0.5)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("-inf")])
def test_nonsense_retry_after_is_ignored(bad: float) -> None:
    plain = compute_backoff(2, base=10.0, cap=100.0, rng=random.Random(5))
    assert compute_backoff(2, base=10.0, cap=100.0, rng=random.Random(5), retry_after=bad) == plain


@pytest.mark.parametrize(
    ("attempt", "base", "cap"), [(0, 1.0, 1.0), (-3, 1.0, 1.0), (1, -1.0, 1.0), (1, 1.0, -1.0),
                                 (1, float("nan"), 1.0), (1, 1.0, float("nan"))]
)
def test_bad_arguments_are_refused(attempt: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        compute_backoff(attempt, base=base, cap=cap)


@given(attempt=attempts, base=bases, cap=caps, seed=seeds)
def test_delay_stays_within_zero_and_the_capped_ceiling(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    delay = compute_backoff(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(attempt - 1, 64))


@given(attempt=attempts, base=bases, cap=caps)
def test_ceiling_is_monotone_and_capped(attempt: int, base: float, cap: float) -> None:
    here = backoff_ceiling(attempt, base=base, cap=cap)
    assert here <= backoff_ceiling(attempt + 1, base=base, cap=cap) <= cap


@given(attempt=attempts, base=bases, cap=caps, seed=seeds)
def test_same_draw_never_shrinks_with_more_attempts(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    now = compute_backoff(attempt, base=base, cap=cap, rng=random.Random(seed))
    later = compute_backoff(attempt + 1, base=base, cap=cap, rng=random.Random(seed))
    assert now <= later


@given(
    attempt=attempts,
    base=bases,
    cap=caps,
    seed=seeds,
    retry_after=st.floats(min_value=0.0, max_value=1e8, allow_nan=False),
)
def test_retry_after_bounds(
    attempt: int, base: float, cap: float, seed: int, retry_after: float
) -> None:
    delay = compute_backoff(
        attempt, base=base, cap=cap, rng=random.Random(seed), retry_after=retry_after
    )
    assert retry_after <= delay <= max(cap, retry_after)


@pytest.mark.parametrize(
    ("attempts_made", "first", "now", "expected"),
    [
        (1, 1000.0, 1000.0, False),
        (7, 1000.0, 1000.0, False),
        (8, 1000.0, 1000.0, True),  # max_attempts attempts made: no ninth
        (9, 1000.0, 1000.0, True),
        (1, 1000.0, 1000.0 + 86400.0 - 0.001, False),
        (1, 1000.0, 1000.0 + 86400.0, True),  # exactly max_age old
        (1, 1000.0, 1000.0 + 10 * 86400.0, True),
    ],
)
def test_should_give_up(attempts_made: int, first: float, now: float, expected: bool) -> None:
    assert (
        should_give_up(attempts_made, first, now, max_attempts=8, max_age=86400.0) is expected
    )
