"""The fast MIME builder, proved against the stdlib parser (``policy.default``).

Property tests feed arbitrary Unicode into every header-bound value and both bodies and
check what a receiving parser sees: exactly the headers we meant, the same subject,
display names, addresses and bodies back, and no line over the RFC 5322 limits.
"""

from __future__ import annotations

import base64
import email.policy
import re
from datetime import UTC, datetime
from email import errors
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.errors import TemplateError
from workers.mime import (
    MimeSkeleton,
    ascii_address,
    check_header_name,
    format_date,
    parse_address,
    transfer_encoding,
)
from workers.providers.base import OutgoingMessage

NOW = 1_700_000_000.25
BOUNDARY = "=_test_boundary_0123456789"
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------- helpers


def parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def make(
    *,
    sender: str = "News <news@example.com>",
    recipient: str = "bob@example.com",
    subject: str = "Hello",
    text: str | None = "Hi\n",
    html: str | None = None,
    reply_to: str | None = None,
    headers: dict[str, str] | None = None,
    message_id: str = "<c1.7.abcdef012345@example.com>",
) -> OutgoingMessage:
    return OutgoingMessage(
        row=7,
        campaign_id="c1",
        recipient=recipient,
        sender=sender,
        subject=subject,
        message_id=message_id,
        text=text,
        html=html,
        reply_to=reply_to,
        headers=headers or {},
        # given, so that a bad From is left for the builder to refuse (the property
        # tests below); the worker's messages always carry the compiled address
        from_address="news@example.com",
    )


def build(msg: OutgoingMessage, **skeleton: Any) -> bytes:
    return MimeSkeleton(boundary=BOUNDARY, clock=lambda: NOW, **skeleton).build(msg)


def canonical_body(text: str) -> str:
    """What a body means once sent: lines ending in LF, the last one terminated."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text + "\n" if text and not text.endswith("\n") else text


def header_section(raw: bytes) -> list[str]:
    """The raw header fields of the top level, each unfolded (CRLF removed)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    fields: list[str] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def raw_value(raw: bytes, name: str) -> str:
    values = [f.split(":", 1)[1] for f in header_section(raw) if f.split(":")[0] == name]
    assert len(values) == 1, values
    return values[0].lstrip(" ")


def decode_rfc2047(words: str) -> str:
    """RFC 2047 decoding by the stdlib's compat32 decoder, which follows section 6.2
    (whitespace between adjacent encoded words is not content)."""
    return str(make_header(decode_header(words)))


def check_display_name(raw: bytes, name: str, parsed: str, expected: Address) -> None:
    value = raw_value(raw, name)
    tail = f" <{expected.addr_spec}>"
    phrase = value.removesuffix(tail) if value.endswith(tail) else ""
    if "=?" in phrase:
        assert decode_rfc2047(phrase) == expected.name
        # The default-policy parser reads a phrase as RFC 5322 words: it keeps the
        # folding space between adjacent encoded words (it drops it in unstructured
        # headers), and inside a decoded word it turns a space or tab plus any
        # whitespace after it (str.isspace(): also \x0b, \x1c-\x1f, \x85, ...) into
        # one space (_header_value_parser.get_fws).
        words = re.findall(r"=\?utf-8\?b\?[A-Za-z0-9+/=]*\?=", phrase)
        stdlib_view = [re.sub(r"[ \t]\s*", " ", decode_rfc2047(w)) for w in words]
        assert parsed == " ".join(stdlib_view)
    else:
        assert parsed == expected.name


def check_lines(raw: bytes) -> None:
    assert raw.isascii()
    assert raw.endswith(b"\r\n")
    # no bare CR or LF anywhere: every line ends in CRLF
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    for line in head.split("\r\n"):
        if len(line) > 78:
            # only when there was no place to fold: after the field name (or the
            # continuation's indent) the line is one unbreakable token
            rest = line.lstrip(" ") if line[0] == " " else line.split(": ", 1)[1]
            assert " " not in rest.strip(" "), line


