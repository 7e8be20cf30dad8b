"""Every provider kind is listed once (config.providers.KINDS) and built the same way:
``create_provider(name, cfg, gate=...)``, SMTP and HTTP kinds alike."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from config.providers import CONFIG_TYPES, KINDS, ProvidersFile
from workers.providers import create_provider
from workers.providers.base import Lease
from workers.providers.http_base import HttpProvider
from workers.providers.smtp import SmtpProvider

_MINIMAL: dict[str, dict[str, Any]] = {
    "smtp": {"host": "127.0.0.1"},
    "sendgrid": {"api_key_env": "KIND_KEY"},
    "mailgun": {"api_key_env": "KIND_KEY", "domain": "m.example"},
    "postmark": {"api_key_env": "KIND_KEY"},
    "resend": {"api_key_env": "KIND_KEY"},
    "ses": {"access_key_id_env": "KIND_KEY", "secret_access_key_env": "KIND_KEY"},
    "http": {"url": "https://relay.test/send"},
}


class _Gate:
    async def open(self, *, wait: bool) -> Lease | None:
        return None


def test_the_kinds_are_the_config_union() -> None:
    assert set(KINDS) == set(_MINIMAL)
    assert set(KINDS.values()) == set(CONFIG_TYPES)
    for cls in CONFIG_TYPES:
        assert callable(importlib.import_module(cls.implementation).create)


@pytest.mark.parametrize("kind", sorted(_MINIMAL))
def test_every_kind_takes_the_same_arguments(kind: str, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    monkeypatch.setenv("KIND_KEY", "k")
    cfg = ProvidersFile.model_validate(
        {"providers": {"p": {"kind": kind, **_MINIMAL[kind]}}}).providers["p"]
    gate = _Gate()
    provider = create_provider("p", cfg, gate=gate)
    if isinstance(provider, SmtpProvider):
        assert provider.pool.capped
    else:
        assert isinstance(provider, HttpProvider) and provider.call_gate is gate
    uncapped = create_provider("p", cfg)
    assert not isinstance(uncapped, SmtpProvider) or not uncapped.pool.capped
