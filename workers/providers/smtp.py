"""SMTP relays over pooled, reused aiosmtplib sessions.

A pool per provider per worker process: connections open lazily (TLS as configured, AUTH
when a username is set), are recycled after ``max_messages_per_connection``, checked with
NOOP after ``idle_check`` seconds idle, and replaced after a drop or a 421. aiosmtplib
allows one transaction at a time per connection, so a batch goes out over ``pool_size``
connections concurrently, one message each.

The transaction is driven step by step (MAIL, RCPT, DATA) instead of through
``sendmail`` so that a failure is known by stage: a RCPT reject fails that recipient
alone, and a connection lost inside DATA is *ambiguous* (the body may have been taken).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import Sequence
from email.utils import parseaddr
from typing import Literal

import aiosmtplib

from config.providers import SmtpConfig, read_secret
from workers.classify import classify_smtp
from workers.errors import (
    AmbiguousDeliveryError,
    DeliveryError,
    ProviderAuthError,
    ProviderBusyError,
    TransientDeliveryError,
)
from workers.providers.base import ConnectionGate, Lease, NoGate, OutgoingMessage, SendResult
from workers.providers.smtp_pipeline import PipelinedWire, Reply, WireLost, dot_stuff

__all__ = ["SmtpPool", "SmtpProvider", "create", "envelope_address"]

Stage = Literal["connect", "helo", "auth", "mail", "rcpt", "data"]


def envelope_address(header_value: str) -> str:
    """``"Shop <news@example.com>"`` -> ``"news@example.com"`` (the SMTP envelope)."""
    return parseaddr(header_value)[1] or header_value


@functools.lru_cache(maxsize=256)
def _mail_from(sender: str) -> bytes:
    # one campaign has one sender: parse it once, not per message
    return b"FROM:<%s>" % envelope_address(sender).encode()


class _Session:
    """One pooled connection and its bookkeeping. ``wire`` is set when the server
    pipelines: the transport then belongs to it, not to the aiosmtplib client."""

    __slots__ = ("client", "last_used", "lease", "needs_reset", "sent", "wire")

    def __init__(self, client: aiosmtplib.SMTP, lease: Lease,
                 wire: PipelinedWire | None = None) -> None:
        self.client = client
        self.sent = 0
        self.last_used = time.monotonic()
        self.lease = lease
        self.wire = wire
        self.needs_reset = False

    @property
    def is_open(self) -> bool:
        return self.wire.is_open if self.wire is not None else self.client.is_connected


class SmtpPool:
    """Up to ``pool_size`` live sessions to one relay, shared by the process's batches."""

    def __init__(self, name: str, cfg: SmtpConfig, *, password: str | None,
                 gate: ConnectionGate | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self._password = password
        self._gate: ConnectionGate = gate or NoGate()
        #: with a cluster-wide connection cap, idle sessions are closed after each batch
        self.capped = gate is not None
        self._idle: list[_Session] = []
        self._slots = asyncio.Semaphore(cfg.pool_size)
        self._live = 0  # open sessions, idle or busy
        self._returned = asyncio.Condition()
        self.opened = 0  # connections opened over the pool's life (for tests and stats)
        self.pipelined = 0  # of which pipelined (the server advertised PIPELINING)

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.cfg.tls_insecure:
            return None
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _open(self, lease: Lease) -> _Session:
        cfg = self.cfg
        client = aiosmtplib.SMTP(
            hostname=cfg.host, port=cfg.port, timeout=cfg.timeout,
            use_tls=cfg.tls == "implicit", start_tls=cfg.tls == "starttls",
            validate_certs=not cfg.tls_insecure, tls_context=self._tls_context(),
            local_hostname=cfg.local_hostname,
        )
        stage: Stage = "connect"
        try:
            await client.connect()
            if cfg.username:
                stage = "auth"
                await client.login(cfg.username, self._password or "")
            stage = "helo"
            if client.is_ehlo_or_helo_needed:
                # transactions go through execute_command, which does not greet for us
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
        except BaseException as exc:
            await lease.release()
            with contextlib.suppress(Exception):
                client.close()
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                raise classify_smtp(exc.code, exc.message, stage=stage) from exc
            if isinstance(exc, aiosmtplib.SMTPException | OSError):
                raise TransientDeliveryError(
                    f"cannot connect to {cfg.host}:{cfg.port}: {exc}") from exc
            raise
        self.opened += 1
        self._live += 1
        wire = None
        if cfg.pipelining and client.supports_extension("pipelining"):
            assert client.protocol is not None and client.protocol.transport is not None
            transport = client.protocol.transport
            wire = PipelinedWire(transport, cfg.timeout)  # type: ignore[arg-type]
            self.pipelined += 1
        return _Session(client, lease, wire)

    async def _checked(self, session: _Session) -> bool:
        """False when an idle session turned out dead (checked with NOOP) or lost its
        cluster-wide lease."""
        if not session.is_open or not await session.lease.renew():
            return False
        if time.monotonic() - session.last_used < self.cfg.idle_check:
            return True
        try:
            if session.wire is not None:
                return (await session.wire.command(b"NOOP\r\n")).code == 250
            await session.client.noop()
        except (aiosmtplib.SMTPException, OSError):
            return False
        return True

    async def acquire(self) -> _Session:
        """A ready session: an idle one, else a new one if the cluster-wide cap allows,
        else the next one this pool releases. ``ProviderBusyError`` when the pool has no
        session at all and the cap stays full for ``max_wait``."""
        await self._slots.acquire()
        try:
            while True:
                while self._idle:
                    session = self._idle.pop()
                    if await self._checked(session):
                        return session
                    await self._discard(session)
                lease = await self._gate.open(wait=self._live == 0)
                if lease is not None:
                    return await self._open(lease)
                if self._live == 0:
                    raise ProviderBusyError(
                        f"{self.name}: connection cap ({self.cfg.max_connections}) reached "
                        "across the cluster")
                # At the cap but with sessions of our own: the next one released is ours.
                async with self._returned:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._returned.wait(), self.cfg.max_wait)
        except BaseException:
            self._slots.release()
            raise

    async def _notify(self) -> None:
        async with self._returned:
            self._returned.notify()

    async def release(self, session: _Session, *, reusable: bool) -> None:
        try:
            if reusable and session.sent < self.cfg.max_messages_per_connection:
                session.last_used = time.monotonic()
                self._idle.append(session)
            else:
                await self._discard(session, polite=reusable)
        finally:
            self._slots.release()
            await self._notify()

    async def _discard(self, session: _Session, *, polite: bool = False) -> None:
        self._live -= 1
        try:
            if polite and session.is_open:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                    if session.wire is not None:
                        await asyncio.wait_for(session.wire.command(b"QUIT\r\n"), 2)
                    else:
                        await asyncio.wait_for(session.client.quit(), 2)
            if session.wire is not None:
                session.wire.close()
            session.client.close()
        finally:
            await session.lease.release()

    async def close(self) -> None:
        while self._idle:
            await self._discard(self._idle.pop(), polite=True)


