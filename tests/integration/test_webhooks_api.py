"""Provider webhooks through the real API app and a real Redis: matching to the ledger,
events per recipient (CLI and API), suppression, SNS subscription confirmation."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from producers.keys import KeyStore
from tests.fakes.webhooks import payloads
from tests.fakes.webhooks.harness import TOPIC, Accounts, make_accounts, webhook_client
from tests.fakes.webhooks.signing import sns_time
from tests.http_support import ApiClient
from tests.integration.conftest import run_cli
from workers.feedback.store import campaign_events, index_accepted
from workers.ledger import Ledger
from workers.providers.base import SendResult
from workers.suppression import SuppressionList

pytestmark = pytest.mark.integration


@pytest.fixture
def accounts(redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             redis_client: redis.Redis) -> Iterator[Accounts]:
    acc = make_accounts(redis_url, key_prefix, tmp_path, monkeypatch)
    yield acc
    for p in acc.names:  # no worker consumes these queues
        redis_client.delete(f"bulkmail.{p}", f"_kombu.binding.bulkmail.{p}")


@pytest.fixture
def api(accounts: Accounts) -> Iterator[ApiClient]:
    with webhook_client(accounts) as client:
        yield client


def post(api: ApiClient, provider: str, signed: tuple[bytes, dict[str, str]]
         ) -> httpx.Response:
    body, headers = signed
    return api.post(f"/v1/webhooks/{provider}", content=body, headers=headers)


EMAILS = [f"u{i}@example.test" for i in range(5)]


def test_every_kind_matches_our_id_keeps_events_and_suppresses(
        api: ApiClient, accounts: Accounts, redis_client: redis.Redis) -> None:
    a = accounts
    calls = {
        a.sg: lambda cid: a.sendgrid([payloads.sendgrid_event("bounce", EMAILS[1],
                                                              bulkmail_id=f"{cid}:2")]),
        a.mg: lambda cid: a.mailgun(payloads.mailgun("failed", EMAILS[1], severity="permanent",
                                                     bulkmail_id=f"{cid}:2")),
        a.pm: lambda cid: a.postmark(payloads.postmark("Bounce", EMAILS[1],
                                                       bulkmail_id=f"{cid}:2")),
        a.rs: lambda cid: a.resend(payloads.resend("email.bounced", EMAILS[1],
                                                   bulkmail_id=f"{cid}:2")),
        a.ses: lambda cid: a.ses_call(payloads.ses_event("Bounce", EMAILS[1],
                                                    bulkmail_id=f"{cid}:2")),
    }
    suppression = SuppressionList(redis_client, a.settings.keys)
    for provider, signed in calls.items():
        cid = f"c-{provider}"
        # rows given as dicts count from 1: EMAILS[1] is row 2
        a.campaign(cid, provider, EMAILS)
        r = post(api, provider, signed(cid))
        assert r.status_code == 200, r.text
        assert r.json() | {"received": 1} == {"received": 1, "recorded": 1, "duplicate": 0,
                                              "ignored": 0, "unmatched": 0, "suppressed": 1}
        listed = list(campaign_events(redis_client, a.settings.keys, cid))
        assert [(e.email, [ev["type"] for ev in e.events]) for e in listed] == [
            (EMAILS[1], ["bounced"])]
        assert listed[0].events[0]["bounce"] == "hard"
        assert listed[0].events[0]["provider"] == provider
        entry = suppression.get(EMAILS[1])
        assert entry is not None and entry.source == f"webhook:{provider}:bounce"
        assert entry.reason.startswith("hard_bounce")
        suppression.remove(EMAILS[1])
        # the ledger's seven states are untouched: the recipient is still queued
        st = Ledger(redis_client, a.settings.keys).status(cid)
        assert st is not None and st.counts["queued"] == len(EMAILS)


def test_an_address_the_ledger_does_not_know_is_suppressed_too(
        api: ApiClient, accounts: Accounts, redis_client: redis.Redis) -> None:
    r = post(api, accounts.sg, accounts.sendgrid([
        payloads.sendgrid_event("spamreport", "Stranger@Example.test", event_id="x1"),
        payloads.sendgrid_event("delivered", "other@example.test", event_id="x2",
                                bulkmail_id="no-such-campaign:2"),
        payloads.sendgrid_event("open", "other@example.test", event_id="x3")]))
    assert r.json() == {"received": 3, "recorded": 2, "duplicate": 0, "ignored": 1,
                        "unmatched": 2, "suppressed": 1}
    entry = SuppressionList(redis_client, accounts.settings.keys).get("stranger@example.test")
    assert entry is not None and entry.source == f"webhook:{accounts.sg}:complaint"


def test_events_without_our_id_match_by_the_provider_message_id(
        api: ApiClient, accounts: Accounts, redis_client: redis.Redis, redis_url: str) -> None:
    a = accounts
    a.campaign("by-id", a.rs, EMAILS)
    cfg = a.settings.load_providers()[a.rs]

    async def index() -> None:
        client = aioredis.Redis.from_url(redis_url)
        now = float((await client.time())[0])
        # what the worker records after Resend accepted rows 1..5 of batch 0
        await index_accepted(client, a.settings.keys, cfg, a.rs, "by-id", 0,
                             [SendResult(row, provider_id=f"email-{row}") for row in range(1, 6)],
                             now)
        await client.aclose()

    asyncio.run(index())
    r = post(api, a.rs, a.resend(payloads.resend("email.complained", EMAILS[2],
                                                 email_id="email-3")))
    assert r.json()["unmatched"] == 0 and r.json()["recorded"] == 1
    [entry] = list(campaign_events(redis_client, a.settings.keys, "by-id"))
    assert (entry.row, entry.email, entry.events[0]["type"]) == (3, EMAILS[2], "complained")
    # the API's recipient listing carries the events beside the state
    key = KeyStore(redis_client, a.settings.keys).create("reader").secret
    listing = api.get("/v1/campaigns/by-id/recipients",
                      headers={"Authorization": f"Bearer {key}"}).json()["entries"]
    by_email = {e["email"]: e for e in listing}
    assert by_email[EMAILS[2]]["state"] == "queued"
    assert by_email[EMAILS[2]]["events"][0]["type"] == "complained"
    assert "events" not in by_email[EMAILS[0]]


def test_unknown_unsigned_and_smtp_providers_are_404_and_record_nothing(
        api: ApiClient, accounts: Accounts, redis_client: redis.Redis) -> None:
    signed = accounts.sendgrid([payloads.sendgrid_event("bounce", "a@example.test")])
    for provider in ("nope", accounts.unsigned, accounts.smtp):
        r = post(api, provider, signed)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/problem+json"
    assert SuppressionList(redis_client, accounts.settings.keys).count() == 0


def test_sns_subscription_confirmation_is_verified_then_confirmed(
        api: ApiClient, accounts: Accounts) -> None:
    sns = accounts.sns
    subscribe = ("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
                 f"{TOPIC}&Token=2336412f37fb")
    message = {"Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c",
               "Token": "2336412f37fb", "TopicArn": TOPIC,
               "Message": f"You have chosen to subscribe to the topic {TOPIC}.\nTo confirm "
                          "the subscription, visit the SubscribeURL included in this message.",
               "SubscribeURL": subscribe, "Timestamp": sns_time(dt.datetime.now(dt.UTC)),
               "SigningCertURL": sns.url}
    headers = {"x-amz-sns-message-type": "SubscriptionConfirmation"}
    r = api.post(f"/v1/webhooks/{accounts.ses}", content=json.dumps(sns.sign(message)),
                 headers=headers)
    assert r.status_code == 200, r.text
    assert sns.fetched == [sns.url, subscribe]
    # a SubscribeURL elsewhere is never fetched, even correctly signed
    evil = sns.sign(message | {"SubscribeURL": "https://evil.test/confirm"})
    r = api.post(f"/v1/webhooks/{accounts.ses}", content=json.dumps(evil), headers=headers)
    assert r.status_code == 401
    assert sns.fetched == [sns.url, subscribe]


def test_events_cli_lists_and_filters(
        api: ApiClient, accounts: Accounts, redis_url: str, key_prefix: str) -> None:
    a = accounts
    a.campaign("cli-ev", a.sg, EMAILS)
    post(api, a.sg, a.sendgrid([
        payloads.sendgrid_event("delivered", EMAILS[0], bulkmail_id="cli-ev:1", event_id="d0"),
        payloads.sendgrid_event("delivered", EMAILS[1], bulkmail_id="cli-ev:2", event_id="d1"),
        payloads.sendgrid_event("spamreport", EMAILS[1], bulkmail_id="cli-ev:2", event_id="c1")]))
    env = {**os.environ, "BULKMAIL_REDIS_URL": redis_url,
           "BULKMAIL_PROVIDERS": str(a.settings.providers), "BULKMAIL_KEY_PREFIX": key_prefix}
    out = run_cli(["events", "cli-ev", "--json"], env)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["email"], [e["type"] for e in r["events"]]) for r in rows] == [
        (EMAILS[0], ["delivered"]), (EMAILS[1], ["delivered", "complained"])]
    out = run_cli(["events", "cli-ev", "--type", "bounced,complained"], env)
    assert out.returncode == 0 and EMAILS[1] in out.stdout and "complained" in out.stdout
    assert EMAILS[0] not in out.stdout
    bad = run_cli(["events", "cli-ev", "--type", "opened"], env)
    assert bad.returncode == 2 and "unknown event type" in bad.stderr
    assert run_cli(["events", "nope"], env).returncode == 2
