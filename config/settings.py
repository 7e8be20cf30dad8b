"""Typed settings from the environment (``BULKMAIL_*``), validated at start-up.

Nothing here runs at import: callers build :class:`Settings` once (the CLI at start,
``Bulkmail()``, ``workers.app.create_app``) with :meth:`Settings.from_env` and pass it
down.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from config.errors import ConfigError
from config.providers import ProviderConfig, load_providers
from config.schema import Keys

__all__ = ["Settings", "redact_url"]

ENV_PREFIX = "BULKMAIL_"

#: query parameters whose value is a secret (``redis://host/0?password=...``)
_SECRET_PARAMS = frozenset({"password", "passwd", "pass", "pwd", "secret", "token",
                            "auth", "api_key", "apikey", "access_key", "secret_key"})
_HIDDEN = "***"


def _redact_one(url: str) -> str:
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if at and colon:
        # the first "//netloc" is the authority; editing the text in place keeps the
        # URL as written (urlunsplit would turn "unix:///path" into "unix:/path")
        url = url.replace(f"//{parts.netloc}", f"//{user}:{_HIDDEN}@{hostinfo}", 1)
    if parts.query:
        query = "&".join(
            f"{name}={_HIDDEN}" if sep and name.lower() in _SECRET_PARAMS
            else f"{name}{sep}{value}"
            for name, sep, value in (p.partition("=") for p in parts.query.split("&")))
        # the first "?" starts the query, so its first occurrence is the query itself
        url = url.replace(f"?{parts.query}", f"?{query}", 1)
    return url


def redact_url(url: str) -> str:
    """The URL with every password replaced by ``***``, for messages and logs.

    Covers ``user:pass@`` and secret query parameters (``?password=``), in each URL of a
    ``;``-separated failover list as kombu accepts for a broker.
    """
    return ";".join(_redact_one(u) for u in url.split(";"))


class Settings(BaseSettings):
    """Everything bulkmail reads from its environment.

    Only names of secrets live here; secrets themselves come from the environment or
    files named in the providers file. Build it with :meth:`from_env`, which turns a bad
    variable into a :class:`~config.errors.ConfigError`.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Celery broker; the same Redis by default
    broker_url: str | None = None
    providers: Path = Path("config/providers.toml")
    key_prefix: str = "bulkmail"
    batch_size: int = Field(default=500, ge=1, le=10000)
    #: seconds a batch may stay unacknowledged before Redis hands it to another worker;
    #: must exceed the longest batch (a batch that waits for rate limits parks instead)
    visibility_timeout: int = Field(default=3600, ge=60)
    #: seconds a per-batch lock lives without renewal (the sender renews it every third
    #: of that; a killed worker's batch is free again within this time)
    batch_lock_ttl: int = Field(default=30, ge=3)
    #: CSV recipient files: the longest field (UTF-8 bytes) and the most lines one row may
    #: span; a file beyond either stops the send before anything is enqueued
    max_field_bytes: int = Field(default=128 * 1024, ge=1)
    max_row_lines: int = Field(default=100, ge=1)

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from ``BULKMAIL_*``; a bad variable is a :class:`ConfigError` that
        names the variable and the rule, never the value (it may be a secret)."""
        try:
            return cls()
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        except SettingsError as exc:
            # pydantic-settings names the field and source; the value stays out of it
            raise ConfigError(f"environment: {exc}") from None

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.key_prefix)

    def load_providers(self) -> dict[str, ProviderConfig]:
        return load_providers(self.providers)


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(p) for p in err["loc"])
        lines.append(f"environment variable {ENV_PREFIX}{field.upper()}: "
                     f"{err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)
