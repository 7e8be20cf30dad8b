"""A real, private Postfix for tests: a relay with anvil limits, and plain smtp-sinks.

:class:`PostfixRelay` runs its own Postfix instance (own ``config_directory``,
``queue_directory`` and log file in a temporary folder, listening on a free port of
127.0.0.1); it never touches the system's Postfix configuration or service. It accepts
mail for any domain from 127.0.0.1 and throws it away (every transport is ``discard:``),
and enforces the client limits of a relay that a new user meets (issue 8), by default:

- ``smtpd_client_connection_count_limit = 3``: the 4th concurrent connection of a
  client is answered ``421 4.7.0 <host> Error: too many connections from 127.0.0.1``;
- ``smtpd_client_message_rate_limit = 300`` per ``anvil_rate_time_unit = 10s``: the
  301st MAIL FROM within the window is answered ``450 4.7.1 Error: too much mail from
  127.0.0.1``;
- ``smtpd_client_event_limit_exceptions =`` (empty): 127.0.0.1 is not exempt.

``relay.delivered()`` counts the recipients it accepted and discarded (from its log).

:class:`SmtpSink` runs Postfix's ``smtp-sink`` (accepts and discards everything, very
fast) when a test only needs a fast server and a count.

Postfix is installed with ``apt-get`` when missing (:func:`ensure_postfix`; ``make test``
does it up front with ``python -m tests.postfix install``). Installing never configures or
starts the system service: debconf's "No configuration" and a ``policy-rc.d`` that
forbids service starts. The instance needs root (Postfix's master drops privileges to
the ``postfix`` user itself).

Usage::

    with PostfixRelay() as relay:       # or the postfix_relay fixture
        ... send to 127.0.0.1:relay.port ...
        assert relay.wait_delivered(1500)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from producers.capture import free_port

__all__ = ["PostfixRelay", "SmtpSink", "ensure_postfix"]

POSTFIX = "/usr/sbin/postfix"
SMTP_SINK = "/usr/sbin/smtp-sink"
_POLICY_RC = Path("/usr/sbin/policy-rc.d")

#: the relay's limits from issue 8 (Postfix's anvil)
ANVIL_LIMITS = {
    "smtpd_client_connection_count_limit": "3",
    "smtpd_client_message_rate_limit": "300",
    "anvil_rate_time_unit": "10s",
    "smtpd_client_event_limit_exceptions": "",
}

# Only the services a discarding relay uses; chroot off (the instance lives in a temp
# folder without the files a chroot would need).
_MASTER_CF = """\
{listen} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def ensure_postfix() -> None:
    """Install the ``postfix`` package (which brings ``smtp-sink``) when it is missing,
    without configuring or starting the system's mail service."""
    if Path(POSTFIX).exists() and Path(SMTP_SINK).exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["debconf-set-selections"], check=True, env=env, text=True,
                   input="postfix postfix/main_mailer_type select No configuration\n")
    # policy-rc.d exit 101 = "do not start services" for maintainer scripts; only ours
    # is removed again (a container image often ships one already)
    ours = not _POLICY_RC.exists()
    if ours:
        _POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        _POLICY_RC.chmod(0o755)
    try:
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q",
                        "--no-install-recommends", "postfix"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    finally:
        if ours:
            _POLICY_RC.unlink(missing_ok=True)


def _wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None,
                   what: str) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} is not listening on 127.0.0.1:{port}")
        time.sleep(0.05)


