"""Postmark: ``POST /email/batch``, up to 500 messages and 50 MB per call.

Each message is its own element (``From``, ``To``, ``Subject``, ``TextBody``,
``HtmlBody``, ``ReplyTo``, ``MessageStream``, ``Headers``, ``Metadata``), so every
recipient's rendered content travels as is. Correlation: ``Metadata.bulkmail_id`` (comes
back in Postmark's webhooks) plus the ``X-Bulkmail-Id`` and ``Message-ID`` headers; each
element's ``MessageID`` is stored as the provider id.

Postmark answers 200 even when some elements failed, so each element's ``ErrorCode`` is
read: 0 sent; 406 inactive recipient permanent (Postmark has suppressed the address after
a hard bounce, a complaint or by hand: ours is suppressed too, ``hard_bounce``); 429 rate
limited and 405 out of credits transient; 10 bad token stops the provider; any other code
permanent. A whole-call 422 ``{ErrorCode, Message}`` is read the same way.

Sandbox: ``cfg.sandbox`` sends with the token ``POSTMARK_API_TEST``, which Postmark
validates without delivering (no key needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Unpack

import httpx

from config.errors import (
    DeliveryError,
    PermanentDeliveryError,
    ProviderAuthError,
    ThrottledError,
    TransientDeliveryError,
)
from config.providers import PostmarkConfig
from workers.providers.base import OutgoingMessage
from workers.providers.http_base import (
    ApiCall,
    HttpOptions,
    HttpProvider,
    Outcome,
    Plan,
    add_bodies,
    from_header,
    json_bytes,
    message_headers,
    pack,
    read_json,
    too_large,
)

__all__ = ["MAX_BYTES", "MAX_MESSAGES", "TEST_TOKEN", "PostmarkProvider", "create"]

MAX_MESSAGES = 500
MAX_BYTES = 50_000_000
#: Postmark's token that validates requests without sending
TEST_TOKEN = "POSTMARK_API_TEST"

_OK = 0
_BAD_TOKEN = 10
_NO_CREDITS = 405
_INACTIVE = 406
_RATE_LIMITED = 429


def element_error(code: int, message: str, *, retry_after: float | None = None
                  ) -> DeliveryError:
    """Postmark's ``ErrorCode`` (element or whole call) as our error type."""
    reply = f"Postmark ErrorCode {code}: {message}"
    if code == _BAD_TOKEN:
        return ProviderAuthError(reply, code=401)
    if code == _RATE_LIMITED:
        return ThrottledError(reply, code=429, retry_after=retry_after)
    if code == _NO_CREDITS:
        # The account is out of credits: nothing wrong with the recipient, and sending
        # works again once credits are bought.
        return TransientDeliveryError(reply, code=422)
    return PermanentDeliveryError(reply, code=422, hard_bounce=code == _INACTIVE)


class PostmarkProvider(HttpProvider[PostmarkConfig]):
    """Postmark's batch API; see the module docstring."""

    default_base_url = "https://api.postmarkapp.com"
    max_per_call = MAX_MESSAGES

    def prepare(self) -> None:
        token = TEST_TOKEN if self.cfg.sandbox else self.api_key()
        self.auth_headers = {"X-Postmark-Server-Token": token or "", "Accept": "application/json"}

    def _element(self, msg: OutgoingMessage) -> dict[str, Any]:
        element: dict[str, Any] = {
            "From": from_header(msg),
            "To": msg.recipient,
            "Subject": msg.subject,
            "MessageStream": self.cfg.message_stream,
            "Headers": [{"Name": k, "Value": v}
                        for k, v in message_headers(msg, message_id=True).items()],
            "Metadata": {"bulkmail_id": msg.correlation_id},
        }
        return add_bodies(element, msg, text="TextBody", html="HtmlBody", reply_to="ReplyTo")

    def plan(self, messages: Sequence[OutgoingMessage]) -> Plan:
        parts = [json_bytes(self._element(m)) for m in messages]
        # "[" + "]" and one comma per element
        chunks, oversized = pack([len(p) + 1 for p in parts], max_count=MAX_MESSAGES,
                                 max_bytes=MAX_BYTES - 2)
        plan = Plan(refused={i: too_large(len(parts[i]), MAX_BYTES, "Postmark")
                             for i in oversized})
        for chunk in chunks:
            body = b"[" + b",".join(parts[i] for i in chunk) + b"]"
            plan.calls.append(ApiCall(chunk, "/email/batch", body))
        return plan

    def accepted(self, call: ApiCall, response: httpx.Response) -> list[Outcome]:
        body = read_json(response)
        if not isinstance(body, list):
            return []  # the base reports the call as ambiguous
        out: list[Outcome] = []
        for item in body:
            if not isinstance(item, dict):
                return []
            code = int(item.get("ErrorCode", -1))
            if code == _OK:
                out.append(str(item.get("MessageID") or "") or None)
            else:
                out.append(element_error(code, str(item.get("Message", ""))))
        return out

    def classify(self, response: httpx.Response, message: str,
                 retry_after: float | None) -> DeliveryError:
        body = read_json(response)
        if (response.status_code == 422 and isinstance(body, dict)
                and isinstance(body.get("ErrorCode"), int)):
            return element_error(body["ErrorCode"], message, retry_after=retry_after)
        return super().classify(response, message, retry_after)


def create(name: str, cfg: PostmarkConfig, **options: Unpack[HttpOptions]) -> PostmarkProvider:
    """The provider registry's entry point."""
    return PostmarkProvider(name, cfg, **options)
