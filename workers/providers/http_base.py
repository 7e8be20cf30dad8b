"""What every HTTP API provider shares: the kept-alive client, the concurrency cap, the
call loop and the mapping of HTTP outcomes onto our error tree.

A kind (``sendgrid``, ``mailgun``, ...) subclasses :class:`HttpProvider` and supplies
only what is its own:

- :meth:`~HttpProvider.plan`: split a batch into :class:`ApiCall` requests, as few as the
  provider's limits allow (:func:`pack` does the counting and sizing);
- :meth:`~HttpProvider.accepted`: read a 2xx response into one result per message
  (providers that report per-message failures inside a 200 do it here);
- optionally :meth:`~HttpProvider.authorize` (SES signs), :meth:`~HttpProvider.classify`
  (provider-specific error codes), :meth:`~HttpProvider.blame` (a 4xx that names the
  bad elements, so the innocent ones are sent again at once).

Everything else is here, once: one ``httpx.AsyncClient`` per provider instance, opened
lazily inside the running loop (never at import or construction: workers fork after
construction); at most ``cfg.concurrency`` requests in flight; a total deadline of
``cfg.timeout`` per request; 401/403 raise :class:`ProviderAuthError`; 429 becomes
:class:`ThrottledError` with the provider's Retry-After; 5xx, timeouts and connection
errors are transient; other 4xx are permanent with the provider's own message. Keys
only ever travel in request headers: never in URLs, logs or exception texts.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeAlias, TypedDict, TypeVar, Unpack

import httpx

from config.errors import (
    AmbiguousDeliveryError,
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    ProviderAuthError,
    ProviderBusyError,
    TransientDeliveryError,
)
from config.providers import _HttpBase, read_secret
from workers.classify import classify_http, parse_retry_after
from workers.mime import format_address, parse_address
from workers.providers.base import ConnectionGate, NoGate, OutgoingMessage, SendResult

__all__ = [
    "CORRELATION_HEADER",
    "ApiCall",
    "HttpOptions",
    "HttpProvider",
    "Outcome",
    "Plan",
    "add_bodies",
    "address_parts",
    "from_header",
    "json_bytes",
    "message_headers",
    "pack",
    "read_json",
    "sender_parts",
    "too_large",
]

#: Our correlation header (``campaign:row``), sent by every kind: an X- header is
#: accepted by every provider and comes back in bounces and complaint reports.
CORRELATION_HEADER = "X-Bulkmail-Id"

#: Headers that may carry a wait time on a 429, in the order they are trusted (only the
#: first means "wait" on other statuses, e.g. a 503).
_RETRY_HEADERS = ("retry-after", "ratelimit-reset", "x-ratelimit-reset")

#: httpx errors raised before any byte of the request reached the provider.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteError,
             httpx.WriteTimeout, httpx.UnsupportedProtocol, httpx.ProxyError)


#: What happened to one element of an accepted call: the provider's id for the message
#: (``None`` when it gives none) or the error it reported for that element.
Outcome: TypeAlias = str | DeliveryError | None


@dataclass(slots=True)
class ApiCall:
    """One planned HTTP request and the messages it carries.

    ``positions`` index the batch given to :meth:`HttpProvider.send`, in the order the
    provider sees the elements (so element ``i`` of a response is ``positions[i]``).
    """

    positions: list[int]
    path: str
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Plan:
    """The calls for a batch, and the messages that cannot be sent at all (too large)."""

    calls: list[ApiCall] = field(default_factory=list)
    refused: dict[int, DeliveryError] = field(default_factory=dict)


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that go on the wire (and are measured)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def read_json(response: httpx.Response) -> Any:
    """The response body as JSON, or ``None`` when it is empty or not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def address_parts(value: str) -> tuple[str, str]:
    """``"Shop <news@example.com>"`` -> ``("Shop", "news@example.com")``, by the one
    address parser (:func:`workers.mime.parse_address`)."""
    if "<" not in value and '"' not in value and " " not in value:
        return "", value  # a bare address (every recipient)
    return parse_address(value)


def sender_parts(msg: OutgoingMessage) -> tuple[str, str]:
    """The From display name and the validated From address (never re-parsed from the
    header: the address is fixed when the campaign is compiled)."""
    return address_parts(msg.sender)[0], msg.from_address


def from_header(msg: OutgoingMessage) -> str:
    """The From value for APIs that take one string: the display name as a phrase before
    the validated address (a comma in the name cannot make a second address)."""
    return format_address(*sender_parts(msg))


