"""A fast MIME builder: compile a campaign's constant parts once, splice bytes per message.

The stdlib ``email`` object model costs 0.7-2.5 ms per multipart message
(docs/architecture.md, decision 4), more than everything else a worker does per recipient. A
:class:`MimeSkeleton` pre-encodes what is the same for every recipient of a campaign
(MIME-Version, the boundary and delimiters, static headers, part headers) and per message
only encodes the variable headers and bodies, with C-speed primitives (``str.encode``,
``binascii``), and joins the pieces.

Output rules (all proved against the stdlib parser by ``tests/unit/test_mime.py``):

* CRLF line ends; headers From, To, Subject, Date, Message-ID, optional Reply-To, the
  custom headers in their given order, MIME-Version, then Content-Type (and, for a
  single-part message, Content-Transfer-Encoding).
* Text and HTML give ``multipart/alternative`` (text first); one of them gives a single
  ``text/plain`` or ``text/html`` part, always ``charset="utf-8"``.
* Unstructured header values (Subject, custom headers) stay as they are when they are
  printable ASCII without leading/trailing blanks or ``=?``, folded at spaces so lines
  keep to 78 characters where possible; anything else becomes RFC 2047 ``B`` encoded
  words of at most 75 characters, one per line. Whitespace between adjacent encoded
  words is not content (RFC 2047 6.2), so each word carries its own spaces.
* Address headers: the address stays ASCII (a non-ASCII domain is IDNA-encoded; a
  non-ASCII local part needs SMTPUTF8 and is refused); the display name is an atom
  phrase, a quoted string, or encoded words, whichever is exact.
* CR, LF or NUL in any header-bound value is refused with
  :class:`~config.errors.TemplateError`, never encoded: it can never inject a header.
* A body is a sequence of lines: line ends become CRLF and a missing final line break
  is added. The transfer encoding is chosen by one rule: ``7bit`` when the body is
  ASCII, has no NUL, no line over 998 octets and does not contain the boundary;
  otherwise ``quoted-printable`` when at most 1/6 of its UTF-8 octets are non-ASCII
  (mostly Latin text, where QP stays readable and compact); otherwise ``base64``
  (Cyrillic, Greek, CJK, emoji: QP would nearly triple their size, base64 adds 37%).
* The boundary is random per skeleton and starts with ``=_``, a sequence that neither
  quoted-printable (``=`` is always ``=3D``) nor base64 output can contain; a 7bit body
  that happens to contain the boundary is sent as quoted-printable instead, so the
  boundary never has to be regenerated.
"""

from __future__ import annotations

import binascii
import re
import secrets
import time
from collections.abc import Callable, Mapping

from config.errors import TemplateError
from workers.providers.base import OutgoingMessage

__all__ = [
    "MAX_HEADER_NAME",
    "RESERVED_HEADERS",
    "MimeSkeleton",
    "ascii_address",
    "ascii_domain",
    "check_header_name",
    "format_address",
    "format_date",
    "parse_address",
    "sender_address",
    "transfer_encoding",
]

#: Headers the builder writes itself; a campaign may not set them as custom headers.
#: Reply-To is among them because it has its own field (``reply_to``).
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "reply-to",
    }
)

#: Longest custom header name: "Name:" plus a shortest encoded word must fit in a line.
MAX_HEADER_NAME = 76

_LINE = 78  # RFC 5322 2.1.1: SHOULD NOT exceed 78 characters (excluding CRLF)
_HARD_LINE = 998  # RFC 5322 2.1.1: MUST NOT exceed 998 octets
_EW_OVERHEAD = len("=?utf-8?b??=")
_EW_MAX_BYTES = 45  # 45 bytes -> 60 base64 chars -> a 72-char word (RFC 2047: <= 75)
_EW_MIN_BYTES = 6  # room for any UTF-8 character, so every encoded word makes progress

