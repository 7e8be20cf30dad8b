"""Fake Mailgun ``POST /v3/{domain}/messages`` (docs/providers.md, "Mailgun").

HTTP Basic ``api:<key>``; form data (url-encoded or multipart); repeated ``to``;
``recipient-variables`` fill ``%recipient.KEY%`` anywhere in the message (subject,
bodies, ``h:`` headers, ``v:`` variables) and make every recipient get an individual
message, while without them every recipient sees the whole To list; <= 1000
recipients ("Too many recipients" 400); 25 MB; ``o:testmode=yes`` accepts without
delivering; 200 ``{"id", "message": "Queued. Thank you."}``, one id per call.
"""

from __future__ import annotations

import base64
import json
import re
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl

import httpx

from tests.fakes.base import Delivered, FakeApi, json_response

__all__ = ["FakeMailgun", "form_fields"]

MAX_RECIPIENTS = 1000
MAX_BYTES = 25 * 1024 * 1024
_PATH = re.compile(r"^/v3/([^/]+)/messages$")
_VAR = re.compile(r"%recipient\.([^%]+)%")


def form_fields(request: httpx.Request) -> list[tuple[str, str]]:
    """The fields of a url-encoded or multipart form body, in order."""
    ctype = request.headers.get("Content-Type", "")
    if ctype.startswith("multipart/form-data"):
        msg = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + request.content)
        fields = []
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields.append((str(name), payload.decode() if isinstance(payload, bytes) else ""))
        return fields
    return parse_qsl(request.content.decode(), keep_blank_values=True)


class FakeMailgun(FakeApi):
    def __init__(self, key: str = "key-test", domain: str = "mg.example.com") -> None:
        super().__init__()
        self.key = key
        self.domain = domain
        self.test_mode_calls = 0
        self._ids = 0

    def path(self) -> str:
        return f"/v3/{self.domain}/messages"

    def serve(self, request: httpx.Request) -> httpx.Response:
        m = _PATH.match(request.url.path)
        if m is None or request.method != "POST":
            return httpx.Response(404, text="Mailgun Magnificent API")
        token = base64.b64encode(f"api:{self.key}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {token}":
            return httpx.Response(401, text="Forbidden")
        if m.group(1) != self.domain:
            return json_response(404, {"message": f"Domain not found: {m.group(1)}"})
        if len(request.content) > MAX_BYTES:
            return json_response(413, {"message": "Request entity too large"})
        fields = form_fields(request)
        single = {k: v for k, v in fields}
        tos = [v for k, v in fields if k == "to"]
        if not single.get("from"):
            return json_response(400, {"message": "from parameter is missing"})
        if not tos:
            return json_response(400, {"message": "to parameter is missing"})
        if len(tos) > MAX_RECIPIENTS:
            return json_response(400, {"message": "Too many recipients"})
        if not (single.get("text") or single.get("html")):
            return json_response(400, {"message":
                "Need at least one of 'text' or 'html' parameters specified"})
        variables = None
        if "recipient-variables" in single:
            try:
                variables = json.loads(single["recipient-variables"])
            except ValueError:
                return json_response(400, {"message": "recipient-variables is not valid JSON"})
        self._ids += 1
        message_id = f"<20240101000000.{self._ids}@{self.domain}>"
        if single.get("o:testmode") == "yes":
            self.test_mode_calls += 1
        else:
            for to in tos:
                self._deliver(single, to, tos, variables, message_id)
        return json_response(200, {"id": message_id, "message": "Queued. Thank you."})

    def _deliver(self, form: dict[str, str], to: str, tos: list[str],
                 variables: dict[str, dict[str, str]] | None, message_id: str) -> None:
        address = to.rsplit("<", 1)[-1].rstrip(">").strip()
        mine = (variables or {}).get(address, {})

        def render(value: str | None) -> str | None:
            if value is None:
                return None
            return _VAR.sub(lambda m: str(mine.get(m.group(1), "")), value)

        headers = {k[2:]: render(v) or "" for k, v in form.items() if k.startswith("h:")}
        # Without recipient variables Mailgun sends one message with every address in To.
        headers["To"] = to if variables is not None else ", ".join(tos)
        self.delivered.append(Delivered(
            to=address, sender=form["from"], subject=render(form.get("subject")) or "",
            text=render(form.get("text")), html=render(form.get("html")), headers=headers,
            meta={k[2:]: render(v) or "" for k, v in form.items() if k.startswith("v:")},
            provider_id=message_id,
        ))
