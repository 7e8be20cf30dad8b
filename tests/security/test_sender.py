"""One sender: the envelope sender is the validated From address (or an explicit return
path), fixed when the campaign is compiled; recipient data can change the display name
only. A real SMTP server records MAIL FROM / RCPT TO (issue 9, item 1)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.errors import InputError, TemplateError
from config.providers import HttpConfig, SendgridConfig, SmtpConfig, load_providers
from config.schema import CampaignSpec, Recipient
from config.settings import Settings
from producers.api import Bulkmail
from producers.campaign import load_campaign
from tests.fakes import FakeHttpApi, FakeSendgrid, send_batch
from tests.security.smtp_recorder import SmtpRecorder
from workers.mime import parse_address
from workers.providers import create_provider
from workers.providers.base import OutgoingMessage, SendResult
from workers.templates import CompiledCampaign

HOSTILE_NAMES = [
    "Acme: ceo@bank.example",
    "ceo@bank.example",
    "<ceo@bank.example>",
    'x" <ceo@bank.example>',
    "Acme, ceo@bank.example,",
    "\\\" <ceo@bank.example> \\",
    "=?utf-8?q?ceo@bank.example?=",
]


def _spec(**changes: Any) -> CampaignSpec:
    base: dict[str, Any] = {"id": "sec-1", "provider": "relay",
                            "sender": "{{ company }} <news@shop.example>",
                            "subject": "Hi", "text": "Hello\n"}
    return CampaignSpec(**{**base, **changes})


def _render(spec: CampaignSpec, rows: list[dict[str, Any]]) -> list[OutgoingMessage]:
    compiled = CompiledCampaign.compile(spec)
    out = []
    for i, row in enumerate(rows, 1):
        msg = compiled.render(Recipient(i, f"user{i}@example.org", row))
        msg.mime = compiled.build_mime(msg)
        out.append(msg)
    return out


def _smtp(server: SmtpRecorder, messages: list[OutgoingMessage], **cfg: Any
          ) -> list[SendResult]:
    provider = create_provider("relay", SmtpConfig(kind="smtp", host="127.0.0.1",
                                                   port=server.port, tls="none", **cfg))

    async def go() -> list[SendResult]:
        try:
            return await provider.send(messages)
        finally:
            await provider.aclose()

    return asyncio.run(go())


@pytest.fixture(params=[False, True], ids=["step-by-step", "pipelined"])
def server(request: pytest.FixtureRequest) -> Any:
    with SmtpRecorder(pipelining=request.param) as srv:
        yield srv


def _from_header(content: bytes) -> tuple[str, str]:
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    (address,) = parsed["From"].addresses  # exactly one address, whatever the name held
    return address.display_name, address.addr_spec


def test_templated_display_name_cannot_change_mail_from(server: SmtpRecorder) -> None:
    messages = _render(_spec(), [{"company": name} for name in HOSTILE_NAMES])
    results = _smtp(server, messages)
    assert all(r.ok for r in results)
    assert [e.mail_from for e in server.envelopes] == ["news@shop.example"] * len(HOSTILE_NAMES)
    names = sorted(_from_header(e.content)[0] for e in server.envelopes)
    assert names == sorted(n.strip() for n in HOSTILE_NAMES)
    assert {_from_header(e.content)[1] for e in server.envelopes} == {"news@shop.example"}


def test_static_display_name_with_a_comma(server: SmtpRecorder) -> None:
    messages = _render(_spec(sender="Doe, Jane <jane@shop.example>"), [{}])
    assert _smtp(server, messages)[0].ok
    (env,) = server.envelopes
    assert env.mail_from == "jane@shop.example"
    assert _from_header(env.content) == ("Doe, Jane", "jane@shop.example")


def test_return_path_from_campaign_then_provider_then_from(server: SmtpRecorder) -> None:
    by_campaign = _render(_spec(return_path="bounces@shop.example"), [{"company": "A"}])
    plain = _render(_spec(), [{"company": "A"}])
    _smtp(server, by_campaign + plain, return_path="relay-bounces@shop.example")
    _smtp(server, plain)
    # the two messages of the first batch go out side by side: their order is free
    first = sorted(e.mail_from for e in server.envelopes[:2])
    assert first == ["bounces@shop.example", "relay-bounces@shop.example"]
    assert server.envelopes[2].mail_from == "news@shop.example"


@pytest.mark.parametrize("return_path", ["{{ x }}@shop.example", "Bounces <b@shop.example>",
                                         "b@shop.example, c@bank.example"])
def test_return_path_is_one_bare_address(return_path: str) -> None:
    with pytest.raises(TemplateError, match="return_path"):
        CompiledCampaign.compile(_spec(return_path=return_path))


def test_from_address_cannot_be_a_template() -> None:
    for sender in ["{{ company }} <{{ addr }}>", "{{ sender }}", "news@{{ domain }}"]:
        with pytest.raises(TemplateError, match=r"^from: the address cannot be a template"):
            CompiledCampaign.compile(_spec(sender=sender))


@settings(max_examples=300, deadline=None)
@given(name=st.text(st.characters(blacklist_categories=("Cs",),
                                  blacklist_characters="\r\n\x00"), max_size=40))
def test_any_rendered_name_keeps_the_address(name: str) -> None:
    compiled = CompiledCampaign.compile(_spec())
    msg = compiled.render(Recipient(1, "a@example.org", {"company": name}))
    assert msg.from_address == "news@shop.example"
    assert parse_address(msg.sender) == (name.strip(), "news@shop.example")
    # a reader of the built header finds exactly one address, the fixed one
    assert _from_header(compiled.build_mime(msg))[1] == "news@shop.example"


# -- allowed_senders ---------------------------------------------------------------------


def _providers(tmp_path: Path, allowed: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text('[providers.relay]\nkind = "smtp"\nhost = "127.0.0.1"\ntls = "none"\n'
                    f"allowed_senders = {allowed}\n")
    return path


def _campaign(tmp_path: Path, sender: str, extra: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'id = "sec-allowed"\nprovider = "relay"\nfrom = "{sender}"\n'
                    f'subject = "Hi"\ntext = "x"\n{extra}')
    return path


def test_allowed_senders_refuse_a_campaign_from_elsewhere(tmp_path: Path) -> None:
    providers = load_providers(_providers(tmp_path, '["*@shop.example", "ceo@büro.example"]'))
    for sender in ["Shop <news@shop.example>", "NEWS@Shop.Example", "ceo@büro.example",
                   "ceo@xn--bro-hoa.example"]:
        spec, _ = load_campaign(_campaign(tmp_path, sender), providers)
        assert spec.sender == sender
    for sender in ["news@bank.example", "news@shop.example.bank.example",
                   "{{ company }} <news@sub.shop.example>"]:
        with pytest.raises(InputError, match=r"from: .* allowed_senders of provider 'relay'"):
            load_campaign(_campaign(tmp_path, sender), providers)
    with pytest.raises(InputError, match=r"return_path: .* allowed_senders"):
        load_campaign(_campaign(tmp_path, "news@shop.example",
                                'return_path = "b@bank.example"\n'), providers)


def test_allowed_senders_refuse_before_anything_is_enqueued(
        tmp_path: Path, redis_url: str, key_prefix: str) -> None:
    mail = Bulkmail(Settings(redis_url=redis_url, key_prefix=key_prefix,
                             providers=_providers(tmp_path, '["*@shop.example"]')))
    with pytest.raises(InputError, match="allowed_senders"):
        mail.send_message("a@example.org", provider="relay", sender="Boss <ceo@bank.example>",
                          subject="x", text="y", message_id="sec-never")
    assert mail.status("sec-never") is None
    with pytest.raises(InputError, match="allowed_senders"):
        mail.send_campaign(_campaign(tmp_path, "ceo@bank.example"), [{"email": "a@x.org"}])
    assert mail.status("sec-allowed") is None


def test_allowed_senders_must_be_patterns(tmp_path: Path) -> None:
    from config.errors import ConfigError

    for bad in ['"*@shop.example"', '["shop.example"]']:
        with pytest.raises(ConfigError, match="provider 'relay': field 'allowed_senders'"):
            load_providers(_providers(tmp_path, bad))


# -- Reply-To and the API kinds ----------------------------------------------------------


@pytest.mark.parametrize("value", ["a@x.example, attacker@y.example", "a@x.example attacker",
                                   "<a@x.example>, <attacker@y.example>"])
def test_reply_to_is_one_address(value: str) -> None:
    compiled = CompiledCampaign.compile(_spec(reply_to="{{ rt }}"))
    with pytest.raises(TemplateError, match=r"^reply_to: "):
        compiled.render(Recipient(1, "a@example.org", {"company": "A", "rt": value}))
    with pytest.raises(TemplateError, match="reply_to"):
        CompiledCampaign.compile(_spec(reply_to=value))


def test_api_kinds_get_the_fixed_from_and_one_reply_to(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setenv("SEC_SG_KEY", "SG.test-key")
    monkeypatch.setenv("SEC_HTTP_KEY", "http-key")
    spec = _spec(reply_to="{{ rt }}")
    rows = [{"company": name, "rt": "Help, Desk <help@shop.example>"} for name in HOSTILE_NAMES]
    messages = _render(spec, rows)

    sendgrid = FakeSendgrid()
    sg = create_provider("sg", SendgridConfig(kind="sendgrid", api_key_env="SEC_SG_KEY",
                                              base_url="https://sg.test"),
                         transport=sendgrid.transport())
    http = FakeHttpApi()
    generic = create_provider("h", HttpConfig(kind="http", url="https://relay.test/send",
                                              api_key_env="SEC_HTTP_KEY"),
                              transport=http.transport())
    assert all(r.ok for r in send_batch(sg, messages))
    assert all(r.ok for r in send_batch(generic, messages))

    sg_from = {json.dumps(json.loads(r.content)["from"]) for r in sendgrid.requests}
    assert all(json.loads(f)["email"] == "news@shop.example" for f in sg_from)
    for request in http.requests:
        for element in json.loads(request.content)["messages"]:
            assert parse_address(element["from"])[1] == "news@shop.example"
            assert parse_address(element["reply_to"]) == ("Help, Desk", "help@shop.example")
