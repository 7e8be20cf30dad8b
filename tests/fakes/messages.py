"""Rendered test batches and the check that each recipient got exactly its own message."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tests.fakes.base import Delivered
from workers.providers.base import OutgoingMessage, Provider, SendResult

__all__ = ["assert_each_got_own", "make_messages", "send_batch"]


def make_messages(n: int, *, campaign: str = "cmp1", start: int = 0, pad: int = 0,
                  sender: str = "News <news@example.com>", reply_to: str | None = None,
                  text: bool = True, html: bool = True, same_body: bool = False,
                  domain: str = "example.org") -> list[OutgoingMessage]:
    """``n`` messages, each personalised (subject, bodies, List-Unsubscribe token).

    ``pad`` adds that many bytes to each html body; ``same_body`` makes every body the
    same (an unpersonalised newsletter) while subjects and headers stay personal.
    """
    out = []
    for row in range(start, start + n):
        who = "everyone" if same_body else f"user {row}"
        filler = "x" * pad
        out.append(OutgoingMessage(
            row=row, campaign_id=campaign, recipient=f"user{row}@{domain}", sender=sender,
            subject=f"Hello user {row} ✓", message_id=f"<{campaign}.{row}@bulkmail.test>",
            text=f"Hi {who}, 100% & <ok> %recipient.x% é" if text else None,
            html=f"<p>Hi <b>{who}</b> &amp; é</p>{filler}" if html else None,
            reply_to=reply_to,
            headers={"List-Unsubscribe": f"<https://u.example.com/{campaign}/{row}>",
                     "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        ))
    return out


def assert_each_got_own(delivered: Sequence[Delivered], messages: Sequence[OutgoingMessage],
                        *, correlation: bool = True) -> None:
    """Every message arrived once, to its recipient, with its own subject, bodies and
    List-Unsubscribe, and (when ``correlation``) our X-Bulkmail-Id header."""
    by_to: dict[str, list[Delivered]] = {}
    for d in delivered:
        by_to.setdefault(d.to, []).append(d)
    assert len(delivered) == len(messages), (len(delivered), len(messages))
    for m in messages:
        got = by_to.get(m.recipient, [])
        assert len(got) == 1, (m.recipient, len(got))
        d = got[0]
        assert d.subject == m.subject
        assert d.text == m.text
        assert d.html == m.html
        assert d.headers.get("List-Unsubscribe") == m.headers["List-Unsubscribe"]
        if correlation:
            assert d.headers.get("X-Bulkmail-Id") == m.correlation_id


def send_batch(provider: Provider, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
    """Send on a fresh loop and close the provider's client, as a worker would at exit."""

    async def go() -> list[SendResult]:
        try:
            return await provider.send(messages)
        finally:
            await provider.aclose()

    return asyncio.run(go())