_FTEXT = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 field-name
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_LOCAL = re.compile(rf'{_DOT_ATOM}|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_DOMAIN = re.compile(rf"{_DOT_ATOM}|\[[\x21-\x5a\x5e-\x7e]*\]")
# display name (quoted strings may hold '<'), then <addr>; the alternatives are disjoint,
# so matching stays linear
_NAME_ADDR = re.compile(r'((?:"(?:[^"\\]|\\.)*"|[^"<])*)<(.*)>', re.DOTALL)
_QUOTED_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_ATOM_PHRASE = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)*")
# a display name that reads back the same unquoted: no specials, no outer blanks
_NAME_WORD = r'[^\x00-\x1f\x7f"(),.:;<>@\[\\\] ]+'
_PLAIN_NAME = re.compile(rf"{_NAME_WORD}(?: {_NAME_WORD})*")
# a UTF-8 local part (RFC 6531): anything printable but specials and blanks
_UTF8_LOCAL = re.compile(r'[^\x00-\x20\x7f"(),:;<>@\[\\\]]+')
_BOUNDARY = re.compile(r"=_[0-9A-Za-z'()+_,\-./:=?]{1,64}")  # fits the folded line
_HIGH_BYTES = bytes(range(128, 256))

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_MIME_VERSION = b"MIME-Version: 1.0\r\n"
_CT_TEXT = b'Content-Type: text/plain; charset="utf-8"\r\n'
_CT_HTML = b'Content-Type: text/html; charset="utf-8"\r\n'
_CTE_7BIT = b"Content-Transfer-Encoding: 7bit\r\n"
_CTE_QP = b"Content-Transfer-Encoding: quoted-printable\r\n"
_CTE_B64 = b"Content-Transfer-Encoding: base64\r\n"


def _refuse_injection(value: str, field: str) -> None:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise TemplateError(f"header injection in {field}: value contains CR, LF or NUL")


def check_header_name(name: str) -> None:
    """Raise :class:`TemplateError` unless ``name`` may be used as a custom header.

    It must be RFC 5322 ``ftext`` (printable ASCII without ``:``), at most
    :data:`MAX_HEADER_NAME` characters, and not one of :data:`RESERVED_HEADERS`.
    """
    if not _FTEXT.fullmatch(name):
        raise TemplateError(
            f"invalid header name {name!r}: use printable ASCII without spaces or ':'"
        )
    if len(name) > MAX_HEADER_NAME:
        raise TemplateError(f"invalid header name {name!r}: longer than {MAX_HEADER_NAME}")
    if name.lower() in RESERVED_HEADERS:
        hint = "set reply_to instead" if name.lower() == "reply-to" else "bulkmail sets it"
        raise TemplateError(f"header {name!r} cannot be set as a custom header: {hint}")


def format_date(timestamp: float) -> str:
    """RFC 5322 date of ``timestamp`` in UTC, e.g. ``Tue, 02 Jan 2024 10:00:00 +0000``."""
    t = time.gmtime(timestamp)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


# addresses ---------------------------------------------------------------------------


def parse_address(value: str) -> tuple[str, str]:
    """Split ``Name <addr>``, ``"Quoted, <Name>" <addr>``, ``<addr>`` or ``addr``.

    Returns ``(display_name, address)``; a display name that is one quoted string is
    unquoted. The address is not validated here (see :func:`ascii_address`).
    """
    value = value.strip()
    found = _NAME_ADDR.fullmatch(value) if value.endswith(">") else None
    if found is None:
        return "", value
    name, addr = found.group(1).strip(), found.group(2).strip()
    if _QUOTED_STRING.fullmatch(name):
        name = _QUOTED_PAIR.sub(r"\1", name[1:-1])
    return name, addr


def format_address(name: str, addr: str) -> str:
    """The inverse of :func:`parse_address`: ``name`` as an RFC 5322 phrase (quoted when
    it holds specials) before ``<addr>``; just ``addr`` without a name. Whatever the name
    holds (commas, ``<``, ``@``, quotes), parsing the result gives back ``(name, addr)``
    with the name stripped, so a name can never add or change an address."""
    name = name.strip()
    if not name:
        return addr
    phrase = name if _PLAIN_NAME.fullmatch(name) else _quote(name)
    return f"{phrase} <{addr}>"


def ascii_domain(domain: str, field: str = "address") -> str:
    """``domain`` in ASCII: IDNA-encoded (UTS 46) when it is not ASCII already."""
    if domain.isascii():
        return domain
    import idna  # only for the rare internationalized domain

    try:
        return str(idna.encode(domain, uts46=True).decode("ascii"))
    except idna.IDNAError as exc:
        raise TemplateError(f"{field}: bad domain {domain!r}: {exc}") from exc


