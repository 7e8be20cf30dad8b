"""The retry pump: moves batches whose retry time has come back onto their queue.

Runs as a daemon thread in every worker's main process (not in the pool children). Any
number of pumps may run across machines at once: the claim in ``RetryQueue.pump`` is
atomic, so each due batch is published by exactly one of them, and a claim that is not
acknowledged (the process died between claim and publish) returns to the queue.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from celery import Celery

from config.schema import QUEUE_PREFIX, parse_retry_member, retry_task_id
from config.settings import Settings
from workers.heartbeat import beat, node_name
from workers.publish import publish_batches
from workers.retry import RetryQueue

__all__ = ["pump_once", "start_pump_thread"]

log = logging.getLogger("bulkmail.pump")

INTERVAL = 1.0
LIMIT = 200


def pump_once(app: Celery, client: redis.Redis[bytes], settings: Settings, provider: str,
              *, now: float | None = None) -> int:
    """Publish every due batch of ``provider`` (at most ``LIMIT``); returns how many.

    A member that names no batch (see :func:`~config.schema.parse_retry_member`) is
    logged and dropped.
    """
    queue = RetryQueue(client, settings.keys, provider)
    members = queue.pump(now=now, limit=LIMIT)
    if not members:
        return 0
    stamp = int(time.time() * 1000)
    tasks = []
    for member in members:
        try:
            cid, batch_no = parse_retry_member(member)
        except ValueError as exc:
            # not written by bulkmail: drop it (acked below) rather than fail the whole
            # round, which would keep every other due batch of the provider waiting
            log.error("retry queue of %s: dropped a member that names no batch: %s",
                      provider, exc)
            continue
        tasks.append((cid, batch_no, retry_task_id(cid, batch_no, stamp)))
    publish_batches(app, provider, tasks)
    queue.ack(members)
    return len(tasks)


def start_pump_thread(app: Celery, settings: Settings, queues: list[str]
                      ) -> threading.Thread | None:
    """Pump the retry queues of the providers behind ``queues`` every ``INTERVAL`` s, in a
    daemon thread; None when no queue is a provider's."""
    providers = [q[len(QUEUE_PREFIX):] for q in queues if q.startswith(QUEUE_PREFIX)]
    if not providers:
        return None

    def loop() -> None:
        client = redis.Redis.from_url(settings.redis_url)
        node = node_name()
        while True:
            try:
                beat(client, settings.keys, providers, node)  # for GET /readyz
            except Exception:
                log.exception("heartbeat failed; trying again")
            for provider in providers:
                try:
                    moved = pump_once(app, client, settings, provider)
                    if moved:
                        log.info("retry pump: %d batch(es) of %s back on the queue",
                                 moved, provider)
                except Exception:  # keep pumping through a Redis blip
                    log.exception("retry pump for %s failed; trying again", provider)
            time.sleep(INTERVAL)

    thread = threading.Thread(target=loop, name="bulkmail-retry-pump", daemon=True)
    thread.start()
    return thread
