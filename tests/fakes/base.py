"""What every fake provider shares: request recording, fault injection, deliveries.

A fake is an ``async`` handler function for :class:`httpx.MockTransport` (the httpx
way: a transport is one method), so tests run in-process with no sockets. Each fake
implements its provider's documented contract (docs/providers.md): auth, limits, error
shapes, and what each recipient would receive (:attr:`FakeApi.delivered`).
"""

from __future__ import annotations

import abc
import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["Delivered", "FakeApi", "Fault", "json_response"]


@dataclass
class Delivered:
    """One message as its recipient would get it (after the provider's substitutions)."""

    to: str
    sender: str
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str] = field(default_factory=dict)
    #: what the provider reports back in its events (custom_args, Metadata, v:, tags)
    meta: dict[str, str] = field(default_factory=dict)
    provider_id: str = ""


@dataclass
class Fault:
    """A canned answer for the next request(s), served before any validation."""

    status: int = 500
    json: Any = None
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    #: seconds to wait before answering (a slow provider)
    delay: float = 0.0

    def response(self) -> httpx.Response:
        if self.json is not None:
            return json_response(self.status, self.json, self.headers)
        return httpx.Response(self.status, text=self.text, headers=self.headers)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None
                  ) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json", **(headers or {})})


class FakeApi(abc.ABC):
    """Base of the fakes: subclasses implement :meth:`serve`."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.delivered: list[Delivered] = []
        #: every answer waits this long (to see concurrency)
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: deque[Fault] = deque()

    def fail_next(self, fault: Fault | None = None, *, times: int = 1, **kwargs: Any) -> None:
        """Answer the next ``times`` requests with ``fault`` (or ``Fault(**kwargs)``)."""
        for _ in range(times):
            self._faults.append(fault or Fault(**kwargs))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self, base_url: str = "https://fake.invalid") -> httpx.AsyncClient:
        """A client straight onto the fake (for testing the fake itself)."""
        return httpx.AsyncClient(transport=self.transport(), base_url=base_url)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self._faults:
                fault = self._faults.popleft()
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                return fault.response()
            return self.serve(request)
        finally:
            self.in_flight -= 1

    @abc.abstractmethod
    def serve(self, request: httpx.Request) -> httpx.Response:
        """The provider's answer to a request that was not faulted."""

    def calls(self, path: str) -> list[httpx.Request]:
        """The requests made to ``path`` (faulted ones included)."""
        return [r for r in self.requests if r.url.path == path]

    def to(self, address: str) -> list[Delivered]:
        return [d for d in self.delivered if d.to == address]
