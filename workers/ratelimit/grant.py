"""What one :meth:`RateLimiter.acquire` call gave: tokens per domain and the wait for
the rest. Partial grants are data, not errors: the caller sends what it got."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Grant"]


@dataclass(frozen=True, slots=True)
class Grant:
    """Messages that may be sent now, per recipient domain, and when to ask again.

    ``granted`` has an entry for every domain asked for (0 when none). ``waits`` has one
    for every domain with messages left: seconds until its bucket and the provider's
    would let it progress again (assuming nobody else takes tokens meanwhile). ``wait``
    is the longest of those, 0 when everything was granted. Use ``waits`` (or
    :func:`~workers.ratelimit.waiting.plan_rest`) to keep a slow domain from holding
    back the others.
    """

    granted: dict[str, int]
    wait: float = 0.0
    wanted: dict[str, int] = field(default_factory=dict)
    waits: dict[str, float] = field(default_factory=dict)

    @classmethod
    def everything(cls, wanted: Mapping[str, int]) -> Grant:
        """All of ``wanted``, no wait (no limit applies)."""
        return cls(granted=dict(wanted), wanted=dict(wanted))

    @classmethod
    def nothing(cls, wanted: Mapping[str, int], wait: float) -> Grant:
        """None of ``wanted``; every domain waits ``wait`` seconds."""
        return cls(granted=dict.fromkeys(wanted, 0), wait=wait, wanted=dict(wanted),
                   waits=dict.fromkeys(wanted, wait))

    @property
    def total(self) -> int:
        """Messages granted over all domains."""
        return sum(self.granted.values())

    @property
    def complete(self) -> bool:
        """Everything asked for was granted."""
        return not self.remaining

    @property
    def remaining(self) -> dict[str, int]:
        """Domain -> messages not granted (only domains with some left)."""
        rest = {d: n - self.granted.get(d, 0) for d, n in self.wanted.items()}
        return {d: n for d, n in rest.items() if n > 0}

    def wait_for(self, domain: str) -> float:
        """Seconds until ``domain``'s remaining messages can progress (0 if none left)."""
        return self.waits.get(domain, 0.0)
