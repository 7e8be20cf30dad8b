"""The cluster-wide rate limiter of one provider: token buckets in Redis, on Redis's clock.

One bucket for the provider (caps every message) and one per configured recipient domain
(caps that domain's messages); messages to other domains need provider tokens only. Rate
and burst travel with every call, so a config change applies at once. Throttling replies
slow a bucket down for all workers (AIMD, see :class:`~workers.ratelimit.bucket.AimdPolicy`).

A provider with no ``rate`` costs nothing for a chunk without limited domains (always,
when it has no ``domains``): :meth:`RateLimiter.acquire` makes no Redis call. When such a
provider throttles there is no rate to scale, so it learns only by blocking: the block
(Retry-After, else ``AimdPolicy.default_block``) is written to Redis, for status and for
the acquires that do call Redis (a chunk with a limited domain), and held in this
process; other workers learn it from their own throttling replies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from redis.asyncio import Redis

from config.schema import Keys
from config.units import Rate
from workers.provider_state import ProviderSnapshot, ProviderState
from workers.ratelimit.bucket import AimdPolicy, BucketState, recovered_at, refill
from workers.ratelimit.grant import Grant
from workers.ratelimit.scripts import ACQUIRE, THROTTLE
from workers.redis_ops import (
    Arg,
    Command,
    Pipeline,
    RedisOp,
    as_text,
    reply_pairs,
    run_async,
    script,
)

__all__ = ["LimitConfig", "RateLimiter", "domain_burst"]

log = logging.getLogger(__name__)

#: Longest reason string kept in the status hash (provider replies can be long).
_MAX_REASON = 500


class LimitConfig(Protocol):
    """The provider settings the limiter reads (``config.providers._Base`` has them)."""

    @property
    def rate(self) -> Rate | None: ...

    @property
    def effective_burst(self) -> int: ...

    @property
    def domains(self) -> Mapping[str, Rate]: ...


def domain_burst(rate: Rate) -> int:
    """Capacity of a domain bucket: one second's worth of its rate, at least 1 (the same
    rule as ``effective_burst``; the providers file has no per-domain burst)."""
    return max(1, int(rate.per_second))


def _num(x: float) -> str:
    # repr is the shortest text that reads back as the same double in Lua's tonumber
    return repr(float(x))


def _hash(raw: Any) -> dict[str, str]:
    return {as_text(k): as_text(v) for k, v in reply_pairs(raw)}


def _float(h: Mapping[str, str], name: str) -> float | None:
    v = h.get(name)
    return float(v) if v not in (None, "") else None


class RateLimiter:
    """Cluster-wide limits of one provider.

    ``clock`` replaces the Redis server's clock (tests pass simulated times; production
    leaves it ``None`` so every worker uses the one clock of Redis). ``step`` is how many
    seconds' worth of tokens a partial grant's wait aims for: bigger means fewer round
    trips at high rates, smaller means smoother sending.
    """

    def __init__(
        self,
        redis: Redis[Any],
        keys: Keys,
        provider: str,
        cfg: LimitConfig,
        *,
        clock: Callable[[], float] | None = None,
        policy: AimdPolicy | None = None,
        step: float = 0.1,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.provider = provider
        self.cfg = cfg
        self.policy = policy or AimdPolicy()
        self.step = step
        self._clock = clock
        self._domains = {d.lower(): r for d, r in cfg.domains.items()}
        self.state = ProviderState(keys, provider)
        # a block known to this process only; used where acquire makes no Redis call
        self._local_block_until = 0.0

    # acquire -------------------------------------------------------------------------
    async def acquire(self, wanted: Mapping[str, int]) -> Grant:
        """Take tokens for one chunk: ``wanted`` maps recipient domain -> message count.

        Grants as many as every applicable bucket allows, at once and atomically across
        the cluster, in one round trip; see :class:`Grant` for the waits of the rest.
        Domains are compared lower-cased and the grant is keyed by the lower-cased name.
        """
        want: dict[str, int] = {}
        for domain, n in wanted.items():
            if n > 0:
                want[domain.lower()] = want.get(domain.lower(), 0) + n
        if not want:
            return Grant(granted={})
        limited = [d for d in want if d in self._domains]
        rate = self.cfg.rate
        if rate is None and not limited:
            return self._acquire_locally(want)

        keys = [self.keys.bucket(self.provider)]
        args: list[Arg] = [
            self._now_arg(),
            _num(self.policy.recover_per_second),
            _num(self.step),
            _num(rate.per_second) if rate is not None else "",
            self.cfg.effective_burst,
            sum(n for d, n in want.items() if d not in limited),
        ]
        for d in limited:
            drate = self._domains[d]
            keys.append(self.keys.bucket(self.provider, d))
            args += [_num(drate.per_second), domain_burst(drate), want[d]]
        res = await run_async(self.redis, script(ACQUIRE, keys, args))

        granted: dict[str, int] = {}
        waits: dict[str, float] = {}
        # the unlimited domains shared one grant; hand it out in the caller's order
        left, wait_unlimited = int(res[0]), float(as_text(res[1]))
        for i, d in enumerate(limited):
            granted[d] = int(res[2 + 2 * i])
            if granted[d] < want[d]:
                waits[d] = float(as_text(res[3 + 2 * i]))
        for d, n in want.items():
            if d in granted:
                continue
            granted[d] = min(n, left)
            left -= granted[d]
            if granted[d] < n:
                waits[d] = wait_unlimited
        ordered = {d: granted[d] for d in want}
        return Grant(granted=ordered, wait=max(waits.values(), default=0.0), wanted=want,
                     waits=waits)

    def _acquire_locally(self, want: dict[str, int]) -> Grant:
        blocked = self._local_block_until - self._local_now()
        if blocked > 0:
            return Grant.nothing(want, blocked)
        return Grant.everything(want)

    # throttling ------------------------------------------------------------------------
    async def throttled(
        self, *, domain: str | None = None, retry_after: float | None = None, reason: str = ""
    ) -> None:
        """Report a throttling reply: slow the provider down for every worker.

        With ``domain`` naming a domain that has its own limit, only that domain's bucket
        slows down; a throttle about any other domain slows the provider (there is no
        bucket of that domain to slow). ``retry_after`` blocks the bucket that long.
        Reports within ``policy.window`` of the last decrease count once.
        """
        scope = domain.lower() if domain and domain.lower() in self._domains else ""
        if scope:
            drate = self._domains[scope]
            rate: float | None = drate.per_second
            burst = domain_burst(drate)
            key = self.keys.bucket(self.provider, scope)
        else:
            rate = self.cfg.rate.per_second if self.cfg.rate is not None else None
            burst = self.cfg.effective_burst
            key = self.keys.bucket(self.provider)
        p = self.policy
        args: list[Arg] = [
            self._now_arg(),
            _num(rate) if rate is not None else "",
            burst,
            _num(p.recover_per_second),
            _num(p.decrease),
            _num(p.min_factor(rate) if rate is not None else 1.0),
            _num(p.window),
            _num(retry_after) if retry_after is not None else "",
            _num(p.default_block),
            reason[:_MAX_REASON],
            scope,
            (domain or "").lower(),
        ]
        res = await run_async(self.redis, script(THROTTLE, [key, self.state.key], args))
        decreased, factor = int(res[0]), float(as_text(res[1]))
        blocked_until = float(as_text(res[2]))

        blocking = retry_after is not None or rate is None
        if rate is None:
            block = retry_after if retry_after is not None else p.default_block
            self._local_block_until = max(self._local_block_until, self._local_now() + block)
        log.log(
            logging.WARNING if decreased or blocking else logging.INFO,
            "provider %s throttled%s: %s; rate factor %.3f%s%s",
            self.provider,
            f" for {scope}" if scope else "",
            reason or "no reason given",
            factor,
            f", blocked until {blocked_until:.3f}" if blocking else "",
            "" if decreased or rate is None else " (same storm, not decreased again)",
        )

    # status ----------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """Configured and effective rates, throttling episode and last reason, per
        provider and per limited domain, for ``bulkmail status``. Times are seconds since
        the epoch on the Redis clock; rates are messages per second."""
        domains = sorted(self._domains)
        now, buckets, snap = await run_async(self.redis, self._read_status(domains))
        pbucket, state = buckets[0], snap.fields
        rate = self.cfg.rate

        out: dict[str, Any] = {
            "provider": self.provider,
            "now": now,
            **self._bucket_status(pbucket, state, "", rate, self.cfg.effective_burst, now),
            "last_reason": state.get("reason"),
            "last_throttle_at": _float(state, "at"),
            "last_scope": state.get("scope"),
            "last_domain": state.get("domain"),
            "throttles": int(state.get("throttles", 0)),
            "decreases": int(state.get("decreases", 0)),
            "domains": {
                d: self._bucket_status(raw, state, d, self._domains[d],
                                       domain_burst(self._domains[d]), now)
                for d, raw in zip(domains, buckets[1:], strict=True)
            },
        }
        return out

    def _read_status(self, domains: list[str]
                     ) -> RedisOp[tuple[float, list[dict[str, str]], ProviderSnapshot]]:
        cmds = [Command(("TIME",))] if self._clock is None else []
        cmds += [Command(("HGETALL", self.keys.bucket(self.provider, d)))
                 for d in ["", *domains]]
        res = list((yield Pipeline(tuple(cmds))))
        if self._clock is None:
            sec, usec = res.pop(0)
            now = int(sec) + int(usec) / 1_000_000
        else:
            now = self._clock()
        snap = yield from self.state.read()
        return now, [_hash(raw) for raw in res], snap

    def _bucket_status(
        self, h: dict[str, str], state: dict[str, str], scope: str, rate: Rate | None,
        burst: int, now: float,
    ) -> dict[str, Any]:
        rec = self.policy.recover_per_second
        b = BucketState(
            tokens=float(h.get("tokens", burst)),
            ts=_float(h, "ts") or now,
            f=_float(h, "f") or 1.0,
            dec=_float(h, "dec"),
            blk=_float(h, "blk") or 0.0,
        )
        if rate is not None:
            b = refill(b, rate.per_second, burst, rec, now)
        blocked = b.blk > now
        since = _float(state, "since" + (f":{scope}" if scope else ""))
        throttled = blocked or b.f < 1
        return {
            "configured_rate": str(rate) if rate is not None else None,
            "rate_per_second": rate.per_second if rate is not None else None,
            "burst": burst,
            "effective_rate": rate.per_second * b.f if rate is not None else None,
            "factor": b.f,
            "tokens": b.tokens if rate is not None else None,
            "blocked_until": b.blk if blocked else None,
            "throttled": throttled,
            "throttled_since": since if throttled else None,
            "throttled_until": recovered_at(b, rec, now) if throttled else None,
        }

    # clocks ----------------------------------------------------------------------------
    def _now_arg(self) -> str:
        # '' lets the script read TIME: one clock for the whole cluster
        return _num(self._clock()) if self._clock is not None else ""

    def _local_now(self) -> float:
        return self._clock() if self._clock is not None else time.monotonic()
