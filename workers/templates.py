"""Compile a campaign's templates once; render one recipient's message in microseconds.

Every string of a :class:`~config.schema.CampaignSpec` that ends up in a message may be
a Jinja2 template: subject, text, html, each custom header value, sender and reply_to.
They run in a :class:`~jinja2.sandbox.SandboxedEnvironment` (campaign authors are not
trusted with Python attribute access) with :class:`~jinja2.StrictUndefined` (a missing
variable is an error, never an empty string in someone's greeting). Only html is
autoescaped. A string without ``{{``, ``{%`` or ``{#`` is used as it is, unrendered.

Campaign authors are not trusted with the worker's CPU and memory either: each message is
rendered under a :class:`RenderBudget` (1 MiB of output, 1 s, ranges of 10,000 items,
integers of 14,000 bits by default). The sandbox's hooks enforce it: intercepted binary
operators (``'a' * n`` and ``n ** n`` are refused before they are computed), calls, every
filter, every ``for`` loop's iteration and every ``~`` concatenation check the clock and
the sizes, and ``finalize`` counts every expression written (loops add their literal text
per iteration), so output is refused as it grows, not after it is built. No signals: the
checks run in the rendering thread. A render over budget raises :class:`TemplateError`
for that recipient only.

All parsing and checking happens in :meth:`CompiledCampaign.compile`, so that
:meth:`CompiledCampaign.render`, which runs once per recipient, only renders.

The sender is split at compile time into a display-name template and a fixed address,
validated once: recipient data can change the name only, never the address that goes
in MAIL FROM or an API's from address (the name is re-encoded as an RFC 5322 phrase).
Reply-To may be a template; every rendered value must be exactly one valid address.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes, pass_eval_context
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from config.errors import InputError, TemplateError
from config.providers import ProviderConfig, sender_allowed
from config.schema import CampaignSpec, Recipient
from workers.mime import (
    MimeSkeleton,
    ascii_address,
    check_header_name,
    format_address,
    parse_address,
)
from workers.providers.base import OutgoingMessage

__all__ = ["CompiledCampaign", "RenderBudget", "message_id"]

_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]+")

@dataclass(frozen=True, slots=True)
class RenderBudget:
    """What rendering one message (all its templated fields) may cost."""

    #: rendered output per message, UTF-8 bytes
    max_output_bytes: int = 1 << 20
    #: time per message render, checked inside the sandbox's hooks (no signals)
    max_seconds: float = 1.0
    #: items one ``range()`` may produce; also the most ``|batch``/``|slice`` groups
    max_range: int = 10_000
    #: size of an integer ``*`` or ``**`` may build (Python prints at most 4,300 digits)
    max_int_bits: int = 14_000


DEFAULT_BUDGET = RenderBudget()


class _Run:
    """The budget of the render in progress (one per message, per thread/task)."""

    __slots__ = ("budget", "deadline", "left")

    def __init__(self, budget: RenderBudget) -> None:
        self.budget = budget
        self.deadline = time.monotonic() + budget.max_seconds
        self.left = budget.max_output_bytes  # characters, a lower bound of the bytes

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateError(
                f"render budget: took longer than {self.budget.max_seconds:g} s")

    def over(self, what: str) -> TemplateError:
        return TemplateError(f"render budget: {what}")


_RUN: ContextVar[_Run | None] = ContextVar("bulkmail_render_run", default=None)


def _current() -> _Run:
    # Hooks also run outside a message render: Jinja folds constant filter calls while
    # compiling. A default budget (its clock starting now) bounds those.
    run = _RUN.get()
    return run if run is not None else _Run(DEFAULT_BUDGET)


def _weight(value: Any, limit: int, depth: int = 0) -> int:
    """Characters plus items ``value`` holds (nested lists counted, up to a depth), early
    out once over ``limit``: what joining or repeating it would build."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple):
        total = len(value)
        if depth < 4:
            for item in value:
                if total > limit:
                    break
                total += _weight(item, limit, depth + 1)
        return total
    return 1


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict | set) else 0


