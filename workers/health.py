"""``bulkmail providers check``: can we reach and log in to each provider?"""

from __future__ import annotations

import asyncio
import time

import aiosmtplib

from config.errors import BulkmailError
from config.providers import ProviderConfig, SmtpConfig, read_secret

__all__ = ["check_provider"]


async def _check_smtp(name: str, cfg: SmtpConfig) -> str:
    from workers.providers.smtp import smtp_client, tls_state

    password = read_secret(name, cfg.password_env, cfg.password_file)
    client = smtp_client(cfg)  # the same client, TLS and certificate checks as sending
    started = time.perf_counter()
    steps = []
    await client.connect()
    steps.append("connect+EHLO")
    if cfg.tls == "starttls":
        steps.append("STARTTLS")
    elif cfg.tls == "implicit":
        steps.append("TLS")
    if cfg.username:
        await client.login(cfg.username, password or "")
        steps.append("AUTH")
    await client.quit()
    ms = (time.perf_counter() - started) * 1000
    return f"{cfg.host}:{cfg.port} {' + '.join(steps)} ok in {ms:.0f} ms; {tls_state(cfg)}"


def check_provider(name: str, cfg: ProviderConfig) -> tuple[bool, str]:
    """``(ok, what happened)`` for one provider. Never raises for a provider problem.

    For SMTP the text ends with the TLS state ("STARTTLS, certificate verified",
    "no TLS (loopback)", ...)."""
    try:
        if isinstance(cfg, SmtpConfig):
            return True, asyncio.run(_check_smtp(name, cfg))
        from workers.providers import create_provider

        provider = create_provider(name, cfg)
        check = getattr(provider, "check", None)
        if check is None:
            return True, "configured (key readable); no live check for this kind"
        return True, str(asyncio.run(check()))
    except (aiosmtplib.SMTPException, OSError, BulkmailError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
