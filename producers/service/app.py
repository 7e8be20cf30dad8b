"""The HTTP API: ``create_app(settings, config)`` builds the FastAPI application.

Every path ends where the CLI's does: campaigns and messages go through
:class:`producers.api.Bulkmail` (validation, ledger, queues), status is
:func:`producers.control.campaign_document`, pause/resume/cancel are the
:mod:`producers.control` actions. Errors are RFC 9457 problem documents.

Requests carry ``Authorization: Bearer KEY`` (``bulkmail keys create``); each key is held
to its providers and to a request rate taken from a cluster-wide token bucket (the same
Lua buckets as the providers' limits, on the Redis server's clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, cast

import redis
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from config.errors import InputError, RedisUnavailableError
from config.schema import CampaignSpec, State
from config.settings import Settings, redact_url
from config.units import Rate, parse_rate
from producers.api import Bulkmail
from producers.control import UnknownCampaignError, campaign_document
from producers.control import cancel as cancel_campaign
from producers.control import pause as pause_campaign
from producers.control import resume as resume_campaign
from producers.keys import ApiKey, KeyStore
from producers.recipients import check_address
from producers.service.intake import (
    derived_id,
    input_problem,
    recipient_suffix,
    recipients_from_json,
    spec_from_data,
    spool_upload,
    toml_campaign,
    upload_label,
)
from producers.service.limits import BodyLimit, parse_size
from producers.service.pages import recipients_page
from producers.service.problems import Problem, problem_response, register_handlers
from producers.service.webhooks import install_webhooks
from workers.deadletter import DeadLetters
from workers.heartbeat import seen
from workers.ledger import Ledger
from workers.ratelimit import RateLimiter
from workers.suppression import SuppressionList

__all__ = ["ServiceConfig", "create_app", "parse_size"]

#: the id rule of campaign files (producers.campaign), for message ids in the schema
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: most messages in one POST /v1/messages
MAX_MESSAGES = 1000


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """How the API limits its clients. Also the limiter's config of each key's bucket."""

    rate: Rate = field(default_factory=lambda: parse_rate("20/s"))
    burst: int = 20
    max_body: int = 10 * 1024**2
    max_upload: int = 1024**3

    @classmethod
    def build(cls, *, rate: str = "20/s", burst: int | None = None,
              max_body: int = 10 * 1024**2, max_upload: int = 1024**3) -> ServiceConfig:
        """From the CLI's forms; raises ValueError naming the bad value."""
        parsed = parse_rate(rate)
        if burst is not None and burst < 1:
            raise ValueError(f"--burst must be at least 1, got {burst}")
        return cls(rate=parsed, burst=burst or max(1, int(parsed.per_second)),
                   max_body=max_body, max_upload=max_upload)

    # workers.ratelimit.LimitConfig
    @property
    def effective_burst(self) -> int:
        return self.burst

    @property
    def domains(self) -> dict[str, Rate]:
        return {}


class _Service:
    """What the routes share: settings, the producer handle, the key store, limiters."""

    def __init__(self, settings: Settings, config: ServiceConfig) -> None:
        self.settings = settings
        self.config = config
        self.mail = Bulkmail(settings)
        self.keys = settings.keys
        self._aredis: tuple[asyncio.AbstractEventLoop, aioredis.Redis[bytes]] | None = None

    @property
    def redis(self) -> redis.Redis[bytes]:
        return self.mail.redis

    @property
    def store(self) -> KeyStore:
        return KeyStore(self.redis, self.keys)

    async def aclose(self) -> None:
        if self._aredis is not None:
            await cast(Any, self._aredis[1]).aclose()  # not in the redis stubs yet
            self._aredis = None

    def limiter(self, key: ApiKey) -> RateLimiter:
        loop = asyncio.get_running_loop()
        if self._aredis is None or self._aredis[0] is not loop:
            self._aredis = (loop, aioredis.Redis.from_url(self.settings.redis_url,
                                                          socket_connect_timeout=3))
        return RateLimiter(self._aredis[1], self.keys, self.keys.api_bucket(key.name),
                           self.config)


