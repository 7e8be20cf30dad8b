"""Resend provider against the fake Resend (tests/fakes/resend.py)."""

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
from config.providers import ResendConfig
from tests.fakes import FakeResend, make_messages, send_batch
from tests.fakes.providers import env_fixture, provider_factory, send_each_own
from workers.providers.resend import create, idempotency_key

_key = env_fixture(RESEND_KEY="re_test_key")
provider = provider_factory(create, ResendConfig, "re", kind="resend", api_key_env="RESEND_KEY",
                            base_url="https://re.test")


def test_1250_messages_go_in_13_calls_each_with_its_own_content() -> None:
    fake = FakeResend()
    messages = make_messages(1250)
    _, each = send_each_own(fake, provider(fake), messages, "/emails/batch", 13)
    for m, r, d in each:
        assert d.headers["Message-ID"] == m.message_id
        assert r.provider_id == d.provider_id
    keys = {r.headers["Idempotency-Key"] for r in fake.requests}
    assert len(keys) == 13 and all(len(k) <= 256 for k in keys)
    assert {r.headers["x-batch-validation"] for r in fake.requests} == {"permissive"}


def test_a_redelivered_batch_reuses_its_keys_and_is_not_sent_twice() -> None:
    fake = FakeResend()
    messages = make_messages(150)
    first = send_batch(provider(fake), messages)
    again = send_batch(provider(fake), make_messages(150))  # rendered again, same ids
    assert [r.provider_id for r in first] == [r.provider_id for r in again]
    assert len(fake.delivered) == 150
    assert fake.requests[0].headers["Idempotency-Key"] == idempotency_key(messages[:100])


def test_permissive_errors_fail_only_their_messages() -> None:
    fake = FakeResend(invalid={"user1@example.org"})
    results = send_batch(provider(fake), make_messages(3))
    assert [r.ok for r in results] == [True, False, True]
    err = results[1].error
    assert isinstance(err, PermanentDeliveryError) and "user1@example.org" in err.reply
    assert results[0].provider_id != results[2].provider_id


def test_strict_validation_rejects_the_call() -> None:
    fake = FakeResend(invalid={"user1@example.org"})
    results = send_batch(provider(fake, validation="strict"), make_messages(3))
    assert all(type(r.error) is PermanentDeliveryError and r.error.code == 422
               for r in results)
    assert fake.delivered == []


def test_429_with_retry_after_throttles_the_call() -> None:
    fake = FakeResend()
    fake.fail_next(status=429, json={"statusCode": 429, "name": "rate_limit_exceeded",
                                     "message": "Too many requests"},
                   headers={"retry-after": "2", "ratelimit-reset": "2"})
    fake.fail_next(status=429, json={"statusCode": 429, "name": "daily_quota_exceeded",
                                     "message": "quota"}, headers={"ratelimit-reset": "3600"})
    results = send_batch(provider(fake, concurrency=1), make_messages(200))
    errors = [r.error for r in results]
    assert all(isinstance(e, ThrottledError) for e in errors)
    assert {e.retry_after for e in errors if isinstance(e, ThrottledError)} == {2.0, 3600.0}


def test_409_concurrent_idempotent_request_is_transient() -> None:
    fake = FakeResend()
    fake.fail_next(status=409, json={"statusCode": 409, "name": "concurrent_idempotent_requests",
                                     "message": "in progress"})
    fake.fail_next(status=409, json={"statusCode": 409, "name": "invalid_idempotent_request",
                                     "message": "payload differs"})
    results = send_batch(provider(fake, concurrency=1), make_messages(101))
    assert type(results[0].error) is TransientDeliveryError
    assert type(results[100].error) is PermanentDeliveryError


def test_500_and_slow_answers_are_transient() -> None:
    fake = FakeResend()
    fake.fail_next(status=500, json={"statusCode": 500, "name": "internal_server_error",
                                     "message": "boom"})
    results = send_batch(provider(fake), make_messages(2))
    assert all(type(r.error) is TransientDeliveryError for r in results)
    fake.fail_next(status=200, json={"data": []}, delay=5)
    results = send_batch(provider(fake, timeout=0.05), make_messages(2))
    assert all(isinstance(r.error, AmbiguousDeliveryError) for r in results)


def test_an_answer_that_does_not_match_the_call_is_ambiguous() -> None:
    fake = FakeResend()
    fake.fail_next(status=200, json={"data": [{"id": "only-one"}]})
    results = send_batch(provider(fake), make_messages(2))
    assert all(isinstance(r.error, AmbiguousDeliveryError) for r in results)


def test_403_raises_provider_auth_error() -> None:
    fake = FakeResend(key="re_other")
    with pytest.raises(ProviderAuthError) as info:
        send_batch(provider(fake), make_messages(2))
    assert "re_test_key" not in str(info.value)


def test_sandbox_has_no_switch_the_body_is_unchanged() -> None:
    fake = FakeResend()
    send_batch(provider(fake, sandbox=True), make_messages(1))
    body = json.loads(fake.requests[0].content)
    assert set(body[0]) == {"from", "to", "subject", "text", "html", "headers"}
