"""ProviderState: the provider's state hash, written by the worker and the rate limiter,
read by the CLI, against the real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from config.providers import SmtpConfig
from config.schema import Keys
from workers.provider_state import ProviderState
from workers.ratelimit import RateLimiter
from workers.redis_ops import run_async, run_sync

pytestmark = pytest.mark.integration


def _redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def test_a_provider_with_nothing_to_report_reads_empty(
    redis_client: redis.Redis, keys: Keys
) -> None:
    snap = run_sync(redis_client, ProviderState(keys, "quiet").read())
    assert snap.provider == "quiet" and snap.fields == {}
    assert snap.auth_error is None and snap.last_reason is None
    assert snap.count("throttles") == 0 and snap.throttled_since() is None


def test_auth_errors_and_throttles_land_in_one_hash(
    redis_url: str, redis_client: redis.Redis, keys: Keys
) -> None:
    state = ProviderState(keys, "p")
    assert state.key == keys.provider_state("p")
    cfg = SmtpConfig(kind="smtp", host="relay.test", rate="10/s")

    async def worker() -> float:
        client = aioredis.Redis.from_url(redis_url)
        try:
            at = await run_async(client, state.record_auth_error("535 5.7.8 bad credentials"))
            await RateLimiter(client, keys, "p", cfg).throttled(reason="421 4.7.0 slow down")
            return at
        finally:
            await client.aclose()  # type: ignore[attr-defined]  # stubs predate it

    before = _redis_now(redis_client)
    at = asyncio.run(worker())
    after = _redis_now(redis_client)

    snap = run_sync(redis_client, state.read())
    assert snap.auth_error == "535 5.7.8 bad credentials"
    # stamped on the Redis clock, like every time the cluster compares
    assert before <= at <= after and snap.auth_error_at == pytest.approx(at)
    assert snap.last_reason == "421 4.7.0 slow down"
    assert snap.count("throttles") == 1 and snap.count("decreases") == 1
    since = snap.throttled_since()
    assert since is not None and before <= since <= after
    assert snap.last_throttle_at == pytest.approx(since)