def check_header_defects(msg: EmailMessage, originals: dict[str, str]) -> None:
    """The parser's only complaint may be about control characters we were given (it
    flags them after decoding; they travel safely inside encoded words)."""
    for name in msg:
        for defect in msg[name].defects:
            assert isinstance(defect, errors.NonPrintableDefect), (name, defect)
            found = defect.non_printables  # type: ignore[attr-defined]  # not in typeshed
            assert all(c in originals[name] for c in found), (name, defect)


def check_parts(msg: EmailMessage, text: str | None, html: str | None) -> None:
    if text is not None and html is not None:
        assert msg.get_content_type() == "multipart/alternative"
        parts = list(msg.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        bodies = [text, html]
    else:
        assert not msg.is_multipart()
        assert msg.get_content_type() == ("text/plain" if text is not None else "text/html")
        parts = [msg]
        bodies = [text if text is not None else html or ""]
    for part, body in zip(parts, bodies, strict=True):
        assert isinstance(part, EmailMessage)
        assert part.get_content_charset() == "utf-8"
        assert not part.defects
        cte = part["Content-Transfer-Encoding"]
        assert cte in ("7bit", "quoted-printable", "base64")
        content = part.get_content()
        assert isinstance(content, str)
        assert content.replace("\r\n", "\n") == canonical_body(body)
        payload = part.get_payload()
        assert isinstance(payload, str)
        if cte == "quoted-printable":
            assert max(len(line) for line in payload.split("\r\n")) <= 76
        if cte == "base64":
            assert max(len(line) for line in payload.split("\r\n")) <= 76


def expected_names(msg: OutgoingMessage) -> list[str]:
    names = ["From", "To", "Subject", "Date", "Message-ID"]
    if msg.reply_to is not None:
        names.append("Reply-To")
    names += list(msg.headers)
    names += ["MIME-Version", "Content-Type"]
    if msg.text is None or msg.html is None:
        names.append("Content-Transfer-Encoding")
    return names


# --------------------------------------------------------------------------- strategies

# header-bound text: anything but CR, LF, NUL (surrogates cannot be UTF-8 encoded)
HEADER_CHARS = st.characters(codec="utf-8", exclude_characters="\r\n\x00")
TRICKY = st.sampled_from(
    [" ", "  ", "\t", "=?", "?=", "=?utf-8?b?QQ==?=", '"', "\\", "<", ">", ",", ";", ":",
     "x" * 90, "é", "😀", "\x0b", "\x0c", "\x85", "\u2028", "\x1f", "\x7f"]
)  # fmt: skip
HEADER_VALUE = st.lists(st.one_of(st.text(HEADER_CHARS, max_size=60), TRICKY), max_size=6).map(
    "".join
)
WORDY = st.lists(
    st.sampled_from(["Hello", "world", "a", "newsletter", " ", "x" * 40, "=?utf-8?q?A?=", "=?"]),
    max_size=30,
)
ASCII_VALUE = WORDY.map(" ".join)

BODY = st.lists(
    st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=80),
        st.text("ab .=", max_size=40),
        st.sampled_from(["\r\n", "\n", "\r", "\r\r\n", " \n", "\t\n", ".\n", "From x\n",
                         "=\n", "x" * 1200, "é" * 50, "Привет мир ", "\x00"]),
    ),
    max_size=12,
).map("".join)  # fmt: skip

LOCAL_PART = st.one_of(
    st.from_regex(r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]{1,12}(\.[A-Za-z0-9_-]{1,8}){0,2}", fullmatch=True),
    st.text(" abcxyz.,@<>()[]:;", min_size=1, max_size=10).map(lambda s: f'"{s}"'),
)
DOMAINS = st.sampled_from(
    [
        ("example.com", "example.com"),
        ("Mail.Example.ORG", "Mail.Example.ORG"),  # ASCII domains are kept as given
        ("exämple.de", "xn--exmple-cua.de"),
        ("mail.bücher.example", "mail.xn--bcher-kva.example"),
        ("[192.0.2.1]", "[192.0.2.1]"),
    ]
)


class Address(NamedTuple):
    value: str  # what the message gives
    name: str  # display name expected back
    username: str  # local part expected back (unquoted)
    domain: str  # domain expected back (ASCII)
    addr_spec: str  # the address as written in the header


