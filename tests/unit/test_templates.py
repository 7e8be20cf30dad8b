"""Compiling and rendering campaigns: errors name the field, rendering is safe."""

from __future__ import annotations

import email.policy
import re
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

from config.errors import TemplateError
from config.schema import CampaignSpec, Recipient
from workers.templates import CompiledCampaign, message_id

BOB = Recipient(row=3, email="bob@example.com", vars={"name": "Bob", "city": "Köln"})


def spec(**changes: Any) -> CampaignSpec:
    fields: dict[str, Any] = {
        "id": "spring-sale",
        "provider": "smtp",
        "sender": "Shop <news@shop.example>",
        "subject": "Hi {{ name }}",
        "text": "Hello {{ name }}\n",
        "html": "<p>Hello {{ name }}</p>",
    }
    fields.update(changes)
    return CampaignSpec(**fields)


def compile_(**changes: Any) -> CompiledCampaign:
    return CompiledCampaign.compile(spec(**changes), clock=lambda: 1_700_000_000.0)


# ----------------------------------------------------------------------------- compile


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"subject": "Hi {{ name "}, r"^subject: line 1: "),
        ({"text": "Hello\n\n{% if name %}no end"}, r"^text: line 3: .*endif"),
        ({"html": "<p>\n{{ name | }}</p>"}, r"^html: line 2: "),
        ({"headers": {"X-Foo": "ok", "X-Bar": "{% for %}"}}, r"^headers\.X-Bar: line 1: "),
        ({"sender": "{{ brand <a@b.example>"}, r"^from: line 1: "),
        ({"reply_to": "{{ }} <r@b.example>"}, r"^reply_to: line 1: "),
    ],
)
def test_syntax_errors_name_the_field_and_line(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(TemplateError, match=expected):
        compile_(**changes)


def test_syntax_error_carries_jinja_message() -> None:
    with pytest.raises(TemplateError) as info:
        compile_(subject="{{ name }")
    assert str(info.value) == "subject: line 1: unexpected '}'"


@pytest.mark.parametrize("bodies", [{"text": None, "html": None}, {"text": "", "html": None}])
def test_campaign_without_body_is_refused(bodies: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match=r"^campaign has no body: set text, text_file, html or"):
        compile_(**bodies)


def test_either_body_alone_is_enough() -> None:
    assert compile_(html=None).render(BOB).html is None
    assert compile_(text=None).render(BOB).text is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("X Foo", "invalid header name"),
        ("X-Foo:", "invalid header name"),
        ("X-Tëst", "invalid header name"),
        ("", "invalid header name"),
        ("From", "cannot be set"),
        ("to", "cannot be set"),
        ("SUBJECT", "cannot be set"),
        ("Date", "cannot be set"),
        ("Message-ID", "cannot be set"),
        ("MIME-Version", "cannot be set"),
        ("Content-Type", "cannot be set"),
        ("Content-Transfer-Encoding", "cannot be set"),
        ("Reply-To", "set reply_to instead"),
    ],
)
def test_invalid_header_names(name: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=rf"^headers\.{re.escape(name)}: .*{reason}"):
        compile_(headers={name: "x"})


