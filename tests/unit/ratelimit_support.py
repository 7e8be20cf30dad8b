"""What the rate-limit tests on the real Redis share: a fake clock, a way to run a body
with an async client, and an SMTP provider config."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aioredis

from config.providers import SmtpConfig

if TYPE_CHECKING:  # the stubs make the client generic; the runtime class is not
    ARedis = aioredis.Redis[bytes]
else:
    ARedis = aioredis.Redis

__all__ = ["T0", "ARedis", "FakeClock", "run", "smtp"]

T = TypeVar("T")
T0 = 1_700_000_000.0


class FakeClock:
    """Stands in for the Redis clock: passed to the scripts as their explicit `now`."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def run(url: str, body: Callable[[ARedis], Awaitable[T]]) -> T:
    """``body(client)`` on a fresh loop with a client on ``url``, closed afterwards."""

    async def main() -> T:
        client = aioredis.Redis.from_url(url)
        try:
            return await body(client)
        finally:
            await client.aclose()  # type: ignore[attr-defined]  # stubs predate it

    return asyncio.run(main())


def smtp(**kw: Any) -> SmtpConfig:
    return SmtpConfig(kind="smtp", host="relay.test", **kw)
