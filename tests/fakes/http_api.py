"""Fake of the generic ``http`` contract (documented in workers/providers/generic_http.py).

``POST`` to the configured path with ``{auth_header}: {scheme} {key}``; a JSON body
``{"sandbox", "messages": [...]}`` of at most ``max_batch`` messages (413 beyond);
answers 200 ``{"results": [...]}``, one per message in order: ``{"id"}`` or
``{"error": {"status", "message", "retry_after"?}}``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from tests.fakes.base import Delivered, FakeApi, json_response

__all__ = ["FakeHttpApi"]


class FakeHttpApi(FakeApi):
    def __init__(self, *, path: str = "/send", key: str = "http-key",
                 header: str = "Authorization", scheme: str = "Bearer", max_batch: int = 100,
                 rejected: set[str] | None = None, throttled: set[str] | None = None) -> None:
        super().__init__()
        self.path = path
        self.expected_auth = (header, f"{scheme} {key}" if scheme else key)
        self.max_batch = max_batch
        self.rejected = rejected or set()
        self.throttled = throttled or set()
        self.sandboxed = 0

    def serve(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or request.url.path != self.path:
            return json_response(404, {"message": "not found"})
        header, value = self.expected_auth
        if request.headers.get(header) != value:
            return json_response(401, {"message": "bad credentials"})
        body = json.loads(request.content)
        messages = body.get("messages")
        if not isinstance(messages, list):
            return json_response(400, {"message": "messages must be a list"})
        if len(messages) > self.max_batch:
            return json_response(413, {"message": f"at most {self.max_batch} messages"})
        return json_response(200, {"results": [self._one(m, body.get("sandbox") is True)
                                               for m in messages]})

    def _one(self, m: dict[str, Any], sandbox: bool) -> dict[str, Any]:
        if m["to"] in self.rejected:
            return {"error": {"status": 422, "message": f"recipient refused: {m['to']}"}}
        if m["to"] in self.throttled:
            return {"error": {"status": 429, "message": "slow down", "retry_after": 7}}
        pid = uuid.uuid4().hex
        if sandbox:
            self.sandboxed += 1
        else:
            self.delivered.append(Delivered(
                to=m["to"], sender=m["from"], subject=m["subject"], text=m.get("text"),
                html=m.get("html"), headers=dict(m.get("headers") or {}),
                meta={"correlation_id": m["correlation_id"], "id": m["id"]},
                provider_id=pid))
        return {"id": pid}
