"""One clock (issue 8): due times are on the Redis server's clock, whatever the worker's.

The worker process's wall clock is set two hours wrong (``time.time`` shifted, as on a
machine with a skewed clock) while it sends a batch whose recipients are deferred. The
retry it schedules and the due times it writes to the ledger must still sit at Redis
``TIME`` + backoff: before the fix they were the worker's time + backoff, two hours
early (due at once) or two hours late.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config.schema import CampaignSpec, Keys, Recipient
from config.settings import Settings
from tests.smtp_script import ScriptedSMTP
from workers.delivery import deliver_batch, retry_member
from workers.ledger import Ledger
from workers.retry import RetryQueue
from workers.runtime import Runtime

pytestmark = pytest.mark.integration

SKEW = 7200.0
BACKOFF_MAX = 20.0


@pytest.fixture(params=[-SKEW, SKEW], ids=["worker-clock-behind", "worker-clock-ahead"])
def skewed_clock(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[float]:
    real = time.time
    skew = float(request.param)
    monkeypatch.setattr(time, "time", lambda: real() + skew)
    yield skew


def _redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def test_retries_are_due_on_the_redis_clock(
    skewed_clock: float, redis_url: str, redis_client: redis.Redis, keys: Keys,
    key_prefix: str, provider_name: str, tmp_path: Path
) -> None:
    cid = "skewed"
    spec = CampaignSpec(id=cid, provider=provider_name, sender="from@example.com",
                        subject="hi", text="hello", batch_size=10)
    ledger = Ledger(redis_client, keys)
    assert ledger.create_campaign(spec)
    rows = [Recipient(1, "ok@example.com"), Recipient(2, "deferall-a@example.com"),
            Recipient(3, "defer2-b@example.com")]
    pipe = redis_client.pipeline(transaction=True)
    ledger.queue_writes(pipe, cid, [(0, rows)], [], len(rows))
    pipe.execute()

    with ScriptedSMTP() as relay:
        path = tmp_path / "providers.toml"
        path.write_text(f'[providers.{provider_name}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
                        f'port = {relay.port}\ntls = "none"\npool_size = 1\n'
                        f'backoff_base = "5s"\nbackoff_max = "{BACKOFF_MAX:.0f}s"\n')
        settings = Settings(redis_url=redis_url, providers=path, key_prefix=key_prefix)
        before = _redis_now(redis_client)
        rt = Runtime(settings)
        try:
            report = rt.run(deliver_batch(rt, cid, 0))
        finally:
            rt.close()
        after = _redis_now(redis_client)
    assert (report.sent, report.deferred) == (1, 2), report

    queue = RetryQueue(redis_client, keys, provider_name)
    due = {e.member: e.due_at for e in queue.list()}
    member = retry_member(cid, 0)
    assert before < due[member] <= after + BACKOFF_MAX
    assert queue.due_count() == 0  # not early: nothing is due on the Redis clock yet

    details = [json.loads(v) for v in redis_client.hvals(keys.details(cid, 0))]
    deferred = [d for d in details if "n" in d]
    assert len(deferred) == 2
    for d in deferred:
        assert before <= float(d["f"]) <= after  # first attempt, on the Redis clock
        assert before < float(d["n"]) <= after + BACKOFF_MAX
    assert due[member] == pytest.approx(min(float(d["n"]) for d in deferred), abs=0.01)
