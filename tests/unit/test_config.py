from __future__ import annotations

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.providers import SmtpConfig, load_providers, read_secret
from config.units import Rate, parse_duration, parse_rate


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "providers.toml"
    p.write_text(text)
    return p


SMTP = '[providers.relay]\nkind = "smtp"\nhost = "mail.example.com"\n'


def test_valid_file(tmp_path: Path) -> None:
    cfg = load_providers(_write(tmp_path, SMTP + 'rate = "600/m"\nburst = 20\nmax_age = "3d"\n'
                                '[providers.relay.domains]\n"Gmail.com" = "20/s"\n'))
    relay = cfg["relay"]
    assert isinstance(relay, SmtpConfig)
    assert relay.rate == Rate(600, 60) and relay.rate.per_second == 10
    assert relay.domains == {"gmail.com": Rate(20, 1)}
    assert relay.max_age == 3 * 86400
    assert relay.tls == "starttls" and relay.port == 587


@pytest.mark.parametrize(("extra", "field"), [
    ('rate = "fast"\n', "'rate'"),
    ('rate = "0/s"\n', "'rate'"),
    ('rate = "-3/s"\n', "'rate'"),
    ("burst = 0\n", "'burst'"),
    ('tls = "ssl"\n', "'tls'"),
    ("port = 70000\n", "'port'"),
    ('colour = "red"\n', "'colour'"),
    ('[providers.relay.domains]\n"gmail.com" = "lots"\n', "'domains': domain 'gmail.com'"),
])
def test_errors_name_file_provider_and_field(tmp_path: Path, extra: str, field: str) -> None:
    path = _write(tmp_path, SMTP + extra)
    with pytest.raises(ConfigError) as exc:
        load_providers(path)
    message = str(exc.value)
    assert str(path) in message and "provider 'relay'" in message and f"field {field}" in message


def test_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="provider 'x'"):
        load_providers(_write(tmp_path, '[providers.x]\nkind = "carrier-pigeon"\n'))


@pytest.mark.parametrize("key", ["password", "api_key", "token"])
def test_inline_secrets_refused_without_echoing_them(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_providers(_write(tmp_path, SMTP + f'{key} = "hunter2"\n'))
    assert f"field {key!r} holds a secret inline" in str(exc.value)
    assert "hunter2" not in str(exc.value)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the providers file"):
        load_providers(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_providers(_write(tmp_path, "[providers\n"))


def test_read_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_PW", "s3cret")
    assert read_secret("relay", "RELAY_PW", None) == "s3cret"
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    assert read_secret("relay", None, secret) == "from-file"
    assert read_secret("relay", None, None) is None
    monkeypatch.delenv("RELAY_PW")
    with pytest.raises(ConfigError, match="environment variable RELAY_PW is not set"):
        read_secret("relay", "RELAY_PW", None)


@pytest.mark.parametrize(("text", "per_second"), [
    ("14/s", 14), ("600/m", 10), ("7200/h", 2), ("5/10s", 0.5), ("1.5/sec", 1.5)])
def test_parse_rate(text: str, per_second: float) -> None:
    assert parse_rate(text).per_second == pytest.approx(per_second)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("2h", 7200), ("3d", 259200), ("250ms", 0.25), (45, 45)])
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects() -> None:
    with pytest.raises(ValueError):
        parse_duration("soon")
