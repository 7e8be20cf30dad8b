"""A campaign's recipients, a page at a time, for ``GET /v1/campaigns/{id}/recipients``.

The cursor is opaque to clients. Inside it is ``i:<hscan cursor>`` while the rows
rejected at enqueue (the campaign's invalid hash) are listed, then ``b:<batch>:<index>``
through the batches in order. One page reads at most :data:`MAX_BATCHES` batches, so a
filter that matches little (``state=failed`` on a 1M-recipient campaign) answers quickly
with fewer entries and a cursor to go on; ``next_cursor`` is null after the last page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

import redis

from config.schema import Keys, State, decode_batch
from workers.feedback.store import batch_events
from workers.ledger import LedgerEntry
from workers.redis_ops import hscan_page, run_sync

__all__ = ["MAX_BATCHES", "recipients_page"]

#: batches read per page at most
MAX_BATCHES = 20
_BATCH_CURSOR = re.compile(r"b:(\d{1,12}):(\d{1,6})", re.ASCII)


def _parse(cursor: str) -> tuple[str, str, int, int]:
    kind, _, rest = cursor.partition(":")
    if kind == "i" and rest:
        return "i", rest, 0, 0
    m = _BATCH_CURSOR.fullmatch(cursor)
    if m:
        return "b", "", int(m.group(1)), int(m.group(2))
    raise ValueError(f"{cursor!r} is not a cursor returned by this listing")


def recipients_page(client: redis.Redis[bytes], keys: Keys, cid: str,
                    states: Collection[State] | None, cursor: str | None, limit: int
                    ) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` recipients of ``cid`` (those in ``states``, or all) as the
    ``status --list --json`` objects, and the cursor of the next page."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    wanted = set(states) if states is not None else None
    out: list[dict[str, Any]] = []
    batch_no = index = 0
    if cursor is None:
        kind, scan = ("i", "") if wanted is None or State.INVALID in wanted else ("b", "")
    else:
        kind, scan, batch_no, index = _parse(cursor)
    if kind == "i":
        pairs, nxt = run_sync(client, hscan_page(keys.invalid(cid), scan or None, limit))
        for row, raw in pairs:
            d = json.loads(raw)
            out.append(LedgerEntry(int(row), d.get("email", ""), State.INVALID, d).as_dict())
        if nxt is not None:
            return out, f"i:{nxt}"
        if wanted == {State.INVALID}:
            return out, None
        if len(out) >= limit:
            return out, "b:0:0"
    batches = int(client.hget(keys.campaign(cid), "batches") or 0)
    read = 0
    while batch_no < batches and read < MAX_BATCHES:
        pipe = client.pipeline(transaction=False)
        pipe.get(keys.batch(cid, batch_no))
        pipe.hgetall(keys.states(cid, batch_no))
        pipe.hgetall(keys.details(cid, batch_no))
        pipe.hgetall(keys.recipient_events(cid, batch_no))
        payload, states_raw, details_raw, events_raw = pipe.execute()
        events = batch_events(events_raw.items())
        read += 1
        recipients = decode_batch(payload) if payload else []
        for idx in range(index, len(recipients)):
            st = State(states_raw.get(str(idx).encode(), b"q").decode())
            if wanted is not None and st not in wanted:
                continue
            raw_detail = details_raw.get(str(idx).encode())
            r = recipients[idx]
            out.append(LedgerEntry(r.row, r.email, st,
                                   json.loads(raw_detail) if raw_detail else {}).as_dict())
            if idx in events:  # provider webhook events (workers.feedback)
                out[-1]["events"] = events[idx]
            if len(out) == limit:
                return out, f"b:{batch_no}:{idx + 1}"
        batch_no, index = batch_no + 1, 0
    return out, (f"b:{batch_no}:0" if batch_no < batches else None)
