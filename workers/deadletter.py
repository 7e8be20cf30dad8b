"""Dead letters: recipients whose retries ran out, kept for listing and requeueing.

One Redis hash (``keys.dead_letters``): ``"{campaign_id}:{row}"`` -> JSON
``{"campaign_id", "row", "email", "reply", "attempts", "provider", "at"}``. The ledger
still says ``failed`` for these recipients; requeueing (the ``dlq requeue`` command) moves
them back to ``queued`` there and then removes their entries here.

:class:`DeadLetters` (sync) and :class:`AsyncDeadLetters` (``redis.asyncio``, only what
the worker uses) run the same operations, written once with :mod:`workers.redis_ops`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from config.schema import Keys
from workers.redis_ops import Command, RedisOp, as_text, hscan_page, run_async, run_sync

if TYPE_CHECKING:  # used as base-class arguments, which ruff does not see
    from workers.redis_ops import AsyncRedis, SyncRedis  # noqa: F401

ClientT = TypeVar("ClientT")

__all__ = ["AsyncDeadLetters", "DeadLetter", "DeadLetterPage", "DeadLetters", "entry_key"]

#: Fields per HSET / HDEL: bounded command size for big batches.
_CHUNK = 1000
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def entry_key(campaign_id: str, row: int) -> str:
    """The hash field of a dead letter: ``"{campaign_id}:{row}"``."""
    return f"{campaign_id}:{row}"


def _split_key(key: str) -> tuple[str, int] | None:
    # rsplit: campaign ids may contain ":", row numbers never do.
    cid, sep, row = key.rpartition(":")
    return (cid, int(row)) if sep and row.isdigit() else None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One recipient that will not be tried again without an operator's say-so.

    ``reply`` is the last error as text (``DeliveryError.describe()``), ``attempts``
    how many were made, ``at`` the unix time it was recorded.
    """

    campaign_id: str
    row: int
    email: str
    reply: str
    attempts: int
    provider: str
    at: float

    @property
    def key(self) -> str:
        """Its field in the dead-letter hash."""
        return entry_key(self.campaign_id, self.row)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, key: str, raw: str) -> DeadLetter:
        """Decode a stored entry; fields missing from the JSON come from ``key``."""
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {"reply": raw}
        cid, row = _split_key(key) or (key, 0)
        return cls(
            campaign_id=str(data.get("campaign_id", cid)),
            row=int(data.get("row", row)),
            email=str(data.get("email", "")),
            reply=str(data.get("reply", "")),
            attempts=int(data.get("attempts", 0)),
            provider=str(data.get("provider", "")),
            at=float(data.get("at") or 0.0),
        )


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    """A page of :meth:`DeadLetters.list`; ``next_cursor`` is None after the last."""

    entries: list[DeadLetter]
    next_cursor: str | None


def _campaign_filter(
    campaign_id: str | None,
) -> tuple[str | None, Callable[[str, str], bool] | None]:
    """HSCAN MATCH glob plus an exact check: ``a:*`` also matches campaign ``a:b``'s rows."""
    if campaign_id is None:
        return None, None
    glob = _GLOB_SPECIAL.sub(r"\\\1", campaign_id) + ":*"

    def keep(key: str, _value: str) -> bool:
        parts = _split_key(key)
        return parts is not None and parts[0] == campaign_id

    return glob, keep


