"""Provider webhook payloads as :class:`FeedbackEvent` values (pure, no I/O).

Every kind maps to the same types: ``delivered``, ``deferred``, ``bounced`` (``hard`` or
``soft``), ``complained``, ``unsubscribed``, ``rejected``. Opens and clicks (bulkmail does
no tracking), acceptance notices and anything unknown become ``ignored``: counted, never
stored. A payload of the wrong shape raises :class:`ValueError`; a single malformed event
inside a list is ``ignored``.

Correlation: our id ``campaign:row`` comes back as SendGrid's ``custom_args``
(``bulkmail_id``), Mailgun's ``user-variables``, Postmark's ``Metadata``, the
``X-Bulkmail-Id`` header in SES and Resend payloads, or SES's ``bulkmail_id`` tag
(base64url); the provider's message id is kept for events without it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["EVENT_TYPES", "FeedbackEvent", "normalize"]

#: the normalised types that are stored (``ignored`` is only counted)
EVENT_TYPES = ("delivered", "deferred", "bounced", "complained", "unsubscribed", "rejected")
_REASON_MAX = 300
_CORRELATION_HEADER = "x-bulkmail-id"


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One provider event about one recipient, normalised."""

    provider: str
    event_id: str
    type: str
    recipient: str
    sub: str = ""
    correlation: str | None = None
    message_id: str | None = None
    at: float | None = None
    reason: str = ""

    @property
    def suppresses(self) -> bool:
        """Hard bounces and complaints put the address on the suppression list."""
        return self.type == "complained" or (self.type == "bounced" and self.sub == "hard")

    @property
    def label(self) -> str:
        """``bounced/hard`` or the type: what ``--type`` filters and the guard counts."""
        return f"{self.type}/{self.sub}" if self.sub else self.type

    def to_json(self) -> str:
        """The stored form (keys short: one per event per recipient in Redis)."""
        data = {"t": self.type, "s": self.sub, "p": self.provider, "at": self.at,
                "r": self.reason, "id": self.event_id, "m": self.message_id}
        return json.dumps({k: v for k, v in data.items() if v not in (None, "")},
                          separators=(",", ":"), ensure_ascii=False)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any, limit: int = _REASON_MAX) -> str:
    return "" if value is None else str(value)[:limit]


def _address(value: Any) -> str:
    if not isinstance(value, str) or "@" not in value:
        raise ValueError("an event without a recipient address")
    text = str(value)
    if "<" in text and text.rstrip().endswith(">"):
        text = text[text.rindex("<") + 1:].rstrip().rstrip(">")
    return text.strip().lower()


def _iso(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()
                          ).hexdigest()[:32]


def _correlation(value: Any) -> str | None:
    return value if isinstance(value, str) and ":" in value and len(value) <= 200 else None


def _header_value(headers: Any, name: str) -> str | None:
    if isinstance(headers, list):
        for h in headers:
            if isinstance(h, dict) and str(h.get("name", "")).lower() == name:
                return str(h.get("value", ""))
    elif isinstance(headers, dict):
        for k, v in headers.items():
            if str(k).lower() == name:
                return str(v)
    return None


# -- SendGrid ----------------------------------------------------------------------------
_SENDGRID = {"delivered": "delivered", "deferred": "deferred", "dropped": "rejected",
             "spamreport": "complained", "unsubscribe": "unsubscribed",
             "group_unsubscribe": "unsubscribed"}


def _sendgrid(provider: str, payload: Any) -> list[FeedbackEvent]:
    if not isinstance(payload, list):
        raise ValueError("a SendGrid webhook body is a JSON array of events")
    out = []
    for item in payload:
        if not isinstance(item, dict):
            continue
        kind = item.get("event")
        sub = ""
        if kind == "bounce":
            # "bounce" is a hard bounce, "blocked" a refusal that may pass later
            etype, sub = "bounced", ("soft" if item.get("type") == "blocked" else "hard")
        else:
            etype = _SENDGRID.get(str(kind), "ignored")
        sg_id = item.get("sg_message_id")
        out.append(_event(
            provider, etype, item.get("email"), sub=sub,
            event_id=_text(item.get("sg_event_id"), 200) or _digest(item),
            correlation=_correlation(item.get("bulkmail_id")),
            # sg_message_id is the X-Message-Id of the call plus ".filter..." (older
            # examples) or ".filterdrecv-..." (today)
            message_id=str(sg_id).split(".filter", 1)[0] if sg_id else None,
            at=_number(item.get("timestamp")),
            reason=_text(item.get("reason") or item.get("response"))))
    return out


