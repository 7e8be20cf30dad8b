"""SMTP PIPELINING (RFC 2920) for sessions whose server advertises it.

aiosmtplib opens the session (connect, STARTTLS or implicit TLS, AUTH, EHLO) and then
hands its transport to :class:`PipelinedWire`, which sends MAIL FROM, RCPT TO and DATA in
one write and reads the three replies together, then the body. That is one round trip
and two writes per message instead of four of each: the client's CPU per message roughly
halves, and so does the relay's. aiosmtplib reads one reply per write and drops replies
that arrive early, so a pipelined exchange cannot go through its protocol object.

Per-stage results are kept: a refused MAIL or RCPT is reported for that stage (the
server then refuses the DATA too, RFC 2920 section 3.1, and the session is RSET); a
connection lost while waiting for the reply to the body is *ambiguous*.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import NamedTuple

__all__ = ["PipelinedWire", "Reply", "WireLost", "dot_stuff"]

_LEADING_DOT = re.compile(rb"(?m)^\.")
_MAX_REPLY = 64 * 1024


class Reply(NamedTuple):
    code: int
    text: str


class WireLost(ConnectionError):
    """The connection closed or a reply did not come in time."""


def dot_stuff(message: bytes) -> bytes:
    """The DATA payload: leading dots doubled, CRLF-terminated, then the final dot."""
    body = _LEADING_DOT.sub(b"..", message)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


class PipelinedWire(asyncio.Protocol):
    """Replies of a pipelined SMTP session, parsed as they arrive, read in order."""

    def __init__(self, transport: asyncio.Transport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: BaseException | None = None
        transport.set_protocol(self)

    # -- asyncio.Protocol --------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end + 1]).rstrip(b"\r\n")
            del self._buffer[:end + 1]
            self._lines.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] != b"-":  # last line of a (multi-line) reply
                try:
                    code = int(line[:3])
                except ValueError:
                    code = 0
                self._replies.append(Reply(code, "\n".join(self._lines)))
                self._lines = []
        if len(self._buffer) > _MAX_REPLY:
            self.connection_lost(WireLost("reply too long"))
            self.transport.close()
        self._wake()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = exc or WireLost("connection closed by the server")
        self._wake()

    def eof_received(self) -> bool:
        self._lost = WireLost("connection closed by the server")
        self._wake()
        return False

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- use ---------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._lost is None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.is_open:
            raise WireLost(f"connection lost: {self._lost}")
        self.transport.write(data)

    async def reply(self) -> Reply:
        """The next reply, in order; ``WireLost`` when the connection went or timed out."""
        while not self._replies:
            if self._lost is not None:
                raise WireLost(str(self._lost))
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.timeout):
                    await self._waiter
            except TimeoutError:
                raise WireLost(f"no reply within {self.timeout:g}s") from None
            finally:
                self._waiter = None
        return self._replies.popleft()

    async def command(self, line: bytes) -> Reply:
        self.write(line)
        return await self.reply()

    def close(self) -> None:
        self.transport.close()
