"""Webhook and guard keys of the providers file; the guard's pure verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.providers import SendgridConfig, SesConfig, load_providers
from workers.feedback.store import webhooks_configured
from workers.guard import Thresholds, Window, verdict


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(text)
    return path


def test_webhook_secrets_only_by_env_or_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds a secret inline") as exc:
        load_providers(write(tmp_path, '[providers.sg]\nkind = "sendgrid"\n'
                                       'webhook_signing_key = "MFkwEwYHKoZIzj0C"\n'))
    assert "MFkwEwYHKoZIzj0C" not in str(exc.value)
    with pytest.raises(ConfigError, match="only one of 'webhook_basic_auth_env'"):
        load_providers(write(tmp_path, '[providers.pm]\nkind = "postmark"\n'
                                       'webhook_basic_auth_env = "A"\n'
                                       'webhook_basic_auth_file = "/run/secrets/a"\n'))
    with pytest.raises(ConfigError, match="webhook_signing_key_env"):
        load_providers(write(tmp_path, '[providers.s]\nkind = "smtp"\nhost = "h"\n'
                                       'webhook_signing_key_env = "A"\n'))


def test_topics_tolerance_and_guard_keys(tmp_path: Path) -> None:
    cfg = load_providers(write(tmp_path, '[providers.ses]\nkind = "ses"\n'
                                         'webhook_topic_arns = ["arn:aws:sns:eu-west-1:'
                                         '123456789012:events"]\nwebhook_tolerance = "10m"\n'
                                         'guard_window = "2h"\nguard_complaint_rate = 0.003\n'
                                         ))["ses"]
    assert isinstance(cfg, SesConfig) and cfg.webhook_tolerance == 600
    assert Thresholds.of(cfg) == Thresholds(0.003, 0.05, 1000, 7200)
    assert webhooks_configured(cfg)
    with pytest.raises(ConfigError, match="SNS topic ARN"):
        load_providers(write(tmp_path, '[providers.ses]\nkind = "ses"\n'
                                       'webhook_topic_arns = ["my-topic"]\n'))
    with pytest.raises(ConfigError, match="guard_bounce_rate"):
        load_providers(write(tmp_path, '[providers.x]\nkind = "sendgrid"\n'
                                       'guard_bounce_rate = 5\n'))
    assert not webhooks_configured(SendgridConfig(kind="sendgrid"))


def test_guard_verdict() -> None:
    t = Thresholds()
    assert verdict(Window(999, 0, 500), t) is None  # too few deliveries to judge
    assert verdict(Window(1000, 50, 1), t) is None  # exactly at both thresholds
    reason = verdict(Window(1000, 0, 2), t)
    assert reason is not None and reason.startswith("complaint rate 0.200% (2 of 1000")
    reason = verdict(Window(1000, 51, 0), t)
    assert reason is not None and reason.startswith("hard-bounce rate 5.10%")
