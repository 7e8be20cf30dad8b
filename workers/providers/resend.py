"""Resend: ``POST /emails/batch``, up to 100 messages per call.

Each message is its own element (``from``, ``to``, ``subject``, ``text``, ``html``,
``reply_to``, ``headers``), so every recipient's rendered content travels as is.
Correlation: the ``X-Bulkmail-Id`` and ``Message-ID`` headers; the ids in the answer's
``data`` are stored as provider ids.

Each call carries an ``Idempotency-Key`` made from the Message-IDs it carries, in order:
a batch redelivered after a lost answer builds the same calls, so Resend answers them
from its 24-hour idempotency store instead of sending twice. (A 409 for a *concurrent*
request with the same key is transient; one for the same key with another payload is
permanent: the rendering changed, which must not happen.)

``cfg.validation`` sets ``x-batch-validation``: ``permissive`` (the default) sends the
valid elements and lists the others in ``errors[{index, message}]``, each failed alone
and permanently; ``strict`` rejects the whole call on any error.

Resend documents no request size limit for the batch endpoint (its 40 MB is per email),
so calls are split by count only. There is no sandbox switch: ``cfg.sandbox`` is ignored;
test with Resend's addresses ``delivered@resend.dev``, ``bounced@resend.dev`` and
``complained@resend.dev``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Unpack

import httpx

from config.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from config.providers import ResendConfig
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
    read_json,
)

__all__ = ["MAX_MESSAGES", "ResendProvider", "create", "idempotency_key"]

MAX_MESSAGES = 100


def idempotency_key(messages: Sequence[OutgoingMessage]) -> str:
    """The same key for the same messages in the same order (Resend allows 256 chars)."""
    digest = hashlib.sha256("\n".join(m.message_id for m in messages).encode()).hexdigest()
    return f"bulkmail-{digest}"


class ResendProvider(HttpProvider[ResendConfig]):
    """Resend's batch API; see the module docstring."""

    default_base_url = "https://api.resend.com"
    max_per_call = MAX_MESSAGES

    def prepare(self) -> None:
        self.auth_headers = {"Authorization": f"Bearer {self.api_key()}"}

    @staticmethod
    def _element(msg: OutgoingMessage) -> dict[str, Any]:
        element: dict[str, Any] = {
            "from": from_header(msg),
            "to": [msg.recipient],
            "subject": msg.subject,
            "headers": message_headers(msg, message_id=True),
        }
        return add_bodies(element, msg, text="text", html="html", reply_to="reply_to")

    def plan(self, messages: Sequence[OutgoingMessage]) -> Plan:
        plan = Plan()
        for start in range(0, len(messages), MAX_MESSAGES):
            part = messages[start:start + MAX_MESSAGES]
            body = json_bytes([self._element(m) for m in part])
            headers = {"Idempotency-Key": idempotency_key(part),
                       "x-batch-validation": self.cfg.validation}
            positions = list(range(start, start + len(part)))
            plan.calls.append(ApiCall(positions, "/emails/batch", body, headers=headers))
        return plan

    def accepted(self, call: ApiCall, response: httpx.Response) -> list[Outcome]:
        body = read_json(response)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return []
        failed: dict[int, DeliveryError] = {}
        for item in body.get("errors") or []:
            if isinstance(item, dict) and isinstance(item.get("index"), int):
                failed[item["index"]] = PermanentDeliveryError(
                    str(item.get("message") or "rejected by Resend"), code=422)
        # ``data`` lists the ids of the elements that were sent, in request order.
        ids = iter(str(d.get("id")) if isinstance(d, dict) else None for d in body["data"])
        if len(body["data"]) != len(call.positions) - len(failed):
            return []
        return [failed[i] if i in failed else next(ids) for i in range(len(call.positions))]

    def classify(self, response: httpx.Response, message: str,
                 retry_after: float | None) -> DeliveryError:
        body = read_json(response)
        name = body.get("name") if isinstance(body, dict) else None
        if response.status_code == 409 and name == "concurrent_idempotent_requests":
            return TransientDeliveryError(message, code=409)
        return super().classify(response, message, retry_after)


def create(name: str, cfg: ResendConfig, **options: Unpack[HttpOptions]) -> ResendProvider:
    """The provider registry's entry point."""
    return ResendProvider(name, cfg, **options)
