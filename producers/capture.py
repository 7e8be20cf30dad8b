"""A local capture SMTP server: accepts everything and writes each message to a folder.

Used by ``bulkmail demo`` (so no mail leaves the machine) and handy for trying a
campaign before pointing it at a real relay. Runs aiosmtpd in a background thread.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

__all__ = ["CaptureServer", "advertise_pipelining", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def advertise_pipelining(server: Any, session: Any, envelope: Any, hostname: str,
                               responses: list[str]) -> list[str]:
    """aiosmtpd ``handle_EHLO`` hook adding PIPELINING (RFC 2920) to the EHLO reply.

    aiosmtpd reads commands one line at a time, so it serves pipelined clients; it only
    does not say so. Real relays (Postfix, Exchange, the big providers) all advertise it.
    """
    session.host_name = hostname  # aiosmtpd leaves this to a handle_EHLO hook
    return [responses[0], "250-PIPELINING", *responses[1:]]


class _Handler:
    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.count = 0
        self.by_recipient: Counter[str] = Counter()
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.count += 1
            n = self.count
            for rcpt in envelope.rcpt_tos:
                self.by_recipient[rcpt.lower()] += 1
        if self.folder is not None:
            (self.folder / f"{n:08d}.eml").write_bytes(envelope.original_content or b"")
        return f"250 2.0.0 Ok: queued as C{n:08d}"


class CaptureServer:
    """``with CaptureServer(folder) as srv: srv.port`` — a real SMTP server on 127.0.0.1."""

    def __init__(self, folder: str | Path | None = None, *, port: int = 0,
                 pipelining: bool = True) -> None:
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.handler = _Handler(self.folder)
        if pipelining:
            self.handler.handle_EHLO = advertise_pipelining  # type: ignore[attr-defined]
        # aiosmtpd's Controller connects to its own port to check it is up, so it needs a
        # real port number up front rather than 0.
        self._port = port or free_port()
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self._port,
                                      data_size_limit=50 * 1024 * 1024)

    @property
    def port(self) -> int:
        return self._port

    @property
    def received(self) -> int:
        return self.handler.count

    @property
    def by_recipient(self) -> Counter[str]:
        return self.handler.by_recipient

    def start(self) -> CaptureServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
