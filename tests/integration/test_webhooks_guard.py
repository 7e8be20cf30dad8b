"""The complaint guard end to end: signed events posted to the real API app (httpx ASGI
transport) and a real Redis pause the campaign, with the reason in the API document and
the log; an operator's resume starts a fresh window."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producers.keys import KeyStore
from tests.fakes.webhooks import payloads
from tests.fakes.webhooks.harness import Accounts, make_accounts, webhook_client
from tests.http_support import ApiClient

pytestmark = pytest.mark.integration

N = 1001


@pytest.fixture
def accounts(redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             redis_client: redis.Redis) -> Iterator[Accounts]:
    acc = make_accounts(redis_url, key_prefix, tmp_path, monkeypatch)
    yield acc
    for p in acc.names:
        redis_client.delete(f"bulkmail.{p}", f"_kombu.binding.bulkmail.{p}")


@pytest.fixture
def api(accounts: Accounts) -> Iterator[ApiClient]:
    with webhook_client(accounts) as client:
        yield client


@pytest.fixture
def auth(accounts: Accounts, redis_client: redis.Redis) -> dict[str, str]:
    key = KeyStore(redis_client, accounts.settings.keys).create("ops").secret
    return {"Authorization": f"Bearer {key}"}


def emails(n: int) -> list[str]:
    return [f"r{i}@example.test" for i in range(n)]


def sendgrid(api: ApiClient, a: Accounts, events: list[dict[str, object]]) -> dict[str, int]:
    body, headers = a.sendgrid(events)
    r = api.post(f"/v1/webhooks/{a.sg}", content=body, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_complaints_over_the_default_rate_pause_the_campaign_after_1000_delivered(
        api: ApiClient, accounts: Accounts, auth: dict[str, str],
        caplog: pytest.LogCaptureFixture) -> None:
    a = accounts
    to = emails(N)
    a.campaign("g1", a.sg, to)

    def ev(kind: str, i: int) -> dict[str, object]:
        return payloads.sendgrid_event(kind, to[i], bulkmail_id=f"g1:{i + 1}",
                                       event_id=f"{kind}-{i}")

    def paused() -> dict[str, object]:
        return dict(api.get("/v1/campaigns/g1", headers=auth).json())

    # 999 delivered and 2 complaints: 0.2%, but fewer than 1,000 deliveries seen
    assert sendgrid(api, a, [ev("delivered", i) for i in range(999)])["recorded"] == 999
    sendgrid(api, a, [ev("spamreport", 0), ev("spamreport", 1)])
    assert paused()["paused"] is False
    # the same complaint again (a provider retry) is a duplicate and counts once
    assert sendgrid(api, a, [ev("spamreport", 1)])["duplicate"] == 1
    with caplog.at_level(logging.WARNING, logger="bulkmail.guard"):
        sendgrid(api, a, [ev("delivered", 999)])  # the 1,000th delivery: 2/1000 > 0.1%
    doc = paused()
    assert doc["paused"] is True and doc["paused_by"] == "guard"
    assert "complaint rate 0.200%" in str(doc["paused_reason"])
    assert "guard_complaint_rate 0.100%" in str(doc["paused_reason"])
    assert any("complaint guard paused campaign g1" in r.message for r in caplog.records)

    # the operator resumes: a fresh window, so one more complaint does not pause again
    r = api.post("/v1/campaigns/g1/resume", headers=auth)
    assert r.status_code == 200 and r.json()["paused"] is False
    sendgrid(api, a, [ev("spamreport", 2)])
    assert paused()["paused"] is False


def test_at_the_threshold_exactly_the_campaign_goes_on(
        api: ApiClient, accounts: Accounts, auth: dict[str, str]) -> None:
    a = accounts
    to = emails(N)
    a.campaign("g2", a.sg, to)
    sendgrid(api, a, [payloads.sendgrid_event("delivered", to[i], bulkmail_id=f"g2:{i + 1}",
                                              event_id=f"d-{i}") for i in range(1000)]
             + [payloads.sendgrid_event("spamreport", to[5], bulkmail_id="g2:6",
                                        event_id="c-5")])
    assert api.get("/v1/campaigns/g2", headers=auth).json()["paused"] is False


def test_hard_bounces_over_the_provider_setting_pause_it(
        api: ApiClient, accounts: Accounts, auth: dict[str, str]) -> None:
    a = accounts  # the Mailgun account: guard_min_delivered = 20, guard_bounce_rate = 0.1
    to = emails(30)
    a.campaign("g3", a.mg, to)

    def post(kind: str, i: int, **kw: object) -> None:
        data = payloads.mailgun(kind, to[i], bulkmail_id=f"g3:{i + 1}", event_id=f"{kind}{i}",
                                **kw)  # type: ignore[arg-type]
        body, headers = a.mailgun(data)
        assert api.post(f"/v1/webhooks/{a.mg}", content=body, headers=headers
                        ).status_code == 200

    for i in range(20):
        post("delivered", i)
    for i in (20, 21):
        post("failed", i, severity="permanent")
    assert api.get("/v1/campaigns/g3", headers=auth).json()["paused"] is False  # 10%
    post("failed", 22, severity="temporary")  # deferred: not a hard bounce
    assert api.get("/v1/campaigns/g3", headers=auth).json()["paused"] is False
    post("failed", 23, severity="permanent")  # 3/20 = 15%
    doc = api.get("/v1/campaigns/g3", headers=auth).json()
    assert doc["paused"] is True and doc["paused_by"] == "guard"
    assert "hard-bounce rate 15.00%" in doc["paused_reason"]
