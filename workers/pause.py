"""Pausing and resuming a campaign.

A pause is two fields of the campaign record, ``paused`` (Redis server time) and
``paused_by`` (``cli:USER`` or ``api:KEY NAME``). Workers look before every chunk
(:func:`chunk_gate`): a paused campaign's batch stops there and is set aside in the
campaign's paused-batches set, without touching any recipient's state or attempts.
:func:`resume_campaign` clears the pause and puts every set-aside batch on the retry
queue due at once, so the retry pump republishes it within a second; its recipients that
are already final are skipped as always. Both steps are single Lua scripts
(``lua/chunk_gate.lua``, ``lua/resume.lua``), so no batch is set aside after the resume
took the set.

Batches waiting on a queue or on the retry queue while the campaign is paused reach a
worker, meet the gate before their first chunk and are set aside the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from config.schema import Keys
from workers.redis_ops import (
    Command,
    LuaScript,
    RedisOp,
    ScriptCall,
    as_text,
    run_async,
    run_sync,
    server_time,
)

if TYPE_CHECKING:
    from workers.redis_ops import AsyncRedis, SyncRedis

__all__ = [
    "PauseState",
    "chunk_gate",
    "pause_campaign",
    "pause_state",
    "resume_campaign",
]

_GATE = LuaScript.load("chunk_gate.lua")
_RESUME = LuaScript.load("resume.lua")


@dataclass(frozen=True, slots=True)
class PauseState:
    """Whether a campaign is paused, since when and by whom (for status documents)."""

    paused: bool
    paused_at: float | None = None
    paused_by: str | None = None
    #: why, when the pause says (the complaint guard does)
    paused_reason: str | None = None
    resumed_at: float | None = None
    resumed_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"paused": self.paused}
        if self.paused:
            out |= {"paused_at": self.paused_at, "paused_by": self.paused_by}
            if self.paused_reason:
                out["paused_reason"] = self.paused_reason
        if self.resumed_at is not None:
            out |= {"resumed_at": self.resumed_at, "resumed_by": self.resumed_by}
        return out


def pause_state(record: Mapping[str, str]) -> PauseState:
    """The pause fields of a campaign record (``Ledger.record``)."""
    paused = record.get("paused")
    resumed = record.get("resumed")
    return PauseState(
        paused=paused is not None,
        paused_at=float(paused) if paused is not None else None,
        paused_by=record.get("paused_by") if paused is not None else None,
        paused_reason=record.get("paused_reason") if paused is not None else None,
        resumed_at=float(resumed) if resumed is not None else None,
        resumed_by=record.get("resumed_by") if resumed is not None else None,
    )


def _pause(keys: Keys, cid: str, by: str, reason: str | None) -> RedisOp[bool]:
    key = keys.campaign(cid)
    now = yield from server_time()
    # HSETNX: pausing twice keeps the first time and author (the pause that counts).
    first = yield Command(("HSETNX", key, "paused", repr(now)))
    if first:
        yield Command(("HSET", key, "paused_by", by))
        yield Command(("HSET", key, "paused_reason", reason) if reason
                      else ("HDEL", key, "paused_reason"))
    return bool(first)


def pause_campaign(client: SyncRedis, keys: Keys, cid: str, *, by: str,
                   reason: str | None = None) -> bool:
    """Pause campaign ``cid``: workers stop before their next chunk. ``by`` says who
    (``cli:USER``, ``api:KEY``, ``guard``), ``reason`` why (shown by status). False when
    it was paused already. The caller checks that the campaign exists."""
    return run_sync(client, _pause(keys, cid, by, reason))


def _resume(keys: Keys, cid: str, provider: str, by: str) -> RedisOp[int | None]:
    # The member format is delivery.retry_member's: "<campaign id>:<batch number>".
    n = yield ScriptCall(_RESUME, (keys.campaign(cid), keys.paused_batches(cid),
                                   keys.retry(provider)), (f"{cid}:", by))
    return None if int(n) < 0 else int(n)


def resume_campaign(client: SyncRedis, keys: Keys, cid: str, provider: str, *, by: str
                    ) -> int | None:
    """Resume campaign ``cid`` (sent through ``provider``): its set-aside batches are due
    at once on the retry queue. Returns how many were released, None when the campaign
    was not paused."""
    return run_sync(client, _resume(keys, cid, provider, by))


def _gate(keys: Keys, cid: str, batch_no: int) -> RedisOp[str]:
    reply = yield ScriptCall(_GATE, (keys.campaign(cid), keys.paused_batches(cid)),
                             (batch_no,))
    return as_text(reply)


async def chunk_gate(client: AsyncRedis, keys: Keys, cid: str, batch_no: int) -> str:
    """Before a chunk: ``"cancelled"``, ``"paused"`` (the batch is now set aside for
    :func:`resume_campaign`) or ``"go"``. One round trip."""
    return await run_async(client, _gate(keys, cid, batch_no))
