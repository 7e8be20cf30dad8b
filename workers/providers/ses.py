"""Amazon SES v2: ``POST /v2/email/outbound-emails`` (SendEmail), one call per message,
``cfg.concurrency`` of them at a time, each signed with botocore's SigV4 signer.

SendBulkEmail batches only stored templates, and our rendering stays ours, so by default
each message goes as ``Content.Simple`` (subject, text and html as rendered, plus its
headers in ``Simple.Headers``): ``wants_mime`` is false, the worker builds no MIME for SES.

Bulk (opt-in, ``cfg.bulk_template`` names an SES stored template): ``POST
/v2/email/outbound-bulk-emails`` (SendBulkEmail), up to 50 entries per call (SES's
limit), ``cfg.concurrency`` calls at a time. SES renders the stored template, so our
rendered subject and bodies are *not* sent; each entry carries
``ReplacementTemplateData``: the recipient's variables plus ``email`` as JSON (SES
template syntax, ``{{first_name}}``). ``DefaultContent.Template.TemplateData`` is
``"{}"``. The message's headers (List-Unsubscribe, ``X-Bulkmail-Id``, ...) go in the
entry's ``ReplacementHeaders`` and the correlation tag in its ``ReplacementTags``. One
call has one ``FromEmailAddress`` and ``ReplyToAddresses``, so messages are grouped by
(sender, reply-to) first. An entry whose template data is over SES's 262,144 characters
fails alone, without a call. ``BulkEmailEntryResults`` answer in entry order:

- ``SUCCESS``: sent, its ``MessageId`` is the provider id;
- ``ACCOUNT_THROTTLED``, ``ACCOUNT_DAILY_QUOTA_EXCEEDED`` (and the rate/quota names
  ``SENDING_QUOTA_EXCEEDED``, ``MAX_SENDING_RATE_EXCEEDED``): throttled, waiting helps;
- ``TRANSIENT_FAILURE``, ``FAILED`` (SES: "unable to process your request"): transient;
- ``MESSAGE_REJECTED``, ``MAIL_FROM_DOMAIN_NOT_VERIFIED``, ``TEMPLATE_NOT_FOUND`` /
  ``TEMPLATE_DOES_NOT_EXIST``, ``CONFIGURATION_SET_NOT_FOUND`` /
  ``CONFIGURATION_SET_DOES_NOT_EXIST`` (the API model and the API reference spell them
  differently; both are taken), ``ACCOUNT_SUSPENDED``, ``ACCOUNT_SENDING_PAUSED``,
  ``CONFIGURATION_SET_SENDING_PAUSED``, ``INVALID_PARAMETER``,
  ``INVALID_SENDING_POOL_NAME``: permanent, as their SendEmail counterparts (400s) are:
  retrying does not help until an operator acts;
- a status we do not know: transient (nothing was accepted; retries are bounded by
  ``max_attempts``, so a new SES status cannot loop, nor fail a recipient for good).

Each error's text is ``STATUS: Error`` (SES's own words).

Correlation: the ``X-Bulkmail-Id`` header and an ``EmailTags`` entry ``bulkmail_id``
(``ReplacementHeaders`` / ``ReplacementTags`` in bulk; SES events carry both). Tag
values allow only ``[A-Za-z0-9_-]``, so the tag holds the correlation id in unpadded
URL-safe base64 (:func:`tag_value`). SES sets its own Message-ID, so ours is not sent;
each answer's ``MessageId`` is the provider id.

Credentials: ``cfg.access_key_id_env`` / ``cfg.secret_access_key_env`` name the
variables, else the standard ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (and
``AWS_SESSION_TOKEN`` when set) are used; the region is ``cfg.region``. Read once, at
construction: a missing variable fails at start-up.

Errors: SES names them in ``x-amzn-ErrorType`` (or ``__type``): throttling names
(``TooManyRequestsException``, "Maximum sending rate exceeded") are throttled;
``LimitExceededException`` too (a quota that refills: waiting helps, failing the rest of
a campaign does not); signature and credential names stop the provider; the rest follow
the HTTP status (``MessageRejected``, ``MailFromDomainNotVerified``, ``AccountSuspended``,
``SendingPaused`` are 400s: permanent). Each call fails or succeeds alone, so one
rejected message does not affect the others.

Sandbox: SES has no switch (``cfg.sandbox`` is ignored); send to the mailbox simulator,
``success@``, ``bounce@``, ``ooto@``, ``complaint@`` and ``suppressionlist@``
``simulator.amazonses.com``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from email.utils import formataddr
from typing import Any, Unpack

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from config.errors import (
    DeliveryError,
    PermanentDeliveryError,
    ProviderAuthError,
    ThrottledError,
    TransientDeliveryError,
)
from config.providers import SesConfig, read_secret
from workers.providers.base import OutgoingMessage
from workers.providers.http_base import (
    ApiCall,
    HttpOptions,
    HttpProvider,
    Outcome,
    Plan,
    address_parts,
    from_header,
    json_bytes,
    message_headers,
    pack,
    read_json,
    too_large,
)

__all__ = ["BULK_PATH", "MAX_BULK_ENTRIES", "MAX_BYTES", "MAX_TEMPLATE_DATA", "SesProvider",
           "bulk_outcome", "create", "ses_address", "tag_value"]

#: SES's message size limit
MAX_BYTES = 40_000_000
#: entries (destinations) per SendBulkEmail call
MAX_BULK_ENTRIES = 50
#: characters of one ``ReplacementTemplateData`` (the API model's EmailTemplateData max)
MAX_TEMPLATE_DATA = 262_144
_PATH = "/v2/email/outbound-emails"
BULK_PATH = "/v2/email/outbound-bulk-emails"
_TAG = "bulkmail_id"

_BULK_THROTTLED = frozenset({"ACCOUNT_THROTTLED", "ACCOUNT_DAILY_QUOTA_EXCEEDED",
                             "SENDING_QUOTA_EXCEEDED", "MAX_SENDING_RATE_EXCEEDED"})
_BULK_TRANSIENT = frozenset({"TRANSIENT_FAILURE", "FAILED"})
_BULK_PERMANENT = frozenset({
    "MESSAGE_REJECTED", "MAIL_FROM_DOMAIN_NOT_VERIFIED", "TEMPLATE_NOT_FOUND",
    "TEMPLATE_DOES_NOT_EXIST", "CONFIGURATION_SET_NOT_FOUND",
    "CONFIGURATION_SET_DOES_NOT_EXIST", "ACCOUNT_SUSPENDED", "ACCOUNT_SENDING_PAUSED",
    "CONFIGURATION_SET_SENDING_PAUSED", "INVALID_PARAMETER", "INVALID_SENDING_POOL_NAME"})

_THROTTLED = frozenset({"TooManyRequestsException", "ThrottlingException", "Throttling",
                        "LimitExceededException"})
_AUTH = frozenset({"UnrecognizedClientException", "InvalidSignatureException",
                   "SignatureDoesNotMatch", "IncompleteSignature", "InvalidClientTokenId",
                   "MissingAuthenticationToken", "ExpiredTokenException", "ExpiredToken",
                   "AccessDeniedException"})
#: headers SigV4 signs and httpx must send exactly as signed
_SIGNED = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")


def tag_value(correlation_id: str) -> str:
    """``campaign:row`` in the alphabet SES allows for tag values (reversible)."""
    return base64.urlsafe_b64encode(correlation_id.encode()).decode().rstrip("=")


def bulk_outcome(entry: Any) -> Outcome:
    """One ``BulkEmailEntryResults`` element as an outcome (see the module docstring)."""
    if not isinstance(entry, dict):
        return TransientDeliveryError(f"SES answered {entry!r} for a bulk entry")
    status = str(entry.get("Status") or "")
    if status == "SUCCESS":
        message_id = entry.get("MessageId")
        return str(message_id) if message_id else None
    error = entry.get("Error")
    reply = f"{status or 'no status'}: {error}" if error else status or "no status"
    if status in _BULK_THROTTLED:
        return ThrottledError(reply)
    if status in _BULK_PERMANENT:
        return PermanentDeliveryError(reply)
    return TransientDeliveryError(reply)  # _BULK_TRANSIENT and statuses we do not know


def ses_address(value: str) -> str:
    """An address as SES takes it: a non-ASCII display name as an RFC 2047 encoded-word,
    an internationalised domain in punycode (SES refuses both raw)."""
    name, addr = address_parts(value)
    if not addr:
        return value
    local, at, domain = addr.rpartition("@")
    if at and not domain.isascii():
        addr = f"{local}@{domain.encode('idna').decode()}"
    return formataddr((name, addr), charset="utf-8") if name else addr


def _error_type(response: httpx.Response) -> str:
    raw = response.headers.get("x-amzn-ErrorType", "")
    if not raw:
        body = read_json(response)
        raw = str(body.get("__type", "")) if isinstance(body, dict) else ""
    # "MessageRejected:http://internal.amazon.com/..." or "com.amazon...#MessageRejected"
    return str(raw.split(":", 1)[0].rsplit("#", 1)[-1])


class SesProvider(HttpProvider[SesConfig]):
    """SES v2 SendEmail, one signed call per message, or SendBulkEmail with a stored
    template when ``cfg.bulk_template`` is set; see the module docstring."""

    max_per_call = 1

    def default_url(self) -> str:
        return f"https://email.{self.cfg.region}.amazonaws.com"

    def prepare(self) -> None:
        cfg = self.cfg
        key_id = read_secret(self.name, cfg.access_key_id_env or "AWS_ACCESS_KEY_ID", None)
        secret = read_secret(self.name, cfg.secret_access_key_env or "AWS_SECRET_ACCESS_KEY",
                             None)
        # A session token only goes with the standard variables it was issued with.
        token = (os.environ.get("AWS_SESSION_TOKEN") or None
                 if cfg.access_key_id_env is None else None)
        self._signer = SigV4Auth(Credentials(key_id, secret, token), "ses", cfg.region)
        if cfg.bulk_template:
            # full calls, ``concurrency`` of them side by side
            self.chunk_size = MAX_BULK_ENTRIES * cfg.concurrency
        else:
            # SES's own limit is modest next to the batch sizes of the other kinds; a
            # chunk of a few calls per slot keeps ledger updates frequent.
            self.chunk_size = max(50, 10 * cfg.concurrency)

    def authorize(self, request: httpx.Request) -> None:
        # Signed per request, when it is sent: X-Amz-Date must be fresh (a call may wait
        # for a slot), and the body and URL must be exactly those that go out.
        aws = AWSRequest(method=request.method, url=str(request.url), data=request.content,
                         headers={"Content-Type": request.headers["Content-Type"]})
        self._signer.add_auth(aws)
        for name in _SIGNED:
            if name in aws.headers:
                request.headers[name] = aws.headers[name]

    def _body(self, msg: OutgoingMessage) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if msg.text is not None:
            body["Text"] = {"Data": msg.text, "Charset": "UTF-8"}
        if msg.html is not None:
            body["Html"] = {"Data": msg.html, "Charset": "UTF-8"}
        request: dict[str, Any] = {
            "FromEmailAddress": ses_address(from_header(msg)),
            "Destination": {"ToAddresses": [ses_address(msg.recipient)]},
            "Content": {"Simple": {
                "Subject": {"Data": msg.subject, "Charset": "UTF-8"},
                "Body": body,
                "Headers": [{"Name": k, "Value": v}
                            for k, v in message_headers(msg, message_id=False).items()],
            }},
            "EmailTags": [{"Name": _TAG, "Value": tag_value(msg.correlation_id)}],
        }
        if msg.reply_to:
            request["ReplyToAddresses"] = [ses_address(msg.reply_to)]
        if self.cfg.configuration_set:
            request["ConfigurationSetName"] = self.cfg.configuration_set
        return request

    def plan(self, messages: Sequence[OutgoingMessage]) -> Plan:
        if self.cfg.bulk_template:
            return self._bulk_plan(messages)
        plan = Plan()
        for i, msg in enumerate(messages):
            body = json_bytes(self._body(msg))
            if len(body) > MAX_BYTES:
                plan.refused[i] = too_large(len(body), MAX_BYTES, "SES")
            else:
                plan.calls.append(ApiCall([i], _PATH, body))
        return plan

    # -- SendBulkEmail ------------------------------------------------------------------
    def _bulk_entry(self, msg: OutgoingMessage) -> dict[str, Any]:
        data = json.dumps({**msg.variables, "email": msg.recipient}, ensure_ascii=False,
                          separators=(",", ":"), default=str)
        entry: dict[str, Any] = {
            "Destination": {"ToAddresses": [ses_address(msg.recipient)]},
            "ReplacementEmailContent": {"ReplacementTemplate": {
                "ReplacementTemplateData": data}},
            "ReplacementTags": [{"Name": _TAG, "Value": tag_value(msg.correlation_id)}],
        }
        headers = message_headers(msg, message_id=False)
        if headers:
            entry["ReplacementHeaders"] = [{"Name": k, "Value": v} for k, v in headers.items()]
        return entry

    def _bulk_request(self, sender: str, reply_to: str | None,
                      entries: list[dict[str, Any]]) -> dict[str, Any]:
        request: dict[str, Any] = {"FromEmailAddress": ses_address(sender)}
        if reply_to:
            request["ReplyToAddresses"] = [ses_address(reply_to)]
        request["DefaultContent"] = {"Template": {"TemplateName": self.cfg.bulk_template,
                                                  "TemplateData": "{}"}}
        request["BulkEmailEntries"] = entries
        if self.cfg.configuration_set:
            request["ConfigurationSetName"] = self.cfg.configuration_set
        return request

    def _bulk_plan(self, messages: Sequence[OutgoingMessage]) -> Plan:
        plan = Plan()
        # One call has one sender and reply-to (either may be a per-recipient template).
        groups: dict[tuple[str, str | None], list[int]] = {}
        for i, msg in enumerate(messages):
            groups.setdefault((from_header(msg), msg.reply_to), []).append(i)
        for (sender, reply_to), positions in groups.items():
            entries: list[dict[str, Any]] = []
            sizes: list[int] = []
            kept: list[int] = []
            for i in positions:
                entry = self._bulk_entry(messages[i])
                data = entry["ReplacementEmailContent"]["ReplacementTemplate"]
                size = len(data["ReplacementTemplateData"])
                if size > MAX_TEMPLATE_DATA:
                    plan.refused[i] = PermanentDeliveryError(
                        f"recipient variables are {size} characters as JSON, over SES's "
                        f"{MAX_TEMPLATE_DATA}-character ReplacementTemplateData limit",
                        code=413)
                    continue
                entries.append(entry)
                sizes.append(len(json_bytes(entry)) + 1)  # + the comma between entries
                kept.append(i)
            fixed = len(json_bytes(self._bulk_request(sender, reply_to, [])))
            chunks, oversized = pack(sizes, max_count=MAX_BULK_ENTRIES,
                                     max_bytes=MAX_BYTES - fixed)
            for j in oversized:  # pragma: no cover - under the template data limit
                plan.refused[kept[j]] = too_large(sizes[j] + fixed, MAX_BYTES, "SES")
            for chunk in chunks:
                body = self._bulk_request(sender, reply_to, [entries[j] for j in chunk])
                plan.calls.append(ApiCall([kept[j] for j in chunk], BULK_PATH,
                                          json_bytes(body)))
        return plan

    def accepted(self, call: ApiCall, response: httpx.Response) -> list[Outcome]:
        body = read_json(response)
        if call.path == BULK_PATH:
            results = body.get("BulkEmailEntryResults") if isinstance(body, dict) else None
            # a missing or short list: the base class makes the whole call ambiguous
            return [bulk_outcome(e) for e in results] if isinstance(results, list) else []
        if not isinstance(body, dict) or not body.get("MessageId"):
            return []
        return [str(body["MessageId"])]

    def classify(self, response: httpx.Response, message: str,
                 retry_after: float | None) -> DeliveryError:
        kind = _error_type(response)
        reply = f"{kind}: {message}" if kind and kind not in message else message
        if kind in _AUTH:
            return ProviderAuthError(reply, code=response.status_code)
        if kind in _THROTTLED or "sending rate exceeded" in message.lower():
            return ThrottledError(reply, code=response.status_code, retry_after=retry_after)
        return super().classify(response, reply, retry_after)


def create(name: str, cfg: SesConfig, **options: Unpack[HttpOptions]) -> SesProvider:
    """The provider registry's entry point."""
    return SesProvider(name, cfg, **options)
