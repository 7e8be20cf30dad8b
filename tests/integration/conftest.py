"""Fixtures that run real components: worker processes, a capture SMTP server, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from producers.capture import CaptureServer
from producers.demo import stop_workers

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def smtp_server() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


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
    procs: list[subprocess.Popen[bytes]] = []

    def start(provider: str, env: dict[str, str], concurrency: int = 2) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "producers", "worker", "-p", provider, "-c",
             str(concurrency), "--loglevel", "INFO", "--name", f"{uuid.uuid4().hex[:6]}@%h"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_workers(proc, timeout=15)


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