@st.composite
def addresses(draw: st.DrawFn) -> Address:
    local = draw(LOCAL_PART)
    domain, ascii_domain = draw(DOMAINS)
    name = draw(st.one_of(st.just(""), HEADER_VALUE, ASCII_VALUE))
    addr = f"{local}@{domain}"
    username = local[1:-1] if local.startswith('"') else local
    if not name:
        value = draw(st.sampled_from([addr, f"<{addr}>"]))
    else:
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        value = f"{quoted} <{addr}>"
    return Address(value, name, username, ascii_domain, f"{local}@{ascii_domain}")


HEADER_NAMES = st.from_regex(r"X-[A-Za-z0-9-]{1,30}", fullmatch=True)
CUSTOM_HEADERS = st.dictionaries(HEADER_NAMES, HEADER_VALUE, max_size=3).filter(
    lambda d: len({k.lower() for k in d}) == len(d)
)
BODIES = st.one_of(
    st.tuples(BODY, BODY),
    st.tuples(BODY, st.none()),
    st.tuples(st.none(), BODY),
)

# ------------------------------------------------------------------------- properties


@PROPERTY
@given(
    sender=addresses(),
    recipient=addresses(),
    reply_to=st.one_of(st.none(), addresses()),
    subject=st.one_of(HEADER_VALUE, ASCII_VALUE),
    headers=CUSTOM_HEADERS,
    bodies=BODIES,
    static=st.booleans(),
)
def test_stdlib_parser_reads_back_exactly_what_was_built(
    sender: Address,
    recipient: Address,
    reply_to: Address | None,
    subject: str,
    headers: dict[str, str],
    bodies: tuple[str | None, str | None],
    static: bool,
) -> None:
    text, html = bodies
    msg = make(
        sender=sender.value,
        recipient=recipient.value,
        reply_to=None if reply_to is None else reply_to.value,
        subject=subject,
        headers=headers,
        text=text,
        html=html,
    )
    # pre-encoded (static) values and values encoded per message give the same bytes
    skeleton = (
        {"sender": msg.sender, "reply_to": msg.reply_to, "subject": subject, "headers": headers}
        if static
        else {}
    )
    raw = build(msg, **skeleton)
    assert raw == build(msg)
    check_lines(raw)

    parsed = parse(raw)
    assert not parsed.defects
    assert list(parsed.keys()) == expected_names(msg)  # nothing injected, nothing lost
    originals = {"Subject": subject, **headers}
    for header, spec in (("From", sender), ("To", recipient), ("Reply-To", reply_to)):
        if spec is not None:
            originals[header] = spec.name
    check_header_defects(parsed, originals)

    assert str(parsed["Subject"]) == subject
    for name, value in headers.items():
        assert str(parsed[name]) == value
    assert parsed["Message-ID"] == msg.message_id
    assert parsed["Date"].datetime == datetime.fromtimestamp(int(NOW), UTC)
    assert parsed["MIME-Version"] == "1.0"

    for header, spec in (("From", sender), ("To", recipient), ("Reply-To", reply_to)):
        if spec is None:
            continue
        (address,) = parsed[header].addresses
        assert (address.username, address.domain) == (spec.username, spec.domain)
        check_display_name(raw, header, address.display_name, spec)

    check_parts(parsed, text, html)


FIELDS = ["subject", "sender", "recipient", "reply_to", "header", "sender_name"]


@PROPERTY
@given(
    field=st.sampled_from(FIELDS),
    before=HEADER_VALUE,
    breaks=st.text("\r\n\x00", min_size=1, max_size=3),
    after=st.one_of(HEADER_VALUE, st.just("Bcc: evil@example.net")),
)
def test_cr_lf_nul_in_any_header_value_is_refused(
    field: str, before: str, breaks: str, after: str
) -> None:
    bad = before + breaks + after
    by_field: dict[str, dict[str, Any]] = {
        "subject": {"subject": bad},
        "sender": {"sender": f"news@example.com{breaks}{after}"},
        "sender_name": {"sender": f'"{before}{breaks}" <news@example.com>'},
        "recipient": {"recipient": f"bob@example.com{breaks}{after}"},
        "reply_to": {"reply_to": bad},
        "header": {"headers": {"X-Campaign": bad}},
    }
    values = by_field[field]
    msg = make(**values)
    with pytest.raises(TemplateError, match="header injection"):
        build(msg)
    # and a skeleton cannot be compiled with such a constant either
    if field != "recipient":
        with pytest.raises(TemplateError, match="header injection"):
            MimeSkeleton(**values)


