"""SuppressionList / AsyncSuppressionList against a real Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from config.errors import InputError
from config.schema import Keys
from workers.suppression import (
    AsyncSuppressionList,
    BadLine,
    ImportResult,
    SuppressionEntry,
    SuppressionList,
    normalize_address,
)

pytestmark = pytest.mark.integration

NOW = 1_750_000_000.5


class CountingRedis(redis.Redis):
    """A real client that also counts the commands it sends (to prove round trips)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return super().execute_command(*args, **options)


@pytest.fixture
def counting_client(redis_url: str, redis_client: redis.Redis) -> Any:
    client = CountingRedis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def sl(redis_client: redis.Redis, keys: Keys) -> SuppressionList:
    return SuppressionList(redis_client, keys, clock=lambda: NOW)


def test_add_contains_get_remove_ignore_case(
    sl: SuppressionList, redis_client: redis.Redis, keys: Keys
) -> None:
    assert sl.key == keys.suppressed
    assert sl.add(" Bob@Example.COM ", "hard_bounce", "c1")
    assert sl.contains("bob@example.com")
    assert sl.contains("BOB@EXAMPLE.COM")
    assert not sl.contains("alice@example.com")
    assert sl.get("bOb@example.com") == SuppressionEntry(
        "bob@example.com", "hard_bounce", "c1", NOW
    )
    stored = json.loads(redis_client.hget(keys.suppressed, "bob@example.com") or b"")
    assert stored == {"reason": "hard_bounce", "source": "c1", "at": NOW}
    assert sl.count() == 1
    assert sl.remove("BOB@example.com")
    assert not sl.remove("bob@example.com")
    assert sl.get("bob@example.com") is None
    assert sl.count() == 0


def test_adding_again_keeps_one_entry_with_the_latest_reason(sl: SuppressionList) -> None:
    assert sl.add("a@x.org", "hard_bounce", "c1")
    assert not sl.add("A@x.org", "unsubscribe", "webhook")
    entry = sl.get("a@x.org")
    assert entry is not None and (entry.reason, entry.source) == ("unsubscribe", "webhook")
    assert sl.count() == 1


def test_empty_address_is_refused(sl: SuppressionList) -> None:
    with pytest.raises(ValueError):
        sl.add("  ", "manual")
    assert normalize_address(" X@Y ") == "x@y"


def test_filter_many_is_one_round_trip_and_keeps_the_callers_spelling(
    counting_client: CountingRedis, keys: Keys
) -> None:
    sl = SuppressionList(counting_client, keys, clock=lambda: NOW)
    sl.add_many(["a@x.org", "b@x.org"], "complaint", "fbl")
    counting_client.commands.clear()
    batch = ["A@X.org", "c@x.org", "b@x.org", "a@x.org", "", "d@x.org"]
    assert sl.filter_many(batch) == {"A@X.org", "a@x.org", "b@x.org"}
    assert counting_client.commands == ["HMGET"]
    counting_client.commands.clear()
    assert sl.filter_many([]) == set()
    assert counting_client.commands == []


def test_add_many_counts_new_addresses(sl: SuppressionList) -> None:
    assert sl.add_many(["a@x.org", "A@x.org", "b@x.org"], "hard_bounce", "c1") == 2
    assert sl.add_many(["b@x.org", "c@x.org"], "hard_bounce", "c2") == 1
    assert sl.add_many([], "hard_bounce") == 0
    big = [f"user{i}@x.org" for i in range(2500)]
    assert sl.add_many(big, "import") == 2500
    assert sl.count() == 2503


