"""The retry pump publishes due batches under retry task ids and drops members that name
no batch (written by something other than bulkmail) without holding up the others."""

from __future__ import annotations

import json
import re

import pytest
import redis

from config.schema import Keys
from config.settings import Settings
from workers.app import create_app
from workers.pump import pump_once
from workers.retry import RetryQueue

pytestmark = pytest.mark.integration


def test_pump_publishes_due_batches_and_drops_foreign_members(
        redis_url: str, key_prefix: str, keys: Keys, provider_name: str, forget_queue: None,
        redis_client: redis.Redis[bytes]) -> None:
    settings = Settings(redis_url=redis_url, key_prefix=key_prefix)
    queue = RetryQueue(redis_client, keys, provider_name)
    for member in ("spring:0", "spring:2", "spring:x", "news:counts:1", "a b:1", "later:1"):
        queue.schedule(member, 3600 if member == "later:1" else -1)  # delays, Redis clock

    assert pump_once(create_app(settings), redis_client, settings, provider_name) == 2

    published = [json.loads(m) for m in redis_client.lrange(f"bulkmail.{provider_name}", 0, -1)]
    ids = sorted(m["headers"]["id"] for m in published)
    assert [re.sub(r":r\d+$", ":r*", i) for i in ids] == ["spring:0:r*", "spring:2:r*"]
    assert sorted(m["headers"]["argsrepr"] for m in published) == [
        "campaign=spring batch=0", "campaign=spring batch=2"]
    # the foreign members are gone, the one not yet due still waits
    assert [e.member for e in queue.list()] == ["later:1"]
    assert not redis_client.zcard(queue.claimed_key)