def test_same_header_twice_is_refused() -> None:
    with pytest.raises(TemplateError, match=r"^headers\.x-tag: header given twice"):
        compile_(headers={"X-Tag": "a", "x-tag": "b"})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"headers": {"X-Foo": "a\r\nBcc: evil@example.net"}}, "headers.X-Foo"),
        ({"headers": {"X-Foo": "a\n"}}, "headers.X-Foo"),
        ({"headers": {"X-Foo": "{{ name }}\nBcc: evil@example.net"}}, "headers.X-Foo"),
        ({"subject": "Hi\r"}, "subject"),
        ({"subject": "Hi {{ name }}\n"}, "subject"),
        ({"sender": "a@b.example\nBcc: evil@example.net"}, "from"),
        ({"reply_to": "r@b.example\r\n"}, "reply_to"),
    ],
)
def test_line_breaks_in_header_constants_are_refused(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(TemplateError, match=f"^header injection in {re.escape(field)}"):
        compile_(**changes)


def test_line_breaks_inside_a_tag_are_fine() -> None:
    compiled = compile_(subject="Hi {{\n name\n }}")
    assert compiled.render(BOB).subject == "Hi Bob"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"sender": "not an address"}, r"^from: 'not an address' is not an email address"),
        ({"reply_to": "Support <nope>"}, r"^reply_to: 'nope' is not an email address"),
    ],
)
def test_constant_addresses_are_checked(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(TemplateError, match=expected):
        compile_(**changes)


# ------------------------------------------------------------------------------ render


def test_render_fills_every_field() -> None:
    compiled = compile_(
        reply_to="Help <help@shop.example>",
        headers={"X-City": "{{ city }}", "List-Id": "<news.shop.example>"},
    )
    msg = compiled.render(BOB)
    assert msg.row == 3
    assert msg.campaign_id == "spring-sale"
    assert msg.recipient == "bob@example.com"
    assert msg.sender == "Shop <news@shop.example>"
    assert msg.subject == "Hi Bob"
    assert msg.text == "Hello Bob\n"  # the trailing line break is kept
    assert msg.html == "<p>Hello Bob</p>"
    assert msg.reply_to == "Help <help@shop.example>"
    assert msg.headers == {"X-City": "Köln", "List-Id": "<news.shop.example>"}
    assert msg.message_id == message_id("spring-sale", 3, "news@shop.example")
    assert msg.mime is None


def test_email_is_a_variable_and_wins_over_a_var_of_that_name() -> None:
    rec = Recipient(1, "ann@example.com", {"email": "other@example.com", "name": "Ann"})
    assert compile_(subject="For {{ email }}").render(rec).subject == "For ann@example.com"


def test_strings_without_template_syntax_are_used_as_they_are() -> None:
    constant = compile_(subject="100% { off }", text="a } b {\r\n", html="<b>&amp; {")
    msg = constant.render(Recipient(1, "a@example.com"))  # no vars needed
    assert (msg.subject, msg.text, msg.html) == ("100% { off }", "a } b {\r\n", "<b>&amp; {")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"subject": "Hi {{ first_name }}"}, "missing variable 'first_name' in subject"),
        ({"text": "x {{ first_name }}"}, "missing variable 'first_name' in text"),
        ({"html": "<p>{{ first_name }}</p>"}, "missing variable 'first_name' in html"),
        ({"headers": {"X-A": "{{ first_name }}"}}, "missing variable 'first_name' in headers.X-A"),
        ({"sender": "{{ brand }} <a@b.example>"}, "missing variable 'brand' in from"),
        ({"reply_to": "{{ team }}@b.example"}, "missing variable 'team' in reply_to"),
    ],
)
def test_missing_variable(changes: dict[str, Any], expected: str) -> None:
    compiled = compile_(**changes)
    with pytest.raises(TemplateError) as info:
        compiled.render(BOB)
    assert str(info.value) == expected


def test_jinja_globals_and_filters_work_and_vars_win_over_globals() -> None:
    compiled = compile_(
        subject="{% for i in range(3) %}{{ i }}{% endfor %} {{ name | upper }}",
        text="{% set n = namespace(x=1) %}{{ n.x }} {{ dict }}\n",
    )
    msg = compiled.render(Recipient(1, "a@example.com", {"name": "ann", "dict": "mine"}))
    assert msg.subject == "012 ANN"
    assert msg.text == "1 mine\n"


def test_defined_test_does_not_need_the_variable() -> None:
    compiled = compile_(subject="Hi{% if first_name is defined %} {{ first_name }}{% endif %}")
    assert compiled.render(BOB).subject == "Hi"


@pytest.mark.parametrize(
    ("template", "vars_", "expected"),
    [
        ("{{ user.name }}", {"user": {}}, r"^subject: 'dict object' has no attribute 'name'"),
        ("{{ 1 / n }}", {"n": 0}, r"^subject: ZeroDivisionError"),
        ("{{ ''.__class__.__mro__ }}", {}, r"^subject: .*unsafe"),  # the sandbox
    ],
)
def test_other_render_failures_are_template_errors(
    template: str, vars_: dict[str, Any], expected: str
) -> None:
    compiled = compile_(subject=template)
    with pytest.raises(TemplateError, match=expected):
        compiled.render(Recipient(1, "a@example.com", vars_))


