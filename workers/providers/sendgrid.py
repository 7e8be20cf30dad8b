"""SendGrid v3: ``POST /v3/mail/send``, up to 1000 personalizations and 30 MB per call.

One personalization per message carries what is the recipient's own: ``to``,
``subject``, ``headers`` (the message's headers, ``X-Bulkmail-Id`` and ``Message-ID``)
and ``custom_args.bulkmail_id`` (comes back in every webhook event). The body is shared
by the call, so per-recipient bodies travel as substitutions: the call's ``content`` is
two placeholder tokens (:data:`TEXT_TAG`, :data:`HTML_TAG`) and each personalization's
``substitutions`` maps them to that recipient's rendered text and html. Nothing is
re-rendered: the tokens are replaced by the finished parts, so every kind delivers the
same bytes.

SendGrid caps a personalization's substitutions at 10,000 bytes. A message whose parts
are larger goes without substitutions, in a call whose shared ``content`` is its own
body; messages with identical large bodies (an unpersonalised newsletter) still share
calls, while each different large body costs a call of its own. From and Reply-To are
per call, so messages are grouped by them too.

SendGrid validates the whole request at once: a 400 sends nothing. When its errors all
point at personalizations (``personalizations.3.to.0.email``), those messages fail
permanently and the others are sent again at once, without them. A 202 carries one
``X-Message-Id`` for the call, stored as every message's provider id (webhooks report it
with a suffix as ``sg_message_id``).

Sandbox: ``cfg.sandbox`` sets ``mail_settings.sandbox_mode.enable`` (SendGrid answers 200
and delivers nothing).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import Any, Unpack

import httpx

from config.errors import DeliveryError, PermanentDeliveryError
from config.providers import SendgridConfig
from workers.providers.base import OutgoingMessage
from workers.providers.http_base import (
    ApiCall,
    HttpOptions,
    HttpProvider,
    Outcome,
    Plan,
    address_parts,
    json_bytes,
    message_headers,
    pack,
    read_json,
    sender_parts,
    too_large,
)

__all__ = [
    "HTML_TAG",
    "MAX_BYTES",
    "MAX_PERSONALIZATIONS",
    "SUBSTITUTIONS_LIMIT",
    "TEXT_TAG",
    "SendgridProvider",
    "create",
]

MAX_PERSONALIZATIONS = 1000
MAX_BYTES = 30_000_000
#: bytes of substitutions per personalization (measured as JSON: an upper bound)
SUBSTITUTIONS_LIMIT = 10_000
TEXT_TAG = "[%bulkmail_text%]"
HTML_TAG = "[%bulkmail_html%]"

_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\b")


def _address(value: str) -> dict[str, str]:
    name, addr = address_parts(value)
    return {"email": addr, "name": name} if name else {"email": addr}


def _substitutions(msg: OutgoingMessage) -> dict[str, str] | None:
    """The message's parts as substitutions, or ``None`` when they cannot be."""
    subs: dict[str, str] = {}
    if msg.text is not None:
        subs[TEXT_TAG] = msg.text
    if msg.html is not None:
        subs[HTML_TAG] = msg.html
    if len(json_bytes(subs)) > SUBSTITUTIONS_LIMIT:
        return None
    if any(TEXT_TAG in v or HTML_TAG in v for v in subs.values()):
        return None  # a body that contains our token would be substituted into itself
    return subs


