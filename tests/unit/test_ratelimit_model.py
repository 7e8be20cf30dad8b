"""The bucket arithmetic, the grant helpers and the waiting policy as pure functions:
no Redis, no sockets, no wall clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from config.providers import SmtpConfig
from config.units import parse_rate
from workers.ratelimit import AimdPolicy, Grant, domain_burst, plan_rest, plan_wait
from workers.ratelimit.bucket import (
    BucketState,
    Limit,
    available,
    fair_share,
    recovered_at,
    refill,
    step_need,
    take,
    throttle,
    time_to,
)

REC = 0.05


# fair_share ---------------------------------------------------------------------------
@given(st.integers(0, 2000), st.lists(st.integers(0, 500), min_size=1, max_size=12))
def test_fair_share_never_exceeds_total_or_caps_and_wastes_nothing(total: int,
                                                                    caps: list[int]) -> None:
    g = fair_share(total, caps)
    assert all(0 <= gi <= ci for gi, ci in zip(g, caps, strict=True))
    assert sum(g) == min(total, sum(caps))


@given(st.integers(0, 2000), st.lists(st.integers(0, 500), min_size=1, max_size=12))
def test_fair_share_is_max_min_fair(total: int, caps: list[int]) -> None:
    g = fair_share(total, caps)
    # nobody below its cap gets more than one token less than anyone else
    for i, (gi, ci) in enumerate(zip(g, caps, strict=True)):
        if gi < ci:
            assert all(gi >= gj - 1 for j, gj in enumerate(g) if j != i)


def test_fair_share_serves_a_small_group_in_full() -> None:
    # a slow domain with 1 token left is not starved by 1000 messages of unlimited domains
    assert fair_share(10, [1000, 1]) == [9, 1]
    assert fair_share(None, [1000, 1]) == [1000, 1]
    assert fair_share(0, [5, 5]) == [0, 0]


# refill / time_to ----------------------------------------------------------------------
def test_fractional_refill() -> None:
    b = BucketState(tokens=0.0, ts=100.0)
    b = refill(b, 0.5, 1, REC, 101.0)
    assert b.tokens == pytest.approx(0.5)
    assert available(b, 101.0) == 0
    b = refill(b, 0.5, 1, REC, 102.0)
    assert available(b, 102.0) == 1


def test_refill_is_capped_by_burst_and_ignores_a_clock_going_back() -> None:
    b = refill(BucketState(tokens=0.0, ts=0.0), 10.0, 5, REC, 100.0)
    assert b.tokens == 5.0
    back = refill(b, 10.0, 3, REC, 50.0)
    assert back.ts == 100.0 and back.tokens == 3.0  # a smaller burst applies at once


def test_floor_tolerates_float_error() -> None:
    b = BucketState(tokens=0.0, ts=0.0)
    for i in range(1, 31):
        b = refill(b, 1.0, 100, REC, i * 0.1)
    assert available(b, 3.0) == 3


def test_nothing_accrues_while_blocked() -> None:
    b = BucketState(tokens=0.0, ts=0.0, blk=10.0)
    assert refill(b, 10.0, 100, REC, 9.0).tokens == 0.0
    assert available(BucketState(tokens=5.0, ts=0.0, blk=10.0), 9.0) == 0
    assert refill(b, 10.0, 100, REC, 11.0).tokens == pytest.approx(10.0)


@given(
    f=st.floats(0.01, 1.0),
    times=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=20),
)
def test_refill_in_steps_equals_refill_at_once(f: float, times: list[float]) -> None:
    start = BucketState(tokens=-1000.0, ts=0.0, f=f)
    end = sum(times)
    once = refill(start, 3.0, 10_000, REC, end)
    b, t = start, 0.0
    for dt in times:
        t += dt
        b = refill(b, 3.0, 10_000, REC, t)
    assert b.tokens == pytest.approx(once.tokens, abs=1e-6)
    assert b.f == pytest.approx(once.f, abs=1e-9)
    # never more than the configured rate allows
    assert once.tokens - start.tokens <= 3.0 * end + 1e-9


@given(
    tokens=st.floats(-50.0, 5.0),
    f=st.floats(0.01, 1.0),
    need=st.integers(1, 40),
    blk=st.floats(0.0, 3.0),
)
def test_time_to_is_exactly_when_the_tokens_are_there(tokens: float, f: float, need: int,
                                                      blk: float) -> None:
    b = BucketState(tokens=tokens, ts=0.0, f=f, blk=blk)
    w = time_to(b, 2.0, REC, need, 0.0)
    assert w >= blk
    later = refill(b, 2.0, 1000, REC, w)
    # the margin makes it a hair late rather than a hair early
    assert max(need, tokens) <= later.tokens + 1e-9
    assert later.tokens == pytest.approx(max(need, tokens), abs=1e-5)


def test_step_need() -> None:
    assert step_need(1000, 1000.0, 1.0, 1000, 0.1) == 100  # slices at high rates
    assert step_need(1000, 14.0, 1.0, 14, 0.1) == 1  # one token at low rates
    assert step_need(3, 1000.0, 1.0, 1000, 0.1) == 3  # never more than the rest
    assert step_need(1000, 1000.0, 1.0, 20, 0.1) == 20  # never more than the burst


# take: the whole acquire ---------------------------------------------------------------
def test_take_unlimited_domains_need_provider_tokens_only() -> None:
    p = BucketState.full(10, 0.0)
    r = take(p, Limit(10.0, 10), [], 25, rec=REC, step=0.1, now=0.0)
    assert r.granted == [10]
    assert r.provider.tokens == 0.0
    assert r.waits[0] == pytest.approx(0.1, abs=1e-5)  # one token at 10/s


def test_take_a_slow_domain_does_not_stall_the_others() -> None:
    p = BucketState.full(100, 0.0)
    slow = BucketState(tokens=0.0, ts=0.0)
    r = take(p, Limit(100.0, 100), [(slow, Limit(1.0, 1), 50)], 50, rec=REC, step=0.1,
             now=0.5)
    assert r.granted == [50, 0]
    assert r.waits == [0.0, pytest.approx(0.5, abs=1e-5)]


def test_take_without_provider_limit_respects_its_block() -> None:
    blocked = BucketState(tokens=0.0, ts=0.0, blk=5.0)
    d = BucketState.full(10, 0.0)
    r = take(blocked, None, [(d, Limit(10.0, 10), 3)], 2, rec=REC, step=0.1, now=1.0)
    assert r.granted == [0, 0]
    assert r.waits == [4.0, 4.0]
    r = take(blocked, None, [(d, Limit(10.0, 10), 3)], 2, rec=REC, step=0.1, now=6.0)
    assert r.granted == [2, 3]


# AIMD -----------------------------------------------------------------------------------
def test_throttle_halves_once_per_storm_and_drains() -> None:
    pol = AimdPolicy()
    b = BucketState(tokens=7.0, ts=0.0)
    b, dec = throttle(b, rate=10.0, burst=10, policy=pol, retry_after=None, now=1.0)
    assert dec and b.f == 0.5 and b.tokens == 0.0 and b.dec == 1.0
    b2, dec2 = throttle(b, rate=10.0, burst=10, policy=pol, retry_after=None, now=1.5)
    assert not dec2 and b2.f == pytest.approx(0.5 + REC * 0.5)
    b3, dec3 = throttle(b2, rate=10.0, burst=10, policy=pol, retry_after=None, now=2.0)
    assert dec3 and b3.f < 0.5


def test_throttle_floor_and_recovery() -> None:
    # throttles once a second settle where halving meets the recovery: f = 2 * 0.05
    b = BucketState.full(100, 0.0)
    for i in range(40):
        b, _ = throttle(b, rate=100.0, burst=100, policy=AimdPolicy(), retry_after=None,
                        now=i * 1.0)
    assert b.f == pytest.approx(0.05, abs=1e-4)
    # without the storm window, the floor (1% of 100/s) is what stops the fall
    pol = AimdPolicy(window=0.0)
    b = BucketState.full(100, 0.0)
    for i in range(20):
        b, _ = throttle(b, rate=100.0, burst=100, policy=pol, retry_after=None, now=i * 1e-3)
    assert b.f == pytest.approx(0.01, abs=1e-4)
    now = 19e-3
    assert recovered_at(b, REC, now) == pytest.approx(now + (1 - b.f) / REC)
    assert refill(b, 100.0, 100, REC, recovered_at(b, REC, now) + 1).f == 1.0


def test_throttle_retry_after_blocks() -> None:
    b, _ = throttle(BucketState.full(10, 0.0), rate=10.0, burst=10, policy=AimdPolicy(),
                    retry_after=30.0, now=5.0)
    assert b.blk == 35.0 and available(b, 34.9) == 0
    assert recovered_at(b, REC, 5.0) == pytest.approx(35.0 + 0.5 / REC)


def test_throttle_without_rate_only_blocks() -> None:
    pol = AimdPolicy(default_block=2.0)
    b, dec = throttle(BucketState(tokens=0.0, ts=0.0), rate=None, burst=1, policy=pol,
                      retry_after=None, now=1.0)
    assert not dec and b.f == 1.0 and b.blk == 3.0


@pytest.mark.parametrize(
    ("rate", "floor"),
    [(100.0, 1.0), (14.0, 0.14), (5.0, 0.1), (0.05, 0.05)],
)
def test_min_factor(rate: float, floor: float) -> None:
    assert rate * AimdPolicy().min_factor(rate) == pytest.approx(floor)


@pytest.mark.parametrize(
    "kwargs",
    [{"decrease": 0.0}, {"decrease": 1.5}, {"min_fraction": 0.0}, {"min_rate": 0.0},
     {"window": -1.0}, {"recover_per_second": -0.1}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AimdPolicy(**kwargs)


# config: burst < 1 cannot happen ---------------------------------------------------------
def test_burst_below_one_is_rejected_by_config() -> None:
    with pytest.raises(ValidationError):
        SmtpConfig(kind="smtp", host="h", rate="10/s", burst=0)  # type: ignore[arg-type]
    slow = SmtpConfig(kind="smtp", host="h", rate="1/h")  # type: ignore[arg-type]
    assert slow.effective_burst == 1
    assert domain_burst(parse_rate("1/h")) == 1
    assert domain_burst(parse_rate("600/m")) == 10


# Grant and the waiting policy -------------------------------------------------------------
def test_grant_helpers() -> None:
    g = Grant(granted={"a": 3, "b": 0}, wait=2.0, wanted={"a": 3, "b": 4},
              waits={"b": 2.0})
    assert g.total == 3 and not g.complete
    assert g.remaining == {"b": 4}
    assert g.wait_for("b") == 2.0 and g.wait_for("a") == 0.0
    assert Grant.everything({"a": 2}).complete
    n = Grant.nothing({"a": 2}, 1.5)
    assert n.total == 0 and n.remaining == {"a": 2} and n.wait == 1.5


@pytest.mark.parametrize(
    ("wait", "max_wait", "expected"),
    [(0.0, 5.0, 0.0), (-1.0, 5.0, 0.0), (0.2, 5.0, 0.2), (5.0, 5.0, 5.0), (5.01, 5.0, None),
     (1.0, 0.0, None)],
)
def test_plan_wait(wait: float, max_wait: float, expected: float | None) -> None:
    assert plan_wait(wait, max_wait) == expected


def test_plan_rest_parks_only_the_slow_domain() -> None:
    g = Grant(granted={"fast": 10, "slow": 1, "done": 5},
              wanted={"fast": 30, "slow": 40, "done": 5},
              waits={"fast": 0.1, "slow": 60.0}, wait=60.0)
    plan = plan_rest(g, max_wait=5.0)
    assert plan.retry == {"fast": 20} and plan.sleep == pytest.approx(0.1)
    assert plan.park == {"slow": 39} and plan.park_for == 60.0
    assert plan_rest(Grant.everything({"a": 1}), 5.0).sleep is None


def test_step_need_is_finite_for_tiny_rates() -> None:
    assert step_need(10, 1 / 3600, 1.0, 1, 0.1) == 1
    assert math.isfinite(time_to(BucketState(tokens=0.0, ts=0.0), 1 / 3600, REC, 1, 0.0))


def test_a_long_drain_of_a_slow_domain_is_parked_not_slept_through() -> None:
    # 200 messages left for a 5/s domain would hold the process 40 s in short sleeps
    grant = Grant(granted={"slow.test": 5, "fast.test": 0},
                  wanted={"slow.test": 205, "fast.test": 10},
                  waits={"slow.test": 0.2, "fast.test": 0.05}, wait=0.2)
    plan = plan_rest(grant, max_wait=5.0, rates={"slow.test": 5.0})
    assert plan.park == {"slow.test": 200}
    assert plan.retry == {"fast.test": 10} and plan.sleep == 0.05
    # the same grant without rates keeps sleeping in the batch
    assert plan_rest(grant, max_wait=5.0).park == {}
    # a short drain (10 messages at 5/s = 2 s) is still slept through
    small = Grant(granted={"slow.test": 0}, wanted={"slow.test": 10},
                  waits={"slow.test": 0.2}, wait=0.2)
    assert plan_rest(small, max_wait=5.0, rates={"slow.test": 5.0}).retry == {"slow.test": 10}
