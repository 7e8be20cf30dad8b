"""A real SMTP server (aiosmtpd on 127.0.0.1) that records each transaction's envelope:
what the security tests check MAIL FROM and RCPT TO against."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller

from producers.capture import advertise_pipelining, free_port

__all__ = ["Envelope", "SmtpRecorder"]


@dataclass
class Envelope:
    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    content: bytes = field(repr=False)


class _Handler:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.envelopes.append(Envelope(envelope.mail_from, list(envelope.mail_options),
                                           list(envelope.rcpt_tos),
                                           envelope.original_content or b""))
            n = len(self.envelopes)
        return f"250 2.0.0 Ok: queued as R{n:06d}"


class SmtpRecorder:
    """``with SmtpRecorder(smtputf8=..., pipelining=...) as srv``: ``srv.envelopes``."""

    def __init__(self, *, smtputf8: bool = False, pipelining: bool = False,
                 **controller: Any) -> None:
        self.handler = _Handler()
        if pipelining:
            self.handler.handle_EHLO = advertise_pipelining  # type: ignore[attr-defined]
        self.port = free_port()
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                      enable_SMTPUTF8=smtputf8, **controller)

    @property
    def envelopes(self) -> list[Envelope]:
        return self.handler.envelopes

    def __enter__(self) -> SmtpRecorder:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
