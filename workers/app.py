"""The Celery app, built by :func:`create_app` from :class:`~config.settings.Settings`.

``celery -A workers.app worker -Q bulkmail.NAME`` (and ``celery -A workers.app flower``)
works as well as ``bulkmail worker --provider NAME``: the module attribute ``app`` is
built from the environment the first time it is used, and only then. Importing this
module (or any other bulkmail module) reads no environment; the CLI and ``Bulkmail()``
build their settings once and pass them down.

The ledger, not Celery, is the source of truth: no result backend is used, tasks are
acknowledged late and rejected back to the queue when a worker process dies, and one
prefetched task per process keeps a crash from stranding more than one batch.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, current_app
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready

from config.settings import Settings

__all__ = ["BulkmailApp", "create_app", "settings_of"]


class BulkmailApp(Celery):
    """A Celery app that knows the :class:`Settings` it was built from."""

    settings: Settings


def create_app(settings: Settings) -> BulkmailApp:
    """A Celery app for ``settings``: broker, reliability options, and the batch task.

    The task (``bulkmail.send_batch``) is a shared task in :mod:`workers.tasks`, which a
    worker imports at start (``include``); producers publish it by name and never need
    the delivery code imported.
    """
    app = BulkmailApp("bulkmail", broker=settings.broker, include=["workers.tasks"])
    app.settings = settings
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
    return app


def settings_of(app: Celery) -> Settings | None:
    """The settings a :func:`create_app` app was built from; None for any other app."""
    return app.settings if isinstance(app, BulkmailApp) else None


def __getattr__(name: str) -> Any:
    # `celery -A workers.app` looks up `workers.app.app`: build it from the environment
    # on that first use (never at import) and keep it for later lookups.
    if name == "app":
        built = create_app(Settings.from_env())
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# httpx logs every request at INFO: one line per message on per-message APIs (SES).
logging.getLogger("httpx").setLevel(logging.WARNING)


@worker_process_init.connect
def _start_process_loop(**_: Any) -> None:
    # One long-lived event loop per pool process, created after the fork so no socket
    # or loop state is shared with the parent. The pool process's current app is the
    # worker's app.
    settings = settings_of(current_app)  # the proxy passes isinstance through
    if settings is None:
        return  # a worker of some other Celery app that imported this module
    from workers.runtime import Runtime

    Runtime.start(settings)


@worker_process_shutdown.connect
def _stop_process_loop(**_: Any) -> None:
    from workers.runtime import Runtime

    Runtime.stop()


@worker_ready.connect
def _start_retry_pump(sender: Any = None, **_: Any) -> None:
    # The parent worker process moves due retries back onto the queues it consumes.
    app = getattr(sender, "app", None)
    settings = settings_of(app) if isinstance(app, Celery) else None
    if app is None or settings is None:
        return
    from workers.pump import start_pump_thread

    queues = [q.name for q in app.amqp.queues.consume_from.values()]
    start_pump_thread(app, settings, queues)
