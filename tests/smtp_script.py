"""A real SMTP server (aiosmtpd) whose behaviour is scripted per recipient.

The local part of a recipient chooses what happens to it::

    bounce-*      550 5.1.1 at RCPT (unknown user: a hard bounce)
    reject-*      554 5.7.1 at DATA (permanent, not a bounce)
    defer2-*      450 4.2.1 at RCPT on the first two attempts, then accepted
    deferall-*    451 4.3.0 at RCPT, always
    throttle1-*   421 4.7.0 rate limited, closing the connection (first attempt only)
    drop1-*       the connection drops after the body, with no reply (first attempt only)
    slow1-*       the DATA reply comes later than the client's timeout (first attempt only)
    full-*        552 5.2.2 mailbox full at RCPT (first attempt only)
    anything else accepted

It counts attempts and accepted messages per recipient, connections opened and the peak
number of concurrent connections, and records when each message was accepted.

Options for the rate-limit tests (all off by default):

    data_delay=S       every DATA reply (accepted mail) waits S seconds: keeps
                       connections busy, as a slow relay does
    storm_seconds=S    a "421 storm": from the first RCPT on, every RCPT is answered
                       421 4.7.0 and the connection closed, for S seconds; then mail is
                       accepted again (``storm(S)`` starts one at any time)

Times are ``time.time()`` (CLOCK_REALTIME): the clock Redis ``TIME`` reads on the same
host, so they compare with the limiter's bucket times.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from producers.capture import advertise_pipelining, free_port

__all__ = ["ScriptedSMTP"]


class _CountingSMTP(SMTP):
    def __init__(self, owner: ScriptedSMTP, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._opened()
        super().connection_made(transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._closed()
        super().connection_lost(exc)


class _Handler:
    def __init__(self, owner: ScriptedSMTP) -> None:
        self.o = owner

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        addr = address.lower()
        kind = addr.split("-", 1)[0] if "-" in addr.split("@")[0] else ""
        with self.o.lock:
            self.o.rcpt_attempts[addr] += 1
            n = self.o.rcpt_attempts[addr]
            storming = self.o._storming()
        if storming:
            asyncio.get_running_loop().call_later(0.05, server.transport.close)
            return "421 4.7.0 Too many messages, rate limited, closing connection"
        if kind == "bounce":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if kind == "defer2" and n <= 2:
            return "450 4.2.1 The user you are trying to contact is receiving mail at a rate"
        if kind == "deferall":
            return "451 4.3.0 Temporary local problem"
        if kind == "full" and n == 1:
            return "552 5.2.2 Mailbox full"
        if kind == "throttle1" and n == 1:
            # reply first, then hang up, as a throttling server does
            asyncio.get_running_loop().call_later(0.05, server.transport.close)
            return "421 4.7.0 Too many messages, rate limited, closing connection"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        addr = envelope.rcpt_tos[0].lower()
        local = addr.split("@")[0]
        with self.o.lock:
            self.o.data_attempts[addr] += 1
            n = self.o.data_attempts[addr]
        if local.startswith("reject-"):
            return "554 5.7.1 Message rejected by policy"
        if local.startswith("drop1-") and n == 1:
            with self.o.lock:
                self.o._accept(addr)  # the body arrived: a real server may deliver it
            server.transport.close()
            return "250 never seen by the client"
        if local.startswith("slow1-") and n == 1:
            with self.o.lock:
                self.o._accept(addr)
            await asyncio.sleep(self.o.slow_seconds)
            return "250 too late"
        if self.o.data_delay > 0:
            await asyncio.sleep(self.o.data_delay)
        with self.o.lock:
            self.o._accept(addr)
            self.o.messages.append(envelope.original_content or b"")
        return "250 2.0.0 Ok: queued"


class ScriptedSMTP:
    """``with ScriptedSMTP() as srv: srv.port``; see the module docstring for the script."""

    def __init__(self, *, slow_seconds: float = 3.0, keep_messages: bool = False,
                 data_delay: float = 0.0, storm_seconds: float = 0.0,
                 pipelining: bool = False) -> None:
        self.lock = threading.Lock()
        self.rcpt_attempts: Counter[str] = Counter()
        self.data_attempts: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        #: (time.time(), recipient) of every accepted message, in order of acceptance
        self.accepted_at: list[tuple[float, str]] = []
        self.data_delay = data_delay
        #: storm: length, start and end (None until it starts), and 421s answered in it
        self.storm_seconds = storm_seconds
        self.storm_started: float | None = None
        self.storm_until: float | None = None
        self.storm_replies = 0
        self.messages: list[bytes] = []
        self.keep_messages = keep_messages
        self.slow_seconds = slow_seconds
        self.connections_opened = 0
        self.concurrent = 0
        self.peak_concurrent = 0
        self.port = free_port()
        handler = _Handler(self)
        self.pipelining = pipelining
        if pipelining:  # the client then sends MAIL, RCPT and DATA in one write
            handler.handle_EHLO = advertise_pipelining  # type: ignore[attr-defined]
        self._controller = Controller(handler, hostname="127.0.0.1", port=self.port)
        self._controller.factory = lambda: _CountingSMTP(self, handler)  # type: ignore[method-assign]

    def storm(self, seconds: float) -> None:
        """Answer 421 4.7.0 to every RCPT (closing the connection) for ``seconds``."""
        with self.lock:
            self.storm_started = time.time()
            self.storm_until = self.storm_started + seconds

    def _storming(self) -> bool:
        # called with the lock held, on every RCPT
        now = time.time()
        if self.storm_until is None and self.storm_seconds > 0:
            self.storm_started, self.storm_until = now, now + self.storm_seconds
        if self.storm_until is not None and now < self.storm_until:
            self.storm_replies += 1
            return True
        return False

    def _accept(self, addr: str) -> None:
        # called with the lock held
        self.accepted[addr] += 1
        self.accepted_at.append((time.time(), addr))

    def _opened(self) -> None:
        with self.lock:
            self.connections_opened += 1
            self.concurrent += 1
            self.peak_concurrent = max(self.peak_concurrent, self.concurrent)

    def _closed(self) -> None:
        with self.lock:
            self.concurrent -= 1

    def __enter__(self) -> ScriptedSMTP:
        self._controller.start()
        # the controller's own liveness probe counts as a connection: start from zero
        with self.lock:
            self.connections_opened = 0
            self.peak_concurrent = self.concurrent
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
