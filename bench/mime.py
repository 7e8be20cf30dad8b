"""Per-message cost of rendering + building a ~1 KB text+html message, three ways.

    .venv/bin/python bench/mime.py [--messages N]

Side by side in one run, on the same rendered parts: bulkmail's compile-once templates
and MIME skeleton, the stdlib ``email.message.EmailMessage`` (policy ``default``), and
the compat32 ``MIMEMultipart``. Each stdlib build is serialized with CRLF line ends, as
SMTP needs. Prints the best of several rounds and the machine it ran on.
"""

from __future__ import annotations

import argparse
import email.policy
import os
import platform
import sys
import time
from collections.abc import Callable
from email.header import Header
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate

from config.schema import CampaignSpec, Recipient
from workers.providers.base import OutgoingMessage
from workers.templates import CompiledCampaign

__all__ = ["main"]

TEXT = """Hello {{ first_name }},

thanks for being with us in {{ city }}. This week we have three things for you:

  * the spring collection is in: light jackets, linen shirts, new colours
  * free shipping on every order over 50 EUR until Sunday
  * our shop in {{ city }} opens one hour earlier on Saturdays

Your member number is {{ member_id }}; show it at the till for 10% off.

See you soon,
the Example Shop team

You get this because you subscribed with {{ email }}.
"""

HTML = """<html><body>
<p>Hello {{ first_name }},</p>
<p>thanks for being with us in {{ city }}. This week we have three things for you:</p>
<ul><li>the spring collection is in: light jackets, linen shirts, new colours</li>
<li>free shipping on every order over 50 EUR until Sunday</li>
<li>our shop in {{ city }} opens one hour earlier on Saturdays</li></ul>
<p>Your member number is <b>{{ member_id }}</b>; show it at the till for 10% off.</p>
<p>See you soon,<br>the Example Shop team</p>
<p style="font-size:small">You get this because you subscribed with {{ email }}.</p>
</body></html>
"""

SPEC = CampaignSpec(
    id="bench-spring",
    provider="smtp",
    sender="Example Shop <news@shop.example>",
    subject="{{ first_name }}, spring is here in {{ city }}",
    text=TEXT,
    html=HTML,
    reply_to="Example Shop Support <help@shop.example>",
    headers={
        "List-Unsubscribe": "<https://shop.example/u/{{ member_id }}>",
        "X-Campaign": "spring",
    },
)

SMTP_COMPAT32 = email.policy.compat32.clone(linesep="\r\n")


def recipients(n: int) -> list[Recipient]:
    names = ["Anna", "Jürgen", "Chloé", "Bob", "Zoë"]
    cities = ["Köln", "Lyon", "Porto", "Oslo"]
    return [
        Recipient(
            row=i,
            email=f"user{i}@example.com",
            vars={"first_name": names[i % 5], "city": cities[i % 4], "member_id": 100000 + i},
        )
        for i in range(n)
    ]


def stdlib_message(msg: OutgoingMessage) -> bytes:
    """The same message with the stdlib object model (policy default)."""
    em = EmailMessage(policy=email.policy.default)
    em["From"] = msg.sender
    em["To"] = msg.recipient
    em["Subject"] = msg.subject
    em["Date"] = formatdate()
    em["Message-ID"] = msg.message_id
    if msg.reply_to:
        em["Reply-To"] = msg.reply_to
    for name, value in msg.headers.items():
        em[name] = value
    em.set_content(msg.text or "")
    em.add_alternative(msg.html or "", subtype="html")
    return em.as_bytes(policy=email.policy.SMTP)


def compat32_message(msg: OutgoingMessage) -> bytes:
    """The same message with the compat32 API (MIMEMultipart + MIMEText)."""
    mm = MIMEMultipart("alternative")
    mm["From"] = msg.sender
    mm["To"] = msg.recipient
    # a plain non-ASCII str would be sent as unknown-8bit by compat32
    mm["Subject"] = Header(msg.subject, "utf-8")  # type: ignore[assignment]
    mm["Date"] = formatdate()
    mm["Message-ID"] = msg.message_id
    if msg.reply_to:
        mm["Reply-To"] = msg.reply_to
    for name, value in msg.headers.items():
        mm[name] = value
    mm.attach(MIMEText(msg.text or "", "plain", "utf-8"))
    mm.attach(MIMEText(msg.html or "", "html", "utf-8"))
    return mm.as_bytes(policy=SMTP_COMPAT32)


def best_per_message(
    cases: list[tuple[str, Callable[[], object], int]], rounds: int
) -> dict[str, float]:
    """Best-of-``rounds`` seconds per message for each ``(label, fn, count)``.

    The cases take turns within each round, so a burst of load from elsewhere on the
    machine hits all of them alike instead of skewing one.
    """
    best = {label: float("inf") for label, _, _ in cases}
    for _ in range(rounds):
        for label, fn, count in cases:
            start = time.perf_counter()
            fn()
            best[label] = min(best[label], (time.perf_counter() - start) / count)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000, help="messages per round (ours)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n_fast: int = args.messages
    n_slow = max(200, n_fast // 20)  # the stdlib is ~100x slower: keep the run short
    rounds: int = args.rounds

    compiled = CompiledCampaign.compile(SPEC)
    recs = recipients(n_fast)
    rendered = [compiled.render(r) for r in recs]
    sample = rendered[1]  # "Jürgen": a non-ASCII name in the subject and both bodies
    mime = compiled.build_mime(sample)

    def ours_full() -> None:
        for r in recs:
            compiled.build_mime(compiled.render(r))

    def ours_render() -> None:
        for r in recs:
            compiled.render(r)

    def ours_build() -> None:
        for m in rendered:
            compiled.build_mime(m)

    def stdlib_full() -> None:
        for r in recs[:n_slow]:
            stdlib_message(compiled.render(r))

    def compat32_full() -> None:
        for r in recs[:n_slow]:
            compat32_message(compiled.render(r))

    best = best_per_message(
        [
            ("bulkmail render + build", ours_full, n_fast),
            ("  of which render", ours_render, n_fast),
            ("  of which build", ours_build, n_fast),
            ("stdlib EmailMessage (render + build)", stdlib_full, n_slow),
            ("stdlib compat32 MIMEMultipart (render + build)", compat32_full, n_slow),
        ],
        rounds,
    )
    results = list(best.items())
    ours = results[0][1]

    print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]} ({platform.python_implementation()})")
    print(f"message: text {len(sample.text or '')} chars + html {len(sample.html or '')} chars,"
          f" multipart/alternative, MIME {len(mime)} bytes (ours), "
          f"{len(stdlib_message(sample))} (EmailMessage), {len(compat32_message(sample))} "
          f"(compat32)")
    print(f"best of {rounds} rounds; {n_fast} messages per round for bulkmail, {n_slow} for "
          f"the stdlib; load average {os.getloadavg()[0]:.1f} at the end")
    print()
    print(f"{'':48} {'per message':>12} {'messages/s':>11} {'vs bulkmail':>12}")
    for label, seconds in results:
        ratio = "" if label.startswith("  ") else f"{seconds / ours:11.1f}x"
        print(f"{label:48} {seconds * 1e6:9.1f} us {1 / seconds:11,.0f} {ratio:>12}")


if __name__ == "__main__":
    main()
