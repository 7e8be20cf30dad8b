"""Amazon SNS message signatures (SES events reach us through an SNS topic).

An SNS message is a JSON object whose ``Signature`` (base64) is an RSA PKCS#1 v1.5
signature, SHA-1 for ``SignatureVersion`` 1 and SHA-256 for 2, over the *string to
sign*: ``Name\\nvalue\\n`` for the documented fields in byte order (Notification:
Message, MessageId, Subject when present, Timestamp, TopicArn, Type; the two
confirmations: Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type). The
key is in the X.509 certificate at ``SigningCertURL``, which must be
``https://sns.<region>.amazonaws.com/...pem`` with the region of the topic. A valid
signature only proves the message is from SNS: :class:`SnsVerifier` also requires the
topic to be one of the account's (``webhook_topic_arns``), and the ``Timestamp`` within
the replay window.

Certificates are fetched by an injectable async ``fetch(url) -> bytes`` and cached by URL.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from workers.feedback.verify import SignatureError, check_fresh

__all__ = ["Fetch", "SnsVerifier", "check_sns_url", "fetch_https", "string_to_sign"]

#: ``await fetch(url)`` -> the body of a GET (certificates, SubscribeURL)
Fetch = Callable[[str], Awaitable[bytes]]

_NOTIFICATION: tuple[str, ...] = ("Message", "MessageId", "Subject", "Timestamp",
                                  "TopicArn", "Type")
_CONFIRMATION: tuple[str, ...] = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                  "TopicArn", "Type")
_HOST = re.compile(r"sns\.([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com", re.ASCII)
_ARN = re.compile(r"arn:aws[a-z-]*:sns:([a-z]{2}(?:-[a-z]+)+-\d):\d{12}:[\w-]{1,256}", re.ASCII)
#: most certificates kept (one per region and key rotation is plenty)
CACHE_SIZE = 16
#: largest certificate or confirmation answer read
MAX_FETCH = 64 * 1024


def string_to_sign(message: dict[str, Any]) -> bytes:
    """The canonical string SNS signs for this message's ``Type``."""
    kind = message.get("Type")
    if kind == "Notification":
        names = _NOTIFICATION
    elif kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        names = _CONFIRMATION
    else:
        raise SignatureError("unknown SNS message Type")
    out = []
    for name in names:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise SignatureError(f"SNS message field {name} missing")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode()


def check_sns_url(url: Any, region: str, *, suffix: str = "") -> str:
    """``url`` when it is https on ``sns.<region>.amazonaws.com`` (ending in ``suffix``)."""
    if not isinstance(url, str):
        raise SignatureError("an SNS URL is missing")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        raise SignatureError("an SNS URL is not a URL") from None
    m = _HOST.fullmatch(host)
    if (parts.scheme != "https" or m is None or m.group(1) != region or port not in (None, 443)
            or parts.username is not None or not parts.path.endswith(suffix)):
        raise SignatureError(f"refused SNS URL host {host!r}: only https://sns.{region}."
                             "amazonaws.com")
    return url


async def fetch_https(url: str) -> bytes:
    """GET ``url`` (no redirects, 10 s, at most :data:`MAX_FETCH` bytes)."""
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client, \
            client.stream("GET", url) as response:
        if response.status_code != 200:
            raise SignatureError(f"GET {urlsplit(url).hostname} answered "
                                 f"{response.status_code}")
        data = b""
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > MAX_FETCH:
                raise SignatureError("the SNS answer is too large")
        return data


class SnsVerifier:
    """Verifies SNS messages for one account (its topics), caching certificates."""

    def __init__(self, topics: Collection[str], *, fetch: Fetch = fetch_https) -> None:
        self.topics = frozenset(topics)
        self.fetch = fetch
        self._certs: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        key = self._certs.get(url)
        if key is not None:
            self._certs.move_to_end(url)
            return key
        try:
            cert = x509.load_pem_x509_certificate(await self.fetch(url))
        except ValueError:
            raise SignatureError("the SNS signing certificate is not a PEM certificate"
                                 ) from None
        public = cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise SignatureError("the SNS signing certificate has no RSA key")
        self._certs[url] = public
        if len(self._certs) > CACHE_SIZE:
            self._certs.popitem(last=False)
        return public

    def region(self, message: dict[str, Any]) -> str:
        """The region of the message's topic, when the topic is one of ours."""
        arn = message.get("TopicArn")
        m = _ARN.fullmatch(arn) if isinstance(arn, str) else None
        if m is None or arn not in self.topics:
            raise SignatureError("the SNS topic is not one configured in webhook_topic_arns")
        return m.group(1)

    async def verify(self, message: Any, *, now: float, tolerance: float) -> None:
        """Raise :class:`SignatureError` unless ``message`` is a fresh, signed SNS message
        of one of our topics."""
        if not isinstance(message, dict):
            raise SignatureError("not an SNS message")
        region = self.region(message)
        version = message.get("SignatureVersion")
        algorithm: hashes.HashAlgorithm
        if version == "1":
            algorithm = hashes.SHA1()  # SNS's version 1 is SHA1withRSA, as documented
        elif version == "2":
            algorithm = hashes.SHA256()
        else:
            raise SignatureError("unknown SNS SignatureVersion")
        url = check_sns_url(message.get("SigningCertURL"), region, suffix=".pem")
        canonical = string_to_sign(message)
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("the SNS signature is not base64") from None
        key = await self._key(url)
        try:
            key.verify(signature, canonical, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise SignatureError("the SNS signature does not match") from None
        try:
            ts = datetime.fromisoformat(str(message["Timestamp"]).replace("Z", "+00:00"))
        except ValueError:
            raise SignatureError("the SNS Timestamp is not a time") from None
        check_fresh(str(ts.timestamp()), now, tolerance)

    async def confirm(self, message: dict[str, Any]) -> None:
        """Confirm a verified SubscriptionConfirmation: GET its SubscribeURL (on the
        topic's own SNS host only)."""
        region = self.region(message)
        await self.fetch(check_sns_url(message.get("SubscribeURL"), region))
