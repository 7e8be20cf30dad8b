"""The Lua scripts on the real Redis, with explicit `now` values as the clock.

Simulated time makes every case deterministic: nothing here sleeps or reads a wall
clock, so nothing is skipped for being slow or flaky.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.schema import Keys
from tests.unit.ratelimit_support import T0, ARedis, FakeClock, run, smtp
from workers.ratelimit import AimdPolicy, Grant, RateLimiter, plan_rest
from workers.ratelimit.bucket import BucketState, Limit, take, throttle
from workers.ratelimit.scripts import ACQUIRE
from workers.redis_ops import LuaScript


# grants never exceed rate x elapsed + burst ---------------------------------------------
@pytest.mark.parametrize(("rate", "burst"), [("10/s", 5), ("3/s", 1), ("600/m", 25),
                                             ("0.5/s", 2)])
def test_grants_bounded_over_simulated_time(url: str, keys: Keys, rate: str,
                                            burst: int) -> None:
    cfg = smtp(rate=rate, burst=burst)
    per_s = cfg.rate.per_second  # type: ignore[union-attr]
    clock = FakeClock()
    rng = random.Random(7)

    async def body(r: ARedis) -> None:
        # three "workers" sharing one bucket, asking at random moments
        limiters = [RateLimiter(r, keys, "p", cfg, clock=clock) for _ in range(3)]
        total = 0
        for _ in range(300):
            clock.advance(rng.choice([0.0, 0.001, 0.05, 0.3, 1.7]))
            g = await rng.choice(limiters).acquire({"a.test": rng.randint(1, 20)})
            total += g.total
            elapsed = clock.t - T0
            assert total <= per_s * elapsed + burst + 1e-9

    run(url, body)


# asking every dt, nothing is lost to the burst cap while rate * dt + 1 <= burst
@pytest.mark.parametrize(("rate", "burst", "dt"), [("10/s", 5, 0.05), ("3/s", 2, 0.25),
                                                   ("1000/s", 100, 0.033)])
def test_continuous_demand_gets_all_the_bucket_produces(url: str, keys: Keys, rate: str,
                                                        burst: int, dt: float) -> None:
    cfg = smtp(rate=rate, burst=burst)
    per_s = cfg.rate.per_second  # type: ignore[union-attr]
    clock = FakeClock()

    async def body(r: ARedis) -> None:
        lim = RateLimiter(r, keys, "p", cfg, clock=clock)
        total = 0
        for _ in range(200):
            total += (await lim.acquire({"a.test": 10_000})).total
            produced = per_s * (clock.t - T0) + burst
            # never more than produced; never a whole token less (floats aside)
            assert produced - 1 - 1e-3 <= total <= produced + 1e-9
            clock.advance(dt)

    run(url, body)


def test_fractional_refill(url: str, keys: Keys) -> None:
    clock = FakeClock()

    async def body(r: ARedis) -> None:
        lim = RateLimiter(r, keys, "p", smtp(rate="1/2s", burst=1), clock=clock)
        assert (await lim.acquire({"a.test": 1})).total == 1
        clock.advance(1.0)
        g = await lim.acquire({"a.test": 1})
        assert g.total == 0 and g.wait == pytest.approx(1.0, abs=1e-5)
        clock.advance(0.999)
        assert (await lim.acquire({"a.test": 1})).total == 0
        clock.advance(0.001)
        assert (await lim.acquire({"a.test": 1})).total == 1

    run(url, body)


def test_new_bucket_starts_full_and_the_wait_aims_for_a_step(url: str, keys: Keys) -> None:
    clock = FakeClock()

    async def body(r: ARedis) -> None:
        lim = RateLimiter(r, keys, "p", smtp(rate="1000/s", burst=200), clock=clock)
        g = await lim.acquire({"a.test": 500})
        assert g.granted == {"a.test": 200}
        # a tenth of a second's worth (100 tokens), not one round trip per token
        assert g.wait == pytest.approx(0.1, abs=1e-5)
        clock.advance(g.wait)
        assert (await lim.acquire({"a.test": 300})).total == 100

    run(url, body)


# per-domain isolation ---------------------------------------------------------------------
def test_slow_domain_does_not_stall_the_others(url: str, keys: Keys) -> None:
    clock = FakeClock()
    cfg = smtp(rate="100/s", burst=100, domains={"slow.test": "1/s"}, max_wait=5)

    async def body(r: ARedis) -> None:
        lim = RateLimiter(r, keys, "p", cfg, clock=clock)
        sent = {"fast.test": 0, "other.test": 0, "slow.test": 0}
        for _ in range(100):  # 10 simulated seconds
            g = await lim.acquire({"fast.test": 5, "other.test": 3, "slow.test": 5})
            for d, n in g.granted.items():
                sent[d] += n
            assert g.granted["fast.test"] == 5 and g.granted["other.test"] == 3
            if g.granted["slow.test"] < 5:
                assert 0 < g.wait_for("slow.test") <= 1.0 + 1e-5
            clock.advance(0.1)
        assert sent["fast.test"] == 500 and sent["other.test"] == 300
        assert sent["slow.test"] == 10  # burst 1, then 1 per second over 9.9 s

    run(url, body)


def test_slow_domain_gets_its_tokens_when_the_provider_is_the_bottleneck(url: str,
                                                                         keys: Keys) -> None:
    clock = FakeClock()
    cfg = smtp(rate="10/s", burst=10, domains={"slow.test": "2/s"})

    async def body(r: ARedis) -> None:
        lim = RateLimiter(r, keys, "p", cfg, clock=clock)
        g = await lim.acquire({"big.test": 1000, "slow.test": 1000})
        # water-filling: the slow domain's 2 tokens are served, the rest goes to big.test
        assert g.granted == {"big.test": 8, "slow.test": 2}
        plan = plan_rest(g, max_wait=0.2)
        assert plan.retry == {"big.test": 992} and plan.park == {"slow.test": 998}

    run(url, body)


def test_domain_limit_without_provider_rate(url: str, keys: Keys) -> None:
    clock = FakeClock()
    cfg = smtp(domains={"slow.test": "1/s"})

    async def body(r: ARedis) -> None:
        lim = RateLimiter(r, keys, "p", cfg, clock=clock)
        g = await lim.acquire({"a.test": 1000, "slow.test": 3})
        assert g.granted == {"a.test": 1000, "slow.test": 1}
        assert g.waits == {"slow.test": pytest.approx(1.0, abs=1e-5)}

    run(url, body)


# Retry-After and AIMD ------------------------------------------------------------------------
def test_retry_after_blocks_the_bucket(url: str, keys: Keys) -> None:
    clock = FakeClock()

    async def body(r: ARedis) -> None:
        lim = RateLimiter(r, keys, "p", smtp(rate="10/s", burst=10), clock=clock)
        await lim.throttled(retry_after=30, reason="421 4.7.0 try again later")
        for _ in range(29):
            clock.advance(1.0)
            g = await lim.acquire({"a.test": 1})
            assert g.total == 0 and g.wait >= T0 + 30 - clock.t
        clock.advance(1.5)
        assert (await lim.acquire({"a.test": 1})).total == 1
        st_ = await lim.status()
        assert st_["last_reason"] == "421 4.7.0 try again later"
        assert st_["last_throttle_at"] == T0

    run(url, body)


def test_aimd_decrease_counts_a_storm_once_and_recovers(url: str, keys: Keys) -> None:
    clock = FakeClock()
    cfg = smtp(rate="20/s", burst=20)

    async def body(r: ARedis) -> None:
        workers = [RateLimiter(r, keys, "p", cfg, clock=clock) for _ in range(4)]
        for w in workers:  # four workers hit by the same storm within 0.3 s
            await w.throttled(reason="454 Throttling failure")
            clock.advance(0.1)
        st_ = await workers[0].status()
        assert st_["throttles"] == 4 and st_["decreases"] == 1
        assert st_["effective_rate"] == pytest.approx(20 * (0.5 + 0.05 * 0.4))
        assert st_["throttled"] and st_["throttled_since"] == T0
        assert st_["throttled_until"] == pytest.approx(T0 + 0.5 / 0.05)
        # sending during recovery follows the integral of the recovering rate
        def ramp(t: float) -> float:  # tokens produced since the decrease at T0
            t1 = 0.5 / 0.05
            r = min(t, t1)
            return 20 * (0.5 * r + 0.5 * 0.05 * r * r) + 20 * max(0.0, t - t1)

        total = 0
        for _ in range(300):
            total += (await workers[1].acquire({"a.test": 50})).total
            assert ramp(clock.t - T0) - 1 - 1e-3 <= total <= ramp(clock.t - T0) + 1e-9
            clock.advance(0.05)
        st_ = await workers[2].status()
        assert st_["effective_rate"] == 20.0 and not st_["throttled"]
        assert st_["throttled_since"] is None and st_["last_reason"] == "454 Throttling failure"

    run(url, body)


def test_domain_throttle_slows_only_that_domain(url: str, keys: Keys) -> None:
    clock = FakeClock()
    cfg = smtp(rate="100/s", burst=100, domains={"gmail.test": "10/s"})

    async def body(r: ARedis) -> None:
        lim = RateLimiter(r, keys, "p", cfg, clock=clock)
        await lim.throttled(domain="Gmail.test", retry_after=5, reason="421-4.7.28 rate")
        g = await lim.acquire({"gmail.test": 5, "other.test": 50})
        assert g.granted == {"gmail.test": 0, "other.test": 50}
        assert g.wait_for("gmail.test") >= 5
        st_ = await lim.status()
        assert st_["effective_rate"] == 100.0 and not st_["throttled"]
        d = st_["domains"]["gmail.test"]
        assert d["factor"] == 0.5 and d["blocked_until"] == T0 + 5 and d["throttled"]
        assert st_["last_scope"] == "gmail.test"
        # a throttle about a domain without its own limit slows the whole provider
        await lim.throttled(domain="yahoo.test", reason="421 slow down")
        st_ = await lim.status()
        assert st_["factor"] == 0.5 and st_["last_domain"] == "yahoo.test"
        assert st_["last_scope"] == ""

    run(url, body)


def test_rate_change_applies_immediately(url: str, keys: Keys) -> None:
    clock = FakeClock()

    async def body(r: ARedis) -> None:
        old = RateLimiter(r, keys, "p", smtp(rate="100/s", burst=100), clock=clock)
        assert (await old.acquire({"a.test": 10})).total == 10  # 90 left
        new = RateLimiter(r, keys, "p", smtp(rate="5/s", burst=5), clock=clock)
        assert (await new.acquire({"a.test": 100})).total == 5
        clock.advance(1.0)
        assert (await new.acquire({"a.test": 100})).total == 5

    run(url, body)


def test_domains_are_lower_cased_and_merged(url: str, keys: Keys) -> None:
    clock = FakeClock()
    cfg = smtp(rate="100/s", burst=100, domains={"Slow.Test": "1/s"})

    async def body(r: ARedis) -> None:
        lim = RateLimiter(r, keys, "p", cfg, clock=clock)
        g = await lim.acquire({"SLOW.test": 1, "slow.test": 1, "A.test": 2, "a.TEST": 0})
        assert g.granted == {"slow.test": 1, "a.test": 2}
        assert g.remaining == {"slow.test": 1}
        assert await r.exists(keys.bucket("p", "slow.test"))

    run(url, body)


def test_redis_not_answering_is_our_error(keys: Keys) -> None:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from config.errors import RedisUnavailableError

    async def body() -> None:
        # nothing listens on port 1; no retries, so the test is quick
        dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5,
                              retry=Retry(NoBackoff(), 0))
        lim = RateLimiter(dead, keys, "p", smtp(rate="1/s"))
        with pytest.raises(RedisUnavailableError, match=r"127\.0\.0\.1:1/"):
            await lim.acquire({"a.test": 1})
        with pytest.raises(RedisUnavailableError):
            await lim.status()

    asyncio.run(body())


# providers without a rate ----------------------------------------------------------------------
class NoRedis:
    """Any use fails: proves a call made no Redis round trip."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Redis was used ({name}) where acquire must be free")