@PROPERTY
@given(body=BODY, boundary_inside=st.booleans())
def test_body_never_contains_the_boundary(body: str, boundary_inside: bool) -> None:
    if boundary_inside:
        body = f"{body}\n--{BOUNDARY}\n--{BOUNDARY}--\n"
    raw = build(make(text=body, html=body))
    delimiters = [line for line in raw.split(b"\r\n") if line.startswith(b"--" + BOUNDARY.encode())]
    assert delimiters == [b"--" + BOUNDARY.encode()] * 2 + [b"--" + BOUNDARY.encode() + b"--"]
    check_parts(parse(raw), body, body)


# --------------------------------------------------------------------------- examples


def test_multipart_message_bytes() -> None:
    raw = build(make(subject="Hi Bob", text="Hello Bob\n", html="<p>Hello Bob</p>"))
    assert raw == (
        b"From: News <news@example.com>\r\n"
        b"To: bob@example.com\r\n"
        b"Subject: Hi Bob\r\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
        b"Message-ID: <c1.7.abcdef012345@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/alternative;\r\n"
        b' boundary="=_test_boundary_0123456789"\r\n'
        b"\r\n"
        b"--=_test_boundary_0123456789\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"Hello Bob\r\n"
        b"\r\n"
        b"--=_test_boundary_0123456789\r\n"
        b'Content-Type: text/html; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"<p>Hello Bob</p>\r\n"
        b"\r\n"
        b"--=_test_boundary_0123456789--\r\n"
    )


def test_single_part_html_with_reply_to_and_custom_headers() -> None:
    msg = make(
        text=None,
        html="<p>x</p>",
        reply_to="Support <help@example.com>",
        headers={"List-Unsubscribe": "<https://example.com/u/1>", "X-Tag": "a"},
    )
    raw = build(msg)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.endswith(
        b"Reply-To: Support <help@example.com>\r\n"
        b"List-Unsubscribe: <https://example.com/u/1>\r\n"
        b"X-Tag: a\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: text/html; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: 7bit"
    )
    assert body == b"<p>x</p>\r\n"


def test_non_ascii_subject_is_encoded_words_folded_under_78() -> None:
    subject = "Grüße aus Köln – " * 8
    raw = build(make(subject=subject))
    lines = raw_lines_of(raw, "Subject")
    assert len(lines) > 2
    assert all(len(line) <= 78 for line in lines)
    assert all(re.fullmatch(r"(Subject:)? =\?utf-8\?b\?[A-Za-z0-9+/=]+\?=", ln) for ln in lines)
    assert all(len(w) <= 75 for w in re.findall(r"=\?.*?\?=", "".join(lines)))
    assert str(parse(raw)["Subject"]) == subject


def raw_lines_of(raw: bytes, name: str) -> list[str]:
    lines = raw.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
    end = start + 1
    while end < len(lines) and lines[end].startswith(" "):
        end += 1
    return lines[start:end]


def test_long_ascii_subject_is_folded_at_spaces_not_encoded() -> None:
    subject = " ".join(["newsletter"] * 20)
    lines = raw_lines_of(build(make(subject=subject)), "Subject")
    assert len(lines) == 3
    assert all(len(line) <= 78 for line in lines)
    assert "=?" not in "".join(lines)


def test_ascii_words_longer_than_a_line_stay_raw_up_to_998() -> None:
    url = "<https://example.com/unsubscribe?token=" + "t" * 100 + ">"
    raw = build(make(headers={"List-Unsubscribe": url}))
    assert raw_lines_of(raw, "List-Unsubscribe") == [f"List-Unsubscribe: {url}"]
    huge = "y" * 2000
    raw = build(make(subject=huge))  # cannot fit a line at all: encoded words instead
    check_lines(raw)
    assert str(parse(raw)["Subject"]) == huge


