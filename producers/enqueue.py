"""Enqueue: stream a recipient file into the ledger and the provider's queue.

Rows are read in bounded chunks; each chunk is deduplicated against a set in Redis,
written to the ledger in one MULTI (batches, states, invalid rows, progress), and then
its batch tasks are published pipelined. The producer's memory is one chunk, whatever the
length of the list.

Idempotent: a campaign id that is fully enqueued is never enqueued again, and one whose
producer died half-way is resumed from the last written chunk (its unpublished batches are
published again; a batch published twice is harmless, the worker skips sent recipients).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import redis
from celery import Celery

from config.schema import CampaignSpec, Recipient
from config.settings import Settings
from producers.campaign import header_variables
from producers.recipients import InvalidRow, read_recipients
from workers.errors import InputError
from workers.ledger import Ledger
from workers.publish import publish_batches
from workers.tasks import task_id

__all__ = ["EnqueueResult", "enqueue_campaign"]

#: valid rows per chunk (ten batches of the default size)
CHUNK_ROWS = 5000
#: a chunk is also written when this many rows (valid or not) are buffered
MAX_BUFFERED = 20000


@dataclass(slots=True)
class EnqueueResult:
    campaign_id: str
    created: bool
    resumed: bool = False
    rows: int = 0
    queued: int = 0
    invalid: int = 0
    batches: int = 0
    seconds: float = 0.0


def enqueue_campaign(
    settings: Settings,
    app: Celery,
    client: redis.Redis[bytes],
    spec: CampaignSpec,
    recipients: str | Path,
    *,
    on_progress: Callable[[EnqueueResult], None] | None = None,
) -> EnqueueResult:
    """Enqueue ``spec`` for the rows of ``recipients``. See the module docstring."""
    started = time.perf_counter()
    ledger = Ledger(client, settings.keys)
    rows = read_recipients(recipients, header_fields=header_variables(spec))
    # Read the first row before writing anything: a file-level problem (no 'email'
    # column, undecodable header) must fail the send with nothing half-enqueued.
    first_row = next(rows, None)
    if first_row is not None:
        rows = itertools.chain([first_row], rows)
    result = EnqueueResult(spec.id, created=ledger.create_campaign(spec, source=str(recipients)))
    start_row = 0
    if not result.created:
        existing = ledger.spec(spec.id)
        if existing is not None and existing != spec:
            raise InputError(f"campaign id {spec.id!r} already exists with a different "
                             "definition; pick another id")
        record = ledger.record(spec.id)
        result.rows = int(record.get("rows", 0))
        result.batches = int(record.get("batches", 0))
        if record.get("enqueued") == "1":
            return result  # already complete: enqueue nothing twice
        result.resumed = True
        start_row = result.rows
        published = int(record.get("published", 0))
        publish_batches(app, spec.provider,
                        [(spec.id, b, task_id(spec.id, b)) for b in range(published,
                                                                          result.batches)])
        ledger.mark_published(spec.id, result.batches)

    buffer: list[Recipient | InvalidRow] = []
    valid = 0
    for item in rows:
        if item.row <= start_row:
            continue
        buffer.append(item)
        if isinstance(item, Recipient):
            valid += 1
        if valid >= CHUNK_ROWS or len(buffer) >= MAX_BUFFERED:
            _flush(settings, app, client, ledger, spec, buffer, result)
            if on_progress:
                on_progress(result)
            buffer, valid = [], 0
    if buffer:
        _flush(settings, app, client, ledger, spec, buffer, result)
    ledger.mark_enqueued(spec.id)
    client.delete(settings.keys.seen(spec.id))
    result.seconds = time.perf_counter() - started
    if on_progress:
        on_progress(result)
    return result


def _dedupe(client: redis.Redis[bytes], key: str, items: Iterable[Recipient | InvalidRow]
            ) -> tuple[list[Recipient], list[tuple[int, str, str]]]:
    valid = [r for r in items if isinstance(r, Recipient)]
    invalid = [(r.row, r.email, r.reason) for r in items if isinstance(r, InvalidRow)]
    pipe = client.pipeline(transaction=False)
    for r in valid:
        pipe.hsetnx(key, r.email.lower(), r.row)
    fresh = pipe.execute()
    dups = [r for r, new in zip(valid, fresh, strict=True) if not new]
    if dups:
        first_rows = client.hmget(key, [r.email.lower() for r in dups])
        for r, first in zip(dups, first_rows, strict=True):
            first_row = int(first) if first is not None else 0
            if first_row == r.row:
                continue  # our own entry from a resumed run: not a duplicate
            invalid.append((r.row, r.email, f"duplicate of row {first_row}"))
        dup_rows = {row for row, _, _ in invalid}
        valid = [r for r in valid if r.row not in dup_rows]
    return valid, invalid


def _flush(settings: Settings, app: Celery, client: redis.Redis[bytes], ledger: Ledger,
           spec: CampaignSpec, buffer: list[Recipient | InvalidRow],
           result: EnqueueResult) -> None:
    valid, invalid = _dedupe(client, settings.keys.seen(spec.id), buffer)
    size = spec.batch_size
    first = result.batches
    batches = [(first + i, valid[j:j + size]) for i, j in enumerate(range(0, len(valid), size))]
    rows_read = buffer[-1].row
    pipe = client.pipeline(transaction=True)
    ledger.queue_writes(pipe, spec.id, batches, invalid, rows_read)
    pipe.execute()
    result.rows = rows_read
    result.queued += len(valid)
    result.invalid += len(invalid)
    if batches:
        result.batches = batches[-1][0] + 1
        publish_batches(app, spec.provider,
                        [(spec.id, b, task_id(spec.id, b)) for b, _ in batches])
        ledger.mark_published(spec.id, result.batches)
