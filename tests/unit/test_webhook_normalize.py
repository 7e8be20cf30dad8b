"""Documented provider payloads normalise to the same event types; odd input is safe."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes.webhooks import payloads
from workers.feedback.normalize import FeedbackEvent, normalize

CID = "camp-1:7"


def one(kind: str, payload: Any, event_id: str = "") -> FeedbackEvent:
    events = normalize(kind, "acct", payload, event_id=event_id)
    assert len(events) == 1
    return events[0]


def test_sendgrid() -> None:
    events = normalize("sendgrid", "sg", [
        payloads.sendgrid_event("delivered", "A@Example.test", bulkmail_id=CID, event_id="e1"),
        payloads.sendgrid_event("bounce", "b@example.test", event_id="e2"),
        payloads.sendgrid_event("bounce", "c@example.test", event_id="e3", type="blocked"),
        payloads.sendgrid_event("spamreport", "d@example.test", event_id="e4"),
        payloads.sendgrid_event("open", "e@example.test", event_id="e5"),
        payloads.sendgrid_event("dropped", "f@example.test", event_id="e6"),
        "not an event"])
    assert [(e.type, e.sub) for e in events] == [
        ("delivered", ""), ("bounced", "hard"), ("bounced", "soft"), ("complained", ""),
        ("ignored", ""), ("rejected", "")]
    first = events[0]
    assert (first.recipient, first.correlation, first.event_id) == ("a@example.test", CID, "e1")
    assert first.message_id == "14c5d75ce93.dfd.64b469" and first.at == 1513299569
    assert [e.suppresses for e in events] == [False, True, False, True, False, False]


def test_mailgun() -> None:
    delivered = one("mailgun", {"event-data": payloads.mailgun("delivered", "a@example.test",
                                                              bulkmail_id=CID)})
    assert (delivered.type, delivered.correlation) == ("delivered", CID)
    assert delivered.message_id == "20130503182626.18666.16540@sandbox.mailgun.org"
    hard = one("mailgun", {"event-data": payloads.mailgun("failed", "a@example.test",
                                                         severity="permanent")})
    assert (hard.type, hard.sub, hard.suppresses) == ("bounced", "hard", True)
    assert "does not exist" in hard.reason
    soft = one("mailgun", {"event-data": payloads.mailgun("failed", "a@example.test",
                                                         severity="temporary")})
    assert soft.type == "deferred"
    assert one("mailgun", {"event-data": payloads.mailgun("complained", "a@x.test")}
               ).type == "complained"
    assert one("mailgun", {"event-data": payloads.mailgun("opened", "a@x.test")}
               ).type == "ignored"


def test_postmark() -> None:
    bounce = one("postmark", payloads.postmark("Bounce", "john@example.com", bulkmail_id=CID))
    assert (bounce.type, bounce.sub, bounce.correlation, bounce.event_id) == (
        "bounced", "hard", CID, "Bounce:42")
    soft = one("postmark", payloads.postmark("Bounce", "j@example.com", bounce_type="SoftBounce"))
    assert (soft.type, soft.sub) == ("bounced", "soft")
    spam = one("postmark", payloads.postmark("SpamComplaint", "j@example.com"))
    assert spam.type == "complained" and spam.suppresses
    delivery = one("postmark", payloads.postmark("Delivery", "j@example.com"))
    assert delivery.type == "delivered" and delivery.event_id  # digest of the body


def test_resend() -> None:
    bounced = one("resend", payloads.resend("email.bounced", "Jo <jo@example.test>",
                                            bulkmail_id=CID), event_id="msg_1")
    assert (bounced.type, bounced.sub, bounced.recipient, bounced.correlation) == (
        "bounced", "hard", "jo@example.test", CID)
    assert bounced.message_id == "56761188-7520-42d8-8898-ff6fc54ce618"
    assert one("resend", payloads.resend("email.bounced", "a@x.test", bounce_type="Transient"),
               "m").sub == "soft"
    assert one("resend", payloads.resend("email.delivery_delayed", "a@x.test"), "m"
               ).type == "deferred"
    assert one("resend", payloads.resend("email.clicked", "a@x.test"), "m").type == "ignored"


def test_ses_takes_our_id_from_the_tag() -> None:
    bounce = one("ses", payloads.ses_event("Bounce", "a@example.test", bulkmail_id=CID), "sns-1")
    assert (bounce.type, bounce.sub, bounce.correlation, bounce.event_id) == (
        "bounced", "hard", CID, "sns-1:0")
    assert "550 5.1.1" in bounce.reason
    assert one("ses", payloads.ses_event("Bounce", "a@x.test", bounce_type="Transient"), "s"
               ).sub == "soft"
    assert one("ses", payloads.ses_event("Complaint", "a@x.test"), "s").type == "complained"
    assert one("ses", payloads.ses_event("Delivery", "a@x.test"), "s").type == "delivered"


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.text(max_size=20)
    | st.integers(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=6),
    max_leaves=30)


@settings(max_examples=300)
@given(kind=st.sampled_from(["sendgrid", "mailgun", "postmark", "resend", "ses"]),
       payload=json_values)
def test_any_json_is_events_or_a_value_error(kind: str, payload: Any) -> None:
    try:
        events = normalize(kind, "p", payload, event_id="x")
    except ValueError:
        return
    for e in events:
        assert e.type in {"delivered", "deferred", "bounced", "complained", "unsubscribed",
                          "rejected", "ignored"}
        assert e.type == "ignored" or "@" in e.recipient
        json.loads(e.to_json())
