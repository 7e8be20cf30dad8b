"""Parsing of the human forms used in the providers file: rates and durations."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Rate", "parse_duration", "parse_rate"]

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
        "h": 3600.0, "hour": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` messages every ``per`` seconds."""

    count: float
    per: float

    @property
    def per_second(self) -> float:
        return self.count / self.per

    def __str__(self) -> str:
        return f"{self.count:g}/{self.per:g}s"


def parse_rate(text: str) -> Rate:
    """``"14/s"``, ``"600/m"``, ``"10000/h"``, ``"5/10s"`` -> :class:`Rate`.

    Raises ``ValueError`` for anything else, and for a rate that is not positive.
    """
    m = _RATE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a rate; write it like '14/s', '600/m' or '10000/h'")
    count = float(m.group(1))
    mult = float(m.group(2)) if m.group(2) else 1.0
    if count <= 0 or mult <= 0:
        raise ValueError(f"{text!r}: a rate must be above zero")
    return Rate(count, mult * _PER[m.group(3)])


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``30``, ``"30s"``, ``"5m"``, ``"2h"``, ``"3d"``, ``"250ms"``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a duration; write it like '30s', '5m', '3d'")
        seconds = float(m.group(1)) * _SECONDS[m.group(2)]
    if seconds < 0:
        raise ValueError(f"{value!r}: a duration cannot be negative")
    return seconds
