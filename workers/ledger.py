"""The ledger: per-recipient state of every campaign, in Redis. The source of truth.

Layout (see :class:`config.schema.Keys`): per batch, a hash ``index -> state char`` and a
hash ``index -> JSON detail`` (only for recipients that have something to say: a reply,
an attempt count, a provider id); per campaign, a counts hash and the rows rejected at
enqueue. Small hashes of one-character values stay listpack-encoded in Redis, which keeps
a 1M-recipient campaign in tens of MB.

Every state change goes through one Lua script that refuses to leave a final state and
moves the counters in the same step, so the counts always add up to the rows read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import redis

from config.schema import (
    FINAL_STATES,
    CampaignSpec,
    Keys,
    Recipient,
    State,
    decode_batch,
    encode_batch,
)
from workers.redis_ops import (
    Command,
    LuaScript,
    Pipeline,
    RedisOp,
    ScriptCall,
    as_text,
    hscan_page,
    reply_pairs,
    run_async,
    run_sync,
)

if TYPE_CHECKING:
    from workers.redis_ops import AsyncRedis, SyncRedis


__all__ = [
    "AsyncLedger",
    "CampaignStatus",
    "Ledger",
    "LedgerEntry",
    "LedgerOps",
    "Update",
    "detail_json",
]

_UPDATE = LuaScript.load("ledger_update.lua")
_COUNTED = [s.label for s in State]


@dataclass(frozen=True, slots=True)
class Update:
    """Move the recipient at ``index`` of a batch to ``state`` (detail: JSON or "")."""

    index: int
    state: State
    detail: str = ""


def detail_json(**fields: Any) -> str:
    """Compact JSON for a ledger detail, dropping empty fields."""
    return json.dumps({k: v for k, v in fields.items() if v not in (None, "")},
                      separators=(",", ":"), ensure_ascii=False)


def _update_args(updates: Sequence[Update], force: bool) -> list[str | int]:
    args: list[str | int] = ["1" if force else "0"]
    for u in updates:
        args += [u.index, u.state.value, u.detail]
    return args


@dataclass(frozen=True, slots=True)
class CampaignStatus:
    """What ``bulkmail status`` shows."""

    id: str
    provider: str
    total: int
    counts: dict[str, int]
    enqueued: bool
    created: float
    batches: int

    @property
    def done(self) -> bool:
        """Enqueue finished and nobody is waiting to be sent."""
        return self.enqueued and self.counts["queued"] == 0 and self.counts["deferred"] == 0

    @property
    def accounted(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "provider": self.provider, "total": self.total,
                **self.counts, "done": self.done, "enqueued": self.enqueued,
                "batches": self.batches}


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One recipient as listed by ``bulkmail status ID --list STATE``."""

    row: int
    email: str
    state: State
    detail: dict[str, Any]

    #: compact detail keys (kept short: there is one per recipient in Redis) -> names
    NAMES: ClassVar[dict[str, str]] = {
        "r": "reason", "k": "kind", "a": "attempts", "f": "first_attempt_at",
        "n": "next_attempt_at", "id": "provider_id"}

    def as_dict(self) -> dict[str, Any]:
        """Readable form for ``bulkmail status --list --json``."""
        out: dict[str, Any] = {"row": self.row, "email": self.email, "state": self.state.label}
        for key, value in self.detail.items():
            if key != "email":
                out[self.NAMES.get(key, key)] = value
        return out


def _text_map(raw: Any) -> dict[str, str]:
    return {as_text(k): as_text(v) for k, v in reply_pairs(raw)}


def _status_from(cid: str, record: Mapping[str, str], counts: Mapping[str, str]
                 ) -> CampaignStatus | None:
    if "spec" not in record:
        return None
    spec = CampaignSpec.from_json(record["spec"])
    by_label = {k: int(v) for k, v in counts.items()}
    return CampaignStatus(
        id=cid,
        provider=spec.provider,
        total=int(record.get("rows", 0)),
        counts={label: by_label.get(label, 0) for label in _COUNTED},
        enqueued=record.get("enqueued") == "1",
        created=float(record.get("created", 0)),
        batches=int(record.get("batches", 0)),
    )


_FINAL = frozenset(s.value for s in FINAL_STATES)


