"""The fake providers on their own, against the documented contract (docs/providers.md).

These pin the fakes down, so the provider tests that use them test against the real
APIs' behaviour and not against whatever the fakes happen to do.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.fakes import (
    FakeHttpApi,
    FakeMailgun,
    FakePostmark,
    FakeResend,
    FakeSendgrid,
    FakeSes,
)

T = TypeVar("T")


def run(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(fn())


# -- SendGrid -----------------------------------------------------------------------------
def _sg_body(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": f"u{i}@example.org"}], "subject": f"S{i}",
                              "substitutions": {"-name-": f"N{i}"},
                              "custom_args": {"bulkmail_id": f"c:{i}"}} for i in range(n)],
        "from": {"email": "news@example.com"},
        "content": [{"type": "text/plain", "value": "Hi -name-"}],
        **extra,
    }


def test_sendgrid_accepts_with_202_and_one_message_id() -> None:
    fake = FakeSendgrid()

    async def go() -> httpx.Response:
        async with fake.client() as c:
            return await c.post("/v3/mail/send", json=_sg_body(3),
                                headers={"Authorization": "Bearer SG.test-key"})

    r = run(go)
    assert r.status_code == 202 and r.content == b""
    assert r.headers["X-Message-Id"]
    assert [(d.to, d.subject, d.text) for d in fake.delivered] == [
        ("u0@example.org", "S0", "Hi N0"), ("u1@example.org", "S1", "Hi N1"),
        ("u2@example.org", "S2", "Hi N2")]
    assert fake.delivered[1].meta == {"bulkmail_id": "c:1"}


def test_sendgrid_limits_auth_validation_and_sandbox() -> None:
    fake = FakeSendgrid(invalid={"u1@example.org"})
    auth = {"Authorization": "Bearer SG.test-key"}

    async def go() -> list[httpx.Response]:
        async with fake.client() as c:
            return [
                await c.post("/v3/mail/send", json=_sg_body(1001), headers=auth),
                await c.post("/v3/mail/send", json=_sg_body(2), headers=auth),
                await c.post("/v3/mail/send", json=_sg_body(1),
                             headers={"Authorization": "Bearer wrong"}),
                await c.post("/v3/mail/send", headers=auth, json=_sg_body(
                    1, mail_settings={"sandbox_mode": {"enable": True}})),
            ]

    too_many, invalid, unauthorized, sandbox = run(go)
    assert too_many.status_code == 400
    assert invalid.status_code == 400
    assert invalid.json() == {"errors": [{"field": "personalizations.1.to.0.email",
                                          "message": "Does not contain a valid address."}]}
    assert unauthorized.status_code == 401
    assert sandbox.status_code == 200 and fake.sandboxed == 1
    assert fake.delivered == []  # a 400 sends nothing, sandbox delivers nothing


def test_sendgrid_substitutions_over_10000_bytes_are_refused() -> None:
    fake = FakeSendgrid()
    body = _sg_body(1)
    body["personalizations"][0]["substitutions"] = {"-t-": "x" * 10_000}

    async def go() -> httpx.Response:
        async with fake.client() as c:
            return await c.post("/v3/mail/send", json=body,
                                headers={"Authorization": "Bearer SG.test-key"})

    r = run(go)
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "personalizations.0.substitutions"


# -- Mailgun ------------------------------------------------------------------------------
def _mg_auth(key: str = "key-test") -> dict[str, str]:
    token = base64.b64encode(f"api:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}",
            "Content-Type": "application/x-www-form-urlencoded"}


def test_mailgun_batch_with_recipient_variables() -> None:
    fake = FakeMailgun()
    form = [("from", "news@example.com"), ("to", "a@example.org"), ("to", "b@example.org"),
            ("subject", "Hi %recipient.name%"), ("text", "Hello %recipient.name%"),
            ("v:bulkmail_id", "%recipient.id%"),
            ("recipient-variables", json.dumps({"a@example.org": {"name": "A", "id": "c:1"},
                                                "b@example.org": {"name": "B", "id": "c:2"}}))]

    async def go() -> httpx.Response:
        async with fake.client() as c:
            return await c.post(fake.path(), content=urlencode(form), headers=_mg_auth())

    r = run(go)
    assert r.status_code == 200
    assert r.json()["message"] == "Queued. Thank you." and r.json()["id"].startswith("<")
    assert [(d.to, d.subject, d.text, d.meta, d.headers["To"]) for d in fake.delivered] == [
        ("a@example.org", "Hi A", "Hello A", {"bulkmail_id": "c:1"}, "a@example.org"),
        ("b@example.org", "Hi B", "Hello B", {"bulkmail_id": "c:2"}, "b@example.org")]


def test_mailgun_without_variables_everyone_sees_the_to_list() -> None:
    fake = FakeMailgun()
    form = [("from", "n@example.com"), ("to", "a@example.org"), ("to", "b@example.org"),
            ("subject", "s"), ("text", "t")]

    async def go() -> httpx.Response:
        async with fake.client() as c:
            return await c.post(fake.path(), content=urlencode(form), headers=_mg_auth())

    assert run(go).status_code == 200
    assert {d.headers["To"] for d in fake.delivered} == {"a@example.org, b@example.org"}


def test_mailgun_limits_auth_and_testmode() -> None:
    fake = FakeMailgun()
    many = [("from", "n@example.com"), ("subject", "s"), ("text", "t")] + [
        ("to", f"u{i}@example.org") for i in range(1001)]
    test = [("from", "n@example.com"), ("to", "a@example.org"), ("subject", "s"),
            ("text", "t"), ("o:testmode", "yes")]

    async def go() -> list[httpx.Response]:
        async with fake.client() as c:
            return [
                await c.post(fake.path(), content=urlencode(many), headers=_mg_auth()),
                await c.post(fake.path(), content=urlencode(test), headers=_mg_auth("bad")),
                await c.post(fake.path(), content=urlencode(test), headers=_mg_auth()),
                # multipart works too
                await c.post(fake.path(), data=dict(test[:4]),
                             files={"attachment": ("a.txt", b"x")},
                             headers={"Authorization": _mg_auth()["Authorization"]}),
            ]

    too_many, unauthorized, testmode, multipart = run(go)
    assert too_many.status_code == 400 and too_many.json() == {"message": "Too many recipients"}
    assert unauthorized.status_code == 401
    assert testmode.status_code == 200 and fake.test_mode_calls == 1
    assert multipart.status_code == 200
    assert [d.to for d in fake.delivered] == ["a@example.org"]  # only the multipart one


# -- Postmark -----------------------------------------------------------------------------
def _pm(to: str) -> dict[str, Any]:
    return {"From": "news@example.com", "To": to, "Subject": "S", "TextBody": "T",
            "MessageStream": "outbound", "Metadata": {"bulkmail_id": "c:1"},
            "Headers": [{"Name": "X-A", "Value": "1"}]}


def test_postmark_batch_reports_each_element_in_a_200() -> None:
    fake = FakePostmark(inactive={"gone@example.org"})

    async def go() -> httpx.Response:
        async with fake.client() as c:
            return await c.post("/email/batch", json=[
                _pm("a@example.org"), _pm("gone@example.org"), {"To": "x@example.org"}],
                headers={"X-Postmark-Server-Token": "pm-server-token"})

    r = run(go)
    assert r.status_code == 200
    codes = [e["ErrorCode"] for e in r.json()]
    assert codes == [0, 406, 300]
    assert r.json()[0]["Message"] == "OK" and r.json()[0]["MessageID"]
    assert [d.to for d in fake.delivered] == ["a@example.org"]
    assert fake.delivered[0].meta == {"bulkmail_id": "c:1"}


def test_postmark_limits_auth_and_test_token() -> None:
    fake = FakePostmark()

    async def go() -> list[httpx.Response]:
        async with fake.client() as c:
            return [
                await c.post("/email/batch", json=[_pm("a@example.org")] * 501,
                             headers={"X-Postmark-Server-Token": "pm-server-token"}),
                await c.post("/email/batch", json=[_pm("a@example.org")],
                             headers={"X-Postmark-Server-Token": "nope"}),
                await c.post("/email/batch", json=[_pm("a@example.org")],
                             headers={"X-Postmark-Server-Token": "POSTMARK_API_TEST"}),
            ]

    too_many, unauthorized, test = run(go)
    assert too_many.status_code == 422 and too_many.json()["ErrorCode"] == 410
    assert unauthorized.status_code == 401 and unauthorized.json()["ErrorCode"] == 10
    assert test.status_code == 200 and test.json()[0]["ErrorCode"] == 0
    assert fake.delivered == [] and fake.validated_only == 1


# -- SES ----------------------------------------------------------------------------------
def _signed(url: str, body: dict[str, Any], *, secret: str = "fake-secret",
            region: str = "us-east-1") -> tuple[bytes, dict[str, str]]:
    data = json.dumps(body).encode()
    aws = AWSRequest(method="POST", url=url, data=data,
                     headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("AKIDFAKE", secret), "ses", region).add_auth(aws)
    return data, dict(aws.headers.items())


def _ses_email(to: list[str], sender: str = "news@example.com") -> dict[str, Any]:
    return {"FromEmailAddress": sender, "Destination": {"ToAddresses": to},
            "Content": {"Simple": {"Subject": {"Data": "Hi"},
                                   "Body": {"Text": {"Data": "T"}},
                                   "Headers": [{"Name": "X-A", "Value": "1"}]}},
            "EmailTags": [{"Name": "bulkmail_id", "Value": "abc"}]}


async def _post_signed(fake: FakeSes, url: str, body: dict[str, Any], **kw: Any
                       ) -> httpx.Response:
    """POST ``body`` to the SES fake, SigV4-signed (``kw`` can spoil the signature)."""
    data, headers = _signed(url, body, **kw)
    async with fake.client() as c:
        return await c.post(url, content=data, headers=headers)


def test_ses_send_email_checks_signature_identity_and_recipients() -> None:
    fake = FakeSes(rejected={"bad@example.org"})
    url = "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails"

    async def post(body: dict[str, Any], **kw: Any) -> httpx.Response:
        return await _post_signed(fake, url, body, **kw)

    async def go() -> list[httpx.Response]:
        return [
            await post(_ses_email(["a@example.org"])),
            await post(_ses_email(["a@example.org"]), secret="wrong"),
            await post(_ses_email(["a@example.org"], sender="x@unverified.com")),
            await post(_ses_email([f"u{i}@example.org" for i in range(51)])),
            await post(_ses_email(["bad@example.org"])),
        ]

    ok, bad_sig, unverified, too_many, rejected = run(go)
    assert ok.status_code == 200 and ok.json()["MessageId"]
    assert bad_sig.status_code == 403
    assert bad_sig.headers["x-amzn-ErrorType"].startswith("InvalidSignatureException")
    assert unverified.status_code == 400
    assert unverified.headers["x-amzn-ErrorType"].startswith("MessageRejected")
    assert too_many.status_code == 400
    assert rejected.status_code == 400
    assert [(d.to, d.subject, d.headers, d.meta) for d in fake.delivered] == [
        ("a@example.org", "Hi", {"X-A": "1"}, {"bulkmail_id": "abc"})]


def test_ses_tampered_body_fails_the_signature() -> None:
    fake = FakeSes()
    url = "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails"
    data, headers = _signed(url, _ses_email(["a@example.org"]))

    async def go() -> httpx.Response:
        async with fake.client() as c:
            return await c.post(url, content=data.replace(b"Hi", b"Ho"), headers=headers)

    assert run(go).status_code == 403


def _ses_bulk(to: list[str], template: str = "newsletter", sender: str = "news@example.com",
              **extra: Any) -> dict[str, Any]:
    return {"FromEmailAddress": sender,
            "DefaultContent": {"Template": {"TemplateName": template,
                                            "TemplateData": '{"name": "friend"}'}},
            "BulkEmailEntries": [
                {"Destination": {"ToAddresses": [rcpt]},
                 "ReplacementEmailContent": {"ReplacementTemplate": {
                     "ReplacementTemplateData": json.dumps({"name": f"N{i}", "email": rcpt})}},
                 "ReplacementTags": [{"Name": "bulkmail_id", "Value": f"t{i}"}],
                 "ReplacementHeaders": [{"Name": "X-A", "Value": str(i)}]}
                for i, rcpt in enumerate(to)],
            **extra}


def test_ses_send_bulk_email_answers_each_entry_in_order() -> None:
    fake = FakeSes(rejected={"bad@example.org"},
                   bulk_status={"slow@example.org": "ACCOUNT_THROTTLED",
                                "temp@example.org": "TRANSIENT_FAILURE"})
    url = "https://email.us-east-1.amazonaws.com/v2/email/outbound-bulk-emails"
    to = ["a@example.org", "bad@example.org", "slow@example.org", "temp@example.org",
          "b@example.org"]

    async def go() -> httpx.Response:
        data, headers = _signed(url, _ses_bulk(to))
        async with fake.client() as c:
            return await c.post(url, content=data, headers=headers)

    r = run(go)
    assert r.status_code == 200
    results = r.json()["BulkEmailEntryResults"]
    assert [e["Status"] for e in results] == ["SUCCESS", "MESSAGE_REJECTED",
                                              "ACCOUNT_THROTTLED", "TRANSIENT_FAILURE",
                                              "SUCCESS"]
    assert results[0]["MessageId"] and "MessageId" not in results[1]
    assert all(e["Error"] for e in results[1:4])
    assert [(d.to, d.subject, d.text, d.html, d.headers, d.meta, d.provider_id)
            for d in fake.delivered] == [
        ("a@example.org", "Hello N0", "Hi N0 <a@example.org>", "<p>Hi N0</p>", {"X-A": "0"},
         {"bulkmail_id": "t0"}, results[0]["MessageId"]),
        ("b@example.org", "Hello N4", "Hi N4 <b@example.org>", "<p>Hi N4</p>", {"X-A": "4"},
         {"bulkmail_id": "t4"}, results[4]["MessageId"])]


def test_ses_send_bulk_email_limits_template_identity_and_signature() -> None:
    fake = FakeSes()
    url = "https://email.us-east-1.amazonaws.com/v2/email/outbound-bulk-emails"
    no_name = _ses_bulk(["a@example.org"])
    no_name["BulkEmailEntries"][0]["ReplacementEmailContent"]["ReplacementTemplate"][
        "ReplacementTemplateData"] = '{"email": "a@example.org"}'
    bad_data = _ses_bulk(["a@example.org"])
    bad_data["BulkEmailEntries"][0]["ReplacementEmailContent"]["ReplacementTemplate"][
        "ReplacementTemplateData"] = "not json"

    async def post(body: dict[str, Any], **kw: Any) -> httpx.Response:
        return await _post_signed(fake, url, body, **kw)

    async def go() -> list[httpx.Response]:
        return [
            await post(_ses_bulk([f"u{i}@example.org" for i in range(50)])),
            await post(_ses_bulk([f"u{i}@example.org" for i in range(51)])),
            await post(_ses_bulk([])),
            await post(_ses_bulk(["a@example.org"], template="missing")),
            await post(_ses_bulk(["a@example.org"], sender="x@unverified.com")),
            await post(_ses_bulk(["a@example.org"]), secret="wrong"),
            await post(bad_data),
            await post(no_name),
        ]

    full, too_many, empty, missing, unverified, bad_sig, invalid, unrendered = run(go)
    assert full.status_code == 200 and len(full.json()["BulkEmailEntryResults"]) == 50
    assert too_many.status_code == 400 and empty.status_code == 400
    assert too_many.headers["x-amzn-ErrorType"].startswith("BadRequestException")
    assert missing.status_code == 404
    assert missing.headers["x-amzn-ErrorType"].startswith("NotFoundException")
    assert unverified.status_code == 400
    assert unverified.headers["x-amzn-ErrorType"].startswith("MessageRejected")
    assert bad_sig.status_code == 403 and invalid.status_code == 400
    # the default TemplateData fills in what an entry lacks; SES renders after accepting
    assert unrendered.json()["BulkEmailEntryResults"][0]["Status"] == "SUCCESS"
    assert fake.render_failures == []
    assert len(fake.delivered) == 51 and fake.delivered[-1].subject == "Hello friend"


def test_ses_send_bulk_email_rendering_failure_is_silent() -> None:
    fake = FakeSes(templates={"t": {"Subject": "Hi {{name}}", "Text": "{{city}}"}})
    url = "https://email.us-east-1.amazonaws.com/v2/email/outbound-bulk-emails"

    async def go() -> httpx.Response:
        data, headers = _signed(url, _ses_bulk(["a@example.org"], template="t"))
        async with fake.client() as c:
            return await c.post(url, content=data, headers=headers)

    r = run(go)
    assert r.json()["BulkEmailEntryResults"][0]["Status"] == "SUCCESS"
    assert fake.delivered == [] and fake.render_failures == [("a@example.org", "city")]


# -- Resend -------------------------------------------------------------------------------
def _re(to: str) -> dict[str, Any]:
    return {"from": "news@example.com", "to": [to], "subject": "S", "text": "T",
            "headers": {"X-A": "1"}}


def test_resend_batch_strict_and_permissive() -> None:
    fake = FakeResend(invalid={"bad@example.org"})
    auth = {"Authorization": "Bearer re_test_key"}
    batch = [_re("a@example.org"), _re("bad@example.org"), _re("b@example.org")]

    async def go() -> list[httpx.Response]:
        async with fake.client() as c:
            return [
                await c.post("/emails/batch", json=batch, headers=auth),
                await c.post("/emails/batch", json=batch,
                             headers={**auth, "x-batch-validation": "permissive"}),
                await c.post("/emails/batch", json=[_re("a@example.org")] * 101, headers=auth),
            ]

    strict, permissive, too_many = run(go)
    assert strict.status_code == 422 and strict.json()["name"] == "validation_error"
    assert strict.json()["statusCode"] == 422
    assert permissive.status_code == 200
    assert len(permissive.json()["data"]) == 2
    assert permissive.json()["errors"] == [{"index": 1,
                                            "message": "Invalid `to` field: bad@example.org"}]
    assert permissive.headers["ratelimit-limit"] == "2"
    assert too_many.status_code == 422
    assert [d.to for d in fake.delivered] == ["a@example.org", "b@example.org"]


def test_resend_idempotency_key_replays_and_conflicts() -> None:
    fake = FakeResend()
    auth = {"Authorization": "Bearer re_test_key", "Idempotency-Key": "k1"}

    async def go() -> list[httpx.Response]:
        async with fake.client() as c:
            return [
                await c.post("/emails/batch", json=[_re("a@example.org")], headers=auth),
                await c.post("/emails/batch", json=[_re("a@example.org")], headers=auth),
                await c.post("/emails/batch", json=[_re("b@example.org")], headers=auth),
                await c.post("/emails/batch", json=[_re("a@example.org")],
                             headers={"Authorization": "Bearer wrong"}),
                await c.post("/emails/batch", json=[_re("a@example.org")]),
            ]

    first, again, other, forbidden, missing = run(go)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert other.status_code == 409 and other.json()["name"] == "invalid_idempotent_request"
    assert forbidden.status_code == 403 and missing.status_code == 401
    assert len(fake.delivered) == 1


# -- generic http -------------------------------------------------------------------------
def test_http_contract_one_result_per_message() -> None:
    fake = FakeHttpApi(rejected={"bad@example.org"}, throttled={"slow@example.org"})
    addresses = ["a@example.org", "bad@example.org", "slow@example.org"]
    msgs: list[dict[str, Any]] = [
        {"id": f"<{i}@x>", "correlation_id": f"c:{i}", "from": "n@example.com", "to": to,
         "reply_to": None, "subject": "S", "text": "T", "html": None, "headers": {}}
        for i, to in enumerate(addresses)]

    async def go() -> list[httpx.Response]:
        async with fake.client() as c:
            return [
                await c.post("/send", json={"sandbox": False, "messages": msgs},
                             headers={"Authorization": "Bearer http-key"}),
                await c.post("/send", json={"sandbox": False, "messages": msgs}),
                await c.post("/send", json={"sandbox": False, "messages": msgs * 34},
                             headers={"Authorization": "Bearer http-key"}),
            ]

    ok, unauthorized, too_many = run(go)
    results = ok.json()["results"]
    assert results[0]["id"]
    assert results[1] == {"error": {"status": 422, "message": "recipient refused: "
                                    "bad@example.org"}}
    assert results[2]["error"]["status"] == 429 and results[2]["error"]["retry_after"] == 7
    assert unauthorized.status_code == 401 and too_many.status_code == 413
    assert [d.meta["correlation_id"] for d in fake.delivered] == ["c:0"]


def test_faults_and_delay_are_served_before_validation() -> None:
    fake = FakeHttpApi()
    fake.fail_next(status=429, json={"message": "slow"}, headers={"Retry-After": "3"})

    async def go() -> list[httpx.Response]:
        async with fake.client() as c:
            return [await c.post("/send", json={}), await c.post("/send", json={})]

    throttled, normal = run(go)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
    assert normal.status_code == 401
