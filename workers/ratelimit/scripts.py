"""Loading and running the Lua scripts that sit beside this module.

Each script is ``_common.lua`` followed by its own body, so the bucket arithmetic is
written once. A call is one round trip: EVALSHA, and EVAL only when the server does not
know the script yet (first use, or after a restart or SCRIPT FLUSH); EVAL also caches it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workers.errors import RedisUnavailableError

__all__ = [
    "ACQUIRE",
    "LEASE_ACQUIRE",
    "LEASE_COUNT",
    "LEASE_RENEW",
    "THROTTLE",
    "LuaScript",
    "redis_errors",
]

_HERE = Path(__file__).parent

Arg = str | int | float


def _where(client: Any) -> str:
    """host:port/db of a client, for messages: never the password."""
    kw = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if "path" in kw:
        return f"unix:{kw['path']}"
    return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"


@contextmanager
def redis_errors(client: Any) -> Iterator[None]:
    """Translate a Redis that does not answer into our :class:`RedisUnavailableError`."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise RedisUnavailableError(f"Redis at {_where(client)} did not answer: {exc}") from exc


class LuaScript:
    """One script: ``_common.lua`` + ``name``, run by SHA with a load fallback."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (_HERE / "_common.lua").read_text() + "\n" + (_HERE / name).read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, client: Redis[Any], keys: Sequence[str], args: Sequence[Arg]) -> Any:
        # the stubs leave these untyped; they return the script's reply as it is
        evalsha: Callable[..., Awaitable[Any]] = client.evalsha
        eval_: Callable[..., Awaitable[Any]] = client.eval
        with redis_errors(client):
            try:
                return await evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                return await eval_(self.source, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"LuaScript({self.name!r})"


ACQUIRE = LuaScript("acquire.lua")
THROTTLE = LuaScript("throttle.lua")
LEASE_ACQUIRE = LuaScript("lease_acquire.lua")
LEASE_RENEW = LuaScript("lease_renew.lua")
LEASE_COUNT = LuaScript("lease_count.lua")
