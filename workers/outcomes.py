"""Pure mapping from send results to ledger updates: the retry decisions live here.

Kept free of I/O so every rule (attempts, max age, backoff, ambiguous policy, hard
bounces) is unit-tested without Redis or sockets.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from config.errors import (
    AmbiguousDeliveryError,
    DeliveryError,
    PermanentDeliveryError,
    ProviderBusyError,
    ThrottledError,
    TransientDeliveryError,
)
from config.providers import ProviderConfig
from config.schema import State
from workers.backoff import compute_backoff, should_give_up
from workers.deadletter import DeadLetter
from workers.ledger import Update, detail_json
from workers.providers.base import SendResult

__all__ = ["Outcomes", "decide"]


@dataclass(slots=True)
class Outcomes:
    """What a chunk's results mean for the ledger and the queues."""

    updates: list[Update] = field(default_factory=list)
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    #: not tried for lack of capacity: state unchanged, no attempt spent
    parked: int = 0
    #: addresses to add to the suppression list (hard bounces), with the reply
    suppress: list[tuple[str, str]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: earliest time a deferred recipient is due again (None when nothing deferred)
    next_due: float | None = None
    #: (recipient, reply) of throttling replies: the rate limiter slows down on them
    throttles: list[tuple[str, ThrottledError]] = field(default_factory=list)

    def merge_due(self, due: float) -> None:
        self.next_due = due if self.next_due is None else min(self.next_due, due)


def decide(
    results: Sequence[SendResult],
    *,
    index_of: Mapping[int, int],
    email_of: Mapping[int, str],
    details: Mapping[int, Mapping[str, Any]],
    cfg: ProviderConfig,
    now: float,
    campaign_id: str = "",
    provider: str = "",
    rng: random.Random | None = None,
) -> Outcomes:
    """Turn one chunk's results into ledger updates and follow-up work.

    ``index_of`` maps a recipient row to its index in the batch, ``details`` holds the
    ledger detail of recipients tried before (attempts ``a``, first attempt ``f``).
    """
    out = Outcomes()
    for res in results:
        idx = index_of[res.row]
        prior = details.get(idx, {})
        if res.error is None:
            # keep the attempt count when it took more than one ("sent after 3 attempts")
            tried = int(prior["a"]) + 1 if "a" in prior else None
            out.updates.append(Update(idx, State.SENT, detail_json(id=res.provider_id,
                                                                   a=tried)))
            out.sent += 1
            continue
        err: DeliveryError = res.error
        if isinstance(err, ProviderBusyError):
            out.merge_due(round(now + (err.retry_after or cfg.max_wait), 3))
            out.parked += 1
            continue
        attempts = int(prior.get("a", 0)) + 1
        first = float(prior.get("f", now))
        if isinstance(err, AmbiguousDeliveryError) and cfg.on_ambiguous == "fail":
            out.updates.append(Update(idx, State.FAILED, detail_json(
                r=err.describe(), k="unknown", a=attempts)))
            out.failed += 1
            continue
        if isinstance(err, TransientDeliveryError):
            if isinstance(err, ThrottledError):
                out.throttles.append((email_of[res.row], err))
            if should_give_up(attempts, first, now, max_attempts=cfg.max_attempts,
                              max_age=cfg.max_age):
                out.updates.append(Update(idx, State.FAILED, detail_json(
                    r=err.describe(), k="exhausted", a=attempts, f=first)))
                out.dead_letters.append(DeadLetter(campaign_id, res.row, email_of[res.row],
                                                   err.describe(), attempts, provider, now))
                out.failed += 1
                continue
            delay = compute_backoff(attempts, base=cfg.backoff_base, cap=cfg.backoff_max,
                                    rng=rng, retry_after=err.retry_after)
            due = round(now + delay, 3)
            out.updates.append(Update(idx, State.DEFERRED, detail_json(
                r=err.describe(), k=err.kind, a=attempts, f=first, n=due)))
            out.merge_due(due)
            out.deferred += 1
            continue
        out.updates.append(Update(idx, State.FAILED, detail_json(
            r=err.describe(), k=err.kind, a=attempts)))
        out.failed += 1
        if isinstance(err, PermanentDeliveryError) and err.hard_bounce:
            out.suppress.append((email_of[res.row], err.describe()))
    return out
