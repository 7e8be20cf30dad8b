"""Pause and resume end to end: a real worker, a real SMTP server, the ledger."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from config.schema import Keys
from config.settings import Settings
from producers.api import Bulkmail
from producers.capture import CaptureServer
from tests.integration.conftest import run_cli, wait_until
from workers.ledger import Ledger

pytestmark = pytest.mark.integration


def _pending_batches(client: redis.Redis, keys: Keys, cid: str, batches: int) -> set[int]:
    """Batches that still hold recipients waiting to be sent."""
    return {b for b in range(batches)
            if any(v in (b"q", b"d") for v in client.hvals(keys.states(cid, b)))}


def test_pause_stops_before_the_next_chunk_and_resume_sends_the_rest_once(
        tmp_path: Path, smtp_server: CaptureServer, provider_name: str, key_prefix: str,
        redis_client: redis.Redis, bulkmail_env: Callable[[str], dict[str, str]],
        forget_queue: None, start_worker: Callable[..., object]) -> None:
    # pool_size 1: chunks of 32; 40/s: the campaign takes several seconds, so the pause
    # lands while batches are being sent and while others wait on the queue
    env = bulkmail_env(f'[providers.{provider_name}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
                       f'port = {smtp_server.port}\ntls = "none"\npool_size = 1\n'
                       'rate = "40/s"\nburst = 8\n')
    keys = Keys(key_prefix)
    mail = Bulkmail(Settings(redis_url=env["BULKMAIL_REDIS_URL"],
                             providers=Path(env["BULKMAIL_PROVIDERS"]), key_prefix=key_prefix))
    campaign = tmp_path / "c.toml"
    campaign.write_text(f'id = "pausing"\nprovider = "{provider_name}"\nfrom = "a@shop.test"\n'
                        'subject = "Hi {{ n }}"\ntext = "x"\nbatch_size = 100\n')
    total = 400
    mail.send_campaign(campaign, [{"email": f"u{i}@example.test", "n": i} for i in range(total)])
    ledger = Ledger(redis_client, keys)
    start_worker(provider_name, env, concurrency=2)

    def sent() -> int:
        st = ledger.status("pausing")
        return st.counts["sent"] if st else 0

    assert wait_until(lambda: sent() >= 40, timeout=60)
    paused = run_cli(["pause", "pausing"], env)
    assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr

    # every batch with recipients left is set aside by a worker (no attempt spent) ...
    def all_set_aside() -> bool:
        waiting = _pending_batches(redis_client, keys, "pausing", 4)
        held = {int(b) for b in redis_client.smembers(keys.paused_batches("pausing"))}
        return bool(waiting) and waiting <= held

    assert wait_until(all_set_aside, timeout=60)
    at_pause = sent()
    assert 40 <= at_pause < total
    # ... and nothing more goes out while the campaign stays paused
    time.sleep(2)
    assert sent() == at_pause and smtp_server.received == at_pause
    pending = list(ledger.entries("pausing"))
    assert all("a" not in e.detail for e in pending if e.state.label == "queued")

    status = json.loads(run_cli(["status", "pausing", "--json"], env).stdout)
    assert status["paused"] is True and status["paused_by"].startswith("cli")
    assert abs(status["paused_at"] - time.time()) < 120
    assert status["done"] is False
    text = run_cli(["status", "pausing"], env).stdout
    assert "paused by cli" in text

    resumed = run_cli(["resume", "pausing"], env)
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr
    assert redis_client.scard(keys.paused_batches("pausing")) == 0

    def done() -> bool:
        st = ledger.status("pausing")
        return bool(st and st.done)

    assert wait_until(done, timeout=90)
    st = ledger.status("pausing")
    assert st is not None and st.counts["sent"] == total
    assert smtp_server.received == total
    assert set(smtp_server.by_recipient.values()) == {1}
    after = json.loads(run_cli(["status", "pausing", "--json"], env).stdout)
    assert after["paused"] is False and after["resumed_by"].startswith("cli")
    again = run_cli(["resume", "pausing"], env)
    assert again.returncode == 0 and "was not paused" in again.stdout
    assert run_cli(["pause", "nope"], env).returncode == 2


def test_a_campaign_paused_before_any_worker_sends_nothing_until_resumed(
        tmp_path: Path, smtp_server: CaptureServer, provider_name: str, key_prefix: str,
        redis_client: redis.Redis, bulkmail_env: Callable[[str], dict[str, str]],
        forget_queue: None, start_worker: Callable[..., object]) -> None:
    env = bulkmail_env(f'[providers.{provider_name}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
                       f'port = {smtp_server.port}\ntls = "none"\n')
    keys = Keys(key_prefix)
    mail = Bulkmail(Settings(redis_url=env["BULKMAIL_REDIS_URL"],
                             providers=Path(env["BULKMAIL_PROVIDERS"]), key_prefix=key_prefix))
    campaign = tmp_path / "c.toml"
    campaign.write_text(f'id = "held"\nprovider = "{provider_name}"\nfrom = "a@shop.test"\n'
                        'subject = "Hi"\ntext = "x"\nbatch_size = 10\n')
    mail.send_campaign(campaign, [{"email": f"h{i}@example.test"} for i in range(30)])
    assert run_cli(["pause", "held"], env).returncode == 0
    start_worker(provider_name, env, concurrency=1)
    assert wait_until(lambda: redis_client.scard(keys.paused_batches("held")) == 3, timeout=60)
    assert smtp_server.received == 0
    assert run_cli(["resume", "held"], env).returncode == 0
    ledger = Ledger(redis_client, keys)
    assert wait_until(lambda: bool((st := ledger.status("held")) and st.done), timeout=60)
    assert smtp_server.received == 30


def test_resume_releases_set_aside_batches_now_not_at_an_old_due_time(
        redis_client: redis.Redis, redis_url: str, keys: Keys) -> None:
    import asyncio

    import redis.asyncio as aioredis

    from workers.pause import chunk_gate, pause_campaign, resume_campaign
    from workers.retry import RetryQueue

    redis_client.hset(keys.campaign("r1"), "spec", "{}")
    retry = RetryQueue(redis_client, keys, "p")
    retry.schedule("r1:0", 3600)  # an old backoff, an hour away

    async def gate(batch: int) -> str:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await chunk_gate(client, keys, "r1", batch)
        finally:
            await client.aclose()

    assert asyncio.run(gate(0)) == "go"
    assert pause_campaign(redis_client, keys, "r1", by="api:ops") is True
    assert pause_campaign(redis_client, keys, "r1", by="api:other") is False
    assert redis_client.hget(keys.campaign("r1"), "paused_by") == b"api:ops"
    assert [asyncio.run(gate(b)) for b in (0, 1)] == ["paused", "paused"]
    assert resume_campaign(redis_client, keys, "r1", "p", by="cli") == 2
    due = {e.member: e.due_at for e in retry.list()}
    assert set(due) == {"r1:0", "r1:1"}
    assert all(t <= time.time() + 1 for t in due.values())
    assert asyncio.run(gate(0)) == "go"
    assert resume_campaign(redis_client, keys, "r1", "p", by="cli") is None
    redis_client.hset(keys.campaign("r1"), "cancelled", 1)
    assert asyncio.run(gate(0)) == "cancelled"
