"""The batch lock under real Redis faults (the fault proxy in front of Redis).

Issue 8: one Redis error used to end the renewer silently while the batch kept sending,
and a second worker sent the same recipients again. Now a failed renewal is retried
while the lock may still be alive, and once it could have lapsed the lock counts as lost
and the batch stops before its next chunk.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from config.schema import CampaignSpec, Keys, Recipient
from config.settings import Settings
from producers.capture import CaptureServer
from tests.faultproxy import FaultProxy
from workers.batchlock import BatchLock
from workers.delivery import BatchReport, deliver_batch, retry_member
from workers.ledger import Ledger
from workers.retry import RetryQueue
from workers.runtime import Runtime

pytestmark = pytest.mark.integration

T = TypeVar("T")


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    url = urlparse(redis_url)
    with FaultProxy(url.hostname or "127.0.0.1", url.port or 6379) as p:
        yield p


def _run(proxy: FaultProxy, body: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """``body`` with an async client that reaches Redis through ``proxy``."""

    async def main() -> T:
        # no client-side retries: every failed attempt is the lock's own to retry
        client = aioredis.Redis(host=proxy.host, port=proxy.port, socket_connect_timeout=1,
                                retry=Retry(NoBackoff(), 0))
        try:
            return await body(client)
        finally:
            await client.aclose()  # type: ignore[attr-defined]  # stubs predate it

    return asyncio.run(main())


async def _until(cond: Callable[[], bool], limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_a_paused_redis_makes_the_lock_lost_before_it_lapses(
    proxy: FaultProxy, redis_client: redis.Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:lock:paused"

    async def body(client: aioredis.Redis) -> None:
        lock = BatchLock(client, key, token="w1", ttl=6, margin=2)
        assert await lock.acquire()
        async with lock.renewing():
            proxy.pause()  # the renewal hangs on a connection that stays open
            await _until(lambda: lock.lost)
            # declared lost while the server still has it: nobody else can hold it yet
            assert redis_client.get(key) == b"w1"
            assert redis_client.pttl(key) > 0
            proxy.resume()
        assert lock.renewals == 0 and lock.failures >= 1

    _run(proxy, body)


def test_refused_renewals_are_retried_then_the_lock_is_lost(
    proxy: FaultProxy, redis_client: redis.Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:lock:refused"

    async def body(client: aioredis.Redis) -> None:
        lock = BatchLock(client, key, token="w1", ttl=3, margin=1, retry_every=0.2)
        assert await lock.acquire()
        async with lock.renewing():
            proxy.refuse()
            await _until(lambda: lock.lost)
            assert lock.failures >= 2  # retried, not given up after one error
            assert redis_client.get(key) == b"w1"  # still alive on the server
            proxy.resume()
        # release after resuming deletes our own lock
        assert redis_client.get(key) is None

    _run(proxy, body)


def test_one_failed_renewal_followed_by_a_good_one_keeps_the_lock(
    proxy: FaultProxy, redis_client: redis.Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:lock:blip"

    async def body(client: aioredis.Redis) -> None:
        lock = BatchLock(client, key, token="w1", ttl=6, margin=1, retry_every=0.2)
        assert await lock.acquire()
        async with lock.renewing():
            proxy.refuse()  # cuts the client's connection and refuses new ones
            await _until(lambda: lock.failures >= 1)
            proxy.resume()
            await _until(lambda: lock.renewals >= 1)
            assert not lock.lost
            assert redis_client.get(key) == b"w1"
            assert redis_client.pttl(key) > 4000  # renewed to the full TTL again
        assert redis_client.get(key) is None

    _run(proxy, body)


def test_another_holder_makes_the_lock_lost_at_once(
    proxy: FaultProxy, redis_client: redis.Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:lock:taken"

    async def body(client: aioredis.Redis) -> None:
        lock = BatchLock(client, key, token="w1", ttl=30)
        assert await lock.acquire()
        assert not await BatchLock(client, key, token="w2", ttl=30).acquire()
        redis_client.set(key, "w2")  # as if ours had lapsed and w2 took the batch
        assert not await lock.renew()
        assert lock.lost
        await lock.release()
        assert redis_client.get(key) == b"w2"  # never someone else's lock

    _run(proxy, body)


# -- the whole batch -----------------------------------------------------------------------

ROWS = 120


def _campaign(client: redis.Redis, keys: Keys, provider: str) -> str:
    cid = "lockfault"
    spec = CampaignSpec(id=cid, provider=provider, sender="from@example.com",
                        subject="hello", text="hi {{ email }}", batch_size=ROWS)
    ledger = Ledger(client, keys)
    assert ledger.create_campaign(spec)
    recipients = [Recipient(i + 1, f"r{i}@example.com") for i in range(ROWS)]
    pipe = client.pipeline(transaction=True)
    ledger.queue_writes(pipe, cid, [(0, recipients)], [], ROWS)
    pipe.execute()
    return cid


def _settings(tmp_path: Path, name: str, redis_url: str, prefix: str, provider: str,
              smtp_port: int, limits: str = "") -> Settings:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[providers.{provider}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
                    f'port = {smtp_port}\ntls = "none"\npool_size = 1\n{limits}')
    return Settings(redis_url=redis_url, providers=path, key_prefix=prefix, batch_lock_ttl=3)


def test_a_batch_whose_lock_lapsed_stops_before_its_next_chunk(
    proxy: FaultProxy, redis_url: str, redis_client: redis.Redis, keys: Keys,
    key_prefix: str, provider_name: str, tmp_path: Path
) -> None:
    # Worker A reaches Redis through the proxy and sends to relay A; worker B (the copy
    # of the batch that another worker picks up once A's lock lapsed) goes direct and
    # sends to relay B. So what each worker sent after the fault is known exactly.
    cid = _campaign(redis_client, keys, provider_name)
    with CaptureServer() as relay_a, CaptureServer() as relay_b:
        # a long socket timeout: A's Redis calls wait out the pause instead of failing
        proxied = f"redis://{proxy.host}:{proxy.port}/0?socket_timeout=60"
        # A sends 20 messages a second in small grants: its batch takes several seconds
        # and many chunks, so the fault lands between two of them
        a_settings = _settings(tmp_path, "a", proxied, key_prefix, provider_name,
                               relay_a.port, 'rate = "20/s"\nburst = 4\n')
        b_settings = _settings(tmp_path, "b", redis_url, key_prefix, provider_name,
                               relay_b.port)
        a_report: list[BatchReport] = []
        a_error: list[BaseException] = []

        def worker_a() -> None:
            rt = Runtime(a_settings)
            try:
                a_report.append(rt.run(deliver_batch(rt, cid, 0)))
            except BaseException as exc:  # reported by the test below
                a_error.append(exc)
            finally:
                rt.close()

        thread = threading.Thread(target=worker_a)
        thread.start()
        deadline = time.monotonic() + 20
        while relay_a.received < 10:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        proxy.pause()  # A's renewals (and its other Redis calls) hang
        lock_key = keys.batch_lock(cid, 0)
        while redis_client.exists(lock_key):  # A's lock lapses on the server
            assert time.monotonic() < deadline + 10
            time.sleep(0.05)

        rt_b = Runtime(b_settings)
        try:
            b_report = rt_b.run(deliver_batch(rt_b, cid, 0))
        finally:
            rt_b.close()
        assert b_report.sent > 0, b_report

        sent_by_a = relay_a.received
        proxy.resume()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert not a_error, ''.join(__import__('traceback').format_exception(a_error[0]))
        report = a_report[0]
        assert any("lost the batch lock" in n for n in report.notes), report
        # A sent nothing after its lock was lost: no new chunk went out after the resume
        assert relay_a.received == sent_by_a
        # and it put the batch back on the retry queue: had nobody taken over (Redis
        # merely unreachable), the batch would still come back instead of being stranded
        members = [e.member for e in RetryQueue(redis_client, keys, provider_name).list()]
        assert retry_member(cid, 0) in members

        got = relay_a.by_recipient + relay_b.by_recipient
        assert set(got) == {f"r{i}@example.com" for i in range(ROWS)}
        # only a chunk that was on the wire when A was cut off can have gone out twice
        twice = [r for r, n in got.items() if n > 1]
        assert len(twice) <= 32, twice
        st = Ledger(redis_client, keys).status(cid)
        assert st is not None and st.counts["sent"] == ROWS