class LedgerOps:
    """Every ledger operation, written once without I/O (see :mod:`workers.redis_ops`).

    :class:`Ledger` runs them over a sync client (producers, CLI), :class:`AsyncLedger`
    over the worker's async one.
    """

    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    # -- campaign records --------------------------------------------------------
    def create_campaign(self, spec: CampaignSpec, source: str) -> RedisOp[bool]:
        key = self.keys.campaign(spec.id)
        if not (yield Command(("HSETNX", key, "spec", spec.to_json()))):
            return False
        now = time.time()
        yield Pipeline((
            Command(("HSET", key, "created", repr(now), "rows", 0, "batches", 0,
                     "published", 0, "enqueued", 0, "source", source)),
            Command(("ZADD", self.keys.campaigns, repr(now), spec.id)),
        ))
        return True

    def record(self, cid: str) -> RedisOp[dict[str, str]]:
        return _text_map((yield Command(("HGETALL", self.keys.campaign(cid)))))

    def spec_json(self, cid: str) -> RedisOp[str | None]:
        raw = yield Command(("HGET", self.keys.campaign(cid), "spec"))
        return as_text(raw) if raw is not None else None

    def spec(self, cid: str) -> RedisOp[CampaignSpec | None]:
        raw = yield from self.spec_json(cid)
        return CampaignSpec.from_json(raw) if raw else None

    def status(self, cid: str) -> RedisOp[CampaignStatus | None]:
        record, counts = yield Pipeline((Command(("HGETALL", self.keys.campaign(cid))),
                                         Command(("HGETALL", self.keys.counts(cid)))))
        return _status_from(cid, _text_map(record), _text_map(counts))

    def campaign_ids(self, limit: int) -> RedisOp[list[str]]:
        ids = yield Command(("ZREVRANGE", self.keys.campaigns, 0, limit - 1))
        return [as_text(c) for c in ids]

    def set_field(self, cid: str, name: str, value: str | int) -> RedisOp[None]:
        yield Command(("HSET", self.keys.campaign(cid), name, value))

    # -- batches ---------------------------------------------------------------------
    def batch(self, cid: str, batch_no: int) -> RedisOp[list[Recipient]]:
        raw = yield Command(("GET", self.keys.batch(cid, batch_no)))
        return decode_batch(raw) if raw else []

    def states(self, cid: str, batch_no: int) -> RedisOp[dict[int, str]]:
        raw = yield Command(("HGETALL", self.keys.states(cid, batch_no)))
        return {int(k): v for k, v in _text_map(raw).items()}

    def pending(self, cid: str, batch_no: int
                ) -> RedisOp[tuple[list[tuple[int, Recipient]], dict[int, dict[str, Any]]]]:
        payload, states_raw, details_raw = yield Pipeline((
            Command(("GET", self.keys.batch(cid, batch_no))),
            Command(("HGETALL", self.keys.states(cid, batch_no))),
            Command(("HGETALL", self.keys.details(cid, batch_no))),
        ))
        if not payload:
            return [], {}
        states = _text_map(states_raw)
        todo = [(i, r) for i, r in enumerate(decode_batch(payload))
                if states.get(str(i)) not in _FINAL]
        wanted = {i for i, _ in todo}
        details = {int(k): json.loads(v) for k, v in _text_map(details_raw).items()
                   if int(k) in wanted}
        return todo, details

    def batch_entries(self, cid: str, batch_no: int, wanted: set[State] | None
                      ) -> RedisOp[list[LedgerEntry]]:
        states_raw, details_raw, payload = yield Pipeline((
            Command(("HGETALL", self.keys.states(cid, batch_no))),
            Command(("HGETALL", self.keys.details(cid, batch_no))),
            Command(("GET", self.keys.batch(cid, batch_no))),
        ))
        if not payload:
            return []
        states, details = _text_map(states_raw), _text_map(details_raw)
        out: list[LedgerEntry] = []
        for idx, r in enumerate(decode_batch(payload)):
            st = State(states.get(str(idx), State.QUEUED.value))
            if wanted is not None and st not in wanted:
                continue
            raw_detail = details.get(str(idx))
            out.append(LedgerEntry(r.row, r.email, st,
                                   json.loads(raw_detail) if raw_detail else {}))
        return out

    def invalid(self, cid: str) -> RedisOp[list[LedgerEntry]]:
        out: list[LedgerEntry] = []
        cursor: str | None = None
        while True:
            pairs, cursor = yield from hscan_page(self.keys.invalid(cid), cursor, 1000)
            for row, raw in pairs:
                d = json.loads(raw)
                out.append(LedgerEntry(int(row), d.get("email", ""), State.INVALID, d))
            if cursor is None:
                return sorted(out, key=lambda e: e.row)

    def update(self, cid: str, batch_no: int, updates: Sequence[Update], force: bool = False
               ) -> RedisOp[int]:
        """Apply state changes (see ``ledger_update.lua``); returns how many changed."""
        if not updates:
            return 0
        keys = (self.keys.states(cid, batch_no), self.keys.details(cid, batch_no),
                self.keys.counts(cid))
        return int((yield ScriptCall(_UPDATE, keys, tuple(_update_args(updates, force)))))

    # -- operator actions ------------------------------------------------------------
    def requeue_failed(self, cid: str, rows: Iterable[int] | None) -> RedisOp[list[int]]:
        only = set(rows) if rows is not None else None
        record = yield from self.record(cid)
        touched: list[int] = []
        for batch_no in range(int(record.get("batches", 0))):
            states = yield from self.states(cid, batch_no)
            failed = sorted(i for i, v in states.items() if v == State.FAILED.value)
            if failed and only is not None:
                payload = yield from self.batch(cid, batch_no)
                failed = [i for i in failed if payload[i].row in only]
            if failed:
                yield from self.update(cid, batch_no,
                                       [Update(i, State.QUEUED, detail_json(requeued=time.time()))
                                        for i in failed], force=True)
                touched.append(batch_no)
        return touched

    def cancel(self, cid: str) -> RedisOp[int]:
        yield from self.set_field(cid, "cancelled", repr(time.time()))
        record = yield from self.record(cid)
        pending = {State.QUEUED.value, State.DEFERRED.value}
        cancelled = 0
        for batch_no in range(int(record.get("batches", 0))):
            states = yield from self.states(cid, batch_no)
            todo = sorted(i for i, v in states.items() if v in pending)
            cancelled += yield from self.update(cid, batch_no, [
                Update(i, State.CANCELLED, detail_json(r="cancelled by operator"))
                for i in todo])
        return cancelled


