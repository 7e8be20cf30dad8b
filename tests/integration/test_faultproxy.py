"""The fault-injecting proxy itself, in front of the real Redis: each mode does what its
docstring promises, so tests built on it break what they say they break."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    url = urlparse(redis_url)
    with FaultProxy(url.hostname or "127.0.0.1", url.port or 6379) as p:
        yield p


def _client(proxy: FaultProxy, timeout: float = 2.0) -> redis.Redis:
    # no client-side retries: each fault must show as the error it is
    return redis.Redis(host=proxy.host, port=proxy.port, socket_timeout=timeout,
                       socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))


def test_pass_forwards_both_ways(proxy: FaultProxy, key_prefix: str) -> None:
    client = _client(proxy)
    assert proxy.port != 0 and proxy.mode == "pass"
    client.set(f"{key_prefix}:fp", b"x" * 200_000)  # more than one read's worth
    assert client.get(f"{key_prefix}:fp") == b"x" * 200_000
    assert proxy.connections == 1 and proxy.live == 1
    client.delete(f"{key_prefix}:fp")
    client.close()


def test_pause_holds_bytes_and_keeps_connections(proxy: FaultProxy) -> None:
    client = _client(proxy, timeout=0.3)
    assert client.ping()
    proxy.pause()
    with pytest.raises(redis.exceptions.TimeoutError):
        client.ping()
    assert proxy.live == 1  # nothing was closed
    proxy.resume()
    fresh = _client(proxy)
    assert fresh.ping()


def _raw_ping(sock: socket.socket) -> bytes:
    sock.sendall(b"PING\r\n")
    return sock.recv(64)


def test_cut_resets_live_connections_and_lets_new_ones_in(proxy: FaultProxy) -> None:
    # a raw socket: redis-py would quietly reconnect and hide the cut
    with socket.create_connection(proxy.address, timeout=2) as sock:
        assert _raw_ping(sock) == b"+PONG\r\n"
        proxy.cut()
        assert proxy.live == 0
        try:
            got = _raw_ping(sock)
        except ConnectionError:  # reset
            got = b""
        assert got == b""
    with socket.create_connection(proxy.address, timeout=2) as sock:
        assert _raw_ping(sock) == b"+PONG\r\n"  # the proxy still listens
    assert proxy.connections == 2
    assert _client(proxy).ping()


def test_refuse_until_resumed(proxy: FaultProxy) -> None:
    client = _client(proxy)
    assert client.ping()
    port = proxy.port
    proxy.refuse()
    with pytest.raises(redis.exceptions.ConnectionError) as info:
        client.ping()
    assert "refused" in str(info.value).lower() or "reset" in str(info.value).lower()
    with pytest.raises(redis.exceptions.ConnectionError, match=r"(?i)refused"):
        _client(proxy).ping()
    proxy.resume()
    assert proxy.port == port
    deadline = time.monotonic() + 5
    while True:  # bounded: the listener is back at once, this only absorbs scheduling
        try:
            assert _client(proxy).ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
