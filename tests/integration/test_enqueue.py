"""Enqueue against a real Redis: batches, dedupe, invalid rows, idempotency and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from celery import Celery

from config.schema import CampaignSpec, Keys, State, decode_batch, queue_name
from config.settings import Settings
from producers import enqueue as enqueue_mod
from producers.enqueue import EnqueueResult, enqueue_campaign
from workers.ledger import Ledger, Update

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=key_prefix)


@pytest.fixture
def celery_app(settings: Settings) -> Celery:
    return Celery("t", broker=settings.broker)


def _spec(provider: str, cid: str = "c1", batch_size: int = 10) -> CampaignSpec:
    return CampaignSpec(id=cid, provider=provider, sender="a@shop.test", subject="Hi {{ n }}",
                        text="x", batch_size=batch_size)


def _rows(tmp_path: Path, n: int, extra: str = "") -> Path:
    p = tmp_path / "r.csv"
    p.write_text("email,n\n" + "".join(f"u{i}@example.test,{i}\n" for i in range(n)) + extra)
    return p


def _queue_len(client: redis.Redis[bytes], provider: str) -> int:
    return int(client.llen(queue_name(provider)))


def test_batches_states_and_tasks(tmp_path: Path, settings: Settings, celery_app: Celery,
                                  redis_client: redis.Redis[bytes], provider_name: str) -> None:
    spec = _spec(provider_name)
    rows = _rows(tmp_path, 95, extra="bad,1\nu3@example.test,2\n")
    try:
        res = enqueue_campaign(settings, celery_app, redis_client, spec, rows)
        assert (res.created, res.rows, res.queued, res.invalid) == (True, 97, 95, 2)
        assert res.batches == 10
        ledger = Ledger(redis_client, settings.keys)
        st = ledger.status("c1")
        assert st is not None and st.total == 97 and st.enqueued and not st.done
        assert st.counts["queued"] == 95 and st.counts["invalid"] == 2 and st.accounted == 97
        assert [r.row for r in ledger.batch("c1", 9)] == list(range(91, 96))
        assert _queue_len(redis_client, provider_name) == 10
        raw = redis_client.lindex(queue_name(provider_name), 0)
        assert raw is not None
        msg = json.loads(raw)
        assert msg["headers"]["task"] == "bulkmail.send_batch"
        assert "@" not in msg["headers"]["argsrepr"]  # Flower shows no addresses
        invalid = {e.row: e.detail["reason"] for e in ledger.entries("c1", {State.INVALID})}
        assert invalid == {96: invalid[96], 97: "duplicate of row 4"}
        assert "bad address" in invalid[96]
    finally:
        redis_client.delete(queue_name(provider_name))


def test_same_id_twice_enqueues_nothing(tmp_path: Path, settings: Settings,
                                        celery_app: Celery, redis_client: redis.Redis[bytes],
                                        provider_name: str) -> None:
    spec = _spec(provider_name)
    rows = _rows(tmp_path, 30)
    try:
        enqueue_campaign(settings, celery_app, redis_client, spec, rows)
        again = enqueue_campaign(settings, celery_app, redis_client, spec, rows)
        assert again.created is False and again.resumed is False
        assert _queue_len(redis_client, provider_name) == 3
        st = Ledger(redis_client, settings.keys).status("c1")
        assert st is not None and st.counts["queued"] == 30
    finally:
        redis_client.delete(queue_name(provider_name))


def _crash_then_resume(monkeypatch: pytest.MonkeyPatch, settings: Settings,
                       celery_app: Celery, client: redis.Redis[bytes], spec: CampaignSpec,
                       rows: Path) -> EnqueueResult:
    """Enqueue with the producer killed while writing its second chunk of 20 rows, then
    run the same send again, as a user would after the crash."""
    monkeypatch.setattr(enqueue_mod, "CHUNK_ROWS", 20)
    calls = {"n": 0}
    real_flush = enqueue_mod._flush

    def crashing_flush(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("producer killed")
        real_flush(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(enqueue_mod, "_flush", crashing_flush)
    with pytest.raises(KeyboardInterrupt):
        enqueue_campaign(settings, celery_app, client, spec, rows)
    monkeypatch.setattr(enqueue_mod, "_flush", real_flush)
    return enqueue_campaign(settings, celery_app, client, spec, rows)


def test_resume_after_a_producer_crash(tmp_path: Path, settings: Settings, celery_app: Celery,
                                       redis_client: redis.Redis[bytes], provider_name: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(provider_name)
    rows = _rows(tmp_path, 50)
    try:
        res = _crash_then_resume(monkeypatch, settings, celery_app, redis_client, spec, rows)
        assert res.resumed and res.rows == 50
        st = Ledger(redis_client, settings.keys).status("c1")
        assert st is not None and st.enqueued and st.counts["queued"] == 50
        assert st.counts["invalid"] == 0  # no row of the first run counted as a duplicate
        emails = [r.email for b in range(st.batches)
                  for r in Ledger(redis_client, settings.keys).batch("c1", b)]
        assert sorted(emails) == sorted(f"u{i}@example.test" for i in range(50))
    finally:
        redis_client.delete(queue_name(provider_name))


def test_ledger_never_leaves_a_final_state(redis_client: redis.Redis[bytes], keys: Keys) -> None:
    ledger = Ledger(redis_client, keys)
    spec = _spec("p")
    ledger.create_campaign(spec)
    pipe = redis_client.pipeline()
    from config.schema import Recipient

    batch = [Recipient(i + 1, f"u{i}@example.test") for i in range(3)]
    ledger.queue_writes(pipe, "c1", [(0, batch)], [], 3)
    pipe.execute()
    payload = redis_client.get(keys.batch("c1", 0))
    assert payload is not None and decode_batch(payload)[2].email == "u2@example.test"
    assert ledger.update("c1", 0, [Update(0, State.SENT), Update(1, State.DEFERRED)]) == 2
    # a redelivered batch reporting again: sent stays sent, counters unchanged
    assert ledger.update("c1", 0, [Update(0, State.FAILED), Update(1, State.SENT)]) == 1
    st = ledger.status("c1")
    assert st is not None
    assert st.counts["sent"] == 2 and st.counts["failed"] == 0 and st.counts["queued"] == 1
    assert st.accounted == 3


def test_cancel_stops_pending_and_sent_wins_over_cancelled(
        tmp_path: Path, settings: Settings, celery_app: Celery, redis_client: redis.Redis[bytes],
        provider_name: str) -> None:
    spec = _spec(provider_name)
    try:
        enqueue_campaign(settings, celery_app, redis_client, spec, _rows(tmp_path, 25))
        ledger = Ledger(redis_client, settings.keys)
        ledger.update("c1", 0, [Update(0, State.SENT), Update(1, State.DEFERRED)])
        assert ledger.cancel("c1") == 24
        # a message that was on the wire when the operator cancelled: it was delivered
        assert ledger.update("c1", 0, [Update(2, State.SENT), Update(3, State.FAILED)]) == 1
        st = ledger.status("c1")
        assert st is not None and st.done
        assert (st.counts["sent"], st.counts["cancelled"], st.accounted) == (2, 23, 25)
    finally:
        redis_client.delete(queue_name(provider_name))


def test_duplicates_within_and_across_chunks(tmp_path: Path, settings: Settings,
                                             celery_app: Celery, redis_client: redis.Redis[bytes],
                                             provider_name: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # chunks of 7 valid rows: row 3 repeats row 1 in its chunk, rows 21, 24 and 25 repeat
    # rows of earlier chunks; case never matters
    emails = ["a@example.test", "b@example.test", "A@Example.TEST",
              *(f"u{i}@example.test" for i in range(4, 21)),
              "b@example.test", "bad", "", "u15@Example.Test", "a@EXAMPLE.test",
              "new@example.test"]
    p = tmp_path / "r.csv"
    p.write_text("email,n\n" + "".join(f"{e},{i}\n" for i, e in enumerate(emails, 1)))
    monkeypatch.setattr(enqueue_mod, "CHUNK_ROWS", 7)
    spec = _spec(provider_name, batch_size=3)
    try:
        res = enqueue_campaign(settings, celery_app, redis_client, spec, p)
        assert (res.rows, res.queued, res.invalid) == (26, 20, 6)
        ledger = Ledger(redis_client, settings.keys)
        invalid = {e.row: e.detail["reason"] for e in ledger.entries("c1", {State.INVALID})}
        assert invalid == {3: "duplicate of row 1", 21: "duplicate of row 2",
                           22: invalid[22], 23: "empty email",
                           24: "duplicate of row 15", 25: "duplicate of row 1"}
        assert "bad address" in invalid[22]
        entries = list(ledger.entries("c1", {State.QUEUED}))
        assert [e.row for e in entries] == [1, 2, *range(4, 21), 26]
        st = ledger.status("c1")
        assert st is not None and st.accounted == 26
        assert not redis_client.exists(settings.keys.seen("c1"))  # dropped when complete
    finally:
        redis_client.delete(queue_name(provider_name))


def test_every_batch_starts_with_one_queued_state_per_recipient(
        tmp_path: Path, settings: Settings, celery_app: Celery, redis_client: redis.Redis[bytes],
        provider_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # 3 chunks of 25 valid rows, batches of 10: 10, 10, 5 in each (states hashes of the
    # same size within a chunk are COPYs of the first one)
    monkeypatch.setattr(enqueue_mod, "CHUNK_ROWS", 25)
    spec = _spec(provider_name, batch_size=10)
    keys = settings.keys
    try:
        res = enqueue_campaign(settings, celery_app, redis_client, spec,
                               _rows(tmp_path, 75, extra="nope,1\n"))
        assert (res.queued, res.invalid, res.batches) == (75, 1, 9)
        redis_client.hset("reference-states", mapping={str(i): "q" for i in range(10)})
        encoding = redis_client.object("encoding", "reference-states")
        redis_client.delete("reference-states")
        ledger = Ledger(redis_client, keys)
        for b in range(res.batches):
            size = len(ledger.batch("c1", b))
            assert size == (5 if b % 3 == 2 else 10)
            states = redis_client.hgetall(keys.states("c1", b))
            assert states == {str(i).encode(): b"q" for i in range(size)}, b
            assert redis_client.object("encoding", keys.states("c1", b)) == encoding
        # a copied states hash is its own: moving one recipient moves only that one
        assert ledger.update("c1", 1, [Update(0, State.SENT)]) == 1
        assert redis_client.hget(keys.states("c1", 0), "0") == b"q"
        st = ledger.status("c1")
        assert st is not None and st.counts["queued"] == 74 and st.counts["sent"] == 1
    finally:
        redis_client.delete(queue_name(provider_name))


def test_resume_finds_duplicates_of_rows_written_before_the_crash(
        tmp_path: Path, settings: Settings, celery_app: Celery, redis_client: redis.Redis[bytes],
        provider_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(provider_name)
    rows = _rows(tmp_path, 50, extra="U5@Example.TEST,again\nu45@example.test,again\n")
    try:
        res = _crash_then_resume(monkeypatch, settings, celery_app, redis_client, spec, rows)
        assert res.resumed and res.rows == 52
        ledger = Ledger(redis_client, settings.keys)
        invalid = {e.row: e.detail["reason"] for e in ledger.entries("c1", {State.INVALID})}
        # row 6 (u5) was written by the first run, row 46 (u45) by the second
        assert invalid == {51: "duplicate of row 6", 52: "duplicate of row 46"}
        st = ledger.status("c1")
        assert st is not None and st.counts["queued"] == 50 and st.accounted == 52
    finally:
        redis_client.delete(queue_name(provider_name))


def test_dedupe_script_keeps_a_resumed_runs_own_entries(redis_client: redis.Redis[bytes],
                                                        keys: Keys) -> None:
    from config.schema import Recipient
    from producers.recipients import InvalidRow

    seen = keys.seen("c1")
    redis_client.hset(seen, mapping={"a@x.test": 1, "b@x.test": 2})  # a first run's chunk
    chunk: list[Recipient | InvalidRow] = [
        Recipient(1, "a@x.test"), Recipient(2, "B@x.test"), InvalidRow(3, "zz", "bad"),
        Recipient(4, "A@X.test"), Recipient(5, "c@x.test"), Recipient(6, "C@x.test")]
    valid, invalid = enqueue_mod._dedupe(redis_client, seen, chunk)
    assert [r.row for r in valid] == [1, 2, 5]
    assert invalid == [(3, "zz", "bad"), (4, "A@X.test", "duplicate of row 1"),
                       (6, "C@x.test", "duplicate of row 5")]
    assert redis_client.hgetall(seen) == {b"a@x.test": b"1", b"b@x.test": b"2",
                                          b"c@x.test": b"5"}
    assert enqueue_mod._dedupe(redis_client, seen, []) == ([], [])