INJECTIONS = ["x\r\nBcc: evil@x", "x\nBcc: evil@x", "x\rBcc: evil@x", "x\x00y"]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"subject": "Hi {{ v }}"}, "subject"),
        ({"headers": {"X-Name": "{{ v }}"}}, "headers.X-Name"),
        ({"sender": "{{ v }} <news@shop.example>"}, "from"),
        ({"reply_to": "{{ v }} <help@shop.example>"}, "reply_to"),
    ],
)
def test_header_injection_through_a_variable_is_refused(
    value: str, changes: dict[str, Any], field: str
) -> None:
    compiled = compile_(**changes)
    with pytest.raises(TemplateError, match=f"^header injection in {re.escape(field)}"):
        compiled.render(Recipient(1, "a@example.com", {"name": "Ann", "v": value}))


@pytest.mark.parametrize("email", ["a@example.com\r\nBcc: evil@x", "a@example.com\n"])
def test_header_injection_through_the_address_is_refused(email: str) -> None:
    with pytest.raises(TemplateError, match=r"^header injection in to"):
        compile_().render(Recipient(1, email, {"name": "Ann"}))


def test_line_breaks_from_variables_are_fine_in_bodies() -> None:
    compiled = compile_(text="Hello {{ v }}\n", html="<p>{{ v }}</p>")
    msg = compiled.render(Recipient(1, "a@example.com", {"name": "Ann", "v": "x\r\nBcc: y"}))
    assert msg.text == "Hello x\r\nBcc: y\n"
    assert msg.html == "<p>x\r\nBcc: y</p>"


def test_html_is_autoescaped_text_and_headers_are_not() -> None:
    compiled = compile_(
        subject="{{ name }}", text="{{ name }}", html="<p>{{ name }}</p>",
        headers={"X-Name": "{{ name }}"},
    )  # fmt: skip
    msg = compiled.render(Recipient(1, "a@example.com", {"name": "<b>Tom & \"Jerry\"</b>"}))
    assert msg.html == "<p>&lt;b&gt;Tom &amp; &#34;Jerry&#34;&lt;/b&gt;</p>"
    assert msg.text == msg.subject == msg.headers["X-Name"] == '<b>Tom & "Jerry"</b>'


def test_html_safe_filter_still_works() -> None:
    compiled = compile_(html="<p>{{ name | safe }}</p>")
    assert compiled.render(Recipient(1, "a@example.com", {"name": "<b>x</b>"})).html == (
        "<p><b>x</b></p>"
    )


def test_templated_sender_name_keeps_the_fixed_address() -> None:
    compiled = compile_(sender="{{ brand }} <news@shöp.example>")
    rec = Recipient(5, "a@example.com", {"brand": "Ünï", "name": "A"})
    msg = compiled.render(rec)
    assert msg.sender == "Ünï <news@shöp.example>"
    assert msg.from_address == "news@xn--shp-tna.example"
    assert msg.message_id == message_id("spring-sale", 5, "news@xn--shp-tna.example")
    # the address is fixed when the campaign is compiled: data can change the name only
    with pytest.raises(TemplateError, match=r"^from: the address cannot be a template"):
        compile_(sender="{{ brand }} <news@{{ domain }}>")
    with pytest.raises(TemplateError, match=r"^from: the address cannot be a template"):
        compile_(sender="{{ sender }}")


# -------------------------------------------------------------------------- message id


def test_message_id_is_stable_and_distinct() -> None:
    mid = message_id("spring-sale", 7, "Shop <news@shop.example>")
    assert re.fullmatch(r"<spring-sale\.7\.[0-9a-f]{12}@shop\.example>", mid)
    assert mid == message_id("spring-sale", 7, "news@shop.example")  # same inputs, same id
    assert mid != message_id("spring-sale", 8, "news@shop.example")
    assert mid != message_id("spring-sale-2", 7, "news@shop.example")
    # ids that sanitize to the same text still differ by their hash
    assert message_id("a/b", 1, "n@x.example") != message_id("a b", 1, "n@x.example")
    assert message_id("a/b", 1, "n@x.example").startswith("<a-b.1.")
    assert message_id("", 1, "n@x.example").startswith("<campaign.1.")
    assert message_id("c", 1, "n@exämple.de").endswith("@xn--exmple-cua.de>")


def test_message_id_needs_a_sender_address() -> None:
    with pytest.raises(TemplateError, match=r"^from: "):
        message_id("c", 1, "no address")


def parse_message_id(mid: str) -> EmailMessage:
    raw = f"Message-ID: {mid}\r\n\r\n".encode("ascii")
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


