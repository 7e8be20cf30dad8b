"""Fake Amazon SES v2 ``POST /v2/email/outbound-emails`` (PROVIDERS.md, "Amazon SES v2").

Checks the SigV4 signature for real (service ``ses``, the fake's key pair and region:
403 ``InvalidSignatureException`` / ``UnrecognizedClientException`` otherwise); the
sender must be a verified identity (400 ``MessageRejected``); <= 50 recipients; 40 MB;
Simple or Raw content; 200 ``{"MessageId"}``. Errors carry ``x-amzn-ErrorType`` and
``{"message"}`` as SES does.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.fakes.base import Delivered, FakeApi, json_response

__all__ = ["FakeSes"]

PATH = "/v2/email/outbound-emails"
MAX_RECIPIENTS = 50
MAX_BYTES = 40 * 1024 * 1024
_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,"
                   r" SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$")


def _error(status: int, kind: str, message: str) -> httpx.Response:
    return json_response(status, {"message": message},
                         {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/"})


class FakeSes(FakeApi):
    def __init__(self, *, key_id: str = "AKIDFAKE", secret: str = "fake-secret",
                 region: str = "us-east-1", verified: set[str] | None = None,
                 rejected: set[str] | None = None) -> None:
        super().__init__()
        self.key_id = key_id
        self.secret = secret
        self.region = region
        #: verified identities: addresses or whole domains
        self.verified = verified if verified is not None else {"example.com"}
        #: recipients SES rejects with MessageRejected (one call fails, the others go)
        self.rejected = rejected or set()

    def serve(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or request.url.path != PATH:
            return _error(404, "NotFoundException", "Not found")
        problem = self._check_signature(request)
        if problem is not None:
            return problem
        if len(request.content) > MAX_BYTES:
            return _error(400, "MessageRejected", "Message length is more than 40 MB")
        body = json.loads(request.content)
        sender = body.get("FromEmailAddress", "")
        address = sender.rsplit("<", 1)[-1].rstrip(">").strip()
        if address not in self.verified and address.split("@")[-1] not in self.verified:
            return _error(400, "MessageRejected", "Email address is not verified. The "
                          "following identities failed the check in region "
                          f"{self.region.upper()}: {address}")
        to = body.get("Destination", {}).get("ToAddresses", [])
        if not to:
            return _error(400, "BadRequestException", "Missing destination")
        if len(to) > MAX_RECIPIENTS:
            return _error(400, "BadRequestException",
                          "Recipient count exceeds 50.")
        for rcpt in to:
            if rcpt in self.rejected:
                return _error(400, "MessageRejected", f"Address blacklisted: {rcpt}")
        message_id = f"0100{uuid.uuid4().hex}-000000"
        for rcpt in to:
            self.delivered.append(self._delivered(body, sender, rcpt, message_id))
        return json_response(200, {"MessageId": message_id})

    def _check_signature(self, request: httpx.Request) -> httpx.Response | None:
        m = _AUTH.match(request.headers.get("Authorization", ""))
        if m is None or "X-Amz-Date" not in request.headers:
            return _error(403, "MissingAuthenticationTokenException",
                          "Missing Authentication Token")
        key_id, day, region, service, signed, signature = m.groups()
        if key_id != self.key_id:
            return _error(403, "UnrecognizedClientException",
                          "The security token included in the request is invalid.")
        if region != self.region or service != "ses":
            return _error(403, "InvalidSignatureException",
                          f"Credential should be scoped to a valid region/service: {region}")
        aws = AWSRequest(method=request.method, url=str(request.url), data=request.content,
                         headers={h: request.headers[h] for h in signed.split(";")})
        aws.context["timestamp"] = request.headers["X-Amz-Date"]
        signer = SigV4Auth(Credentials(self.key_id, self.secret), "ses", self.region)
        expected = signer.signature(
            signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
        if expected != signature or not aws.context["timestamp"].startswith(day):
            return _error(403, "InvalidSignatureException",
                          "The request signature we calculated does not match the "
                          "signature you provided.")
        return None

    @staticmethod
    def _delivered(body: dict[str, Any], sender: str, rcpt: str, message_id: str
                   ) -> Delivered:
        tags = {t["Name"]: t["Value"] for t in body.get("EmailTags") or []}
        content = body.get("Content", {})
        if "Raw" in content:
            msg = message_from_bytes(base64.b64decode(content["Raw"]["Data"]),
                                     policy=default_policy)
            text = msg.get_body(("plain",))
            html = msg.get_body(("html",))
            return Delivered(
                to=rcpt, sender=sender, subject=str(msg["Subject"]),
                text=text.get_content() if text else None,
                html=html.get_content() if html else None,
                headers={k: str(v) for k, v in msg.items()}, meta=tags,
                provider_id=message_id)
        simple = content["Simple"]
        parts = simple.get("Body", {})
        headers = {h["Name"]: h["Value"] for h in simple.get("Headers") or []}
        if body.get("ReplyToAddresses"):
            headers["Reply-To"] = ", ".join(body["ReplyToAddresses"])
        return Delivered(
            to=rcpt, sender=sender, subject=simple["Subject"]["Data"],
            text=parts.get("Text", {}).get("Data"), html=parts.get("Html", {}).get("Data"),
            headers=headers, meta=tags, provider_id=message_id)
