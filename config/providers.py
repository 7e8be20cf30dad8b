"""The providers file: ``[providers.NAME]`` tables, one per SMTP relay or HTTP API.

Loaded and validated at start-up. A mistake is a :class:`~config.errors.ConfigError`
whose message names the file, the provider and the field, never the value (a mistyped
key may hold a secret). Secrets are never written in the file: it names an environment
variable (``*_env``) or a file (``*_file``) instead.

Transport rules checked here: SMTP AUTH only over TLS (``allow_plaintext_auth`` and
``tls_insecure`` only for a loopback host); API URLs ``https://`` (``http://`` only for a
loopback host) without credentials in them.

The provider kinds are listed once: the :data:`ProviderConfig` union; :data:`KINDS`
and :data:`CONFIG_TYPES` are derived from it, and each config class names the module
that implements its kind (``implementation``).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from config.addresses import canonical_domain
from config.errors import ConfigError
from config.units import Rate, parse_duration, parse_rate

__all__ = [
    "CONFIG_TYPES",
    "KINDS",
    "HttpConfig",
    "MailgunConfig",
    "PostmarkConfig",
    "ProviderConfig",
    "ProvidersFile",
    "ResendConfig",
    "SendgridConfig",
    "SesConfig",
    "SmtpConfig",
    "is_loopback_host",
    "load_providers",
    "read_secret",
    "sender_allowed",
]

#: Keys that would hold a secret inline; the file must name an env var or a file instead.
INLINE_SECRET_KEYS = frozenset(
    {"password", "api_key", "apikey", "token", "secret", "secret_access_key", "access_key_id",
     "auth_header_value", "server_token", "webhook_signing_key", "webhook_basic_auth",
     "webhook_secret"}
)

Seconds = Annotated[float, Field(ge=0)]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1): the only hosts
    where plaintext AUTH, unverified TLS and ``http://`` API URLs are accepted."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _sender_pattern(value: str) -> str:
    """An ``allowed_senders`` entry in the form addresses are compared in (lower case,
    IDNA domain); a ValueError names the entry's position, never the value."""
    local, at, domain = value.strip().lower().rpartition("@")
    if not at or not local or not domain:
        raise ValueError("each entry must be an address pattern like \"*@shop.example\"")
    if not domain.isascii():
        import idna

        try:
            domain = ".".join(
                label if label == "*" or label.isascii()
                else idna.encode(label, uts46=True).decode("ascii")
                for label in domain.split("."))
        except idna.IDNAError:
            raise ValueError("an entry has a domain that is not a valid IDN") from None
    return f"{local}@{domain}"


class _Base(BaseModel):
    """Settings every provider kind has: limits, retries and where the secret lives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # rate limits (cluster-wide)
    rate: Rate | None = None
    burst: int | None = Field(default=None, ge=1)
    domains: dict[str, Rate] = Field(default_factory=dict)
    max_connections: int | None = Field(default=None, ge=1)
    max_wait: Seconds = 5.0

    # retries
    max_attempts: int = Field(default=8, ge=1)
    max_age: Seconds = 3 * 86400.0
    backoff_base: Seconds = 30.0
    backoff_max: Seconds = 3600.0
    #: what to do when the connection drops after the body was sent, before the reply
    on_ambiguous: Literal["resend", "fail"] = "resend"
    #: 5.2.2 / 552 mailbox full: retry (bulk-sender practice) or fail
    mailbox_full: Literal["transient", "permanent"] = "transient"

    timeout: Seconds = 30.0
    batch_size: int | None = Field(default=None, ge=1, le=10000)

    #: From addresses campaigns may use with this provider (``"*@shop.example"``,
    #: ``"news@shop.example"``); empty allows any. Checked before anything is enqueued.
    allowed_senders: tuple[str, ...] = ()

    # complaint guard (workers/guard.py): pause a campaign whose complaint or hard-bounce
    # rate through this provider goes over these, once enough deliveries are seen
    guard_complaint_rate: float = Field(default=0.001, ge=0, le=1)
    guard_bounce_rate: float = Field(default=0.05, ge=0, le=1)
    guard_min_delivered: int = Field(default=1000, ge=1)
    guard_window: Seconds = 86400.0

    #: the module that implements this kind (``create(name, cfg, **options)``); a name,
    #: not an import: config never imports workers
    implementation: ClassVar[str]

    @field_validator("allowed_senders", mode="before")
    @classmethod
    def _allowed_senders(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError("must be a list of address patterns")
        if isinstance(v, list | tuple):
            return tuple(_sender_pattern(p) if isinstance(p, str) else p for p in v)
        return v

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> Any:
        return parse_rate(v) if isinstance(v, str) else v

    @field_validator("domains", mode="before")
    @classmethod
    def _domains(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out: dict[str, Any] = {}
        for domain, rate in v.items():
            try:
                # the canonical (IDNA) form recipients' addresses have in the ledger
                out[canonical_domain(str(domain))] = (
                    parse_rate(rate) if isinstance(rate, str) else rate)
            except ValueError as exc:
                raise ValueError(f"domain {domain!r}: {exc}") from None
        return out

    @field_validator("max_wait", "max_age", "backoff_base", "backoff_max", "timeout",
                     "guard_window", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return parse_duration(v) if isinstance(v, str | int | float) else v

    @property
    def effective_burst(self) -> int:
        """``burst`` when set, else one second's worth of the rate (at least 1)."""
        if self.burst is not None:
            return self.burst
        if self.rate is None:
            return 1
        return max(1, int(self.rate.per_second))


