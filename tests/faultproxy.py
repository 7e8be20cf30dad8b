"""A fault-injecting TCP proxy for tests: break Redis, an SMTP relay or an HTTP API for
real, at the socket, without touching the code under test.

Put it between the code and the service and point the code at the proxy::

    from tests.faultproxy import FaultProxy

    with FaultProxy("127.0.0.1", 6379) as proxy:        # listens on 127.0.0.1:<port 0>
        client = redis.Redis(host=proxy.host, port=proxy.port)
        client.ping()              # "pass": bytes flow both ways
        proxy.pause()              # connections stay open, no byte moves either way:
                                   # the peer sees a hung server (timeouts)
        proxy.resume()             # bytes held back are delivered, traffic flows again
        proxy.cut()                # every live connection is reset (RST): the peer sees
                                   # "connection reset"/EOF; new connections still work
        proxy.refuse()             # stop listening and cut: new connects are refused
                                   # (ECONNREFUSED), as when the service is down
        proxy.resume()             # listen again on the same port

Modes and what the code under test sees:

``pass``
    Plain forwarding (the initial mode, and what :meth:`FaultProxy.resume` returns to).
``pause``
    Accepted connections and new ones stay open but no byte is forwarded in either
    direction until :meth:`FaultProxy.resume`; what was read meanwhile is delivered then,
    in order. A network partition or a stopped (SIGSTOP) server.
``cut``
    A one-off action, not a mode: closes every live connection at once, both sides (RST
    by default, FIN with ``cut(reset=False)``). Clients that reconnect get through.
``refuse``
    The listening socket is closed and live connections are cut: connects fail with
    "connection refused" until :meth:`FaultProxy.resume` listens again (same port).

The proxy runs an asyncio loop in a background thread, so it is driven from plain sync
tests; every control method returns once the change is in effect. ``connections`` counts
connections accepted so far, ``live`` those open now. Use it as a context manager (or
:meth:`start`/:meth:`stop`); :meth:`stop` closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["FaultProxy"]

T = TypeVar("T")

_CHUNK = 65536


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port``; see the module doc."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.mode = "pass"
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._links: set[_Link] = set()

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Start listening (port 0 picks a free port, then :attr:`port` holds it)."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait()
        self._call(self._init())
        self._call(self._listen())
        return self

    def stop(self) -> None:
        """Close the listener and every connection, end the thread."""
        if self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """Where to connect instead of the target."""
        return self.host, self.port

    @property
    def live(self) -> int:
        """Connections open through the proxy now."""
        return len(self._links)

    def pause(self) -> None:
        """Stop forwarding bytes in both directions; keep every connection open."""
        self._call(self._set_flowing(False))
        self.mode = "pause"

    def resume(self) -> None:
        """Back to ``pass``: forward again (held bytes first), listen again if refused."""
        self._call(self._resume())
        self.mode = "pass"

    def cut(self, *, reset: bool = True) -> None:
        """Close every live connection now (RST, or FIN with ``reset=False``)."""
        self._call(self._close_all(listen=True, reset=reset))

    def refuse(self) -> None:
        """Stop listening and cut every live connection: connects are refused."""
        self._call(self._close_all(listen=False, reset=True))
        self.mode = "refuse"

    # -- the loop side -----------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "FaultProxy is not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _init(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set_flowing(self, on: bool) -> None:
        assert self._flowing is not None
        if on:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _resume(self) -> None:
        await self._listen()
        await self._set_flowing(True)

    async def _close_all(self, *, listen: bool, reset: bool) -> None:
        if not listen and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for link in list(self._links):
            link.close(reset=reset)
        self._links.clear()

    async def _shutdown(self) -> None:
        await self._close_all(listen=False, reset=True)
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pump(reader, up_writer, link),
                                 self._pump(up_reader, writer, link))
        except asyncio.CancelledError:
            # stop(): asyncio logs a cancelled connection callback as an error; the
            # shutdown is deliberate, so end quietly
            link.close(reset=True)
        finally:
            self._links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    link: _Link) -> None:
        assert self._flowing is not None
        try:
            while not link.closed:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if not self._flowing.is_set():
                    # paused: hold what was read, keep the connection open
                    await _first(self._flowing.wait(), link.gone.wait())
                if link.closed:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            link.close(reset=False)


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


class _Link:
    """One proxied connection: the client side and the upstream side."""

    __slots__ = ("closed", "down", "gone", "up")

    def __init__(self, down: asyncio.StreamWriter, up: asyncio.StreamWriter) -> None:
        self.down = down
        self.up = up
        self.closed = False
        self.gone = asyncio.Event()

    def close(self, *, reset: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.gone.set()
        for w in (self.down, self.up):
            with contextlib.suppress(Exception):
                if reset:
                    w.transport.abort()
                else:
                    w.close()
