"""The batch lock: one worker at a time sends a batch, and it knows when it stopped being
the one.

A redelivered copy of a batch (broker visibility timeout, a SIGKILLed worker's task put
back) must not be sent alongside the copy still running. The running copy holds a short
lock (``SET NX PX``, a relative TTL on the Redis server: no worker's clock is compared
with another's) and renews it at a third of the TTL for as long as the batch runs; a
killed worker stops renewing and its lock lapses within the TTL.

Renewal can fail: Redis does not answer (a blip, a failover, a paused network) or the
lock is no longer there. A failed renewal is retried every ``retry_every`` seconds for as
long as the lock may still be alive. The lock counts as **lost** as soon as it could have
lapsed: when the local monotonic time since the last successful acquire or renewal reaches
``ttl - margin`` (each attempt is timed from *before* its command is sent, so the server's
expiry is never earlier than we assume). It is lost at once when another holder has it.
The sender checks :attr:`BatchLock.lost` before each chunk and stops; a chunk already on
the wire is the most that can be sent twice. The check reads the clock itself, so a loop
too busy to run the renewer still sees the lapse.

Usage (the worker, :mod:`workers.delivery`)::

    lock = BatchLock(rt.redis, keys.batch_lock(cid, n), token=rt.worker_id, ttl=30)
    if not await lock.acquire():
        look_again_in = await lock.remaining()
        ...
    async with lock.renewing():
        for chunk in chunks:
            if lock.lost:
                break
            ...
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from config.errors import RedisUnavailableError
from workers.redis_ops import LuaScript, command, run_async, script

if TYPE_CHECKING:
    from workers.redis_ops import AsyncRedis

__all__ = ["BatchLock"]

log = logging.getLogger("bulkmail.batchlock")

_RENEW = LuaScript.load("batch_lock_renew.lua")
_RELEASE = LuaScript.load("batch_lock_release.lua")


class BatchLock:
    """The lock ``key`` held under ``token`` for ``ttl`` seconds at a time.

    ``margin`` (default: a tenth of the TTL, at least 0.5 s and at most 3 s) is how long
    before the lock could lapse it counts as lost; ``retry_every`` (default: a tenth of the
    TTL, at most 1 s) spaces the retries of a failed renewal. ``clock`` is the monotonic
    clock the deadline is measured on (injectable for tests).
    """

    def __init__(
        self,
        client: AsyncRedis,
        key: str,
        *,
        token: str,
        ttl: float,
        margin: float | None = None,
        retry_every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"batch lock ttl must be above zero, got {ttl!r}")
        self.client = client
        self.key = key
        self.token = token
        self.ttl = float(ttl)
        self.margin = margin if margin is not None else min(3.0, max(0.5, ttl / 10))
        if not 0 <= self.margin < self.ttl:
            raise ValueError(f"margin {self.margin!r} must be in [0, ttl={ttl!r})")
        self.retry_every = retry_every if retry_every is not None else min(1.0, ttl / 10)
        self._clock = clock
        self._valid_from: float | None = None  # when the last successful attempt was sent
        self._taken_over = False
        #: successful renewals and failed renewal attempts (for logs and tests)
        self.renewals = 0
        self.failures = 0

    # -- state -----------------------------------------------------------------------
    @property
    def deadline(self) -> float | None:
        """Monotonic time from which the lock counts as lost (None before acquiring)."""
        if self._valid_from is None:
            return None
        return self._valid_from + self.ttl - self.margin

    @property
    def lost(self) -> bool:
        """True once the lock could have lapsed or another holder has it."""
        deadline = self.deadline
        return self._taken_over or deadline is None or self._clock() >= deadline

    # -- Redis -----------------------------------------------------------------------
    async def acquire(self) -> bool:
        """Take the lock if nobody holds it; False when someone does."""
        sent_at = self._clock()
        ok = await run_async(self.client, command(
            "SET", self.key, self.token, "NX", "PX", self._ttl_ms()))
        if ok:
            self._valid_from = sent_at
            self._taken_over = False
        return bool(ok)

    async def remaining(self) -> float:
        """Seconds until the current holder's lock lapses if not renewed (0 if none)."""
        pttl = await run_async(self.client, command("PTTL", self.key))
        return max(int(pttl), 0) / 1000

    async def renew(self) -> bool:
        """One renewal attempt: True when the lock is ours for another ``ttl``.

        False when it is gone or held by another (the latter makes it :attr:`lost` at
        once). A Redis that does not answer within the time the lock may still be alive
        raises :class:`~config.errors.RedisUnavailableError`.
        """
        sent_at = self._clock()
        deadline = self.deadline
        # A command stuck on a paused connection must not outlive the lock: bound it.
        budget = max(0.05, (deadline - sent_at) if deadline is not None else self.ttl)
        try:
            res = await asyncio.wait_for(
                run_async(self.client, script(_RENEW, [self.key], [self.token, self._ttl_ms()])),
                budget)
        except TimeoutError as exc:
            raise RedisUnavailableError(
                f"Redis did not answer the renewal of {self.key} within {budget:.1f}s") from exc
        if int(res) == 1:
            self._valid_from = sent_at
            self.renewals += 1
            return True
        if int(res) == -1:
            self._taken_over = True
        return False

    async def release(self) -> None:
        """Delete the lock if it is still ours (never another holder's).

        Best effort: when Redis does not answer within the TTL the lock is left to
        lapse by itself, which is what it would do anyway.
        """
        try:
            await asyncio.wait_for(
                run_async(self.client, script(_RELEASE, [self.key], [self.token])), self.ttl)
        except (TimeoutError, RedisUnavailableError) as exc:
            log.warning("could not release %s (%s); it lapses within %.0fs",
                        self.key, str(exc) or "no answer", self.ttl)

    # -- keeping it ------------------------------------------------------------------
    async def keep(self) -> None:
        """Renew at a third of the TTL until cancelled or lost; see the module docstring."""
        wait = self.ttl / 3
        while True:
            await asyncio.sleep(wait)
            if self.lost:
                break
            try:
                ok = await self.renew()
                error = "" if ok else "the lock is no longer ours"
            except RedisUnavailableError as exc:
                ok, error = False, str(exc)
            if ok:
                wait = self.ttl / 3
                continue
            self.failures += 1
            if self.lost:
                break
            log.warning("renewing %s failed (%s); retrying while the lock may still be "
                        "alive", self.key, error)
            wait = self.retry_every
        log.warning("lost the lock of %s (%s); this batch stops before its next chunk",
                    self.key, "another worker holds it" if self._taken_over
                    else "no renewal succeeded within its TTL")

    @asynccontextmanager
    async def renewing(self) -> AsyncIterator[BatchLock]:
        """Keep the (acquired) lock renewed for the body, then release it."""
        keeper = asyncio.ensure_future(self.keep())
        try:
            yield self
        finally:
            keeper.cancel()
            await self.release()

    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))
