"""Each provider's signature scheme, pure: good, bad, stale; SNS string to sign and URLs."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization

from tests.fakes.webhooks import payloads
from tests.fakes.webhooks.signing import (
    SnsSigner,
    basic_auth,
    ec_keypair,
    mailgun_body,
    sendgrid_headers,
    sns_time,
    svix_headers,
)
from workers.feedback.sns import SnsVerifier, check_sns_url, string_to_sign
from workers.feedback.verify import (
    SignatureError,
    load_sendgrid_key,
    svix_secret,
    verify_basic_auth,
    verify_mailgun,
    verify_sendgrid,
    verify_svix,
)

NOW = 1_800_000_000
TOPIC = "arn:aws:sns:us-west-2:123456789012:ses-events"


def test_sendgrid_good_bad_stale() -> None:
    key, public = ec_keypair()
    body = json.dumps([payloads.sendgrid_event("delivered", "a@example.test")]).encode()
    headers = sendgrid_headers(key, body, NOW)
    verify_sendgrid(load_sendgrid_key(public), headers, body, now=NOW + 10, tolerance=300)
    with pytest.raises(SignatureError, match="does not match"):
        verify_sendgrid(load_sendgrid_key(public), headers, body + b" ", now=NOW, tolerance=300)
    other, _ = ec_keypair()
    with pytest.raises(SignatureError, match="does not match"):
        verify_sendgrid(load_sendgrid_key(public), sendgrid_headers(other, body, NOW), body,
                        now=NOW, tolerance=300)
    with pytest.raises(SignatureError, match="replay window"):
        verify_sendgrid(load_sendgrid_key(public), headers, body, now=NOW + 301, tolerance=300)
    with pytest.raises(SignatureError, match="missing header"):
        verify_sendgrid(load_sendgrid_key(public), {}, body, now=NOW, tolerance=300)


def test_sendgrid_key_forms() -> None:
    key, public = ec_keypair()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert load_sendgrid_key(pem).public_numbers() == load_sendgrid_key(public).public_numbers()
    with pytest.raises(ValueError, match="not a public key"):
        load_sendgrid_key("not-a-key")


def test_mailgun_good_bad_stale() -> None:
    body = json.loads(mailgun_body("key-1", {"event": "delivered"}, NOW, token="t" * 50))
    assert verify_mailgun("key-1", body, now=NOW, tolerance=300) == "t" * 50
    with pytest.raises(SignatureError, match="does not match"):
        verify_mailgun("key-2", body, now=NOW, tolerance=300)
    body["signature"]["token"] = "u" * 50
    with pytest.raises(SignatureError, match="does not match"):
        verify_mailgun("key-1", body, now=NOW, tolerance=300)
    stale = json.loads(mailgun_body("key-1", {}, NOW - 400))
    with pytest.raises(SignatureError, match="replay window"):
        verify_mailgun("key-1", stale, now=NOW, tolerance=300)
    with pytest.raises(SignatureError, match="signature"):
        verify_mailgun("key-1", {"event-data": {}}, now=NOW, tolerance=300)


def test_basic_auth() -> None:
    verify_basic_auth("hook:s3cret", basic_auth("hook:s3cret")["Authorization"])
    for header in (None, "", "Bearer x", basic_auth("hook:wrong")["Authorization"], "Basic !!"):
        with pytest.raises(SignatureError):
            verify_basic_auth("hook:s3cret", header)


def test_svix_good_bad_stale_and_several_signatures() -> None:
    secret = "whsec_" + base64.b64encode(b"test-secret-0123456789").decode()
    body = json.dumps(payloads.resend("email.delivered", "a@example.test")).encode()
    headers = svix_headers(secret, "msg_1", NOW, body)
    assert verify_svix(svix_secret(secret), headers, body, now=NOW, tolerance=300) == "msg_1"
    with pytest.raises(SignatureError, match="no svix-signature"):
        verify_svix(svix_secret(secret), headers, body.replace(b"a@", b"b@"), now=NOW,
                    tolerance=300)
    with pytest.raises(SignatureError, match="no svix-signature"):
        verify_svix(svix_secret(secret), headers | {"svix-id": "msg_2"}, body, now=NOW,
                    tolerance=300)
    with pytest.raises(SignatureError, match="replay window"):
        verify_svix(svix_secret(secret), headers, body, now=NOW - 301, tolerance=300)


def test_sns_string_to_sign_follows_the_documented_fields() -> None:
    note = {"Type": "Notification", "MessageId": "m1", "TopicArn": TOPIC, "Subject": "s",
            "Message": "hello\nworld", "Timestamp": "2012-06-05T04:37:04.321Z",
            "SignatureVersion": "1", "UnsubscribeURL": "https://x"}
    assert string_to_sign(note) == (
        b"Message\nhello\nworld\nMessageId\nm1\nSubject\ns\nTimestamp\n"
        b"2012-06-05T04:37:04.321Z\nTopicArn\n" + TOPIC.encode() + b"\nType\nNotification\n")
    del note["Subject"]
    assert b"Subject" not in string_to_sign(note)
    confirm = {"Type": "SubscriptionConfirmation", "MessageId": "m", "Token": "tok",
               "TopicArn": TOPIC, "Message": "m", "SubscribeURL": "https://u",
               "Timestamp": "t"}
    assert string_to_sign(confirm).startswith(b"Message\nm\nMessageId\nm\nSubscribeURL\n")
    assert b"Token\ntok\n" in string_to_sign(confirm)


@pytest.mark.parametrize("url", [
    "http://sns.us-west-2.amazonaws.com/c.pem",
    "https://sns.us-east-1.amazonaws.com/c.pem",
    "https://sns.us-west-2.amazonaws.com.evil.test/c.pem",
    "https://evil.test/sns.us-west-2.amazonaws.com/c.pem",
    "https://user@sns.us-west-2.amazonaws.com/c.pem",
    "https://sns.us-west-2.amazonaws.com:8443/c.pem",
    "https://sns.us-west-2.amazonaws.com/c.txt",
])
def test_sns_certificate_url_must_be_the_topics_sns_host(url: str) -> None:
    with pytest.raises(SignatureError):
        check_sns_url(url, "us-west-2", suffix=".pem")
    assert check_sns_url("https://sns.us-west-2.amazonaws.com/a.pem", "us-west-2",
                         suffix=".pem")


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_signature_versions_bad_stale_and_foreign_topics(version: str) -> None:
    signer = SnsSigner()
    now = dt.datetime.now(dt.UTC)
    message = signer.sign(payloads.sns_notification(
        TOPIC, payloads.ses_event("Delivery", "a@example.test"), message_id="m-1",
        timestamp=sns_time(now), cert_url=signer.url, version=version))
    verifier = SnsVerifier([TOPIC], fetch=signer.fetch)
    t = now.timestamp()
    asyncio.run(verifier.verify(message, now=t, tolerance=300))
    asyncio.run(verifier.verify(message, now=t, tolerance=300))
    assert signer.fetched == [signer.url]  # the certificate is cached
    for bad in (message | {"Message": "{}"}, message | {"SignatureVersion": "3"},
                message | {"Signature": "!!"}, message | {"TopicArn": TOPIC + "x"},
                signer.sign(message | {"TopicArn": TOPIC.replace("ses", "other")})):
        with pytest.raises(SignatureError):
            asyncio.run(verifier.verify(bad, now=t, tolerance=300))
    with pytest.raises(SignatureError, match="replay window"):
        asyncio.run(verifier.verify(message, now=time.time() + 600, tolerance=300))