class SmtpConfig(_Base):
    implementation: ClassVar[str] = "workers.providers.smtp"
    kind: Literal["smtp"]
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    #: AUTH without TLS; accepted only for a loopback host (a local test relay)
    allow_plaintext_auth: bool = False
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    pool_size: int = Field(default=8, ge=1, le=500)
    max_messages_per_connection: int = Field(default=1000, ge=1)
    #: idle seconds after which a pooled connection is checked with NOOP before use
    idle_check: Seconds = 30.0
    #: skip certificate checks (loopback hosts only: local test relays)
    tls_insecure: bool = False
    #: EHLO name; the local host name when empty
    local_hostname: str | None = None
    #: use SMTP PIPELINING (RFC 2920) when the server advertises it
    pipelining: bool = True
    #: envelope sender (MAIL FROM) for every campaign on this relay that sets none; the
    #: From address when unset
    return_path: str | None = None

    @field_validator("allow_plaintext_auth")
    @classmethod
    def _plaintext_auth(cls, v: bool, info: ValidationInfo) -> bool:
        if v and not is_loopback_host(str(info.data.get("host", ""))):
            raise ValueError("plaintext AUTH is allowed only for a loopback host "
                             "(localhost, 127.0.0.1, ::1)")
        return v

    @field_validator("username")
    @classmethod
    def _auth_needs_tls(cls, v: str | None, info: ValidationInfo) -> str | None:
        # The password would cross the network in clear; a local test relay may opt in.
        if v and info.data.get("tls") == "none" and not info.data.get("allow_plaintext_auth"):
            raise ValueError('AUTH needs TLS: set tls = "starttls" or "implicit" '
                             '(or allow_plaintext_auth = true for a loopback host)')
        return v

    @field_validator("tls_insecure")
    @classmethod
    def _insecure_loopback_only(cls, v: bool, info: ValidationInfo) -> bool:
        if v and not is_loopback_host(str(info.data.get("host", ""))):
            raise ValueError("certificate checks can be skipped only for a loopback host "
                             "(localhost, 127.0.0.1, ::1)")
        return v

    @field_validator("return_path")
    @classmethod
    def _return_path(cls, v: str | None) -> str | None:
        if v is not None:
            _check_bare_address(v)
        return v


def _check_bare_address(value: str) -> None:
    # the full check (IDNA, quoting) is the worker's address parser; here the shape
    local, at, domain = value.rpartition("@")
    if (not at or not local or not domain or any(c in value for c in "<>, \t\r\n\x00")):
        raise ValueError("must be one bare address like bounces@shop.example")


def _check_api_url(v: str | None) -> str | None:
    """https only (http for a loopback host, e.g. a local fake), no credentials inside."""
    if v is None:
        return v
    try:
        parts = urlsplit(v)
        host = parts.hostname or ""
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("credentials in the URL are refused: use api_key_env or "
                         "api_key_file")
    if not host:
        raise ValueError("must be an absolute https:// URL")
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(host)):
        raise ValueError("must use https:// (http:// only for a loopback host)")
    return v


class _HttpBase(_Base):
    base_url: str | None = None
    api_key_env: str | None = None
    api_key_file: Path | None = None
    sandbox: bool = False
    #: concurrent HTTP requests per worker process
    concurrency: int = Field(default=4, ge=1, le=100)
    #: how old a signed webhook timestamp may be (and how far in the future)
    webhook_tolerance: Seconds = 300.0

    @field_validator("webhook_tolerance", mode="before")
    @classmethod
    def _tolerance(cls, v: Any) -> Any:
        return parse_duration(v) if isinstance(v, str | int | float) else v

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        return _check_api_url(v)


class _SigningKeyWebhook(_HttpBase):
    #: the webhook signing key (SendGrid: the public key; Mailgun: the HTTP webhook
    #: signing key; Resend: the ``whsec_`` secret), by env var or file
    webhook_signing_key_env: str | None = None
    webhook_signing_key_file: Path | None = None


class SendgridConfig(_SigningKeyWebhook):
    implementation: ClassVar[str] = "workers.providers.sendgrid"
    kind: Literal["sendgrid"]


class MailgunConfig(_SigningKeyWebhook):
    implementation: ClassVar[str] = "workers.providers.mailgun"
    kind: Literal["mailgun"]
    domain: str


class PostmarkConfig(_HttpBase):
    implementation: ClassVar[str] = "workers.providers.postmark"
    kind: Literal["postmark"]
    message_stream: str = "outbound"
    #: ``user:password`` of the basic auth put in the webhook URL at Postmark
    webhook_basic_auth_env: str | None = None
    webhook_basic_auth_file: Path | None = None


