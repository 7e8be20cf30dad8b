"""Celery tasks. One task = one batch of one campaign on one provider queue.

Arguments are only ids (campaign, batch number): recipients, templates and secrets stay
in Redis and the providers file, so what Flower shows is short and safe.
"""

from __future__ import annotations

import logging

import redis
from celery.exceptions import Reject

from workers.app import app
from workers.delivery import ERROR_RETRY, park_after_error, run_batch
from workers.errors import RedisUnavailableError

__all__ = ["send_batch", "task_id"]

log = logging.getLogger("bulkmail.tasks")


def task_id(cid: str, batch_no: int, attempt: int = 0) -> str:
    """Deterministic: the same batch enqueued twice has the same first task id."""
    return f"{cid}:{batch_no}" if attempt == 0 else f"{cid}:{batch_no}:r{attempt}"


@app.task(name="bulkmail.send_batch", acks_late=True, reject_on_worker_lost=True,
          ignore_result=True)
def send_batch(campaign_id: str, batch_no: int) -> str:
    """Send one batch; the outcome of every recipient is in the ledger."""
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
