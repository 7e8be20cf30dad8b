"""Cluster-wide rate limits and connection caps, on the Redis server's clock.

Celery's ``rate_limit`` holds per worker; these hold for the whole cluster. One atomic
Lua script per call takes tokens from the provider's bucket and from the buckets of the
recipient domains that have a limit; throttling replies slow a bucket down for every
worker and it recovers by itself (AIMD); connection leases cap open sessions.

Per chunk of a batch, the worker does::

    grant = await limiter.acquire(count_by_domain)
    ...send grant.granted...
    plan = plan_rest(grant, cfg.max_wait)   # sleep and retry plan.retry, park plan.park
"""

from __future__ import annotations

from workers.ratelimit.bucket import AimdPolicy
from workers.ratelimit.grant import Grant
from workers.ratelimit.leases import ConnectionLeases, LeaseConfig
from workers.ratelimit.limiter import LimitConfig, RateLimiter, domain_burst
from workers.ratelimit.waiting import RestPlan, plan_rest, plan_wait

__all__ = [
    "AimdPolicy",
    "ConnectionLeases",
    "Grant",
    "LeaseConfig",
    "LimitConfig",
    "RateLimiter",
    "RestPlan",
    "domain_burst",
    "plan_rest",
    "plan_wait",
]
