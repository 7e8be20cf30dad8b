"""Fixtures that run real components: worker processes, the in-process burst worker, a
capture SMTP server, the CLI.

Delivery tests use ``burst`` (``tests/burst.py``: batches and retries run in the test
process with the real task body, runtime and providers); tests of crashes, signals and
the worker's command line start real ``bulkmail worker`` processes (``start_worker``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from config.settings import Settings
from producers.capture import CaptureServer
from producers.demo import stop_workers
from tests.burst import BurstResult, forget_broker_queue, run_burst
from tests.postfix import PostfixRelay, SmtpSink

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def url(redis_url: str, redis_client: redis.Redis[bytes]) -> str:
    """The test Redis's URL, for tests that open their own (async) clients; taking
    ``redis_client`` makes it delete this test's keys afterwards."""
    return redis_url


@pytest.fixture
def smtp_server() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture
def postfix_relay() -> Iterator[PostfixRelay]:
    """A private Postfix with issue 8's anvil limits that discards what it accepts."""
    with PostfixRelay() as relay:
        yield relay


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """Postfix's ``smtp-sink``: a fast server that accepts and counts messages."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def provider_name() -> str:
    """A provider (and so a Celery queue) no other test uses."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bulkmail_env(tmp_path: Path, redis_url: str, key_prefix: str
                 ) -> Callable[[str], dict[str, str]]:
    """Environment for a bulkmail process, given the providers file text."""

    def make(providers_toml: str) -> dict[str, str]:
        path = tmp_path / f"providers-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(providers_toml)
        return {**os.environ, "BULKMAIL_REDIS_URL": redis_url,
                "BULKMAIL_PROVIDERS": str(path), "BULKMAIL_KEY_PREFIX": key_prefix,
                "PYTHONPATH": str(ROOT)}

    return make


def worker_processes(tmp_path: Path, command: list[str], log_name: str
                     ) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """For a fixture: yields ``start(provider, env, concurrency=2)``, which runs
    ``python COMMAND -p provider -c concurrency ...`` (a worker's command line), logging to
    ``tmp_path``; every process started is stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(provider: str, env: dict[str, str], concurrency: int = 2) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{log_name}-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, *command, "-p", provider, "-c",
             str(concurrency), "--loglevel", "INFO", "--name", f"{uuid.uuid4().hex[:6]}@%h"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_workers(proc, timeout=15)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``bulkmail worker`` processes; all are stopped at the end of the test."""
    yield from worker_processes(tmp_path, ["-m", "producers", "worker"], "worker")


@pytest.fixture
def forget_queue(redis_url: str, provider_name: str) -> Iterator[None]:
    """Drop this test's Celery queue and its kombu bindings once its workers are gone
    (use it before the fixtures that start workers, so it is torn down after them)."""
    yield
    client = redis.Redis.from_url(redis_url)
    client.delete(f"bulkmail.{provider_name}", f"_kombu.binding.bulkmail.{provider_name}",
                  f"_kombu.binding_permanent.bulkmail.{provider_name}")
    client.close()


@pytest.fixture
def burst(redis_client: redis.Redis[bytes]) -> Iterator[Callable[..., BurstResult]]:
    """``burst(provider, settings, **kw)``: run the provider's queued batches and due
    retries in this process until none are left (:func:`tests.burst.run_burst`). At the
    end of the test the provider's Celery queue is dropped and (through ``redis_client``)
    the test's keys are deleted."""
    ran: list[str] = []

    def run(provider: str, settings: Settings, **kw: float) -> BurstResult:
        ran.append(provider)
        return run_burst(settings, provider, **kw)

    yield run
    for provider in ran:
        forget_broker_queue(redis_client, provider)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "producers", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def wait_until(predicate: Callable[[], bool], timeout: float = 60, every: float = 0.1) -> bool:
    """Poll ``predicate`` until true; False on timeout (a bound on a wait, not a timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()
