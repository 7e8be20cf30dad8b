"""Per worker process state: one long-lived event loop and what lives on it.

Created in ``worker_process_init`` (after the fork), so pooled SMTP sessions and HTTP
clients are never shared between processes. The task body is a thin synchronous wrapper
that runs one coroutine on this loop; ``asyncio.run()`` per task would throw the pools
away after every batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

import redis.asyncio as aioredis

from config.providers import ProviderConfig
from config.settings import Settings
from workers.providers import Provider, create_provider
from workers.ratelimit import ConnectionLeases, RateLimiter
from workers.ratelimit.gate import LeaseGate
from workers.templates import CompiledCampaign

__all__ = ["Runtime"]

log = logging.getLogger("bulkmail.worker")
T = TypeVar("T")

_CAMPAIGN_CACHE = 64


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


class Runtime:
    """The process-wide loop, Redis client, providers and compiled campaigns."""

    _current: ClassVar[Runtime | None] = None

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.loop = _new_loop()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._provider_configs: dict[str, ProviderConfig] | None = None
        self._providers: dict[str, Provider] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._campaigns: OrderedDict[str, CompiledCampaign] = OrderedDict()
        self._redis: aioredis.Redis[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------
    @classmethod
    def start(cls, settings: Settings | None = None) -> Runtime:
        if cls._current is None:
            cls._current = cls(settings)
        return cls._current

    @classmethod
    def get(cls) -> Runtime:
        """The process's runtime (created on first use, e.g. under ``--pool solo``)."""
        return cls.start()

    @classmethod
    def stop(cls) -> None:
        current, cls._current = cls._current, None
        if current is not None:
            current.close()

    def close(self) -> None:
        async def shutdown() -> None:
            for provider in self._providers.values():
                with contextlib.suppress(Exception):
                    await provider.aclose()
            if self._redis is not None:
                await self._redis.aclose()  # type: ignore[attr-defined]  # stubs predate it

        with contextlib.suppress(Exception):
            self.loop.run_until_complete(shutdown())
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    # -- shared resources ------------------------------------------------------------
    @property
    def redis(self) -> aioredis.Redis[bytes]:
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(self.settings.redis_url)
        return self._redis

    @property
    def provider_configs(self) -> dict[str, ProviderConfig]:
        if self._provider_configs is None:
            self._provider_configs = self.settings.load_providers()
        return self._provider_configs

    def provider(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            cfg = self.provider_configs[name]
            gate = None
            if cfg.max_connections is not None:
                # SMTP: one lease per open session; HTTP APIs: one per call in flight
                leases = ConnectionLeases(self.redis, self.settings.keys, name, cfg)
                gate = LeaseGate(leases, self.worker_id, wait=cfg.max_wait)
            provider = create_provider(name, cfg, gate=gate)
            self._providers[name] = provider
        return provider

    def limiter(self, name: str) -> RateLimiter:
        """The provider's cluster-wide rate limiter (free when no limit is configured)."""
        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = RateLimiter(self.redis, self.settings.keys, name,
                                  self.provider_configs[name])
            self._limiters[name] = limiter
        return limiter

    def campaign(self, cid: str, spec_json: str) -> CompiledCampaign:
        """Compiled once per process per campaign; a small LRU bounds memory."""
        compiled = self._campaigns.get(cid)
        if compiled is None:
            from config.schema import CampaignSpec

            compiled = CompiledCampaign.compile(CampaignSpec.from_json(spec_json))
            self._campaigns[cid] = compiled
            if len(self._campaigns) > _CAMPAIGN_CACHE:
                self._campaigns.popitem(last=False)
        else:
            self._campaigns.move_to_end(cid)
        return compiled
