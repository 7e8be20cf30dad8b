"""SMTP transport security: AUTH only over TLS (plaintext only when asked for on a
loopback host), ``tls_insecure`` only for loopback hosts, and ``providers check`` saying
how the session is protected (issue 9, item 6). Config errors name the file, provider and
field, never a value."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from config.errors import ConfigError
from config.providers import SmtpConfig, is_loopback_host, load_providers
from producers.capture import free_port
from workers.health import check_provider
from workers.providers.smtp import tls_state

SECRET = "hunter2-do-not-print"


def _load(tmp_path: Path, body: str) -> dict[str, Any]:
    path = tmp_path / "providers.toml"
    path.write_text(f'[providers.relay]\nkind = "smtp"\n{body}')
    return load_providers(path)


@pytest.mark.parametrize(("body", "field"), [
    # AUTH in clear to a remote relay
    ('host = "mail.example.com"\ntls = "none"\nusername = "u"\npassword_env = "PW"\n',
     "username"),
    # ... even when asked for: plaintext AUTH only for a loopback host
    ('host = "mail.example.com"\ntls = "none"\nallow_plaintext_auth = true\nusername = "u"\n',
     "allow_plaintext_auth"),
    ('host = "10.0.0.1"\ntls = "none"\nallow_plaintext_auth = true\n', "allow_plaintext_auth"),
    # unverified certificates only for a loopback host
    ('host = "mail.example.com"\ntls_insecure = true\n', "tls_insecure"),
    ('host = "127.example.com"\ntls = "implicit"\ntls_insecure = true\n', "tls_insecure"),
])
def test_config_refuses_cleartext_auth_and_unverified_tls(tmp_path: Path, body: str,
                                                          field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, body)
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'providers.toml'}: provider 'relay': "
                              f"field {field!r}: ")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost",
                                  "LOCALHOST."])
def test_loopback_hosts_may_opt_in(tmp_path: Path, host: str) -> None:
    cfg = _load(tmp_path, f'host = "{host}"\ntls = "none"\nallow_plaintext_auth = true\n'
                          'username = "u"\n[providers.test]\nkind = "smtp"\n'
                          f'host = "{host}"\ntls_insecure = true\n')
    assert cfg["relay"].allow_plaintext_auth and cfg["test"].tls_insecure
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["mail.example.com", "10.0.0.1", "127.example.com",
                                  "localhost.example.com", "::2", ""])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)


def test_config_errors_never_print_values(tmp_path: Path) -> None:
    for body in [f'host = "h"\nsmtp_password = "{SECRET}"\n',
                 f'host = "h"\nport = "{SECRET}"\n',
                 f'host = "h"\ntls = "{SECRET}"\n',
                 f'host = "h"\nusername = "{SECRET}"\ntls = "none"\n']:
        with pytest.raises(ConfigError) as exc:
            _load(tmp_path, body)
        assert SECRET not in str(exc.value)
        assert "provider 'relay': field '" in str(exc.value)


def test_tls_state_in_words() -> None:
    def state(**kw: Any) -> str:
        return tls_state(SmtpConfig(kind="smtp", **{"host": "mail.example.com", **kw}))

    assert state() == "STARTTLS, certificate verified"
    assert state(tls="implicit") == "implicit TLS, certificate verified"
    assert state(host="127.0.0.1", tls_insecure=True) == (
        "STARTTLS, certificate NOT verified (tls_insecure)")
    assert state(host="127.0.0.1", tls="none") == "no TLS (loopback)"


# -- providers check against real servers --------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for localhost / 127.0.0.1, and
    the certificate file (a client that trusts it can verify the server)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("sec-tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return ctx, folder / "cert.pem"


class _Accept:
    def __init__(self) -> None:
        self.logins: list[tuple[str, bool]] = []  # (login, over TLS)

    def check(self, server: Any, session: Any, envelope: Any, mechanism: str,
              auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret":
            encrypted = server.transport.get_extra_info("ssl_object") is not None
            self.logins.append((auth_data.login.decode(), encrypted))
            return AuthResult(success=True, auth_data=auth_data.login)
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def _relay(tls_context: ssl.SSLContext | None) -> Iterator[tuple[_Accept, int]]:
    """An aiosmtpd relay; STARTTLS required when given a context."""
    handler = _Accept()
    port = free_port()
    starttls = tls_context is not None
    tls: dict[str, Any] = ({"tls_context": tls_context, "require_starttls": True}
                           if starttls else {})
    ctl = Controller(handler, hostname="127.0.0.1", port=port, authenticator=handler.check,
                     auth_require_tls=starttls, **tls)
    ctl.start()
    try:
        yield handler, port
    finally:
        ctl.stop()


@pytest.fixture
def relay() -> Iterator[tuple[_Accept, int]]:
    yield from _relay(None)


@pytest.fixture
def tls_relay(certificate: tuple[ssl.SSLContext, Path]) -> Iterator[tuple[_Accept, int]]:
    yield from _relay(certificate[0])


def _check(tmp_path: Path, body: str) -> tuple[bool, str]:
    return check_provider("relay", _load(tmp_path, body)["relay"])


def test_check_says_no_tls_on_loopback(tmp_path: Path, relay: tuple[_Accept, int],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    handler, port = relay
    monkeypatch.setenv("SEC_PW", "s3cret")
    ok, text = _check(tmp_path, f'host = "127.0.0.1"\nport = {port}\ntls = "none"\n'
                                'allow_plaintext_auth = true\nusername = "bulk"\n'
                                'password_env = "SEC_PW"\n')
    assert ok, text
    assert text.endswith("; no TLS (loopback)") and "AUTH" in text
    assert handler.logins == [("bulk", False)]


def test_check_verifies_the_certificate(tmp_path: Path, tls_relay: tuple[_Accept, int],
                                        certificate: tuple[ssl.SSLContext, Path],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    handler, port = tls_relay
    monkeypatch.setenv("SEC_PW", "s3cret")
    body = (f'host = "localhost"\nport = {port}\nusername = "bulk"\n'
            'password_env = "SEC_PW"\n')
    # the certificate is not trusted: checked, so refused
    ok, text = _check(tmp_path, body)
    assert not ok and "certificate" in text.lower()
    assert handler.logins == []
    # unverified on a loopback host: works, and says so
    ok, text = _check(tmp_path, body + "tls_insecure = true\n")
    assert ok and text.endswith("; STARTTLS, certificate NOT verified (tls_insecure)"), text
    # trusted (the system trust store is pointed at it): verified
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[1]))
    ok, text = _check(tmp_path, body)
    assert ok and text.endswith("; STARTTLS, certificate verified"), text
    assert handler.logins == [("bulk", True), ("bulk", True)]
