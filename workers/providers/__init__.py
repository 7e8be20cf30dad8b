"""Provider kinds: SMTP relays and HTTP APIs, all behind :class:`~workers.providers.base.Provider`.

``create_provider`` builds the right implementation for a validated config. Modules are
imported lazily so a worker for one provider does not import every API client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from workers.providers.base import OutgoingMessage, Provider, SendResult

if TYPE_CHECKING:
    from config.providers import ProviderConfig

__all__ = ["KINDS", "OutgoingMessage", "Provider", "SendResult", "create_provider"]

#: kind -> module that defines ``create(name, cfg) -> Provider``
KINDS: dict[str, str] = {
    "smtp": "workers.providers.smtp",
    "sendgrid": "workers.providers.sendgrid",
    "mailgun": "workers.providers.mailgun",
    "postmark": "workers.providers.postmark",
    "ses": "workers.providers.ses",
    "resend": "workers.providers.resend",
    "http": "workers.providers.generic_http",
}


def create_provider(name: str, cfg: ProviderConfig) -> Provider:
    """A ready-to-use provider for ``cfg`` (connections open lazily, on first send)."""
    module = importlib.import_module(KINDS[cfg.kind])
    provider: Provider = module.create(name, cfg)
    return provider
