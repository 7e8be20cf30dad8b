"""Enqueue from an application: whole campaigns and single transactional messages.

    from producers.api import Bulkmail

    mail = Bulkmail()                       # settings from BULKMAIL_* like the CLI
    mail.send_campaign("spring.toml", [{"email": "ann@example.com", "first_name": "Ann"}])
    mail.send_message("ann@example.com", provider="relay", sender="Shop <news@shop.example>",
                      subject="Your order {{ order }} has shipped", text="...",
                      variables={"order": 1042}, message_id="order-1042-shipped")

Everything the CLI checks is checked here (unknown provider, templates that do not
compile, ids that break the id rule, bad rows end ``invalid``), and ids make both calls
idempotent: the same id sent twice is enqueued once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import redis

from config.errors import InputError
from config.providers import ProviderConfig
from config.schema import CampaignSpec, check_id
from config.settings import Settings
from producers.campaign import load_campaign
from producers.connect import connect_redis
from producers.enqueue import EnqueueResult, enqueue_campaign
from workers.app import BulkmailApp, create_app
from workers.ledger import CampaignStatus, Ledger
from workers.templates import CompiledCampaign

__all__ = ["Bulkmail"]


class Bulkmail:
    """A producer handle: one Redis connection and one broker connection, reused."""

    def __init__(self, settings: Settings | None = None) -> None:
        """``settings`` as given, else built from ``BULKMAIL_*`` now (a bad variable is a
        :class:`~config.errors.ConfigError`)."""
        self.settings = settings or Settings.from_env()

    @cached_property
    def providers(self) -> dict[str, ProviderConfig]:
        return self.settings.load_providers()

    @cached_property
    def redis(self) -> redis.Redis[bytes]:
        return connect_redis(self.settings)

    @cached_property
    def celery(self) -> BulkmailApp:
        # Only publishes tasks by name; the delivery code is imported by workers alone.
        return create_app(self.settings)

    def send_campaign(self, campaign: str | Path | CampaignSpec,
                      recipients: str | Path | Iterable[Mapping[str, Any]], *,
                      campaign_id: str | None = None) -> EnqueueResult:
        """Enqueue a campaign (a campaign file or a :class:`CampaignSpec`) for a recipient
        file or rows given as dicts with an ``email`` key."""
        if isinstance(campaign, CampaignSpec):
            spec = self._checked(campaign)
        else:
            spec, _ = load_campaign(campaign, self.providers,
                                    default_batch_size=self.settings.batch_size,
                                    campaign_id=campaign_id)
        return enqueue_campaign(self.settings, self.celery, self.redis, spec, recipients)

    def send_message(self, to: str, *, provider: str, sender: str, subject: str,
                     text: str | None = None, html: str | None = None,
                     reply_to: str | None = None, headers: Mapping[str, str] | None = None,
                     variables: Mapping[str, Any] | None = None,
                     message_id: str | None = None) -> str:
        """Enqueue one message (a campaign of one recipient); returns its id.

        ``message_id`` makes it idempotent (e.g. ``"order-1042-shipped"``): sending the
        same id again enqueues nothing. It follows the id rule of campaign ids
        (:data:`config.schema.ID_RULE`), else :class:`~config.errors.InvalidIdError`.
        Subject, bodies and headers are templates over ``variables``, as in a campaign.
        """
        if message_id is not None:
            check_id(message_id, what="message_id")
        spec = self._checked(CampaignSpec(
            id=message_id or f"m-{uuid.uuid4().hex[:16]}", provider=provider, sender=sender,
            subject=subject, text=text, html=html, reply_to=reply_to,
            headers=dict(headers or {}), batch_size=1))
        enqueue_campaign(self.settings, self.celery, self.redis, spec,
                         [{**(variables or {}), "email": to}])
        return spec.id

    def status(self, campaign_id: str) -> CampaignStatus | None:
        """Counts per state, and whether the campaign (or message) is done."""
        return Ledger(self.redis, self.settings.keys).status(check_id(campaign_id))

    def _checked(self, spec: CampaignSpec) -> CampaignSpec:
        check_id(spec.id, what="CampaignSpec.id")
        if spec.provider not in self.providers:
            known = ", ".join(sorted(self.providers)) or "none configured"
            raise InputError(f"unknown provider {spec.provider!r} (providers file "
                             f"{self.settings.providers} has: {known})")
        # raises TemplateError naming the field, InputError for a sender not allowed
        CompiledCampaign.compile(spec).check_allowed_senders(
            spec.provider, self.providers[spec.provider])
        return spec
