"""Connecting to Redis with an error that says which URL did not answer."""

from __future__ import annotations

import redis

from config.errors import RedisUnavailableError
from config.settings import Settings, redact_url

__all__ = ["connect_redis"]


def connect_redis(settings: Settings) -> redis.Redis[bytes]:
    """A client for ``settings.redis_url`` that has answered a PING."""
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisUnavailableError(
            f"cannot reach Redis at {redact_url(settings.redis_url)}: {exc} "
            "(set BULKMAIL_REDIS_URL to the right server)"
        ) from exc
    return client
