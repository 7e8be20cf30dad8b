"""Putting batch tasks on a provider's queue, pipelined (kombu ``Producer.batch``)."""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery

from config.schema import queue_name

__all__ = ["TASK_NAME", "publish_batches"]

TASK_NAME = "bulkmail.send_batch"


def publish_batches(app: Celery, provider: str, batches: Iterable[tuple[str, int, str]]) -> int:
    """Publish ``(campaign_id, batch_no, task_id)`` tasks; returns how many.

    Task ids are chosen by the caller so that they are deterministic (``cid:batch``) for
    the first send. ``argsrepr`` keeps Flower's view to a short summary.
    """
    queue = queue_name(provider)
    count = 0
    with app.producer_or_acquire() as producer, producer.batch():
        for cid, batch_no, tid in batches:
            app.send_task(
                TASK_NAME,
                args=(cid, batch_no),
                task_id=tid,
                queue=queue,
                routing_key=queue,
                producer=producer,
                argsrepr=f"campaign={cid} batch={batch_no}",
            )
            count += 1
    return count
