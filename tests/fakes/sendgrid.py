"""Fake SendGrid v3 ``POST /v3/mail/send`` (docs/providers.md, "SendGrid v3").

Bearer auth; <= 1000 personalizations and 1000 recipients; 30 MB; substitutions and
custom_args < 10,000 bytes per personalization; the whole request is validated first and
a 400 ``{"errors":[{field, message}]}`` sends nothing; 202 with one ``X-Message-Id``;
sandbox mode answers 200 and delivers nothing.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.fakes.base import Delivered, FakeApi, json_response

__all__ = ["FakeSendgrid"]

MAX_PERSONALIZATIONS = 1000
MAX_BYTES = 30 * 1024 * 1024
MAX_ARGS_BYTES = 10_000


def _size(mapping: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(str(v).encode()) for k, v in mapping.items())


class FakeSendgrid(FakeApi):
    path = "/v3/mail/send"

    def __init__(self, key: str = "SG.test-key", *, invalid: set[str] | None = None) -> None:
        super().__init__()
        self.key = key
        #: addresses SendGrid refuses as invalid (a 400 naming their personalization)
        self.invalid = invalid or set()
        self.sandboxed = 0
        self._ids = 0

    def serve(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != self.path or request.method != "POST":
            return json_response(404, {"errors": [{"field": None, "message": "not found"}]})
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return json_response(401, {"errors": [{"field": None, "message":
                "The provided authorization grant is invalid, expired, or revoked"}]})
        if len(request.content) > MAX_BYTES:
            return json_response(413, {"errors": [{"field": None,
                                                   "message": "Payload Too Large"}]})
        try:
            body = json.loads(request.content)
        except ValueError:
            return json_response(400, {"errors": [{"field": None, "message":
                "Bad Request"}]})
        errors = self._validate(body)
        if errors:
            return json_response(400, {"errors": errors})
        personalizations = body["personalizations"]
        if body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable"):
            self.sandboxed += len(personalizations)
            return httpx.Response(200)
        self._ids += 1
        message_id = f"sg-{self._ids:06d}"
        for p in personalizations:
            self._deliver(body, p, message_id)
        return httpx.Response(202, headers={"X-Message-Id": message_id})

    def _validate(self, body: Any) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        personalizations = body.get("personalizations") if isinstance(body, dict) else None
        if not isinstance(personalizations, list) or not personalizations:
            return [{"field": "personalizations", "message":
                     "The personalizations field is required and must have at least one "
                     "personalization."}]
        if len(personalizations) > MAX_PERSONALIZATIONS:
            return [{"field": "personalizations", "message":
                     "The personalizations field must have no more than 1000 items."}]
        if sum(len(p.get("to", [])) for p in personalizations) > MAX_PERSONALIZATIONS:
            return [{"field": "personalizations", "message":
                     "The total number of recipients must be no more than 1000."}]
        if not body.get("from", {}).get("email"):
            errors.append({"field": "from.email", "message": "The from email is required."})
        content = body.get("content")
        if not content or any(not c.get("value") for c in content):
            errors.append({"field": "content", "message":
                           "The content value must be a string at least one character."})
        for i, p in enumerate(personalizations):
            for j, to in enumerate(p.get("to") or []):
                email = to.get("email", "")
                if "@" not in email or email in self.invalid:
                    errors.append({"field": f"personalizations.{i}.to.{j}.email",
                                   "message": "Does not contain a valid address."})
            if not (p.get("subject") or body.get("subject")):
                errors.append({"field": f"personalizations.{i}.subject",
                               "message": "The subject is required."})
            for name in ("substitutions", "custom_args"):
                if _size(p.get(name) or {}) >= MAX_ARGS_BYTES:
                    errors.append({"field": f"personalizations.{i}.{name}", "message":
                                   f"The {name} must be less than 10000 bytes."})
        return errors

    def _deliver(self, body: dict[str, Any], p: dict[str, Any], message_id: str) -> None:
        subs: dict[str, str] = p.get("substitutions") or {}

        def render(value: str) -> str:
            for tag, replacement in subs.items():
                value = value.replace(tag, replacement)
            return value

        parts = {c["type"]: render(c["value"]) for c in body["content"]}
        headers = {**body.get("headers", {}), **p.get("headers", {})}
        if body.get("reply_to"):
            headers["Reply-To"] = body["reply_to"]["email"]
        for to in p["to"]:
            self.delivered.append(Delivered(
                to=to["email"], sender=body["from"]["email"],
                subject=render(p.get("subject") or body.get("subject", "")),
                text=parts.get("text/plain"), html=parts.get("text/html"), headers=headers,
                meta={**body.get("custom_args", {}), **p.get("custom_args", {})},
                provider_id=message_id,
            ))
