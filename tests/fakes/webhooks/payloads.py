"""Webhook payloads shaped like each provider's documentation examples, with the
recipient, our correlation id and the provider message id filled in."""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["mailgun", "postmark", "resend", "sendgrid_event", "ses_event", "sns_notification"]


def sendgrid_event(event: str, email: str, *, bulkmail_id: str | None = None,
                   event_id: str = "sg_event_id_1", message_id: str = "14c5d75ce93.dfd.64b469",
                   **extra: Any) -> dict[str, Any]:
    """One element of SendGrid's event array (Event Webhook reference)."""
    out: dict[str, Any] = {
        "email": email, "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": event, "category": "cat facts", "sg_event_id": event_id,
        "sg_message_id": f"{message_id}.filter0001.16648.5515E0B88.0"}
    if event == "bounce":
        out |= {"reason": "500 unknown recipient", "status": "5.0.0", "type": "bounce"}
    if event == "delivered":
        out |= {"response": "250 OK"}
    if bulkmail_id is not None:
        out["bulkmail_id"] = bulkmail_id  # our custom_args, merged into the event
    return out | extra


def mailgun(event: str, recipient: str, *, bulkmail_id: str | None = None,
            event_id: str = "CPgfbmQMTCKtHW6uIWtuVe", severity: str | None = None,
            message_id: str = "20130503182626.18666.16540@sandbox.mailgun.org",
            timestamp: float = 1521472262.908181) -> dict[str, Any]:
    """Mailgun's ``event-data`` (without the signature block; see signing.mailgun_body)."""
    data: dict[str, Any] = {
        "tags": ["my_tag_1"], "timestamp": timestamp, "storage": {
            "url": "https://se.api.mailgun.net/v3/domains/sandbox.mailgun.org/messages/x",
            "key": "message_key"},
        "envelope": {"transport": "smtp", "sender": "bob@sandbox.mailgun.org",
                     "sending-ip": "209.61.154.250", "targets": recipient},
        "recipient-domain": recipient.rpartition("@")[2], "id": event_id,
        "message": {"headers": {"to": f"Alice <{recipient}>", "message-id": message_id,
                                "from": "Bob <bob@sandbox.mailgun.org>",
                                "subject": "Test delivered webhook"},
                    "attachments": [], "size": 111},
        "recipient": recipient, "event": event,
        "delivery-status": {"tls": True, "mx-host": "smtp-in.example.com", "code": 250,
                            "description": "", "message": "OK"},
        "user-variables": {"my_var_1": "Mailgun Variable #1"},
    }
    if bulkmail_id is not None:
        data["user-variables"]["bulkmail_id"] = bulkmail_id
    if severity is not None:
        data["severity"] = severity
        data["reason"] = "bounce"
        data["delivery-status"] = {"code": 550, "message": "5.1.1 The email account does not "
                                   "exist", "description": "Not delivered"}
    return data


def postmark(record: str, email: str, *, bulkmail_id: str | None = None, bounce_id: int = 42,
             bounce_type: str = "HardBounce",
             message_id: str = "883953f4-6105-42a2-a16a-77a8eac79483") -> dict[str, Any]:
    """A Postmark Bounce, SpamComplaint or Delivery webhook (its docs' examples)."""
    meta = {"a_key": "a_value"} | ({"bulkmail_id": bulkmail_id} if bulkmail_id else {})
    if record == "Delivery":
        return {"RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound",
                "MessageID": message_id, "Recipient": email, "Tag": "welcome-email",
                "DeliveredAt": "2019-11-05T16:33:54.9070259Z",
                "Details": "Test delivery webhook details", "Metadata": meta}
    kind = "SpamComplaint" if record == "SpamComplaint" else bounce_type
    return {"RecordType": record, "ID": bounce_id, "Type": kind,
            "TypeCode": {"HardBounce": 1, "SoftBounce": 4096, "SpamComplaint": 512}.get(kind, 1),
            "Name": "Hard bounce", "Tag": "Test", "MessageID": message_id, "ServerID": 23,
            "MessageStream": "outbound", "Description": "The server was unable to deliver "
            "your message (ex: unknown user, mailbox not found).",
            "Details": "Test bounce details", "Email": email, "From": "sender@example.com",
            "BouncedAt": "2019-11-05T16:33:54.9070259Z", "DumpAvailable": True,
            "Inactive": True, "CanActivate": True, "Subject": "Test subject",
            "Content": "<Full dump of bounce>", "Metadata": meta}


