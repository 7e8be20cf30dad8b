"""Celery tasks. One task = one batch of one campaign on one provider queue.

Arguments are only ids (campaign, batch number): recipients, templates and secrets stay
in Redis and the providers file, so what Flower shows is short and safe.
"""

from __future__ import annotations

import logging

from workers.app import app
from workers.delivery import run_batch

__all__ = ["send_batch", "task_id"]

log = logging.getLogger("bulkmail.tasks")


def task_id(cid: str, batch_no: int, attempt: int = 0) -> str:
    """Deterministic: the same batch enqueued twice has the same first task id."""
    return f"{cid}:{batch_no}" if attempt == 0 else f"{cid}:{batch_no}:r{attempt}"


@app.task(name="bulkmail.send_batch", acks_late=True, reject_on_worker_lost=True,
          ignore_result=True)
def send_batch(campaign_id: str, batch_no: int) -> str:
    """Send one batch; the outcome of every recipient is in the ledger."""
    report = run_batch(campaign_id, batch_no)
    log.info("%s", report)
    for note in report.notes:
        log.warning("%s", note)
    return str(report)
