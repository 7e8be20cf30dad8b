"""Signing webhook calls the way each provider does, with keys made in the test."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from workers.feedback.sns import string_to_sign

__all__ = ["SnsSigner", "basic_auth", "ec_keypair", "mailgun_body", "sendgrid_headers", "sns_time",
           "svix_headers"]


def ec_keypair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key and its public half as SendGrid shows it (base64 DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, base64.b64encode(der).decode()


def sendgrid_headers(key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int
                     ) -> dict[str, str]:
    sig = key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
            "Content-Type": "application/json"}


def mailgun_body(key: str, event_data: dict[str, Any], timestamp: int,
                 token: str | None = None) -> bytes:
    token = token or secrets.token_hex(25)
    sig = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": str(timestamp), "token": token,
                                     "signature": sig},
                       "event-data": event_data}).encode()


def svix_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    sig = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # several signatures, as during a secret rotation: one stale, one good
    return {"svix-id": msg_id, "svix-timestamp": str(timestamp),
            "svix-signature": f"v1,{base64.b64encode(b'old' * 11).decode()} v1,{sig}",
            "Content-Type": "application/json"}


def basic_auth(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


class SnsSigner:
    """A locally made RSA key and self-signed certificate standing in for SNS's, and the
    fake fetcher that serves it (recording every URL fetched)."""

    def __init__(self, region: str = "us-west-2") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sns.{region}.amazonaws.com")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1))
                     .not_valid_after(now + dt.timedelta(days=30))
                     .sign(self.key, hashes.SHA256()))
        self.url = (f"https://sns.{region}.amazonaws.com/"
                    "SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem")
        self.fetched: list[str] = []

    async def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if url.endswith(".pem"):
            return self.cert.public_bytes(serialization.Encoding.PEM)
        return b"<ConfirmSubscriptionResponse/>"

    def sign(self, message: dict[str, Any], version: str | None = None) -> dict[str, Any]:
        version = version or message.get("SignatureVersion", "2")
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        sig = self.key.sign(string_to_sign(message), padding.PKCS1v15(), algorithm)
        return message | {"SignatureVersion": version,
                          "Signature": base64.b64encode(sig).decode()}


def sns_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{when.microsecond // 1000:03d}Z"
