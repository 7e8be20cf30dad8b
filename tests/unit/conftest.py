"""Fixtures the unit tests share."""

from __future__ import annotations

import pytest
import redis


@pytest.fixture
def url(redis_url: str, redis_client: redis.Redis[bytes]) -> str:
    """The test Redis's URL, for tests that open their own (async) clients; taking
    ``redis_client`` makes it delete this test's keys afterwards."""
    return redis_url
