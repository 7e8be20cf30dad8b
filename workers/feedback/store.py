"""Provider events in Redis: matched to the ledger, deduplicated, kept per recipient.

Matching: our correlation id ``campaign:row`` when the event carries it (the batch is
found by binary search over the batches' first rows, read with GETRANGE), else the
provider's message id through :func:`index_accepted`'s index (message id ->
``batch:campaign``, one hash per provider and day, kept :data:`ID_DAYS` days) and the
recipient's address. An event that matches nothing is still deduplicated and, when it
is a hard bounce or a complaint, still suppresses the address: an event about any
address sent from this account is reason enough.

Storage (``Keys.recipient_events``): per batch, a hash ``index|event key`` -> event
JSON, beside the ledger's states and details; the seven states do not change. Dedupe by
provider and event id for :data:`DEDUPE_TTL` (longer than any provider retries).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from config.providers import ProviderConfig
from config.schema import Keys, Recipient, decode_batch
from workers.feedback.normalize import FeedbackEvent
from workers.redis_ops import (
    Command,
    LuaScript,
    Pipeline,
    RedisOp,
    ScriptCall,
    as_text,
    command,
    reply_pairs,
    run_async,
    run_sync,
)
from workers.suppression import SuppressionList

if TYPE_CHECKING:
    from workers.providers.base import SendResult
    from workers.redis_ops import AsyncRedis, SyncRedis

__all__ = [
    "DEDUPE_TTL",
    "ID_DAYS",
    "Match",
    "RecipientEvents",
    "Tally",
    "batch_events",
    "campaign_events",
    "index_accepted",
    "locate",
    "readable",
    "record",
    "webhooks_configured",
]

#: how long an event id is remembered (SendGrid retries for 72 hours)
DEDUPE_TTL = 4 * 86400
#: days a provider message id can be matched after sending
ID_DAYS = 14
_RECORD = LuaScript.load("feedback_record.lua")
_FIRST_ROW = re.compile(rb"\[\[(\d+),")


def webhooks_configured(cfg: ProviderConfig) -> bool:
    """Whether the provider has a webhook secret (so its message ids are worth indexing)."""
    return any(getattr(cfg, name, None) for name in (
        "webhook_signing_key_env", "webhook_signing_key_file", "webhook_basic_auth_env",
        "webhook_basic_auth_file", "webhook_topic_arns"))


async def index_accepted(client: AsyncRedis, keys: Keys, cfg: ProviderConfig, provider: str,
                         cid: str, batch_no: int, results: Sequence[SendResult],
                         now: float) -> None:
    """Remember which batch each accepted message id belongs to (for events that carry
    only the provider's id). Nothing is written for a provider without webhooks."""
    ids = {r.provider_id.strip("<>") for r in results if r.provider_id}
    if not ids or not webhooks_configured(cfg):
        return
    day = int(now // 86400)
    key = keys.provider_ids(provider, day)
    value = f"{batch_no}:{cid}"
    await run_async(client, _index(key, ids, value, (day + ID_DAYS + 1) * 86400))


def _index(key: str, ids: Iterable[str], value: str, expire_at: int) -> RedisOp[None]:
    yield Pipeline((Command(("HSET", key, *[x for i in ids for x in (i, value)])),
                    Command(("EXPIREAT", key, expire_at))))


@dataclass(frozen=True, slots=True)
class Match:
    """Where an event's recipient is in the ledger."""

    campaign: str
    batch: int
    index: int
    row: int


def _first_row(client: SyncRedis, keys: Keys, cid: str, batch_no: int) -> int | None:
    head = run_sync(client, command("GETRANGE", keys.batch(cid, batch_no), 0, 31))
    m = _FIRST_ROW.match(head if isinstance(head, bytes) else str(head or "").encode())
    return int(m.group(1)) if m else None


def _batch(client: SyncRedis, keys: Keys, cid: str, batch_no: int) -> list[Recipient]:
    raw = client.get(keys.batch(cid, batch_no))
    return decode_batch(raw) if raw else []


def locate(client: SyncRedis, keys: Keys, event: FeedbackEvent) -> Match | None:
    """The ledger recipient ``event`` is about, or None."""
    if event.correlation:
        cid, _, row_text = event.correlation.rpartition(":")
        if row_text.isdigit() and cid:
            found = _by_row(client, keys, cid, int(row_text), event.recipient)
            if found is not None:
                return found
    if event.message_id:
        return _by_message_id(client, keys, event)
    return None


def _by_row(client: SyncRedis, keys: Keys, cid: str, row: int, email: str) -> Match | None:
    batches = int(client.hget(keys.campaign(cid), "batches") or 0)
    lo, hi = 0, batches - 1
    # rows grow with batch numbers: the last batch whose first row is <= row
    while lo < hi:
        mid = (lo + hi + 1) // 2
        first = _first_row(client, keys, cid, mid)
        if first is not None and first <= row:
            lo = mid
        else:
            hi = mid - 1
    if batches == 0:
        return None
    for idx, r in enumerate(_batch(client, keys, cid, lo)):
        if r.row == row:
            return Match(cid, lo, idx, row) if r.email.lower() == email else None
    return None


def _by_message_id(client: SyncRedis, keys: Keys, event: FeedbackEvent) -> Match | None:
    assert event.message_id is not None
    mid = event.message_id.strip("<>")
    # the days the message can have been sent on, newest first (on the Redis clock, as
    # the worker wrote them: the event's own time is the provider's clock)
    today = _today(client)
    pipe = client.pipeline(transaction=False)
    for back in range(ID_DAYS + 1):
        pipe.hget(keys.provider_ids(event.provider, today - back), mid)
    hit = next((v for v in pipe.execute() if v), None)
    if hit is None:
        return None
    batch_text, _, cid = as_text(hit).partition(":")
    batch_no = int(batch_text)
    for idx, r in enumerate(_batch(client, keys, cid, batch_no)):
        if r.email.lower() == event.recipient:
            return Match(cid, batch_no, idx, r.row)
    return None


def _today(client: SyncRedis) -> int:
    seconds, _ = client.time()
    return int(seconds) // 86400


@dataclass(slots=True)
class Tally:
    """What one webhook call did (also the answer's body)."""

    received: int = 0
    recorded: int = 0
    duplicate: int = 0
    ignored: int = 0
    unmatched: int = 0
    suppressed: int = 0
    #: (campaign, label) of new events that are their recipient's first of a kind
    firsts: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"received": self.received, "recorded": self.recorded,
                "duplicate": self.duplicate, "ignored": self.ignored,
                "unmatched": self.unmatched, "suppressed": self.suppressed}


def _short(event_id: str) -> str:
    return hashlib.sha256(event_id.encode()).hexdigest()[:16]


def record(client: SyncRedis, keys: Keys, events: Sequence[FeedbackEvent], *,
           source: str) -> Tally:
    """Match, dedupe and store ``events`` (verified already); suppress hard bounces and
    complaints with ``source`` (e.g. ``webhook:sendgrid``) plus the event's kind."""
    tally = Tally(received=len(events))
    suppression = SuppressionList(client, keys)
    for event in events:
        if event.type == "ignored":
            tally.ignored += 1
            continue
        match = locate(client, keys, event)
        seen = keys.event_seen(event.provider, _short(event.event_id))
        if match is None:
            args: tuple[str | int, ...] = (DEDUPE_TTL, "0", "", "", "")
            target = seen
        else:
            target = keys.recipient_events(match.campaign, match.batch)
            args = (DEDUPE_TTL, "1", f"{match.index}|{_short(event.event_id)}",
                    event.to_json(), f"{match.index}#{event.label}")
        outcome = int(run_sync(client, _record_op(seen, target, args)))
        if outcome == 0:
            tally.duplicate += 1
            continue
        tally.recorded += 1
        if match is None:
            tally.unmatched += 1
        elif outcome == 2:
            tally.firsts.append((match.campaign, event.label))
        if event.suppresses:
            what = "complaint" if event.type == "complained" else "bounce"
            reason = "complaint" if what == "complaint" else "hard_bounce"
            suppression.add(event.recipient, f"{reason}: {event.reason}".rstrip(": "),
                            source=f"{source}:{what}")
            tally.suppressed += 1
    return tally


def _record_op(seen: str, target: str, args: tuple[str | int, ...]) -> RedisOp[Any]:
    return (yield ScriptCall(_RECORD, (seen, target), args))


@dataclass(frozen=True, slots=True)
class RecipientEvents:
    """A recipient's provider events, as ``bulkmail events`` lists them."""

    row: int
    email: str
    events: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "email": self.email, "events": self.events}


