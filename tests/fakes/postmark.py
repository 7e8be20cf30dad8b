"""Fake Postmark ``POST /email`` and ``/email/batch`` (docs/providers.md, "Postmark").

``X-Postmark-Server-Token`` (``POSTMARK_API_TEST`` validates without sending, 401
ErrorCode 10 otherwise); batch <= 500 messages (422 ErrorCode 410) and 50 MB; the batch
answers 200 with one ``{ErrorCode, Message, MessageID, SubmittedAt, To}`` per element in
request order, failures included (406 inactive recipient, 300 invalid request, 429
rate limited).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from tests.fakes.base import Delivered, FakeApi, json_response

__all__ = ["TEST_TOKEN", "FakePostmark"]

TEST_TOKEN = "POSTMARK_API_TEST"
MAX_MESSAGES = 500
MAX_BYTES = 50 * 1024 * 1024


class FakePostmark(FakeApi):
    def __init__(self, token: str = "pm-server-token", *, inactive: set[str] | None = None,
                 throttled: set[str] | None = None) -> None:
        super().__init__()
        self.token = token
        #: addresses Postmark has marked inactive (hard bounce, complaint, manual)
        self.inactive = inactive or set()
        #: addresses whose element answers ErrorCode 429 (rate limited)
        self.throttled = throttled or set()
        self.validated_only = 0

    def serve(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method != "POST" or path not in ("/email", "/email/batch"):
            return json_response(404, {"ErrorCode": 404, "Message": "Not found"})
        token = request.headers.get("X-Postmark-Server-Token")
        if token not in (self.token, TEST_TOKEN):
            return json_response(401, {"ErrorCode": 10, "Message":
                "Request does not contain a valid Server token."})
        if len(request.content) > MAX_BYTES:
            return json_response(413, {"ErrorCode": 300, "Message": "Request too large"})
        try:
            body = json.loads(request.content)
        except ValueError:
            return json_response(422, {"ErrorCode": 402, "Message": "Invalid JSON"})
        test = token == TEST_TOKEN
        if path == "/email":
            answer = self._one(body, test)
            return json_response(200 if answer["ErrorCode"] == 0 else 422, answer)
        if not isinstance(body, list):
            return json_response(422, {"ErrorCode": 300, "Message": "Expected an array"})
        if len(body) > MAX_MESSAGES:
            return json_response(422, {"ErrorCode": 410, "Message":
                "You may not send more than 500 messages in a batch."})
        return json_response(200, [self._one(e, test) for e in body])

    def _one(self, e: Any, test: bool) -> dict[str, Any]:
        if not isinstance(e, dict) or not e.get("From"):
            return {"ErrorCode": 300, "Message": "Invalid 'From' address: ''."}
        to = e.get("To") or ""
        address = to.rsplit("<", 1)[-1].rstrip(">").strip()
        if not address or len(to.split(",")) > 50:
            return {"ErrorCode": 300, "Message": "Invalid 'To' address."}
        if not (e.get("TextBody") or e.get("HtmlBody")):
            return {"ErrorCode": 300, "Message": "Provide either email TextBody or HtmlBody "
                    "or both."}
        if address in self.inactive:
            return {"ErrorCode": 406, "Message": "You tried to send to recipient(s) that "
                    "have been marked as inactive. Found inactive addresses: "
                    f"{address}. Inactive recipients are ones that have generated a hard "
                    "bounce, a spam complaint, or a manual suppression."}
        if address in self.throttled:
            return {"ErrorCode": 429, "Message": "Rate limit exceeded."}
        message_id = str(uuid.uuid4())
        if test:
            self.validated_only += 1
        else:
            self.delivered.append(Delivered(
                to=address, sender=e["From"], subject=e.get("Subject", ""),
                text=e.get("TextBody"), html=e.get("HtmlBody"),
                headers={h["Name"]: h["Value"] for h in e.get("Headers") or []},
                meta=dict(e.get("Metadata") or {}), provider_id=message_id,
            ))
        return {"ErrorCode": 0, "Message": "OK", "MessageID": message_id,
                "SubmittedAt": "2024-01-01T00:00:00Z", "To": to}
