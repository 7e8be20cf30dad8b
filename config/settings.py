"""Typed settings from the environment (``BULKMAIL_*``), validated at start-up."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.providers import ProviderConfig, load_providers
from config.schema import Keys

__all__ = ["Settings", "redact_url"]


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class Settings(BaseSettings):
    """Everything bulkmail reads from its environment.

    Only names of secrets live here; secrets themselves come from the environment or
    files named in the providers file.
    """

    model_config = SettingsConfigDict(env_prefix="BULKMAIL_", extra="ignore", frozen=True)

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

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.key_prefix)

    def load_providers(self) -> dict[str, ProviderConfig]:
        return load_providers(self.providers)
