"""``POST /v1/webhooks/{provider}``: delivery events from providers, under ``bulkmail api``.

Authenticated by the provider's own signature, not by our API keys (see
:mod:`workers.feedback.verify` and :mod:`workers.feedback.sns`); ``provider`` is the
name in the providers file, so several accounts of one kind each have their own URL and
secret. Answers:

- 404: no such provider, a kind without webhooks, or no webhook secret configured for
  it (an unsigned call is never accepted);
- 401: bad, missing or stale signature, a reused Mailgun token, an SNS topic not in
  ``webhook_topic_arns``: nothing is recorded;
- 400: a signed body that is not the provider's format;
- 200: ``{"received", "recorded", "duplicate", "ignored", "unmatched", "suppressed"}``
  (a repeated event is a duplicate: recorded once, answered 200 so the provider stops).

Verified events are normalised, matched to the ledger, deduplicated and stored
(:mod:`workers.feedback.store`); hard bounces and complaints are suppressed; the
complaint guard (:mod:`workers.guard`) sees the campaign's new events.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable

import httpx
import redis
from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from config.errors import ConfigError
from config.providers import ProviderConfig, SesConfig, read_secret
from config.settings import Settings
from producers.service.problems import Problem
from workers.feedback.normalize import FeedbackEvent, normalize
from workers.feedback.sns import Fetch, SnsVerifier, fetch_https
from workers.feedback.store import Tally, record
from workers.feedback.verify import (
    SignatureError,
    json_body,
    load_sendgrid_key,
    svix_secret,
    verify_basic_auth,
    verify_mailgun,
    verify_sendgrid,
    verify_svix,
)
from workers.guard import Thresholds, observe

__all__ = ["WEBHOOK_KINDS", "WebhookReceiver", "install_webhooks"]

log = logging.getLogger("bulkmail.webhooks")

#: provider kinds with a webhook scheme
WEBHOOK_KINDS = ("sendgrid", "mailgun", "postmark", "ses", "resend")


class WebhookReceiver:
    """What the webhook route needs: settings, Redis, SNS verifiers, a clock.

    ``fetch`` (SNS certificates and subscription confirmations) and ``clock`` are
    injectable for tests.
    """

    def __init__(self, settings: Settings, *, fetch: Fetch = fetch_https,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.keys = settings.keys
        self.fetch = fetch
        self.clock = clock
        self._providers: dict[str, ProviderConfig] | None = None
        self._redis: redis.Redis[bytes] | None = None
        self._sns: dict[str, SnsVerifier] = {}

    @property
    def providers(self) -> dict[str, ProviderConfig]:
        if self._providers is None:
            self._providers = self.settings.load_providers()
        return self._providers

    @property
    def redis(self) -> redis.Redis[bytes]:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.settings.redis_url,
                                               socket_connect_timeout=3)
        return self._redis

    def sns(self, name: str, cfg: SesConfig) -> SnsVerifier:
        verifier = self._sns.get(name)
        if verifier is None or verifier.fetch is not self.fetch:
            verifier = self._sns[name] = SnsVerifier(cfg.webhook_topic_arns, fetch=self.fetch)
        return verifier

    def config(self, name: str) -> ProviderConfig:
        cfg = self.providers.get(name)
        if cfg is None or cfg.kind not in WEBHOOK_KINDS:
            raise Problem(404, f"no provider {name!r} with webhooks")
        return cfg

    def secret(self, name: str, cfg: ProviderConfig) -> str:
        """The provider's webhook secret; 404 when none is configured."""
        env = getattr(cfg, "webhook_signing_key_env", None) or getattr(
            cfg, "webhook_basic_auth_env", None)
        file = getattr(cfg, "webhook_signing_key_file", None) or getattr(
            cfg, "webhook_basic_auth_file", None)
        try:
            value = read_secret(name, env, file)
        except ConfigError as exc:
            log.error("webhook of provider %s: %s", name, exc)
            raise Problem(503, f"the webhook secret of provider {name!r} cannot be read "
                               "(see the API log)") from None
        if value is None:
            raise Problem(404, f"provider {name!r} has no webhook secret configured "
                               "(webhook_signing_key_env / _file"
                               + (", webhook_basic_auth_env / _file" if cfg.kind == "postmark"
                                  else "") + ")")
        return value

    async def receive(self, name: str, request: Request) -> dict[str, int]:
        cfg = self.config(name)
        body = await request.body()
        try:
            events, token_key = await self._verified_events(name, cfg, request, body)
        except SignatureError as exc:
            log.warning("refused a webhook call for provider %s: %s", name, exc)
            await run_in_threadpool(self._count, name, {"refused": 1})
            raise Problem(401, f"webhook of provider {name!r}: {exc}") from None
        try:
            tally = await run_in_threadpool(self._record, name, cfg, events)
        except BaseException:
            if token_key is not None:
                # nothing was kept: the provider's retry of this very call is welcome
                with contextlib.suppress(redis.RedisError):
                    await run_in_threadpool(self.redis.delete, token_key)
            raise
        return tally.as_dict()

    async def _verified_events(self, name: str, cfg: ProviderConfig, request: Request,
                               body: bytes) -> tuple[list[FeedbackEvent], str | None]:
        """The call's events once its signature is verified, and the Mailgun token key
        taken for it (given back if recording fails)."""
        now = self.clock()
        tolerance = float(getattr(cfg, "webhook_tolerance", 300.0))
        headers = request.headers
        if isinstance(cfg, SesConfig):
            return await self._sns_events(name, cfg, request, body, now, tolerance), None
        secret = self.secret(name, cfg)
        event_id = ""
        token_key: str | None = None
        if cfg.kind == "sendgrid":
            try:
                key = load_sendgrid_key(secret)
            except ValueError as exc:
                log.error("webhook of provider %s: %s", name, exc)
                raise Problem(503, f"the webhook key of provider {name!r} is not usable "
                                   "(see the API log)") from None
            verify_sendgrid(key, headers, body, now=now, tolerance=tolerance)
        elif cfg.kind == "mailgun":
            try:
                payload = json_body(body)
            except ValueError:
                raise SignatureError("the body is not JSON, so not signed") from None
            token = verify_mailgun(secret, payload, now=now, tolerance=tolerance)
            token_key = self.keys.webhook_token(name, token[:200])
            fresh = await run_in_threadpool(self.redis.set, token_key, "1", nx=True,
                                            ex=int(2 * tolerance) + 60)
            if not fresh:
                raise SignatureError("the signature token was used before (replay)")
        elif cfg.kind == "postmark":
            verify_basic_auth(secret, headers.get("authorization"))
        else:  # resend
            try:
                key_bytes = svix_secret(secret)
            except ValueError as exc:
                log.error("webhook of provider %s: %s", name, exc)
                raise Problem(503, f"the webhook secret of provider {name!r} is not usable "
                                   "(see the API log)") from None
            event_id = verify_svix(key_bytes, headers, body, now=now, tolerance=tolerance)
        try:
            return normalize(cfg.kind, name, json_body(body), event_id=event_id), token_key
        except ValueError as exc:
            raise Problem(400, f"webhook of provider {name!r}: {exc}") from None

    async def _sns_events(self, name: str, cfg: SesConfig, request: Request, body: bytes,
                          now: float, tolerance: float) -> list[FeedbackEvent]:
        if not cfg.webhook_topic_arns:
            raise Problem(404, f"provider {name!r} has no webhook_topic_arns configured")
        try:
            message = json_body(body)
        except ValueError:
            raise SignatureError("the body is not JSON, so not signed") from None
        declared = request.headers.get("x-amz-sns-message-type")
        if declared is not None and isinstance(message, dict) and declared != message.get(
                "Type"):
            raise SignatureError("x-amz-sns-message-type does not match the body's Type")
        verifier = self.sns(name, cfg)
        try:
            await verifier.verify(message, now=now, tolerance=tolerance)
            if message.get("Type") == "SubscriptionConfirmation":
                await verifier.confirm(message)
                log.info("confirmed the SNS subscription of provider %s to %s", name,
                         message.get("TopicArn"))
                return []
        except httpx.HTTPError as exc:
            raise Problem(503, f"webhook of provider {name!r}: could not reach SNS: "
                               f"{type(exc).__name__}") from None
        if message.get("Type") != "Notification":
            return []
        try:
            inner = json.loads(str(message.get("Message")))
        except ValueError:
            return []  # e.g. "Successfully validated SNS topic for Amazon SES ..."
        try:
            return normalize("ses", name, inner, event_id=str(message.get("MessageId")))
        except ValueError as exc:
            raise Problem(400, f"webhook of provider {name!r}: {exc}") from None

    def _record(self, name: str, cfg: ProviderConfig, events: list[FeedbackEvent]) -> Tally:
        tally = record(self.redis, self.keys, events, source=f"webhook:{name}")
        thresholds = Thresholds.of(cfg)
        for cid, label in tally.firsts:
            observe(self.redis, self.keys, cid, name, label, thresholds)
        self._count(name, tally.as_dict())
        return tally

    def _count(self, name: str, counts: dict[str, int]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for k, v in counts.items():
            if v:
                pipe.hincrby(self.keys.webhook_counts(name), k, v)
        pipe.execute()


def _router() -> APIRouter:
    router = APIRouter(tags=["webhooks"])

    @router.post("/v1/webhooks/{provider}",
                 responses={200: {"description": "what the call recorded"},
                            400: {"description": "a signed body of the wrong format"},
                            401: {"description": "bad, missing or stale signature"},
                            404: {"description": "no such provider, or no webhook secret"}})
    async def webhook(provider: str, request: Request) -> JSONResponse:
        """Delivery events from a provider, authenticated by its signature."""
        receiver: WebhookReceiver = request.app.state.webhooks
        return JSONResponse(await receiver.receive(provider, request))

    return router


def install_webhooks(app: FastAPI, settings: Settings) -> None:
    """Add the webhook route to the API app (``app.state.webhooks`` is its receiver;
    tests may replace it with one that has a fake ``fetch`` or clock)."""
    app.state.webhooks = WebhookReceiver(settings)
    app.include_router(_router())
