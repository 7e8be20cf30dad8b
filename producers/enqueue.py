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

import contextlib
import gc
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from config.errors import InputError
from config.schema import CampaignSpec, Recipient, task_id
from config.settings import Settings
from producers.campaign import header_variables
from producers.recipients import InvalidRow, ReaderLimits, check_rows, read_recipients
from workers.ledger import Ledger
from workers.publish import publish_batches
from workers.redis_ops import LuaScript, run_sync, script

__all__ = ["EnqueueResult", "enqueue_campaign"]

#: valid rows per chunk (ten batches of the default size)
CHUNK_ROWS = 5000
#: a chunk is also written when this many rows (valid or not) are buffered
MAX_BUFFERED = 20000

_DEDUPE = LuaScript.load("dedupe.lua")


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
    recipients: str | Path | Iterable[Mapping[str, Any]],
    *,
    on_progress: Callable[[EnqueueResult], None] | None = None,
) -> EnqueueResult:
    """Enqueue ``spec`` for ``recipients``: a ``.csv``/``.jsonl`` file, or rows given
    in-process (dicts with an ``email`` key). See the module docstring."""
    started = time.perf_counter()
    ledger = Ledger(client, settings.keys)
    header_fields = header_variables(spec)
    if isinstance(recipients, str | Path):
        # A CSV's structure is checked here, before anything is written or published.
        limits = ReaderLimits(max_field_bytes=settings.max_field_bytes,
                              max_row_lines=settings.max_row_lines)
        rows = read_recipients(recipients, header_fields=header_fields, limits=limits)
        source = str(recipients)
    else:
        rows = check_rows(recipients, header_fields=header_fields)
        source = "api"
    # Read the first row before writing anything: a file-level problem (no 'email'
    # column, undecodable header) must fail the send with nothing half-enqueued.
    first_row = next(rows, None)
    if first_row is not None:
        rows = itertools.chain([first_row], rows)
    result = EnqueueResult(spec.id, created=ledger.create_campaign(spec, source=source))
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
    with _gc_frozen():
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


@contextlib.contextmanager
def _gc_frozen() -> Iterator[None]:
    """Keep the cyclic collector off the objects that exist before the rows stream.

    Every row allocates a few objects and a chunk lives long enough to reach the oldest
    generation, so full collections keep coming, and each walks the whole import-time heap
    (Celery, kombu, redis-py ...) although none of it is garbage: about 0.7 us a row at 1M
    rows. ``gc.freeze`` makes the collector skip what exists now; ``unfreeze`` hands it
    back. Left alone when something else (the host application, a concurrent call) has
    frozen objects already: that freeze is not ours to undo.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _dedupe(client: redis.Redis[bytes], key: str, items: Iterable[Recipient | InvalidRow]
            ) -> tuple[list[Recipient], list[tuple[int, str, str]]]:
    """Split a chunk into the rows to send and the invalid ones (duplicates included).

    One script call a chunk (``workers/lua/dedupe.lua``): HSETNX of every address's
    :func:`~config.addresses.address_key` with its row; a row whose address was seen at
    another row is a "duplicate of row N". A resumed run's own earlier entries (same row)
    are not duplicates.
    """
    valid: list[Recipient] = []
    invalid: list[tuple[int, str, str]] = []
    for r in items:
        if isinstance(r, Recipient):
            valid.append(r)
        else:
            invalid.append((r.row, r.email, r.reason))
    if not valid:
        return valid, invalid
    # Addresses are never empty and never hold "\n" (check_address), the separator.
    # They are canonical already (check_address), so lower() is their address_key.
    reply = run_sync(client, script(_DEDUPE, [key], [
        "\n".join([r.email.lower() for r in valid]),
        "\n".join([str(r.row) for r in valid]),
    ]))
    if reply:
        dup_at: set[int] = set()
        for pos, first_row in zip(reply[::2], reply[1::2], strict=True):
            at = int(pos) - 1
            r = valid[at]
            invalid.append((r.row, r.email, f"duplicate of row {int(first_row)}"))
            dup_at.add(at)
        valid = [r for i, r in enumerate(valid) if i not in dup_at]
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
