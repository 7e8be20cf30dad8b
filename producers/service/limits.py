"""Request body size limits, enforced while the body streams in (413 problem+json).

A declared ``Content-Length`` over the limit is refused before anything is read; a body
without one (chunked) is counted as it arrives and cut off at the limit. Multipart
uploads (campaign + recipient file) get their own, larger limit.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.service.problems import MEDIA_TYPE

__all__ = ["BodyLimit", "parse_size"]

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"^\s*(\d{1,15}(?:\.\d{1,6})?)\s*([kmgKMG]?)(?:i?[bB])?\s*$")


def parse_size(text: str) -> int:
    """``"10M"`` -> 10485760 (k, M, G are powers of 1024; ``"10MiB"``, ``"10mb"`` too);
    plain numbers are bytes. Raises ValueError."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size; write it like 1048576, '10M' or '1G'")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size < 1:
        raise ValueError(f"{text!r}: a size must be above zero")
    return size


class _TooLarge(HTTPException):
    """Raised from ``receive`` at the limit. An HTTPException, because FastAPI turns any
    other error while it reads a body into a 400; the app's handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes",
                         headers={"Connection": "close"})


class BodyLimit:
    """ASGI middleware: bodies over ``max_body`` (``max_upload`` for multipart) get 413."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_upload: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
        limit = self.max_upload if ctype.startswith("multipart/") else self.max_body
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _refuse(send, limit)


async def _refuse(send: Send, limit: int) -> None:
    body: dict[str, Any] = {"type": "about:blank", "title": "Content too large",
                            "status": 413, "detail": f"the request body is over the limit "
                                                     f"of {limit} bytes"}
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", MEDIA_TYPE.encode()),
                            (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})
