"""Provider kinds: SMTP relays and HTTP APIs, all behind :class:`~workers.providers.base.Provider`.

``create_provider`` builds the right implementation for a validated config. The kinds are
listed once, in :data:`config.providers.KINDS`; each config class names the module that
implements it. Modules are imported lazily so a worker for one provider does not import
every API client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from workers.providers.base import ConnectionGate, OutgoingMessage, Provider, SendResult

if TYPE_CHECKING:
    from config.providers import ProviderConfig

__all__ = ["OutgoingMessage", "Provider", "SendResult", "create_provider"]


def create_provider(name: str, cfg: ProviderConfig, *, gate: ConnectionGate | None = None,
                    **options: Any) -> Provider:
    """A ready-to-use provider for ``cfg`` (connections open lazily, on first send).

    Every kind takes the same arguments: ``gate`` caps connections (SMTP sessions, API
    calls in flight) across the cluster; ``options`` are the kind's test hooks
    (``transport``, ``clock`` for HTTP kinds).
    """
    module = importlib.import_module(type(cfg).implementation)
    provider: Provider = module.create(name, cfg, gate=gate, **options)
    return provider
