"""Reply classification: an SMTP reply or an HTTP status becomes one of our error types.

Pure functions, no I/O. Providers call them at the boundary (see ``workers/errors.py``);
retry logic downstream reads only the resulting types, never reply codes.

SMTP follows RFC 5321 (basic reply codes) and RFC 3463 (enhanced status codes): the
basic code decides transient (4xx) versus permanent (5xx); the enhanced code and the
reply text refine that into throttling, hard bounces, mailbox-full and auth failures.
HTTP follows the contract in docs/architecture.md ("Error classification").
"""

from __future__ import annotations

import email.utils
import http
import math
import re
from datetime import UTC
from typing import Literal

from config.errors import (
    DeliveryError,
    PermanentDeliveryError,
    ProviderAuthError,
    ThrottledError,
    TransientDeliveryError,
)

__all__ = [
    "MailboxFullPolicy",
    "SmtpStage",
    "classify_http",
    "classify_smtp",
    "parse_enhanced",
    "parse_retry_after",
]

#: The SMTP command the reply answered ("connect" is the greeting).
SmtpStage = Literal["connect", "helo", "auth", "mail", "rcpt", "data"]
#: How to treat a full mailbox (``mailbox_full`` in the providers file).
MailboxFullPolicy = Literal["transient", "permanent"]

# An enhanced code opens a reply line (RFC 2034), optionally after the basic code when the
# caller passes whole reply lines ("421-4.7.28 ..."). Subject and detail have 1-3 digits
# (RFC 3463 section 2). The lookahead keeps "4.3.2.1" (an IP address) from matching.
_ENHANCED = re.compile(r"^\s*(?:\d{3}[ -])?\s*([245]\.\d{1,3}\.\d{1,3})(?!\d|\.\d)")
_LINE_PREFIX = re.compile(r"^\s*(?:\d{3}[ -])?\s*(?:[245]\.\d{1,3}\.\d{1,3}(?!\d|\.\d))?\s*")

# Texts that mean "slow down" whatever the code (SES SMTP has no enhanced code at all:
# "454 Throttling failure: Maximum sending rate exceeded").
_THROTTLE_TEXT = re.compile(r"throttl|rate[- ]?limit|sending rate", re.IGNORECASE)
# Weaker texts: they only mean throttling on a 4.7.x (security/policy) reply, where Gmail
# ("421-4.7.28 ... unusual rate") and Microsoft ("451 4.7.500 Server busy. Please try
# again later") put them. On other codes "try again later" is plain greylisting, which
# must not slow the provider's bucket for every worker.
_THROTTLE_TEXT_47 = re.compile(
    r"\brate\b|too many|try again later|server busy", re.IGNORECASE
)
# Gmail's per-recipient limit: "450-4.2.1 ... is receiving mail at a rate that prevents
# additional messages from being delivered". A bare 4.2.1 is "mailbox disabled".

_MAILBOX_FULL_TEXT = re.compile(
    r"mailbox (?:is )?full|over quota|quota exceeded|exceeded storage|insufficient storage",
    re.IGNORECASE,
)
_HARD_BOUNCE_TEXT = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient|account)"
    r"|recipient unknown|unknown recipient|mailbox not found"
    r"|(?:mailbox|user|account|address) (?:does not|doesn't) exist",
    re.IGNORECASE,
)
# 5.1.7 / 5.1.8 are about OUR sender address: the recipient must not be suppressed.
_SENDER_ADDRESS_CODES = frozenset({"5.1.7", "5.1.8"})

# A 552 to RCPT historically meant "too many recipients" (RFC 821's mistake); RFC 5321
# section 4.5.3.1.10 says to treat it as temporary, whatever the mailbox-full policy.
_TOO_MANY_RECIPIENTS = "5.5.3"

# Retry-After / ratelimit-reset numbers at or above this are epoch seconds, not a delay:
# nobody asks to wait 31 years, and every epoch since 2001 is larger.
_EPOCH_THRESHOLD = 1_000_000_000.0
_DELTA_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")


