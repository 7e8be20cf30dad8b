"""Retry queues in Redis: one sorted set per provider, scored by the time work is due.

Why not Celery countdowns: an ETA task on the Redis broker sits in worker memory and is
redelivered once the wait exceeds the visibility timeout (kombu#337); see decision 6 in
docs/architecture.md.

Key layout (``key = keys.retry(provider)``):

- ``key``: sorted set, member -> unix time it is due (float seconds).
- ``key + ":claimed"``: sorted set, member -> unix time its claim expires.

Members are strings the caller chooses (the worker uses ``"{campaign_id}:{batch_no}"``).

The pump is crash-safe by *claiming*: :meth:`RetryQueue.pump` moves due members into the
claimed set under a lease instead of deleting them, the worker republishes them as
Celery tasks, then :meth:`RetryQueue.ack` drops the claims. A worker that dies between
pump and ack loses nothing: once the lease runs out, the next pump (by anyone) makes the
members due again and hands them out. The price is at-least-once republishing (a slow
worker whose lease ran out and a second pumper may both publish a member), which the
ledger absorbs: a redelivered batch never re-sends a recipient already sent.

:class:`RetryOps` writes every operation once, without I/O (:mod:`workers.redis_ops`);
:class:`RetryQueue` runs them over a sync ``redis.Redis`` (pump, CLI, status) and
:class:`AsyncRetryQueue` runs what the worker needs over ``redis.asyncio``.

One clock: workers schedule with a *delay*; the due time is computed inside Redis from
its own ``TIME``, the clock the pump compares with, so no worker's clock is involved.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from config.schema import Keys
from workers.redis_ops import (
    Command,
    LuaScript,
    RedisOp,
    ScriptCall,
    as_text,
    reply_pairs,
    run_async,
    run_sync,
    server_time,
)

if TYPE_CHECKING:  # used as the queues' base-class arguments, which ruff does not see
    from workers.redis_ops import AsyncRedis, SyncRedis  # noqa: F401

__all__ = ["DEFAULT_LEASE", "AsyncRetryQueue", "RetryEntry", "RetryOps", "RetryQueue"]

# --------------------------------------------------------------------------------------
# The retry queue
# --------------------------------------------------------------------------------------

#: Seconds a pumped member stays claimed before another pump may hand it out again.
#: Far longer than republishing a few hundred tasks takes, short enough that a crashed
#: worker's retries are only briefly late.
DEFAULT_LEASE = 60.0

_PUMP = LuaScript.load("retry_pump.lua")
_SCHEDULE = LuaScript.load("retry_schedule.lua")

ClientT = TypeVar("ClientT")


@dataclass(frozen=True, slots=True)
class RetryEntry:
    """A member of a retry queue and the unix time it is due."""

    member: str
    due_at: float


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    return value


class RetryOps:
    """What every retry-queue operation sends and how it reads the replies (no I/O)."""

    def __init__(self, keys: Keys, provider: str) -> None:
        self.key = keys.retry(provider)
        self.claimed_key = f"{self.key}:claimed"

    def schedule(self, member: str, delay: float, only_if_earlier: bool) -> RedisOp[bool]:
        changed = yield ScriptCall(_SCHEDULE, (self.key,), (
            member, repr(float(_finite("delay", delay))), "1" if only_if_earlier else "0"))
        return bool(changed)

    def schedule_at(self, member: str, due_at: float, only_if_earlier: bool) -> RedisOp[bool]:
        # LT still adds absent members; it only refuses to move one to a later time.
        flags = ("LT", "CH") if only_if_earlier else ("CH",)
        changed = yield Command(("ZADD", self.key, *flags, _finite("due_at", due_at), member))
        return bool(changed)

    def pump(self, now: float | None, limit: int, lease: float | None) -> RedisOp[list[str]]:
        if limit < 1:
            raise ValueError(f"pump limit must be at least 1, got {limit}")
        if lease is not None and not (math.isfinite(lease) and lease > 0):
            raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
        args = (
            "" if now is None else _finite("now", now),
            limit,
            "" if lease is None else lease,
        )
        taken = yield ScriptCall(_PUMP, (self.key, self.claimed_key), args)
        return [as_text(m) for m in taken]

    def ack(self, members: Iterable[str]) -> RedisOp[int]:
        todo = list(members)
        if not todo:
            return 0  # ZREM needs at least one member
        return int((yield Command(("ZREM", self.claimed_key, *todo))))

    def remove(self, member: str) -> RedisOp[bool]:
        waiting = yield Command(("ZREM", self.key, member))
        claimed = yield Command(("ZREM", self.claimed_key, member))
        return bool(waiting or claimed)

    def depth(self) -> RedisOp[int]:
        return int((yield Command(("ZCARD", self.key))))

    def claimed_count(self) -> RedisOp[int]:
        return int((yield Command(("ZCARD", self.claimed_key))))

    def due_count(self, now: float | None) -> RedisOp[int]:
        if now is None:
            now = yield from server_time()
        return int((yield Command(("ZCOUNT", self.key, "-inf", _finite("now", now)))))

    def next_due(self) -> RedisOp[float | None]:
        pairs = reply_pairs((yield Command(("ZRANGE", self.key, 0, 0, "WITHSCORES"))))
        return float(pairs[0][1]) if pairs else None

    def list(self, limit: int) -> RedisOp[list[RetryEntry]]:
        if limit < 1:
            return []
        reply = yield Command(("ZRANGE", self.key, 0, limit - 1, "WITHSCORES"))
        return [RetryEntry(as_text(m), float(s)) for m, s in reply_pairs(reply)]


class _Queue(Generic[ClientT]):
    """What the sync and the async queue share: the client, the keys."""

    def __init__(self, client: ClientT, keys: Keys, provider: str) -> None:
        self._client = client
        self._ops = RetryOps(keys, provider)

    @property
    def key(self) -> str:
        """The due set."""
        return self._ops.key

    @property
    def claimed_key(self) -> str:
        """The claimed set (members pumped but not acked yet)."""
        return self._ops.claimed_key


class RetryQueue(_Queue["SyncRedis"]):
    """The retry queue of one provider over a sync Redis client (CLI, status, tests).

    Times are unix seconds (floats). Where ``now`` is optional, ``None`` means the Redis
    server's clock, the one clock every worker shares (docs/architecture.md, decision 7).
    """

    def schedule(self, member: str, delay: float, *, only_if_earlier: bool = False) -> bool:
        """Make ``member`` due ``delay`` seconds from now on the Redis server's clock
        (one round trip); True when it was added or moved.

        A member already waiting is moved to the new time (a later attempt's backoff
        replaces the earlier one), unless ``only_if_earlier``: then it is only ever moved
        closer, e.g. when parking work for a rate limit must not postpone a retry that
        is already due sooner.
        """
        return run_sync(self._client, self._ops.schedule(member, delay, only_if_earlier))

    def schedule_at(self, member: str, due_at: float, *, only_if_earlier: bool = False) -> bool:
        """:meth:`schedule` at an absolute unix time ``due_at``, which must be on the
        Redis server's clock (tests with simulated times; never a worker's own clock)."""
        return run_sync(self._client, self._ops.schedule_at(member, due_at, only_if_earlier))

    def pump(
        self, now: float | None = None, limit: int = 100, *, lease: float | None = DEFAULT_LEASE
    ) -> list[str]:
        """Claim up to ``limit`` members due at ``now``, earliest first, atomically.

        Taken members leave the due set; with a ``lease`` (seconds) they wait in the
        claimed set until :meth:`ack`, and come back as due if the lease runs out first.
        ``lease=None`` deletes them outright (a crash before republishing then loses
        them). Each pump first returns expired claims to the due set. Any number of
        workers may pump concurrently: every member is handed out once per time it is
        due. After a long pause all overdue members come out, in due order, ``limit`` at
        a time.
        """
        return run_sync(self._client, self._ops.pump(now, limit, lease))

    def ack(self, members: Iterable[str]) -> int:
        """Drop the claims on ``members`` once they are republished; returns how many."""
        return run_sync(self._client, self._ops.ack(members))

    def remove(self, member: str) -> bool:
        """Forget ``member`` whether waiting or claimed; True when it was there."""
        return run_sync(self._client, self._ops.remove(member))

    def depth(self) -> int:
        """How many members wait in the due set (claimed ones not counted)."""
        return run_sync(self._client, self._ops.depth())

    def claimed_count(self) -> int:
        """How many members are claimed and not acked yet."""
        return run_sync(self._client, self._ops.claimed_count())

    def due_count(self, now: float | None = None) -> int:
        """How many waiting members are due at ``now``."""
        return run_sync(self._client, self._ops.due_count(now))

    def next_due(self) -> float | None:
        """The earliest due time, or None when nothing waits."""
        return run_sync(self._client, self._ops.next_due())

    def list(self, limit: int = 100) -> list[RetryEntry]:
        """The first ``limit`` waiting members, earliest due first."""
        return run_sync(self._client, self._ops.list(limit))


class AsyncRetryQueue(_Queue["AsyncRedis"]):
    """What the worker's event loop does with a retry queue (over ``redis.asyncio``):
    schedule batches. Everything else runs in the pump thread or the CLI
    (:class:`RetryQueue`); both run the same :class:`RetryOps`."""

    async def schedule(
        self, member: str, delay: float, *, only_if_earlier: bool = False
    ) -> bool:
        """See :meth:`RetryQueue.schedule`."""
        return await run_async(self._client, self._ops.schedule(member, delay, only_if_earlier))
