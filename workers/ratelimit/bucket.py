"""Token-bucket arithmetic as pure functions: the reference model of the Lua scripts.

Redis runs the real thing (``acquire.lua``, ``throttle.lua``, sharing ``_common.lua``);
this module does the same operations in the same order on the same IEEE doubles, so the
tests can check the scripts against it and the status command can project a bucket to
"now" without another script. Keep the two in step: a change here is a change there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

__all__ = [
    "EPS",
    "WAIT_MARGIN",
    "AimdPolicy",
    "BucketState",
    "Limit",
    "TakeResult",
    "available",
    "fair_share",
    "recovered_at",
    "refill",
    "step_need",
    "take",
    "throttle",
    "time_to",
]

#: ``floor(tokens + EPS)``: 0.1 * 30 must give 3 whole tokens, not 2.
EPS = 1e-9

#: Added to every wait for tokens: an epoch timestamp as a double is exact only to about
#: 2.4e-7 s, so ``now + wait`` could land a hair before the tokens are complete.
WAIT_MARGIN = 1e-6


@dataclass(frozen=True, slots=True)
class AimdPolicy:
    """How a throttling reply slows a bucket down and how it speeds up again.

    The effective rate is ``configured * factor``. A throttle multiplies ``factor`` by
    ``decrease`` (reports within ``window`` seconds of the last counted one are the same
    storm and count once); without throttles ``factor`` regains ``recover_per_second``
    each second until it is back at 1. The floor is ``min_fraction`` of the configured
    rate or ``min_rate`` per second, whichever is higher, never above the configured rate.
    ``default_block`` is how long a provider without a configured rate pauses after a
    throttle that named no Retry-After: it has no rate to scale, so blocking is the only
    thing it can learn.
    """

    decrease: float = 0.5
    recover_per_second: float = 0.05
    min_fraction: float = 0.01
    min_rate: float = 0.1
    window: float = 1.0
    default_block: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.decrease <= 1:
            raise ValueError(f"decrease must be in (0, 1], got {self.decrease!r}")
        if self.recover_per_second < 0 or self.window < 0 or self.default_block < 0:
            raise ValueError("recover_per_second, window and default_block must be >= 0")
        if not 0 < self.min_fraction <= 1 or self.min_rate <= 0:
            raise ValueError("min_fraction must be in (0, 1] and min_rate above zero")

    def min_factor(self, rate: float) -> float:
        """Lowest ``factor`` for a configured ``rate`` (messages per second)."""
        floor_rate = min(rate, max(rate * self.min_fraction, self.min_rate))
        return floor_rate / rate


@dataclass(frozen=True, slots=True)
class BucketState:
    """One bucket as stored in its hash.

    ``tokens`` may be fractional and negative (a drained bucket), ``ts`` is the time of
    the last update, ``f`` the AIMD factor, ``dec`` the time of the last counted decrease
    and ``blk`` the Retry-After block end (0: not blocked).
    """

    tokens: float
    ts: float
    f: float = 1.0
    dec: float | None = None
    blk: float = 0.0

    @classmethod
    def full(cls, burst: float, now: float) -> BucketState:
        """What a missing hash means: a full, unthrottled bucket."""
        return cls(tokens=float(burst), ts=now)


def refill(b: BucketState, rate: float, burst: float, rec: float, now: float) -> BucketState:
    """``b`` brought to ``now``: tokens accrue at ``rate * f`` while ``f`` climbs by ``rec``
    per second back to 1, integrated exactly; nothing accrues while blocked."""
    if now <= b.ts:
        return replace(b, tokens=min(b.tokens, float(burst)))
    tokens, f = b.tokens, b.f
    start = max(b.ts, b.blk)
    if now > start:
        dt = now - start
        f0 = b.f
        if f0 >= 1 or rec <= 0:
            added = rate * f0 * dt
        else:
            t1 = (1 - f0) / rec
            if dt <= t1:
                added = rate * (f0 * dt + 0.5 * rec * dt * dt)
                f = f0 + rec * dt
            else:
                added = rate * (f0 * t1 + 0.5 * rec * t1 * t1 + (dt - t1))
                f = 1.0
        tokens = tokens + added
    return replace(b, tokens=min(tokens, float(burst)), f=f, ts=now)


def time_to(b: BucketState, rate: float, rec: float, need: float, now: float) -> float:
    """Seconds from ``now`` until ``b`` (refilled to ``now``) holds ``need`` tokens."""
    wait0 = max(0.0, b.blk - now)
    deficit = need - b.tokens
    if deficit <= EPS:
        return wait0
    x = deficit / rate
    f0 = b.f
    wait0 += WAIT_MARGIN
    if f0 >= 1 or rec <= 0:
        return wait0 + x / f0
    t1 = (1 - f0) / rec
    at_t1 = f0 * t1 + 0.5 * rec * t1 * t1
    if x <= at_t1:
        return wait0 + 2 * x / (f0 + math.sqrt(f0 * f0 + 2 * rec * x))
    return wait0 + t1 + (x - at_t1)


def available(b: BucketState, now: float) -> int:
    """Whole tokens that can be handed out at ``now``."""
    if now < b.blk:
        return 0
    return max(0, math.floor(b.tokens + EPS))


def step_need(rest: int, rate: float, f: float, burst: float, step: float) -> float:
    """Tokens worth waiting for: ``step`` seconds' worth, at least 1, at most the burst."""
    return min(rest, max(1, min(burst, math.floor(rate * f * step + EPS))))