def test_no_rate_no_domains_is_free(keys: Keys) -> None:
    lim = RateLimiter(NoRedis(), keys, "p", smtp())  # type: ignore[arg-type]
    g = asyncio.run(lim.acquire({"a.test": 500, "b.test": 2, "c.test": 0}))
    assert g == Grant.everything({"a.test": 500, "b.test": 2})


def test_no_rate_throttle_blocks_and_is_recorded(url: str, keys: Keys) -> None:
    clock = FakeClock()
    cfg = smtp(domains={"slow.test": "1/s"})

    async def body(r: ARedis) -> None:
        lim = RateLimiter(r, keys, "p", cfg, clock=clock, policy=AimdPolicy(default_block=2))
        await lim.throttled(retry_after=10, reason="429 Too Many Requests")
        clock.advance(1.0)
        # this process holds the block without asking Redis ...
        g = await lim.acquire({"a.test": 3})
        assert g.total == 0 and g.wait == pytest.approx(9.0)
        # ... and a limiter that does call Redis (a limited domain) sees it cluster-wide
        other = RateLimiter(r, keys, "p", cfg, clock=clock)
        g = await other.acquire({"a.test": 3, "slow.test": 1})
        assert g.total == 0 and g.wait == pytest.approx(9.0)
        st_ = await other.status()
        assert st_["effective_rate"] is None and st_["blocked_until"] == T0 + 10
        assert st_["throttled"] and st_["last_reason"] == "429 Too Many Requests"
        clock.advance(9.0)
        assert (await lim.acquire({"a.test": 3})).total == 3
        # without Retry-After there is nothing to scale: a short default block
        await lim.throttled(reason="429")
        assert (await lim.acquire({"a.test": 3})).wait == pytest.approx(2.0)

    run(url, body)