class Ledger:
    """Synchronous ledger access, for producers and the CLI (:class:`LedgerOps` over
    :func:`~workers.redis_ops.run_sync`)."""

    def __init__(self, client: SyncRedis, keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self.ops = LedgerOps(keys)

    # -- campaign records --------------------------------------------------------
    def create_campaign(self, spec: CampaignSpec, *, source: str = "") -> bool:
        """Record a new campaign; False (and nothing written) when the id exists."""
        return run_sync(self.r, self.ops.create_campaign(spec, source))

    def record(self, cid: str) -> dict[str, str]:
        """The campaign's record hash, decoded."""
        return run_sync(self.r, self.ops.record(cid))

    def spec(self, cid: str) -> CampaignSpec | None:
        """The campaign's definition, or None when there is no such campaign."""
        return run_sync(self.r, self.ops.spec(cid))

    def status(self, cid: str) -> CampaignStatus | None:
        """Counts and progress (``bulkmail status``), or None for an unknown campaign."""
        return run_sync(self.r, self.ops.status(cid))

    def campaign_ids(self, limit: int = 50) -> list[str]:
        """The ``limit`` most recent campaign ids, newest first."""
        return run_sync(self.r, self.ops.campaign_ids(limit))

    # -- writing batches (producer side) -------------------------------------------
    def queue_writes(
        self,
        pipe: redis.client.Pipeline[bytes],
        cid: str,
        batches: Sequence[tuple[int, Sequence[Recipient]]],
        invalid: Sequence[tuple[int, str, str]],
        rows_read: int,
    ) -> None:
        """Queue on ``pipe`` the writes for new batches and invalid rows, and the progress.

        Run in one MULTI so a crash leaves either all of a chunk or none of it. (The
        producer's own transaction, which is why this one takes a pipeline rather than
        being a :class:`LedgerOps` operation.)
        """
        counts = self.keys.counts(cid)
        queued = 0
        # Every batch starts all "queued": the first states hash of each size is written
        # field by field, the others are COPYs of it (Redis >= 6.2). A COPY of a listpack
        # is one memcpy on the server, where HSET of 500 new fields searches the listpack
        # for each one, and the client packs two arguments instead of 1,000.
        template: dict[int, str] = {}
        for batch_no, recipients in batches:
            pipe.set(self.keys.batch(cid, batch_no), encode_batch(list(recipients)))
            states = self.keys.states(cid, batch_no)
            size = len(recipients)
            if size in template:
                pipe.copy(template[size], states, replace=True)
            else:
                pipe.hset(states, mapping=dict.fromkeys(map(str, range(size)),
                                                        State.QUEUED.value))
                template[size] = states
            queued += size
        if queued:
            pipe.hincrby(counts, "queued", queued)
        if invalid:
            pipe.hset(self.keys.invalid(cid), mapping={
                str(row): detail_json(email=email, reason=reason)
                for row, email, reason in invalid
            })
            pipe.hincrby(counts, "invalid", len(invalid))
        record = self.keys.campaign(cid)
        pipe.hset(record, "rows", rows_read)
        if batches:
            pipe.hset(record, "batches", batches[-1][0] + 1)

    def mark_published(self, cid: str, batches: int) -> None:
        """Record how many batches are on the queue."""
        run_sync(self.r, self.ops.set_field(cid, "published", batches))

    def mark_enqueued(self, cid: str) -> None:
        """Record that every row was read (the campaign can be done now)."""
        run_sync(self.r, self.ops.set_field(cid, "enqueued", 1))

    # -- reading and operator actions -------------------------------------------------
    def batch(self, cid: str, batch_no: int) -> list[Recipient]:
        """The recipients of one batch, in order."""
        return run_sync(self.r, self.ops.batch(cid, batch_no))

    def update(self, cid: str, batch_no: int, updates: Sequence[Update], *,
               force: bool = False) -> int:
        """Apply state changes (see ``ledger_update.lua``); returns how many changed."""
        return run_sync(self.r, self.ops.update(cid, batch_no, updates, force))

    def entries(self, cid: str, states: Iterable[State] | None = None) -> Iterator[LedgerEntry]:
        """Every recipient (or those in ``states``), in row order within each batch."""
        wanted = set(states) if states is not None else None
        record = self.record(cid)
        if wanted is None or State.INVALID in wanted:
            yield from run_sync(self.r, self.ops.invalid(cid))
        for batch_no in range(int(record.get("batches", 0))):
            yield from run_sync(self.r, self.ops.batch_entries(cid, batch_no, wanted))

    def requeue_failed(self, cid: str, rows: Iterable[int] | None = None) -> list[int]:
        """Move ``failed`` recipients (all, or those in ``rows``) back to ``queued``.

        Returns the affected batch numbers. ``sent`` recipients are untouched, so sending
        the returned batches again cannot reach anyone twice.
        """
        return run_sync(self.r, self.ops.requeue_failed(cid, rows))

    def cancel(self, cid: str) -> int:
        """Move every ``queued`` or ``deferred`` recipient to ``cancelled``.

        Workers skip final states, so batches already on a queue send nothing more;
        a batch in the middle of sending stops at its next chunk. Returns how many.
        """
        return run_sync(self.r, self.ops.cancel(cid))


class AsyncLedger:
    """The worker's view: read a batch and its states, write outcomes. One round trip
    each (:class:`LedgerOps` over :func:`~workers.redis_ops.run_async`)."""

    def __init__(self, client: AsyncRedis, keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self.ops = LedgerOps(keys)

    async def spec(self, cid: str) -> CampaignSpec | None:
        """See :meth:`Ledger.spec`."""
        return await run_async(self.r, self.ops.spec(cid))

    async def spec_json(self, cid: str) -> str | None:
        """The campaign's definition as stored (what workers compile and cache)."""
        return await run_async(self.r, self.ops.spec_json(cid))

    async def pending(self, cid: str, batch_no: int
                      ) -> tuple[list[tuple[int, Recipient]], dict[int, dict[str, Any]]]:
        """The batch's recipients that are not final yet, with their details.

        Returns ``([(index, recipient), ...], {index: detail})``.
        """
        return await run_async(self.r, self.ops.pending(cid, batch_no))

    async def update(self, cid: str, batch_no: int, updates: Sequence[Update]) -> int:
        """See :meth:`Ledger.update` (never ``force``: workers do not leave final states)."""
        return await run_async(self.r, self.ops.update(cid, batch_no, updates))