def ascii_address(addr: str, field: str = "address", *, utf8_local: bool = False) -> str:
    """``addr`` as an RFC 5322 addr-spec with an ASCII domain (IDNA-encoded when not).

    Raises :class:`TemplateError` (naming ``field``) for anything that is not exactly one
    ``local@domain``, and for a non-ASCII local part, which needs SMTPUTF8, unless
    ``utf8_local`` (a recipient: the SMTP provider then sends it only over SMTPUTF8).
    """
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise TemplateError(f"{field}: {addr!r} is not an email address")
    if not local.isascii():
        if not utf8_local:
            raise TemplateError(
                f"{field}: {addr!r} has a non-ASCII local part (needs SMTPUTF8)")
        if not _UTF8_LOCAL.fullmatch(local):
            raise TemplateError(f"{field}: {addr!r} is not an email address")
    elif not _LOCAL.fullmatch(local):
        raise TemplateError(f"{field}: {addr!r} is not an email address")
    domain = ascii_domain(domain, field)
    if not _DOMAIN.fullmatch(domain):
        raise TemplateError(f"{field}: {addr!r} is not an email address")
    return f"{local}@{domain}"


def sender_address(value: str, field: str = "from") -> str:
    """The address of an address header value (``"Shop, Inc" <news@shop.example>`` ->
    ``news@shop.example``), validated, with an ASCII domain: what goes in MAIL FROM and
    in every API's from address. Raises :class:`TemplateError` naming ``field``."""
    _refuse_injection(value, field)
    return ascii_address(parse_address(value)[1], field)


def _address_line(prefix: str, value: str, field: str) -> bytes:
    """``From: Name <addr>`` as encoded, folded header bytes."""
    _refuse_injection(value, field)
    name, addr = parse_address(value)
    # Only the recipient may have a UTF-8 local part: it goes out raw (RFC 6532), and
    # only over SMTPUTF8 (the SMTP provider refuses it to a relay without).
    addr = ascii_address(addr, field, utf8_local=field == "to")
    if not addr.isascii():
        return f"{prefix}{_quote(name) + ' ' if name else ''}<{addr}>\r\n".encode()
    if not name:
        return f"{prefix}{addr}\r\n".encode("ascii")
    if name.isascii() and name.isprintable() and "=?" not in name:
        phrase = name if _ATOM_PHRASE.fullmatch(name) else _quote(name)
        line = f"{prefix}{phrase} <{addr}>"
        if len(line) <= _LINE:
            return f"{line}\r\n".encode("ascii")
    words = _encoded_words(name, _LINE - len(prefix))
    tail = f" <{addr}>".encode("ascii")
    last_line = len(words[-1]) + (len(prefix) if len(words) == 1 else 1)
    sep = b" " if last_line + len(tail) <= _LINE else b"\r\n "
    return prefix.encode("ascii") + b"\r\n ".join(words) + sep + tail[1:] + b"\r\n"


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# unstructured headers -----------------------------------------------------------------


