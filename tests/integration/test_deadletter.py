"""DeadLetters / AsyncDeadLetters against a real Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
import redis.asyncio

from config.schema import Keys
from workers.deadletter import AsyncDeadLetters, DeadLetter, DeadLetters, entry_key

pytestmark = pytest.mark.integration

NOW = 1_750_000_000.25


@pytest.fixture
def dl(redis_client: redis.Redis, keys: Keys) -> DeadLetters:
    return DeadLetters(redis_client, keys, clock=lambda: NOW)


def _all(dl: DeadLetters, campaign_id: str | None = None, limit: int = 7) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    cursor: str | None = None
    while True:
        page = dl.list(campaign_id, limit, cursor=cursor)
        assert len(page.entries) <= limit
        out.extend(page.entries)
        cursor = page.next_cursor
        if cursor is None:
            return out


def test_record_and_get(dl: DeadLetters, redis_client: redis.Redis, keys: Keys) -> None:
    assert dl.key == keys.dead_letters
    letter = dl.record("c1", 42, "bob@example.com", "451 4.3.0 try later", 8, "smtp1")
    assert letter == DeadLetter("c1", 42, "bob@example.com", "451 4.3.0 try later", 8, "smtp1", NOW)
    assert letter.key == "c1:42" == entry_key("c1", 42)
    assert dl.get("c1", 42) == letter
    assert dl.get("c1", 43) is None
    raw = json.loads(redis_client.hget(keys.dead_letters, "c1:42") or b"")
    assert raw == {"campaign_id": "c1", "row": 42, "email": "bob@example.com",
                   "reply": "451 4.3.0 try later", "attempts": 8, "provider": "smtp1", "at": NOW}


def test_recording_again_replaces_the_entry(dl: DeadLetters) -> None:
    dl.record("c1", 1, "a@x.org", "first", 8, "p")
    dl.record("c1", 1, "a@x.org", "second", 3, "p")
    assert dl.count() == 1
    got = dl.get("c1", 1)
    assert got is not None and (got.reply, got.attempts) == ("second", 3)


def test_list_filters_by_exact_campaign(dl: DeadLetters) -> None:
    # ids that are prefixes of each other, contain ":" or glob characters
    campaigns = ["a", "a:b", "ab", "x*y", "[c]", "q?", "back\\slash"]
    for cid in campaigns:
        for row in range(5):
            dl.record(cid, row, f"r{row}@x.org", "550 5.1.1", 1, "p")
    dl.record("xzy", 0, "decoy@x.org", "", 1, "p")  # matches the glob x*y unescaped
    for cid in campaigns:
        got = _all(dl, cid, limit=2)
        assert sorted(d.row for d in got) == [0, 1, 2, 3, 4], cid
        assert {d.campaign_id for d in got} == {cid}
        assert dl.count(cid) == 5
    assert len(_all(dl)) == 5 * len(campaigns) + 1
    assert dl.count() == 5 * len(campaigns) + 1
    assert dl.count("nope") == 0
    assert dl.list("nope").entries == []


def test_list_pages_a_big_campaign(dl: DeadLetters) -> None:
    dl.record_many(
        DeadLetter("big", row, f"u{row}@x.org", "timeout", 8, "p", NOW) for row in range(1500)
    )
    dl.record_many(
        DeadLetter("other", row, f"o{row}@x.org", "timeout", 8, "p", NOW) for row in range(300)
    )
    got = _all(dl, "big", limit=100)
    assert sorted(d.row for d in got) == list(range(1500))
    assert dl.count("big") == 1500
    assert dl.count() == 1800


def test_remove_by_entry_or_key(dl: DeadLetters) -> None:
    letters = [dl.record("c", row, f"{row}@x.org", "r", 1, "p") for row in range(4)]
    assert dl.remove([letters[0], "c:1", "c:1", "c:99"]) == 2
    assert dl.remove([]) == 0
    assert sorted(d.row for d in _all(dl, "c")) == [2, 3]
    assert dl.remove(_all(dl, "c")) == 2
    assert dl.count() == 0


def test_record_many_reports_new_entries(dl: DeadLetters) -> None:
    batch = [DeadLetter("c", row, "e@x.org", "r", 2, "p", NOW) for row in range(2100)]
    assert dl.record_many(batch) == 2100
    assert dl.record_many(batch[:10]) == 0
    assert dl.record_many([]) == 0


def test_foreign_entries_still_decode(
    dl: DeadLetters, redis_client: redis.Redis, keys: Keys
) -> None:
    redis_client.hset(keys.dead_letters, "legacy:campaign:7", "some old reply text")
    got = dl.get("legacy:campaign", 7)
    assert got is not None
    assert (got.campaign_id, got.row, got.reply) == ("legacy:campaign", 7, "some old reply text")


def test_async_dead_letters(redis_url: str, keys: Keys, redis_client: redis.Redis) -> None:
    # The worker only records; the sync list reads back what it wrote.
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            dl = AsyncDeadLetters(client, keys, clock=lambda: NOW)
            assert dl.key == keys.dead_letters
            assert await dl.record_many(
                [DeadLetter("c2", r, "b@x.org", "timeout", 8, "api", NOW) for r in range(3)]
            ) == 3
            assert await dl.record_many([]) == 0
        finally:
            await client.aclose()

    asyncio.run(scenario())
    sync = DeadLetters(redis_client, keys)
    assert sync.count("c2") == 3
    assert sync.get("c2", 1) == DeadLetter("c2", 1, "b@x.org", "timeout", 8, "api", NOW)
