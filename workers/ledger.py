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
from pathlib import Path
from typing import Any, ClassVar

import redis
import redis.asyncio as aioredis

from config.schema import (
    FINAL_STATES,
    CampaignSpec,
    Keys,
    Recipient,
    State,
    decode_batch,
    encode_batch,
)

__all__ = [
    "AsyncLedger",
    "CampaignStatus",
    "Ledger",
    "LedgerEntry",
    "Update",
    "detail_json",
]

_UPDATE_LUA = (Path(__file__).parent / "lua" / "ledger_update.lua").read_text()
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


def _status_from(cid: str, record: Mapping[bytes, bytes], counts: Mapping[bytes, bytes]
                 ) -> CampaignStatus | None:
    if b"spec" not in record:
        return None
    spec = CampaignSpec.from_json(record[b"spec"])
    by_label = {k.decode(): int(v) for k, v in counts.items()}
    return CampaignStatus(
        id=cid,
        provider=spec.provider,
        total=int(record.get(b"rows", 0)),
        counts={label: by_label.get(label, 0) for label in _COUNTED},
        enqueued=record.get(b"enqueued") == b"1",
        created=float(record.get(b"created", 0)),
        batches=int(record.get(b"batches", 0)),
    )


class Ledger:
    """Synchronous ledger access, for producers and the CLI."""

    def __init__(self, client: redis.Redis[bytes], keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self._update = client.register_script(_UPDATE_LUA)

    # -- campaign records --------------------------------------------------------
    def create_campaign(self, spec: CampaignSpec, *, source: str = "") -> bool:
        """Record a new campaign; False (and nothing written) when the id exists."""
        key = self.keys.campaign(spec.id)
        if not self.r.hsetnx(key, "spec", spec.to_json()):
            return False
        now = time.time()
        pipe = self.r.pipeline()
        pipe.hset(key, mapping={"created": now, "rows": 0, "batches": 0, "published": 0,
                                "enqueued": 0, "source": source})
        pipe.zadd(self.keys.campaigns, {spec.id: now})
        pipe.execute()
        return True

    def record(self, cid: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self.keys.campaign(cid)).items()}

    def spec(self, cid: str) -> CampaignSpec | None:
        raw = self.r.hget(self.keys.campaign(cid), "spec")
        return CampaignSpec.from_json(raw) if raw else None

    def status(self, cid: str) -> CampaignStatus | None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.keys.campaign(cid))
        pipe.hgetall(self.keys.counts(cid))
        record, counts = pipe.execute()
        return _status_from(cid, record, counts)

    def campaign_ids(self, limit: int = 50) -> list[str]:
        return [c.decode() for c in self.r.zrevrange(self.keys.campaigns, 0, limit - 1)]

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

        Run in one MULTI so a crash leaves either all of a chunk or none of it.
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
        self.r.hset(self.keys.campaign(cid), "published", batches)

    def mark_enqueued(self, cid: str) -> None:
        self.r.hset(self.keys.campaign(cid), "enqueued", 1)

    # -- reading and operator actions -------------------------------------------------
    def batch(self, cid: str, batch_no: int) -> list[Recipient]:
        raw = self.r.get(self.keys.batch(cid, batch_no))
        return decode_batch(raw) if raw else []

    def update(self, cid: str, batch_no: int, updates: Sequence[Update], *,
               force: bool = False) -> int:
        """Apply state changes (see ``ledger_update.lua``); returns how many changed."""
        if not updates:
            return 0
        keys = [self.keys.states(cid, batch_no), self.keys.details(cid, batch_no),
                self.keys.counts(cid)]
        return int(self._update(keys=keys, args=_update_args(updates, force)))

    def entries(self, cid: str, states: Iterable[State] | None = None) -> Iterator[LedgerEntry]:
        """Every recipient (or those in ``states``), in row order within each batch."""
        wanted = set(states) if states is not None else None
        record = self.record(cid)
        if wanted is None or State.INVALID in wanted:
            for row, raw in sorted(self.r.hscan_iter(self.keys.invalid(cid)),
                                   key=lambda kv: int(kv[0])):
                d = json.loads(raw)
                yield LedgerEntry(int(row), d.get("email", ""), State.INVALID, d)
        for batch_no in range(int(record.get("batches", 0))):
            pipe = self.r.pipeline(transaction=False)
            pipe.hgetall(self.keys.states(cid, batch_no))
            pipe.hgetall(self.keys.details(cid, batch_no))
            pipe.get(self.keys.batch(cid, batch_no))
            states_raw, details_raw, payload = pipe.execute()
            if not payload:
                continue
            for idx, r in enumerate(decode_batch(payload)):
                st = State(states_raw.get(str(idx).encode(), b"q").decode())
                if wanted is not None and st not in wanted:
                    continue
                raw_detail = details_raw.get(str(idx).encode())
                yield LedgerEntry(r.row, r.email, st, json.loads(raw_detail) if raw_detail else {})

    def requeue_failed(self, cid: str, rows: Iterable[int] | None = None) -> list[int]:
        """Move ``failed`` recipients (all, or those in ``rows``) back to ``queued``.

        Returns the affected batch numbers. ``sent`` recipients are untouched, so sending
        the returned batches again cannot reach anyone twice.
        """
        only = set(rows) if rows is not None else None
        record = self.record(cid)
        touched: list[int] = []
        for batch_no in range(int(record.get("batches", 0))):
            states = self.r.hgetall(self.keys.states(cid, batch_no))
            failed = [int(k) for k, v in states.items() if v == State.FAILED.value.encode()]
            if failed and only is not None:
                payload = self.batch(cid, batch_no)
                failed = [i for i in failed if payload[i].row in only]
            if failed:
                self.update(cid, batch_no,
                            [Update(i, State.QUEUED, detail_json(requeued=time.time()))
                             for i in failed], force=True)
                touched.append(batch_no)
        return touched


    def cancel(self, cid: str) -> int:
        """Move every ``queued`` or ``deferred`` recipient to ``cancelled``.

        Workers skip final states, so batches already on a queue send nothing more;
        a batch in the middle of sending stops at its next chunk. Returns how many.
        """
        self.r.hset(self.keys.campaign(cid), "cancelled", time.time())
        record = self.record(cid)
        pending = {State.QUEUED.value.encode(), State.DEFERRED.value.encode()}
        cancelled = 0
        for batch_no in range(int(record.get("batches", 0))):
            states = self.r.hgetall(self.keys.states(cid, batch_no))
            todo = [int(k) for k, v in states.items() if v in pending]
            cancelled += self.update(cid, batch_no, [
                Update(i, State.CANCELLED, detail_json(r="cancelled by operator"))
                for i in todo])
        return cancelled


