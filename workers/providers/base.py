"""The Provider protocol: one async method that sends a batch and returns a result per
message. SMTP and every HTTP API implement it; workers depend on nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from config.errors import DeliveryError

__all__ = ["ConnectionGate", "Lease", "NoGate", "OutgoingMessage", "Provider", "SendResult"]


@dataclass(slots=True)
class OutgoingMessage:
    """One rendered message to one recipient.

    ``row`` is the recipient's row number (our id of the recipient within the campaign),
    ``message_id`` the stable RFC 5322 Message-ID (also our correlation id for provider
    events). ``mime`` is the complete message (CRLF line ends), set when the provider
    wants raw MIME (SMTP, SES raw); API providers read the rendered parts instead.
    ``variables`` are the recipient's own variables (not ``email``), for providers that
    render a stored template themselves (SES SendBulkEmail).

    ``sender`` is the From header value; ``from_address`` its address, validated, with an
    ASCII domain: every kind's from address. The SMTP envelope sender (MAIL FROM) is
    ``return_path`` when set, else ``from_address`` (see :attr:`envelope_sender`). A
    message built without ``from_address`` gets it from ``sender`` by the one address
    parser (``workers.mime.sender_address``).
    """

    row: int
    campaign_id: str
    recipient: str
    sender: str
    subject: str
    message_id: str
    text: str | None = None
    html: str | None = None
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    mime: bytes | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    from_address: str = ""
    return_path: str | None = None

    def __post_init__(self) -> None:
        if not self.from_address:
            from workers.mime import sender_address  # mime imports this module

            self.from_address = sender_address(self.sender)

    @property
    def envelope_sender(self) -> str:
        """The SMTP MAIL FROM address: the explicit return path, else the From address."""
        return self.return_path or self.from_address

    @property
    def correlation_id(self) -> str:
        """``campaign:row``: carried in custom_args / metadata / a header by API providers."""
        return f"{self.campaign_id}:{self.row}"


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome for one message: accepted (with the provider's id) or an error."""

    row: int
    provider_id: str | None = None
    error: DeliveryError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Provider(Protocol):
    """A way out. Implementations must be safe to use from one event loop concurrently."""

    name: str
    #: when true the worker builds ``OutgoingMessage.mime`` before calling :meth:`send`
    wants_mime: bool
    #: how many messages the worker hands to one :meth:`send` call; results are written
    #: to the ledger after each call, so this also bounds what a crash can duplicate
    chunk_size: int

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send ``messages``; return exactly one :class:`SendResult` per message.

        Per-message failures are returned as data. Raise only for the provider as a
        whole: :class:`~config.errors.ProviderAuthError` (credentials rejected; put the
        results of messages already accepted in its ``results``), or a
        :class:`~config.errors.TransientDeliveryError` when nothing could be tried.
        """
        ...

    async def release_idle(self) -> None:
        """Called when a batch is done. A provider whose connections are capped across
        the cluster closes its idle ones here, so that other processes can have them:
        between tasks nothing runs on the process loop to hand them back."""
        ...

    async def aclose(self) -> None:
        """Close pooled connections / HTTP clients."""
        ...


class ConnectionGate(Protocol):
    """Cluster-wide admission of new connections (see ``workers.ratelimit.gate``)."""

    async def open(self, *, wait: bool) -> Lease | None:
        """A lease for one more connection; ``None`` at the cap (after waiting up to the
        provider's ``max_wait`` when ``wait``)."""
        ...


class Lease(Protocol):
    async def renew(self) -> bool:
        """Keep the place; False when it had expired (stop using the connection)."""
        ...

    async def release(self) -> None: ...


class _FreeLease:
    """The lease of an uncapped provider: always granted, nothing to give back."""

    async def renew(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class NoGate:
    """No cluster-wide cap."""

    async def open(self, *, wait: bool) -> Lease | None:
        return _FreeLease()
