"""SES v2 provider against the fake SES (tests/fakes/ses.py), which checks SigV4."""

from __future__ import annotations

import base64
import json

import pytest

from config.providers import SesConfig
from tests.fakes import FakeSes, make_messages, send_batch
from tests.fakes.providers import provider_factory, send_each_own
from workers.errors import (
    AmbiguousDeliveryError,
    ConfigError,
    PermanentDeliveryError,
    ProviderAuthError,
    ThrottledError,
    TransientDeliveryError,
)
from workers.providers.ses import create, ses_address, tag_value


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


provider = provider_factory(create, SesConfig, "ses", kind="ses", base_url="https://ses.test")


def test_default_host_follows_the_region() -> None:
    p = create("ses", SesConfig(kind="ses", region="eu-west-1"))
    assert p.base_url == "https://email.eu-west-1.amazonaws.com"
    assert p.wants_mime is False
    assert "fake-secret" not in repr(p)


def test_one_signed_call_per_message_each_with_its_own_content() -> None:
    fake = FakeSes()
    messages = make_messages(1250, reply_to="help@example.com")
    _, each = send_each_own(fake, provider(fake, concurrency=8), messages,
                            "/v2/email/outbound-emails", 1250)
    for m, r, d in each:
        assert d.meta == {"bulkmail_id": tag_value(m.correlation_id)}
        assert d.headers["Reply-To"] == "help@example.com"
        assert r.provider_id == d.provider_id
    assert fake.max_in_flight <= 8


def test_calls_run_concurrently_up_to_the_cap() -> None:
    fake = FakeSes()
    fake.delay = 0.02
    send_batch(provider(fake, concurrency=3), make_messages(12))
    assert fake.max_in_flight == 3


def test_tag_value_is_reversible_and_in_the_allowed_alphabet() -> None:
    value = tag_value("spring sale/2024:17")
    assert value.replace("-", "").replace("_", "").isalnum()
    assert base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)) == b"spring sale/2024:17"


def test_a_rejected_message_fails_alone() -> None:
    fake = FakeSes(rejected={"user1@example.org"})
    results = send_batch(provider(fake), make_messages(3))
    assert [r.ok for r in results] == [True, False, True]
    err = results[1].error
    assert type(err) is PermanentDeliveryError and err.reply.startswith("MessageRejected")


def test_throttling_and_transient_errors() -> None:
    fake = FakeSes()
    fake.fail_next(status=429, json={"message": "Maximum sending rate exceeded."},
                   headers={"x-amzn-ErrorType": "TooManyRequestsException:", "Retry-After": "1"})
    fake.fail_next(status=400, json={"message": "Daily quota"},
                   headers={"x-amzn-ErrorType": "LimitExceededException:"})
    fake.fail_next(status=503, json={"message": "Service unavailable"})
    results = send_batch(provider(fake, concurrency=1), make_messages(4))
    first, second, third, fourth = (r.error for r in results)
    assert isinstance(first, ThrottledError) and first.retry_after == 1.0
    assert isinstance(second, ThrottledError)
    assert type(third) is TransientDeliveryError
    assert fourth is None


def test_slow_answer_is_transient() -> None:
    fake = FakeSes()
    fake.fail_next(status=200, json={"MessageId": "x"}, delay=5)
    results = send_batch(provider(fake, timeout=0.05, concurrency=1), make_messages(2))
    assert isinstance(results[0].error, AmbiguousDeliveryError)
    assert results[1].ok


def test_a_message_over_40_mb_fails_without_a_call() -> None:
    fake = FakeSes()
    messages = make_messages(1, pad=40_000_001) + make_messages(1, start=1)
    results = send_batch(provider(fake), messages)
    assert isinstance(results[0].error, PermanentDeliveryError) and results[1].ok
    assert len(fake.requests) == 1


def test_bad_credentials_raise_provider_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    fake = FakeSes()
    with pytest.raises(ProviderAuthError) as info:
        send_batch(provider(fake), make_messages(3))
    assert "not-the-secret" not in str(info.value)
    assert info.value.reply.startswith("InvalidSignatureException")


def test_credentials_from_the_configured_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_ID", "AKIDOTHER")
    monkeypatch.setenv("MY_SECRET", "other-secret")
    fake = FakeSes(key_id="AKIDOTHER", secret="other-secret", region="eu-central-1")
    p = provider(fake, access_key_id_env="MY_ID", secret_access_key_env="MY_SECRET",
                 region="eu-central-1", configuration_set="bulk")
    assert send_batch(p, make_messages(1))[0].ok
    assert json.loads(fake.requests[0].content)["ConfigurationSetName"] == "bulk"


def test_missing_credentials_fail_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID"):
        provider(FakeSes())


def test_addresses_are_encoded_the_way_ses_wants() -> None:
    assert ses_address("news@example.com") == "news@example.com"
    assert ses_address("News <news@example.com>") == "News <news@example.com>"
    assert ses_address("Café News <news@example.com>") == (
        "=?utf-8?q?Caf=C3=A9_News?= <news@example.com>")
    assert ses_address("user@bücher.example") == "user@xn--bcher-kva.example"
    fake = FakeSes()
    results = send_batch(provider(fake), make_messages(1, sender="Café <news@example.com>"))
    assert results[0].ok
    assert json.loads(fake.requests[0].content)["FromEmailAddress"].startswith("=?utf-8?")
