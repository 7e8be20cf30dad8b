"""max_connections for an HTTP API: calls in flight across every process stay under it."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from config.errors import ProviderBusyError
from config.providers import HttpConfig
from config.schema import Keys
from tests.fakes import FakeHttpApi, make_messages
from workers.providers.generic_http import create
from workers.ratelimit import ConnectionLeases
from workers.ratelimit.gate import LeaseGate

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_KEY", "http-key")


def _cfg(**kw: object) -> HttpConfig:
    return HttpConfig.model_validate({"kind": "http", "url": "https://relay.test/send",
                                      "api_key_env": "HTTP_KEY",
                                      "http_batch_size": 10, "concurrency": 4, **kw})


def test_two_processes_share_the_cap(redis_url: str, keys: Keys) -> None:
    fake = FakeHttpApi(max_batch=10)
    fake.delay = 0.05  # slow answers: calls overlap
    cfg = _cfg(max_connections=2, max_wait="5s")

    async def go() -> list[bool]:
        client = aioredis.Redis.from_url(redis_url)
        leases = ConnectionLeases(client, keys, "relay", cfg)
        # two "worker processes": two provider instances with their own concurrency 4
        senders = [create("relay", cfg, transport=fake.transport(),
                          gate=LeaseGate(leases, f"proc{i}", wait=cfg.max_wait))
                   for i in range(2)]
        try:
            batches = await asyncio.gather(*(p.send(make_messages(80, start=i * 80))
                                             for i, p in enumerate(senders)))
            assert await leases.live() == 0  # every lease given back
            return [r.ok for results in batches for r in results]
        finally:
            for p in senders:
                await p.aclose()
            await client.aclose()

    ok = asyncio.run(go())
    assert len(ok) == 160 and all(ok)
    assert len(fake.calls("/send")) == 16
    assert fake.max_in_flight <= 2  # not 8 = 2 processes x concurrency 4


def test_no_place_within_max_wait_parks_the_call(redis_url: str, keys: Keys) -> None:
    fake = FakeHttpApi(max_batch=10)
    cfg = _cfg(max_connections=1, max_wait="0.2s")

    async def go() -> list[object]:
        client = aioredis.Redis.from_url(redis_url)
        leases = ConnectionLeases(client, keys, "relay", cfg)
        held = await leases.acquire("another-process", 30)  # the only place is taken
        assert held is not None
        p = create("relay", cfg, transport=fake.transport(),
                   gate=LeaseGate(leases, "me", wait=cfg.max_wait))
        try:
            return [r.error for r in await p.send(make_messages(10))]
        finally:
            await p.aclose()
            await client.aclose()

    errors = asyncio.run(go())
    assert all(isinstance(e, ProviderBusyError) for e in errors)
    assert fake.calls("/send") == []
