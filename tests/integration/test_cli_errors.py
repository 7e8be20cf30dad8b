"""Bad input: a clear message naming what is wrong, a non-zero exit, nothing enqueued."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration

PROVIDERS = '[providers.relay]\nkind = "smtp"\nhost = "127.0.0.1"\nport = 2525\ntls = "none"\n'


def _files(tmp_path: Path, *, campaign: str, rows: str = "email,name\na@example.test,A\n"
           ) -> tuple[Path, Path]:
    c = tmp_path / "c.toml"
    c.write_text(campaign)
    r = tmp_path / "r.csv"
    r.write_text(rows)
    return c, r


GOOD = ('id = "bad-input"\nprovider = "relay"\nfrom = "a@shop.test"\nsubject = "Hi"\n'
        'text = "Hello {{ name }}"\n')


def _nothing_enqueued(redis_url: str, prefix: str) -> bool:
    client = redis.Redis.from_url(redis_url)
    return not list(client.scan_iter(match=f"{prefix}:*"))


@pytest.mark.parametrize(("campaign", "rows", "expected"), [
    (GOOD.replace('"relay"', '"nope"'), None, "unknown provider 'nope'"),
    (GOOD.replace("{{ name }}", "{{ name "), None, "text"),
    (GOOD.replace('text = "Hello {{ name }}"\n', ""), None, "no body"),
    (GOOD, "name,address\nA,a@example.test\n", "no 'email' column"),
])
def test_bad_campaign_input(tmp_path: Path, redis_url: str, key_prefix: str,
                            bulkmail_env: Callable[[str], dict[str, str]], campaign: str,
                            rows: str | None, expected: str) -> None:
    env = bulkmail_env(PROVIDERS)
    c, r = _files(tmp_path, campaign=campaign, **({"rows": rows} if rows else {}))
    out = run_cli(["send", str(c), "--recipients", str(r)], env)
    assert out.returncode == 2
    assert expected in out.stderr
    assert _nothing_enqueued(redis_url, key_prefix)


def test_missing_recipient_file(tmp_path: Path, bulkmail_env: Callable[[str], dict[str, str]]
                                ) -> None:
    env = bulkmail_env(PROVIDERS)
    c, _ = _files(tmp_path, campaign=GOOD)
    out = run_cli(["send", str(c), "--recipients", str(tmp_path / "missing.csv")], env)
    assert out.returncode == 2
    assert "missing.csv: recipient file not found" in out.stderr


def test_inline_secret_is_refused(tmp_path: Path, bulkmail_env: Callable[[str], dict[str, str]]
                                  ) -> None:
    env = bulkmail_env(PROVIDERS + 'username = "u"\npassword = "hunter2"\n')
    c, r = _files(tmp_path, campaign=GOOD)
    out = run_cli(["send", str(c), "--recipients", str(r)], env)
    assert out.returncode == 2
    assert "provider 'relay': field 'password' holds a secret inline" in out.stderr
    assert "hunter2" not in out.stderr


def test_unreachable_redis_names_the_url(tmp_path: Path,
                                         bulkmail_env: Callable[[str], dict[str, str]]) -> None:
    env = bulkmail_env(PROVIDERS)
    env["BULKMAIL_REDIS_URL"] = "redis://:s3cret@127.0.0.1:1/0"
    c, r = _files(tmp_path, campaign=GOOD)
    out = run_cli(["send", str(c), "--recipients", str(r)], env)
    assert out.returncode == 2
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in out.stderr
    assert "s3cret" not in out.stderr


def test_providers_check_reports_each_provider(
        tmp_path: Path, bulkmail_env: Callable[[str], dict[str, str]]) -> None:
    from producers.capture import CaptureServer

    with CaptureServer() as smtp:
        env = bulkmail_env(
            f'[providers.up]\nkind = "smtp"\nhost = "127.0.0.1"\nport = {smtp.port}\n'
            'tls = "none"\n'
            '[providers.down]\nkind = "smtp"\nhost = "127.0.0.1"\nport = 1\ntls = "none"\n'
            "timeout = 2\n")
        out = run_cli(["providers", "check"], env)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert any(line.startswith("ok") and "up (smtp)" in line and "EHLO" in line
               for line in lines)
    assert any(line.startswith("FAIL") and "down (smtp)" in line for line in lines)


def test_worker_for_unknown_provider_refuses_to_start(
        bulkmail_env: Callable[[str], dict[str, str]]) -> None:
    out = run_cli(["worker", "--provider", "nope"], bulkmail_env(PROVIDERS))
    assert out.returncode == 2
    assert "unknown provider(s) nope" in out.stderr and "configured: relay" in out.stderr
