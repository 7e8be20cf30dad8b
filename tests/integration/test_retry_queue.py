"""RetryQueue / AsyncRetryQueue against a real Redis: ordering, claims, concurrency."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
import redis
import redis.asyncio

from config.errors import RedisUnavailableError
from config.schema import Keys
from producers.demo import free_port
from workers.redis_ops import LuaScript, RedisOp, ScriptCall, run_async, run_sync
from workers.retry import DEFAULT_LEASE, AsyncRetryQueue, RetryEntry, RetryOps, RetryQueue

pytestmark = pytest.mark.integration

T0 = 4_000_000_000.0  # an injected "now" (year 2096: never due by the real server clock)


@pytest.fixture
def queue(redis_client: redis.Redis, keys: Keys) -> RetryQueue:
    return RetryQueue(redis_client, keys, "smtp1")


def test_key_layout(queue: RetryQueue, keys: Keys) -> None:
    assert queue.key == keys.retry("smtp1")
    assert queue.claimed_key == keys.retry("smtp1") + ":claimed"


def test_schedule_list_and_counts(queue: RetryQueue) -> None:
    assert queue.next_due() is None
    assert queue.list() == []
    assert queue.schedule_at("c1:2", T0 + 20)
    assert queue.schedule_at("c1:1", T0 + 10)
    assert queue.schedule_at("c2:0", T0 + 30.125)
    assert queue.depth() == 3
    assert queue.next_due() == T0 + 10
    assert queue.due_count(T0 + 20) == 2
    assert queue.due_count(T0) == 0
    assert queue.list() == [
        RetryEntry("c1:1", T0 + 10),
        RetryEntry("c1:2", T0 + 20),
        RetryEntry("c2:0", T0 + 30.125),
    ]
    assert queue.list(limit=1) == [RetryEntry("c1:1", T0 + 10)]
    assert queue.list(limit=0) == []


def test_schedule_overwrites_unless_only_if_earlier(queue: RetryQueue) -> None:
    queue.schedule_at("b", T0 + 100)
    assert queue.schedule_at("b", T0 + 200)  # a later attempt's backoff replaces the old one
    assert queue.next_due() == T0 + 200
    assert not queue.schedule_at("b", T0 + 300, only_if_earlier=True)
    assert queue.next_due() == T0 + 200
    assert queue.schedule_at("b", T0 + 50, only_if_earlier=True)
    assert queue.next_due() == T0 + 50
    assert queue.schedule_at("new", T0 + 1, only_if_earlier=True)  # absent members are added
    assert queue.depth() == 2


def test_schedule_refuses_non_finite_times(queue: RetryQueue) -> None:
    with pytest.raises(ValueError):
        queue.schedule_at("x", float("nan"))
    with pytest.raises(ValueError):
        queue.schedule("x", float("inf"))


def test_pump_takes_only_due_members_in_due_order(queue: RetryQueue) -> None:
    for i, offset in enumerate([5, 1, 4, 2, 3, 100]):
        queue.schedule_at(f"m{i}", T0 + offset)
    assert queue.pump(T0 + 0.5, 10) == []
    assert queue.pump(T0 + 4, 10) == ["m1", "m3", "m4", "m2"]
    assert queue.pump(T0 + 4, 10) == []  # taken once
    assert queue.depth() == 2
    assert queue.claimed_count() == 4


def test_after_a_long_pause_all_overdue_members_come_out_limit_at_a_time(
    queue: RetryQueue,
) -> None:
    for i in range(250):
        queue.schedule_at(f"m{i:03d}", T0 + i)
    queue.schedule_at("future", T0 + 10_000)
    late = T0 + 5000
    pages = [queue.pump(late, 100), queue.pump(late, 100), queue.pump(late, 100)]
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [m for p in pages for m in p] == [f"m{i:03d}" for i in range(250)]
    assert queue.pump(late, 100) == []
    assert queue.list() == [RetryEntry("future", T0 + 10_000)]


def test_a_big_limit_works_past_lua_unpack_limits(queue: RetryQueue) -> None:
    for start in range(0, 12_000, 1000):
        with queue._client.pipeline(transaction=False) as pipe:  # bulk setup only
            pipe.zadd(queue.key, {f"m{i}": T0 + i for i in range(start, start + 1000)})
            pipe.execute()
    taken = queue.pump(T0 + 20_000, 12_000)
    assert len(taken) == 12_000 and len(set(taken)) == 12_000
    assert queue.claimed_count() == 12_000
    assert queue.ack(taken) == 12_000
    # and expired claims in bulk go back in bulk
    for i in range(9000):
        queue.schedule_at(f"n{i}", T0)
    assert len(queue.pump(T0, 9000, lease=10)) == 9000
    assert queue.pump(T0 + 5, 1) == []
    assert len(queue.pump(T0 + 10, 9000)) == 9000


def test_pump_uses_the_redis_clock_when_now_is_not_given(
    queue: RetryQueue, redis_client: redis.Redis
) -> None:
    seconds, micros = redis_client.time()
    server_now = seconds + micros / 1e6
    queue.schedule_at("overdue", server_now - 60)
    queue.schedule_at("tomorrow", server_now + 86_400)
    assert queue.pump(limit=10) == ["overdue"]
    assert queue.due_count() == 0
    assert queue.depth() == 1


def test_schedule_is_relative_to_the_redis_clock(
    queue: RetryQueue, redis_client: redis.Redis
) -> None:
    seconds, micros = redis_client.time()
    before = seconds + micros / 1e6
    queue.schedule("now", -1.0)
    queue.schedule("later", 86_400.0)
    seconds, micros = redis_client.time()
    after = seconds + micros / 1e6
    due = {e.member: e.due_at for e in queue.list()}
    assert before - 1.0 <= due["now"] <= after - 1.0
    assert before + 86_400 <= due["later"] <= after + 86_400
    assert queue.due_count() == 1
    assert queue.pump(limit=10) == ["now"]


def test_relative_schedule_only_if_earlier(queue: RetryQueue) -> None:
    assert queue.schedule("b", 500.0)
    first = queue.next_due()
    assert not queue.schedule("b", 900.0, only_if_earlier=True)
    assert queue.next_due() == first
    assert queue.schedule("b", 100.0, only_if_earlier=True)
    assert queue.next_due() is not None and queue.next_due() < first  # type: ignore[operator]
    assert queue.schedule("b", 900.0)  # without the flag a later backoff replaces it
    assert queue.next_due() > first  # type: ignore[operator]


def test_claims_are_kept_until_ack(queue: RetryQueue, redis_client: redis.Redis) -> None:
    queue.schedule_at("a", T0)
    queue.schedule_at("b", T0 + 1)
    assert queue.pump(T0 + 1.25, 10, lease=30.5) == ["a", "b"]
    assert queue.depth() == 0
    # the lease expiry is stored at full precision
    assert redis_client.zscore(queue.claimed_key, "a") == T0 + 1.25 + 30.5
    assert queue.ack(["a", "b", "never-claimed"]) == 2
    assert queue.ack([]) == 0
    assert queue.claimed_count() == 0
    # acked claims do not come back
    assert queue.pump(T0 + 10_000, 10) == []


def test_an_expired_claim_comes_back_on_the_next_pump(queue: RetryQueue) -> None:
    queue.schedule_at("crashed", T0)
    assert queue.pump(T0, 10, lease=60) == ["crashed"]  # ...and the pumper dies, no ack
    assert queue.pump(T0 + 59, 10) == []
    assert queue.claimed_count() == 1
    assert queue.pump(T0 + 60, 10) == ["crashed"]  # lease ran out: handed out again
    assert queue.claimed_count() == 1
    assert queue.ack(["crashed"]) == 1
    assert queue.pump(T0 + 10_000, 10) == []


def test_expired_claims_take_their_turn_in_due_order(queue: RetryQueue) -> None:
    queue.schedule_at("old", T0)
    queue.pump(T0, 10, lease=10)  # claimed, never acked: due again at T0 + 10
    queue.schedule_at("early", T0 + 5)
    queue.schedule_at("late", T0 + 15)
    assert queue.pump(T0 + 20, 1) == ["early"]
    assert queue.pump(T0 + 20, 10) == ["old", "late"]


def test_a_newer_schedule_wins_over_an_expired_claim(queue: RetryQueue) -> None:
    queue.schedule_at("b", T0)
    assert queue.pump(T0, 10, lease=60) == ["b"]
    # the batch ran (republished) and failed again before anyone acked its claim
    queue.schedule_at("b", T0 + 500)
    assert queue.pump(T0 + 100, 10) == []  # the expired claim did not pull it forward
    assert queue.next_due() == T0 + 500
    assert queue.claimed_count() == 0
    assert queue.pump(T0 + 500, 10) == ["b"]


def test_pump_without_lease_removes_outright(queue: RetryQueue) -> None:
    queue.schedule_at("x", T0)
    assert queue.pump(T0, 10, lease=None) == ["x"]
    assert queue.claimed_count() == 0
    assert queue.depth() == 0


def test_pump_refuses_bad_arguments(queue: RetryQueue) -> None:
    with pytest.raises(ValueError):
        queue.pump(T0, 0)
    with pytest.raises(ValueError):
        queue.pump(T0, 10, lease=0)
    with pytest.raises(ValueError):
        queue.pump(float("nan"), 10)


def test_remove_forgets_waiting_and_claimed_members(queue: RetryQueue) -> None:
    queue.schedule_at("w", T0 + 100)
    queue.schedule_at("c", T0)
    queue.pump(T0, 10)
    assert queue.remove("w") and queue.remove("c")
    assert not queue.remove("w")
    assert queue.depth() == 0 and queue.claimed_count() == 0
    assert queue.pump(T0 + 10_000, 10) == []


def test_providers_have_separate_queues(redis_client: redis.Redis, keys: Keys) -> None:
    a, b = RetryQueue(redis_client, keys, "a"), RetryQueue(redis_client, keys, "b")
    a.schedule_at("m", T0)
    assert b.pump(T0, 10) == []
    assert a.pump(T0, 10) == ["m"]


def test_works_with_a_decoding_client(
    redis_url: str, keys: Keys, redis_client: redis.Redis
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        q = RetryQueue(client, keys, "p")
        q.schedule_at("ü:1", T0)
        assert q.list() == [RetryEntry("ü:1", T0)]
        assert q.next_due() == T0
        assert q.pump(T0, 10) == ["ü:1"]
    finally:
        client.close()


# --- concurrency ----------------------------------------------------------------------


def _drain(queue: RetryQueue, now: float, limit: int, lease: float | None) -> list[str]:
    got: list[str] = []
    while batch := queue.pump(now, limit, lease=lease):
        got.extend(batch)
    return got


@pytest.mark.parametrize("lease", [60.0, None])
def test_threads_pumping_one_queue_get_every_member_exactly_once(
    redis_client: redis.Redis, keys: Keys, lease: float | None
) -> None:
    members = [f"c:{i}" for i in range(3000)]
    setup = RetryQueue(redis_client, keys, "hot")
    for start in range(0, len(members), 500):
        redis_client.zadd(setup.key, {m: T0 + i for i, m in enumerate(members[start:start + 500])})
    results: list[list[str]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def worker(slot: int) -> None:
        q = RetryQueue(redis_client, keys, "hot")  # shared, thread-safe connection pool
        barrier.wait()
        results[slot] = _drain(q, T0 + 10_000, 7, lease)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(m for r in results for m in r)
    assert set(counts) == set(members)
    assert set(counts.values()) == {1}
    assert sum(1 for r in results if r) > 1  # the work really was shared


def _pump_in_process(url: str, prefix: str, start: Any) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        start.wait(30)
        return _drain(RetryQueue(client, Keys(prefix), "hot"), T0 + 10_000, 5, 60.0)
    finally:
        client.close()


def test_processes_pumping_one_queue_get_every_member_exactly_once(
    redis_client: redis.Redis, redis_url: str, keys: Keys, key_prefix: str
) -> None:
    # Separate processes are how workers really run (Celery prefork, many machines).
    members = [f"c:{i}" for i in range(2000)]
    redis_client.zadd(keys.retry("hot"), {m: T0 + i for i, m in enumerate(members)})
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        start = manager.Event()
        with ProcessPoolExecutor(4, mp_context=ctx) as pool:
            futures = [
                pool.submit(_pump_in_process, redis_url, key_prefix, start) for _ in range(4)
            ]
            start.set()
            results = [f.result(timeout=120) for f in futures]
    counts = Counter(m for r in results for m in r)
    assert set(counts) == set(members)
    assert set(counts.values()) == {1}


# --- async ----------------------------------------------------------------------------


def test_async_queue_has_the_same_behaviour(
    redis_url: str, keys: Keys, redis_client: redis.Redis
) -> None:
    # The worker's AsyncRetryQueue only schedules; every other operation is the same
    # RetryOps the sync queue runs, here driven by run_async.
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            q = AsyncRetryQueue(client, keys, "aio")
            ops = RetryOps(keys, "aio")
            assert q.key == keys.retry("aio") and q.claimed_key == q.key + ":claimed"
            assert await q.schedule("soon", -1.0)
            assert await q.schedule("later", 3600.0)
            assert not await q.schedule("later", 7200.0, only_if_earlier=True)
            assert await run_async(client, ops.due_count(None)) == 1
            assert await run_async(client, ops.pump(None, 10, 5.0)) == ["soon"]
            assert await run_async(client, ops.claimed_count()) == 1
            assert await run_async(client, ops.ack(["soon"])) == 1
            assert await run_async(client, ops.remove("later"))
            assert redis_client.zcard(q.key) == 0

            # many coroutines pumping at once over one connection pool
            await client.zadd(q.key, {f"m{i}": T0 + i for i in range(1000)})

            async def drain() -> list[str]:
                got: list[str] = []
                while batch := await run_async(client, ops.pump(T0 + 5000, 3, DEFAULT_LEASE)):
                    got.extend(batch)
                return got

            results = await asyncio.gather(*(drain() for _ in range(20)))
            counts = Counter(m for r in results for m in r)
            assert set(counts) == {f"m{i}" for i in range(1000)}
            assert set(counts.values()) == {1}
            assert sum(1 for r in results if r) > 1
        finally:
            await client.aclose()

    asyncio.run(scenario())


# --- plumbing -------------------------------------------------------------------------


def test_a_script_not_in_the_server_cache_is_sent_by_source(redis_client: redis.Redis) -> None:
    # A fresh source has a SHA Redis has never seen: EVALSHA fails with NOSCRIPT, the
    # runner falls back to EVAL (which also caches it for next time).
    script = LuaScript("probe", f"-- {uuid.uuid4().hex}\nreturn ARGV[1] .. KEYS[1]")

    def op() -> RedisOp[Any]:
        return (yield ScriptCall(script, ("k",), ("v",)))

    assert run_sync(redis_client, op()) == b"vk"
    assert redis_client.script_exists(script.sha) == [True]


def test_async_script_fallback(redis_url: str) -> None:
    script = LuaScript("probe", f"-- {uuid.uuid4().hex}\nreturn 42")

    def op() -> RedisOp[Any]:
        return (yield ScriptCall(script, (), ()))

    async def scenario() -> int:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return int(await run_async(client, op()))
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == 42


def test_an_unreachable_redis_is_reported_without_the_password(keys: Keys) -> None:
    port = free_port()
    client = redis.Redis.from_url(
        f"redis://:s3cr3t-pw@127.0.0.1:{port}/0", socket_connect_timeout=0.5
    )
    with pytest.raises(RedisUnavailableError) as info:
        RetryQueue(client, keys, "p").depth()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "s3cr3t" not in str(info.value)
    assert isinstance(info.value, ConnectionError)


def test_async_unreachable_redis(keys: Keys) -> None:
    port = free_port()

    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(
            f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5
        )
        try:
            await AsyncRetryQueue(client, keys, "p").schedule("m", 1.0)
        finally:
            await client.aclose()

    with pytest.raises(RedisUnavailableError):
        asyncio.run(scenario())
