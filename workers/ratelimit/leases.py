"""Cluster-wide cap on a provider's open connections: leases in a Redis sorted set.

Each lease is a member scored by its expiry on the Redis clock. Every script prunes the
expired ones first, so a worker that was SIGKILLed (or lost its host) frees its places
once its leases run out, without anyone cleaning up. Holders renew well before the ttl.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from redis.asyncio import Redis

from config.schema import Keys
from workers.ratelimit.scripts import LEASE_ACQUIRE, LEASE_COUNT, LEASE_RENEW
from workers.redis_ops import command, run_async, script

__all__ = ["ConnectionLeases", "LeaseConfig"]


class LeaseConfig(Protocol):
    """The provider setting the leases read (``config.providers._Base`` has it)."""

    @property
    def max_connections(self) -> int | None: ...


class ConnectionLeases:
    """At most ``cfg.max_connections`` live leases of ``provider`` across the cluster.

    With ``max_connections`` unset there is no cap and no Redis call: :meth:`acquire`
    always hands out a lease id. ``clock`` replaces the Redis clock in tests.
    ``poll``/``max_poll`` bound the sleeps of :meth:`wait_acquire`.
    """

    def __init__(
        self,
        redis: Redis[Any],
        keys: Keys,
        provider: str,
        cfg: LeaseConfig,
        *,
        clock: Callable[[], float] | None = None,
        poll: float = 0.02,
        max_poll: float = 0.5,
    ) -> None:
        self.redis = redis
        self.key = keys.leases(provider)
        self.provider = provider
        self.max_connections = cfg.max_connections
        self.poll = poll
        self.max_poll = max_poll
        self._clock = clock

    async def acquire(self, holder: str, ttl: float) -> str | None:
        """A new lease id for ``holder`` valid ``ttl`` seconds, or ``None`` at the cap."""
        if ttl <= 0:
            raise ValueError(f"lease ttl must be above zero, got {ttl!r}")
        lease_id = f"{holder}:{uuid.uuid4().hex}"
        if self.max_connections is None:
            return lease_id
        ok = await run_async(self.redis, script(
            LEASE_ACQUIRE, [self.key],
            [self._now_arg(), self.max_connections, repr(float(ttl)), lease_id]))
        return lease_id if int(ok) else None

    async def renew(self, lease_id: str, ttl: float) -> bool:
        """Extend ``lease_id`` to ``ttl`` seconds from now; ``False`` if it had expired
        (its place may be taken: stop using the connection and acquire again)."""
        if self.max_connections is None:
            return True
        ok = await run_async(self.redis, script(
            LEASE_RENEW, [self.key], [self._now_arg(), repr(float(ttl)), lease_id]))
        return bool(int(ok))

    async def release(self, lease_id: str) -> None:
        """Give the place back (a lease that already expired is simply gone)."""
        if self.max_connections is None:
            return
        await run_async(self.redis, command("ZREM", self.key, lease_id))

    async def live(self) -> int:
        """Leases live now, cluster-wide (for status)."""
        if self.max_connections is None:
            return 0
        return int(await run_async(self.redis, script(LEASE_COUNT, [self.key],
                                                      [self._now_arg()])))

    async def wait_acquire(self, holder: str, ttl: float, timeout: float) -> str | None:
        """:meth:`acquire`, retried with short growing sleeps for up to ``timeout``
        seconds; ``None`` if no place came free in time."""
        deadline = time.monotonic() + timeout
        delay = self.poll
        while True:
            lease = await self.acquire(holder, ttl)
            if lease is not None:
                return lease
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # jitter: workers that wait together must not poll together
            await asyncio.sleep(min(left, delay * random.uniform(0.5, 1.0)))
            delay = min(self.max_poll, delay * 2)

    def _now_arg(self) -> str:
        return repr(float(self._clock())) if self._clock is not None else ""
