"""Sending one batch: the worker's whole job, as one coroutine on the process loop.

1. take the batch lock (a redelivered copy of a batch still being sent backs off);
2. read the batch's recipients that are not final yet (already ``sent`` = never again);
3. skip suppressed addresses, render, build MIME when the provider wants it;
4. per chunk: take tokens from the cluster-wide buckets, send, and write the outcomes to
   the ledger at once (so a crash can duplicate only what was in flight);
5. deferred recipients put the batch on the provider's retry queue for their due time.

Times written to Redis (due times, first/next attempt in the ledger) are on the Redis
server's clock: read once per batch and advanced by the local monotonic clock
(:class:`BatchClock`); the retry queue is given delays, never local timestamps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from config.addresses import canonical_domain
from config.errors import ProviderAuthError, TemplateError, TransientDeliveryError
from config.providers import ProviderConfig
from config.schema import State, retry_member
from workers.batchlock import BatchLock
from workers.deadletter import AsyncDeadLetters
from workers.feedback.store import index_accepted
from workers.ledger import AsyncLedger, Update, detail_json
from workers.outcomes import Outcomes, decide
from workers.pause import chunk_gate
from workers.provider_state import ProviderState
from workers.providers.base import OutgoingMessage, Provider, SendResult
from workers.ratelimit import plan_rest
from workers.redis_ops import run_async, server_time
from workers.retry import AsyncRetryQueue
from workers.runtime import Runtime
from workers.suppression import AsyncSuppressionList
from workers.templates import CompiledCampaign

__all__ = [
    "BatchClock",
    "BatchReport",
    "deliver_batch",
    "domain_of",
    "park_after_error",
    "park_batch",
    "run_batch",
]

log = logging.getLogger("bulkmail.delivery")

#: extra wait after another worker's batch lock expires before looking again
LOCKED_SLACK = 1.0
#: how long to park a batch whose provider rejected our credentials
AUTH_RETRY = 60.0


@dataclass(slots=True)
class BatchReport:
    """What one run of a batch did (also the task's log line)."""

    campaign: str
    batch: int
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    suppressed: int = 0
    parked: int = 0
    skipped: str = ""
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.skipped:
            return f"campaign={self.campaign} batch={self.batch} skipped: {self.skipped}"
        return (f"campaign={self.campaign} batch={self.batch} sent={self.sent} "
                f"failed={self.failed} deferred={self.deferred} suppressed={self.suppressed} "
                f"parked={self.parked}")


class BatchClock:
    """The Redis server's clock during one batch: read once, advanced by the local
    monotonic clock. Due times written from it compare correctly with the pump's
    ``TIME`` however wrong this machine's wall clock is (a batch lasts seconds, so the
    drift between the two rates is negligible)."""

    __slots__ = ("_base", "_mono")

    def __init__(self, server_now: float) -> None:
        self._base = server_now
        self._mono = time.monotonic()

    @classmethod
    async def read(cls, rt: Runtime) -> BatchClock:
        """Anchor on the server's ``TIME`` (one round trip)."""
        return cls(await run_async(rt.redis, server_time()))

    def now(self) -> float:
        """Unix seconds on the Redis server's clock."""
        return self._base + (time.monotonic() - self._mono)

    def delay_until(self, when: float) -> float:
        """Seconds from now until ``when`` (a time on this clock); negative if past."""
        return when - self.now()


async def deliver_batch(rt: Runtime, cid: str, batch_no: int) -> BatchReport:
    """Send every recipient of batch ``batch_no`` of campaign ``cid`` that still needs it."""
    keys = rt.settings.keys
    report = BatchReport(cid, batch_no)
    spec_json = await AsyncLedger(rt.redis, keys).spec_json(cid)
    if spec_json is None:
        report.skipped = "unknown campaign (deleted?)"
        return report
    compiled = rt.campaign(cid, spec_json)
    provider_name = compiled.spec.provider
    retry = AsyncRetryQueue(rt.redis, keys, provider_name)

    # Keep a short TTL (a killed worker frees the batch quickly) however long the batch
    # runs: the lock renews itself and says when it is lost (see workers.batchlock).
    lock = BatchLock(rt.redis, keys.batch_lock(cid, batch_no), token=rt.worker_id,
                     ttl=rt.settings.batch_lock_ttl)
    if not await lock.acquire():
        # Another worker is sending this batch (or died doing so: its lock expires within
        # the TTL because nobody renews it). Look again once the lock is due to lapse.
        remaining = await lock.remaining()
        await retry.schedule(retry_member(cid, batch_no), remaining + LOCKED_SLACK,
                             only_if_earlier=True)
        report.skipped = f"another worker holds this batch; looking again in {remaining:.0f}s"
        return report
    async with lock.renewing():
        await _deliver_locked(rt, cid, batch_no, compiled, retry, report, lock)
    return report


async def _deliver_locked(rt: Runtime, cid: str, batch_no: int, compiled: CompiledCampaign,
                          retry: AsyncRetryQueue, report: BatchReport, held: BatchLock
                          ) -> None:
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
    clock = await BatchClock.read(rt)
    now = clock.now()

    # Deferred recipients wait for their own due time even when the batch comes back
    # earlier (it is scheduled for the earliest of them).
    later = [float(details[i]["n"]) for i, _ in todo
             if i in details and float(details[i].get("n", 0)) > now + 1]
    todo = [(i, r) for i, r in todo
            if not (i in details and float(details[i].get("n", 0)) > now + 1)]
    if later:
        await retry.schedule(retry_member(cid, batch_no), clock.delay_until(min(later)),
                             only_if_earlier=True)

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

    run = _Run(rt, cid, batch_no, cfg, provider, ledger, suppression, index_of, email_of,
               details, report, held, clock)
    try:
        await run.send_all(messages)
    finally:
        # give capped connections back: between tasks nothing on this loop could
        await provider.release_idle()
    if run.next_due is not None:
        await retry.schedule(retry_member(cid, batch_no), clock.delay_until(run.next_due),
                             only_if_earlier=True)


def domain_of(address: str) -> str:
    return canonical_domain(address.rpartition("@")[2])


@dataclass(slots=True)
class _Admission:
    """A chunk after its checks: what may go now, what waits (and how long)."""

    admitted: list[OutgoingMessage] = field(default_factory=list)
    waiting: list[OutgoingMessage] = field(default_factory=list)
    sleep: float = 0.0
    cancelled: bool = False
    paused: bool = False


class _Run:
    """Sending one batch's rendered messages: admission, sending, recording."""

    def __init__(self, rt: Runtime, cid: str, batch_no: int, cfg: ProviderConfig,
                 provider: Provider, ledger: AsyncLedger, suppression: AsyncSuppressionList,
                 index_of: dict[int, int], email_of: dict[int, str],
                 details: dict[int, dict[str, Any]], report: BatchReport, held: BatchLock,
                 clock: BatchClock) -> None:
        self.rt, self.cid, self.batch_no, self.cfg = rt, cid, batch_no, cfg
        self.provider, self.ledger, self.suppression = provider, ledger, suppression
        self.index_of, self.email_of, self.details = index_of, email_of, details
        self.report = report
        self.held = held
        self.clock = clock
        self.limiter = rt.limiter(provider.name)
        self.next_due: float | None = None

    def _due(self, when: float) -> None:
        self.next_due = _earliest(self.next_due, when)

    async def send_all(self, messages: list[OutgoingMessage]) -> None:
        queue = deque(messages)
        size = self.provider.chunk_size

        def next_chunk() -> asyncio.Task[_Admission] | None:
            if not queue:
                return None
            chunk = [queue.popleft() for _ in range(min(size, len(queue)))]
            return asyncio.ensure_future(self._prepare(chunk))

        # The next chunk's checks and tokens (two Redis round trips) are fetched while
        # the current chunk is on the wire, so the sessions do not wait for them.
        ahead = next_chunk()
        try:
            while ahead is not None:
                admission = await ahead
                ahead = None
                if self.held.lost:
                    self.report.notes.append(
                        "lost the batch lock (stalled, or Redis did not answer, past its "
                        "TTL): stopped; another worker carries on")
                    # Nobody may hold it (Redis was unreachable, not another worker):
                    # come back soon; a holder makes that copy look again later.
                    self._due(self.clock.now() + LOCKED_SLACK)
                    return
                if admission.cancelled:
                    self.report.notes.append("campaign cancelled: the rest of the batch "
                                             "stays cancelled")
                    return
                if admission.paused:
                    self.report.notes.append("campaign paused: the rest of the batch waits "
                                             "for resume")
                    return
                queue.extendleft(reversed(admission.waiting))
                if admission.admitted:
                    ahead = next_chunk()
                    if not await self._send(admission.admitted):
                        return  # the provider is down (credentials): the rest waits
                else:
                    if admission.sleep:
                        await asyncio.sleep(admission.sleep)
                if ahead is None:
                    ahead = next_chunk()
        finally:
            if ahead is not None:
                ahead.cancel()  # tokens taken for it are simply not used

    async def _prepare(self, chunk: list[OutgoingMessage]) -> _Admission:
        gate = await chunk_gate(self.rt.redis, self.rt.settings.keys, self.cid, self.batch_no)
        if gate == "cancelled":
            return _Admission(cancelled=True, waiting=chunk)
        if gate == "paused":  # the batch is set aside for resume; no attempt is spent
            return _Admission(paused=True, waiting=chunk)
        admitted, waiting, sleep = await self._admit(chunk)
        return _Admission(admitted=admitted, waiting=waiting, sleep=sleep)

    async def _admit(self, chunk: list[OutgoingMessage]
                     ) -> tuple[list[OutgoingMessage], list[OutgoingMessage], float]:
        """Take tokens for ``chunk``: what may go now, what waits briefly, and for how
        long. Domains whose wait is long are parked on the retry queue (their recipients
        keep their state: parking spends no attempt)."""
        by_domain: dict[str, list[OutgoingMessage]] = defaultdict(list)
        for m in chunk:
            by_domain[domain_of(m.recipient)].append(m)
        grant = await self.limiter.acquire({d: len(v) for d, v in by_domain.items()})
        admitted: list[OutgoingMessage] = []
        for domain, n in grant.granted.items():
            admitted += by_domain[domain][:n]
            del by_domain[domain][:n]
        if grant.complete:
            return admitted, [], 0.0
        plan = plan_rest(grant, self.cfg.max_wait, self._rates(grant.remaining))
        if plan.park:
            parked = sum(len(by_domain.pop(d)) for d in plan.park)
            self._due(self.clock.now() + plan.park_for)
            self.report.parked += parked
        waiting = [m for msgs in by_domain.values() for m in msgs]
        return admitted, waiting, plan.sleep or 0.0

    def _rates(self, domains: Iterable[str]) -> dict[str, float]:
        """Messages per second of the domains that have their own limit, so that a long
        drain of one slow domain is parked instead of holding the worker process. (The
        provider's own limit binds every batch alike: sleeping through it is right.)"""
        return {d: self.cfg.domains[d].per_second for d in domains if d in self.cfg.domains}

    async def _send(self, chunk: list[OutgoingMessage]) -> bool:
        try:
            results = await self.provider.send(chunk)
        except ProviderAuthError as exc:
            await _provider_down(self.rt, self.provider.name, exc)
            if exc.results:  # accepted before the rejection: record them, never resend
                await self._record(exc.results)
            self.report.notes.append(
                f"provider {self.provider.name!r} rejected our credentials: "
                f"{exc.describe()}; the batch waits {AUTH_RETRY:.0f}s")
            self._due(self.clock.now() + AUTH_RETRY)
            return False
        except TransientDeliveryError as exc:
            results = [SendResult(m.row, error=exc) for m in chunk]
        await self._record(results)
        return True

    async def _record(self, results: list[SendResult]) -> None:
        outcome = decide(results, index_of=self.index_of, email_of=self.email_of,
                         details=self.details, cfg=self.cfg, now=self.clock.now(),
                         campaign_id=self.cid, provider=self.provider.name)
        await _record(self.rt, self.cid, self.batch_no, self.ledger, self.suppression, outcome)
        await index_accepted(self.rt.redis, self.rt.settings.keys, self.cfg, self.provider.name,
                             self.cid, self.batch_no, results, self.clock.now())
        self.report.sent += outcome.sent
        self.report.failed += outcome.failed
        self.report.deferred += outcome.deferred
        self.report.parked += outcome.parked
        if outcome.next_due is not None:
            self._due(outcome.next_due)
        seen: set[str] = set()
        for email, err in outcome.throttles:
            domain = domain_of(email)
            if domain in seen:
                continue
            seen.add(domain)
            log.warning("%s throttled us (%s) on mail to %s; slowing down for all workers",
                        self.provider.name, err.describe(), domain)
            await self.limiter.throttled(domain=domain, retry_after=err.retry_after,
                                         reason=err.describe())


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
    await run_async(rt.redis,
                    ProviderState(rt.settings.keys, provider).record_auth_error(exc.describe()))


def run_batch(cid: str, batch_no: int) -> BatchReport:
    """Synchronous entry point used by the Celery task."""
    rt = Runtime.get()
    return rt.run(deliver_batch(rt, cid, batch_no))


#: how long a batch waits after an unexpected error before it is tried again
ERROR_RETRY = 60.0


async def park_batch(rt: Runtime, cid: str, batch_no: int, delay: float) -> bool:
    """Put a batch on its provider's retry queue; False when the campaign is unknown."""
    spec = await AsyncLedger(rt.redis, rt.settings.keys).spec(cid)
    if spec is None:
        return False
    retry = AsyncRetryQueue(rt.redis, rt.settings.keys, spec.provider)
    await retry.schedule(retry_member(cid, batch_no), delay, only_if_earlier=True)
    return True


def park_after_error(cid: str, batch_no: int) -> bool:
    """After an unexpected error the task is acknowledged (acks_late acks a task that
    raises), so the batch would be stranded: keep it on the retry queue instead."""
    rt = Runtime.get()
    return rt.run(park_batch(rt, cid, batch_no, ERROR_RETRY))