# printf widths/precisions that pad: "%*d", "%100000000s", "%.99999999f"
_PRINTF_WIDE = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d{7,}|\d*\.(?:\*|\d{7,}))")
# str.format specs that pad: "{:>100000000}", a nested width "{:>{w}}"
_FORMAT_WIDE = re.compile(r"\{[^{}]*:[^{}]*(?:\{|\d{7,})")


def _check_binop(run: _Run, operator: str, left: Any, right: Any) -> None:
    b = run.budget
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > b.max_int_bits:
                raise run.over(f"a product over {b.max_int_bits} bits")
            return
        seq, n = (left, right) if isinstance(right, int) else (right, left)
        if (isinstance(n, int) and isinstance(seq, str | list | tuple) and n > 0
                and _weight(seq, b.max_output_bytes) * n > b.max_output_bytes):
            raise run.over(f"repeating {type(seq).__name__} {n} times builds more than "
                               f"{b.max_output_bytes} bytes")
    elif operator == "**":
        if (isinstance(left, int) and isinstance(right, int) and right > 0
                and abs(left) > 1 and left.bit_length() * right > b.max_int_bits):
            raise run.over(f"a power over {b.max_int_bits} bits")
    elif operator == "+":
        if (isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)
                and _weight(left, b.max_output_bytes) + _weight(right, b.max_output_bytes)
                > b.max_output_bytes):
            raise run.over(f"a sum over {b.max_output_bytes} bytes")
    elif operator == "%" and isinstance(left, str) and _PRINTF_WIDE.search(left):
        raise run.over("a %-format with a padding width of a million or more")


def _check_str_call(run: _Run, name: str, text: str, args: tuple[Any, ...]) -> None:
    limit = run.budget.max_output_bytes
    if name in ("center", "ljust", "rjust", "zfill"):
        if args and isinstance(args[0], int) and args[0] > limit:
            raise run.over(f"str.{name}() to {args[0]} characters")
    elif name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else 8
        if size * text.count("\t") > limit:
            raise run.over("str.expandtabs() over the output limit")
    elif name == "replace":
        _check_replace(run, text, args)
    elif name in ("format", "format_map"):
        if _FORMAT_WIDE.search(text):
            raise run.over(f"str.{name}() with a padding width of a million or more, or "
                           "a nested one")
    elif name == "join" and args and _weight(args[0], limit) > limit:
        raise run.over(f"str.join() over {limit} bytes")


def _check_replace(run: _Run, text: Any, args: tuple[Any, ...]) -> None:
    if len(args) < 2:
        return
    text, old, new = str(text), str(args[0]), str(args[1])
    hits = text.count(old) if old else len(text) + 1
    if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
        hits = min(hits, args[2])
    if len(text) + hits * len(new) > run.budget.max_output_bytes:
        raise run.over("replace() over the output limit")


