"""Webhook authentication: for every provider scheme a good, a bad, a stale and a replayed
call through the API app; arbitrary bodies never cause a 5xx and never record anything."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.webhooks import payloads
from tests.fakes.webhooks.harness import Accounts, make_accounts, webhook_client
from tests.fakes.webhooks.signing import ec_keypair
from tests.http_support import ApiClient

pytestmark = pytest.mark.integration

Signed = tuple[bytes, dict[str, str]]
TO = "victim@example.test"


@pytest.fixture
def accounts(redis_url: str, key_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             redis_client: redis.Redis) -> Iterator[Accounts]:
    yield make_accounts(redis_url, key_prefix, tmp_path, monkeypatch)


@pytest.fixture
def api(accounts: Accounts) -> Iterator[ApiClient]:
    with webhook_client(accounts) as client:
        yield client


def recorded(client: redis.Redis, prefix: str) -> set[bytes]:
    """Every key a webhook call wrote, but its counters (refusals are counted)."""
    return {k for k in client.scan_iter(match=f"{prefix}:*", count=1000)
            if b":wh:n:" not in k}


def cases(a: Accounts) -> dict[str, dict[str, Callable[[], Signed]]]:
    """Per provider: a good call, a bad one (wrong key), a stale one (6 minutes old)."""
    old = time.time() - 360
    wrong_secret = "whsec_" + base64.b64encode(b"not-the-secret-000000").decode()
    sg = [payloads.sendgrid_event("bounce", TO, event_id="sg-1")]
    mg = payloads.mailgun("failed", TO, severity="permanent")
    pm = payloads.postmark("Bounce", TO)
    rs = payloads.resend("email.bounced", TO)
    ses = payloads.ses_event("Bounce", TO)
    return {
        a.sg: {"good": lambda: a.sendgrid(sg), "bad": lambda: a.sendgrid(sg, key=ec_keypair()[0]),
               "stale": lambda: a.sendgrid(sg, at=old)},
        a.mg: {"good": lambda: a.mailgun(mg), "bad": lambda: a.mailgun(mg, key="wrong"),
               "stale": lambda: a.mailgun(mg, at=old)},
        # Postmark's scheme has no timestamp: "stale" is a call without credentials
        a.pm: {"good": lambda: a.postmark(pm), "bad": lambda: a.postmark(pm, auth="hook:guess"),
               "stale": lambda: (json.dumps(pm).encode(), {})},
        a.rs: {"good": lambda: a.resend(rs, msg_id="msg_1"),
               "bad": lambda: a.resend(rs, secret=wrong_secret),
               "stale": lambda: a.resend(rs, at=old)},
        a.ses: {"good": lambda: a.ses_call(ses, message_id="sns-1"),
                "bad": lambda: _tampered(a.ses_call(ses)),
                "stale": lambda: a.ses_call(ses, at=old)},
    }


def _tampered(signed: Signed) -> Signed:
    body, headers = signed
    message = json.loads(body)
    message["Message"] = message["Message"].replace(TO, "someone@else.test")
    return json.dumps(message).encode(), headers


def test_every_scheme_good_bad_stale_replayed(api: ApiClient, accounts: Accounts,
                                              redis_client: redis.Redis,
                                              key_prefix: str) -> None:
    for provider, calls in cases(accounts).items():
        for name in ("bad", "stale"):
            body, headers = calls[name]()
            r = api.post(f"/v1/webhooks/{provider}", content=body, headers=headers)
            assert r.status_code == 401, (provider, name, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert recorded(redis_client, key_prefix) == set(), (provider, name)
        body, headers = calls["good"]()
        r = api.post(f"/v1/webhooks/{provider}", content=body, headers=headers)
        assert r.status_code == 200 and r.json()["recorded"] == 1, (provider, r.text)
        keys_after_good = recorded(redis_client, key_prefix)
        # the very same call again: nothing new is recorded
        again = api.post(f"/v1/webhooks/{provider}", content=body, headers=headers)
        if provider == accounts.mg:
            assert again.status_code == 401  # Mailgun: a reused token is refused
            assert "used before" in again.json()["detail"]
        else:
            assert again.status_code == 200 and again.json()["duplicate"] == 1
        assert recorded(redis_client, key_prefix) == keys_after_good
        for k in keys_after_good:
            redis_client.delete(k)


def test_a_secret_never_appears_in_answers(api: ApiClient, accounts: Accounts) -> None:
    body, headers = accounts.mailgun(payloads.mailgun("delivered", TO), key="wrong")
    r = api.post(f"/v1/webhooks/{accounts.mg}", content=body, headers=headers)
    assert r.status_code == 401 and accounts.mg_key not in r.text
    body, headers = accounts.postmark(payloads.postmark("Delivery", TO), auth="x:y")
    r = api.post(f"/v1/webhooks/{accounts.pm}", content=body, headers=headers)
    assert r.status_code == 401 and accounts.pm_auth not in r.text


header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 6),
       body=st.binary(max_size=300) | st.builds(lambda v: json.dumps(v).encode(),
                                                 st.recursive(st.none() | st.text(max_size=10)
                                                              | st.integers(),
                                                              lambda c: st.lists(c, max_size=3)
                                                              | st.dictionaries(
                                                                  st.sampled_from([
                                                                      "signature", "event-data",
                                                                      "Type", "Message", "data",
                                                                      "RecordType", "token",
                                                                      "timestamp"]), c,
                                                                  max_size=4),
                                                              max_leaves=12)),
       headers=st.dictionaries(st.sampled_from([
           "X-Twilio-Email-Event-Webhook-Signature", "X-Twilio-Email-Event-Webhook-Timestamp",
           "svix-id", "svix-timestamp", "svix-signature", "Authorization",
           "x-amz-sns-message-type"]), header_values, max_size=4))
def test_arbitrary_calls_never_5xx_and_never_record(
        api: ApiClient, accounts: Accounts, redis_client: redis.Redis, key_prefix: str,
        which: int, body: bytes, headers: dict[str, str]) -> None:
    provider = accounts.names[which]
    r = api.post(f"/v1/webhooks/{provider}", content=body, headers=headers)
    assert r.status_code in (400, 401, 404), r.text
    assert recorded(redis_client, key_prefix) == set()