def test_display_names() -> None:
    cases = {
        "News <n@example.com>": "From: News <n@example.com>",
        '"Smith, John" <n@example.com>': 'From: "Smith, John" <n@example.com>',
        '"a \\"b\\" \\\\ c" <n@example.com>': 'From: "a \\"b\\" \\\\ c" <n@example.com>',
        "Jürgen <n@exämple.de>": "From: =?utf-8?b?SsO8cmdlbg==?= <n@xn--exmple-cua.de>",
        "n@example.com": "From: n@example.com",
        "<n@example.com>": "From: n@example.com",
    }
    for sender, line in cases.items():
        assert raw_lines_of(build(make(sender=sender)), "From") == [line]


@pytest.mark.parametrize(
    ("name", "own_line"),
    [("Ü" + "x" * 88, True), ("Ünïcödé Newsletter Department of Everything " * 2, False)],
)
def test_long_encoded_display_name_is_folded(name: str, own_line: bool) -> None:
    raw = build(make(sender=f'"{name}" <news@example.com>'))
    lines = raw_lines_of(raw, "From")
    assert len(lines) > 1
    assert all(len(line) <= 78 for line in lines)
    assert (lines[-1] == " <news@example.com>") is own_line
    assert lines[-1].endswith(" <news@example.com>")
    assert decode_rfc2047("".join(lines)[len("From: ") : -len(" <news@example.com>")]) == name


def test_encoded_words_split_only_between_characters() -> None:
    subject = "😀" * 40 + "é" * 40
    raw = build(make(subject=subject))
    for word in re.findall(r"=\?utf-8\?b\?([A-Za-z0-9+/=]+)\?=", raw.decode()):
        base64.b64decode(word).decode("utf-8")  # each word decodes on its own
    assert str(parse(raw)["Subject"]) == subject


@pytest.mark.parametrize(
    ("body", "cte"),
    [
        ("plain ascii\n", "7bit"),
        ("", "7bit"),
        ("x" * 998, "7bit"),
        ("x" * 999, "quoted-printable"),
        ("nul \x00 byte", "quoted-printable"),
        ("Sehr geehrte Damen und Herren, vielen Dank für Ihre Bestellung.\n", "quoted-printable"),
        ("Привет, как дела?\n", "base64"),
        ("日本語のテキスト", "base64"),
    ],
)
def test_transfer_encoding_rule(body: str, cte: str) -> None:
    assert transfer_encoding(body) == cte
    check_parts(parse(build(make(text=body))), body, None)


@pytest.mark.parametrize("blank", [" ", "\t"])
def test_quoted_printable_lines_stay_within_76_with_a_trailing_blank(blank: str) -> None:
    # binascii.b2a_qp alone makes this line 77 characters long: "=C3=A9" * 12 + "xx=20"
    # (the ASCII lines keep the body quoted-printable rather than base64)
    body = "é" * 12 + "xx" + blank + "\n" + "ascii\n" * 30
    raw = build(make(text=body))
    lines = raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n")
    escaped_blank = f"={ord(blank):02X}".encode()
    assert lines[:3] == [b"=C3=A9" * 12 + b"xx=", escaped_blank, b"ascii"]
    check_parts(parse(raw), body, None)


def test_body_containing_the_boundary_is_quoted_printable() -> None:
    body = f"before\n--{BOUNDARY}\nafter\n"
    assert transfer_encoding(body) == "7bit"
    assert transfer_encoding(body, BOUNDARY) == "quoted-printable"
    parsed = parse(build(make(text=body, html="<p>x</p>")))
    check_parts(parsed, body, "<p>x</p>")


def test_line_ends_are_normalized_and_a_final_break_added() -> None:
    raw = build(make(text="a\rb\nc\r\nd"))
    assert raw.endswith(b"\r\n\r\na\r\nb\r\nc\r\nd\r\n")


