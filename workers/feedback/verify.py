"""Checking that a webhook call is the provider's own, each the way it documents it.

Pure functions over the raw request (headers, body bytes) and a clock; each raises
:class:`SignatureError` (whose text names what failed, never a secret) or returns what
the caller needs next. Where the scheme carries a timestamp, a call older (or further in
the future) than ``tolerance`` seconds is refused: a captured request cannot be replayed
later. Within the window, replays are caught by event id (and Mailgun's token).

- SendGrid: ECDSA P-256 / SHA-256 over ``timestamp + raw body``, headers
  ``X-Twilio-Email-Event-Webhook-Signature`` (base64 DER) and ``-Timestamp``; the
  public key as SendGrid shows it (base64 DER, or PEM).
- Mailgun: hex HMAC-SHA256 keyed with the webhook signing key over
  ``timestamp + token`` (from the body's ``signature`` object).
- Postmark: HTTP basic auth put in the webhook URL.
- Resend (Svix): HMAC-SHA256 keyed with the base64 secret after ``whsec_`` over
  ``svix-id.svix-timestamp.body``; ``svix-signature`` lists ``v1,<base64>`` entries.
- SES: SNS message signatures, see :mod:`workers.feedback.sns`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from config.errors import BulkmailError

__all__ = [
    "SignatureError",
    "check_fresh",
    "json_body",
    "load_sendgrid_key",
    "svix_secret",
    "verify_basic_auth",
    "verify_mailgun",
    "verify_sendgrid",
    "verify_svix",
]


class SignatureError(BulkmailError, PermissionError):
    """The call is not proven to be the provider's (bad, missing or stale signature)."""


def check_fresh(timestamp: str, now: float, tolerance: float) -> float:
    """The timestamp (unix seconds) when within ``tolerance`` of ``now``."""
    try:
        ts = float(timestamp.strip())
    except (ValueError, AttributeError):
        raise SignatureError("the signature timestamp is not a number") from None
    if ts != ts or abs(now - ts) > tolerance:  # NaN, or out of the window
        raise SignatureError(f"the signature timestamp is outside the {tolerance:.0f}s "
                             "replay window")
    return ts


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name) or headers.get(name.lower())
    if not value:
        raise SignatureError(f"missing header {name}")
    return value


def load_sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key: base64 DER (as its console shows it) or PEM."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, TypeError):
        raise ValueError("the SendGrid verification key is not a public key "
                         "(base64 DER or PEM)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the SendGrid verification key is not an ECDSA key")
    return key


def verify_sendgrid(key: ec.EllipticCurvePublicKey, headers: Mapping[str, str], body: bytes,
                    *, now: float, tolerance: float) -> None:
    """SendGrid's Signed Event Webhook."""
    signature = _header(headers, "X-Twilio-Email-Event-Webhook-Signature")
    timestamp = _header(headers, "X-Twilio-Email-Event-Webhook-Timestamp")
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise SignatureError("the SendGrid signature does not match") from None
    check_fresh(timestamp, now, tolerance)


def verify_mailgun(key: str, payload: Any, *, now: float, tolerance: float) -> str:
    """Mailgun's signature block; returns the token (the caller refuses reused ones)."""
    block = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(block, dict):
        raise SignatureError("missing the 'signature' object")
    timestamp, token, signature = (block.get(k) for k in ("timestamp", "token", "signature"))
    if not all(isinstance(v, str | int) and str(v) for v in (timestamp, token, signature)):
        raise SignatureError("the 'signature' object lacks timestamp, token or signature")
    expected = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), str(signature).encode()):
        raise SignatureError("the Mailgun signature does not match")
    check_fresh(str(timestamp), now, tolerance)
    return str(token)


def verify_basic_auth(expected: str, authorization: str | None) -> None:
    """``Authorization: Basic`` with the configured ``user:password``."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not value:
        raise SignatureError("missing basic auth")
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("malformed basic auth") from None
    if not hmac.compare_digest(given, expected.encode()):
        raise SignatureError("wrong basic auth credentials")


def svix_secret(secret: str) -> bytes:
    """The HMAC key of a Svix ``whsec_...`` secret."""
    try:
        return base64.b64decode(secret.strip().removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the signing secret is not 'whsec_' followed by base64") from None


def verify_svix(key: bytes, headers: Mapping[str, str], body: bytes, *, now: float,
                tolerance: float) -> str:
    """Resend's Svix signature; returns ``svix-id`` (the event id)."""
    msg_id = _header(headers, "svix-id")
    timestamp = _header(headers, "svix-timestamp")
    signatures = _header(headers, "svix-signature")
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for entry in signatures.split():
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig.encode(), expected):
            check_fresh(timestamp, now, tolerance)
            return msg_id
    raise SignatureError("no svix-signature entry matches")


def json_body(body: bytes) -> Any:
    """The body as JSON; a :class:`ValueError` when it is not."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("the body is not JSON") from None
