"""Internationalized addresses on the SMTP side (issue 9, item 7): RCPT TO carries the
IDNA (ASCII) domain; a non-ASCII local part goes out only over SMTPUTF8 when the relay
offers it (MAIL FROM then says SMTPUTF8), else that recipient alone fails with a reason.
A real SMTP server records the envelope."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from config.errors import PermanentDeliveryError
from config.providers import SmtpConfig
from config.schema import CampaignSpec, Recipient
from tests.security.smtp_recorder import SmtpRecorder
from workers.providers import create_provider
from workers.providers.base import OutgoingMessage, SendResult
from workers.templates import CompiledCampaign

# Unicode domains as a caller may still hand them over (the ledger's canonical form is
# ASCII), and their ASCII forms
ROWS = ["ann@bücher.example", "bob@xn--bcher-kva.example", "jürgen@bücher.example",
        "carol@example.org", "zoë@例え.jp"]


def _messages(rows: list[str]) -> list[OutgoingMessage]:
    compiled = CompiledCampaign.compile(CampaignSpec(
        id="idn", provider="relay", sender="Shop <news@shop.example>", subject="Hi",
        text="Hello\n"))
    out = []
    for i, addr in enumerate(rows, 1):
        msg = compiled.render(Recipient(i, addr))
        msg.mime = compiled.build_mime(msg)
        out.append(msg)
    return out


def _send(server: SmtpRecorder, rows: list[str]) -> dict[str, SendResult]:
    provider = create_provider("relay", SmtpConfig(kind="smtp", host="127.0.0.1",
                                                   port=server.port, tls="none", pool_size=2))

    async def go() -> list[SendResult]:
        try:
            return await provider.send(_messages(rows))
        finally:
            await provider.aclose()

    return {rows[r.row - 1]: r for r in asyncio.run(go())}


@pytest.fixture(params=[False, True], ids=["step-by-step", "pipelined"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_without_smtputf8_only_the_utf8_local_parts_fail(pipelining: bool) -> None:
    with SmtpRecorder(pipelining=pipelining) as server:
        results = _send(server, ROWS)
    failed = {addr: r.error for addr, r in results.items() if not r.ok}
    assert set(failed) == {"jürgen@bücher.example", "zoë@例え.jp"}
    for error in failed.values():
        assert isinstance(error, PermanentDeliveryError)
        assert "non-ASCII local part" in str(error) and "SMTPUTF8" in str(error)
    got = sorted((e.rcpt_tos[0], e.mail_from, tuple(e.mail_options)) for e in server.envelopes)
    assert got == sorted([
        ("ann@xn--bcher-kva.example", "news@shop.example", ()),
        ("bob@xn--bcher-kva.example", "news@shop.example", ()),
        ("carol@example.org", "news@shop.example", ()),
    ])


def test_with_smtputf8_the_utf8_local_parts_go_out(pipelining: bool) -> None:
    with SmtpRecorder(smtputf8=True, pipelining=pipelining) as server:
        results = _send(server, ROWS)
    assert all(r.ok for r in results.values()), results
    by_rcpt: dict[str, Any] = {e.rcpt_tos[0]: e for e in server.envelopes}
    assert set(by_rcpt) == {"ann@xn--bcher-kva.example", "bob@xn--bcher-kva.example",
                            "jürgen@xn--bcher-kva.example", "carol@example.org",
                            "zoë@xn--r8jz45g.jp"}
    # SMTPUTF8 only on the transactions that need it
    for rcpt, env in by_rcpt.items():
        assert env.mail_from == "news@shop.example"
        assert ("SMTPUTF8" in env.mail_options) == (not rcpt.partition("@")[0].isascii())
    assert "To: <jürgen@xn--bcher-kva.example>".encode() in (
        by_rcpt["jürgen@xn--bcher-kva.example"].content)


def test_a_domain_that_is_not_a_valid_idn_fails_alone() -> None:
    with SmtpRecorder() as server:
        messages = _messages(["ann@example.org", "bob@bücher.example"])
        messages[1].recipient = "bob@a\u200db.example"  # ZWJ: not allowed by IDNA

        provider = create_provider("relay", SmtpConfig(kind="smtp", host="127.0.0.1",
                                                       port=server.port, tls="none"))

        async def go() -> list[SendResult]:
            try:
                return await provider.send(messages)
            finally:
                await provider.aclose()

        results = {r.row: r for r in asyncio.run(go())}
    assert results[1].ok
    assert isinstance(results[2].error, PermanentDeliveryError)
    assert "RCPT TO" in str(results[2].error)
    assert [e.rcpt_tos for e in server.envelopes] == [["ann@example.org"]]
