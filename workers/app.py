"""The Celery app. ``celery -A workers.app worker -Q bulkmail.NAME`` works as well as
``bulkmail worker --provider NAME``.

The ledger, not Celery, is the source of truth: no result backend is used, tasks are
acknowledged late and rejected back to the queue when a worker process dies, and one
prefetched task per process keeps a crash from stranding more than one batch.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready

from config.settings import Settings

__all__ = ["app", "settings"]

settings = Settings()

app = Celery("bulkmail", broker=settings.broker, include=["workers.tasks"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    result_backend=None,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_create_missing_queues=True,
    # Flower: workers and tasks visible as they happen
    worker_send_task_events=True,
    task_send_sent_event=True,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": settings.visibility_timeout,
        # kombu sweeps for messages of dead workers only every interval x throttle
        # seconds (about 100 s by default): look every 10 s so a lost machine's batches
        # come back soon after the visibility timeout
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
    },
    worker_hijack_root_logger=False,
    # a batch is never retried by Celery itself: retries live in Redis (workers/retry.py)
    task_default_retry_delay=0,
)


# httpx logs every request at INFO: one line per message on per-message APIs (SES).
logging.getLogger("httpx").setLevel(logging.WARNING)


@worker_process_init.connect
def _start_process_loop(**_: Any) -> None:
    # One long-lived event loop per pool process, created after the fork so no socket
    # or loop state is shared with the parent.
    from workers.runtime import Runtime

    Runtime.start()


@worker_process_shutdown.connect
def _stop_process_loop(**_: Any) -> None:
    from workers.runtime import Runtime

    Runtime.stop()


@worker_ready.connect
def _start_retry_pump(sender: Any = None, **_: Any) -> None:
    # The parent worker process moves due retries back onto the queues it consumes.
    from workers.pump import start_pump_thread

    queues = [q.name for q in sender.app.amqp.queues.consume_from.values()] if sender else []
    start_pump_thread(app, queues)
