"""Fake Resend ``POST /emails`` and ``/emails/batch`` (docs/providers.md, "Resend").

Bearer ``re_...`` (401 missing, 403 invalid); batch <= 100; ``x-batch-validation``
``strict`` (default: any invalid element rejects the call with 422) or ``permissive``
(valid ones sent, ``errors:[{index, message}]``); ``Idempotency-Key``: the same key and
payload answer the first response again without sending, another payload is a 409;
errors ``{statusCode, name, message}``; ratelimit-* headers on every answer.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import httpx

from tests.fakes.base import Delivered, FakeApi, json_response

__all__ = ["FakeResend"]

MAX_MESSAGES = 100
_LIMIT_HEADERS = {"ratelimit-limit": "2", "ratelimit-remaining": "1", "ratelimit-reset": "1"}


def _error(status: int, name: str, message: str) -> httpx.Response:
    return json_response(status, {"statusCode": status, "name": name, "message": message},
                         _LIMIT_HEADERS)


class FakeResend(FakeApi):
    def __init__(self, key: str = "re_test_key", *, invalid: set[str] | None = None) -> None:
        super().__init__()
        self.key = key
        #: addresses Resend refuses (validation errors)
        self.invalid = invalid or set()
        self._replies: dict[str, tuple[str, httpx.Response]] = {}

    def serve(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or request.url.path not in ("/emails", "/emails/batch"):
            return _error(404, "not_found", "The requested endpoint does not exist.")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return _error(401, "missing_api_key", "Missing API key in the authorization "
                          "header.")
        if auth != f"Bearer {self.key}":
            return _error(403, "invalid_api_key", "API key is invalid")
        key = request.headers.get("Idempotency-Key")
        digest = hashlib.sha256(request.content).hexdigest()
        if key is not None:
            if len(key) > 256:
                return _error(400, "invalid_idempotency_key", "The key must be 1-256 chars.")
            if key in self._replies:
                seen, response = self._replies[key]
                if seen != digest:
                    return _error(409, "invalid_idempotent_request", "Same idempotency key "
                                  "used with a different request payload.")
                return response
        response = self._serve(request)
        if key is not None and response.is_success:
            self._replies[key] = (digest, response)
        return response

    def _serve(self, request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.content)
        except ValueError:
            return _error(400, "validation_error", "Invalid JSON")
        if request.url.path == "/emails":
            problem = self._problem(body)
            if problem:
                return _error(422, "validation_error", problem)
            return json_response(200, {"id": self._deliver(body)}, _LIMIT_HEADERS)
        if not isinstance(body, list) or not body:
            return _error(422, "validation_error", "Expected a non-empty array of emails.")
        if len(body) > MAX_MESSAGES:
            return _error(422, "validation_error", "Too many emails in the batch: the "
                          "maximum is 100.")
        problems = {i: p for i, e in enumerate(body) if (p := self._problem(e))}
        mode = request.headers.get("x-batch-validation", "strict")
        if problems and mode != "permissive":
            i, problem = next(iter(problems.items()))
            return _error(422, "validation_error", f"emails[{i}]: {problem}")
        data = [{"id": self._deliver(e)} for i, e in enumerate(body) if i not in problems]
        answer: dict[str, Any] = {"data": data}
        if mode == "permissive":
            answer["errors"] = [{"index": i, "message": p} for i, p in problems.items()]
        return json_response(200, answer, _LIMIT_HEADERS)

    def _problem(self, e: Any) -> str:
        if not isinstance(e, dict):
            return "Expected an object."
        for name in ("from", "to", "subject"):
            if not e.get(name):
                return f"The `{name}` field is missing."
        to = e["to"] if isinstance(e["to"], list) else [e["to"]]
        for address in to:
            if "@" not in address or address in self.invalid:
                return f"Invalid `to` field: {address}"
        if not (e.get("text") or e.get("html")):
            return "Missing `html` or `text` field."
        return ""

    def _deliver(self, e: dict[str, Any]) -> str:
        message_id = str(uuid.uuid4())
        to = e["to"] if isinstance(e["to"], list) else [e["to"]]
        for address in to:
            self.delivered.append(Delivered(
                to=address, sender=e["from"], subject=e["subject"], text=e.get("text"),
                html=e.get("html"), headers=dict(e.get("headers") or {}),
                meta={t["name"]: t["value"] for t in e.get("tags") or []},
                provider_id=message_id,
            ))
        return message_id
