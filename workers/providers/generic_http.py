"""``http``: any service that speaks this small JSON contract (an in-house relay, a
provider without a kind of its own behind an adapter).

Request: ``POST cfg.url`` with header ``{cfg.auth_header}: {cfg.auth_scheme} {key}``
(the key from ``api_key_env`` / ``api_key_file``; no header when neither is set; just
the key when ``auth_scheme`` is empty) and a JSON body of at most ``cfg.http_batch_size``
messages::

    {"sandbox": false,
     "messages": [{"id": "<message-id@host>", "correlation_id": "campaign:row",
                   "from": "...", "to": "...", "reply_to": "..." | null,
                   "subject": "...", "text": "..." | null, "html": "..." | null,
                   "headers": {"Name": "value", ...}}, ...]}

``sandbox`` is ``cfg.sandbox``: the service must validate and not deliver when true.

Answer: any 2xx with one result per message, in request order::

    {"results": [{"id": "provider-id"},
                 {"error": {"status": 429, "message": "...", "retry_after": 30}}, ...]}

A result's ``error.status`` uses HTTP meanings: 429 throttled (``retry_after`` seconds,
optional), 5xx/408 transient, 401/403 our credentials (the provider stops), other 4xx
permanent. A 2xx whose ``results`` do not match the messages one to one is treated as
*ambiguous* (they may have been sent). A non-2xx answer applies to the whole call, with
the usual meanings, a ``Retry-After`` header on 429, and the service's text taken from
``{"message": ...}`` or ``{"error": ...}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Unpack

import httpx

from config.providers import HttpConfig
from workers.classify import classify_http
from workers.providers.base import OutgoingMessage
from workers.providers.http_base import (
    ApiCall,
    HttpOptions,
    HttpProvider,
    Outcome,
    Plan,
    from_header,
    json_bytes,
    message_headers,
    read_json,
)

__all__ = ["GenericHttpProvider", "create"]


class GenericHttpProvider(HttpProvider[HttpConfig]):
    """The generic JSON batch contract; see the module docstring."""

    def default_url(self) -> str:
        # every call goes to cfg.url (absolute); base_url, when set, is not used
        return self.cfg.url

    def prepare(self) -> None:
        self.chunk_size = self.cfg.http_batch_size * self.cfg.concurrency
        key = self.api_key(required=False)
        if key is not None:
            scheme = self.cfg.auth_scheme.strip()
            self.auth_headers[self.cfg.auth_header] = f"{scheme} {key}" if scheme else key

    @staticmethod
    def _element(msg: OutgoingMessage) -> dict[str, Any]:
        return {
            "id": msg.message_id,
            "correlation_id": msg.correlation_id,
            "from": from_header(msg),
            "to": msg.recipient,
            "reply_to": msg.reply_to,
            "subject": msg.subject,
            "text": msg.text,
            "html": msg.html,
            "headers": message_headers(msg, message_id=False),
        }

    def plan(self, messages: Sequence[OutgoingMessage]) -> Plan:
        size = self.cfg.http_batch_size
        plan = Plan()
        for start in range(0, len(messages), size):
            part = messages[start:start + size]
            body = json_bytes({"sandbox": self.cfg.sandbox,
                               "messages": [self._element(m) for m in part]})
            plan.calls.append(ApiCall(list(range(start, start + len(part))), self.cfg.url, body))
        return plan

    def accepted(self, call: ApiCall, response: httpx.Response) -> list[Outcome]:
        body = read_json(response)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            return []
        out: list[Outcome] = []
        for item in results:
            if not isinstance(item, dict):
                return []
            error = item.get("error")
            if isinstance(error, dict):
                status = error.get("status")
                if not isinstance(status, int) or 200 <= status <= 299:
                    status = 500  # an error without a usable status: try again later
                retry = error.get("retry_after")
                out.append(classify_http(
                    status, str(error.get("message") or ""),
                    retry_after=float(retry) if isinstance(retry, int | float) else None))
            elif error:
                out.append(classify_http(500, str(error)))
            else:
                pid = item.get("id")
                out.append(str(pid) if pid is not None else None)
        return out


def create(name: str, cfg: HttpConfig, **options: Unpack[HttpOptions]) -> GenericHttpProvider:
    """The provider registry's entry point."""
    return GenericHttpProvider(name, cfg, **options)
