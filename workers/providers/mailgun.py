"""Mailgun: ``POST /v3/{domain}/messages``, form data, up to 1000 recipients per call.

One call sends one message "template" to many ``to`` addresses; ``recipient-variables``
(JSON keyed by address) makes Mailgun send each recipient an individual message and
fills ``%recipient.KEY%`` in it. Per-recipient content is carried that way: a field
that differs between the messages of a group (subject, text, html or a header such as
List-Unsubscribe) is sent as ``%recipient.bm_<field>%`` and each recipient's rendered
value goes in its variables; a field identical for the whole group is sent once, as is.
Nothing is re-rendered: the variables hold the finished parts. Messages are grouped by
From, Reply-To, which parts they have and which header names they carry.

Because variables are keyed by address, one call never carries the same address twice
(a second row for the same address goes in another call).

Correlation: ``v:bulkmail_id`` and ``h:X-Bulkmail-Id``, both ``%recipient.bm_id%``
(custom variables come back in webhooks as ``user-variables``). Mailgun answers one
``id`` per call, which becomes its messages' Message-Id and every recipient's provider
id; (id, recipient) identifies a message in Mailgun's events. Our Message-ID is not
sent: Mailgun's id is the one its events report.

The form is sent as multipart/form-data (bodies go as they are, not percent-encoded).
Limits: 1000 recipients per call; Mailgun's 25 MB is applied to the whole request
(measured exactly), which splits calls whose per-recipient bodies add up; a message that
alone is over it fails permanently.

Sandbox: ``cfg.sandbox`` sends ``o:testmode=yes`` (accepted, not delivered).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Hashable, Sequence
from operator import attrgetter
from typing import Unpack
from urllib.parse import quote

import httpx

from config.errors import TransientDeliveryError
from config.providers import MailgunConfig
from workers.providers.base import OutgoingMessage
from workers.providers.http_base import (
    CORRELATION_HEADER,
    ApiCall,
    HttpOptions,
    HttpProvider,
    Outcome,
    Plan,
    address_parts,
    from_header,
    json_bytes,
    pack,
    read_json,
    too_large,
)

__all__ = ["MAX_BYTES", "MAX_RECIPIENTS", "MailgunProvider", "create"]

MAX_RECIPIENTS = 1000
MAX_BYTES = 25_000_000

#: reads one part (subject, text, html, a header) of a message
Reader = Callable[[OutgoingMessage], str | None]


def _var(key: str) -> str:
    return f"%recipient.{key}%"


def _header(name: str) -> Reader:
    return lambda msg: msg.headers[name]


class _Multipart:
    """multipart/form-data built by hand from bytes, so that the size of every field is
    known before a call is put together (and bodies are not percent-encoded)."""

    def __init__(self) -> None:
        # random: no rendered body can contain it by chance
        self.boundary = f"bulkmail-{secrets.token_hex(16)}".encode()
        self.content_type = f"multipart/form-data; boundary={self.boundary.decode()}"

    def field(self, name: str, value: bytes) -> bytes:
        quoted = name.replace('"', "%22").encode()
        return (b"--" + self.boundary + b'\r\nContent-Disposition: form-data; name="'
                + quoted + b'"\r\n\r\n' + value + b"\r\n")

    def end(self) -> bytes:
        return b"--" + self.boundary + b"--\r\n"


class MailgunProvider(HttpProvider[MailgunConfig]):
    """Mailgun's messages API with recipient variables; see the module docstring."""

    default_base_url = "https://api.mailgun.net"
    max_per_call = MAX_RECIPIENTS

    def prepare(self) -> None:
        token = base64.b64encode(f"api:{self.api_key()}".encode()).decode()
        self.auth_headers = {"Authorization": f"Basic {token}"}
        self._path = f"/v3/{quote(self.cfg.domain, safe='')}/messages"

    def plan(self, messages: Sequence[OutgoingMessage]) -> Plan:
        groups: dict[Hashable, list[int]] = {}
        for i, m in enumerate(messages):
            key = (m.sender, m.reply_to, m.text is None, m.html is None,
                   tuple(sorted(m.headers)))
            groups.setdefault(key, []).append(i)
        plan = Plan()
        for members in groups.values():
            self._plan_group([messages[i] for i in members], members, plan)
        return plan

    def _plan_group(self, group: list[OutgoingMessage], members: list[int],
                    plan: Plan) -> None:
        first = group[0]
        fixed: list[tuple[str, str]] = [("from", from_header(first))]
        if first.reply_to:
            fixed.append(("h:Reply-To", first.reply_to))
        # form field, variable name and how to read it from a message, for every part
        parts: list[tuple[str, str, Reader]] = [
            ("subject", "bm_subject", attrgetter("subject")),
            ("text", "bm_text", attrgetter("text")),
            ("html", "bm_html", attrgetter("html")),
        ]
        parts += [(f"h:{name}", f"bm_h{n}", _header(name))
                  for n, name in enumerate(sorted(first.headers))]
        varying: list[tuple[str, Reader]] = []
        for form_field, var, read in parts:
            value = read(first)
            if value is None:
                continue  # the whole group lacks this part (it is in the group key)
            # A literal "%recipient.x%" in our own text would be filled in by Mailgun;
            # sent as a variable's value it arrives untouched.
            if "%recipient." not in value and all(read(m) == value for m in group):
                fixed.append((form_field, value))
            else:
                fixed.append((form_field, _var(var)))
                varying.append((var, read))
        fixed.append((f"h:{CORRELATION_HEADER}", _var("bm_id")))
        fixed.append(("v:bulkmail_id", _var("bm_id")))
        if self.cfg.sandbox:
            fixed.append(("o:testmode", "yes"))

        addresses = [address_parts(m.recipient)[1] for m in group]
        form = _Multipart()
        head = b"".join(form.field(name, value.encode()) for name, value in fixed)
        tos: list[bytes] = []
        entries: list[bytes] = []
        for m, addr in zip(group, addresses, strict=True):
            variables = {"bm_id": m.correlation_id}
            variables.update((var, read(m) or "") for var, read in varying)
            tos.append(form.field("to", m.recipient.encode()))
            entries.append(json_bytes(addr) + b":" + json_bytes(variables))
        # multipart carries the bodies as they are, so sizes add up exactly: each
        # message costs its "to" part and its variables entry with a comma
        sizes = [len(t) + len(e) + 1 for t, e in zip(tos, entries, strict=True)]
        overhead = len(head) + len(form.field("recipient-variables", b"{}")) + len(form.end())
        chunks, oversized = pack(sizes, max_count=MAX_RECIPIENTS,
                                 max_bytes=MAX_BYTES - overhead,
                                 keys=[a.lower() for a in addresses])
        for j in oversized:
            plan.refused[members[j]] = too_large(sizes[j] + overhead, MAX_BYTES, "Mailgun")
        for chunk in chunks:
            variables_json = b"{" + b",".join(entries[j] for j in chunk) + b"}"
            body = b"".join([head, *(tos[j] for j in chunk),
                             form.field("recipient-variables", variables_json), form.end()])
            plan.calls.append(ApiCall([members[j] for j in chunk], self._path, body,
                                      content_type=form.content_type))

    def accepted(self, call: ApiCall, response: httpx.Response) -> list[Outcome]:
        body = read_json(response)
        message_id = body.get("id") if isinstance(body, dict) else None
        if not message_id:
            # Mailgun answers 200 without an id for a wrong endpoint (base_url / domain);
            # nothing was queued.
            err = TransientDeliveryError(
                "Mailgun answered 200 without a message id: check base_url and domain",
                code=response.status_code)
            return [err] * len(call.positions)
        return [str(message_id)] * len(call.positions)


def create(name: str, cfg: MailgunConfig, **options: Unpack[HttpOptions]) -> MailgunProvider:
    """The provider registry's entry point."""
    return MailgunProvider(name, cfg, **options)