def fair_share(total: int | None, caps: Sequence[int]) -> list[int]:
    """Split ``total`` tokens (``None``: no limit) among groups taking at most ``caps[i]``
    each, max-min fair.

    Small groups are served in full first, the rest is shared; leftovers from rounding
    go to the lowest index. Same algorithm as ``acquire.lua``.
    """
    if total is None:
        return list(caps)
    n = len(caps)
    order = sorted(range(n), key=lambda i: (caps[i], i))
    g = [0] * n
    left = total
    for k, i in enumerate(order):
        give = min(caps[i], left // (n - k))
        g[i] = give
        left -= give
    for i in range(n):
        if left <= 0:
            break
        extra = min(caps[i] - g[i], left)
        g[i] += extra
        left -= extra
    return g


def throttle(
    b: BucketState,
    *,
    rate: float | None,
    burst: float,
    policy: AimdPolicy,
    retry_after: float | None,
    now: float,
) -> tuple[BucketState, bool]:
    """``b`` after a throttling reply at ``now``, and whether it counted as a decrease."""
    rec = policy.recover_per_second
    b = refill(b, rate, burst, rec, now) if rate is not None else replace(b, ts=max(b.ts, now))
    decreased = False
    if rate is not None and (b.dec is None or now - b.dec >= policy.window):
        b = replace(b, f=max(policy.min_factor(rate), b.f * policy.decrease), dec=now,
                    tokens=min(b.tokens, 0.0))
        decreased = True
    if retry_after is None and rate is None:
        retry_after = policy.default_block
    if retry_after is not None and retry_after > 0:
        b = replace(b, blk=max(b.blk, now + retry_after), tokens=min(b.tokens, 0.0))
    return b, decreased


def recovered_at(b: BucketState, rec: float, now: float) -> float:
    """When ``b`` is unblocked and back at its configured rate (if not throttled again)."""
    at = max(b.blk, now)
    if b.f < 1:
        at += (1 - b.f) / rec if rec > 0 else 86400.0
    return at


@dataclass(frozen=True, slots=True)
class Limit:
    """A bucket's configured rate (messages per second) and capacity."""

    rate: float
    burst: float


@dataclass(frozen=True, slots=True)
class TakeResult:
    """:func:`take`'s answer: new states, and per group (index 0 = the messages of
    unlimited domains, then one per limited domain) the grant and the wait of the rest."""

    provider: BucketState
    domains: list[BucketState]
    granted: list[int]
    waits: list[float]


def take(
    provider: BucketState,
    provider_limit: Limit | None,
    domains: Sequence[tuple[BucketState, Limit, int]],
    unlimited: int,
    *,
    rec: float,
    step: float,
    now: float,
) -> TakeResult:
    """One acquire, as ``acquire.lua`` does it: ``domains`` are (state, limit, wanted) of
    the limited domains, ``unlimited`` the messages needing provider tokens only."""
    p = provider
    pavail: int | None
    if provider_limit is not None:
        p = refill(p, provider_limit.rate, provider_limit.burst, rec, now)
        pavail = available(p, now)
    else:
        pavail = 0 if now < p.blk else None

    states: list[BucketState] = []
    caps = [unlimited]
    for b, lim, want in domains:
        b = refill(b, lim.rate, lim.burst, rec, now)
        states.append(b)
        caps.append(min(want, available(b, now)))

    g = fair_share(pavail, caps)
    total = g[0]
    for i in range(len(states)):
        states[i] = replace(states[i], tokens=states[i].tokens - g[1 + i])
        total += g[1 + i]
    if provider_limit is not None:
        p = replace(p, tokens=p.tokens - total)

    def provider_wait(rest: int) -> float:
        if provider_limit is None:
            return max(0.0, p.blk - now)
        need = step_need(rest, provider_limit.rate, p.f, provider_limit.burst, step)
        return time_to(p, provider_limit.rate, rec, need, now)

    waits = [0.0]
    if caps[0] - g[0] > 0:
        waits[0] = provider_wait(caps[0] - g[0])
    for i, (_, lim, want) in enumerate(domains):
        rest = want - g[1 + i]
        w = 0.0
        if rest > 0:
            b = states[i]
            need = step_need(rest, lim.rate, b.f, lim.burst, step)
            w = max(time_to(b, lim.rate, rec, need, now), provider_wait(rest))
        waits.append(w)
    return TakeResult(provider=p, domains=states, granted=g, waits=waits)
