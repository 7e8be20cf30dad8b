"""Sans-I/O Redis plumbing: the one way bulkmail talks to Redis and runs its Lua.

Each operation is written once, without I/O, as a generator that yields Redis steps
(:class:`Command`, :class:`Pipeline`, :class:`ScriptCall`) and receives their replies
(:data:`RedisOp`); :func:`run_sync` and :func:`run_async` drive it over a sync or an
async client, so the CLI (sync) and the worker's event loop (async) share one
implementation, and both translate a Redis that does not answer into
:class:`~config.errors.RedisUnavailableError`.

Every Lua script is a ``.lua`` file under ``workers/lua/`` loaded by
:meth:`LuaScript.load` (optionally prefixed by shared ``include`` files, as the
rate-limit scripts are by ``ratelimit/_common.lua``) and run through a
:class:`ScriptCall` step: EVALSHA, and EVAL only when the server does not know the
script yet (first use, a restart, SCRIPT FLUSH); EVAL also caches it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import redis
import redis.asyncio

from config.errors import RedisUnavailableError

if TYPE_CHECKING:
    SyncRedis: TypeAlias = redis.Redis[Any]
    AsyncRedis: TypeAlias = redis.asyncio.Redis[Any]

__all__ = [
    "Arg",
    "AsyncRedis",
    "Command",
    "LuaScript",
    "Pipeline",
    "RedisOp",
    "ScriptCall",
    "SyncRedis",
    "as_text",
    "command",
    "hscan_page",
    "reply_pairs",
    "run_async",
    "run_sync",
    "script",
    "server_time",
]

T = TypeVar("T")

Arg: TypeAlias = str | bytes | int | float


@dataclass(frozen=True, slots=True)
class Command:
    """One Redis command, e.g. ``Command(("ZCARD", key))``."""

    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Several commands sent in one round trip (not a transaction); the reply is the
    list of their replies, in order."""

    commands: tuple[Command, ...]


def _lua_file(path: str) -> str:
    # package data (pyproject: [tool.setuptools.package-data]), so it ships in the wheel
    node = resources.files("workers").joinpath("lua")
    for part in path.split("/"):
        node = node.joinpath(part)
    return node.read_text("utf-8")


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A Lua script, run by SHA with a fallback to its source. The only script class:
    every script is a file under ``workers/lua/`` read by :meth:`load`."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    @classmethod
    def load(cls, path: str, *, include: Sequence[str] = ()) -> LuaScript:
        """Read ``workers/lua/<path>`` (``/``-separated, e.g. ``"ratelimit/acquire.lua"``).

        Each file of ``include`` (same form) is prepended, in order, so helpers shared by
        several scripts are written once. Scripts are loaded at import time of the module
        that runs them: a missing file fails at start-up, not mid-batch.
        """
        parts = [_lua_file(p) for p in (*include, path)]
        return cls(path, "\n".join(parts))

    def __repr__(self) -> str:
        return f"LuaScript({self.name!r})"


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """Run ``script`` with ``keys`` and ``args`` (EVALSHA, EVAL when not cached)."""

    script: LuaScript
    keys: tuple[str, ...]
    args: tuple[Arg, ...]


Step: TypeAlias = Command | Pipeline | ScriptCall

#: An operation: yields :data:`Step` values, is sent each reply, returns its result.
#: Written once, run by :func:`run_sync` or :func:`run_async`.
RedisOp: TypeAlias = Generator[Step, Any, T]


def command(*args: Arg) -> RedisOp[Any]:
    """One command as an operation: ``await run_async(client, command("ZREM", k, m))``."""
    return (yield Command(args))