def _check_filter(run: _Run, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse the filters that build a lot from a little before they run (``args[0]`` is
    the filtered value)."""
    b = run.budget

    def arg(pos: int, key: str, default: Any) -> Any:
        return args[pos] if len(args) > pos else kwargs.get(key, default)

    if name == "center":
        width = arg(1, "width", 80)
        if isinstance(width, int) and width > b.max_output_bytes:
            raise run.over(f"center to {width} characters")
    elif name == "indent":
        width = arg(1, "width", 4)
        pad = width if isinstance(width, int) else len(str(width))
        text = str(args[0]) if args else ""
        if len(text) + pad * (text.count("\n") + 1) > b.max_output_bytes:
            raise run.over("indent over the output limit")
    elif name == "replace":
        _check_replace(run, args[0] if args else "", args[1:])
    elif name == "format" and args and isinstance(args[0], str) and _PRINTF_WIDE.search(args[0]):
        raise run.over("format with a padding width of a million or more")
    elif name in ("batch", "slice"):
        count = arg(1, "linecount" if name == "batch" else "slices", 1)
        if isinstance(count, int) and count > b.max_range:
            raise run.over(f"{name} into {count} (limit {b.max_range})")
    elif name == "join" and args and _weight(args[0], b.max_output_bytes) > b.max_output_bytes:
        raise run.over(f"join over {b.max_output_bytes} bytes")


def _budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # Jinja passes the eval context/context/environment first to decorated filters;
    # functools.wraps copies the decorator's mark, so Jinja still does.
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)
    def budgeted(*args: Any, **kwargs: Any) -> Any:
        run = _current()
        run.tick()
        _check_filter(run, name, args[skip:], kwargs)
        result = func(*args, **kwargs)
        if _size(result) > run.budget.max_output_bytes:
            raise run.over(f"|{name} result over {run.budget.max_output_bytes} bytes")
        return result

    return budgeted


def _count_output(value: Any) -> Any:
    """Jinja's ``finalize``: every ``{{ expression }}`` written, anywhere (loops, macros,
    ``set`` blocks), is counted against the output budget before it is kept."""
    run = _RUN.get() or _current()  # the common case without a second call
    run.left -= len(value) if type(value) is str else len(str(value))
    if run.left < 0:
        raise run.over(f"output over {run.budget.max_output_bytes} bytes")
    return value


def _budgeted_range(*args: int) -> range:
    run = _current()
    rng = range(*args)
    if len(rng) > run.budget.max_range:
        raise run.over(f"range() of {len(rng)} items (limit {run.budget.max_range})")
    return rng


def _budgeted_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    run = _current()
    if n * max > run.budget.max_range:
        raise run.over(f"lipsum() of {n} x {max} words (limit {run.budget.max_range})")
    from jinja2.utils import generate_lorem_ipsum
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


class _BudgetedEnvironment(SandboxedEnvironment):
    """The sandbox plus the render budget (see the module docstring)."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_count_output, **options)
        self.filters = {name: _budgeted_filter(name, f) for name, f in self.filters.items()}
        self.globals["range"] = _budgeted_range
        self.globals["lipsum"] = _budgeted_lipsum

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        run = _current()
        run.tick()
        _check_binop(run, operator, left, right)
        result = super().call_binop(context, operator, left, right)
        if _size(result) > run.budget.max_output_bytes:
            raise run.over(f"{operator!r} result over {run.budget.max_output_bytes} bytes")
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        run = _current()
        run.tick()
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox's str.format wrapper
        receiver = getattr(target, "__self__", None)
        if isinstance(receiver, str):
            _check_str_call(run, getattr(target, "__name__", ""), receiver, args)
        result = super().call(__context, __obj, *args, **kwargs)
        limit = run.budget.max_output_bytes
        if _size(result) > limit or _size(receiver) > limit:
            # the receiver: list.extend(itself) doubles a list per call
            raise run.over(f"a call's result over {limit} bytes or items")
        return result

    def bm_loop(self, iterable: Iterable[Any], text_size: int) -> Iterator[Any]:
        """Every ``for`` loop iterates through this (see :class:`_Guard`): the clock, and
        the loop body's literal text (``text_size`` characters) counted per iteration, as
        ``finalize`` counts its expressions."""
        run = _current()
        for item in iterable:
            run.tick()
            run.left -= text_size
            if run.left < 0:
                raise run.over(f"output over {run.budget.max_output_bytes} bytes")
            yield item

    @pass_eval_context
    def bm_concat(self, eval_ctx: EvalContext, *parts: Any) -> str:
        """Every ``~`` concatenation runs this (see :class:`_Guard`)."""
        run = _current()
        run.tick()
        joined: str = markup_join(parts) if eval_ctx.autoescape else str_join(parts)
        if len(joined) > run.budget.max_output_bytes:
            raise run.over(f"a '~' result over {run.budget.max_output_bytes} bytes")
        return joined


