"""The burst worker (``tests/burst.py``) itself: it runs what is queued, fast-forwards the
retry queue instead of waiting for it, and stops when nothing is left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from producers.api import Bulkmail
from producers.capture import CaptureServer, free_port
from tests.burst import BurstError, BurstResult, forget_broker_queue, run_burst, settings_from_env
from workers.retry import RetryQueue

pytestmark = pytest.mark.integration


def _mail(env: dict[str, str], tmp_path: Path, provider: str, n: int) -> Bulkmail:
    mail = Bulkmail(settings_from_env(env))
    campaign = tmp_path / "c.toml"
    campaign.write_text(f'id = "b-1"\nprovider = "{provider}"\nfrom = "a@shop.test"\n'
                        'subject = "Hi"\ntext = "x"\nbatch_size = 5\n')
    mail.send_campaign(campaign, [{"email": f"u{i}@example.test"} for i in range(n)])
    return mail


def test_a_batch_parked_for_an_hour_runs_at_once(
        tmp_path: Path, smtp_server: CaptureServer, provider_name: str,
        bulkmail_env: Callable[[str], dict[str, str]], burst: Callable[..., BurstResult],
        redis_client: redis.Redis[bytes]) -> None:
    env = bulkmail_env(f'[providers.{provider_name}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
                       f'port = {smtp_server.port}\ntls = "none"\n')
    mail = _mail(env, tmp_path, provider_name, 10)  # batches 0 and 1
    # batch 1 leaves the broker queue and waits on the retry queue for an hour instead
    # (as after an unexpected error or a long rate-limit wait: its recipients are due)
    settings = settings_from_env(env)
    retry = RetryQueue(redis_client, settings.keys, provider_name)
    forget_broker_queue(redis_client, provider_name)
    retry.schedule("b-1:1", 3600)  # delays on the Redis clock
    retry.schedule("b-1:0", 1800)

    ran = burst(provider_name, settings)
    assert (ran.tasks, ran.pumped, ran.waits) == (2, 2, 0)
    assert retry.depth() == retry.claimed_count() == 0
    status = mail.status("b-1")
    assert status is not None and status.done and status.counts["sent"] == 10
    assert smtp_server.received == 10


def test_work_that_never_runs_out_is_reported(
        tmp_path: Path, provider_name: str, bulkmail_env: Callable[[str], dict[str, str]],
        redis_client: redis.Redis[bytes]) -> None:
    # nothing listens on the relay's port: every attempt is deferred for 10 minutes,
    # which the worker's own clock has to wait for, so the burst gives up
    env = bulkmail_env(f'[providers.{provider_name}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
                       f'port = {free_port()}\ntls = "none"\ntimeout = 1\n'
                       'backoff_base = "10m"\nbackoff_max = "10m"\n')
    _mail(env, tmp_path, provider_name, 3)
    settings = settings_from_env(env)
    try:
        with pytest.raises(BurstError, match="still on the retry queue"):
            run_burst(settings, provider_name, timeout=3)
    finally:
        forget_broker_queue(redis_client, provider_name)
