"""The complaint guard: a campaign whose complaints or hard bounces through a provider
run too high pauses by itself.

Per campaign and provider, counts of ``delivered``, ``bounced/hard`` and ``complained``
events (each recipient counted once per kind) are kept in time buckets of a sliding
window (``guard_window``, default 24 hours, in 48 buckets) on the Redis server's clock.
Once at least ``guard_min_delivered`` (1,000) deliveries are in the window, a complaint
rate above ``guard_complaint_rate`` (0.1%) or a hard-bounce rate above
``guard_bounce_rate`` (5%), both over deliveries, pauses the campaign
(:func:`workers.pause.pause_campaign`, ``paused_by = "guard"``, the rates in
``paused_reason``) and logs a warning. It trips once: an operator's resume starts a
fresh window, so the campaign is paused again only if the rates climb again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from config.providers import ProviderConfig
from config.schema import Keys
from workers.pause import pause_campaign
from workers.redis_ops import (
    Command,
    Pipeline,
    RedisOp,
    as_text,
    reply_pairs,
    run_sync,
    server_time,
)

if TYPE_CHECKING:
    from workers.redis_ops import SyncRedis

__all__ = ["BUCKETS", "COUNTED", "Thresholds", "Window", "observe", "verdict"]

log = logging.getLogger("bulkmail.guard")

#: buckets per window
BUCKETS = 48
#: event label -> the counter it moves
COUNTED = {"delivered": "d", "bounced/hard": "b", "complained": "c"}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When the guard trips (the provider's ``guard_*`` keys)."""

    complaint_rate: float = 0.001
    bounce_rate: float = 0.05
    min_delivered: int = 1000
    window: float = 86400.0

    @classmethod
    def of(cls, cfg: ProviderConfig) -> Thresholds:
        return cls(cfg.guard_complaint_rate, cfg.guard_bounce_rate, cfg.guard_min_delivered,
                   cfg.guard_window)


@dataclass(frozen=True, slots=True)
class Window:
    """Counts in the window."""

    delivered: int = 0
    bounces: int = 0
    complaints: int = 0


def verdict(w: Window, t: Thresholds) -> str | None:
    """Why the guard trips on these counts, or None (pure)."""
    if w.delivered < t.min_delivered:
        return None
    complaint = w.complaints / w.delivered
    bounce = w.bounces / w.delivered
    if complaint > t.complaint_rate:
        return (f"complaint rate {complaint:.3%} ({w.complaints} of {w.delivered} delivered) "
                f"is over guard_complaint_rate {t.complaint_rate:.3%}")
    if bounce > t.bounce_rate:
        return (f"hard-bounce rate {bounce:.2%} ({w.bounces} of {w.delivered} delivered) "
                f"is over guard_bounce_rate {t.bounce_rate:.2%}")
    return None


def _observe(keys: Keys, cid: str, provider: str, counter: str, t: Thresholds
             ) -> RedisOp[tuple[Window, bool, float]]:
    key = keys.guard(cid, provider)
    now = yield from server_time()
    size = max(1.0, t.window / BUCKETS)
    bucket = int(now // size)
    resumed, tripped = yield Pipeline((Command(("HGET", keys.campaign(cid), "resumed")),
                                       Command(("HGET", key, "tripped"))))
    if tripped is not None and resumed is not None and float(resumed) > float(tripped):
        yield Command(("DEL", key))  # the operator resumed: a fresh window
        tripped = None
    _, raw = yield Pipeline((Command(("HINCRBY", key, f"{bucket}:{counter}", 1)),
                             Command(("HGETALL", key))))
    sums = {"d": 0, "b": 0, "c": 0}
    old: list[str] = []
    for f, v in reply_pairs(raw):
        name = as_text(f)
        b, _, c = name.partition(":")
        if not b.isdigit() or c not in sums:
            continue
        if int(b) <= bucket - BUCKETS:
            old.append(name)
        else:
            sums[c] += int(v)
    if old:
        yield Command(("HDEL", key, *old))
    yield Command(("EXPIRE", key, int(t.window) + 3600))
    return Window(sums["d"], sums["b"], sums["c"]), tripped is not None, now


def observe(client: SyncRedis, keys: Keys, cid: str, provider: str, label: str,
            thresholds: Thresholds) -> str | None:
    """Count one recipient's first event of ``label`` for ``cid`` through ``provider``;
    pause the campaign when that takes it over a threshold. Returns the reason when
    this call paused it."""
    counter = COUNTED.get(label)
    if counter is None:
        return None
    window, tripped, now = run_sync(client, _observe(keys, cid, provider, counter,
                                                     thresholds))
    reason = verdict(window, thresholds)
    if reason is None or tripped:
        return None
    # HSETNX: of two webhook calls crossing the line together, one pauses
    if not client.hsetnx(keys.guard(cid, provider), "tripped", repr(now)):
        return None
    text = f"{provider}: {reason}"
    pause_campaign(client, keys, cid, by="guard", reason=text)
    log.warning("complaint guard paused campaign %s: %s; resume it when the cause is "
                "fixed (bulkmail resume / POST /v1/campaigns/%s/resume)", cid, text, cid)
    return text