# round trips ----------------------------------------------------------------------------
class CountingRedis:
    """Wraps the real client and counts the commands sent (the round trips)."""

    def __init__(self, inner: ARedis) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if callable(attr):
            def counted(*a: Any, **kw: Any) -> Any:
                # commands go through execute_command: record the command's name
                self.calls.append(str(a[0]).lower() if name == "execute_command" else name)
                return attr(*a, **kw)
            return counted
        return attr


def test_one_round_trip_per_acquire_with_load_fallback(url: str, keys: Keys,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.ratelimit.limiter as limiter_mod

    # a script the server has never seen, as after a restart or SCRIPT FLUSH
    fresh = LuaScript(ACQUIRE.name, ACQUIRE.source + f"\n-- {keys.prefix}\n")
    monkeypatch.setattr(limiter_mod, "ACQUIRE", fresh)
    cfg = smtp(rate="10/s", domains={"x.test": "1/s", "y.test": "2/s"})

    async def body(r: ARedis) -> None:
        spy = CountingRedis(r)
        lim = RateLimiter(spy, keys, "p", cfg)  # type: ignore[arg-type]
        await lim.acquire({"x.test": 1, "y.test": 1, "z.test": 4})
        assert spy.calls == ["evalsha", "eval"]  # unknown script: loaded by EVAL
        spy.calls.clear()
        await lim.acquire({"x.test": 1, "y.test": 1, "z.test": 4})
        assert spy.calls == ["evalsha"]

    run(url, body)


# the scripts do what the reference model says ----------------------------------------------------
op = st.one_of(
    st.tuples(st.just("acquire"), st.floats(0, 3), st.integers(0, 30), st.integers(0, 30),
              st.integers(0, 30)),
    st.tuples(st.just("throttle"), st.floats(0, 3), st.sampled_from(["", "slow.test"]),
              st.one_of(st.none(), st.floats(0.1, 5))),
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=25))
def test_lua_matches_the_reference_model(redis_url: str, ops: list[tuple[Any, ...]]) -> None:
    # uuid, not random: hypothesis seeds `random` the same way in every run
    keys = Keys(f"bmtest-model-{uuid.uuid4().hex[:10]}")
    cfg = smtp(rate="7/s", burst=5, domains={"slow.test": "1.5/s"})
    pol = AimdPolicy()
    clock = FakeClock()
    plim, dlim = Limit(7.0, 5), Limit(1.5, 1)
    p = BucketState.full(5, clock.t)
    d = BucketState.full(1, clock.t)

    async def body(r: ARedis) -> None:
        nonlocal p, d
        lim = RateLimiter(r, keys, "p", cfg, clock=clock, policy=pol)
        try:
            for o in ops:
                clock.advance(o[1])
                if o[0] == "acquire":
                    _, _, n_fast, n_other, n_slow = o
                    want = {"fast.test": n_fast, "other.test": n_other, "slow.test": n_slow}
                    g = await lim.acquire(want)
                    if n_fast + n_other + n_slow == 0:
                        continue
                    doms = [(d, dlim, n_slow)] if n_slow else []
                    m = take(p, plim, doms, n_fast + n_other, rec=pol.recover_per_second,
                             step=lim.step, now=clock.t)
                    p = m.provider
                    if n_slow:
                        d = m.domains[0]
                        assert g.granted["slow.test"] == m.granted[1]
                        assert g.wait_for("slow.test") == pytest.approx(m.waits[1], abs=1e-9)
                    assert g.granted.get("fast.test", 0) + g.granted.get("other.test", 0) \
                        == m.granted[0]
                else:
                    _, _, scope, retry_after = o
                    await lim.throttled(domain=scope or None, retry_after=retry_after)
                    if scope:
                        d, _ = throttle(d, rate=1.5, burst=1, policy=pol,
                                        retry_after=retry_after, now=clock.t)
                    else:
                        p, _ = throttle(p, rate=7.0, burst=5, policy=pol,
                                        retry_after=retry_after, now=clock.t)
                for key, model in ((keys.bucket("p"), p), (keys.bucket("p", "slow.test"), d)):
                    h = {k.decode(): float(v) for k, v in (await r.hgetall(key)).items()}
                    if not h:
                        continue
                    assert h["tokens"] == pytest.approx(model.tokens, abs=1e-9)
                    assert h["f"] == pytest.approx(model.f, abs=1e-12)
                    assert h["blk"] == model.blk
        finally:
            for stale in await r.keys(f"{keys.prefix}:*"):
                await r.delete(stale)

    run(redis_url, body)
