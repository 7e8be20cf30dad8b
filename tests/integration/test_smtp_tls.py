"""STARTTLS and implicit TLS with AUTH against a real TLS-speaking SMTP server.

The server uses a self-signed certificate made for the test; the provider skips
verification through ``tls_insecure`` (meant for local test relays only). Each mode runs
with and without PIPELINING, since pipelined sessions take over the TLS transport.
"""

from __future__ import annotations

import asyncio
import datetime
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

from config.errors import ProviderAuthError
from config.providers import SmtpConfig
from producers.capture import advertise_pipelining, free_port
from workers.providers.base import OutgoingMessage
from workers.providers.smtp import SmtpProvider

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return ctx


class _Recorder:
    def __init__(self, pipelining: bool) -> None:
        self.received: list[tuple[str, bool, str]] = []  # (rcpt, over TLS, login)
        if pipelining:
            self.handle_EHLO = advertise_pipelining

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.decode() if session.auth_data else ""
        encrypted = server.transport.get_extra_info("ssl_object") is not None
        for rcpt in envelope.rcpt_tos:
            self.received.append((rcpt, encrypted, login))
        return "250 2.0.0 Ok: queued"


def _check_login(server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
    if isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret":
        return AuthResult(success=True, auth_data=auth_data.login)
    return AuthResult(success=False, handled=False)  # aiosmtpd answers 535


@pytest.fixture(params=["starttls", "implicit"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[False, True], ids=["step-by-step", "pipelined"])
def server(request: pytest.FixtureRequest, mode: str, tls_context: ssl.SSLContext
           ) -> Iterator[tuple[Controller, _Recorder, int]]:
    handler = _Recorder(request.param)
    port = free_port()
    tls: dict[str, Any] = ({"tls_context": tls_context, "require_starttls": True}
                           if mode == "starttls" else {"ssl_context": tls_context})
    # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; an implicit-TLS socket
    # is encrypted from the first byte (and the test checks session.ssl either way)
    ctl = Controller(handler, hostname="127.0.0.1", port=port, authenticator=_check_login,
                     auth_require_tls=mode == "starttls", **tls)
    ctl.start()
    try:
        yield ctl, handler, port
    finally:
        ctl.stop()


def _msg(row: int) -> OutgoingMessage:
    to = f"u{row}@example.test"
    return OutgoingMessage(row=row, campaign_id="c", recipient=to, sender="a@shop.test",
                           subject="t", message_id=f"<{row}@shop.test>",
                           mime=f"To: {to}\r\nSubject: t\r\n\r\n.leading dot\r\n".encode())


def _send(cfg: SmtpConfig, rows: int) -> list[Any]:
    async def go() -> list[Any]:
        provider = SmtpProvider("tls", cfg)
        try:
            return await provider.send([_msg(i) for i in range(rows)])
        finally:
            await provider.aclose()

    return asyncio.run(go())


def test_tls_and_auth(server: tuple[Controller, _Recorder, int], mode: str,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, handler, port = server
    monkeypatch.setenv("TLS_RELAY_PW", "s3cret")
    cfg = SmtpConfig(kind="smtp", host="127.0.0.1", port=port, tls=mode,  # type: ignore[arg-type]
                     tls_insecure=True, username="bulk", password_env="TLS_RELAY_PW",
                     pool_size=2)
    results = _send(cfg, 6)
    assert all(r.ok for r in results)
    assert sorted(handler.received) == sorted(
        (f"u{i}@example.test", True, "bulk") for i in range(6))


def test_wrong_password_over_tls_stops_the_provider(
        server: tuple[Controller, _Recorder, int], mode: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, handler, port = server
    monkeypatch.setenv("TLS_RELAY_PW", "wrong")
    cfg = SmtpConfig(kind="smtp", host="127.0.0.1", port=port, tls=mode,  # type: ignore[arg-type]
                     tls_insecure=True, username="bulk", password_env="TLS_RELAY_PW")
    with pytest.raises(ProviderAuthError):
        _send(cfg, 2)
    assert handler.received == []


def test_certificate_is_verified_by_default(server: tuple[Controller, _Recorder, int],
                                           mode: str) -> None:
    _, handler, port = server
    cfg = SmtpConfig(kind="smtp", host="127.0.0.1", port=port, tls=mode,  # type: ignore[arg-type]
                     timeout=5)
    results = _send(cfg, 1)
    assert results[0].error is not None and "certificate" in str(results[0].error).lower()
    assert handler.received == []
