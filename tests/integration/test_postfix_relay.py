"""The Postfix test relay (``tests/postfix.py``) enforces the anvil limits of issue 8.

Proves the harness before bulkmail is tested against it: a 4th concurrent connection
from 127.0.0.1 is refused at the greeting, and the 301st MAIL FROM within the 10-second
window is refused with Postfix's message-rate reply. What it accepted it discards and
counts. Plain aiosmtplib clients, no bulkmail code.
"""

from __future__ import annotations

import asyncio
import smtplib

import aiosmtplib
import pytest

from tests.postfix import PostfixRelay, SmtpSink

pytestmark = pytest.mark.integration

MESSAGE = b"From: a@shop.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


async def _client(port: int) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
    await client.connect()
    await client.ehlo()
    return client


async def _close(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        await client.quit()


async def _send(client: aiosmtplib.SMTP, n: int) -> None:
    for i in range(n):
        await client.sendmail("a@shop.test", [f"r{i}@example.test"], MESSAGE)


def test_fourth_concurrent_connection_is_refused(postfix_relay: PostfixRelay) -> None:
    async def go() -> aiosmtplib.SMTPConnectResponseError:
        held = [await _client(postfix_relay.port) for _ in range(3)]
        try:
            # the three held sessions still work
            for client in held:
                await client.sendmail("a@shop.test", ["b@example.test"], MESSAGE)
            with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
                await _client(postfix_relay.port)
            return refused.value
        finally:
            for client in held:
                await _close(client)

    refused = asyncio.run(go())
    assert refused.code == 421
    assert refused.message.startswith("4.7.0 ")
    assert "too many connections from 127.0.0.1" in refused.message
    assert postfix_relay.wait_delivered(3)
    assert postfix_relay.delivered() == 3


def test_message_rate_limit_refuses_mail_from(postfix_relay: PostfixRelay) -> None:
    async def go() -> tuple[aiosmtplib.SMTPSenderRefused, int]:
        # 300 messages over the 3 connections the relay allows, well within 10 s
        clients = [await _client(postfix_relay.port) for _ in range(3)]
        try:
            await asyncio.gather(*(_send(client, 100) for client in clients))
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await clients[0].mail("a@shop.test")
            # the limit is the client's, not the session's
            again = await clients[1].execute_command(b"MAIL", b"FROM:<a@shop.test>")
            return refused.value, again.code
        finally:
            for client in clients:
                await _close(client)

    refused, again = asyncio.run(go())
    assert refused.code == 450
    assert refused.message.startswith("4.7.1 ")
    assert "too much mail from 127.0.0.1" in refused.message
    assert again == 450
    assert postfix_relay.wait_delivered(300)
    assert postfix_relay.delivered() == 300


def test_smtp_sink_counts_messages(smtp_sink: SmtpSink) -> None:
    with smtplib.SMTP("127.0.0.1", smtp_sink.port, timeout=10) as client:
        for n in range(4):
            client.sendmail("a@shop.test", [f"r{n}@example.test"], MESSAGE)
    assert smtp_sink.wait_received(4)
    assert smtp_sink.received == 4