class AsyncLedger:
    """The worker's view: read a batch and its states, write outcomes. One round trip each."""

    def __init__(self, client: aioredis.Redis[bytes], keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self._update = client.register_script(_UPDATE_LUA)

    async def spec(self, cid: str) -> CampaignSpec | None:
        raw = await self.r.hget(self.keys.campaign(cid), "spec")
        return CampaignSpec.from_json(raw) if raw else None

    async def pending(self, cid: str, batch_no: int
                      ) -> tuple[list[tuple[int, Recipient]], dict[int, dict[str, Any]]]:
        """The batch's recipients that are not final yet, with their details.

        Returns ``([(index, recipient), ...], {index: detail})``.
        """
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.keys.batch(cid, batch_no))
        pipe.hgetall(self.keys.states(cid, batch_no))
        pipe.hgetall(self.keys.details(cid, batch_no))
        payload, states, details = await pipe.execute()
        if not payload:
            return [], {}
        final = {s.value.encode() for s in FINAL_STATES}
        todo = [(i, r) for i, r in enumerate(decode_batch(payload))
                if states.get(str(i).encode()) not in final]
        wanted = {i for i, _ in todo}
        det = {int(k): json.loads(v) for k, v in details.items() if int(k) in wanted}
        return todo, det

    async def update(self, cid: str, batch_no: int, updates: Sequence[Update]) -> int:
        if not updates:
            return 0
        keys = [self.keys.states(cid, batch_no), self.keys.details(cid, batch_no),
                self.keys.counts(cid)]
        return int(await self._update(keys=keys, args=_update_args(updates, False)))
