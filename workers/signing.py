"""Keys derived from ``BULKMAIL_SIGNING_KEY``, one per purpose, and the HMAC tags made with
them.

One secret serves several uses (signed campaign records and batch payloads, one-click
unsubscribe tokens, VERP return paths). Each use derives its own key,
``HMAC-SHA256(secret, "bulkmail/v1/" + purpose)``, so a tag made for one purpose never
verifies for another, and knowing one derived key reveals neither the secret nor the
other keys. Tags cover their parts length-prefixed, so ``("ab", "c")`` and
``("a", "bc")`` never share a tag.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

__all__ = ["PURPOSES", "derive_key", "make_tag", "verify_tag"]

#: every purpose a key is derived for; a new use adds its name here
PURPOSES: Final = frozenset({"records", "unsubscribe", "verp"})


def derive_key(secret: bytes, purpose: str) -> bytes:
    """The 32-byte key for ``purpose`` (one of :data:`PURPOSES`)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown signing purpose {purpose!r}; expected one of "
                         f"{', '.join(sorted(PURPOSES))}")
    if not secret:
        raise ValueError("the signing secret is empty")
    return hmac.new(secret, b"bulkmail/v1/" + purpose.encode(), hashlib.sha256).digest()


def _mac(key: bytes, parts: tuple[bytes | str, ...]) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        mac.update(len(data).to_bytes(8, "big"))
        mac.update(data)
    return mac.digest()


def make_tag(key: bytes, *parts: bytes | str, size: int = 32) -> str:
    """URL-safe base64 (no padding) of the first ``size`` bytes of the HMAC of ``parts``."""
    if not 16 <= size <= 32:
        raise ValueError(f"tag size must be 16..32 bytes, got {size}")
    return base64.urlsafe_b64encode(_mac(key, parts)[:size]).rstrip(b"=").decode()


def verify_tag(key: bytes, tag: str, *parts: bytes | str) -> bool:
    """Whether ``tag`` was made by :func:`make_tag` with ``key`` over ``parts`` (any size)."""
    try:
        raw = base64.urlsafe_b64decode(tag + "=" * (-len(tag) % 4))
    except (ValueError, TypeError):
        return False
    if not 16 <= len(raw) <= 32:
        return False
    return hmac.compare_digest(raw, _mac(key, parts)[: len(raw)])