_NAMES = {"t": "type", "s": "bounce", "p": "provider", "at": "at", "r": "reason",
          "id": "event_id", "m": "provider_id"}


def readable(raw: str) -> dict[str, Any]:
    """A stored event with its long field names."""
    return {_NAMES.get(k, k): v for k, v in json.loads(raw).items()}


def batch_events(pairs: Iterable[tuple[Any, Any]]) -> dict[int, list[dict[str, Any]]]:
    """The events of one batch's hash, by index, oldest first."""
    out: dict[int, list[dict[str, Any]]] = {}
    for f, v in pairs:
        name = as_text(f)
        idx, bar, _ = name.partition("|")
        if bar and idx.isdigit():
            out.setdefault(int(idx), []).append(readable(as_text(v)))
    for evs in out.values():
        evs.sort(key=lambda e: e.get("at") or 0)
    return out


def _matches(event: dict[str, Any], types: Collection[str] | None) -> bool:
    if types is None:
        return True
    label = f"{event['type']}/{event['bounce']}" if event.get("bounce") else event["type"]
    return event["type"] in types or label in types


def campaign_events(client: SyncRedis, keys: Keys, cid: str,
                    types: Collection[str] | None = None) -> Iterator[RecipientEvents]:
    """Every recipient of ``cid`` with provider events (of ``types``), in ledger order."""
    batches = int(client.hget(keys.campaign(cid), "batches") or 0)
    for batch_no in range(batches):
        raw = client.hgetall(keys.recipient_events(cid, batch_no))
        if not raw:
            continue
        by_index = batch_events(reply_pairs(raw))
        recipients = _batch(client, keys, cid, batch_no)
        for idx in sorted(by_index):
            evs = [e for e in by_index[idx] if _matches(e, types)]
            if evs and idx < len(recipients):
                yield RecipientEvents(recipients[idx].row, recipients[idx].email, evs)