def test_random_boundaries_differ_and_are_validated() -> None:
    assert MimeSkeleton().boundary != MimeSkeleton().boundary
    skeleton = MimeSkeleton()
    assert skeleton.boundary.startswith("=_")
    raw = skeleton.build(make(text="x", html="y"))
    check_lines(raw)
    check_parts(parse(raw), "x", "y")
    longest = "=_" + "b" * 64
    raw = MimeSkeleton(boundary=longest).build(make(text="x", html="y"))
    check_lines(raw)
    check_parts(parse(raw), "x", "y")
    for bad in ("plain", "=_", "=_bad space", longest + "b"):
        with pytest.raises(ValueError, match="boundary"):
            MimeSkeleton(boundary=bad)


def test_date_is_cached_per_second() -> None:
    times = iter([100.1, 100.9, 101.0])
    skeleton = MimeSkeleton(clock=lambda: next(times))
    dates = [raw_value(skeleton.build(make()), "Date") for _ in range(3)]
    assert dates == [format_date(100)] * 2 + [format_date(101)]
    assert format_date(0) == "Thu, 01 Jan 1970 00:00:00 +0000"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("X Foo", "invalid header name"),
        ("X:Foo", "invalid header name"),
        ("", "invalid header name"),
        ("X-Ü", "invalid header name"),
        ("X" * 77, "longer than"),
        ("subject", "cannot be set"),
        ("Content-Type", "cannot be set"),
        ("Reply-To", "reply_to"),
    ],
)
def test_bad_header_names(name: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason):
        check_header_name(name)
    with pytest.raises(TemplateError, match=reason):
        build(make(headers={name: "x"}))


def test_longest_header_name_with_encoded_value() -> None:
    name = "X-" + "n" * 74
    raw = build(make(headers={name: "é" * 100}))
    check_lines(raw)
    assert str(parse(raw)[name]) == "é" * 100


@pytest.mark.parametrize(
    "addr",
    ["", "no-at-sign", "a@", "@b.com", "a b@c.com", "a@b c", "a@b.com, c@d.com",
     "a@b..c", "Name <a@b.com", "ü b@example.com", "ü<@example.com"],
)  # fmt: skip
def test_bad_addresses_are_refused(addr: str) -> None:
    with pytest.raises(TemplateError, match=r"^to: "):
        build(make(recipient=addr))
    with pytest.raises(TemplateError):
        ascii_address(addr)


def test_utf8_local_part_only_for_the_recipient() -> None:
    # RFC 6532: the To header carries it raw; the SMTP provider sends it only over
    # SMTPUTF8. A sender or Reply-To with one is refused (it would need SMTPUTF8 for
    # every recipient).
    raw = build(make(recipient="jürgen@bücher.example"))
    assert "To: <jürgen@xn--bcher-kva.example>\r\n".encode() in raw
    with pytest.raises(TemplateError, match="needs SMTPUTF8"):
        ascii_address("ü@example.com")
    with pytest.raises(TemplateError, match=r"^reply_to: .*needs SMTPUTF8"):
        build(make(reply_to="ü@example.com"))


def test_parse_address() -> None:
    assert parse_address(" a@b.com ") == ("", "a@b.com")
    assert parse_address('"Q \\"x\\" <y>" <"a<b"@c.d>') == ('Q "x" <y>', '"a<b"@c.d')
    assert ascii_address('"a<b"@c.d') == '"a<b"@c.d'
    assert ascii_address("a@exämple.de") == "a@xn--exmple-cua.de"


def test_no_body_and_bad_message_id_are_refused() -> None:
    with pytest.raises(TemplateError, match="no body"):
        build(make(text=None, html=None))
    for bad in ("<a b@c>", "a@c", "<a@c", "a@c>", "<a@c>\x01", "<é@c>"):
        with pytest.raises(TemplateError, match="Message-ID"):
            build(make(message_id=bad))


@pytest.mark.parametrize(
    "changes",
    [{"text": "bad \ud800 text"}, {"subject": "\udcff"}, {"sender": "\ud800 <a@b.example>"}],
)
def test_lone_surrogate_is_a_template_error(changes: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match="not valid Unicode"):
        build(make(**changes))
    static = {"sender" if k == "sender" else "subject": v for k, v in changes.items()}
    with pytest.raises(TemplateError, match="not valid Unicode"):
        MimeSkeleton(**static)
