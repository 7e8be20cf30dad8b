"""API base URLs (issue 9, item 10): https only, except for a loopback host; credentials
inside a URL refused; the error names the file, provider and field, never the URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.providers import load_providers


def _load(tmp_path: Path, table: str) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(f"[providers.api]\n{table}")
    load_providers(path)


@pytest.mark.parametrize(("table", "field"), [
    ('kind = "sendgrid"\nbase_url = "http://api.sendgrid.com"\n', "base_url"),
    ('kind = "postmark"\nbase_url = "https://user:s3cr3t-pw@api.postmarkapp.com"\n',
     "base_url"),
    ('kind = "mailgun"\ndomain = "m.example"\nbase_url = "https://s3cr3t-pw@api.mailgun.net"\n',
     "base_url"),
    ('kind = "resend"\nbase_url = "ftp://api.resend.com"\n', "base_url"),
    ('kind = "ses"\nbase_url = "api.example.com/s3cr3t-pw"\n', "base_url"),
    ('kind = "http"\nurl = "http://relay.example.com/send?key=s3cr3t-pw"\n', "url"),
    ('kind = "http"\nurl = "https://u:s3cr3t-pw@relay.example.com/send"\n', "url"),
])
def test_insecure_api_urls_are_refused(tmp_path: Path, table: str, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, table)
    message = str(exc.value)
    assert f"provider 'api': field {field!r}: " in message and str(tmp_path) in message
    assert "s3cr3t-pw" not in message and "example.com" not in message
    assert "sendgrid.com" not in message and "resend.com" not in message


@pytest.mark.parametrize("url", ["http://127.0.0.1:8025", "http://localhost:9000/v3",
                                 "http://[::1]:8080", "https://api.sendgrid.com"])
def test_https_or_loopback_is_accepted(tmp_path: Path, url: str) -> None:
    _load(tmp_path, f'kind = "sendgrid"\nbase_url = "{url}"\n')
    _load(tmp_path, f'kind = "http"\nurl = "{url}/send"\n')
