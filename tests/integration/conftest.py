"""Fixtures that run real components: worker processes, the in-process burst worker, a
capture SMTP server, a private Postfix relay and smtp-sink (``tests/postfix.py``).

Delivery tests use ``burst`` (``tests/burst.py``: batches and retries run in the test
process with the real task body, runtime and providers); tests of crashes, signals and
the worker's command line start real ``bulkmail worker`` processes (``start_worker``).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from config.settings import Settings
from producers.capture import CaptureServer
from tests.burst import BurstResult, forget_broker_queue, run_burst
from tests.helpers import ROOT, run_cli, wait_until, worker_processes
from tests.postfix import PostfixRelay, SmtpSink

# run_cli, wait_until, worker_processes and ROOT live in tests/helpers.py; test files that
# import them from here keep working
__all__ = ["ROOT", "run_cli", "wait_until", "worker_processes"]


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
    forget_broker_queue(client, provider_name)
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
