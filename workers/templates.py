"""Compile a campaign's templates once; render one recipient's message in microseconds.

Every string of a :class:`~config.schema.CampaignSpec` that ends up in a message may be
a Jinja2 template: subject, text, html, each custom header value, sender and reply_to.
They run in a :class:`~jinja2.sandbox.SandboxedEnvironment` (campaign authors are not
trusted with Python attribute access) with :class:`~jinja2.StrictUndefined` (a missing
variable is an error, never an empty string in someone's greeting). Only html is
autoescaped. A string without ``{{``, ``{%`` or ``{#`` is used as it is, unrendered.

All parsing and checking happens in :meth:`CompiledCampaign.compile`, so that
:meth:`CompiledCampaign.render`, which runs once per recipient, only renders.

The sender is split at compile time into a display-name template and a fixed address,
validated once: recipient data can change the name only, never the address that goes
in MAIL FROM or an API's from address (the name is re-encoded as an RFC 5322 phrase).
Reply-To may be a template; every rendered value must be exactly one valid address.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from config.providers import ProviderConfig, sender_allowed
from config.schema import CampaignSpec, Recipient
from workers.errors import InputError, TemplateError
from workers.mime import (
    MimeSkeleton,
    ascii_address,
    check_header_name,
    format_address,
    parse_address,
)
from workers.providers.base import OutgoingMessage

__all__ = ["CompiledCampaign", "message_id"]

_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]+")

# keep_trailing_newline: a body's last line break is content, Jinja would drop it.
_PLAIN_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_HTML_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=True, keep_trailing_newline=True
)


def _domain_of(sender: str, field: str) -> str:
    return ascii_address(parse_address(sender)[1], field).rpartition("@")[2]


def _message_id(safe_campaign: str, campaign_id: str, row: int, domain: str) -> str:
    # The hash keeps ids distinct when sanitizing maps two campaign ids to the same text.
    digest = hashlib.blake2b(f"{campaign_id}\x00{row}".encode(), digest_size=6).hexdigest()
    return f"<{safe_campaign}.{row}.{digest}@{domain}>"


def _safe_campaign(campaign_id: str) -> str:
    return _UNSAFE_ID.sub("-", campaign_id)[:64] or "campaign"


def message_id(campaign_id: str, row: int, sender: str) -> str:
    """The stable Message-ID of recipient ``row`` of campaign ``campaign_id``.

    ``<{campaign}.{row}.{hash}@{sender domain}>``: the same inputs always give the same
    id (so a resent message keeps it), the campaign id is reduced to characters valid in
    a msg-id (the 12-hex-digit hash of the original keeps ids unique), and the domain is
    the sender's, IDNA-encoded. Raises :class:`TemplateError` when ``sender`` has no
    address.
    """
    domain = _domain_of(sender, "from")
    return _message_id(_safe_campaign(campaign_id), campaign_id, row, domain)


def _reply_to(value: str) -> str:
    """A Reply-To value checked as exactly one address and written back canonically, so
    that every kind passes the same single address on (``"a@x, b@y"`` is refused)."""
    name, addr = parse_address(value)
    ascii_address(addr, "reply_to")
    return format_address(name, addr)


def _is_template(source: str) -> bool:
    return "{{" in source or "{%" in source or "{#" in source


@dataclass(frozen=True, slots=True)
class _Field:
    """One compiled string of the campaign: a constant, or a template to render."""

    label: str  # how errors name it: subject, text, html, headers.X-Foo, from, reply_to
    constant: str
    template: jinja2.Template | None = None

    def render(self, context: dict[str, Any]) -> str:
        template = self.template
        if template is None:
            return self.constant
        try:
            return template.render(context)
        except jinja2.UndefinedError as exc:
            found = _UNDEFINED_NAME.fullmatch(exc.message or "")
            if found:
                raise TemplateError(
                    f"missing variable {found.group(1)!r} in {self.label}"
                ) from exc
            raise TemplateError(f"{self.label}: {exc.message}") from exc
        except Exception as exc:
            # A template can raise whatever its expressions raise (ZeroDivisionError,
            # TypeError, sandbox SecurityError, ...); it is the campaign's fault.
            raise TemplateError(f"{self.label}: {type(exc).__name__}: {exc}") from exc


def _compile_field(label: str, source: str, *, html: bool = False, header: bool = False) -> _Field:
    if not _is_template(source):
        if header and ("\r" in source or "\n" in source or "\x00" in source):
            raise TemplateError(f"header injection in {label}: value contains CR, LF or NUL")
        return _Field(label, source)
    env = _HTML_ENV if html else _PLAIN_ENV
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{label}: line {exc.lineno}: {exc.message}") from exc
    if header:
        # Literal line breaks would make every render an injection: say so up front.
        # (Line breaks coming from variables are caught per recipient by render().)
        for data in ast.find_all(nodes.TemplateData):
            if "\r" in data.data or "\n" in data.data or "\x00" in data.data:
                raise TemplateError(f"header injection in {label}: template text has CR or LF")
    # from_string() accepts the parsed AST, so the source is not parsed twice.
    template = env.from_string(ast)
    # Every render() copies the template's globals into a fresh context. They are a
    # ChainMap over the environment's, which is slow to iterate: a plain dict of the same
    # names halves the cost of rendering a small template. Nothing changes these
    # module-private environments' globals later, so the copy cannot go stale.
    template.globals = dict(template.globals)
    return _Field(label, "", template)


class CompiledCampaign:
    """A campaign with every template compiled and every constant checked.

    Build one per campaign per worker process with :meth:`compile`; then per recipient
    call :meth:`render` (and :meth:`build_mime` when the provider wants raw MIME).
    """

    __slots__ = (
        "_domain",
        "_from",
        "_from_address",
        "_from_constant",
        "_from_written",
        "_headers",
        "_html",
        "_reply_to",
        "_return_path",
        "_safe_id",
        "_subject",
        "_text",
        "skeleton",
        "spec",
    )

    spec: CampaignSpec
    #: the campaign's constant MIME parts, used by :meth:`build_mime`
    skeleton: MimeSkeleton

    def __init__(self, spec: CampaignSpec, *, clock: Callable[[], float] = time.time) -> None:
        """Prefer :meth:`compile`; this is the same."""
        self.spec = spec
        if not spec.text and not spec.html:
            raise TemplateError("campaign has no body: set text, text_file, html or html_file")
        self._subject = _compile_field("subject", spec.subject, header=True)
        self._text = None if spec.text is None else _compile_field("text", spec.text)
        self._html = None if spec.html is None else _compile_field("html", spec.html, html=True)
        if "\r" in spec.sender or "\n" in spec.sender or "\x00" in spec.sender:
            raise TemplateError("header injection in from: value contains CR, LF or NUL")
        name, written = parse_address(spec.sender)
        if _is_template(written):
            raise TemplateError(
                "from: the address cannot be a template, only the display name can "
                '(from = "{{ brand }} <news@shop.example>")')
        #: the From address as written (the header IDNA-encodes it) and in ASCII
        self._from_written = written
        self._from_address = ascii_address(written, "from")
        self._from = _compile_field("from", name, header=True)
        self._from_constant = self._sender(name) if self._from.template is None else ""
        self._return_path = None
        if spec.return_path is not None:
            if _is_template(spec.return_path) or parse_address(spec.return_path)[0]:
                raise TemplateError("return_path: must be one bare address, not a template")
            self._return_path = ascii_address(spec.return_path, "return_path")
        self._reply_to = None
        if spec.reply_to is not None:
            self._reply_to = _compile_field("reply_to", spec.reply_to, header=True)
        seen: set[str] = set()
        headers: list[tuple[str, _Field]] = []
        for name, value in spec.headers.items():
            try:
                check_header_name(name)
            except TemplateError as exc:
                raise TemplateError(f"headers.{name}: {exc}") from None
            if name.lower() in seen:
                raise TemplateError(f"headers.{name}: header given twice")
            seen.add(name.lower())
            headers.append((name, _compile_field(f"headers.{name}", value, header=True)))
        self._headers = tuple(headers)

        # Constants are checked once, here: the skeleton encodes them (and so refuses a
        # bad address or header value) and the sender's domain is needed for Message-IDs.
        self._domain = self._from_address.rpartition("@")[2]
        static_reply_to = None
        if self._reply_to is not None and self._reply_to.template is None:
            static_reply_to = _reply_to(self._reply_to.constant)
            self._reply_to = _Field("reply_to", static_reply_to)
        self._safe_id = _safe_campaign(spec.id)
        self.skeleton = MimeSkeleton(
            sender=None if self._from.template else self._from_constant,
            reply_to=static_reply_to,
            subject=None if self._subject.template else self._subject.constant,
            headers={name: f.constant for name, f in self._headers if f.template is None},
            clock=clock,
        )

    @classmethod
    def compile(
        cls, spec: CampaignSpec, *, clock: Callable[[], float] = time.time
    ) -> CompiledCampaign:
        """Compile and check every template and constant of ``spec``.

        Raises :class:`TemplateError` naming the field (``subject``, ``text``, ``html``,
        ``headers.X-Foo``, ``from``, ``reply_to``) and, for a syntax error, the line and
        Jinja's message. ``clock`` feeds the Date header (tests pass a fixed one).
        """
        return cls(spec, clock=clock)

    def render(self, recipient: Recipient) -> OutgoingMessage:
        """The message for ``recipient``: templates see its vars plus ``email``.

        Raises :class:`TemplateError` for a missing variable (``"missing variable
        'first_name' in subject"``), any other template failure, and a rendered
        header-bound value containing CR, LF or NUL (``"header injection in subject"``).
        """
        context = {**recipient.vars, "email": recipient.email}
        subject = self._check(self._subject, context)
        if self._from.template is None:
            sender = self._from_constant
        else:
            sender = self._sender(self._check(self._from, context))
        reply_to = None
        if self._reply_to is not None:
            reply_to = self._check(self._reply_to, context)
            if self._reply_to.template is not None:
                reply_to = _reply_to(reply_to)
        headers = {name: self._check(f, context) for name, f in self._headers}
        email = recipient.email
        if "\r" in email or "\n" in email or "\x00" in email:
            raise TemplateError("header injection in to: address contains CR, LF or NUL")
        return OutgoingMessage(
            row=recipient.row,
            campaign_id=self.spec.id,
            recipient=email,
            sender=sender,
            from_address=self._from_address,
            return_path=self._return_path,
            subject=subject,
            message_id=_message_id(self._safe_id, self.spec.id, recipient.row, self._domain),
            text=None if self._text is None else self._text.render(context),
            html=None if self._html is None else self._html.render(context),
            reply_to=reply_to,
            headers=headers,
            variables=recipient.vars,
        )

    @property
    def from_address(self) -> str:
        """The campaign's From address (ASCII, IDNA domain): the same for every message."""
        return self._from_address

    def check_allowed_senders(self, provider: str, cfg: ProviderConfig) -> None:
        """Raise :class:`InputError` unless the From address (and the return path, when
        set) match ``allowed_senders`` of ``provider``. Called before anything is
        enqueued."""
        for field, address in (("from", self._from_address),
                               ("return_path", self._return_path)):
            if address is not None and not sender_allowed(cfg, address):
                raise InputError(
                    f"{field}: {address!r} is not among the allowed_senders of provider "
                    f"{provider!r}")

    def _sender(self, name: str) -> str:
        # the rendered name as a phrase before the fixed address: parsing the result
        # gives back exactly this address, whatever the name holds
        return format_address(name, self._from_written)

    @staticmethod
    def _check(field: _Field, context: dict[str, Any]) -> str:
        if field.template is None:
            return field.constant  # checked at compile time
        value = field.render(context)
        if "\r" in value or "\n" in value or "\x00" in value:
            raise TemplateError(
                f"header injection in {field.label}: rendered value contains CR, LF or NUL"
            )
        return value

    def build_mime(self, msg: OutgoingMessage) -> bytes:
        """The complete MIME message of ``msg`` (CRLF line ends), via :attr:`skeleton`."""
        return self.skeleton.build(msg)
