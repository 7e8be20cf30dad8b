"""The naive design, as a baseline for ``bench/e2e_smtp.py``: one Celery task per email.

Each task builds its message with the stdlib ``email.message.EmailMessage`` (text plus an
HTML alternative), opens a new SMTP connection with ``smtplib``, sends, quits, and counts
the message in Redis (the least a sender must record). This is what "send email from
Celery" looks like in most tutorials; bulkmail's decision 1 (docs/architecture.md) is measured
against it.

Run by the benchmark as ``celery -A naive_app worker -Q QUEUE -c 2`` with ``bench/`` on
``PYTHONPATH``. Configuration comes from the environment: ``NAIVE_BROKER_URL`` (the Redis
broker, also used for the counter) and ``NAIVE_COUNTER_KEY``.
"""

from __future__ import annotations

import os
import smtplib
from email.message import EmailMessage

import redis
from celery import Celery

__all__ = ["app", "send_one"]

BROKER = os.environ.get("NAIVE_BROKER_URL", "redis://127.0.0.1:6379/0")
COUNTER_KEY = os.environ.get("NAIVE_COUNTER_KEY", "bench-naive:sent")

app = Celery("naive", broker=BROKER)
# Celery's defaults otherwise (early ack, prefetch 4): the tutorial setup, not a straw man;
# results are ignored so no result backend is involved.
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=True)

_redis: redis.Redis[bytes] | None = None


def _counter() -> redis.Redis[bytes]:
    global _redis
    if _redis is None:  # one client per pool process, created after the fork
        _redis = redis.Redis.from_url(BROKER)
    return _redis


@app.task(name="naive.send_one", ignore_result=True)
def send_one(host: str, port: int, sender: str, to: str, subject: str, text: str,
             html: str) -> None:
    """Build one message and send it over a connection of its own."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    with smtplib.SMTP(host, port) as smtp:
        smtp.send_message(msg)
    _counter().incr(COUNTER_KEY)
