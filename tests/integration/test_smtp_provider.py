"""The pooled SMTP provider against a real (scripted) SMTP server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from config.errors import (
    AmbiguousDeliveryError,
    PermanentDeliveryError,
    ProviderAuthError,
    ThrottledError,
    TransientDeliveryError,
)
from config.providers import SmtpConfig
from config.schema import Keys
from tests.smtp_script import ScriptedSMTP
from workers.providers.base import OutgoingMessage
from workers.providers.smtp import SmtpProvider
from workers.ratelimit import ConnectionLeases
from workers.ratelimit.gate import LeaseGate

pytestmark = pytest.mark.integration


def _msg(row: int, to: str) -> OutgoingMessage:
    mime = (f"From: a@shop.test\r\nTo: {to}\r\nSubject: t{row}\r\n\r\nbody {row}\r\n").encode()
    return OutgoingMessage(row=row, campaign_id="c", recipient=to, sender="Shop <a@shop.test>",
                           subject=f"t{row}", message_id=f"<{row}@shop.test>", mime=mime)


def _cfg(port: int, **kw: Any) -> SmtpConfig:
    return SmtpConfig(kind="smtp", host="127.0.0.1", port=port, tls="none", **kw)


@pytest.fixture(params=[False, True], ids=["step-by-step", "pipelined"])
def server(request: pytest.FixtureRequest) -> Iterator[ScriptedSMTP]:
    """Every test runs against a server without PIPELINING (aiosmtplib drives each
    command) and one that advertises it (MAIL+RCPT+DATA in one write)."""
    with ScriptedSMTP(slow_seconds=2.5, pipelining=request.param) as srv:
        yield srv


def _send(provider: SmtpProvider, msgs: list[OutgoingMessage]) -> dict[int, Any]:
    async def go() -> dict[int, Any]:
        try:
            results = await provider.send(msgs)
            return {r.row: r for r in results}
        finally:
            await provider.aclose()

    return asyncio.run(go())


def test_pool_reuses_and_recycles_connections(server: ScriptedSMTP) -> None:
    provider = SmtpProvider("p", _cfg(server.port, pool_size=4, max_messages_per_connection=30))
    results = _send(provider, [_msg(i, f"u{i}@example.test") for i in range(200)])
    assert len(results) == 200 and all(r.ok for r in results.values())
    assert sum(server.accepted.values()) == 200
    assert server.peak_concurrent <= 4
    # 200 messages, 30 per connection: at least 7 connections, and far fewer than 200
    assert 7 <= server.connections_opened <= 12
    assert provider.pool.opened == server.connections_opened
    # the pipelined variant really pipelined every session
    assert provider.pool.pipelined == (provider.pool.opened if server.pipelining else 0)


def test_each_failure_is_classified_per_recipient(server: ScriptedSMTP) -> None:
    provider = SmtpProvider("p", _cfg(server.port, pool_size=2, timeout=1.0))
    rcpts = ["bounce-a@x.test", "defer2-b@x.test", "throttle1-c@x.test", "drop1-d@x.test",
             "slow1-e@x.test", "full-f@x.test", "reject-g@x.test", "ok-h@x.test"]
    results = _send(provider, [_msg(i, r) for i, r in enumerate(rcpts)])
    err = {rcpts[row].split("-")[0]: r.error for row, r in results.items()}
    assert isinstance(err["bounce"], PermanentDeliveryError) and err["bounce"].hard_bounce
    assert err["bounce"].code == 550 and err["bounce"].enhanced == "5.1.1"
    # Gmail's 450 4.2.1 "receiving mail at a rate" is about that one recipient's inbox
    assert type(err["defer2"]) is TransientDeliveryError
    assert isinstance(err["throttle1"], ThrottledError)
    assert isinstance(err["drop1"], AmbiguousDeliveryError)
    assert isinstance(err["slow1"], AmbiguousDeliveryError)
    assert type(err["full"]) is TransientDeliveryError  # mailbox full: transient by default
    assert isinstance(err["reject"], PermanentDeliveryError) and not err["reject"].hard_bounce
    assert err["ok"] is None
    # the messages after a drop still went out over a fresh connection
    assert server.accepted["ok-h@x.test"] == 1


def test_mailbox_full_can_be_permanent(server: ScriptedSMTP) -> None:
    provider = SmtpProvider("p", _cfg(server.port, mailbox_full="permanent"))
    results = _send(provider, [_msg(1, "full-a@x.test")])
    assert isinstance(results[1].error, PermanentDeliveryError)


def test_unreachable_relay_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = SmtpProvider("p", _cfg(port, pool_size=2, timeout=2))
    results = _send(provider, [_msg(1, "a@x.test"), _msg(2, "b@x.test")])
    assert all(isinstance(r.error, TransientDeliveryError) for r in results.values())


class _DenyAll:
    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
        return AuthResult(success=False, handled=False)


def test_rejected_credentials_stop_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    class _Accept:
        async def handle_DATA(self, *a: Any) -> str:
            return "250 OK"

    ctl = Controller(_Accept(), hostname="127.0.0.1", port=port, authenticator=_DenyAll(),
                     auth_require_tls=False)
    ctl.start()
    try:
        monkeypatch.setenv("T_RELAY_PW", "wrong")
        provider = SmtpProvider("p", _cfg(port, username="u", password_env="T_RELAY_PW",
                                                allow_plaintext_auth=True))
        with pytest.raises(ProviderAuthError) as exc:
            _send(provider, [_msg(1, "a@x.test"), _msg(2, "b@x.test")])
        assert exc.value.code == 535
        assert "wrong" not in str(exc.value)
    finally:
        ctl.stop()


def test_capped_sessions_are_given_back_when_the_batch_ends(
        server: ScriptedSMTP, redis_url: str, keys: Keys) -> None:
    """Between tasks nothing runs on a worker's loop, so a capped pool closes its idle
    sessions at the end of each batch; otherwise one process that finished its batch would
    keep every lease and starve the others (seen in the cluster cap test)."""

    async def go() -> tuple[int, int]:
        client = aioredis.Redis.from_url(redis_url)
        cfg = _cfg(server.port, pool_size=3, max_connections=3)
        leases = ConnectionLeases(client, keys, "p", cfg)
        provider = SmtpProvider("p", cfg, gate=LeaseGate(leases, "test", wait=1.0))
        try:
            results = await provider.send([_msg(i, f"u{i}@example.test") for i in range(9)])
            assert all(r.ok for r in results)
            during = await leases.live()
            await provider.release_idle()
            return during, await leases.live()
        finally:
            await provider.aclose()
            await client.aclose()

    during, after = asyncio.run(go())
    assert 1 <= during <= 3
    assert after == 0
