"""The rate-limit scripts: ``workers/lua/ratelimit/*.lua``, each after ``_common.lua``.

The shared prelude holds the bucket arithmetic once (its reference model is
:mod:`workers.ratelimit.bucket`). Loading and running go through the one loader,
:class:`workers.redis_ops.LuaScript`, like every other script.
"""

from __future__ import annotations

from workers.redis_ops import LuaScript

__all__ = ["ACQUIRE", "LEASE_ACQUIRE", "LEASE_COUNT", "LEASE_RENEW", "THROTTLE"]

_COMMON = ("ratelimit/_common.lua",)

ACQUIRE = LuaScript.load("ratelimit/acquire.lua", include=_COMMON)
THROTTLE = LuaScript.load("ratelimit/throttle.lua", include=_COMMON)
LEASE_ACQUIRE = LuaScript.load("ratelimit/lease_acquire.lua", include=_COMMON)
LEASE_RENEW = LuaScript.load("ratelimit/lease_renew.lua", include=_COMMON)
LEASE_COUNT = LuaScript.load("ratelimit/lease_count.lua", include=_COMMON)
