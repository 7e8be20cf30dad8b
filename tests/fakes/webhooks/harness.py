"""One providers file with an account of every webhook kind (secrets in env vars made
for the test), the API app with a fake SNS fetcher, and signed posts to it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import start_blocking_portal
from cryptography.hazmat.primitives.asymmetric import ec

from config.schema import CampaignSpec
from config.settings import Settings
from producers.api import Bulkmail
from producers.service.app import create_app
from producers.service.webhooks import WebhookReceiver
from tests.fakes.webhooks.payloads import sns_notification
from tests.fakes.webhooks.signing import (
    SnsSigner,
    basic_auth,
    ec_keypair,
    mailgun_body,
    sendgrid_headers,
    sns_time,
    svix_headers,
)
from tests.http_support import ApiClient

__all__ = ["TOPIC", "Accounts", "make_accounts", "webhook_client"]

TOPIC = "arn:aws:sns:us-west-2:123456789012:ses-events"


@dataclass
class Accounts:
    """Provider names of each kind and the test's secrets."""

    settings: Settings
    sg: str
    mg: str
    pm: str
    rs: str
    ses: str
    unsigned: str
    smtp: str
    sg_key: ec.EllipticCurvePrivateKey
    mg_key: str
    pm_auth: str
    rs_secret: str
    sns: SnsSigner = field(default_factory=SnsSigner)

    @property
    def names(self) -> list[str]:
        return [self.sg, self.mg, self.pm, self.rs, self.ses, self.unsigned, self.smtp]

    def campaign(self, cid: str, provider: str, emails: list[str]) -> None:
        """A campaign in the ledger (enqueued; no worker consumes the queue)."""
        spec = CampaignSpec(id=cid, provider=provider, sender="news@shop.test",
                            subject="Hi", text="Hello", batch_size=100)
        Bulkmail(self.settings).send_campaign(spec, [{"email": e} for e in emails])

    # signed calls ---------------------------------------------------------------------
    def sendgrid(self, events: list[dict[str, Any]], *, at: float | None = None,
                 key: ec.EllipticCurvePrivateKey | None = None) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(events).encode()
        return body, sendgrid_headers(key or self.sg_key, body, int(at or time.time()))

    def mailgun(self, event_data: dict[str, Any], *, at: float | None = None,
                token: str | None = None, key: str | None = None
                ) -> tuple[bytes, dict[str, str]]:
        body = mailgun_body(key or self.mg_key, event_data, int(at or time.time()), token)
        return body, {"Content-Type": "application/json"}

    def postmark(self, payload: dict[str, Any], *, auth: str | None = None
                 ) -> tuple[bytes, dict[str, str]]:
        return json.dumps(payload).encode(), {**basic_auth(auth or self.pm_auth),
                                              "Content-Type": "application/json"}

    def resend(self, payload: dict[str, Any], *, msg_id: str | None = None,
               at: float | None = None, secret: str | None = None
               ) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(payload).encode()
        return body, svix_headers(secret or self.rs_secret, msg_id or f"msg_{uuid.uuid4().hex}",
                                  int(at or time.time()), body)

    def ses_call(self, event: dict[str, Any] | str, *, message_id: str | None = None,
            at: float | None = None, version: str = "2") -> tuple[bytes, dict[str, str]]:


        when = dt.datetime.fromtimestamp(at or time.time(), dt.UTC)
        message = self.sns.sign(sns_notification(
            TOPIC, event, message_id=message_id or str(uuid.uuid4()), timestamp=sns_time(when),
            cert_url=self.sns.url, version=version))
        return json.dumps(message).encode(), {"x-amz-sns-message-type": "Notification",
                                              "Content-Type": "text/plain; charset=UTF-8"}


def make_accounts(redis_url: str, key_prefix: str, folder: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Accounts:
    tag = uuid.uuid4().hex[:8]
    sg_key, sg_public = ec_keypair()
    mg_key = secrets.token_hex(16)
    pm_auth = f"hook:{secrets.token_hex(8)}"
    rs_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    env = {f"BMT_SG_{tag}": sg_public, f"BMT_MG_{tag}": mg_key, f"BMT_PM_{tag}": pm_auth,
           f"BMT_RS_{tag}": rs_secret}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    names = {k: f"w{k}{tag}" for k in ("sg", "mg", "pm", "rs", "ses", "unsigned", "smtp")}
    toml = f"""
[providers.{names['sg']}]
kind = "sendgrid"
webhook_signing_key_env = "BMT_SG_{tag}"
[providers.{names['mg']}]
kind = "mailgun"
domain = "mg.shop.test"
webhook_signing_key_env = "BMT_MG_{tag}"
guard_min_delivered = 20
guard_bounce_rate = 0.1
[providers.{names['pm']}]
kind = "postmark"
webhook_basic_auth_env = "BMT_PM_{tag}"
[providers.{names['rs']}]
kind = "resend"
webhook_signing_key_env = "BMT_RS_{tag}"
[providers.{names['ses']}]
kind = "ses"
webhook_topic_arns = ["{TOPIC}"]
[providers.{names['unsigned']}]
kind = "sendgrid"
[providers.{names['smtp']}]
kind = "smtp"
host = "127.0.0.1"
"""
    path = folder / f"providers-{tag}.toml"
    path.write_text(toml)
    settings = Settings(redis_url=redis_url, providers=path, key_prefix=key_prefix)
    return Accounts(settings, names["sg"], names["mg"], names["pm"], names["rs"],
                    names["ses"], names["unsigned"], names["smtp"], sg_key, mg_key, pm_auth,
                    rs_secret)


@contextmanager
def webhook_client(accounts: Accounts) -> Iterator[ApiClient]:
    """The real API app (``create_app``) with the SNS fetcher replaced by the test's."""
    app = create_app(accounts.settings)
    app.state.webhooks = WebhookReceiver(accounts.settings, fetch=accounts.sns.fetch)
    with start_blocking_portal() as portal:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://bulkmail.test")
        try:
            yield ApiClient(portal, client)
        finally:
            portal.call(client.aclose)