class ResendConfig(_SigningKeyWebhook):
    implementation: ClassVar[str] = "workers.providers.resend"
    kind: Literal["resend"]
    validation: Literal["strict", "permissive"] = "permissive"


class SesConfig(_HttpBase):
    implementation: ClassVar[str] = "workers.providers.ses"
    kind: Literal["ses"]
    region: str = "us-east-1"
    access_key_id_env: str | None = None
    secret_access_key_env: str | None = None
    configuration_set: str | None = None
    #: name of an SES stored template: when set, send with SendBulkEmail (see ses.py)
    bulk_template: str | None = Field(default=None, min_length=1)
    #: SNS topics whose signed messages are this account's events (a valid SNS
    #: signature only proves the message is from SNS, not from our topic)
    webhook_topic_arns: tuple[str, ...] = ()

    @field_validator("webhook_topic_arns", mode="before")
    @classmethod
    def _topics(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError("must be a list of SNS topic ARNs")
        for arn in v if isinstance(v, list | tuple) else ():
            if not (isinstance(arn, str) and arn.startswith("arn:aws") and arn.count(":") == 5):
                raise ValueError("each entry must be an SNS topic ARN "
                                 "(arn:aws:sns:REGION:ACCOUNT:NAME)")
        return v


class HttpConfig(_HttpBase):
    implementation: ClassVar[str] = "workers.providers.generic_http"
    kind: Literal["http"]
    url: str
    http_batch_size: int = Field(default=100, ge=1, le=10000)
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        checked = _check_api_url(v)
        assert checked is not None
        return checked


ProviderConfig = Annotated[
    SmtpConfig | SendgridConfig | MailgunConfig | PostmarkConfig | ResendConfig | SesConfig
    | HttpConfig,
    Field(discriminator="kind"),
]

#: Every provider kind's config class: the one list of kinds (the union above).
CONFIG_TYPES: tuple[type[_Base], ...] = get_args(get_args(ProviderConfig)[0])

#: kind name -> config class
KINDS: dict[str, type[_Base]] = {
    get_args(cls.model_fields["kind"].annotation)[0]: cls for cls in CONFIG_TYPES
}


def sender_allowed(cfg: ProviderConfig, address: str) -> bool:
    """Whether ``address`` (ASCII form, IDNA domain) matches the provider's
    ``allowed_senders`` (any address when the list is empty)."""
    if not cfg.allowed_senders:
        return True
    address = address.lower()
    return any(fnmatch.fnmatchcase(address, p) for p in cfg.allowed_senders)


class ProvidersFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    providers: dict[str, ProviderConfig]


def _check_inline_secrets(path: Path, data: dict[str, Any]) -> None:
    for name, table in (data.get("providers") or {}).items():
        if not isinstance(table, dict):
            continue
        for key in table:
            if key.lower() in INLINE_SECRET_KEYS:
                raise ConfigError(
                    f"{path}: provider {name!r}: field {key!r} holds a secret inline; "
                    f"secrets never go in config files: set {key}_env = \"ENV_VAR_NAME\" "
                    f"or {key}_file = \"/path/to/secret\" instead"
                )


def _describe(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        where = f"{path}"
        if len(loc) >= 2 and loc[0] == "providers":
            where += f": provider {loc[1]!r}"
            loc = loc[2:]
            # the discriminated union puts the kind name first; it is not a field
            if loc and loc[0] in KINDS:
                loc = loc[1:]
        field = ".".join(loc) or "kind"
        # Never the value: a mistyped key may hold a secret (smtp_password = "...").
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: field {field!r}: {msg}")
    return "\n".join(lines)


def load_providers(path: str | Path) -> dict[str, ProviderConfig]:
    """Read and validate a providers file; every problem is a :class:`ConfigError`."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the providers file: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    _check_inline_secrets(p, data)
    try:
        parsed = ProvidersFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(p, exc)) from None
    for name, cfg in parsed.providers.items():
        _check_secret_source(p, name, cfg)
    return dict(parsed.providers)


def _check_secret_source(path: Path, name: str, cfg: ProviderConfig) -> None:
    pairs: list[tuple[str, str]] = [("password_env", "password_file"),
                                    ("api_key_env", "api_key_file"),
                                    ("webhook_signing_key_env", "webhook_signing_key_file"),
                                    ("webhook_basic_auth_env", "webhook_basic_auth_file")]
    for env_field, file_field in pairs:
        if getattr(cfg, env_field, None) and getattr(cfg, file_field, None):
            raise ConfigError(
                f"{path}: provider {name!r}: set only one of {env_field!r} and {file_field!r}"
            )


def read_secret(provider: str, env: str | None, file: Path | None) -> str | None:
    """The secret named by an env var or a file; ``None`` when neither is configured.

    A configured source that is empty or missing is a :class:`ConfigError` naming the
    variable or file (never the value).
    """
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(
                f"provider {provider!r}: environment variable {env} is not set or empty"
            )
        return value
    if file:
        try:
            value = file.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"provider {provider!r}: cannot read secret file {file}: {exc.strerror}"
            ) from exc
        if not value:
            raise ConfigError(f"provider {provider!r}: secret file {file} is empty")
        return value
    return None