# -- Mailgun -----------------------------------------------------------------------------
_MAILGUN = {"delivered": "delivered", "complained": "complained",
            "unsubscribed": "unsubscribed", "rejected": "rejected"}


def _mailgun(provider: str, payload: Any) -> list[FeedbackEvent]:
    data = payload.get("event-data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise ValueError("a Mailgun webhook body has an 'event-data' object")
    kind = str(data.get("event"))
    sub = ""
    if kind == "failed":
        # temporary failures are retried by Mailgun: deferred, not bounced
        permanent = data.get("severity") == "permanent"
        etype, sub = ("bounced", "hard") if permanent else ("deferred", "")
    else:
        etype = _MAILGUN.get(kind, "ignored")
    status = _obj(data.get("delivery-status"))
    headers = _obj(_obj(data.get("message")).get("headers"))
    variables = data.get("user-variables")
    mid = headers.get("message-id")
    ev_id = f"{data.get('id')}:{data.get('timestamp')}" if data.get("id") else _digest(data)
    return [_event(
        provider, etype, data.get("recipient"), sub=sub, event_id=ev_id,
        correlation=_correlation(variables.get("bulkmail_id")
                                 if isinstance(variables, dict) else None),
        message_id=str(mid).strip("<>") if mid else None,
        at=_number(data.get("timestamp")),
        reason=_text(status.get("message") or status.get("description") or data.get("reason")))]


# -- Postmark ----------------------------------------------------------------------------
_POSTMARK_BOUNCE = {
    "HardBounce": ("bounced", "hard"), "BadEmailAddress": ("bounced", "hard"),
    "SoftBounce": ("bounced", "soft"), "Blocked": ("bounced", "soft"),
    "VirusNotification": ("bounced", "soft"), "DMARCPolicy": ("bounced", "soft"),
    "Transient": ("deferred", ""), "DnsError": ("deferred", ""),
    "SpamComplaint": ("complained", ""), "SpamNotification": ("complained", ""),
    "Unsubscribe": ("unsubscribed", ""), "ManuallyDeactivated": ("rejected", ""),
    "SMTPApiError": ("rejected", ""), "TemplateRenderingFailed": ("rejected", ""),
}
_POSTMARK_SUPPRESSION = {"HardBounce": ("bounced", "hard"),
                         "SpamComplaint": ("complained", ""),
                         "ManualSuppression": ("unsubscribed", "")}


def _postmark(provider: str, payload: Any) -> list[FeedbackEvent]:
    if not isinstance(payload, dict) or "RecordType" not in payload:
        raise ValueError("a Postmark webhook body is an object with 'RecordType'")
    record = payload["RecordType"]
    etype, sub = "ignored", ""
    if record == "Delivery":
        etype = "delivered"
    elif record in ("Bounce", "SpamComplaint"):
        etype, sub = _POSTMARK_BOUNCE.get(str(payload.get("Type")), ("ignored", ""))
    elif record == "SubscriptionChange" and payload.get("SuppressSending"):
        etype, sub = _POSTMARK_SUPPRESSION.get(str(payload.get("SuppressionReason")),
                                               ("ignored", ""))
    metadata = payload.get("Metadata")
    when = next((payload[k] for k in ("DeliveredAt", "BouncedAt", "ChangedAt")
                 if k in payload), None)
    ev_id = (f"{record}:{payload['ID']}" if payload.get("ID") is not None
             else _digest(payload))
    return [_event(
        provider, etype, payload.get("Email") or payload.get("Recipient"), sub=sub,
        event_id=ev_id,
        correlation=_correlation(metadata.get("bulkmail_id")
                                 if isinstance(metadata, dict) else None),
        message_id=_text(payload.get("MessageID"), 200) or None, at=_iso(when),
        reason=_text(payload.get("Details") or payload.get("Description")))]


# -- Resend ------------------------------------------------------------------------------
_RESEND = {"email.delivered": "delivered", "email.delivery_delayed": "deferred",
           "email.complained": "complained", "email.failed": "rejected"}


def _resend(provider: str, payload: Any, event_id: str) -> list[FeedbackEvent]:
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise ValueError("a Resend webhook body has a 'data' object")
    kind = str(payload.get("type"))
    sub = ""
    bounce = _obj(data.get("bounce"))
    if kind == "email.bounced":
        etype, sub = "bounced", ("soft" if bounce.get("type") == "Transient" else "hard")
    else:
        etype = _RESEND.get(kind, "ignored")
    to = data.get("to")
    first = to[0] if isinstance(to, list) and to else to
    return [_event(
        provider, etype, first, sub=sub, event_id=event_id,
        correlation=_correlation(_header_value(data.get("headers"), _CORRELATION_HEADER)),
        message_id=_text(data.get("email_id"), 200) or None, at=_iso(payload.get("created_at")),
        reason=_text(bounce.get("message") or _failed_reason(data)))]


def _failed_reason(data: dict[str, Any]) -> Any:
    failed = data.get("failed")
    return failed.get("reason") if isinstance(failed, dict) else None


# -- SES (the Message of an SNS notification) ---------------------------------------------
def _ses_tag(tags: Any) -> str | None:
    values = tags.get("bulkmail_id") if isinstance(tags, dict) else None
    value = values[0] if isinstance(values, list) and values else None
    if not isinstance(value, str):
        return None
    text: str
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, ValueError):
        return None
    return text


