"""The one canonical form of an email address, shared by producers and workers.

``local@domain`` with the domain IDNA-encoded (UTS 46, via the ``idna`` package) and
lower-cased, the local part kept as it is. Dedupe, the ledger, suppression and per-domain
rate limits all use it, so ``user@bücher.example`` and ``user@xn--bcher-kva.example`` are
one recipient everywhere. A non-ASCII local part is kept: whether it may be sent (SMTPUTF8)
is the sending side's decision.

:func:`address_key` is the comparison key built on it (the whole address folded), for the
places that compare addresses case-insensitively: dedupe and the suppression list.
"""

from __future__ import annotations

import functools

import idna

__all__ = ["address_key", "canonical_address", "canonical_domain"]

#: distinct domains whose encoding is kept (least recently used dropped)
_DOMAIN_CACHE_SIZE = 8192


@functools.lru_cache(maxsize=_DOMAIN_CACHE_SIZE)
def canonical_domain(domain: str) -> str:
    """``domain`` IDNA-encoded (UTS 46 mapping, non-transitional) and lower-cased.

    Never raises: a domain IDNA refuses (empty labels, a broken ``xn--`` label ...) is
    only lower-cased, so callers that must be lenient (the suppression list only ever
    stops mail) still get a stable key. Address validation refuses such domains earlier.
    """
    if domain.isascii() and "xn--" not in domain.lower():
        # The common case, and IDNA would change nothing but the case.
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        return domain.lower()


def canonical_address(address: str) -> str:
    """The canonical form of ``address``: domain as :func:`canonical_domain`, local part
    unchanged. The split is at the last ``@`` (a quoted local part may hold one); an
    address without ``@`` is returned unchanged."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    return f"{local}@{canonical_domain(domain)}"


def address_key(address: str) -> str:
    """What two addresses are compared by: the canonical form, stripped and lower-cased
    whole (no mailbox provider treats the local part's case as significant, and missing a
    duplicate or a suppressed address is the worse error)."""
    return canonical_address(address.strip()).lower()