class PostfixRelay:
    """A private Postfix on ``127.0.0.1:port`` that accepts and discards everything,
    with issue 8's anvil limits unless ``limits`` overrides them (see the module
    docstring)."""

    def __init__(self, *, port: int = 0, limits: dict[str, str] | None = None,
                 hostname: str = "relay.test") -> None:
        self.port = port or free_port()
        self.hostname = hostname
        self.limits = {**ANVIL_LIMITS, **(limits or {})}
        self.dir = Path(tempfile.mkdtemp(prefix="bulkmail-postfix-"))
        self.config_dir = self.dir / "etc"
        self.queue_dir = self.dir / "spool"
        self.log_file = self.dir / "maillog"
        self._master: subprocess.Popen[bytes] | None = None

    def _main_cf(self) -> str:
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.dir / "data"),
            "meta_directory": str(self.config_dir),
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.dir),
            "syslog_name": f"postfix-test-{self.port}",
            "myhostname": self.hostname,
            "mydomain": self.hostname,
            "myorigin": self.hostname,
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            # everything accepted is thrown away
            "default_transport": "discard:relay",
            "relay_transport": "discard:relay",
            "local_transport": "discard:local",
            "virtual_transport": "discard:virtual",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtpd_banner": "$myhostname ESMTP",
            "message_size_limit": str(50 * 1024 * 1024),
            **self.limits,
        }
        return "".join(f"{k} = {v}\n" for k, v in settings.items())

    def start(self) -> PostfixRelay:
        ensure_postfix()
        if os.geteuid() != 0:
            raise RuntimeError("PostfixRelay needs root (Postfix's master runs as root)")
        # the postfix user must reach the queue under the temp folder
        self.dir.chmod(0o755)
        self.config_dir.mkdir()
        self.queue_dir.mkdir()
        (self.dir / "data").mkdir()
        shutil.chown(self.dir / "data", "postfix", "postfix")
        (self.config_dir / "main.cf").write_text(self._main_cf())
        (self.config_dir / "master.cf").write_text(
            _MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        for name in ("postfix-files", "dynamicmaps.cf"):
            source = Path("/etc/postfix") / name
            if source.exists():
                shutil.copy(source, self.config_dir / name)
        files = Path("/etc/postfix/postfix-files.d")
        if files.is_dir():
            shutil.copytree(files, self.config_dir / "postfix-files.d")
        maps = Path("/etc/postfix/dynamicmaps.cf.d")
        if maps.is_dir():
            shutil.copytree(maps, self.config_dir / "dynamicmaps.cf.d")
        env = {**os.environ, "MAIL_CONFIG": str(self.config_dir)}
        # creates the queue directories with Postfix's own owners and modes
        # (Postfix reports to syslog, which a container may not have: on failure, look
        # in maillog in the instance folder)
        subprocess.run([POSTFIX, "-c", str(self.config_dir), "check"], check=True, env=env,
                       capture_output=True)
        self._master = subprocess.Popen(
            [POSTFIX, "-c", str(self.config_dir), "start-fg"], env=env,
            stdout=subprocess.DEVNULL, stderr=(self.dir / "master.err").open("wb"),
            start_new_session=True)
        _wait_for_port(self.port, 30, self._master, f"Postfix ({self.dir})")
        return self

    def stop(self) -> None:
        if self._master is not None:
            subprocess.run([POSTFIX, "-c", str(self.config_dir), "stop"],
                           env={**os.environ, "MAIL_CONFIG": str(self.config_dir)},
                           capture_output=True)
            try:
                self._master.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._master.pid, 9)
                self._master.wait(5)
            self._master = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostfixRelay:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        """The instance's log so far (Postfix's ``maillog_file``)."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def delivered(self) -> int:
        """Recipients accepted and discarded so far (one ``status=sent`` log line each)."""
        return len(re.findall(r" status=sent \(", self.log()))

    def wait_delivered(self, n: int, timeout: float = 30) -> bool:
        """Wait until at least ``n`` recipients were discarded; False on timeout (Postfix
        logs a message shortly after it accepted it)."""
        deadline = time.monotonic() + timeout
        while self.delivered() < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


class SmtpSink:
    """Postfix's ``smtp-sink`` on ``127.0.0.1:port``: accepts every message and discards
    it; ``received`` counts the messages (its ``-c`` counter)."""

    def __init__(self, *, port: int = 0, backlog: int = 256) -> None:
        self.port = port or free_port()
        self.backlog = backlog
        self._proc: subprocess.Popen[bytes] | None = None
        self._out = Path(tempfile.mkstemp(prefix="bulkmail-smtp-sink-")[1])

    def start(self) -> SmtpSink:
        ensure_postfix()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        # -c: a running message count on stdout; -4: IPv4 only; as root it must be
        # told whom to run as
        self._proc = subprocess.Popen(
            [SMTP_SINK, "-c", "-4", *user, f"127.0.0.1:{self.port}", str(self.backlog)],
            stdout=self._out.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for_port(self.port, 10, self._proc, "smtp-sink")
        return self

    @property
    def received(self) -> int:
        """Messages accepted so far."""
        counts = re.findall(rb"mesg=(\d+)", self._out.read_bytes())
        return int(counts[-1]) if counts else 0

    def wait_received(self, n: int, timeout: float = 10) -> bool:
        """Wait until at least ``n`` messages were accepted; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.received < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)
        self._proc = None
        self._out.unlink(missing_ok=True)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # ``python -m tests.postfix install`` (make test)
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m tests.postfix install")
    ensure_postfix()