def message_headers(msg: OutgoingMessage, *, message_id: bool) -> dict[str, str]:
    """The message's own headers plus our correlation header (and Message-ID when the
    provider lets us set it)."""
    headers = dict(msg.headers)
    headers[CORRELATION_HEADER] = msg.correlation_id
    if message_id and msg.message_id:
        mid = msg.message_id
        headers["Message-ID"] = mid if mid.startswith("<") else f"<{mid}>"
    return headers


def add_bodies(element: dict[str, Any], msg: OutgoingMessage, *, text: str, html: str,
               reply_to: str) -> dict[str, Any]:
    """Put the text and html bodies and the Reply-To that ``msg`` has into ``element``,
    under the API's names for them; returns ``element``."""
    if msg.text is not None:
        element[text] = msg.text
    if msg.html is not None:
        element[html] = msg.html
    if msg.reply_to:
        element[reply_to] = msg.reply_to
    return element


def too_large(size: int, limit: int, provider: str) -> PermanentDeliveryError:
    """The error for a message that alone is over the provider's request size limit."""
    return PermanentDeliveryError(
        f"message is {size} bytes encoded, over the {limit}-byte request limit of {provider}",
        code=413,
    )


def pack(
    sizes: Sequence[int],
    *,
    max_count: int,
    max_bytes: int,
    keys: Sequence[Hashable] | None = None,
) -> tuple[list[list[int]], list[int]]:
    """Split items into as few chunks as the limits allow, keeping their order.

    ``sizes[i]`` is item ``i``'s encoded size; a chunk holds at most ``max_count`` items
    and ``max_bytes`` bytes (the caller subtracts the fixed part of a request), and never
    two items with the same ``keys[i]`` (Mailgun keys recipient variables by address).
    Returns the chunks (lists of item indexes) and the items too large for any chunk.
    First fit: a large item that does not fit leaves room that later small ones use.
    """
    chunks: list[list[int]] = []
    used: list[int] = []
    seen: list[set[Hashable]] = []
    oversized: list[int] = []
    open_from = 0  # chunks before this one are full by count: skip them
    for i, size in enumerate(sizes):
        if size > max_bytes:
            oversized.append(i)
            continue
        key = keys[i] if keys is not None else None
        for c in range(open_from, len(chunks)):
            if (len(chunks[c]) < max_count and used[c] + size <= max_bytes
                    and (key is None or key not in seen[c])):
                break
        else:
            c = len(chunks)
            chunks.append([])
            used.append(0)
            seen.append(set())
        chunks[c].append(i)
        used[c] += size
        if key is not None:
            seen[c].add(key)
        while open_from < len(chunks) and len(chunks[open_from]) >= max_count:
            open_from += 1
    return chunks, oversized


CfgT = TypeVar("CfgT", bound=_HttpBase)


class HttpOptions(TypedDict, total=False):
    """Keyword options every kind's ``create`` accepts (``gate`` as every kind, SMTP
    included; the others are test hooks)."""

    #: cluster-wide cap on calls in flight (``max_connections``); none when ``None``
    gate: ConnectionGate | None

    #: replaces the network (an ``httpx.MockTransport`` over a fake provider)
    transport: httpx.AsyncBaseTransport
    #: unix time, for Retry-After dates and epochs
    clock: Callable[[], float]


