"""Calling the HTTP API in-process: httpx over the ASGI transport, on one event loop that
lives for the test (an anyio portal), so tests read as plain synchronous calls."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from config.settings import Settings
from producers.service.app import ServiceConfig, create_app

__all__ = ["ApiClient", "api_client", "settings_for"]


def settings_for(redis_url: str, providers_toml: str, key_prefix: str, folder: Path
                 ) -> Settings:
    path = folder / f"providers-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(providers_toml)
    return Settings(redis_url=redis_url, providers=path, key_prefix=key_prefix)


class ApiClient:
    """``request(method, url, **httpx kwargs)`` and the usual verbs, synchronously."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self.portal = portal
        self.client = client

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            return await self.client.request(method, url, **kw)

        return self.portal.call(go)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)


@contextmanager
def api_client(settings: Settings, config: ServiceConfig | None = None
               ) -> Iterator[ApiClient]:
    app = create_app(settings, config)
    with start_blocking_portal() as portal:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://bulkmail.test")
        try:
            yield ApiClient(portal, client)
        finally:
            portal.call(client.aclose)