_bearer = HTTPBearer(auto_error=False, description="an API key from `bulkmail keys create`")


def _service(request: Request) -> _Service:
    svc: _Service = request.app.state.service
    return svc


async def _authenticated(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    svc = _service(request)
    challenge = {"WWW-Authenticate": 'Bearer realm="bulkmail"'}
    if creds is None:
        raise Problem(401, "missing 'Authorization: Bearer KEY' header", headers=challenge)
    key = await run_in_threadpool(svc.store.authenticate, creds.credentials)
    if key is None:
        raise Problem(401, "unknown or revoked API key", headers=challenge)
    grant = await svc.limiter(key).acquire({"": 1})
    if not grant.complete:
        wait = max(1, math.ceil(grant.wait))
        raise Problem(429, f"API key {key.name!r} is over its request rate "
                           f"({svc.config.rate}); retry in {wait}s",
                      headers={"Retry-After": str(wait)})
    return key


Key = Annotated[ApiKey, Depends(_authenticated)]
Svc = Annotated[_Service, Depends(_service)]


def _allowed(key: ApiKey, provider: str) -> None:
    if not key.allows(provider):
        raise Problem(403, f"API key {key.name!r} may not use provider {provider!r} "
                           f"(allowed: {', '.join(key.providers or ())})",
                      errors=[{"field": "provider", "detail": "not allowed for this key"}])


def _document(svc: _Service, key: ApiKey, cid: str) -> dict[str, Any]:
    doc = campaign_document(svc.redis, svc.keys, cid)
    if doc is None:
        raise Problem(404, f"no campaign {cid!r}")
    _allowed(key, doc["provider"])
    return doc


# -- request and response models (for validation and the OpenAPI document) -----------------
class MessageIn(BaseModel):
    """One transactional message; subject, bodies and headers are templates over
    ``variables``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str = Field(min_length=1, max_length=320)
    provider: str = Field(min_length=1, max_length=200)
    sender: str = Field(alias="from", min_length=1, max_length=1000)
    subject: str = Field(min_length=1)
    text: str | None = None
    html: str | None = None
    reply_to: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    message_id: str | None = Field(default=None, pattern=ID_PATTERN)


class Accepted(BaseModel):
    id: str


class AcceptedMany(BaseModel):
    ids: list[str]


class SuppressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(default=None, min_length=3, max_length=320)
    addresses: list[str] | None = Field(default=None, max_length=10000)
    reason: str = Field(default="api", max_length=1000)


_PROBLEM = {"content": {"application/problem+json": {"schema": {"type": "object"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, unknown or revoked API key", **_PROBLEM},
    403: {"description": "the key may not use this provider", **_PROBLEM},
    429: {"description": "over the key's request rate (see Retry-After)", **_PROBLEM},
}

_CAMPAIGN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {
                "type": "object",
                "description": "the campaign file's fields plus 'recipients'",
                "required": ["provider", "from", "subject", "recipients"],
                "properties": {
                    "id": {"type": "string", "pattern": ID_PATTERN},
                    "provider": {"type": "string"}, "from": {"type": "string"},
                    "reply_to": {"type": "string"}, "subject": {"type": "string"},
                    "text": {"type": "string"}, "html": {"type": "string"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "batch_size": {"type": "integer", "minimum": 1, "maximum": 10000},
                    "recipients": {"type": "array", "items": {
                        "type": "object", "required": ["email"],
                        "properties": {"email": {"type": "string"}}}},
                }}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["campaign", "recipients"],
                "properties": {
                    "campaign": {"type": "string", "format": "binary",
                                 "description": "the campaign file (TOML), no *_file keys"},
                    "recipients": {"type": "string", "format": "binary",
                                   "description": "recipient list (.csv or .jsonl)"},
                    "text": {"type": "string", "format": "binary"},
                    "html": {"type": "string", "format": "binary"},
                }}},
        },
    },
}


def _enqueue(svc: _Service, key: ApiKey, spec: CampaignSpec,
             recipients: Path | list[dict[str, Any]], folder: Path | None = None
             ) -> dict[str, Any]:
    _allowed(key, spec.provider)
    existing = Ledger(svc.redis, svc.keys).spec(spec.id)
    if existing is not None and existing != spec:
        raise Problem(409, f"campaign id {spec.id!r} already exists with a different "
                           "definition; pick another id (or Idempotency-Key)",
                      errors=[{"field": "id", "detail": "exists with another definition"}])
    try:
        result = svc.mail.send_campaign(spec, recipients)
    except InputError as exc:
        problem = input_problem(exc)
        if folder is not None:  # name the upload, not the spool folder on this server
            problem.detail = problem.detail.replace(f"{folder}/", "")
        raise problem from None
    return {"id": spec.id, "created": result.created, "resumed": result.resumed,
            "rows": result.rows, "queued": result.queued, "invalid": result.invalid,
            "batches": result.batches}


async def _campaign_from_multipart(request: Request, svc: _Service, key: ApiKey,
                                   campaign_id: str | None) -> dict[str, Any]:
    async with request.form(max_files=4, max_fields=8) as form:
        parts: dict[str, bytes | UploadFile] = {}
        for name, value in form.multi_items():
            if name in parts:
                raise Problem(422, f"part {name!r} given twice",
                              errors=[{"field": name, "detail": "given twice"}])
            parts[name] = value if isinstance(value, UploadFile) else value.encode()
        unknown = sorted(set(parts) - {"campaign", "recipients", "text", "html"})
        if unknown:
            raise Problem(422, f"unknown part(s) {', '.join(map(repr, unknown))}; known: "
                               "campaign, recipients, text, html",
                          errors=[{"field": u, "detail": "unknown part"} for u in unknown])
        for required in ("campaign", "recipients"):
            if required not in parts:
                raise Problem(422, f"missing part {required!r}",
                              errors=[{"field": required, "detail": "required"}])
        campaign = parts["campaign"]
        label = (upload_label(campaign.filename, "campaign.toml")
                 if isinstance(campaign, UploadFile) else "campaign.toml")
        raw = await campaign.read() if isinstance(campaign, UploadFile) else campaign
        data = toml_campaign(raw, label)
        for body in ("text", "html"):
            part = parts.get(body)
            if part is None:
                continue
            if body in data:
                raise Problem(422, f"{label}: set only one of field {body!r} and part {body!r}",
                              errors=[{"field": body, "detail": "given twice"}])
            content = await part.read() if isinstance(part, UploadFile) else part
            try:
                data[body] = content.decode("utf-8")
            except UnicodeDecodeError:
                raise Problem(422, f"part {body!r} is not UTF-8",
                              errors=[{"field": body, "detail": "not UTF-8"}]) from None
        spec = spec_from_data(data, label, svc.mail.providers,
                              default_batch_size=svc.settings.batch_size,
                              campaign_id=campaign_id if "id" not in data else None)
        _allowed(key, spec.provider)
        upload = parts["recipients"]
        if not isinstance(upload, UploadFile):
            raise Problem(422, "part 'recipients' must be a file (.csv or .jsonl)",
                          errors=[{"field": "recipients", "detail": "must be a file"}])
        suffix = recipient_suffix(upload.filename, upload.content_type)
        rlabel = upload_label(upload.filename, "recipients" + suffix)

        def work() -> dict[str, Any]:
            with tempfile.TemporaryDirectory(prefix="bulkmail-upload-") as tmp:
                folder = Path(tmp)
                path = spool_upload(upload.file, folder, rlabel, suffix)
                return _enqueue(svc, key, spec, path, folder)

        return await run_in_threadpool(work)


def create_app(settings: Settings, config: ServiceConfig | None = None) -> FastAPI:
    """The API application over ``settings`` (Redis, providers file, key prefix)."""
    config = config or ServiceConfig()
    service = _Service(settings, config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await service.aclose()

    app = FastAPI(
        lifespan=lifespan,
        title="bulkmail",
        version="1",
        description="Campaigns, transactional messages, status, pause/resume, suppression "
                    "and dead letters over HTTP. Authenticate with `Authorization: Bearer "
                    "KEY` (`bulkmail keys create NAME`). Errors are RFC 9457 problem "
                    "documents.",
    )
    app.state.service = service
    register_handlers(app)

    async def on_redis_down(request: Request, exc: Exception) -> Response:
        detail = (str(exc) if isinstance(exc, RedisUnavailableError)
                  else f"Redis at {redact_url(settings.redis_url)} did not answer")
        return problem_response(503, detail, instance=request.url.path)

    app.add_exception_handler(RedisUnavailableError, on_redis_down)
    app.add_exception_handler(redis.ConnectionError, on_redis_down)
    app.add_exception_handler(redis.TimeoutError, on_redis_down)
    app.add_middleware(BodyLimit, max_body=config.max_body, max_upload=config.max_upload)
    install_webhooks(app, settings)

    # -- health -------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"],
             responses={503: {"description": "Redis or a provider's workers missing"}})
    def readyz(svc: Svc) -> Response:
        """Redis answers, and a worker consumed each provider's queue within a minute."""
        try:
            svc.redis.ping()
            workers = seen(svc.redis, svc.keys, sorted(svc.mail.providers))
        except (redis.RedisError, RedisUnavailableError) as exc:
            return problem_response(503, f"Redis at {redact_url(settings.redis_url)} did not "
                                         f"answer: {exc}", title="Not ready")
        missing = sorted(p for p, w in workers.items() if w is None)
        body = {"status": "not ready" if missing else "ready", "redis": "ok",
                "workers": {p: None if w is None else {"node": w[0], "seconds_ago": w[1]}
                            for p, w in workers.items()}}
        if missing:
            body["detail"] = f"no worker seen in the last minute for: {', '.join(missing)}"
        return Response(json.dumps(body), status_code=503 if missing else 200,
                        media_type="application/json")

    # -- campaigns --------------------------------------------------------------------------
    @app.post("/v1/campaigns", status_code=202, tags=["campaigns"], openapi_extra=_CAMPAIGN_BODY,
              responses={**_ERRORS, 409: {"description": "id taken by another definition"},
                         413: {"description": "body too large"},
                         415: {"description": "neither JSON nor multipart"},
                         422: {"description": "the campaign or its recipients are invalid"}})
    async def post_campaign(request: Request, key: Key, svc: Svc) -> dict[str, Any]:
        """Enqueue a campaign: JSON (the campaign file's fields plus ``recipients``) or
        multipart (``campaign`` TOML, ``recipients`` .csv/.jsonl, optional ``text``/``html``
        parts). Idempotent by ``id`` and by the ``Idempotency-Key`` header."""
        idem = request.headers.get("idempotency-key")
        campaign_id = derived_id("c", key.name, idem) if idem else None
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            return await _campaign_from_multipart(request, svc, key, campaign_id)
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise Problem(415, "send the campaign as application/json or multipart/form-data")
        try:
            data = json.loads(await request.body())
        except (ValueError, RecursionError) as exc:
            raise Problem(400, f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise Problem(422, "the body must be a JSON object (the campaign's fields plus "
                               "'recipients')", errors=[{"field": "body", "detail": "object"}])
        if "recipients" not in data:
            raise Problem(422, "missing field 'recipients'",
                          errors=[{"field": "recipients", "detail": "required"}])
        rows = recipients_from_json(data.pop("recipients"))
        spec = spec_from_data(data, "campaign", svc.mail.providers,
                              default_batch_size=svc.settings.batch_size,
                              campaign_id=campaign_id if "id" not in data else None)
        return await run_in_threadpool(_enqueue, svc, key, spec, rows)

    @app.get("/v1/campaigns/{campaign_id}", tags=["campaigns"],
             responses={**_ERRORS, 404: {"description": "no such campaign"}})
    def get_campaign(campaign_id: str, key: Key, svc: Svc) -> dict[str, Any]:
        """The ``bulkmail status ID --json`` document."""
        return _document(svc, key, campaign_id)

    @app.get("/v1/campaigns/{campaign_id}/recipients", tags=["campaigns"],
             responses={**_ERRORS, 400: {"description": "bad cursor"},
                        404: {"description": "no such campaign"}})
    def get_recipients(
        campaign_id: str, key: Key, svc: Svc,
        state: Annotated[str | None, Query(description="comma-separated states (queued, "
                                                       "sent, failed, ...); all when absent")
                         ] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Recipients with their state and details, a page at a time (``next_cursor``)."""
        _document(svc, key, campaign_id)
        try:
            states = (None if not state or state == "all"
                      else {State.from_label(s.strip()) for s in state.split(",")})
        except ValueError as exc:
            raise Problem(422, f"query 'state': {exc}",
                          errors=[{"field": "state", "detail": str(exc)}]) from None
        try:
            entries, nxt = recipients_page(svc.redis, svc.keys, campaign_id, states, cursor,
                                           limit)
        except ValueError as exc:
            raise Problem(400, f"query 'cursor': {exc}",
                          errors=[{"field": "cursor", "detail": str(exc)}]) from None
        return {"entries": entries, "next_cursor": nxt}

    def _action(name: str, summary: str) -> None:
        @app.post(f"/v1/campaigns/{{campaign_id}}/{name}", tags=["campaigns"],
                  summary=summary, name=f"{name}_campaign",
                  responses={**_ERRORS, 404: {"description": "no such campaign"}})
        def act(campaign_id: str, key: Key, svc: Svc) -> dict[str, Any]:
            _document(svc, key, campaign_id)
            by = f"api:{key.name}"
            try:
                if name == "pause":
                    pause_campaign(svc.redis, svc.keys, campaign_id, by=by)
                elif name == "resume":
                    resume_campaign(svc.redis, svc.keys, campaign_id, by=by)
                else:
                    cancel_campaign(svc.redis, svc.keys, campaign_id)
            except UnknownCampaignError as exc:
                raise Problem(404, str(exc)) from None
            return _document(svc, key, campaign_id)

    _action("pause", "Pause: workers stop before their next chunk")
    _action("resume", "Resume: recipients not yet final are sent")
    _action("cancel", "Cancel: every recipient not yet sent ends cancelled")

    # -- messages ----------------------------------------------------------------------------
    @app.post("/v1/messages", status_code=202, tags=["messages"],
              responses={**_ERRORS, 409: {"description": "message_id taken by another message"},
                         413: {"description": "body too large"},
                         422: {"description": "invalid message"}})
    def post_messages(
        body: MessageIn | Annotated[list[MessageIn],
                                    Field(min_length=1, max_length=MAX_MESSAGES)],
        request: Request, key: Key, svc: Svc,
    ) -> Accepted | AcceptedMany:
        """Enqueue one message (``{"id"}``) or a list (``{"ids"}``), idempotent by
        ``message_id`` or the ``Idempotency-Key`` header."""
        single = isinstance(body, MessageIn)
        messages = [body] if isinstance(body, MessageIn) else body
        idem = request.headers.get("idempotency-key")
        prepared: list[tuple[MessageIn, str, str | None]] = []
        for i, m in enumerate(messages):
            where = "" if single else f"[{i}]."
            try:
                to = check_address(m.to.strip())
            except ValueError as exc:
                raise Problem(422, f"{where}to: {exc}",
                              errors=[{"field": f"{where}to", "detail": str(exc)}]) from None
            _allowed(key, m.provider)
            mid = m.message_id
            if mid is None and idem:
                mid = derived_id("m", key.name, idem if single else f"{idem}\n{i}")
            prepared.append((m, to, mid))
        ids: list[str] = []
        for i, (m, to, mid) in enumerate(prepared):
            try:
                ids.append(svc.mail.send_message(
                    to, provider=m.provider, sender=m.sender, subject=m.subject, text=m.text,
                    html=m.html, reply_to=m.reply_to, headers=m.headers,
                    variables=m.variables, message_id=mid))
            except InputError as exc:
                # The message id exists with another definition: a conflict, not bad input.
                status = 409 if "already exists" in str(exc) else 422
                problem = input_problem(exc, status=status)
                if not single:
                    problem.detail = (f"[{i}]: {problem.detail} (messages before it were "
                                      "enqueued; resending with the same Idempotency-Key "
                                      "sends nothing twice)")
                    problem.errors = [{"index": i, **e} for e in problem.errors] or [
                        {"index": i, "detail": str(exc)}]
                raise problem from None
        return Accepted(id=ids[0]) if single else AcceptedMany(ids=ids)

    # -- suppressions ------------------------------------------------------------------------
    @app.get("/v1/suppressions", tags=["suppressions"], responses={**_ERRORS})
    def list_suppressions(
        key: Key, svc: Svc,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Suppressed addresses, a page at a time."""
        try:
            page = SuppressionList(svc.redis, svc.keys).list(cursor=cursor, limit=limit)
        except ValueError as exc:
            raise Problem(400, f"query 'cursor': {exc}",
                          errors=[{"field": "cursor", "detail": str(exc)}]) from None
        return {"entries": [{"address": e.address, "reason": e.reason, "source": e.source,
                             "at": e.at} for e in page.entries],
                "next_cursor": page.next_cursor}

    @app.post("/v1/suppressions", tags=["suppressions"], responses={**_ERRORS})
    def add_suppressions(body: SuppressIn, key: Key, svc: Svc) -> dict[str, int]:
        """Suppress ``address`` or ``addresses``: later campaigns skip them."""
        addresses = ([body.address] if body.address else []) + list(body.addresses or [])
        if not addresses:
            raise Problem(422, "give 'address' or 'addresses'",
                          errors=[{"field": "address", "detail": "required"}])
        for i, a in enumerate(addresses):
            if "@" not in a or not a.strip():
                raise Problem(422, f"{a!r} is not an email address",
                              errors=[{"field": "address" if body.address and i == 0
                                       else "addresses", "detail": "not an address"}])
        try:
            added = SuppressionList(svc.redis, svc.keys).add_many(
                addresses, body.reason, source=f"api:{key.name}")
        except ValueError as exc:
            raise Problem(422, str(exc)) from None
        return {"added": added}

    @app.delete("/v1/suppressions", status_code=204, tags=["suppressions"],
                responses={**_ERRORS, 404: {"description": "not on the list"}})
    def remove_suppression(
        address: Annotated[str, Query(min_length=1, max_length=320)], key: Key, svc: Svc,
    ) -> Response:
        """Take ``address`` off the suppression list."""
        try:
            removed = SuppressionList(svc.redis, svc.keys).remove(address)
        except ValueError as exc:
            raise Problem(422, str(exc)) from None
        if not removed:
            raise Problem(404, f"{address!r} is not on the suppression list")
        return Response(status_code=204)

    # -- dead letters ------------------------------------------------------------------------
    @app.get("/v1/dead-letters", tags=["dead letters"], responses={**_ERRORS})
    def list_dead_letters(
        key: Key, svc: Svc,
        campaign: Annotated[str | None, Query(max_length=200)] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Recipients that ran out of attempts (of the key's providers)."""
        try:
            page = DeadLetters(svc.redis, svc.keys).list(campaign, limit, cursor=cursor)
        except ValueError as exc:
            raise Problem(400, f"query 'cursor': {exc}",
                          errors=[{"field": "cursor", "detail": str(exc)}]) from None
        return {"entries": [json.loads(d.to_json()) for d in page.entries
                            if key.allows(d.provider)],
                "next_cursor": page.next_cursor}

    return app