class _DeadLetterOps:
    def __init__(self, keys: Keys, clock: Callable[[], float]) -> None:
        self.key = keys.dead_letters
        self.clock = clock

    def record_many(self, letters: Iterable[DeadLetter]) -> RedisOp[int]:
        # A later record of the same recipient (failed again after a requeue) replaces
        # the earlier one: the latest reply and attempt count are what matter.
        pairs = [x for d in letters for x in (d.key, d.to_json())]
        added = 0
        for start in range(0, len(pairs), 2 * _CHUNK):
            added += int((yield Command(("HSET", self.key, *pairs[start : start + 2 * _CHUNK]))))
        return added

    def record(
        self, campaign_id: str, row: int, email: str, reply: str, attempts: int, provider: str
    ) -> RedisOp[DeadLetter]:
        letter = DeadLetter(campaign_id, row, email, reply, attempts, provider, self.clock())
        yield from self.record_many([letter])
        return letter

    def get(self, campaign_id: str, row: int) -> RedisOp[DeadLetter | None]:
        key = entry_key(campaign_id, row)
        raw = yield Command(("HGET", self.key, key))
        return None if raw is None else DeadLetter.from_json(key, as_text(raw))

    def list(
        self, campaign_id: str | None, limit: int, cursor: str | None
    ) -> RedisOp[DeadLetterPage]:
        match, keep = _campaign_filter(campaign_id)
        pairs, next_cursor = yield from hscan_page(
            self.key, cursor, limit, match=match, keep=keep
        )
        return DeadLetterPage([DeadLetter.from_json(k, v) for k, v in pairs], next_cursor)

    def remove(self, entries: Iterable[DeadLetter | str]) -> RedisOp[int]:
        fields = list(dict.fromkeys(e.key if isinstance(e, DeadLetter) else e for e in entries))
        removed = 0
        for start in range(0, len(fields), _CHUNK):
            removed += int((yield Command(("HDEL", self.key, *fields[start : start + _CHUNK]))))
        return removed

    def count(self, campaign_id: str | None) -> RedisOp[int]:
        if campaign_id is None:
            return int((yield Command(("HLEN", self.key))))
        match, keep = _campaign_filter(campaign_id)
        total = 0
        cursor: str | None = None
        while True:
            pairs, cursor = yield from hscan_page(
                self.key, cursor, 1000, match=match, keep=keep
            )
            total += len(pairs)
            if cursor is None:
                return total


class _Letters(Generic[ClientT]):
    """What the sync and the async dead-letter list share: the client, the keys."""

    def __init__(
        self, client: ClientT, keys: Keys, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._ops = _DeadLetterOps(keys, clock)

    @property
    def key(self) -> str:
        """The Redis hash holding the entries."""
        return self._ops.key


class DeadLetters(_Letters["SyncRedis"]):
    """The dead-letter list over a sync Redis client (CLI: ``dlq list/requeue``).

    ``clock`` gives the unix time stamped on new records (injectable for tests).
    """

    def record(
        self, campaign_id: str, row: int, email: str, reply: str, attempts: int, provider: str
    ) -> DeadLetter:
        """Record that ``row`` of ``campaign_id`` gave up; returns the entry written.

        Recording the same recipient again replaces its entry.
        """
        return run_sync(
            self._client, self._ops.record(campaign_id, row, email, reply, attempts, provider)
        )

    def record_many(self, letters: Iterable[DeadLetter]) -> int:
        """Record many at once (one round trip per 1000); returns how many were new."""
        return run_sync(self._client, self._ops.record_many(letters))

    def get(self, campaign_id: str, row: int) -> DeadLetter | None:
        """The entry of one recipient, or None."""
        return run_sync(self._client, self._ops.get(campaign_id, row))

    def list(
        self, campaign_id: str | None = None, limit: int = 100, *, cursor: str | None = None
    ) -> DeadLetterPage:
        """Up to ``limit`` entries (of one campaign, or all), in hash order, and the
        cursor of the next page. Filtering by campaign scans the whole hash."""
        return run_sync(self._client, self._ops.list(campaign_id, limit, cursor))

    def remove(self, entries: Iterable[DeadLetter | str]) -> int:
        """Delete entries (objects or ``"cid:row"`` keys); returns how many existed."""
        return run_sync(self._client, self._ops.remove(entries))

    def count(self, campaign_id: str | None = None) -> int:
        """How many entries (of one campaign: a full scan; all: O(1))."""
        return run_sync(self._client, self._ops.count(campaign_id))


class AsyncDeadLetters(_Letters["AsyncRedis"]):
    """What the worker's event loop does with dead letters (over ``redis.asyncio``):
    record the recipients whose retries ran out. Listing and requeueing are the CLI's
    (:class:`DeadLetters`); both run the same operations."""

    async def record_many(self, letters: Iterable[DeadLetter]) -> int:
        """See :meth:`DeadLetters.record_many`."""
        return await run_async(self._client, self._ops.record_many(letters))
