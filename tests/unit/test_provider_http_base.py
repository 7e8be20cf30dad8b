"""The shared HTTP machinery (workers/providers/http_base.py): packing, the client's
life, the concurrency cap, and transport failures. Driven through the generic ``http``
kind and its fake, the smallest kind there is."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from pydantic import TypeAdapter

from config.errors import (
    AmbiguousDeliveryError,
    ConfigError,
    ProviderAuthError,
    TransientDeliveryError,
)
from config.providers import HttpConfig, ProviderConfig, SendgridConfig
from tests.fakes import FakeHttpApi, make_messages, send_batch
from tests.fakes.providers import env_fixture
from workers.providers import Provider, create_provider
from workers.providers.generic_http import GenericHttpProvider, create
from workers.providers.http_base import HttpProvider, pack

_key = env_fixture(HTTP_KEY="http-key")


def provider(transport: httpx.AsyncBaseTransport | None, **cfg: object
             ) -> GenericHttpProvider:
    config = HttpConfig.model_validate(
        {"kind": "http", "api_key_env": "HTTP_KEY", "url": "https://relay.test/send", **cfg})
    if transport is None:
        return create("relay", config)
    return create("relay", config, transport=transport)


# -- pack ---------------------------------------------------------------------------------
def test_pack_by_count_keeps_order() -> None:
    chunks, oversized = pack([1] * 25, max_count=10, max_bytes=1000)
    assert chunks == [list(range(0, 10)), list(range(10, 20)), list(range(20, 25))]
    assert oversized == []


def test_pack_by_bytes_fills_earlier_chunks_first() -> None:
    sizes = [6, 6, 3, 3, 11, 1]
    chunks, oversized = pack(sizes, max_count=10, max_bytes=10)
    assert oversized == [4]
    assert chunks == [[0, 2, 5], [1, 3]]  # the last small item went back to the first
    assert all(sum(sizes[i] for i in c) <= 10 for c in chunks)


def test_pack_never_puts_two_equal_keys_together() -> None:
    chunks, _ = pack([1] * 5, max_count=10, max_bytes=100, keys=["a", "b", "a", "c", "a"])
    assert chunks == [[0, 1, 3], [2], [4]]


# -- the client's life --------------------------------------------------------------------
def test_no_client_until_the_first_send_and_one_kept_for_the_loop() -> None:
    fake = FakeHttpApi()
    p = provider(fake.transport())
    assert p._client is None  # built outside any loop: nothing opened (workers fork)

    async def go() -> None:
        await p.send(make_messages(2))
        first = p._client
        await p.send(make_messages(2, start=2))
        assert p._client is first and first is not None  # kept alive, reused
        await p.aclose()
        assert p._client is None

    asyncio.run(go())


def test_a_new_loop_gets_a_new_client() -> None:
    fake = FakeHttpApi()
    p = provider(fake.transport())
    asyncio.run(p.send(make_messages(1)))
    results = asyncio.run(p.send(make_messages(1, start=1)))  # another loop, no aclose
    assert results[0].ok


def test_concurrency_cap_holds_across_simultaneous_sends() -> None:
    fake = FakeHttpApi()
    fake.delay = 0.02
    p = provider(fake.transport(), concurrency=2, http_batch_size=10)

    async def go() -> None:
        await asyncio.gather(p.send(make_messages(50)), p.send(make_messages(50, start=50)))
        await p.aclose()

    asyncio.run(go())
    assert len(fake.requests) == 10
    assert fake.max_in_flight == 2


def test_empty_batch_makes_no_call() -> None:
    fake = FakeHttpApi()
    assert send_batch(provider(fake.transport()), []) == []
    assert fake.requests == []


# -- failures -----------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_transient_not_ambiguous() -> None:
    p = provider(None, url=f"http://127.0.0.1:{_closed_port()}/send", timeout=2)
    results = send_batch(p, make_messages(2))
    for r in results:
        assert type(r.error) is TransientDeliveryError and r.error.code == 0
        assert "http-key" not in r.error.reply


def test_a_connection_lost_before_the_answer_is_ambiguous() -> None:
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    results = send_batch(provider(httpx.MockTransport(drop)), make_messages(2))
    assert all(isinstance(r.error, AmbiguousDeliveryError) for r in results)


def test_auth_failure_stops_new_calls() -> None:
    fake = FakeHttpApi()
    fake.fail_next(status=401, json={"message": "key revoked"})
    p = provider(fake.transport(), concurrency=1, http_batch_size=10)
    with pytest.raises(ProviderAuthError, match="key revoked"):
        send_batch(p, make_messages(50))
    assert len(fake.requests) == 1


@pytest.mark.parametrize("table", [
    {"kind": "sendgrid", "api_key_env": "HTTP_KEY"},
    {"kind": "mailgun", "api_key_env": "HTTP_KEY", "domain": "mg.example.com"},
    {"kind": "postmark", "api_key_env": "HTTP_KEY"},
    {"kind": "resend", "api_key_env": "HTTP_KEY"},
    {"kind": "ses"},
    {"kind": "http", "api_key_env": "HTTP_KEY", "url": "https://relay.test/send"},
])
def test_every_kind_is_a_provider_from_the_registry(
        table: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    cfg = TypeAdapter(ProviderConfig).validate_python(table)
    p = create_provider("p", cfg)
    assert isinstance(p, Provider)
    assert p.name == "p" and p.wants_mime is False
    assert isinstance(p, HttpProvider) and p._client is None and p.chunk_size >= 1
    assert "http-key" not in repr(p) and "secret" not in repr(p)


def test_a_missing_key_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HTTP_KEY")
    with pytest.raises(ConfigError, match="HTTP_KEY"):
        create_provider("p", SendgridConfig(kind="sendgrid", api_key_env="HTTP_KEY"))
    with pytest.raises(ConfigError, match="no API key configured"):
        create_provider("p", SendgridConfig(kind="sendgrid"))


def test_retry_after_dates_use_the_injected_clock_and_reset_headers_only_on_429() -> None:
    fake = FakeHttpApi()
    fake.fail_next(status=429, json={"message": "slow"},
                   headers={"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"})
    fake.fail_next(status=429, json={"message": "slow"},
                   headers={"X-RateLimit-Reset": "1445412510"})  # epoch, 30 s later
    fake.fail_next(status=500, json={"message": "boom"}, headers={"ratelimit-reset": "5"})
    fake.fail_next(status=503, json={"message": "busy"}, headers={"Retry-After": "4"})
    config = HttpConfig(kind="http", api_key_env="HTTP_KEY", url="https://relay.test/send",
                        http_batch_size=1, concurrency=1)
    p = create("relay", config, transport=fake.transport(),
               clock=lambda: 1445412480.0)  # 07:28:00 GMT that day
    errors = [r.error for r in send_batch(p, make_messages(4))]
    assert [getattr(e, "retry_after", "-") for e in errors] == [30.0, 30.0, None, 4.0]
