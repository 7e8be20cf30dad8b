"""Postmark provider against the fake Postmark (tests/fakes/postmark.py)."""

from __future__ import annotations

import pytest

from config.errors import (
    AmbiguousDeliveryError,
    PermanentDeliveryError,
    ProviderAuthError,
    ThrottledError,
    TransientDeliveryError,
)
from config.providers import PostmarkConfig
from tests.fakes import FakePostmark, assert_each_got_own, make_messages, send_batch
from tests.fakes.providers import env_fixture, provider_factory, send_each_own
from workers.providers import create_provider
from workers.providers.postmark import PostmarkProvider, create

_key = env_fixture(PM_TOKEN="pm-server-token")
provider = provider_factory(create, PostmarkConfig, "pm", kind="postmark", api_key_env="PM_TOKEN",
                            base_url="https://pm.test")


def test_registry_builds_it_without_opening_anything() -> None:
    cfg = PostmarkConfig(kind="postmark", api_key_env="PM_TOKEN")
    p = create_provider("pm", cfg)
    assert isinstance(p, PostmarkProvider)
    assert p.name == "pm" and p.wants_mime is False
    assert p.base_url == "https://api.postmarkapp.com"
    assert p.chunk_size == 500 * cfg.concurrency
    assert "pm-server-token" not in repr(p)


def test_1250_messages_go_in_3_batch_calls_each_with_its_own_content() -> None:
    fake = FakePostmark()
    messages = make_messages(1250, reply_to="help@example.com")
    results, each = send_each_own(fake, provider(fake), messages, "/email/batch", 3)
    assert [len(r.content) > 0 for r in fake.requests] == [True] * 3
    assert [r.row for r in results] == [m.row for m in messages]
    for m, r, d in each:
        assert d.meta == {"bulkmail_id": m.correlation_id}
        assert d.headers["Message-ID"] == m.message_id
        assert r.provider_id == d.provider_id


def test_per_element_failures_inside_a_200() -> None:
    fake = FakePostmark(inactive={"user1@example.org"})
    messages = make_messages(3)
    results = send_batch(provider(fake), messages)
    assert [r.ok for r in results] == [True, False, True]
    err = results[1].error
    assert isinstance(err, PermanentDeliveryError) and err.hard_bounce
    assert "inactive" in err.reply and "406" in err.reply


def test_element_rate_limit_code_is_throttling() -> None:
    fake = FakePostmark(throttled={"user0@example.org"})
    results = send_batch(provider(fake), make_messages(2))
    assert isinstance(results[0].error, ThrottledError)
    assert results[1].ok


def test_429_with_retry_after_throttles_the_call() -> None:
    fake = FakePostmark()
    fake.fail_next(status=429, json={"ErrorCode": 429, "Message": "Rate limit exceeded"},
                   headers={"Retry-After": "30"})
    results = send_batch(provider(fake), make_messages(4))
    for r in results:
        assert isinstance(r.error, ThrottledError)
        assert r.error.retry_after == 30.0
        assert r.error.code == 429


def test_500_is_transient_for_the_call() -> None:
    fake = FakePostmark()
    fake.fail_next(status=500, json={"ErrorCode": 500, "Message": "Internal Server Error"})
    results = send_batch(provider(fake), make_messages(600))
    failed = [r for r in results if not r.ok]
    assert len(failed) == 500  # the first call of two
    for r in failed:
        assert type(r.error) is TransientDeliveryError and r.error.code == 500
    assert len(fake.delivered) == 100


def test_a_response_slower_than_the_timeout_is_transient() -> None:
    fake = FakePostmark()
    fake.fail_next(status=200, json=[], delay=5)
    results = send_batch(provider(fake, timeout=0.05), make_messages(2))
    for r in results:
        assert isinstance(r.error, AmbiguousDeliveryError)  # may have been sent: resend
        assert isinstance(r.error, TransientDeliveryError)


def test_whole_call_422_is_permanent_with_postmarks_message() -> None:
    fake = FakePostmark()
    fake.fail_next(status=422, json={"ErrorCode": 300, "Message": "Invalid request"})
    results = send_batch(provider(fake), make_messages(2))
    for r in results:
        assert type(r.error) is PermanentDeliveryError
        assert "Invalid request" in r.error.reply and not r.error.hard_bounce


def test_calls_over_50_mb_are_split_and_a_message_over_it_alone_fails() -> None:
    fake = FakePostmark()
    messages = make_messages(300, pad=200_000)  # ~60 MB in all
    huge = make_messages(1, start=300, pad=50_000_001)
    results = send_batch(provider(fake), messages + huge)
    assert len(fake.calls("/email/batch")) == 2
    assert all(len(r.content) <= 50_000_000 for r in fake.requests)
    assert all(r.ok for r in results[:300])
    err = results[300].error
    assert isinstance(err, PermanentDeliveryError) and "limit" in err.reply
    assert_each_got_own(fake.delivered, messages)


def test_401_raises_provider_auth_error_without_the_token() -> None:
    fake = FakePostmark(token="another")
    with pytest.raises(ProviderAuthError) as info:
        send_batch(provider(fake), make_messages(3))
    assert "pm-server-token" not in str(info.value)
    assert info.value.code == 401


def test_sandbox_sends_the_test_token_and_needs_no_key(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.delenv("PM_TOKEN")
    fake = FakePostmark()
    config = PostmarkConfig(kind="postmark", sandbox=True, base_url="https://pm.test")
    results = send_batch(create("pm", config, transport=fake.transport()), make_messages(3))
    assert all(r.ok for r in results)
    assert fake.requests[0].headers["X-Postmark-Server-Token"] == "POSTMARK_API_TEST"
    assert fake.delivered == [] and fake.validated_only == 3


def test_message_stream_is_sent() -> None:
    fake = FakePostmark()
    send_batch(provider(fake, message_stream="broadcast"), make_messages(1))
    assert b'"MessageStream":"broadcast"' in fake.requests[0].content
