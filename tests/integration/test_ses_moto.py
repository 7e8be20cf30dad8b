"""The SES provider against moto's SES server on 127.0.0.1: real HTTP, real SigV4
headers, moto's v2 SendEmail (verified identity required), read back through
``/moto-api/data.json``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.session
import httpx
import pytest
from moto.server import ThreadedMotoServer

from config.errors import PermanentDeliveryError
from config.providers import SesConfig
from tests.fakes import make_messages, send_batch
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
