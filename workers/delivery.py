"""Sending one batch: the worker's whole job, as one coroutine on the process loop.

1. take the batch lock (a redelivered copy of a batch still being sent backs off);
2. read the batch's recipients that are not final yet (already ``sent`` = never again);
3. skip suppressed addresses, render, build MIME when the provider wants it;
4. per chunk: take tokens from the cluster-wide buckets, send, and write the outcomes to
   the ledger at once (so a crash can duplicate only what was in flight);
5. deferred recipients put the batch on the provider's retry queue for their due time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from config.schema import State
from workers.deadletter import AsyncDeadLetters
from workers.errors import ProviderAuthError, TemplateError, TransientDeliveryError
from workers.ledger import AsyncLedger, Update, detail_json
from workers.outcomes import Outcomes, decide
from workers.providers.base import OutgoingMessage, SendResult
from workers.retry import AsyncRetryQueue
from workers.runtime import Runtime
from workers.suppression import AsyncSuppressionList
from workers.templates import CompiledCampaign

__all__ = ["BatchReport", "deliver_batch", "retry_member"]

log = logging.getLogger("bulkmail.delivery")

#: extra wait after another worker's batch lock expires before looking again
LOCKED_SLACK = 1.0
#: how long to park a batch whose provider rejected our credentials
AUTH_RETRY = 60.0


def retry_member(cid: str, batch_no: int) -> str:
    """The retry-queue member naming a batch."""
    return f"{cid}:{batch_no}"


@dataclass(slots=True)
class BatchReport:
    """What one run of a batch did (also the task's log line)."""

    campaign: str
    batch: int
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    suppressed: int = 0
    skipped: str = ""
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.skipped:
            return f"campaign={self.campaign} batch={self.batch} skipped: {self.skipped}"
        return (f"campaign={self.campaign} batch={self.batch} sent={self.sent} "
                f"failed={self.failed} deferred={self.deferred} suppressed={self.suppressed}")


_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"


async def _release_lock(rt: Runtime, key: str) -> None:
    # Delete only our own lock: after a long stall another worker may hold it now.
    await rt.redis.register_script(_RELEASE)(keys=[key], args=[rt.worker_id])


async def deliver_batch(rt: Runtime, cid: str, batch_no: int) -> BatchReport:
    """Send every recipient of batch ``batch_no`` of campaign ``cid`` that still needs it."""
    keys = rt.settings.keys
    report = BatchReport(cid, batch_no)
    spec_json = await rt.redis.hget(keys.campaign(cid), "spec")
    if spec_json is None:
        report.skipped = "unknown campaign (deleted?)"
        return report
    compiled = rt.campaign(cid, spec_json.decode())
    provider_name = compiled.spec.provider
    retry = AsyncRetryQueue(rt.redis, keys, provider_name)

    lock = keys.batch_lock(cid, batch_no)
    ttl = rt.settings.batch_lock_ttl
    if not await rt.redis.set(lock, rt.worker_id, nx=True, ex=ttl):
        # Another worker is sending this batch (or died doing so: its lock expires within
        # the TTL because nobody renews it). Look again once the lock is due to lapse.
        remaining = max(int(await rt.redis.pttl(lock)), 0) / 1000
        await retry.schedule(retry_member(cid, batch_no),
                             time.time() + remaining + LOCKED_SLACK, only_if_earlier=True)
        report.skipped = f"another worker holds this batch; looking again in {remaining:.0f}s"
        return report
    renewer = asyncio.ensure_future(_renew_lock(rt, lock, ttl))
    try:
        await _deliver_locked(rt, cid, batch_no, compiled, retry, report)
    finally:
        renewer.cancel()
        await _release_lock(rt, lock)
    return report


async def _renew_lock(rt: Runtime, key: str, ttl: int) -> None:
    # Keep a short TTL (a killed worker frees the batch quickly) however long the batch
    # runs: renew at a third of it while this coroutine's batch is alive.
    while True:
        await asyncio.sleep(ttl / 3)
        await rt.redis.expire(key, ttl)


async def _deliver_locked(rt: Runtime, cid: str, batch_no: int, compiled: CompiledCampaign,
                          retry: AsyncRetryQueue, report: BatchReport) -> None:
    keys = rt.settings.keys
    spec = compiled.spec
    cfg = rt.provider_configs[spec.provider]
    provider = rt.provider(spec.provider)
    ledger = AsyncLedger(rt.redis, keys)
    suppression = AsyncSuppressionList(rt.redis, keys)

    todo, details = await ledger.pending(cid, batch_no)
    if not todo:
        report.skipped = "nothing left to send"
        return
    now = time.time()

    # Deferred recipients wait for their own due time even when the batch comes back
    # earlier (it is scheduled for the earliest of them).
    later = [float(details[i]["n"]) for i, _ in todo
             if i in details and float(details[i].get("n", 0)) > now + 1]
    todo = [(i, r) for i, r in todo
            if not (i in details and float(details[i].get("n", 0)) > now + 1)]
    if later:
        await retry.schedule(retry_member(cid, batch_no), min(later), only_if_earlier=True)

    suppressed = await suppression.filter_many([r.email for _, r in todo])
    updates: list[Update] = []
    messages: list[OutgoingMessage] = []
    index_of: dict[int, int] = {}
    email_of: dict[int, str] = {}
    for idx, rec in todo:
        if rec.email in suppressed:
            updates.append(Update(idx, State.SUPPRESSED, detail_json(r="on the suppression list")))
            report.suppressed += 1
            continue
        try:
            msg = compiled.render(rec)
            if provider.wants_mime:
                msg.mime = compiled.build_mime(msg)
        except TemplateError as exc:
            updates.append(Update(idx, State.FAILED, detail_json(r=str(exc), k="template")))
            report.failed += 1
            continue
        messages.append(msg)
        index_of[rec.row] = idx
        email_of[rec.row] = rec.email
    await ledger.update(cid, batch_no, updates)

    chunk_size = provider.chunk_size
    chunks = [messages[i:i + chunk_size] for i in range(0, len(messages), chunk_size)]
    next_due: float | None = None
    for n, chunk in enumerate(chunks):
        try:
            results = await provider.send(chunk)
        except ProviderAuthError as exc:
            await _provider_down(rt, spec.provider, exc)
            if exc.results:  # accepted before the rejection: record them, never resend
                done = decide(exc.results, index_of=index_of, email_of=email_of,
                              details=details, cfg=cfg, now=time.time(), campaign_id=cid,
                              provider=spec.provider)
                await _record(rt, cid, batch_no, ledger, suppression, done)
                report.sent += done.sent
            handled = {r.row for r in exc.results}
            rest = [m for c in chunks[n:] for m in c if m.row not in handled]
            report.notes.append(f"provider {spec.provider!r} rejected our credentials: "
                                f"{exc.describe()}; {len(rest)} recipients wait")
            next_due = _earliest(next_due, time.time() + AUTH_RETRY)
            break
        except TransientDeliveryError as exc:
            results = [SendResult(m.row, error=exc) for m in chunk]
        outcome = decide(results, index_of=index_of, email_of=email_of, details=details,
                         cfg=cfg, now=time.time(), campaign_id=cid, provider=spec.provider)
        await _record(rt, cid, batch_no, ledger, suppression, outcome)
        report.sent += outcome.sent
        report.failed += outcome.failed
        report.deferred += outcome.deferred
        if outcome.next_due is not None:
            next_due = _earliest(next_due, outcome.next_due)
    if next_due is not None:
        await retry.schedule(retry_member(cid, batch_no), next_due, only_if_earlier=True)


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


async def _record(rt: Runtime, cid: str, batch_no: int, ledger: AsyncLedger,
                  suppression: AsyncSuppressionList, outcome: Outcomes) -> None:
    await ledger.update(cid, batch_no, outcome.updates)
    for address, reply in outcome.suppress:
        await suppression.add(address, reason=reply, source=f"bounce:{cid}")
    if outcome.dead_letters:
        await AsyncDeadLetters(rt.redis, rt.settings.keys).record_many(outcome.dead_letters)


async def _provider_down(rt: Runtime, provider: str, exc: ProviderAuthError) -> None:
    log.error("provider %s rejected our credentials (%s); its batches are parked and "
              "retried every %.0fs until the key is fixed", provider, exc.describe(), AUTH_RETRY)
    await rt.redis.hset(rt.settings.keys.provider_state(provider), mapping={
        "auth_error": exc.describe(), "auth_error_at": time.time()})


def run_batch(cid: str, batch_no: int) -> BatchReport:
    """Synchronous entry point used by the Celery task."""
    rt = Runtime.get()
    return rt.run(deliver_batch(rt, cid, batch_no))

