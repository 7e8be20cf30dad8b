"""The in-process producer API, against a real Redis, delivered by the in-process burst
worker (``tests/burst.py``) to a real SMTP server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from config.errors import InputError, TemplateError
from config.settings import Settings
from producers.api import Bulkmail
from producers.capture import CaptureServer
from tests.burst import BurstResult, settings_from_env

pytestmark = pytest.mark.integration


def test_messages_and_campaigns_from_an_app(
        tmp_path: Path, smtp_server: CaptureServer, provider_name: str,
        bulkmail_env: Callable[[str], dict[str, str]], burst: Callable[..., BurstResult]) -> None:
    env = bulkmail_env(f'[providers.{provider_name}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
                       f'port = {smtp_server.port}\ntls = "none"\n')
    settings = settings_from_env(env)
    mail = Bulkmail(settings)

    # a transactional message, sent twice with the same id: enqueued once
    for _ in range(2):
        mid = mail.send_message("ann@example.test", provider=provider_name,
                                sender="Shop <news@shop.test>",
                                subject="Order {{ order }} shipped", text="Hi {{ name }}",
                                variables={"order": 1042, "name": "Ann"},
                                message_id="order-1042-shipped")
    assert mid == "order-1042-shipped"

    # a campaign from rows the app already has in memory, one of them bad
    campaign = tmp_path / "c.toml"
    campaign.write_text(f'id = "api-1"\nprovider = "{provider_name}"\nfrom = "a@shop.test"\n'
                        'subject = "Hello {{ name }}"\ntext = "x"\n')
    result = mail.send_campaign(campaign, [{"email": f"u{i}@example.test", "name": f"U{i}"}
                                           for i in range(20)] + [{"email": "nope"}])
    assert (result.queued, result.invalid) == (20, 1)

    ran = burst(provider_name, settings)
    assert ran.tasks == 2  # the message (enqueued once) and the campaign's one batch
    message, bulk = mail.status("order-1042-shipped"), mail.status("api-1")
    assert message is not None and message.done
    assert message.counts["sent"] == 1 and message.total == 1
    assert bulk is not None and bulk.done
    assert (bulk.counts["sent"], bulk.counts["invalid"]) == (20, 1)
    assert smtp_server.by_recipient["ann@example.test"] == 1
    assert sum(smtp_server.by_recipient.values()) == 21


def test_bad_input_is_refused_before_anything_is_enqueued(
        bulkmail_env: Callable[[str], dict[str, str]], key_prefix: str) -> None:
    env = bulkmail_env('[providers.relay]\nkind = "smtp"\nhost = "127.0.0.1"\n')
    mail = Bulkmail(Settings(redis_url=env["BULKMAIL_REDIS_URL"],
                             providers=Path(env["BULKMAIL_PROVIDERS"]), key_prefix=key_prefix))
    with pytest.raises(InputError, match="unknown provider 'nope'"):
        mail.send_message("a@example.test", provider="nope", sender="a@shop.test",
                          subject="x", text="y")
    with pytest.raises(TemplateError, match="subject"):
        mail.send_message("a@example.test", provider="relay", sender="a@shop.test",
                          subject="{{ broken", text="y", message_id="never")
    assert mail.status("never") is None
