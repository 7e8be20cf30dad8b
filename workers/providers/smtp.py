"""SMTP relays over pooled, reused aiosmtplib sessions.

A pool per provider per worker process: connections open lazily (TLS as configured, AUTH
when a username is set), are recycled after ``max_messages_per_connection``, checked with
NOOP after ``idle_check`` seconds idle, and replaced after a drop or a 421. aiosmtplib
allows one transaction at a time per connection, so a batch goes out over ``pool_size``
connections concurrently, one message each.

The transaction is driven step by step (MAIL, RCPT, DATA) instead of through
``sendmail`` so that a failure is known by stage: a RCPT reject fails that recipient
alone, and a connection lost inside DATA is *ambiguous* (the body may have been taken).
Every path (opening a session, a plain transaction, a pipelined one) turns what went
wrong into our error tree through one translator, :func:`smtp_error`.

Envelope: MAIL FROM is the message's :attr:`~workers.providers.base.OutgoingMessage.
envelope_sender` (the campaign's return path, else the provider's ``return_path``, else
the validated From address), never re-parsed from a header. RCPT TO carries the
recipient's domain in IDNA (ASCII) form; a non-ASCII local part goes out only when the
relay offers SMTPUTF8 (MAIL FROM then says SMTPUTF8), else that recipient fails alone.
AUTH happens only over TLS (config refuses anything else except on a loopback host).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import Sequence
from typing import Any, Literal

import aiosmtplib

from config.errors import (
    AmbiguousDeliveryError,
    DeliveryError,
    PermanentDeliveryError,
    ProviderAuthError,
    ProviderBusyError,
    TemplateError,
    TransientDeliveryError,
)
from config.providers import SmtpConfig, is_loopback_host, read_secret
from workers.classify import SmtpStage, classify_smtp
from workers.mime import ascii_domain
from workers.providers.base import ConnectionGate, Lease, NoGate, OutgoingMessage, SendResult
from workers.providers.smtp_pipeline import PipelinedWire, Reply, WireLost, dot_stuff

__all__ = ["SmtpPool", "SmtpProvider", "create", "smtp_client", "smtp_error", "tls_state"]

#: the ways a connection goes away under us (aiosmtplib's, the pipelined wire's, the OS's)
_LOST = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, WireLost, OSError)


def smtp_client(cfg: SmtpConfig) -> aiosmtplib.SMTP:
    """The aiosmtplib client for ``cfg`` (not connected): TLS as configured, certificates
    checked unless ``tls_insecure`` (which config allows for loopback hosts only)."""
    tls_context = None
    if cfg.tls_insecure:
        tls_context = ssl.create_default_context()
        tls_context.check_hostname = False
        tls_context.verify_mode = ssl.CERT_NONE
    return aiosmtplib.SMTP(
        hostname=cfg.host, port=cfg.port, timeout=cfg.timeout,
        use_tls=cfg.tls == "implicit", start_tls=cfg.tls == "starttls",
        validate_certs=not cfg.tls_insecure, tls_context=tls_context,
        local_hostname=cfg.local_hostname,
    )


def tls_state(cfg: SmtpConfig) -> str:
    """How the session to ``cfg.host`` is protected, in words (for ``providers check``)."""
    if cfg.tls == "none":
        return "no TLS (loopback)" if is_loopback_host(cfg.host) else "no TLS"
    mode = "STARTTLS" if cfg.tls == "starttls" else "implicit TLS"
    checked = ("certificate NOT verified (tls_insecure)" if cfg.tls_insecure
               else "certificate verified")
    return f"{mode}, {checked}"


def smtp_error(exc: BaseException, stage: SmtpStage, *, where: str,
               mailbox_full: Literal["transient", "permanent"] = "transient",
               body_sent: bool = False) -> DeliveryError:
    """The one translation of an SMTP failure into our error tree, for every path.

    A reply (an aiosmtplib response error, or a pipelined :class:`Reply` given as
    ``SMTPResponseException``) is classified by code, enhanced code and stage; a lost or
    timed-out connection is transient, or *ambiguous* once the body may have been taken
    (``body_sent``); failing to connect names the relay (``where``).
    """
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return classify_smtp(exc.code, exc.message, stage=stage, mailbox_full=mailbox_full)
    if stage in ("connect", "helo", "auth"):
        return TransientDeliveryError(f"cannot connect to {where}: {exc}")
    if body_sent:
        return AmbiguousDeliveryError(
            f"connection lost during DATA, before the final reply: {exc}")
    return TransientDeliveryError(f"connection lost at {stage.upper()}: {exc}")


@functools.lru_cache(maxsize=256)
def _mail_from(envelope: str, utf8: bool) -> bytes:
    # one campaign has one sender: the bytes are built once, not per message
    return b"FROM:<%s>%s" % (envelope.encode(), b" SMTPUTF8" if utf8 else b"")


@functools.lru_cache(maxsize=4096)
def _rcpt_domain(domain: str) -> str:
    return ascii_domain(domain, "to")


def _rcpt_to(recipient: str) -> tuple[bytes, bool]:
    """``TO:<local@ascii-domain>`` and whether the local part needs SMTPUTF8."""
    if recipient.isascii():
        return b"TO:<%s>" % recipient.encode(), False
    local, _, domain = recipient.rpartition("@")
    return (b"TO:<%s@%s>" % (local.encode(), _rcpt_domain(domain).encode()),
            not local.isascii())


class _Session:
    """One pooled connection and its bookkeeping. ``wire`` is set when the server
    pipelines: the transport then belongs to it, not to the aiosmtplib client."""

    __slots__ = ("client", "last_used", "lease", "needs_reset", "sent", "utf8", "wire")

    def __init__(self, client: aiosmtplib.SMTP, lease: Lease,
                 wire: PipelinedWire | None = None) -> None:
        self.client = client
        self.sent = 0
        self.last_used = time.monotonic()
        self.lease = lease
        self.wire = wire
        self.needs_reset = False
        #: the relay offers SMTPUTF8 (RFC 6531): non-ASCII local parts may go out
        self.utf8 = client.supports_extension("smtputf8")

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

    async def _open(self, lease: Lease) -> _Session:
        cfg = self.cfg
        client = smtp_client(cfg)
        stage: SmtpStage = "connect"
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
            if isinstance(exc, aiosmtplib.SMTPException | OSError):
                raise smtp_error(exc, stage, where=f"{cfg.host}:{cfg.port}") from exc
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
        self._where = f"{cfg.host}:{cfg.port}"
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

    def _envelope(self, msg: OutgoingMessage, session: _Session
                  ) -> tuple[bytes, bytes] | SendResult:
        """MAIL FROM and RCPT TO arguments, or the recipient's failure when this relay
        cannot take its address."""
        try:
            rcpt, utf8 = _rcpt_to(msg.recipient)
        except TemplateError as exc:
            return SendResult(msg.row, error=PermanentDeliveryError(f"RCPT TO: {exc}"))
        if utf8 and not session.utf8:
            return SendResult(msg.row, error=PermanentDeliveryError(
                "the recipient's address has a non-ASCII local part, which needs "
                f"SMTPUTF8; relay {self._where} does not offer it"))
        envelope = msg.return_path or self.cfg.return_path or msg.from_address
        return _mail_from(envelope, utf8), rcpt

    def _error(self, exc: BaseException, stage: SmtpStage, *, body_sent: bool = False
               ) -> DeliveryError:
        return smtp_error(exc, stage, where=self._where, mailbox_full=self.cfg.mailbox_full,
                          body_sent=body_sent)

    async def _send_one(self, msg: OutgoingMessage) -> SendResult:
        assert msg.mime is not None, "SMTP needs the built MIME message"
        session = await self.pool.acquire()
        envelope = self._envelope(msg, session)
        if isinstance(envelope, SendResult):
            await self.pool.release(session, reusable=True)
            return envelope
        if session.wire is not None:
            return await self._send_pipelined(session, session.wire, msg, envelope)
        mail_from, rcpt_to = envelope
        client = session.client
        stage: SmtpStage = "mail"
        reusable = True
        try:
            # MAIL and RCPT go through execute_command with arguments built once per
            # sender: client.mail()/rcpt() would re-parse addresses we validated at
            # enqueue (about a sixth of the worker's CPU per message).
            reply = await client.execute_command(b"MAIL", mail_from)
            if reply.code != 250:
                raise aiosmtplib.SMTPResponseException(reply.code, reply.message)
            stage = "rcpt"
            reply = await client.execute_command(b"RCPT", rcpt_to)
            if reply.code not in (250, 251):
                raise aiosmtplib.SMTPResponseException(reply.code, reply.message)
            stage = "data"
            response = await client.data(msg.mime)
            session.sent += 1
            return SendResult(msg.row, provider_id=_queue_id(response.message))
        except aiosmtplib.SMTPResponseException as exc:
            error = self._error(exc, stage)
            if exc.code == 421:
                reusable = False  # the server is closing this channel
            else:
                reusable = await _reset(client)
            if isinstance(error, ProviderAuthError):
                raise error from exc
            return SendResult(msg.row, error=error)
        except _LOST as exc:
            reusable = False
            # aiosmtplib sends DATA and the body in one call: lost inside it, the body
            # may have been taken
            return SendResult(msg.row, error=self._error(exc, stage,
                                                         body_sent=stage == "data"))
        finally:
            await self.pool.release(session, reusable=reusable)

    async def _send_pipelined(self, session: _Session, wire: PipelinedWire,
                              msg: OutgoingMessage, envelope: tuple[bytes, bytes]
                              ) -> SendResult:
        """One transaction in two writes: MAIL+RCPT+DATA together, then the body."""
        assert msg.mime is not None
        stages: tuple[SmtpStage, ...] = ("mail", "rcpt", "data")
        accepted = ((250,), (250, 251), (354,))
        body_sent = False
        reusable = True
        mail_from, rcpt_to = envelope
        stage: SmtpStage = "mail"  # until the three replies are in
        try:
            wire.write(b"MAIL " + mail_from + b"\r\nRCPT " + rcpt_to + b"\r\nDATA\r\n")
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
                reusable = False
                return SendResult(msg.row, error=self._error(lost, stages[len(replies)]))
            stage = "data"
            wire.write(dot_stuff(msg.mime))
            body_sent = True
            final = await wire.reply()
            if final.code != 250:
                return self._refused(session, wire, msg, final, "data")
            session.sent += 1
            return SendResult(msg.row, provider_id=_queue_id(final.text))
        except WireLost as exc:
            reusable = False
            return SendResult(msg.row, error=self._error(exc, stage, body_sent=body_sent))
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
                 reply: Reply, stage: SmtpStage) -> SendResult:
        error = self._error(aiosmtplib.SMTPResponseException(reply.code, reply.text), stage)
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


def create(name: str, cfg: SmtpConfig, *, gate: ConnectionGate | None = None,
           **options: Any) -> SmtpProvider:
    """The provider for ``kind = "smtp"``; the same signature as every kind's ``create``
    (SMTP has no test hooks: tests use a real server)."""
    if options:
        raise TypeError(f"unexpected options for an SMTP provider: {', '.join(options)}")
    return SmtpProvider(name, cfg, gate=gate)
