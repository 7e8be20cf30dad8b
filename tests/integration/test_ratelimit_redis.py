"""Several processes hammer one provider's buckets on the real Redis with the real
(Redis) clock: the cluster as a whole gets what the limits allow, no more.

Counts are bounded by the Redis clock's elapsed time; no wall-clock duration is asserted.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from multiprocessing.synchronize import Barrier, Event
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio as aioredis

from config.providers import SmtpConfig
from config.schema import Keys
from workers.ratelimit import RateLimiter, plan_rest

if TYPE_CHECKING:  # the stubs make the client generic; the runtime class is not
    ARedis = aioredis.Redis[bytes]
else:
    ARedis = aioredis.Redis

pytestmark = pytest.mark.integration

PROCESSES = 3
DURATION = 2.0
RATE, BURST = 200.0, 20
SLOW_RATE, SLOW_BURST = 20.0, 20  # domain burst: one second's worth


def _cfg() -> SmtpConfig:
    return SmtpConfig(kind="smtp", host="relay.test", rate=f"{RATE:g}/s", burst=BURST,  # type: ignore[arg-type]
                      domains={"slow.test": f"{SLOW_RATE:g}/s"})  # type: ignore[dict-item]


async def _redis_now(r: ARedis) -> float:
    sec, usec = await r.time()
    return int(sec) + int(usec) / 1_000_000


async def _hammer(url: str, prefix: str, ready: Barrier, go: Event, deadline: Any,
                  out: Any) -> None:
    r = aioredis.Redis.from_url(url)
    try:
        lim = RateLimiter(r, Keys(prefix), "p", _cfg())  # clock=None: Redis TIME
        await r.ping()  # imported and connected before the start, so the start is fair
        ready.wait()
        go.wait()
        counts = {"bulk.test": 0, "slow.test": 0}
        while True:
            grant = await lim.acquire({"bulk.test": 50, "slow.test": 10})
            for d, n in grant.granted.items():
                counts[d] += n
            now = await _redis_now(r)
            if now >= deadline.value:
                break
            plan = plan_rest(grant, max_wait=5.0)
            await asyncio.sleep(plan.sleep or 0.0)
        out.put((counts, now))
    finally:
        await r.aclose()  # type: ignore[attr-defined]  # stubs predate it


def _worker(url: str, prefix: str, ready: Barrier, go: Event, deadline: Any,
            out: Any) -> None:
    asyncio.run(_hammer(url, prefix, ready, go, deadline, out))


def test_processes_share_one_bucket(redis_url: str, redis_client: redis.Redis[bytes],
                                    key_prefix: str) -> None:
    # spawn: each process opens its own connections, none inherited across a fork
    ctx = mp.get_context("spawn")
    ready, go = ctx.Barrier(PROCESSES + 1), ctx.Event()
    deadline = ctx.Value("d", 0.0)
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker,
                         args=(redis_url, key_prefix, ready, go, deadline, out))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    ready.wait(timeout=60)
    sec, usec = redis_client.time()
    start = int(sec) + int(usec) / 1_000_000  # before any acquire: buckets start full here
    deadline.value = start + DURATION
    go.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    end = max(now for _, now in results)  # after every process's last acquire
    elapsed = end - start
    slow = sum(c["slow.test"] for c, _ in results)
    total = sum(c["bulk.test"] + c["slow.test"] for c, _ in results)
    allowed = RATE * elapsed + BURST
    allowed_slow = SLOW_RATE * elapsed + SLOW_BURST
    print(f"{PROCESSES} processes, {elapsed:.3f} s on the Redis clock: {total} granted "
          f"(allowed {allowed:.1f}), slow.test {slow} (allowed {allowed_slow:.1f})")
    assert total <= allowed
    assert slow <= allowed_slow
    assert total >= 0.9 * allowed
    assert slow >= 0.9 * allowed_slow
    # every process got some: the bucket is shared, not taken over by one
    assert all(c["bulk.test"] > 0 for c, _ in results)
