"""Fake Amazon SES v2 ``POST /v2/email/outbound-emails`` (SendEmail) and
``/v2/email/outbound-bulk-emails`` (SendBulkEmail) (docs/providers.md, "Amazon SES v2").

Both check the SigV4 signature for real (service ``ses``, the fake's key pair and region:
403 ``InvalidSignatureException`` / ``UnrecognizedClientException`` otherwise) and that
the sender is a verified identity (400 ``MessageRejected``); 40 MB. Errors carry
``x-amzn-ErrorType`` and ``{"message"}`` as SES does.

SendEmail: <= 50 recipients; Simple or Raw content; 200 ``{"MessageId"}``.

SendBulkEmail: ``DefaultContent.Template.TemplateName`` must name one of
:attr:`FakeSes.templates` (404 ``NotFoundException`` otherwise), 1 to 50
``BulkEmailEntries`` (400 ``BadRequestException`` otherwise), each
``ReplacementTemplateData`` a JSON object of at most 262,144 characters (400). Answers
200 ``{"BulkEmailEntryResults": [{"Status", "MessageId"} | {"Status", "Error"}]}`` in
entry order: ``SUCCESS``, or the status scripted for the entry's address in
:attr:`FakeSes.bulk_status`, or ``MESSAGE_REJECTED`` for a :attr:`FakeSes.rejected`
address. The template is rendered with ``{{name}}`` substitution over the default data
overlaid by the entry's; a variable with no value is a rendering failure, as in SES: the
entry still answers ``SUCCESS`` but nothing is delivered (:attr:`FakeSes.render_failures`).
``ReplacementHeaders`` become the delivered message's headers (over the template's),
``ReplacementTags`` (else ``DefaultEmailTags``) its event tags.
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
BULK_PATH = "/v2/email/outbound-bulk-emails"
MAX_RECIPIENTS = 50
MAX_BULK_ENTRIES = 50
MAX_TEMPLATE_DATA = 262_144
#: the ``Error`` text each scripted bulk status answers with
BULK_ERRORS = {
    "MESSAGE_REJECTED": "Email address is on the account-level suppression list.",
    "MAIL_FROM_DOMAIN_NOT_VERIFIED": "The MAIL FROM domain is not verified.",
    "TEMPLATE_NOT_FOUND": "Template does not exist.",
    "CONFIGURATION_SET_NOT_FOUND": "Configuration set does not exist.",
    "ACCOUNT_SUSPENDED": "Account is suspended.",
    "ACCOUNT_THROTTLED": "Maximum sending rate exceeded.",
    "ACCOUNT_DAILY_QUOTA_EXCEEDED": "Daily message quota exceeded.",
    "INVALID_SENDING_POOL_NAME": "The dedicated IP pool does not exist.",
    "ACCOUNT_SENDING_PAUSED": "Sending is paused for this account.",
    "CONFIGURATION_SET_SENDING_PAUSED": "Sending is paused for this configuration set.",
    "INVALID_PARAMETER": "Invalid parameter value.",
    "TRANSIENT_FAILURE": "Temporary failure, try again later.",
    "FAILED": "Unable to process the request.",
}
_VARIABLE = re.compile(r"{{\s*([A-Za-z0-9_.-]+)\s*}}")
MAX_BYTES = 40 * 1024 * 1024
_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,"
                   r" SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$")


def _error(status: int, kind: str, message: str) -> httpx.Response:
    return json_response(status, {"message": message},
                         {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/"})


class FakeSes(FakeApi):
    def __init__(self, *, key_id: str = "AKIDFAKE", secret: str = "fake-secret",
                 region: str = "us-east-1", verified: set[str] | None = None,
                 rejected: set[str] | None = None,
                 templates: dict[str, dict[str, str]] | None = None,
                 bulk_status: dict[str, str] | None = None) -> None:
        super().__init__()
        self.key_id = key_id
        self.secret = secret
        self.region = region
        #: verified identities: addresses or whole domains
        self.verified = verified if verified is not None else {"example.com"}
        #: recipients SES rejects with MessageRejected (one call fails, the others go)
        self.rejected = rejected or set()
        #: stored templates by name: ``{"Subject", "Text", "Html"}`` with ``{{var}}``s
        self.templates = templates if templates is not None else {
            "newsletter": {"Subject": "Hello {{name}}",
                           "Text": "Hi {{name}} <{{email}}>",
                           "Html": "<p>Hi {{name}}</p>"}}
        #: SendBulkEmail: recipient address -> the entry status SES answers for it
        self.bulk_status = bulk_status or {}
        #: SendBulkEmail entries accepted but not delivered: (address, missing variable)
        self.render_failures: list[tuple[str, str]] = []

    def serve(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or request.url.path not in (PATH, BULK_PATH):
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
        if request.url.path == BULK_PATH:
            return self._bulk(body, sender)
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

    def _bulk(self, body: dict[str, Any], sender: str) -> httpx.Response:
        template = body.get("DefaultContent", {}).get("Template", {})
        name = template.get("TemplateName")
        if name not in self.templates:
            return _error(404, "NotFoundException", f"Template {name} does not exist.")
        entries = body.get("BulkEmailEntries")
        if not isinstance(entries, list) or not entries:
            return _error(400, "BadRequestException", "BulkEmailEntries is required.")
        if len(entries) > MAX_BULK_ENTRIES:
            return _error(400, "BadRequestException",
                          f"Number of entries exceeds {MAX_BULK_ENTRIES}.")
        try:
            default_data = json.loads(template.get("TemplateData") or "{}")
            datas = []
            for entry in entries:
                raw = (entry.get("ReplacementEmailContent", {})
                       .get("ReplacementTemplate", {}).get("ReplacementTemplateData", "{}"))
                if len(raw) > MAX_TEMPLATE_DATA:
                    return _error(400, "BadRequestException", "Template data is too long.")
                datas.append(json.loads(raw))
        except ValueError:
            return _error(400, "BadRequestException", "The template data is invalid.")
        if not isinstance(default_data, dict) or not all(isinstance(d, dict) for d in datas):
            return _error(400, "BadRequestException", "The template data is invalid.")
        default_tags = body.get("DefaultEmailTags") or []
        results: list[dict[str, str]] = []
        for entry, data in zip(entries, datas, strict=True):
            to = entry.get("Destination", {}).get("ToAddresses", [])
            if not to:
                return _error(400, "BadRequestException", "Missing destination")
            status = next((self.bulk_status[r] for r in to if r in self.bulk_status), None)
            if status is None and any(r in self.rejected for r in to):
                status = "MESSAGE_REJECTED"
            if status is not None:
                results.append({"Status": status,
                                "Error": BULK_ERRORS.get(status, "Request failed.")})
                continue
            message_id = f"0100{uuid.uuid4().hex}-000000"
            results.append({"Status": "SUCCESS", "MessageId": message_id})
            self._deliver_templated(body, entry, {**default_data, **data}, sender, to,
                                    message_id, default_tags)
        return json_response(200, {"BulkEmailEntryResults": results})

    def _deliver_templated(self, body: dict[str, Any], entry: dict[str, Any],
                           data: dict[str, Any], sender: str, to: list[str],
                           message_id: str, default_tags: list[dict[str, str]]) -> None:
        template = self.templates[body["DefaultContent"]["Template"]["TemplateName"]]
        missing = [v for part in template.values() for v in _VARIABLE.findall(part)
                   if v not in data]
        if missing:
            self.render_failures.extend((r, missing[0]) for r in to)
            return

        def render(part: str | None) -> str | None:
            if part is None:
                return None
            return _VARIABLE.sub(lambda m: str(data[m.group(1)]), part)

        headers = {h["Name"]: h["Value"]
                   for h in body["DefaultContent"]["Template"].get("Headers") or []}
        headers.update({h["Name"]: h["Value"] for h in entry.get("ReplacementHeaders") or []})
        if body.get("ReplyToAddresses"):
            headers["Reply-To"] = ", ".join(body["ReplyToAddresses"])
        tags = entry.get("ReplacementTags") or default_tags
        for rcpt in to:
            self.delivered.append(Delivered(
                to=rcpt, sender=sender, subject=render(template.get("Subject")) or "",
                text=render(template.get("Text")), html=render(template.get("Html")),
                headers=dict(headers), meta={t["Name"]: t["Value"] for t in tags},
                provider_id=message_id))

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
