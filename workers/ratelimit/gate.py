"""The SMTP pool's connection gate backed by cluster-wide leases.

A pooled connection holds a lease for as long as it is open; the lease is renewed when
the connection is reused and a third of its TTL has passed (so not one Redis call per
message), and released when the connection closes. A worker killed with SIGKILL stops
renewing, so its places come free after the TTL.
"""

from __future__ import annotations

import time

from workers.ratelimit.leases import ConnectionLeases

__all__ = ["LeaseGate", "RedisLease"]

LEASE_TTL = 60.0


class RedisLease:
    def __init__(self, leases: ConnectionLeases, lease_id: str, ttl: float) -> None:
        self._leases = leases
        self._id = lease_id
        self._ttl = ttl
        self._renewed = time.monotonic()

    async def renew(self) -> bool:
        if time.monotonic() - self._renewed < self._ttl / 3:
            return True
        ok = await self._leases.renew(self._id, self._ttl)
        self._renewed = time.monotonic()
        return ok

    async def release(self) -> None:
        await self._leases.release(self._id)


class LeaseGate:
    """Admits a new connection only while fewer than ``max_connections`` are open."""

    def __init__(self, leases: ConnectionLeases, holder: str, *, wait: float,
                 ttl: float = LEASE_TTL) -> None:
        self._leases = leases
        self._holder = holder
        self._wait = wait
        self._ttl = ttl

    async def open(self, *, wait: bool) -> RedisLease | None:
        """A lease, or ``None`` when ``max_connections`` are open across the cluster
        (after waiting up to ``wait`` seconds for one to come free when ``wait``)."""
        if wait:
            lease_id = await self._leases.wait_acquire(self._holder, self._ttl, self._wait)
        else:
            lease_id = await self._leases.acquire(self._holder, self._ttl)
        return None if lease_id is None else RedisLease(self._leases, lease_id, self._ttl)