class SmtpProvider:
    """The :class:`~workers.providers.base.Provider` for ``kind = "smtp"``."""

    wants_mime = True

    def __init__(self, name: str, cfg: SmtpConfig, *, gate: ConnectionGate | None = None
                 ) -> None:
        self.name = name
        self.cfg = cfg
        password = read_secret(name, cfg.password_env, cfg.password_file)
        self.pool = SmtpPool(name, cfg, password=password, gate=gate)
        #: messages per send() call: results reach the ledger after each call, so this
        #: bounds what a killed worker can send twice (see README, delivery guarantee)
        self.chunk_size = max(32, cfg.pool_size * 8)

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        todo = list(reversed(messages))
        auth_error: list[ProviderAuthError] = []
        lanes = min(self.cfg.pool_size, len(messages))
        running = [lanes]

        async def lane() -> None:
            try:
                while todo and not auth_error:
                    msg = todo.pop()
                    try:
                        results.append(await self._send_one(msg))
                    except ProviderAuthError as exc:
                        auth_error.append(exc)
                        todo.append(msg)
                    except TransientDeliveryError as exc:
                        # No connection for this lane (relay down, or the cluster-wide
                        # cap reached): leave the work to lanes that have one; the last
                        # lane standing reports the rest as transient.
                        if running[0] > 1:
                            todo.append(msg)
                            return
                        results.append(SendResult(msg.row, error=exc))
                        results.extend(SendResult(m.row, error=exc) for m in reversed(todo))
                        todo.clear()
            finally:
                running[0] -= 1

        await asyncio.gather(*(lane() for _ in range(lanes)))
        if auth_error:
            auth_error[0].results = results
            raise auth_error[0]
        return results

    async def _send_one(self, msg: OutgoingMessage) -> SendResult:
        assert msg.mime is not None, "SMTP needs the built MIME message"
        session = await self.pool.acquire()
        if session.wire is not None:
            return await self._send_pipelined(session, session.wire, msg)
        client = session.client
        stage: Stage = "mail"
        reusable = True
        try:
            # MAIL and RCPT go through execute_command with arguments built once per
            # sender: client.mail()/rcpt() would re-parse addresses we validated at
            # enqueue (about a sixth of the worker's CPU per message).
            reply = await client.execute_command(b"MAIL", _mail_from(msg.sender))
            if reply.code != 250:
                raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, msg.sender)
            stage = "rcpt"
            reply = await client.execute_command(b"RCPT", b"TO:<%s>" % msg.recipient.encode())
            if reply.code not in (250, 251):
                raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message,
                                                      msg.recipient)
            stage = "data"
            response = await client.data(msg.mime)
            session.sent += 1
            return SendResult(msg.row, provider_id=_queue_id(response.message))
        except aiosmtplib.SMTPResponseException as exc:
            error = classify_smtp(exc.code, exc.message, stage=stage,
                                  mailbox_full=self.cfg.mailbox_full)
            if exc.code == 421:
                reusable = False  # the server is closing this channel
            else:
                reusable = await _reset(client)
            if isinstance(error, ProviderAuthError):
                raise error from exc
            return SendResult(msg.row, error=error)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError,
                OSError) as exc:
            reusable = False
            lost: DeliveryError
            if stage == "data":
                lost = AmbiguousDeliveryError(
                    f"connection lost during DATA, before the reply: {exc}")
            else:
                lost = TransientDeliveryError(f"connection lost at {stage.upper()}: {exc}")
            return SendResult(msg.row, error=lost)
        finally:
            await self.pool.release(session, reusable=reusable)

    async def _send_pipelined(self, session: _Session, wire: PipelinedWire,
                              msg: OutgoingMessage) -> SendResult:
        """One transaction in two writes: MAIL+RCPT+DATA together, then the body."""
        assert msg.mime is not None
        stages: tuple[Stage, ...] = ("mail", "rcpt", "data")
        accepted = ((250,), (250, 251), (354,))
        body_sent = False
        reusable = True
        try:
            wire.write(b"MAIL " + _mail_from(msg.sender) + b"\r\nRCPT TO:<"
                       + msg.recipient.encode() + b">\r\nDATA\r\n")
            replies: list[Reply] = []
            lost: WireLost | None = None
            for _ in stages:
                try:
                    replies.append(await wire.reply())
                except WireLost as exc:
                    lost = exc
                    break
            for reply, stage, good in zip(replies, stages, accepted, strict=False):
                if reply.code not in good:
                    if len(replies) == 3 and replies[2].code == 354:
                        await wire.command(b".\r\n")  # took DATA anyway: end it empty
                    return self._refused(session, wire, msg, reply, stage)
            if lost is not None:
                raise WireLost(f"at {stages[len(replies)].upper()}: {lost}")
            wire.write(dot_stuff(msg.mime))
            body_sent = True
            final = await wire.reply()
            if final.code != 250:
                return self._refused(session, wire, msg, final, "data")
            session.sent += 1
            return SendResult(msg.row, provider_id=_queue_id(final.text))
        except WireLost as exc:
            reusable = False
            if body_sent:
                return SendResult(msg.row, error=AmbiguousDeliveryError(
                    f"connection lost after the message body, before the reply: {exc}"))
            return SendResult(msg.row, error=TransientDeliveryError(
                f"connection lost {exc}"))
        finally:
            if not session.is_open:
                reusable = False
            elif reusable and session.needs_reset:
                session.needs_reset = False
                try:
                    reusable = (await wire.command(b"RSET\r\n")).code == 250
                except WireLost:
                    reusable = False
            await self.pool.release(session, reusable=reusable)

    def _refused(self, session: _Session, wire: PipelinedWire, msg: OutgoingMessage,
                 reply: Reply, stage: Stage) -> SendResult:
        error = classify_smtp(reply.code, reply.text, stage=stage,
                              mailbox_full=self.cfg.mailbox_full)
        if reply.code == 421:
            wire.close()  # the server is closing this channel
        else:
            session.needs_reset = True
        if isinstance(error, ProviderAuthError):
            raise error
        return SendResult(msg.row, error=error)

    async def release_idle(self) -> None:
        if self.pool.capped:
            await self.pool.close()

    async def aclose(self) -> None:
        await self.pool.close()


async def _reset(client: aiosmtplib.SMTP) -> bool:
    """RSET after a refused step so the session can carry the next message."""
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True


def _queue_id(reply: str) -> str | None:
    # "250 2.0.0 Ok: queued as 4F1A2B" -> "4F1A2B"; other servers say other things.
    marker = "queued as "
    pos = reply.find(marker)
    return reply[pos + len(marker):].split()[0] if pos >= 0 else None


def create(name: str, cfg: SmtpConfig) -> SmtpProvider:
    return SmtpProvider(name, cfg)