class _Guard(NodeTransformer):
    """Route ``for`` loops and ``~`` through the environment's budget checks: neither
    passes through a sandbox hook otherwise."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        # literal text and constants the body writes each time round (an upper bound)
        text = sum(len(d.data) for b in node.body for d in b.find_all(nodes.TemplateData))
        text += sum(len(c.value) for b in node.body for c in b.find_all(nodes.Const)
                    if isinstance(c.value, str))
        node.iter = nodes.Call(nodes.EnvironmentAttribute("bm_loop"),
                               [node.iter, nodes.Const(text)], [], None, None,
                               lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(nodes.EnvironmentAttribute("bm_concat"), list(node.nodes), [],
                          None, None, lineno=node.lineno)


# keep_trailing_newline: a body's last line break is content, Jinja would drop it.
_PLAIN_ENV = _BudgetedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_HTML_ENV = _BudgetedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=True, keep_trailing_newline=True
)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


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
        run = _RUN.get()
        token = _RUN.set(_Run(DEFAULT_BUDGET)) if run is None else None
        try:
            return template.render(context)
        except TemplateError as exc:
            raise TemplateError(f"{self.label}: {exc}") from exc
        except jinja2.UndefinedError as exc:
            found = _UNDEFINED_NAME.fullmatch(exc.message or "")
            if found:
                raise TemplateError(
                    f"missing variable {found.group(1)!r} in {self.label}"
                ) from exc
            raise TemplateError(f"{self.label}: {exc.message}") from exc
        except Exception as exc:
            # A template can raise whatever its expressions raise (ZeroDivisionError,
            # TypeError, sandbox SecurityError, RecursionError, ...); it is the campaign's
            # fault.
            raise TemplateError(f"{self.label}: {type(exc).__name__}: {exc}") from exc
        finally:
            if token is not None:
                _RUN.reset(token)


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
    ast = _Guard().visit(ast)
    ast.set_environment(env)
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
        "budget",
        "skeleton",
        "spec",
    )

    spec: CampaignSpec
    #: the campaign's constant MIME parts, used by :meth:`build_mime`
    skeleton: MimeSkeleton
    #: what rendering one message may cost
    budget: RenderBudget

    def __init__(self, spec: CampaignSpec, *, clock: Callable[[], float] = time.time,
                 budget: RenderBudget = DEFAULT_BUDGET) -> None:
        """Prefer :meth:`compile`; this is the same."""
        self.spec = spec
        self.budget = budget
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
        cls, spec: CampaignSpec, *, clock: Callable[[], float] = time.time,
        budget: RenderBudget = DEFAULT_BUDGET,
    ) -> CompiledCampaign:
        """Compile and check every template and constant of ``spec``.

        Raises :class:`TemplateError` naming the field (``subject``, ``text``, ``html``,
        ``headers.X-Foo``, ``from``, ``reply_to``) and, for a syntax error, the line and
        Jinja's message. ``clock`` feeds the Date header (tests pass a fixed one);
        ``budget`` bounds each :meth:`render`.
        """
        return cls(spec, clock=clock, budget=budget)

    def render(self, recipient: Recipient) -> OutgoingMessage:
        """The message for ``recipient``: templates see its vars plus ``email``.

        Raises :class:`TemplateError` for a missing variable (``"missing variable
        'first_name' in subject"``), any other template failure, a rendered
        header-bound value containing CR, LF or NUL (``"header injection in subject"``),
        and a render over :attr:`budget` (``"text: render budget: took longer than 1 s"``).
        """
        token = _RUN.set(_Run(self.budget))
        try:
            msg = self._render(recipient)
        finally:
            _RUN.reset(token)
        size = sum(_utf8_len(v) for v in (msg.subject, msg.sender, msg.reply_to, msg.text,
                                          msg.html, *msg.headers.values()) if v)
        if size > self.budget.max_output_bytes:
            raise TemplateError(f"render budget: the message is {size} bytes, over "
                                f"{self.budget.max_output_bytes}")
        return msg

    def _render(self, recipient: Recipient) -> OutgoingMessage:
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
