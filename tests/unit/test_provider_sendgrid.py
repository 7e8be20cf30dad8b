"""SendGrid provider against the fake SendGrid (tests/fakes/sendgrid.py)."""

from __future__ import annotations

import json

import pytest

from config.errors import (
    PermanentDeliveryError,
    ProviderAuthError,
    ThrottledError,
    TransientDeliveryError,
)
from config.providers import SendgridConfig
from tests.fakes import FakeSendgrid, assert_each_got_own, make_messages, send_batch
from tests.fakes.providers import env_fixture, provider_factory, send_each_own
from workers.providers.sendgrid import HTML_TAG, TEXT_TAG, create

_key = env_fixture(SG_KEY="SG.test-key")
provider = provider_factory(create, SendgridConfig, "sg", kind="sendgrid", api_key_env="SG_KEY",
                            base_url="https://sg.test")


def test_1250_messages_go_in_2_calls_each_with_its_own_content() -> None:
    fake = FakeSendgrid()
    messages = make_messages(1250, reply_to="help@example.com")
    results, each = send_each_own(fake, provider(fake), messages, "/v3/mail/send", 2)
    assert [r.row for r in results] == [m.row for m in messages]
    for m, r, d in each:
        assert d.meta == {"bulkmail_id": m.correlation_id}
        assert d.headers["Message-ID"] == m.message_id
        assert d.headers["Reply-To"] == "help@example.com"
        assert r.provider_id == d.provider_id  # the call's X-Message-Id
    body = json.loads(fake.requests[0].content)
    assert body["from"] == {"email": "news@example.com", "name": "News"}
    assert [c["value"] for c in body["content"]] == [TEXT_TAG, HTML_TAG]


def test_bodies_over_the_substitution_limit_are_grouped_by_identical_body() -> None:
    fake = FakeSendgrid()
    personal = make_messages(3, pad=12_000)  # too big for substitutions, all different
    shared = make_messages(5, start=3, pad=12_000, same_body=True)  # one big body
    small = make_messages(4, start=8)
    messages = personal + shared + small
    results = send_batch(provider(fake), messages)
    assert all(r.ok for r in results)
    # one call per different large body, one for the shared body, one for the small ones
    assert len(fake.requests) == 3 + 1 + 1
    assert_each_got_own(fake.delivered, messages)


def test_a_400_naming_personalizations_fails_them_and_resends_the_others() -> None:
    fake = FakeSendgrid(invalid={"user1@example.org", "user3@example.org"})
    messages = make_messages(5)
    results = send_batch(provider(fake), messages)
    assert [r.ok for r in results] == [True, False, True, False, True]
    err = results[1].error
    assert isinstance(err, PermanentDeliveryError) and err.code == 400
    assert "valid address" in err.reply
    assert len(fake.requests) == 2
    assert sorted(d.to for d in fake.delivered) == [
        "user0@example.org", "user2@example.org", "user4@example.org"]


def test_a_400_about_the_call_fails_every_message_permanently() -> None:
    fake = FakeSendgrid()
    fake.fail_next(status=400, json={"errors": [{"field": "from.email",
                                                 "message": "The from email is required."}]})
    results = send_batch(provider(fake), make_messages(3))
    for r in results:
        assert type(r.error) is PermanentDeliveryError
        assert r.error.reply == "The from email is required."


def test_429_with_retry_after_throttles_the_call() -> None:
    fake = FakeSendgrid()
    fake.fail_next(status=429, json={"errors": [{"message": "too many requests"}]},
                   headers={"Retry-After": "12"})
    results = send_batch(provider(fake), make_messages(1100))
    throttled = [r.error for r in results if isinstance(r.error, ThrottledError)]
    assert len(throttled) == 1000
    assert {e.retry_after for e in throttled} == {12.0}
    assert sum(r.ok for r in results) == 100


def test_500_and_timeouts_are_transient() -> None:
    fake = FakeSendgrid()
    fake.fail_next(status=503, text="Service Unavailable")
    results = send_batch(provider(fake), make_messages(2))
    assert all(type(r.error) is TransientDeliveryError and r.error.code == 503
               for r in results)
    fake.fail_next(status=202, delay=5)
    results = send_batch(provider(fake, timeout=0.05), make_messages(2))
    assert all(isinstance(r.error, TransientDeliveryError) for r in results)


def test_a_message_over_30_mb_fails_alone() -> None:
    fake = FakeSendgrid()
    messages = make_messages(2) + make_messages(1, start=2, pad=30_000_001)
    results = send_batch(provider(fake), messages)
    assert [r.ok for r in results] == [True, True, False]
    err = results[2].error
    assert isinstance(err, PermanentDeliveryError) and err.code == 413
    assert len(fake.requests) == 1


def test_401_raises_provider_auth_error() -> None:
    fake = FakeSendgrid(key="SG.other")
    with pytest.raises(ProviderAuthError) as info:
        send_batch(provider(fake), make_messages(2))
    assert "SG.test-key" not in str(info.value)


def test_sandbox_mode_is_sent() -> None:
    fake = FakeSendgrid()
    results = send_batch(provider(fake, sandbox=True), make_messages(3))
    assert all(r.ok for r in results)
    body = json.loads(fake.requests[0].content)
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert fake.sandboxed == 3 and fake.delivered == []
