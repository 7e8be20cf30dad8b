"""Operator actions that send failed recipients again: ``retry-failed`` and ``dlq requeue``.

Both move recipients from ``failed`` back to ``queued`` in the ledger and publish their
batches. Nobody already ``sent`` can be reached twice: the worker skips final states.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

import redis
from celery import Celery

from config.errors import CampaignNotFoundError
from config.schema import check_id, requeue_task_id
from config.settings import Settings
from workers.deadletter import DeadLetter, DeadLetters
from workers.ledger import Ledger
from workers.publish import publish_batches

__all__ = ["requeue_dead_letters", "retry_failed"]


def _publish(app: Celery, provider: str, cid: str, batches: Iterable[int]) -> int:
    stamp = int(time.time() * 1000)
    return publish_batches(app, provider, [(cid, b, requeue_task_id(cid, b, stamp))
                                           for b in batches])


def retry_failed(settings: Settings, app: Celery, client: redis.Redis[bytes], cid: str
                 ) -> tuple[int, int]:
    """Send campaign ``cid`` again to its failed recipients only.

    Returns ``(recipients requeued, batches published)``; their dead letters are cleared.
    Raises :class:`CampaignNotFoundError` for an unknown id.
    """
    ledger = Ledger(client, settings.keys)
    spec = ledger.spec(check_id(cid))
    if spec is None:
        raise CampaignNotFoundError(cid)
    before = ledger.status(cid)
    batches = ledger.requeue_failed(cid)
    after = ledger.status(cid)
    assert before is not None and after is not None
    dlq = DeadLetters(client, settings.keys)
    letters = _all_letters(dlq, cid)
    dlq.remove(letters)
    return before.counts["failed"] - after.counts["failed"], _publish(app, spec.provider, cid,
                                                                       batches)


def _all_letters(dlq: DeadLetters, cid: str | None) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    cursor: str | None = None
    while True:
        page = dlq.list(cid, limit=1000, cursor=cursor)
        out.extend(page.entries)
        cursor = page.next_cursor
        if cursor is None:
            return out


def requeue_dead_letters(settings: Settings, app: Celery, client: redis.Redis[bytes], *,
                         campaign_id: str | None = None, reason: str | None = None
                         ) -> tuple[int, int]:
    """Requeue dead letters (of one campaign, or whose reply contains ``reason``).

    Returns ``(recipients requeued, batches published)``.
    """
    if campaign_id is not None:
        check_id(campaign_id)
    dlq = DeadLetters(client, settings.keys)
    letters = [d for d in _all_letters(dlq, campaign_id)
               if reason is None or reason.lower() in d.reply.lower()]
    by_campaign: dict[str, list[DeadLetter]] = defaultdict(list)
    for d in letters:
        by_campaign[d.campaign_id].append(d)
    ledger = Ledger(client, settings.keys)
    requeued = published = 0
    for cid, group in by_campaign.items():
        spec = ledger.spec(cid)
        if spec is None:
            continue
        before = ledger.status(cid)
        batches = ledger.requeue_failed(cid, {d.row for d in group})
        after = ledger.status(cid)
        assert before is not None and after is not None
        requeued += before.counts["failed"] - after.counts["failed"]
        published += _publish(app, spec.provider, cid, batches)
        dlq.remove(group)
    return requeued, published
