"""SES v2 provider against the fake SES (tests/fakes/ses.py), which checks SigV4."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import ValidationError

from config.errors import (
    AmbiguousDeliveryError,
    ConfigError,
    PermanentDeliveryError,
    ProviderAuthError,
    ThrottledError,
    TransientDeliveryError,
)
from config.providers import SesConfig
from config.schema import CampaignSpec, Recipient
from tests.fakes import FakeSes, make_messages, send_batch
from tests.fakes.providers import provider_factory, send_each_own
from tests.fakes.ses import BULK_ERRORS
from workers.providers.base import OutgoingMessage
from workers.providers.ses import SesProvider, bulk_outcome, create, ses_address, tag_value
from workers.templates import CompiledCampaign


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


provider = provider_factory(create, SesConfig, "ses", kind="ses", base_url="https://ses.test")


def test_default_host_follows_the_region() -> None:
    p = create("ses", SesConfig(kind="ses", region="eu-west-1"))
    assert p.base_url == "https://email.eu-west-1.amazonaws.com"
    assert p.wants_mime is False
    assert "fake-secret" not in repr(p)


def test_one_signed_call_per_message_each_with_its_own_content() -> None:
    fake = FakeSes()
    messages = make_messages(1250, reply_to="help@example.com")
    _, each = send_each_own(fake, provider(fake, concurrency=8), messages,
                            "/v2/email/outbound-emails", 1250)
    for m, r, d in each:
        assert d.meta == {"bulkmail_id": tag_value(m.correlation_id)}
        assert d.headers["Reply-To"] == "help@example.com"
        assert r.provider_id == d.provider_id
    assert fake.max_in_flight <= 8


def test_calls_run_concurrently_up_to_the_cap() -> None:
    fake = FakeSes()
    fake.delay = 0.02
    send_batch(provider(fake, concurrency=3), make_messages(12))
    assert fake.max_in_flight == 3


def test_tag_value_is_reversible_and_in_the_allowed_alphabet() -> None:
    value = tag_value("spring sale/2024:17")
    assert value.replace("-", "").replace("_", "").isalnum()
    assert base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)) == b"spring sale/2024:17"


def test_a_rejected_message_fails_alone() -> None:
    fake = FakeSes(rejected={"user1@example.org"})
    results = send_batch(provider(fake), make_messages(3))
    assert [r.ok for r in results] == [True, False, True]
    err = results[1].error
    assert type(err) is PermanentDeliveryError and err.reply.startswith("MessageRejected")


def test_throttling_and_transient_errors() -> None:
    fake = FakeSes()
    fake.fail_next(status=429, json={"message": "Maximum sending rate exceeded."},
                   headers={"x-amzn-ErrorType": "TooManyRequestsException:", "Retry-After": "1"})
    fake.fail_next(status=400, json={"message": "Daily quota"},
                   headers={"x-amzn-ErrorType": "LimitExceededException:"})
    fake.fail_next(status=503, json={"message": "Service unavailable"})
    results = send_batch(provider(fake, concurrency=1), make_messages(4))
    first, second, third, fourth = (r.error for r in results)
    assert isinstance(first, ThrottledError) and first.retry_after == 1.0
    assert isinstance(second, ThrottledError)
    assert type(third) is TransientDeliveryError
    assert fourth is None


def test_slow_answer_is_transient() -> None:
    fake = FakeSes()
    fake.fail_next(status=200, json={"MessageId": "x"}, delay=5)
    results = send_batch(provider(fake, timeout=0.05, concurrency=1), make_messages(2))
    assert isinstance(results[0].error, AmbiguousDeliveryError)
    assert results[1].ok


def test_a_message_over_40_mb_fails_without_a_call() -> None:
    fake = FakeSes()
    messages = make_messages(1, pad=40_000_001) + make_messages(1, start=1)
    results = send_batch(provider(fake), messages)
    assert isinstance(results[0].error, PermanentDeliveryError) and results[1].ok
    assert len(fake.requests) == 1


def test_bad_credentials_raise_provider_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    fake = FakeSes()
    with pytest.raises(ProviderAuthError) as info:
        send_batch(provider(fake), make_messages(3))
    assert "not-the-secret" not in str(info.value)
    assert info.value.reply.startswith("InvalidSignatureException")


def test_credentials_from_the_configured_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_ID", "AKIDOTHER")
    monkeypatch.setenv("MY_SECRET", "other-secret")
    fake = FakeSes(key_id="AKIDOTHER", secret="other-secret", region="eu-central-1")
    p = provider(fake, access_key_id_env="MY_ID", secret_access_key_env="MY_SECRET",
                 region="eu-central-1", configuration_set="bulk")
    assert send_batch(p, make_messages(1))[0].ok
    assert json.loads(fake.requests[0].content)["ConfigurationSetName"] == "bulk"


def test_missing_credentials_fail_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID"):
        provider(FakeSes())


def test_addresses_are_encoded_the_way_ses_wants() -> None:
    assert ses_address("news@example.com") == "news@example.com"
    assert ses_address("News <news@example.com>") == "News <news@example.com>"
    assert ses_address("Café News <news@example.com>") == (
        "=?utf-8?q?Caf=C3=A9_News?= <news@example.com>")
    assert ses_address("user@bücher.example") == "user@xn--bcher-kva.example"
    fake = FakeSes()
    results = send_batch(provider(fake), make_messages(1, sender="Café <news@example.com>"))
    assert results[0].ok
    assert json.loads(fake.requests[0].content)["FromEmailAddress"].startswith("=?utf-8?")


# -- SendBulkEmail (cfg.bulk_template) ----------------------------------------------------
BULK = "/v2/email/outbound-bulk-emails"


def bulk_provider(fake: FakeSes, **cfg: object) -> SesProvider:
    return provider(fake, bulk_template="newsletter", **cfg)


def _with_vars(messages: list[OutgoingMessage]) -> list[OutgoingMessage]:
    for m in messages:
        m.variables = {"name": f"Name {m.row}", "plan": "gold" if m.row % 2 else "free",
                       "n": m.row}
    return messages


def _bodies(fake: FakeSes) -> list[dict[str, Any]]:
    return [json.loads(r.content) for r in fake.calls(BULK)]


def test_bulk_sends_50_entries_per_call_each_with_its_own_variables() -> None:
    fake = FakeSes()
    messages = _with_vars(make_messages(120, reply_to="help@example.com"))
    p = bulk_provider(fake, concurrency=3, configuration_set="bulk")
    assert p.chunk_size == 150
    results = send_batch(p, messages)
    assert all(r.ok for r in results)
    bodies = _bodies(fake)
    assert [len(b["BulkEmailEntries"]) for b in bodies] == [50, 50, 20]
    assert fake.calls("/v2/email/outbound-emails") == []
    for b in bodies:
        assert b["FromEmailAddress"] == "News <news@example.com>"
        assert b["ReplyToAddresses"] == ["help@example.com"]
        assert b["DefaultContent"] == {"Template": {"TemplateName": "newsletter",
                                                    "TemplateData": "{}"}}
        assert b["ConfigurationSetName"] == "bulk"
    entries = [e for b in bodies for e in b["BulkEmailEntries"]]
    for m, entry in zip(messages, entries, strict=True):
        assert entry["Destination"] == {"ToAddresses": [m.recipient]}
        data = json.loads(
            entry["ReplacementEmailContent"]["ReplacementTemplate"]["ReplacementTemplateData"])
        assert data == {**m.variables, "email": m.recipient}
        assert entry["ReplacementTags"] == [{"Name": "bulkmail_id",
                                             "Value": tag_value(m.correlation_id)}]
    # what each recipient got: SES's rendering of the stored template with its own data
    by_to = {d.to: d for d in fake.delivered}
    assert len(fake.delivered) == 120
    for m, r in zip(messages, results, strict=True):
        d = by_to[m.recipient]
        assert d.subject == f"Hello Name {m.row}"
        assert d.text == f"Hi Name {m.row} <{m.recipient}>"
        assert d.meta == {"bulkmail_id": tag_value(m.correlation_id)}
        assert d.headers["X-Bulkmail-Id"] == m.correlation_id
        assert d.headers["List-Unsubscribe"] == m.headers["List-Unsubscribe"]
        assert d.headers["Reply-To"] == "help@example.com"
        assert r.provider_id == d.provider_id


def test_bulk_calls_run_concurrently_up_to_the_cap() -> None:
    fake = FakeSes()
    fake.delay = 0.02
    send_batch(bulk_provider(fake, concurrency=2), _with_vars(make_messages(250)))
    assert len(fake.calls(BULK)) == 5
    assert fake.max_in_flight == 2


def test_bulk_entry_statuses_map_to_our_errors() -> None:
    statuses = ["MESSAGE_REJECTED", "ACCOUNT_THROTTLED", "ACCOUNT_DAILY_QUOTA_EXCEEDED",
                "TRANSIENT_FAILURE", "FAILED", "MAIL_FROM_DOMAIN_NOT_VERIFIED",
                "TEMPLATE_NOT_FOUND", "CONFIGURATION_SET_NOT_FOUND", "ACCOUNT_SUSPENDED",
                "ACCOUNT_SENDING_PAUSED", "CONFIGURATION_SET_SENDING_PAUSED",
                "INVALID_PARAMETER", "INVALID_SENDING_POOL_NAME", "SOMETHING_NEW"]
    messages = _with_vars(make_messages(len(statuses) + 2))
    scripted = {messages[i + 1].recipient: s for i, s in enumerate(statuses)}
    fake = FakeSes(bulk_status=scripted)
    results = send_batch(bulk_provider(fake), messages)
    assert len(fake.calls(BULK)) == 1
    assert results[0].ok and results[-1].ok
    expected = {
        "ACCOUNT_THROTTLED": ThrottledError, "ACCOUNT_DAILY_QUOTA_EXCEEDED": ThrottledError,
        "TRANSIENT_FAILURE": TransientDeliveryError, "FAILED": TransientDeliveryError,
        "SOMETHING_NEW": TransientDeliveryError,
    }
    for status, r in zip(statuses, results[1:-1], strict=True):
        assert type(r.error) is expected.get(status, PermanentDeliveryError), status
        assert r.error is not None and r.error.reply.startswith(f"{status}: ")
        assert r.provider_id is None
    assert results[1].error is not None
    assert results[1].error.reply == f"MESSAGE_REJECTED: {BULK_ERRORS['MESSAGE_REJECTED']}"
    assert sorted(d.to for d in fake.delivered) == sorted(
        [messages[0].recipient, messages[-1].recipient])


def test_bulk_outcome_reads_every_documented_spelling() -> None:
    assert bulk_outcome({"Status": "SUCCESS", "MessageId": "m1"}) == "m1"
    assert bulk_outcome({"Status": "SUCCESS"}) is None
    for status in ("SENDING_QUOTA_EXCEEDED", "MAX_SENDING_RATE_EXCEEDED"):
        assert type(bulk_outcome({"Status": status})) is ThrottledError
    for status in ("TEMPLATE_DOES_NOT_EXIST", "CONFIGURATION_SET_DOES_NOT_EXIST"):
        assert type(bulk_outcome({"Status": status, "Error": "x"})) is PermanentDeliveryError
    missing = bulk_outcome({"Error": "?"})
    assert type(missing) is TransientDeliveryError and missing.reply == "no status: ?"
    assert type(bulk_outcome("junk")) is TransientDeliveryError


def test_bulk_429_throttles_that_call_only() -> None:
    fake = FakeSes()
    fake.fail_next(status=429, json={"message": "Maximum sending rate exceeded."},
                   headers={"x-amzn-ErrorType": "TooManyRequestsException:", "Retry-After": "2"})
    results = send_batch(bulk_provider(fake, concurrency=1), _with_vars(make_messages(60)))
    assert len(fake.calls(BULK)) == 2
    for r in results[:50]:
        assert isinstance(r.error, ThrottledError) and r.error.retry_after == 2.0
        assert r.error.reply.startswith("TooManyRequestsException")
    assert all(r.ok for r in results[50:])
    assert len(fake.delivered) == 10


def test_bulk_whole_call_errors_follow_the_http_classification(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSes()
    fake.fail_next(status=503, json={"message": "Service unavailable"})
    fake.fail_next(status=200, json={"BulkEmailEntryResults": [{"Status": "SUCCESS"}]})
    results = send_batch(bulk_provider(fake, concurrency=1), _with_vars(make_messages(150)))
    assert type(results[0].error) is TransientDeliveryError
    assert type(results[50].error) is AmbiguousDeliveryError  # 1 result for 50 entries
    assert all(r.ok for r in results[100:])

    unknown = FakeSes()
    results = send_batch(provider(unknown, bulk_template="nope"), make_messages(2))
    assert all(type(r.error) is PermanentDeliveryError for r in results)
    assert results[0].error is not None
    assert results[0].error.reply.startswith("NotFoundException")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(ProviderAuthError):
        send_batch(bulk_provider(FakeSes()), make_messages(3))


def test_bulk_groups_calls_by_sender_and_reply_to() -> None:
    fake = FakeSes()
    messages = _with_vars(make_messages(4) + make_messages(3, start=4,
                                                           sender="Shop <shop@example.com>"))
    messages[1].reply_to = "help@example.com"
    results = send_batch(bulk_provider(fake), messages)
    assert all(r.ok for r in results)
    calls = sorted((b["FromEmailAddress"], tuple(b.get("ReplyToAddresses", ())),
                    len(b["BulkEmailEntries"])) for b in _bodies(fake))
    assert calls == [("News <news@example.com>", (), 3),
                     ("News <news@example.com>", ("help@example.com",), 1),
                     ("Shop <shop@example.com>", (), 3)]
    assert [r.row for r in results] == [m.row for m in messages]
    assert_each_got_own_data(fake, messages)


def assert_each_got_own_data(fake: FakeSes, messages: list[OutgoingMessage]) -> None:
    by_to = {d.to: d for d in fake.delivered}
    assert len(by_to) == len(fake.delivered) == len(messages)
    for m in messages:
        assert by_to[m.recipient].subject == f"Hello {m.variables['name']}"
        assert by_to[m.recipient].sender == m.sender


def test_bulk_template_data_over_the_limit_fails_alone() -> None:
    fake = FakeSes()
    messages = _with_vars(make_messages(3))
    messages[1].variables["blob"] = "x" * 262_144
    results = send_batch(bulk_provider(fake), messages)
    assert results[0].ok and results[2].ok
    assert isinstance(results[1].error, PermanentDeliveryError)
    assert "ReplacementTemplateData" in results[1].error.reply
    assert [len(b["BulkEmailEntries"]) for b in _bodies(fake)] == [2]


def test_rendered_campaign_variables_reach_the_bulk_entries() -> None:
    spec = CampaignSpec(id="spring", provider="ses", sender="News <news@example.com>",
                        subject="Hi {{ name }}", text="Hello {{ name }}")
    compiled = CompiledCampaign.compile(spec)
    recipients = [Recipient(1, "ann@example.org", {"name": "Ann", "email": "spoof@x.org"}),
                  Recipient(2, "bob@example.org", {"name": "Bob", "city": "Köln"})]
    messages = [compiled.render(r) for r in recipients]
    assert messages[1].variables == {"name": "Bob", "city": "Köln"}
    fake = FakeSes()
    assert all(r.ok for r in send_batch(bulk_provider(fake), messages))
    entries = _bodies(fake)[0]["BulkEmailEntries"]
    datas = [json.loads(e["ReplacementEmailContent"]["ReplacementTemplate"]
                        ["ReplacementTemplateData"]) for e in entries]
    # like our own templates, ``email`` is always the recipient's address
    assert datas == [{"name": "Ann", "email": "ann@example.org"},
                     {"name": "Bob", "city": "Köln", "email": "bob@example.org"}]
    assert [d.subject for d in fake.delivered] == ["Hello Ann", "Hello Bob"]


def test_bulk_template_must_not_be_empty() -> None:
    with pytest.raises(ValidationError):
        SesConfig(kind="ses", bulk_template="")
    assert SesConfig(kind="ses").bulk_template is None
