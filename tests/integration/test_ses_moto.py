"""The SES provider against moto's SES server on 127.0.0.1: real HTTP, real SigV4
headers, moto's v2 SendEmail (verified identity required), read back through
``/moto-api/data.json``. The provider alone, and a whole campaign delivered by the burst
worker (``tests/burst.py``: the worker's runtime builds the provider from the providers
file)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.session
import httpx
import pytest
from moto.server import ThreadedMotoServer

from config.errors import PermanentDeliveryError
from config.providers import SesConfig
from config.schema import State
from producers.api import Bulkmail
from tests.burst import BurstResult, settings_from_env
from tests.fakes import make_messages, send_batch
from workers.ledger import Ledger
from workers.providers.ses import create

pytestmark = pytest.mark.integration

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


@pytest.fixture
def verified(moto_url: str, aws_env: None) -> str:
    httpx.post(f"{moto_url}/moto-api/reset").raise_for_status()
    client = botocore.session.get_session().create_client(
        "sesv2", region_name=REGION, endpoint_url=moto_url,
        aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_email_identity(EmailIdentity="news@example.com")
    return "news@example.com"


def _sent(moto_url: str) -> list[dict[str, Any]]:
    """The simple messages moto recorded (v2 SendEmail is stored by its v1 backend)."""
    data = httpx.get(f"{moto_url}/moto-api/data.json").json()
    messages: list[dict[str, Any]] = data["ses"]["Message"]
    return messages


def test_batch_through_moto(moto_url: str, verified: str) -> None:
    config = SesConfig(kind="ses", region=REGION, base_url=moto_url, concurrency=4)
    messages = make_messages(12)
    results = send_batch(create("ses", config), messages)
    assert all(r.ok for r in results), [r.error for r in results if r.error]
    assert len({r.provider_id for r in results}) == 12
    sent = _sent(moto_url)
    assert len(sent) == 12
    got = {(tuple(r["destinations"]["ToAddresses"]), r["subject"], r["source"], r["body"])
           for r in sent}
    assert got == {((m.recipient,), m.subject, m.sender, m.html) for m in messages}
    assert {r["id"] for r in sent} == {r.provider_id for r in results}


def test_unverified_sender_is_permanent(moto_url: str, verified: str) -> None:
    config = SesConfig(kind="ses", region=REGION, base_url=moto_url)
    messages = make_messages(2, sender="Other <other@unverified.example>")
    results = send_batch(create("ses", config), messages)
    assert _sent(moto_url) == []
    for r in results:
        assert isinstance(r.error, PermanentDeliveryError), r.error
        assert "MessageRejected" in r.error.reply or "not verified" in r.error.reply


def test_campaign_through_the_burst_worker(
        moto_url: str, verified: str, tmp_path: Path, provider_name: str,
        bulkmail_env: Callable[[str], dict[str, str]],
        burst: Callable[..., BurstResult]) -> None:
    env = bulkmail_env(f'[providers.{provider_name}]\nkind = "ses"\nregion = "{REGION}"\n'
                       f'base_url = "{moto_url}"\nconcurrency = 4\n')
    settings = settings_from_env(env)
    mail = Bulkmail(settings)
    campaign = tmp_path / "c.toml"
    campaign.write_text(f'id = "ses-1"\nprovider = "{provider_name}"\nfrom = "{verified}"\n'
                        'subject = "Hi {{ name }}"\ntext = "Hello {{ name }}"\n'
                        "batch_size = 10\n")
    rows = [{"email": f"u{i}@example.test", "name": f"U{i}"} for i in range(25)]
    assert mail.send_campaign(campaign, rows).batches == 3

    assert burst(provider_name, settings).tasks == 3
    status = mail.status("ses-1")
    assert status is not None and status.done
    assert status.counts["sent"] == 25 and status.total == 25
    sent = _sent(moto_url)
    assert sorted((r["destinations"]["ToAddresses"], r["subject"]) for r in sent) == sorted(
        ([row["email"]], f"Hi {row['name']}") for row in rows)
    # the ledger keeps SES's message id of every recipient
    entries = list(Ledger(mail.redis, settings.keys).entries("ses-1"))
    assert {e.state for e in entries} == {State.SENT}
    assert {e.detail["id"] for e in entries} == {r["id"] for r in sent}