@pytest.mark.parametrize("size", [0, 7, 100, 2000])  # listpack-encoded and real hash tables
def test_list_pages_through_everything_once(sl: SuppressionList, size: int) -> None:
    addresses = {f"u{i}@x.org" for i in range(size)}
    sl.add_many(addresses, "manual", "ops")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = sl.list(cursor=cursor, limit=40)
        assert len(page.entries) <= 40
        assert all(e.reason == "manual" and e.source == "ops" and e.at == NOW for e in page.entries)
        seen.extend(e.address for e in page.entries)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
        assert pages < 1000
    assert sorted(seen) == sorted(addresses)
    if size:
        assert pages >= -(-size // 40)


def test_a_bad_cursor_is_refused(sl: SuppressionList) -> None:
    with pytest.raises(ValueError):
        sl.list(cursor="nonsense")


def test_import_plain_file(sl: SuppressionList, tmp_path: Path) -> None:
    sl.add("kept@x.org", "hard_bounce", "c1")
    path = tmp_path / "list.txt"
    path.write_text(
        "# exported from the old system\n"
        "Alice@Example.com\n"
        "\n"
        "bob@example.com\n"
        "   # indented comment\n"
        "not an address\n"
        "KEPT@x.org\n"
        "alice@example.com\n"
        "a@b,c@d\n"
        "carol@example.com"  # no final newline
    )
    result = sl.import_file(path)
    assert result == ImportResult(
        added=3,
        existing=2,  # kept@x.org was there, alice appears twice
        skipped=3,
        bad=[BadLine(6, "not an address", "not an email address"),
             BadLine(9, "a@b,c@d", "not an email address")],
    )
    assert sl.filter_many(["alice@example.com", "bob@example.com", "carol@example.com"]) == {
        "alice@example.com", "bob@example.com", "carol@example.com"}
    kept = sl.get("kept@x.org")
    assert kept is not None and kept.reason == "hard_bounce"  # import never overwrites
    alice = sl.get("alice@example.com")
    assert alice is not None and (alice.reason, alice.source) == ("import", "file:list.txt")


def test_import_csv_with_email_and_reason_columns(sl: SuppressionList, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "\ufeff# leading comment\n"
        "Name,Email,Reason\n"
        '"Doe, Jane",jane@example.com,complaint\n'
        "Bob,bob@example.com,\n"
        "\n"
        "NoMail,,unsubscribe\n"
        "#skipped,x@example.com,manual\n"
        "Short\n"
        "Bad,not-an-address,manual\n"
        '"Multi\nline",multi@example.com,unsubscribe\n',
        encoding="utf-8",
    )
    result = sl.import_file(path, reason="legacy", source="migration")
    assert (result.added, result.existing, result.skipped) == (3, 0, 3)
    assert [(b.line, b.problem) for b in result.bad] == [
        (6, "no value in the email column"),
        (8, "no value in the email column"),
        (9, "not an email address: 'not-an-address'"),
    ]
    jane = sl.get("jane@example.com")
    assert jane is not None and (jane.reason, jane.source) == ("complaint", "migration")
    bob = sl.get("bob@example.com")
    assert bob is not None and bob.reason == "legacy"  # empty reason cell: the default
    assert sl.contains("multi@example.com")


def test_import_semicolon_csv_and_single_column_csv(sl: SuppressionList, tmp_path: Path) -> None:
    semi = tmp_path / "semi.csv"
    semi.write_text("id;e-mail\n1;a@x.org\n2;b@x.org\n")
    assert sl.import_file(semi).added == 2
    single = tmp_path / "single.csv"
    single.write_text("email\nc@x.org\nb@x.org\n")
    assert sl.import_file(single) == ImportResult(added=1, existing=1, skipped=0, bad=[])


def test_import_large_file_in_chunks(sl: SuppressionList, tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("".join(f"user{i}@example.com\n" for i in range(2500)))
    assert sl.import_file(path) == ImportResult(added=2500, existing=0, skipped=0, bad=[])
    assert sl.count() == 2500


def test_import_refuses_unusable_files(sl: SuppressionList, tmp_path: Path) -> None:
    no_email = tmp_path / "people.csv"
    no_email.write_text("\n# c\nname,phone\nBob,123\n")
    with pytest.raises(InputError, match=r"people\.csv: line 3 .*email column"):
        sl.import_file(no_email)
    with pytest.raises(InputError, match="cannot read"):
        sl.import_file(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    assert sl.import_file(empty) == ImportResult(added=0, existing=0, skipped=2, bad=[])
    assert sl.count() == 0


def test_entries_written_by_hand_still_list(
    sl: SuppressionList, redis_client: redis.Redis, keys: Keys
) -> None:
    redis_client.hset(keys.suppressed, "old@x.org", "legacy text")
    assert sl.get("old@x.org") == SuppressionEntry("old@x.org", "legacy text", "", 0.0)


def test_async_list_has_the_same_behaviour(
    redis_url: str, keys: Keys, redis_client: redis.Redis
) -> None:
    # The worker adds hard bounces and filters recipients; the rest is the CLI's.
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        try:
            sl = AsyncSuppressionList(client, keys, clock=lambda: NOW)
            assert sl.key == keys.suppressed
            assert await sl.add("A@x.org", "unsubscribe", "one-click")
            assert not await sl.add("a@X.org", "hard_bounce", "bounce:c1")
            assert await sl.filter_many(["B@x.org", "A@x.org", " "]) == {"A@x.org"}
            assert await sl.filter_many([]) == set()
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert SuppressionList(redis_client, keys).get("a@x.org") == SuppressionEntry(
        "a@x.org", "hard_bounce", "bounce:c1", NOW)
