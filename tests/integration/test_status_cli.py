"""bulkmail status tells an operator why a provider is slow or stopped, in words."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from config.schema import Keys
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration


def test_status_shows_throttling_and_rejected_credentials(
        tmp_path: Path, provider_name: str, redis_client: redis.Redis[bytes], keys: Keys,
        bulkmail_env: Callable[[str], dict[str, str]], forget_queue: None) -> None:
    env = bulkmail_env(f'[providers.{provider_name}]\nkind = "smtp"\nhost = "127.0.0.1"\n')
    campaign = tmp_path / "c.toml"
    campaign.write_text(f'id = "st-1"\nprovider = "{provider_name}"\nfrom = "a@shop.test"\n'
                        'subject = "Hi"\ntext = "x"\n')
    rows = tmp_path / "r.csv"
    rows.write_text("email\na@example.test\nb@example.test\n")
    assert run_cli(["send", str(campaign), "--recipients", str(rows)], env).returncode == 0

    redis_client.hset(keys.provider_state(provider_name), mapping={
        "reason": "421 4.7.0 Too many messages, rate limited", "at": 1_800_000_000,
        "throttles": 37, "decreases": 1,
        "auth_error": "535 5.7.8 Authentication credentials invalid",
        "auth_error_at": 1_800_000_100})
    out = run_cli(["status", "st-1"], env)
    assert out.returncode == 0
    assert "last throttled at" in out.stdout and "421 4.7.0 Too many messages" in out.stdout
    assert "37 throttling replies" in out.stdout
    assert "credentials rejected at" in out.stdout and "535 5.7.8" in out.stdout

    data = json.loads(run_cli(["status", "st-1", "--json"], env).stdout)
    assert data["providers"]["reason"].startswith("421") and data["queued"] == 2