def script(lua: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> RedisOp[Any]:
    """One script call as an operation; returns the script's reply as it is."""
    return (yield ScriptCall(lua, tuple(keys), tuple(args)))


def _where(client: Any) -> str:
    """Host:port/db of a client for error messages: never the password."""
    kw = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if "path" in kw:
        return f"unix:{kw['path']}"
    return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"


def _unavailable(client: Any, exc: Exception) -> RedisUnavailableError:
    return RedisUnavailableError(f"Redis at {_where(client)} did not answer: {exc}")


# A full client-side connection pool is a sizing problem of the caller, not a server that
# does not answer: it propagates as is. (Not in the redis stubs, hence getattr.)
_POOL_EXHAUSTED: tuple[type[Exception], ...] = tuple(
    cls for cls in [getattr(redis.exceptions, "MaxConnectionsError", None)] if cls is not None
)


def run_sync(client: SyncRedis, op: RedisOp[T]) -> T:
    """Drive ``op`` over a sync client; connection failures raise RedisUnavailableError."""
    reply: Any = None
    try:
        while True:
            step = op.send(reply)
            if isinstance(step, Command):
                reply = client.execute_command(*step.args)
                continue
            if isinstance(step, Pipeline):
                pipe = client.pipeline(transaction=False)
                # the stubs leave Pipeline.execute_command untyped
                queue: Callable[..., Any] = pipe.execute_command
                for c in step.commands:
                    queue(*c.args)
                reply = pipe.execute()
                continue
            n = len(step.keys)
            try:
                reply = client.execute_command(
                    "EVALSHA", step.script.sha, n, *step.keys, *step.args
                )
            except redis.exceptions.NoScriptError:
                reply = client.execute_command(
                    "EVAL", step.script.source, n, *step.keys, *step.args
                )
    except StopIteration as stop:
        result: T = stop.value
        return result
    except _POOL_EXHAUSTED:
        raise
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise _unavailable(client, exc) from exc


async def run_async(client: AsyncRedis, op: RedisOp[T]) -> T:
    """Drive ``op`` over a ``redis.asyncio`` client; same contract as :func:`run_sync`."""
    # The redis.asyncio stubs leave execute_command untyped; pin down what it is.
    execute: Callable[..., Awaitable[Any]] = client.execute_command
    reply: Any = None
    try:
        while True:
            step = op.send(reply)
            if isinstance(step, Command):
                reply = await execute(*step.args)
                continue
            if isinstance(step, Pipeline):
                apipe = client.pipeline(transaction=False)
                for c in step.commands:
                    apipe.execute_command(*c.args)
                reply = await apipe.execute()
                continue
            n = len(step.keys)
            try:
                reply = await execute("EVALSHA", step.script.sha, n, *step.keys, *step.args)
            except redis.exceptions.NoScriptError:
                reply = await execute("EVAL", step.script.source, n, *step.keys, *step.args)
    except StopIteration as stop:
        result: T = stop.value
        return result
    except _POOL_EXHAUSTED:
        raise
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise _unavailable(client, exc) from exc


def as_text(value: Any) -> str:
    """A reply value as ``str``, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def reply_pairs(reply: Any) -> list[tuple[Any, Any]]:
    """``[a, b, c, d]`` (RESP2), ``[[a, b], [c, d]]`` or ``{a: b}`` (RESP3) as pairs."""
    if isinstance(reply, dict):
        return list(reply.items())
    items = list(reply or [])
    if items and isinstance(items[0], list | tuple):
        return [(p[0], p[1]) for p in items]
    return list(zip(items[0::2], items[1::2], strict=True))


def hscan_page(
    key: str,
    cursor: str | None,
    limit: int,
    *,
    match: str | None = None,
    keep: Callable[[str, str], bool] | None = None,
) -> RedisOp[tuple[list[tuple[str, str]], str | None]]:
    """Up to ``limit`` field/value pairs of hash ``key`` and the cursor of the next page.

    ``cursor`` is None for the first page; the returned cursor is None after the last.
    It is ``"<scan cursor>:<skip>"``: HSCAN hands out whole buckets, so to stop after
    exactly ``limit`` the next page rescans the same cursor and skips what was shown
    (HSCAN cursors are stateless, so that is allowed). ``match`` is an HSCAN glob,
    ``keep`` a finer filter on decoded pairs. HSCAN's guarantees apply: an entry present
    for the whole listing appears; one added or removed meanwhile may or may not, and
    the order is the hash's.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    scan, skip = _parse_cursor(cursor)
    extra: tuple[Arg, ...] = ("MATCH", match) if match is not None else ()
    out: list[tuple[str, str]] = []
    while True:
        next_scan, batch = yield Command(
            ("HSCAN", key, scan, *extra, "COUNT", max(limit, 200))
        )
        items = [(as_text(f), as_text(v)) for f, v in reply_pairs(batch)]
        if keep is not None:
            items = [(f, v) for f, v in items if keep(f, v)]
        items = items[skip:]
        room = limit - len(out)
        if len(items) > room:
            out.extend(items[:room])
            return out, f"{scan}:{skip + room}"
        out.extend(items)
        skip = 0
        scan = int(next_scan)
        if scan == 0:
            return out, None
        if len(out) == limit:
            return out, f"{scan}:0"


def _parse_cursor(cursor: str | None) -> tuple[int, int]:
    if cursor is None:
        return 0, 0
    scan, sep, skip = cursor.partition(":")
    if not (sep and scan.isdigit() and skip.isdigit()):
        raise ValueError(f"{cursor!r} is not a listing cursor (expected one returned by list())")
    return int(scan), int(skip)


def server_time() -> RedisOp[float]:
    """The Redis server's clock, unix seconds: the one clock of the cluster."""
    seconds, micros = yield Command(("TIME",))
    return int(seconds) + int(micros) / 1_000_000


