"""Connection leases on the real Redis, with explicit `now` values as the clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from config.schema import Keys
from tests.unit.ratelimit_support import ARedis, FakeClock, run, smtp
from workers.ratelimit import ConnectionLeases


def test_cap_release_and_expiry(url: str, keys: Keys) -> None:
    clock = FakeClock()

    async def body(r: ARedis) -> None:
        leases = ConnectionLeases(r, keys, "p", smtp(max_connections=2), clock=clock)
        a = await leases.acquire("w1", 30)
        b = await leases.acquire("w2", 10)
        assert a and b and a != b and a.startswith("w1:")
        assert await leases.acquire("w3", 30) is None
        assert await leases.live() == 2
        await leases.release(a)
        c = await leases.acquire("w3", 30)
        assert c is not None
        assert await leases.acquire("w4", 30) is None
        # w2 was SIGKILLed: its lease runs out and the place comes free by itself
        clock.t += 10.0
        assert await leases.live() == 1
        d = await leases.acquire("w4", 30)
        assert d is not None
        assert set(m.decode() for m in await r.zrange(keys.leases("p"), 0, -1)) == {c, d}

    run(url, body)


def test_renew_extends_a_live_lease_and_fails_for_an_expired_one(url: str, keys: Keys) -> None:
    clock = FakeClock()

    async def body(r: ARedis) -> None:
        leases = ConnectionLeases(r, keys, "p", smtp(max_connections=1), clock=clock)
        lease = await leases.acquire("w1", 10)
        assert lease is not None
        clock.t += 9.0
        assert await leases.renew(lease, 10)
        clock.t += 9.0  # 18 s after taking it, alive thanks to the renewal
        assert await leases.acquire("w2", 10) is None
        clock.t += 1.0  # expired now
        assert not await leases.renew(lease, 10)
        assert await leases.acquire("w2", 10) is not None
        await leases.release(lease)  # releasing a lost lease is harmless
        assert await leases.live() == 1

    run(url, body)


def test_leases_key_expires_with_its_last_lease(url: str, keys: Keys) -> None:
    clock = FakeClock()

    async def body(r: ARedis) -> None:
        leases = ConnectionLeases(r, keys, "p", smtp(max_connections=3), clock=clock)
        await leases.acquire("w1", 5)
        await leases.acquire("w1", 100)
        ttl = await r.pttl(keys.leases("p"))
        assert 100_000 < ttl <= 160_000

    run(url, body)


def test_wait_acquire_times_out_and_gets_a_released_place(url: str, keys: Keys) -> None:
    async def body(r: ARedis) -> None:
        # the real clock here: polling is about real sleeps (counts asserted, not durations)
        leases = ConnectionLeases(r, keys, "p", smtp(max_connections=1), poll=0.01)
        held = await leases.acquire("w1", 30)
        assert held is not None
        assert await leases.wait_acquire("w2", 30, timeout=0.1) is None

        async def release_soon() -> None:
            await asyncio.sleep(0.05)
            await leases.release(held)

        task = asyncio.create_task(release_soon())
        got = await leases.wait_acquire("w2", 30, timeout=30)
        await task
        assert got is not None and got.startswith("w2:")

    run(url, body)


class NoRedis:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Redis was used ({name}) without a connection cap")


def test_no_cap_no_redis(keys: Keys) -> None:
    leases = ConnectionLeases(NoRedis(), keys, "p", smtp())  # type: ignore[arg-type]

    async def body() -> None:
        ids = {await leases.acquire("w", 1) for _ in range(100)}
        assert None not in ids and len(ids) == 100
        assert await leases.renew("w:x", 1)
        await leases.release("w:x")
        assert await leases.live() == 0

    asyncio.run(body())


def test_ttl_must_be_positive(keys: Keys) -> None:
    leases = ConnectionLeases(NoRedis(), keys, "p", smtp())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        asyncio.run(leases.acquire("w", 0))
