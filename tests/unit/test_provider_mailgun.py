"""Mailgun provider against the fake Mailgun (tests/fakes/mailgun.py)."""

from __future__ import annotations

import json

import pytest

from config.errors import (
    AmbiguousDeliveryError,
    PermanentDeliveryError,
    ProviderAuthError,
    ThrottledError,
    TransientDeliveryError,
)
from config.providers import MailgunConfig
from tests.fakes import FakeMailgun, assert_each_got_own, make_messages, send_batch
from tests.fakes.mailgun import form_fields
from tests.fakes.providers import env_fixture, provider_factory, send_each_own
from workers.providers.mailgun import create

_key = env_fixture(MG_KEY="key-test")
provider = provider_factory(create, MailgunConfig, "mg", kind="mailgun", api_key_env="MG_KEY",
                            domain="mg.example.com", base_url="https://mg.test")


def test_1250_messages_go_in_2_calls_each_with_its_own_content() -> None:
    fake = FakeMailgun()
    messages = make_messages(1250, reply_to="help@example.com")
    _, each = send_each_own(fake, provider(fake), messages, "/v3/mg.example.com/messages", 2)
    for m, r, d in each:
        assert d.meta == {"bulkmail_id": m.correlation_id}  # v:bulkmail_id
        assert d.headers["To"] == m.recipient  # an individual message, not the To list
        assert d.headers["Reply-To"] == "help@example.com"
        assert r.provider_id == d.provider_id  # the call's id
    fields = dict(form_fields(fake.requests[0]))
    # the List-Unsubscribe-Post header is the same for everyone: sent once, as is
    assert fields["h:List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert fields["subject"] == "%recipient.bm_subject%"


def test_identical_parts_are_sent_once_and_literal_variables_stay_literal() -> None:
    fake = FakeMailgun()
    messages = make_messages(3, same_body=True)
    results = send_batch(provider(fake), messages)
    assert all(r.ok for r in results)
    fields = dict(form_fields(fake.requests[0]))
    assert fields["html"] == messages[0].html
    # the text holds a literal "%recipient.x%", which Mailgun would fill in
    assert fields["text"] == "%recipient.bm_text%"
    variables = json.loads(fields["recipient-variables"])
    assert set(variables["user0@example.org"]) == {"bm_id", "bm_subject", "bm_text", "bm_h0"}
    assert_each_got_own(fake.delivered, messages)


def test_the_same_address_twice_goes_in_separate_calls() -> None:
    fake = FakeMailgun()
    messages = make_messages(3)
    messages[2].recipient = messages[0].recipient
    results = send_batch(provider(fake), messages)
    assert all(r.ok for r in results)
    assert len(fake.requests) == 2
    assert sorted(d.subject for d in fake.to(messages[0].recipient)) == sorted(
        [messages[0].subject, messages[2].subject])


def test_requests_over_25_mb_are_split() -> None:
    fake = FakeMailgun()
    messages = make_messages(600, pad=50_000)  # ~30 MB of personal html
    results = send_batch(provider(fake), messages)
    assert all(r.ok for r in results)
    assert len(fake.requests) == 2
    assert all(len(r.content) <= 25_000_000 for r in fake.requests)
    assert_each_got_own(fake.delivered, messages)


def test_429_with_retry_after_throttles_the_call() -> None:
    fake = FakeMailgun()
    fake.fail_next(status=429, json={"message": "Too many requests"},
                   headers={"Retry-After": "20"})
    results = send_batch(provider(fake), make_messages(2))
    for r in results:
        assert isinstance(r.error, ThrottledError) and r.error.retry_after == 20.0


def test_400_is_permanent_with_mailguns_message() -> None:
    fake = FakeMailgun()
    fake.fail_next(status=400, json={"message": "to parameter is not a valid address"})
    results = send_batch(provider(fake), make_messages(2))
    for r in results:
        assert type(r.error) is PermanentDeliveryError
        assert r.error.reply == "to parameter is not a valid address"


def test_500_and_slow_answers_are_transient() -> None:
    fake = FakeMailgun()
    fake.fail_next(status=502, text="Bad Gateway")
    results = send_batch(provider(fake), make_messages(2))
    assert all(type(r.error) is TransientDeliveryError for r in results)
    fake.fail_next(status=200, json={}, delay=5)
    results = send_batch(provider(fake, timeout=0.05), make_messages(2))
    assert all(isinstance(r.error, AmbiguousDeliveryError) for r in results)


def test_a_200_without_an_id_is_transient() -> None:
    fake = FakeMailgun()
    fake.fail_next(status=200, text="Mailgun Magnificent API")
    results = send_batch(provider(fake), make_messages(1))
    assert type(results[0].error) is TransientDeliveryError


def test_401_raises_provider_auth_error() -> None:
    fake = FakeMailgun(key="key-other")
    with pytest.raises(ProviderAuthError) as info:
        send_batch(provider(fake), make_messages(2))
    assert "key-test" not in str(info.value)
    assert info.value.reply == "Forbidden"


def test_testmode_is_sent_in_sandbox() -> None:
    fake = FakeMailgun()
    results = send_batch(provider(fake, sandbox=True), make_messages(3))
    assert all(r.ok for r in results)
    assert dict(form_fields(fake.requests[0]))["o:testmode"] == "yes"
    assert fake.test_mode_calls == 1 and fake.delivered == []