def resend(kind: str, to: str, *, email_id: str = "56761188-7520-42d8-8898-ff6fc54ce618",
           bulkmail_id: str | None = None, bounce_type: str = "Permanent") -> dict[str, Any]:
    """A Resend ``email.*`` webhook (its docs' example)."""
    data: dict[str, Any] = {
        "created_at": "2024-11-22T23:41:11.894719+00:00", "email_id": email_id,
        "from": "Acme <onboarding@resend.dev>", "to": [to], "subject": "Sending this example"}
    if kind == "email.bounced":
        data["bounce"] = {"message": "The recipient's email provider sent a hard bounce "
                          "message, so Resend couldn't deliver this email.",
                          "subType": "Suppressed", "type": bounce_type}
    if bulkmail_id is not None:
        data["headers"] = [{"name": "X-Bulkmail-Id", "value": bulkmail_id}]
    return {"type": kind, "created_at": "2024-11-22T23:41:12.126Z", "data": data}


def ses_event(kind: str, recipient: str, *, bulkmail_id: str | None = None,
              message_id: str = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
              bounce_type: str = "Permanent") -> dict[str, Any]:
    """An SES event-publishing record (Bounce, Complaint or Delivery)."""
    mail: dict[str, Any] = {
        "timestamp": "2017-08-05T00:40:02.012Z", "source": "Sender Name <sender@example.com>",
        "sendingAccountId": "123456789012", "messageId": message_id,
        "destination": [recipient], "headersTruncated": False,
        "headers": [{"name": "From", "value": "Sender Name <sender@example.com>"},
                    {"name": "To", "value": recipient}],
        "tags": {"ses:configuration-set": ["ConfigSet"]}}
    if bulkmail_id is not None:
        tag = base64.urlsafe_b64encode(bulkmail_id.encode()).decode().rstrip("=")
        mail["tags"]["bulkmail_id"] = [tag]
    if kind == "Bounce":
        detail = {"bounce": {"bounceType": bounce_type, "bounceSubType": "General",
                             "bouncedRecipients": [{"emailAddress": recipient, "action": "failed",
                                                    "status": "5.1.1", "diagnosticCode":
                                                    "smtp; 550 5.1.1 user unknown"}],
                             "timestamp": "2017-08-05T00:41:02.669Z",
                             "feedbackId": "01000157c44f053b-61b59c11-example-000001",
                             "reportingMTA": "dsn; mta.example.com"}}
    elif kind == "Complaint":
        detail = {"complaint": {"complainedRecipients": [{"emailAddress": recipient}],
                                "timestamp": "2017-08-05T00:41:02.669Z",
                                "feedbackId": "01000157c44f053b-61b59c11-example-000000",
                                "complaintFeedbackType": "abuse"}}
    else:
        detail = {"delivery": {"timestamp": "2016-10-19T23:21:04.133Z",
                               "processingTimeMillis": 11893, "recipients": [recipient],
                               "smtpResponse": "250 2.6.0 Message received",
                               "reportingMTA": "mta.example.com"}}
    return {"eventType": kind, "mail": mail, **detail}


def sns_notification(topic: str, message: dict[str, Any] | str, *, message_id: str,
                     timestamp: str, cert_url: str, version: str = "2") -> dict[str, Any]:
    """An unsigned SNS Notification (see signing.sign_sns)."""
    return {"Type": "Notification", "MessageId": message_id, "TopicArn": topic,
            "Message": message if isinstance(message, str) else json.dumps(message),
            "Timestamp": timestamp, "SignatureVersion": version, "SigningCertURL": cert_url,
            "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&x=1"}
