"""A fast SMTP sink for benchmarks when Postfix's ``smtp-sink`` is not installed.

    python bench/sink.py PORT

Answers 220 on connect, 354 to DATA, 221 to QUIT and 250 to everything else, finds the
end of the message (CRLF . CRLF, also across reads) and throws the message away. An
asyncio protocol on uvloop (plain asyncio when uvloop is missing), one process. It is not
an SMTP server: it checks nothing, so it costs the client side nothing but the round trips.
On SIGTERM / SIGINT it prints how many messages it took and exits.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import cast

__all__ = ["SinkProtocol", "run", "serve"]

_END = b"\r\n.\r\n"
_EHLO = b"250-bench-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n"


class SinkProtocol(asyncio.Protocol):
    """One SMTP session: command mode, or data mode until the lone dot.

    Subclasses change what it says through the class attributes and the hooks
    :meth:`command`, :meth:`refuse_data` and :meth:`accepted`."""

    received = 0  # messages, over all sessions of the process
    greeting = b"220 bench-sink ESMTP\r\n"
    ehlo = _EHLO
    queued = b"250 2.0.0 Ok: queued as BENCH\r\n"

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.in_data = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.greeting)

    def command(self, verb: bytes, line: bytes) -> bytes:
        """The reply to a command other than DATA, EHLO/LHLO and QUIT."""
        return b"250 2.0.0 Ok\r\n"

    def refuse_data(self) -> bytes | None:
        """The reply that refuses a DATA command, or None to take the message."""
        return None

    def accepted(self) -> None:
        """A message has ended (after its lone dot)."""
        SinkProtocol.received += 1

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buf = self.buffer + data
        replies: list[bytes] = []
        while buf:
            if self.in_data:
                end = buf.find(_END)
                if end < 0:
                    buf = buf[-4:]  # keep enough to see an end marker cut by the read
                    break
                buf = buf[end + len(_END):]
                self.in_data = False
                self.accepted()
                replies.append(self.queued)
                continue
            line, sep, rest = buf.partition(b"\r\n")
            if not sep:
                break
            buf = rest
            verb = line[:4].upper()
            if verb == b"DATA":
                refused = self.refuse_data()
                if refused is not None:
                    replies.append(refused)
                    continue
                self.in_data = True
                # The DATA line's CRLF also starts the message, so an empty message is
                # CRLF . CRLF as well: put it back in front.
                buf = b"\r\n" + buf
                replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb in (b"EHLO", b"LHLO"):
                replies.append(self.ehlo)
            elif verb == b"QUIT":
                replies.append(b"221 2.0.0 Bye\r\n")
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
            else:
                replies.append(self.command(verb, line))
        self.buffer = buf
        if replies:
            self.transport.write(b"".join(replies))


def _received() -> str:
    return f"bench-sink: {SinkProtocol.received} messages"


async def serve(port: int, host: str = "127.0.0.1",
                protocol: Callable[[], asyncio.Protocol] = SinkProtocol,
                report: Callable[[], str] = _received) -> None:
    """Serve ``protocol`` until SIGTERM / SIGINT, then print ``report()``."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, host, port, backlog=1000)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    async with server:
        await stop
    print(report(), flush=True)


def run(port: int, host: str = "127.0.0.1",
        protocol: Callable[[], asyncio.Protocol] = SinkProtocol,
        report: Callable[[], str] = _received) -> None:
    """:func:`serve` on uvloop (plain asyncio when uvloop is missing)."""
    try:
        import uvloop

        uvloop.run(serve(port, host, protocol, report))
    except ImportError:
        asyncio.run(serve(port, host, protocol, report))


def main() -> None:
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 2525)


if __name__ == "__main__":
    main()
