"""The state of one provider as the whole cluster sees it: one Redis hash, one class.

``bulkmail status`` shows it. Everything that reads or writes the hash
``keys.provider_state(provider)`` goes through :class:`ProviderState`: the worker when a
provider rejects our credentials, the rate limiter (its ``throttle.lua`` writes the
throttling fields, :meth:`ProviderState.read` feeds its status) and the CLI readers.

Fields (all strings in Redis; times are unix seconds on the Redis server's clock):

==========================  ============================================================
``auth_error``              the provider's reply when it last rejected our credentials
``auth_error_at``           when that happened
``reason``, ``at``          the last throttling reply and when it came
``scope``, ``domain``       the bucket it slowed ('' = the provider) and the recipient
                            domain it was about
``since[:scope]``           start of the current throttling episode of that bucket
``until[:scope]``           when that bucket is expected back at its configured rate
``throttles``               throttling replies counted so far
``decreases``               how many of them slowed the rate down (one per storm)
==========================  ============================================================

Like every Redis access here, each operation is written once as a sans-I/O
:data:`~workers.redis_ops.RedisOp`; run it with :func:`~workers.redis_ops.run_sync` (CLI)
or :func:`~workers.redis_ops.run_async` (worker)::

    state = ProviderState(settings.keys, "smtp")
    snap = run_sync(client, state.read())
    await run_async(rt.redis, state.record_auth_error(exc.describe()))

The provider circuit (state, since, last error, next probe) is meant to live here too:
new fields in the same hash, read into :class:`ProviderSnapshot`, and its transitions as
further operations of this class.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.schema import Keys
from workers.redis_ops import Command, RedisOp, as_text, reply_pairs, server_time

__all__ = ["ProviderSnapshot", "ProviderState"]


@dataclass(frozen=True, slots=True)
class ProviderSnapshot:
    """The hash as read at one moment; ``fields`` holds it verbatim (``status --json``)."""

    provider: str
    fields: dict[str, str]

    def number(self, name: str) -> float | None:
        """Field ``name`` as a float, None when absent or empty."""
        value = self.fields.get(name)
        return float(value) if value not in (None, "") else None

    def count(self, name: str) -> int:
        """Field ``name`` as a counter (0 when absent)."""
        return int(self.fields.get(name) or 0)

    @property
    def auth_error(self) -> str | None:
        """The provider's last rejection of our credentials, if any."""
        return self.fields.get("auth_error")

    @property
    def auth_error_at(self) -> float | None:
        return self.number("auth_error_at")

    @property
    def last_reason(self) -> str | None:
        """The last throttling reply, if any."""
        return self.fields.get("reason")

    @property
    def last_throttle_at(self) -> float | None:
        return self.number("at")

    def throttled_since(self, scope: str = "") -> float | None:
        """Start of the throttling episode of the provider ('') or of a limited domain."""
        return self.number("since" + (f":{scope}" if scope else ""))


class ProviderState:
    """Operations on the state hash of ``provider`` (no I/O; see the module docstring)."""

    def __init__(self, keys: Keys, provider: str) -> None:
        self.provider = provider
        #: the hash; Lua scripts that update it (``throttle.lua``) take it as a key
        self.key = keys.provider_state(provider)

    def read(self) -> RedisOp[ProviderSnapshot]:
        """The whole hash (empty when the provider never had anything to report)."""
        raw = yield Command(("HGETALL", self.key))
        fields = {as_text(k): as_text(v) for k, v in reply_pairs(raw)}
        return ProviderSnapshot(self.provider, fields)

    def record_auth_error(self, reason: str) -> RedisOp[float]:
        """Note that the provider rejected our credentials with ``reason``; returns the
        time recorded (Redis server clock, so every worker's record is comparable)."""
        now = yield from server_time()
        yield Command(("HSET", self.key, "auth_error", reason, "auth_error_at", repr(now)))
        return now
