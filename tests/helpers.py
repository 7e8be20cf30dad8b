"""Helpers for tests (not fixtures): running the CLI and worker processes, bounded waits.

Product functions that ``bulkmail demo`` and the benchmarks use as well (starting and
stopping workers, a private Redis, a free port) stay in ``producers/`` and are imported
from there; what only tests need lives here.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from producers.demo import stop_workers

__all__ = ["ROOT", "run_cli", "wait_until", "worker_processes"]

#: the repository (the working directory of every process a test starts)
ROOT = Path(__file__).resolve().parents[1]


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


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
    """``bulkmail ARGS`` in a fresh Python process with ``env``; its output as text."""
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