def _encoded_words(value: str, first_room: int) -> list[bytes]:
    """``value`` as RFC 2047 ``B`` words; the first fits ``first_room`` chars if it can.

    Words are cut at UTF-8 character boundaries because each must decode on its own.
    """
    data = value.encode("utf-8")
    n = len(data)
    budget = max(_EW_MIN_BYTES, min(_EW_MAX_BYTES, (first_room - _EW_OVERHEAD) // 4 * 3))
    words: list[bytes] = []
    start = 0
    while start < n:
        end = start + budget
        if end < n:
            while data[end] & 0xC0 == 0x80:  # continuation byte: back off to a char start
                end -= 1
        words.append(b"=?utf-8?b?" + binascii.b2a_base64(data[start:end], newline=False) + b"?=")
        start = end
        budget = _EW_MAX_BYTES
    return words


def _fold_raw(prefix: str, value: str) -> bytes | None:
    """Fold printable ASCII ``value`` at spaces; None if a line would pass 998 octets."""
    words = value.split(" ")
    lines: list[str] = []
    line = prefix + words[0]
    has_text = True
    for word in words[1:]:
        # Folding inserts CRLF *before* a space, so unfolding restores the value exactly;
        # a continuation line must carry more than whitespace.
        if has_text and len(line) + 1 + len(word) > _LINE:
            lines.append(line)
            line = " " + word
        else:
            line += " " + word
        has_text = line.strip(" ") != ""
    lines.append(line)
    if max(map(len, lines)) > _HARD_LINE:
        return None
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _unstructured_line(prefix: str, value: str, field: str) -> bytes:
    """``Subject: value`` (or a custom header) as encoded, folded header bytes."""
    _refuse_injection(value, field)
    if not value:
        return f"{prefix.rstrip()}\r\n".encode("ascii")
    if (
        value.isascii()
        and value.isprintable()
        and "=?" not in value  # would be decoded as an encoded word by readers
        and value[0] != " "  # leading blanks are dropped by parsers
        and value[-1] != " "  # trailing blanks are stripped by some MTAs
    ):
        if len(prefix) + len(value) <= _LINE:
            return f"{prefix}{value}\r\n".encode("ascii")
        folded = _fold_raw(prefix, value)
        if folded is not None:
            return folded
    words = _encoded_words(value, _LINE - len(prefix))
    return prefix.encode("ascii") + b"\r\n ".join(words) + b"\r\n"


# bodies ---------------------------------------------------------------------------------


def transfer_encoding(body: str, boundary: str | None = None) -> str:
    """The Content-Transfer-Encoding the builder uses for ``body`` (see module docs)."""
    return _encode_body(body, boundary)[0]


def _encode_body(body: str, boundary: str | None) -> tuple[str, bytes]:
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    if body and body[-1] != "\n":
        body += "\n"
    if (
        body.isascii()
        and "\x00" not in body
        and (len(body) <= _HARD_LINE or max(map(len, body.split("\n"))) <= _HARD_LINE)
        and (boundary is None or boundary not in body)
    ):
        return "7bit", body.replace("\n", "\r\n").encode("ascii")
    data = body.replace("\n", "\r\n").encode("utf-8")
    high = len(data) - len(data.translate(None, _HIGH_BYTES))
    if high * 6 <= len(data):
        # b2a_qp keeps CRLF (the data has one: a non-empty body ends with a line break),
        # soft-breaks at 76 and escapes '=', trailing blanks, NUL and a lone '.'.
        qp = binascii.b2a_qp(data, quotetabs=False, istext=True)
        if b" \r\n" in data or b"\t\r\n" in data:
            qp = _qp_fix_trailing_blanks(qp)
        return "quoted-printable", qp
    encoded = binascii.b2a_base64(data, newline=False)
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    return "base64", b"\r\n".join(lines) + b"\r\n"


def _qp_fix_trailing_blanks(qp: bytes) -> bytes:
    """Re-fold the lines b2a_qp made 77 characters long.

    CPython's b2a_qp counts a blank before a line break as one character and only then
    escapes it to ``=20``/``=09``, so such a line can end up 77 characters long
    (RFC 2045 allows 76). Moving the escape to a line of its own after a soft break
    fixes it; the escape is exactly the last three characters.
    """
    lines = qp.split(b"\r\n")
    for i, line in enumerate(lines):
        if len(line) > 76:
            lines[i] = line[:-3] + b"=\r\n" + line[-3:]
    return b"\r\n".join(lines)


_CTE_HEADER = {"7bit": _CTE_7BIT, "quoted-printable": _CTE_QP, "base64": _CTE_B64}


# the skeleton ---------------------------------------------------------------------------


class MimeSkeleton:
    """The constant bytes of one campaign's messages, and :meth:`build` to fill them in.

    ``sender``, ``reply_to``, ``subject`` and ``headers`` are the campaign's values that
    are the same for every recipient (leave out the ones that are templates); they are
    encoded once. :meth:`build` accepts any :class:`OutgoingMessage` all the same: a
    value that differs from the pre-encoded one is encoded on the spot.

    ``clock`` returns the current time (seconds since the epoch) for the Date header;
    ``boundary`` (random by default) must start with ``=_``.
    """

    __slots__ = ("_clock", "_close", "_date", "_head", "_names_ok", "_next", "_static", "boundary")

    def __init__(
        self,
        *,
        sender: str | None = None,
        reply_to: str | None = None,
        subject: str | None = None,
        headers: Mapping[str, str] | None = None,
        boundary: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if boundary is None:
            boundary = "=_bm_" + secrets.token_hex(12)
        elif not _BOUNDARY.fullmatch(boundary):
            raise ValueError(f"boundary {boundary!r} must be '=_' and 1-64 boundary chars")
        self.boundary = boundary
        self._clock = clock
        self._date: tuple[int, bytes] = (-1, b"")
        b = boundary.encode("ascii")
        # folded: with a long boundary the line would pass 78 characters
        self._head = b'Content-Type: multipart/alternative;\r\n boundary="' + b + b'"\r\n\r\n--' + b
        self._next = b"\r\n--" + b + b"\r\n"
        self._close = b"\r\n--" + b + b"--\r\n"
        self._names_ok: set[str] = set()
        #: field label -> (value, its encoded header bytes)
        self._static: dict[str, tuple[str, bytes]] = {}
        if sender is not None:
            self._add_static("from", "From: ", sender, _address_line)
        if reply_to is not None:
            self._add_static("reply_to", "Reply-To: ", reply_to, _address_line)
        if subject is not None:
            self._add_static("subject", "Subject: ", subject, _unstructured_line)
        for name, value in (headers or {}).items():
            self._check_name(name)
            self._add_static(f"headers.{name}", f"{name}: ", value, _unstructured_line)

    def _add_static(
        self, field: str, prefix: str, value: str, encode: Callable[[str, str, str], bytes]
    ) -> None:
        try:
            self._static[field] = (value, encode(prefix, value, field))
        except UnicodeEncodeError as exc:
            raise TemplateError(f"{field}: not valid Unicode: {exc.reason}") from exc

    def _check_name(self, name: str) -> None:
        if name not in self._names_ok:
            check_header_name(name)
            self._names_ok.add(name)

    def _line(
        self, field: str, prefix: str, value: str, encode: Callable[[str, str, str], bytes]
    ) -> bytes:
        cached = self._static.get(field)
        if cached is not None and cached[0] == value:
            return cached[1]
        return encode(prefix, value, field)

    def _date_line(self) -> bytes:
        # Formatting a date costs microseconds; a batch builds thousands per second.
        second = int(self._clock())
        if self._date[0] != second:
            self._date = (second, f"Date: {format_date(second)}\r\n".encode("ascii"))
        return self._date[1]

    def build(self, msg: OutgoingMessage) -> bytes:
        """The complete message ``msg`` as bytes with CRLF line ends, ready for DATA.

        Raises :class:`TemplateError` for a value that cannot be sent: CR/LF/NUL in a
        header-bound value, a bad address, a bad header name, invalid Unicode, no body.
        """
        text, html = msg.text, msg.html
        if text is None and html is None:
            raise TemplateError(f"message {msg.message_id!r} has no body: set text or html")
        mid = msg.message_id
        if not (mid.isascii() and mid.isprintable() and " " not in mid) or not (
            mid[:1] == "<" and mid[-1:] == ">"
        ):
            raise TemplateError(f"invalid Message-ID {mid!r}")
        try:
            out = [
                self._line("from", "From: ", msg.sender, _address_line),
                _address_line("To: ", msg.recipient, "to"),
                self._line("subject", "Subject: ", msg.subject, _unstructured_line),
                self._date_line(),
                f"Message-ID: {mid}\r\n".encode("ascii"),
            ]
            if msg.reply_to is not None:
                out.append(self._line("reply_to", "Reply-To: ", msg.reply_to, _address_line))
            for name, value in msg.headers.items():
                self._check_name(name)
                out.append(self._line(f"headers.{name}", f"{name}: ", value, _unstructured_line))
            out.append(_MIME_VERSION)
            if text is not None and html is not None:
                text_cte, text_body = _encode_body(text, self.boundary)
                html_cte, html_body = _encode_body(html, self.boundary)
                out += (
                    self._head,
                    b"\r\n",
                    _CT_TEXT,
                    _CTE_HEADER[text_cte],
                    b"\r\n",
                    text_body,
                    self._next,
                    _CT_HTML,
                    _CTE_HEADER[html_cte],
                    b"\r\n",
                    html_body,
                    self._close,
                )
            else:
                body = text if text is not None else html
                assert body is not None
                cte, encoded = _encode_body(body, None)
                out += (
                    _CT_TEXT if text is not None else _CT_HTML,
                    _CTE_HEADER[cte],
                    b"\r\n",
                    encoded,
                )
        except UnicodeEncodeError as exc:
            # Only lone surrogates (e.g. from "\ud800" in recipient JSON) get here.
            raise TemplateError(f"message {mid!r} is not valid Unicode: {exc.reason}") from exc
        return b"".join(out)
