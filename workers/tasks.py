"""Celery tasks. One task = one batch of one campaign on one provider queue.

Arguments are only ids (campaign, batch number): recipients, templates and secrets stay
in Redis and the providers file, so what Flower shows is short and safe. Task ids are
built in :mod:`config.schema` (:func:`~config.schema.task_id` and its resend forms).

The task is a shared task: it belongs to every app :func:`workers.app.create_app` builds,
and importing this module creates no app and reads no environment.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import shared_task
from celery.exceptions import Reject

from config.errors import RedisUnavailableError
from config.schema import is_valid_id
from workers.app import settings_of
from workers.delivery import ERROR_RETRY, park_after_error, run_batch
from workers.publish import TASK_NAME
from workers.runtime import Runtime

__all__ = ["send_batch"]

log = logging.getLogger("bulkmail.tasks")


@shared_task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True)
def send_batch(self: Any, campaign_id: str, batch_no: int) -> str:
    """Send one batch; the outcome of every recipient is in the ledger."""
    if not is_valid_id(campaign_id) or type(batch_no) is not int or batch_no < 0:
        # not published by bulkmail (whoever can write the broker can write anything):
        # an id outside the rule could name another campaign's keys
        log.error("refused a task that names no batch: campaign=%r batch=%r",
                  campaign_id, batch_no)
        return "refused"
    # Pool processes started their runtime in worker_process_init; under --pool solo
    # (no pool process) this is the first use, made with the app's own settings.
    Runtime.start(settings_of(self.app))
    try:
        report = run_batch(campaign_id, batch_no)
    except (redis.RedisError, RedisUnavailableError) as exc:
        # Redis is the ledger: without it nothing can be recorded. Give the message back
        # to the broker rather than acknowledging a batch that did not run.
        log.error("campaign=%s batch=%s: Redis failed (%s); batch returned to the queue",
                  campaign_id, batch_no, exc)
        raise Reject(exc, requeue=True) from exc
    except Exception:
        # acks_late acknowledges a task that raises: without this the batch would be gone
        # and its recipients left queued for ever.
        parked = park_after_error(campaign_id, batch_no)
        log.exception("campaign=%s batch=%s failed unexpectedly; %s", campaign_id, batch_no,
                      f"it is retried in {ERROR_RETRY:.0f}s" if parked else
                      "the campaign no longer exists")
        return "error"
    log.info("%s", report)
    for note in report.notes:
        log.warning("%s", note)
    return str(report)