def parse_enhanced(text: str) -> str:
    """The RFC 3463 status code (``"5.1.1"``) that opens a line of ``text``, or ``""``.

    ``text`` is the reply text after the basic code (what aiosmtplib gives as
    ``message``); whole reply lines with the code in front ("550-5.1.1 ...") work too.
    The first line that opens with an enhanced code wins.
    """
    for line in text.splitlines():
        m = _ENHANCED.match(line)
        if m:
            return m.group(1)
    return ""


def _reply_text(text: str) -> str:
    """The human part of a (multi-line) reply, one line, for the ledger.

    Codes are dropped from every line: :meth:`DeliveryError.describe` puts them back once,
    instead of Gmail's repeated "4.7.28" on each continuation line.
    """
    parts = (_LINE_PREFIX.sub("", line, count=1).strip() for line in text.splitlines())
    return " ".join(p for p in parts if p)


def _is_throttling(code: int, enhanced: str, reply: str) -> bool:
    if code == 421:
        # "Service not available, closing transmission channel": Gmail and Microsoft use
        # it for rate limits, and a 421 always ends the session, at any stage.
        return True
    if _THROTTLE_TEXT.search(reply):
        # Also on 5xx: a permanent-looking reply that says "throttled" is still about
        # our pace, and failing a whole campaign's recipients over it costs far more
        # than a bounded number of retries.
        return True
    # Not Gmail's "450 4.2.1 ... receiving mail at a rate": that is one recipient's inbox
    # being flooded, a plain deferral of that recipient. Slowing the whole provider for
    # it would throttle every other recipient for nothing.
    return (400 <= code <= 499 or enhanced.startswith("4.")) and enhanced.startswith(
        "4.7.") and bool(_THROTTLE_TEXT_47.search(reply))


def _is_mailbox_full(code: int, enhanced: str, reply: str, stage: SmtpStage) -> bool:
    if enhanced == "5.2.2":
        return True
    if code == 552 and stage == "rcpt":
        return True
    # Servers without enhanced codes say it in words ("552 Mailbox full").
    return (enhanced == "" or enhanced.startswith("5.2.")) and bool(
        _MAILBOX_FULL_TEXT.search(reply)
    )


def _is_hard_bounce(code: int, enhanced: str, reply: str, stage: SmtpStage) -> bool:
    # At MAIL (or before) a 5.1.x is about the sender; only RCPT and DATA replies (some
    # servers reject recipients after the body) speak about the recipient's address.
    if stage not in ("rcpt", "data"):
        return False
    if enhanced.startswith("5.1.") and enhanced not in _SENDER_ADDRESS_CODES:
        return True
    return (
        code == 550
        and enhanced in ("", "5.0.0")
        and bool(_HARD_BOUNCE_TEXT.search(reply))
    )