class SendgridProvider(HttpProvider[SendgridConfig]):
    """SendGrid's mail/send with personalizations; see the module docstring."""

    default_base_url = "https://api.sendgrid.com"
    max_per_call = MAX_PERSONALIZATIONS

    def prepare(self) -> None:
        self.auth_headers = {"Authorization": f"Bearer {self.api_key()}"}

    def plan(self, messages: Sequence[OutgoingMessage]) -> Plan:
        groups: dict[Hashable, list[int]] = {}
        # computed once per message: it JSON-encodes both bodies to check their size
        subs_of = [_substitutions(msg) for msg in messages]
        for i, msg in enumerate(messages):
            parts: Hashable = (("subst",) if subs_of[i] is not None
                               else ("body", msg.text, msg.html))
            key = (msg.sender, msg.reply_to, msg.text is None, msg.html is None, parts)
            groups.setdefault(key, []).append(i)
        plan = Plan()
        for members in groups.values():
            self._plan_group(messages, members, subs_of, plan)
        return plan

    def _plan_group(self, messages: Sequence[OutgoingMessage], members: list[int],
                    subs_of: list[dict[str, str] | None], plan: Plan) -> None:
        first = messages[members[0]]
        tokens = subs_of[members[0]] is not None
        shared = self._shared(first, tokens=tokens)
        personalizations = [json_bytes(self._personalization(messages[i], subs_of[i]))
                            for i in members]
        # '{"personalizations":[' + ... + '],' + the shared fields (minus their '{')
        fixed = len(shared) + 22
        chunks, oversized = pack([len(p) + 1 for p in personalizations],
                                 max_count=MAX_PERSONALIZATIONS, max_bytes=MAX_BYTES - fixed)
        for j in oversized:
            size = len(personalizations[j]) + fixed
            plan.refused[members[j]] = too_large(size, MAX_BYTES, "SendGrid")
        for chunk in chunks:
            body = (b'{"personalizations":[' + b",".join(personalizations[j] for j in chunk)
                    + b"]," + shared[1:])
            plan.calls.append(ApiCall([members[j] for j in chunk], "/v3/mail/send", body))

    def _personalization(self, msg: OutgoingMessage, subs: dict[str, str] | None
                         ) -> dict[str, Any]:
        p: dict[str, Any] = {
            "to": [_address(msg.recipient)],
            "subject": msg.subject,
            "headers": message_headers(msg, message_id=True),
            "custom_args": {"bulkmail_id": msg.correlation_id},
        }
        if subs is not None:
            p["substitutions"] = subs
        return p

    def _shared(self, msg: OutgoingMessage, *, tokens: bool) -> bytes:
        content = []
        if msg.text is not None:
            content.append({"type": "text/plain", "value": TEXT_TAG if tokens else msg.text})
        if msg.html is not None:
            content.append({"type": "text/html", "value": HTML_TAG if tokens else msg.html})
        name, addr = sender_parts(msg)
        sender = {"email": addr, "name": name} if name else {"email": addr}
        shared: dict[str, Any] = {"from": sender, "content": content}
        if msg.reply_to:
            shared["reply_to"] = _address(msg.reply_to)
        if self.cfg.sandbox:
            shared["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return json_bytes(shared)

    def accepted(self, call: ApiCall, response: httpx.Response) -> list[Outcome]:
        message_id = response.headers.get("X-Message-Id")
        return [message_id] * len(call.positions)

    def blame(self, call: ApiCall, response: httpx.Response) -> dict[int, DeliveryError]:
        body = read_json(response)
        errors = body.get("errors") if isinstance(body, dict) else None
        if not isinstance(errors, list) or not errors:
            return {}
        blamed: dict[int, DeliveryError] = {}
        for error in errors:
            field = error.get("field") if isinstance(error, dict) else None
            m = _PERSONALIZATION_FIELD.match(field) if isinstance(field, str) else None
            if m is None or int(m.group(1)) >= len(call.positions):
                return {}  # an error about the call itself: nobody in particular
            message = str(error.get("message") or "rejected by SendGrid")
            blamed[int(m.group(1))] = PermanentDeliveryError(
                f"{field}: {message}", code=response.status_code)
        return blamed


def create(name: str, cfg: SendgridConfig, **options: Unpack[HttpOptions]) -> SendgridProvider:
    """The provider registry's entry point."""
    return SendgridProvider(name, cfg, **options)
