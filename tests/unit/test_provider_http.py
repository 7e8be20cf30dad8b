"""The generic ``http`` provider against a fake of its documented contract."""

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
from config.providers import HttpConfig
from tests.fakes import FakeHttpApi, make_messages, send_batch
from tests.fakes.providers import env_fixture, provider_factory, send_each_own
from workers.providers.generic_http import GenericHttpProvider, create

_key = env_fixture(HTTP_KEY="http-key")
provider = provider_factory(create, HttpConfig, "relay", kind="http", api_key_env="HTTP_KEY",
                            url="https://relay.test/send")


def test_1250_messages_go_in_batches_of_http_batch_size() -> None:
    fake = FakeHttpApi()
    messages = make_messages(1250)
    p: GenericHttpProvider = provider(fake)
    assert p.chunk_size == 100 * 4
    _, each = send_each_own(fake, p, messages, "/send", 13)
    for m, r, d in each:
        assert d.meta == {"correlation_id": m.correlation_id, "id": m.message_id}
        assert r.provider_id == d.provider_id


def test_batch_size_header_and_scheme_are_configurable() -> None:
    fake = FakeHttpApi(header="X-Api-Key", scheme="", max_batch=500)
    results = send_batch(provider(fake, http_batch_size=500, auth_header="X-Api-Key",
                                  auth_scheme=""), make_messages(1250))
    assert all(r.ok for r in results)
    assert len(fake.requests) == 3
    assert fake.requests[0].headers["X-Api-Key"] == "http-key"


def test_per_message_errors_in_a_200() -> None:
    fake = FakeHttpApi(rejected={"user1@example.org"}, throttled={"user2@example.org"})
    results = send_batch(provider(fake), make_messages(3))
    assert results[0].ok
    assert type(results[1].error) is PermanentDeliveryError
    assert isinstance(results[2].error, ThrottledError)
    assert results[2].error.retry_after == 7.0


def test_whole_call_errors() -> None:
    fake = FakeHttpApi()
    fake.fail_next(status=429, json={"message": "slow down"}, headers={"Retry-After": "9"})
    fake.fail_next(status=500, json={"message": "boom"})
    fake.fail_next(status=422, json={"error": "bad payload"})
    fake.fail_next(status=200, json={"results": [{"id": "1"}]})  # one result for 100
    results = send_batch(provider(fake, concurrency=1), make_messages(500))
    errors = [results[i].error for i in (0, 100, 200, 300)]
    assert isinstance(errors[0], ThrottledError) and errors[0].retry_after == 9.0
    assert type(errors[1]) is TransientDeliveryError
    assert type(errors[2]) is PermanentDeliveryError and errors[2].reply == "bad payload"
    assert isinstance(errors[3], AmbiguousDeliveryError)
    assert results[400].ok


def test_slow_answer_is_transient() -> None:
    fake = FakeHttpApi()
    fake.fail_next(status=200, json={"results": []}, delay=5)
    results = send_batch(provider(fake, timeout=0.05), make_messages(2))
    assert all(isinstance(r.error, TransientDeliveryError) for r in results)


def test_401_raises_provider_auth_error() -> None:
    fake = FakeHttpApi(key="other")
    with pytest.raises(ProviderAuthError):
        send_batch(provider(fake), make_messages(2))


def test_sandbox_flag_is_in_the_body() -> None:
    fake = FakeHttpApi()
    results = send_batch(provider(fake, sandbox=True), make_messages(2))
    assert all(r.ok for r in results)
    assert json.loads(fake.requests[0].content)["sandbox"] is True
    assert fake.sandboxed == 2 and fake.delivered == []


def test_no_key_configured_sends_no_auth_header() -> None:
    fake = FakeHttpApi()
    config = HttpConfig(kind="http", url="https://relay.test/send")
    with pytest.raises(ProviderAuthError):  # this fake wants one
        send_batch(create("relay", config, transport=fake.transport()), make_messages(1))
    assert "Authorization" not in fake.requests[0].headers
