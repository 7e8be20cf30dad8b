"""In-process "burst" delivery for tests: run a provider's work until there is none left.

The way arq's burst worker and dramatiq's ``join`` work: instead of starting ``bulkmail
worker`` processes and polling the ledger, a test enqueues as usual (CLI, API or
``enqueue_campaign``) and then calls :func:`run_burst`, which, in the test process,

1. takes the batch tasks published to the provider's Celery queue on the real Redis
   broker (kombu, the same messages a worker would receive) and runs the real task body
   (``workers.tasks.send_batch``) on a real :class:`workers.runtime.Runtime` with the
   real provider (a real SMTP server, moto, ...), one at a time;
2. when the queue is empty, runs the retry pump (:func:`workers.pump.pump_once`) with a
   ``now`` ``horizon`` seconds ahead of the Redis server's clock, so parked and deferred
   batches come back at once instead of after their backoff;
3. returns when both the queue and the retry queue are empty.

What cannot be fast-forwarded: the worker compares a deferred *recipient's* due time
with its own clock (it treats anything due within a second as due now). When a
fast-forwarded round only puts the same batches back at the same due times (nothing was
due yet by that clock), the burst sleeps until the earliest of them. Tests keep that
short by giving the provider a short backoff (``backoff_max = "1s"`` or less makes it
zero). Waits for rate-limit tokens happen inside the task, as in a worker.

Crash, signal and CLI-worker behaviour still needs real ``bulkmail worker`` processes
(the ``start_worker`` fixture); everything that is "enqueue, deliver, look at the ledger
and the server" runs here.

Usage::

    def test_x(burst, bulkmail_env, provider_name, smtp_server):
        env = bulkmail_env(providers_toml)
        run_cli(["send", ...], env)                 # publishes to bulkmail.<provider>
        result = burst(provider_name, settings_from_env(env))
        assert result.tasks == 3                    # batch tasks run
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import redis
from celery import Celery
from celery.exceptions import Reject
from kombu import Connection
from kombu.simple import SimpleQueue

from config.schema import queue_name
from config.settings import Settings
from workers.publish import TASK_NAME
from workers.pump import pump_once
from workers.retry import RetryEntry, RetryQueue
from workers.runtime import Runtime

__all__ = ["BurstError", "BurstResult", "forget_broker_queue", "run_burst",
           "settings_from_env"]

#: default fast-forward of the retry pump: later than any backoff a test configures
HORIZON = 24 * 3600.0


class BurstError(RuntimeError):
    """The provider's work did not run out within the burst's time bound."""


@dataclass(slots=True)
class BurstResult:
    """What a burst did: how many batch tasks ran, how many batches the pump moved back
    and how many times it had to wait for the worker's clock."""

    tasks: int = 0
    pumped: int = 0
    waits: int = 0


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The :class:`Settings` a ``bulkmail`` process started with ``env`` would read
    (Redis URL, providers file and key prefix, as the ``bulkmail_env`` fixture sets)."""
    return Settings(redis_url=env["BULKMAIL_REDIS_URL"],
                    providers=Path(env["BULKMAIL_PROVIDERS"]),
                    key_prefix=env["BULKMAIL_KEY_PREFIX"])


def run_burst(settings: Settings, provider: str, *, horizon: float = HORIZON,
              timeout: float = 60.0) -> BurstResult:
    """Run ``provider``'s queued batches and due retries in this process until both
    queues are empty (see the module docstring). Raises :class:`BurstError` when work is
    still left after ``timeout`` seconds (a bound on the wait, not a timing)."""
    result = BurstResult()
    deadline = time.monotonic() + timeout
    # the task body finds its runtime through Runtime.get(): make it ours
    Runtime.stop()
    runtime = Runtime.start(settings)
    producer = Celery("bulkmail-burst", broker=settings.broker)
    client: redis.Redis[bytes] = redis.Redis.from_url(settings.redis_url)
    retry = RetryQueue(client, settings.keys, provider)
    try:
        assert runtime.settings is settings, "another Runtime is installed in this process"
        with Connection(settings.broker) as conn:
            queue = conn.SimpleQueue(queue_name(provider))
            try:
                while True:
                    result.tasks += _drain(queue)
                    if retry.depth() == 0 and retry.claimed_count() == 0:
                        return result
                    if time.monotonic() > deadline:
                        raise BurstError(f"{provider}: {retry.depth()} batch(es) still on "
                                         f"the retry queue after {timeout:.0f}s")
                    before = _entries(retry)
                    moved = pump_once(producer, client, settings, provider,
                                      now=_server_now(client) + horizon)
                    result.pumped += moved
                    result.tasks += _drain(queue)
                    if moved and _entries(retry) == before:
                        # nothing was due yet by the worker's own clock: wait for it
                        result.waits += 1
                        _sleep_until_due(retry, client, deadline)
            finally:
                queue.close()
    finally:
        Runtime.stop()
        asyncio.set_event_loop(None)  # the runtime's loop is closed: leave none behind
        producer.close()
        client.close()


def _drain(queue: SimpleQueue) -> int:
    """Run every batch task on the queue now; returns how many ran."""
    # imported here: importing the task module builds the workers' Celery app
    from workers.tasks import send_batch

    ran = 0
    while True:
        try:
            message = queue.get(block=False)
        except queue.Empty:
            return ran
        assert message.headers["task"] == TASK_NAME, message.headers
        args, kwargs, _embed = message.decode()  # Celery message protocol 2
        try:
            send_batch(*args, **kwargs)  # the task body, as a worker process runs it
        except Reject:
            # Redis failed under the task: a worker gives the message back, so do we,
            # and the test sees the error
            message.requeue()
            raise
        message.ack()
        ran += 1


def _entries(retry: RetryQueue) -> list[RetryEntry]:
    return retry.list(limit=10_000)


def _server_now(client: redis.Redis[bytes]) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def _sleep_until_due(retry: RetryQueue, client: redis.Redis[bytes], deadline: float) -> None:
    due = retry.next_due()
    if due is None:
        return
    wait = due - _server_now(client)
    time.sleep(max(0.0, min(wait, deadline - time.monotonic())) + 0.05)


def forget_broker_queue(client: redis.Redis[bytes], provider: str) -> None:
    """Drop a provider's Celery queue and its kombu bindings (a test's unique provider;
    never a queue another test or a real deployment uses)."""
    name = queue_name(provider)
    client.delete(name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")