def classify_smtp(
    code: int,
    text: str,
    *,
    stage: SmtpStage,
    mailbox_full: MailboxFullPolicy = "transient",
) -> DeliveryError:
    """Map a non-2xx SMTP reply to our error type.

    In order of precedence:

    - :class:`ProviderAuthError`: any 5xx to AUTH (535 5.7.8 bad credentials, 534
      mechanism too weak, 504 unknown mechanism), and 530 "authentication required"
      (or "STARTTLS first") at any stage. Our credentials or TLS setup, not the
      recipient: the provider stops and the batch is kept.
    - :class:`ThrottledError`: 421 at any stage; any 4xx/5xx saying "throttl" /
      "rate limit" / "sending rate" (SES "454 Throttling failure"); 4.7.x saying "rate",
      "too many", "try again later", "server busy" (Gmail 4.7.28, Microsoft 4.7.500);
      Gmail's "450 4.2.1 ... receiving mail at a rate".
    - Mailbox full (5.2.2 at any stage, 552 at RCPT, or "mailbox full"/"over quota"
      text on a 5xx without a more specific enhanced code): transient with
      ``mailbox_full="transient"`` (bulk-sender practice), else permanent but not a
      hard bounce. 552 5.5.3 at RCPT is always transient (RFC 5321 4.5.3.1.10).
    - Hard bounce, :class:`PermanentDeliveryError` with ``hard_bounce=True``: 5.1.x at
      RCPT/DATA (5.1.1 unknown user, 5.1.2 bad domain, 5.1.10 null MX; not 5.1.7/5.1.8,
      which are about our sender), and 550 without an enhanced code whose text says
      "user unknown" / "no such user" and the like.
    - Otherwise the basic code decides: 4xx transient, 5xx permanent. When the basic
      code is neither (a garbled or unexpected reply) the enhanced class decides, and
      without one the reply is transient: unknown means "try again", bounded by
      ``max_attempts``.

    ``text`` is the reply text after the code; the error's ``reply`` keeps it on one
    line with the codes removed (``describe()`` adds them back).
    """
    if 200 <= code <= 299:
        raise ValueError(f"SMTP {code} is a success reply; there is nothing to classify")
    enhanced = parse_enhanced(text)
    reply = _reply_text(text)

    if (stage == "auth" and 500 <= code <= 599) or code == 530:
        return ProviderAuthError(reply, code=code, enhanced=enhanced)
    if _is_throttling(code, enhanced, reply):
        return ThrottledError(reply, code=code, enhanced=enhanced)
    if code == 552 and stage == "rcpt" and enhanced == _TOO_MANY_RECIPIENTS:
        return TransientDeliveryError(reply, code=code, enhanced=enhanced)

    permanent = 500 <= code <= 599 or (not 400 <= code <= 499 and enhanced.startswith("5."))
    if not permanent:
        return TransientDeliveryError(reply, code=code, enhanced=enhanced)
    if _is_mailbox_full(code, enhanced, reply, stage):
        if mailbox_full == "transient":
            return TransientDeliveryError(reply, code=code, enhanced=enhanced)
        return PermanentDeliveryError(reply, code=code, enhanced=enhanced)
    if _is_hard_bounce(code, enhanced, reply, stage):
        return PermanentDeliveryError(reply, code=code, enhanced=enhanced, hard_bounce=True)
    return PermanentDeliveryError(reply, code=code, enhanced=enhanced)


def classify_http(
    status: int, body_message: str, *, retry_after: float | None = None
) -> DeliveryError:
    """Map a non-2xx HTTP status to our error type.

    429 -> :class:`ThrottledError` (with ``retry_after``); 401/403 ->
    :class:`ProviderAuthError`; 408 and 5xx -> :class:`TransientDeliveryError` (keeping
    ``retry_after``, e.g. a 503's Retry-After); any other 4xx ->
    :class:`PermanentDeliveryError` carrying the provider's message. Anything else
    (0 for "no response", an unexpected 1xx/3xx) is transient.

    ``body_message`` is the provider's error text (empty: the status phrase is used);
    ``retry_after`` comes from :func:`parse_retry_after`.
    """
    if 200 <= status <= 299:
        raise ValueError(f"HTTP {status} is a success status; there is nothing to classify")
    reply = body_message.strip() or _status_phrase(status)
    if retry_after is not None and not (math.isfinite(retry_after) and retry_after >= 0):
        retry_after = None
    if status == 429:
        return ThrottledError(reply, code=status, retry_after=retry_after)
    if status in (401, 403):
        return ProviderAuthError(reply, code=status)
    if status == 408 or 500 <= status <= 599:
        return TransientDeliveryError(reply, code=status, retry_after=retry_after)
    if 400 <= status <= 499:
        return PermanentDeliveryError(reply, code=status)
    return TransientDeliveryError(reply, code=status, retry_after=retry_after)


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "no response" if status == 0 else f"HTTP {status}"


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` / ``ratelimit-reset`` header value.

    Accepts delta-seconds (``"120"``, also ``"1.5"``), an HTTP-date (RFC 9110: IMF-fixdate,
    RFC 850 and asctime forms) and epoch seconds (``X-RateLimit-Reset: 1715000000`` as
    SendGrid sends it). A time in the past gives ``0.0``. ``None`` when the value is
    missing or unreadable: the caller then falls back to its own backoff.
    ``now`` is the current unix time, injected so the result is deterministic.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.match(text):
        number = float(text)
        if not math.isfinite(number):
            return None
        if number >= _EPOCH_THRESHOLD:
            return max(0.0, number - now)
        return number
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # The asctime form carries no zone; HTTP dates are always GMT.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