class HttpProvider(ABC, Generic[CfgT]):
    """Base of the HTTP API providers; see the module docstring for the division of work.

    ``transport`` replaces the network in tests (an ``httpx.MockTransport`` over a fake
    provider); real use goes to ``cfg.base_url`` or :attr:`default_base_url`.
    """

    #: the provider's public API host, used unless ``cfg.base_url`` overrides it
    default_base_url: ClassVar[str] = ""
    #: most messages one request may carry (the worker passes ``concurrency`` times this)
    max_per_call: ClassVar[int] = 1
    #: API providers read the rendered parts, not MIME
    wants_mime: bool = False

    def __init__(self, name: str, cfg: CfgT, **options: Unpack[HttpOptions]) -> None:
        self.name = name
        self.cfg = cfg
        self.base_url = (cfg.base_url or self.default_url()).rstrip("/")
        #: how many messages the worker should hand to one :meth:`send` so that the calls
        #: are full and ``concurrency`` of them run side by side
        self.chunk_size = self.max_per_call * cfg.concurrency
        self._transport = options.get("transport")
        self._clock = options.get("clock", time.time)
        self._client: httpx.AsyncClient | None = None
        self._limit: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: cluster-wide cap on calls in flight (``max_connections``)
        self.call_gate: ConnectionGate = options.get("gate") or NoGate()
        #: credentials sent with every request; kept out of repr and of every message
        self.auth_headers: dict[str, str] = {}
        self.prepare()

    def __repr__(self) -> str:
        # never show attributes: some hold credentials
        return f"<{type(self).__name__} {self.name!r} {self.base_url}>"

    # -- what each kind supplies -------------------------------------------------------
    def default_url(self) -> str:
        """The provider's API host when ``cfg.base_url`` does not override it."""
        return self.default_base_url

    def prepare(self) -> None:
        """Read credentials (into :attr:`auth_headers`) at construction, so a missing key
        fails at start-up."""

    @abstractmethod
    def plan(self, messages: Sequence[OutgoingMessage]) -> Plan:
        """Split ``messages`` into as few requests as the provider's limits allow."""

    @abstractmethod
    def accepted(self, call: ApiCall, response: httpx.Response) -> list[Outcome]:
        """Read a 2xx response: per element of ``call``, the provider's id for it (``None``
        when it gives none) or the error it reported for that element."""

    def authorize(self, request: httpx.Request) -> None:
        """Add credentials to a built request: :attr:`auth_headers` by default (set by
        :meth:`prepare`); SES signs each request instead."""
        request.headers.update(self.auth_headers)

    def error_message(self, response: httpx.Response) -> str:
        """The provider's own words for a failed request (never our key)."""
        body = read_json(response)
        if isinstance(body, dict):
            for key in ("message", "Message", "error"):
                value = body.get(key)
                if isinstance(value, str) and value:
                    return value
            errors = body.get("errors")
            if isinstance(errors, list) and errors:
                texts = [str(e.get("message", e)) if isinstance(e, dict) else str(e)
                         for e in errors[:5]]
                return "; ".join(texts)
        text = response.text.strip()
        return text[:500] if text else response.reason_phrase or f"HTTP {response.status_code}"

    def classify(self, response: httpx.Response, message: str,
                 retry_after: float | None) -> DeliveryError:
        """Map a non-2xx response to our error tree (kinds refine provider codes)."""
        return classify_http(response.status_code, message, retry_after=retry_after)

    def blame(self, call: ApiCall, response: httpx.Response) -> dict[int, DeliveryError]:
        """For a permanent rejection of the whole call: the elements the provider named
        as the cause (index in ``call.positions`` -> error). Empty when it named none."""
        return {}

    # -- helpers for the kinds -------------------------------------------------------
    def api_key(self, *, required: bool = True) -> str | None:
        """The key from ``api_key_env`` / ``api_key_file``; a ConfigError when missing."""
        key = read_secret(self.name, self.cfg.api_key_env, self.cfg.api_key_file)
        if key is None and required:
            raise ConfigError(
                f"provider {self.name!r}: no API key configured: set api_key_env or "
                f"api_key_file"
            )
        return key

    # -- the call loop ---------------------------------------------------------------
    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send ``messages`` in as few calls as allowed; one result per message.

        Raises :class:`ProviderAuthError` when the provider rejects our credentials: the
        calls already in flight finish, no new one starts.
        """
        if not messages:
            return []
        results: list[SendResult | None] = [None] * len(messages)
        state = _Run(messages, results)
        plan = self.plan(messages)
        await self._run(plan, state)
        if state.retry:
            # A whole call was rejected because of some of its elements: those failed,
            # the rest were never looked at, so send them once more without them.
            positions = state.retry
            state.retry = []
            sub = self.plan([messages[p] for p in positions])
            await self._run(_remap(sub, positions), state, may_retry=False)
        if state.auth is not None:
            # what the provider accepted before the rejection is recorded, not resent
            state.auth.results = [r for r in results if r is not None and r.ok]
            raise state.auth
        missing = [i for i, r in enumerate(results) if r is None]
        for i in missing:  # pragma: no cover - every planned position gets a result
            results[i] = SendResult(messages[i].row,
                                    error=TransientDeliveryError("no result from the provider"))
        return [r for r in results if r is not None]

    async def release_idle(self) -> None:
        return None  # HTTP keep-alive connections are not capped across the cluster

    async def aclose(self) -> None:
        """Close the kept-alive connections."""
        client, self._client = self._client, None
        self._limit = None
        self._loop = None
        if client is not None:
            await client.aclose()

    def _session(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._limit is None or self._loop is not loop:
            # Opened here, in the running loop: a worker builds providers before it forks
            # and runs one loop per process after. A client's connections belong to the
            # loop that opened them, so another loop (a second asyncio.run) gets its own.
            n = self.cfg.concurrency
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                transport=self._transport,
                timeout=httpx.Timeout(self.cfg.timeout),
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                headers={"User-Agent": "bulkmail"},
                follow_redirects=False,
            )
            self._limit = asyncio.Semaphore(n)
            self._loop = loop
        return self._client, self._limit

    async def _run(self, plan: Plan, state: _Run, *, may_retry: bool = True) -> None:
        for pos, err in plan.refused.items():
            state.put(pos, err)
        if not plan.calls:
            return
        client, limit = self._session()
        await asyncio.gather(*(self._call(client, limit, call, state, may_retry)
                               for call in plan.calls))

    async def _call(self, client: httpx.AsyncClient, limit: asyncio.Semaphore,
                    call: ApiCall, state: _Run, may_retry: bool) -> None:
        async with limit:
            if state.auth is not None:
                return  # the key was rejected by another call: do not try again
            lease = await self.call_gate.open(wait=True)
            if lease is None:
                # max_connections calls are in flight across the cluster: not the
                # recipients' fault, so their messages are parked, not deferred
                state.fail(call, ProviderBusyError(
                    f"{self.name}: {self.cfg.max_connections} calls in flight across the "
                    "cluster (max_connections)"))
                return
            try:
                response = await self._exchange(client, call, state)
            finally:
                await lease.release()
        if response is not None:
            self._read(call, response, state, may_retry)

    async def _exchange(self, client: httpx.AsyncClient, call: ApiCall, state: _Run
                        ) -> httpx.Response | None:
        request = client.build_request(
            "POST", call.path, content=call.body,
            headers={"Content-Type": call.content_type, **call.headers},
        )
        self.authorize(request)
        try:
            # httpx's timeouts are per read/write; this bounds the whole exchange so
            # a provider that drips its answer cannot hold a slot forever.
            async with asyncio.timeout(self.cfg.timeout):
                return await client.send(request)
        except _NOT_SENT as exc:
            state.fail(call, TransientDeliveryError(f"{self._where()}: {_describe(exc)}"))
        except (httpx.TransportError, TimeoutError) as exc:
            # The request went out and no answer came: it may have been accepted.
            state.fail(call, AmbiguousDeliveryError(
                f"{self._where()}: no response: {_describe(exc)}"))
        return None

    def _read(self, call: ApiCall, response: httpx.Response, state: _Run,
              may_retry: bool) -> None:
        if response.is_success:
            outcomes = self.accepted(call, response)
            if len(outcomes) != len(call.positions):
                state.fail(call, AmbiguousDeliveryError(
                    f"{self._where()}: accepted the call but answered for "
                    f"{len(outcomes)} of {len(call.positions)} messages"))
                return
            for pos, outcome in zip(call.positions, outcomes, strict=True):
                if isinstance(outcome, ProviderAuthError):
                    state.auth = outcome
                else:
                    state.put(pos, outcome)
            return
        err = self.classify(response, self.error_message(response), self._retry_after(response))
        if isinstance(err, ProviderAuthError):
            state.auth = err
            return
        blamed = self.blame(call, response) if isinstance(err, PermanentDeliveryError) else {}
        if may_retry and blamed and len(blamed) < len(call.positions):
            for i, pos in enumerate(call.positions):
                if i in blamed:
                    state.put(pos, blamed[i])
                else:
                    state.retry.append(pos)
            return
        state.fail(call, err)

    def _retry_after(self, response: httpx.Response) -> float | None:
        now = self._clock()
        # Resend sends ratelimit-reset on every answer; only on a 429 is it a wait time.
        headers = _RETRY_HEADERS if response.status_code == 429 else _RETRY_HEADERS[:1]
        for header in headers:
            value = parse_retry_after(response.headers.get(header), now=now)
            if value is not None:
                return value
        return None

    def _where(self) -> str:
        return f"provider {self.name!r}"


class _Run:
    """Results of one :meth:`HttpProvider.send`, filled in by its concurrent calls."""

    __slots__ = ("auth", "messages", "results", "retry")

    def __init__(self, messages: Sequence[OutgoingMessage],
                 results: list[SendResult | None]) -> None:
        self.messages = messages
        self.results = results
        self.auth: ProviderAuthError | None = None
        self.retry: list[int] = []

    def put(self, pos: int, outcome: Outcome) -> None:
        row = self.messages[pos].row
        if isinstance(outcome, DeliveryError):
            self.results[pos] = SendResult(row, error=outcome)
        else:
            self.results[pos] = SendResult(row, provider_id=outcome)

    def fail(self, call: ApiCall, err: DeliveryError) -> None:
        for pos in call.positions:
            self.put(pos, err)


def _remap(plan: Plan, positions: list[int]) -> Plan:
    """A plan made for a sub-list, in positions of the original batch."""
    for call in plan.calls:
        call.positions = [positions[p] for p in call.positions]
    return Plan(plan.calls, {positions[p]: e for p, e in plan.refused.items()})


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
    return f"{name}: {text}" if text else name