def _ses(provider: str, event: Any, sns_id: str) -> list[FeedbackEvent]:
    if not isinstance(event, dict):
        raise ValueError("an SES event is a JSON object")
    kind = str(event.get("eventType") or event.get("notificationType"))
    mail = _obj(event.get("mail"))
    correlation = (_correlation(_header_value(mail.get("headers"), _CORRELATION_HEADER))
                   or _correlation(_ses_tag(mail.get("tags"))))
    common = {"correlation": correlation, "message_id": _text(mail.get("messageId"), 200) or None}
    detail = _obj(event.get(kind[0].lower() + kind[1:] if kind else ""))
    rows: list[tuple[str, str, Any, str, Any]] = []  # type, sub, recipient, reason, time
    if kind == "Bounce":
        sub = "hard" if detail.get("bounceType") == "Permanent" else "soft"
        for r in detail.get("bouncedRecipients") or []:
            if isinstance(r, dict):
                rows.append(("bounced", sub, r.get("emailAddress"),
                             _text(r.get("diagnosticCode") or detail.get("bounceSubType")),
                             detail.get("timestamp")))
    elif kind == "Complaint":
        for r in detail.get("complainedRecipients") or []:
            if isinstance(r, dict):
                rows.append(("complained", "", r.get("emailAddress"),
                             _text(detail.get("complaintFeedbackType")),
                             detail.get("timestamp")))
    elif kind == "Delivery":
        for r in detail.get("recipients") or []:
            rows.append(("delivered", "", r, _text(detail.get("smtpResponse")),
                         detail.get("timestamp")))
    elif kind == "DeliveryDelay":
        for r in detail.get("delayedRecipients") or []:
            if isinstance(r, dict):
                rows.append(("deferred", "", r.get("emailAddress"),
                             _text(r.get("diagnosticCode") or detail.get("delayType")),
                             detail.get("timestamp")))
    else:
        etype = {"Reject": "rejected", "Rendering Failure": "rejected",
                 "Subscription": "unsubscribed"}.get(kind, "ignored")
        for r in mail.get("destination") or []:
            rows.append((etype, "", r, _text(detail.get("reason")), mail.get("timestamp")))
    return [_event(provider, t, r, sub=s, event_id=f"{sns_id}:{i}", reason=why, at=_iso(when),
                   **common)
            for i, (t, s, r, why, when) in enumerate(rows)]


def _event(provider: str, etype: str, recipient: Any, *, event_id: str, **fields: Any
           ) -> FeedbackEvent:
    try:
        address = _address(recipient)
    except ValueError:
        if etype != "ignored":
            etype = "ignored"
        address = ""
    return FeedbackEvent(provider=provider, event_id=event_id, type=etype, recipient=address,
                         **fields)


def normalize(kind: str, provider: str, payload: Any, *, event_id: str = ""
              ) -> list[FeedbackEvent]:
    """The events of one verified webhook call of a provider of ``kind``.

    ``event_id`` is the id the transport carries (Svix's ``svix-id``, SNS's
    ``MessageId``) for kinds whose body has none of its own.
    """
    if kind == "sendgrid":
        return _sendgrid(provider, payload)
    if kind == "mailgun":
        return _mailgun(provider, payload)
    if kind == "postmark":
        return _postmark(provider, payload)
    if kind == "resend":
        return _resend(provider, payload, event_id)
    if kind == "ses":
        return _ses(provider, payload, event_id)
    raise ValueError(f"provider kind {kind!r} has no webhooks")
