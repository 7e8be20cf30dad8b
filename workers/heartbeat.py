"""Worker heartbeats: "a worker consumed this provider's queue within the last minute".

The main process of every worker (the retry pump's loop, :mod:`workers.pump`) writes one
key per provider it consumes, ``keys.heartbeat(provider)``, holding its node name and
expiring after :data:`TTL` seconds. Expiry runs on the Redis server's clock, so readers
(``GET /readyz``) need no clock of their own: a key that exists is a worker seen within
the TTL, and its remaining TTL says how long ago.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING

from config.schema import Keys
from workers.redis_ops import Command, RedisOp, as_text, run_sync

if TYPE_CHECKING:
    from workers.redis_ops import SyncRedis

__all__ = ["TTL", "beat", "node_name", "seen"]

#: seconds a heartbeat stays visible
TTL = 60


def node_name() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _beat(keys: Keys, providers: Iterable[str], node: str) -> RedisOp[None]:
    for provider in providers:
        yield Command(("SET", keys.heartbeat(provider), node, "EX", TTL))


def beat(client: SyncRedis, keys: Keys, providers: Iterable[str], node: str) -> None:
    """Say that ``node`` consumes ``providers`` now."""
    run_sync(client, _beat(keys, providers, node))


def _seen(keys: Keys, providers: list[str]) -> RedisOp[dict[str, tuple[str, float] | None]]:
    out: dict[str, tuple[str, float] | None] = {}
    for provider in providers:
        key = keys.heartbeat(provider)
        node = yield Command(("GET", key))
        ttl_ms = yield Command(("PTTL", key))
        if node is None or int(ttl_ms) < 0:
            out[provider] = None
        else:
            out[provider] = (as_text(node), max(0.0, TTL - int(ttl_ms) / 1000))
    return out


def seen(client: SyncRedis, keys: Keys, providers: Iterable[str]
         ) -> dict[str, tuple[str, float] | None]:
    """Per provider: ``(node, seconds since its heartbeat)``, or None when no worker was
    seen within :data:`TTL` seconds."""
    return run_sync(client, _seen(keys, list(providers)))