@settings(max_examples=200, deadline=None)
@given(campaign_id=st.text(max_size=100), row=st.integers(-(10**12), 10**12))
def test_message_id_is_a_valid_msg_id_for_any_campaign_id(campaign_id: str, row: int) -> None:
    mid = message_id(campaign_id, row, "news@shop.example")
    assert mid.isascii() and len(mid) <= 120
    header = parse_message_id(mid)["Message-ID"]
    assert not header.defects
    assert str(header) == mid
    assert mid == message_id(campaign_id, row, "news@shop.example")


# -------------------------------------------------------------------------- build_mime


def test_render_then_build_mime_round_trips() -> None:
    compiled = compile_(
        subject="Grüße, {{ name }}!", reply_to="Help <help@shop.example>",
        headers={"X-City": "{{ city }}"},
    )  # fmt: skip
    msg = compiled.render(BOB)
    raw = compiled.build_mime(msg)
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    assert str(parsed["Subject"]) == "Grüße, Bob!"
    assert str(parsed["X-City"]) == "Köln"
    assert parsed["Message-ID"] == msg.message_id
    assert str(parsed["From"]) == "Shop <news@shop.example>"
    assert str(parsed["To"]) == "bob@example.com"
    assert str(parsed["Reply-To"]) == "Help <help@shop.example>"
    assert parsed["Date"].datetime.timestamp() == 1_700_000_000
    text, html = parsed.iter_parts()
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    assert text.get_content() == "Hello Bob\r\n"
    assert html.get_content() == "<p>Hello Bob</p>\r\n"


def test_build_mime_of_a_changed_message_encodes_the_change() -> None:
    # the skeleton pre-encodes constants, but never at the cost of a stale header
    compiled = compile_(subject="Constant", headers={"X-A": "one"})
    msg = compiled.render(BOB)
    msg.subject, msg.headers = "Changed", {"X-A": "two"}
    raw = compiled.build_mime(msg)
    assert b"Subject: Changed\r\n" in raw and b"X-A: two\r\n" in raw


@settings(max_examples=200, deadline=None)
@given(value=st.text(st.characters(codec="utf-8"), max_size=40))
def test_any_variable_value_is_sent_exactly_or_refused(value: str) -> None:
    compiled = compile_(
        subject="Hi {{ v }}", headers={"X-V": "{{ v }}"}, text="{{ v }}", html="<i>{{ v }}</i>"
    )
    rec = Recipient(1, "a@example.com", {"v": value})
    if "\r" in value or "\n" in value or "\x00" in value:
        with pytest.raises(TemplateError, match=r"^header injection in subject"):
            compiled.render(rec)
        return
    parsed = BytesParser(policy=email.policy.default).parsebytes(
        compiled.build_mime(compiled.render(rec))
    )
    assert isinstance(parsed, EmailMessage)
    assert list(parsed.keys()) == [
        "From", "To", "Subject", "Date", "Message-ID", "X-V", "MIME-Version", "Content-Type"
    ]  # fmt: skip
    assert str(parsed["Subject"]) == f"Hi {value}"
    assert str(parsed["X-V"]) == value
    text, html = parsed.iter_parts()
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    assert text.get_content().replace("\r\n", "\n") == (value + "\n" if value else "")
    assert html.get_content().replace("\r\n", "\n") == f"<i>{escape(value)}</i>\n"


def test_one_click_unsubscribe_headers_per_recipient() -> None:
    """RFC 8058 / Gmail-Yahoo bulk-sender rules: a per-recipient List-Unsubscribe URL and
    mailto, plus List-Unsubscribe-Post, as campaign headers."""
    import email
    import email.policy

    from config.schema import CampaignSpec, Recipient
    from workers.templates import CompiledCampaign

    spec = CampaignSpec(
        id="c1", provider="p", sender="Shop <news@shop.test>", subject="Hi", text="x",
        headers={"List-Unsubscribe": "<https://shop.test/u/{{ token }}>, "
                                     "<mailto:unsub@shop.test?subject={{ token }}>",
                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    compiled = CompiledCampaign.compile(spec)
    for token in ("abc123", "zz9"):
        msg = compiled.render(Recipient(1, "a@example.test", {"token": token}))
        parsed = email.message_from_bytes(compiled.build_mime(msg),
                                          policy=email.policy.default)
        assert parsed["List-Unsubscribe"] == (f"<https://shop.test/u/{token}>, "
                                              f"<mailto:unsub@shop.test?subject={token}>")
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
