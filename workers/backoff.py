"""Retry timing: how long to wait before the next attempt, and when to stop trying.

Pure functions; the randomness source is injectable so tests are deterministic.
"""

from __future__ import annotations

import math
import random

__all__ = ["backoff_ceiling", "compute_backoff", "should_give_up"]

# Beyond 2**64 every realistic base is far past any cap; stopping the exponent here keeps
# the arithmetic finite for absurd attempt numbers instead of raising OverflowError.
_MAX_EXPONENT = 64

_default_rng = random.Random()


def _check(attempt: int, base: float, cap: float) -> None:
    if attempt < 1:
        raise ValueError(f"attempt counts from 1 (the attempt that just failed), got {attempt}")
    if not (base >= 0 and math.isfinite(base)):
        raise ValueError(f"backoff base must be a finite number >= 0, got {base!r}")
    if not cap >= 0:
        raise ValueError(f"backoff cap must be >= 0, got {cap!r}")


def backoff_ceiling(attempt: int, *, base: float, cap: float) -> float:
    """The most :func:`compute_backoff` can draw for ``attempt``: ``min(cap, base*2**(n-1))``.

    Non-decreasing in ``attempt`` and never above ``cap``.
    """
    _check(attempt, base, cap)
    return min(cap, base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))


def compute_backoff(
    attempt: int,
    *,
    base: float,
    cap: float,
    rng: random.Random | None = None,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first try).

    Exponential backoff with *full* jitter: uniform over ``[0, min(cap, base*2**(n-1))]``.
    Full jitter rather than "exponential plus a little noise" because many workers fail
    together (a throttled provider, a dropped relay) and must not come back together.

    ``retry_after`` (seconds the provider asked for) is a floor: the result is at least
    that, and exceeds ``cap`` only when the provider itself asked for longer. A negative
    or non-finite ``retry_after`` is ignored.
    """
    ceiling = backoff_ceiling(attempt, base=base, cap=cap)
    delay = (rng or _default_rng).uniform(0.0, ceiling)
    if retry_after is not None and math.isfinite(retry_after) and retry_after > delay:
        delay = retry_after
    return delay


def should_give_up(
    attempts: int, first_attempt_at: float, now: float, *, max_attempts: int, max_age: float
) -> bool:
    """True when no further attempt may be made.

    ``attempts`` is how many attempts were already made; ``first_attempt_at`` and
    ``now`` are unix seconds. Stops once ``max_attempts`` attempts were made or the work
    is ``max_age`` seconds old. To ask "would the *next* attempt still be young enough",
    pass its due time as ``now``.
    """
    return attempts >= max_attempts or now - first_attempt_at >= max_age
