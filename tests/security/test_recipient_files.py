"""Security checklist, issue 9 items 2 and 3: recipient files from customers' exports.

* A row that is not UTF-8 ends ``invalid`` with its row number; no row is lost or
  renumbered.
* A structural error (unterminated or malformed quote, a field above ``max_field_bytes``,
  a row over ``max_row_lines`` lines) stops the send naming the file and line, and
  nothing is written to Redis or published.
* Any failure of a JSON Lines line makes that row invalid; the producer never crashes.
* Property tests (hypothesis) on hostile CSV and JSONL input, through the real
  ``enqueue_campaign`` against a real Redis: every row ends in exactly one state and no
  row's data reaches another row's message.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from config.errors import InputError
from config.schema import CampaignSpec, Recipient, State, queue_name
from config.settings import Settings
from producers.enqueue import enqueue_campaign
from producers.recipients import InvalidRow, ReaderLimits, read_recipients
from workers.ledger import Ledger

pytestmark = pytest.mark.integration


@pytest.fixture
def provider() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bm_settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=key_prefix)


@pytest.fixture
def app(bm_settings: Settings) -> Celery:
    return Celery("t", broker=bm_settings.broker)


@pytest.fixture
def queue(redis_client: redis.Redis[bytes], provider: str) -> Iterator[str]:
    name = queue_name(provider)
    yield name
    redis_client.delete(name)


def _spec(provider: str, cid: str = "c1") -> CampaignSpec:
    return CampaignSpec(id=cid, provider=provider, sender="a@shop.test", subject="Hi",
                        text="{{ name }}", batch_size=7)


def _nothing_enqueued(client: redis.Redis[bytes], settings: Settings, cid: str,
                      queue: str, queued_before: int = 0) -> bool:
    return (Ledger(client, settings.keys).status(cid) is None
            and client.llen(queue) == queued_before
            and not list(client.scan_iter(match=f"{settings.key_prefix}:*{cid}*")))


def _write(tmp_path: Path, data: bytes, name: str = "list.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# -- the reported cases -------------------------------------------------------------------

def test_one_latin1_byte_costs_its_row_only(tmp_path: Path) -> None:
    lines = [f"u{i}@example.test,Name{i}".encode() for i in range(1, 3001)]
    lines[2000] = "u2001@example.test,Jos\u00e9".encode("latin-1")  # row 2,001
    p = _write(tmp_path, b"email,name\n" + b"\n".join(lines) + b"\n")
    rows = list(read_recipients(p))
    assert [r.row for r in rows] == list(range(1, 3001))
    bad = rows[2000]
    assert isinstance(bad, InvalidRow)
    assert bad.reason == "line 2002: not UTF-8: byte 0xE9 in column 'name'"
    assert bad.email == "u2001@example.test"
    others = [r for r in rows if r.row != 2001]
    assert all(isinstance(r, Recipient) and r.email == f"u{r.row}@example.test"
               and r.vars == {"name": f"Name{r.row}"} for r in others)


def test_bad_byte_in_the_address_is_shown_escaped(tmp_path: Path) -> None:
    p = _write(tmp_path, b"email,name\nb\xffb@example.test,B\n")
    (row,) = read_recipients(p)
    assert isinstance(row, InvalidRow)
    assert row.email == "b\\udcffb@example.test"  # storable, printable
    assert "byte 0xFF in column 'email'" in row.reason


def test_non_utf8_header_is_a_file_error(tmp_path: Path) -> None:
    p = _write(tmp_path, b"email,n\xe9m\nu@example.test,x\n")
    with pytest.raises(InputError, match=r"list.csv: line 1: the CSV header is not UTF-8"):
        list(read_recipients(p))


def test_unterminated_quote_stops_the_send_with_nothing_enqueued(
        tmp_path: Path, bm_settings: Settings, app: Celery,
        redis_client: redis.Redis[bytes], provider: str, queue: str) -> None:
    p = _write(tmp_path, b'email,name\nann@example.test,Ann\nbob@example.test,"Bob\n'
                         b"carol@example.test,Carol\ndave@example.test,Dave\n")
    with pytest.raises(InputError) as caught:
        enqueue_campaign(bm_settings, app, redis_client, _spec(provider), p)
    assert str(caught.value) == (
        f"{p}: line 3: unterminated quote (the quoted field of the row starting here never "
        "closes); nothing was enqueued")
    assert _nothing_enqueued(redis_client, bm_settings, "c1", queue)


def test_quote_closed_early_is_malformed_not_a_leak(tmp_path: Path) -> None:
    # Bob's quote is closed by Dave's opening quote: without strict parsing, Carol's row
    # became part of Bob's name.
    p = _write(tmp_path, b'email,name\nbob@example.test,"Bob\ncarol@example.test,Carol\n'
                         b'dave@example.test,"Dave"\n')
    with pytest.raises(InputError, match=r"list.csv: line 4: malformed quoting in the row "
                                         r"starting at line 2"):
        read_recipients(p)


def test_field_over_max_field_bytes(tmp_path: Path) -> None:
    big = "\u00e9" * (64 * 1024 + 1)  # 64 Ki characters, 128 KiB + 2 bytes
    p = _write(tmp_path, f'email,note\na@example.test,ok\nb@example.test,"{big}"\n'.encode())
    with pytest.raises(InputError, match=r"list.csv: line 3: a field of the row starting here "
                                         r"is larger than max_field_bytes \(131072 bytes\)"):
        read_recipients(p)
    # the limit is a setting; raised, the same file reads
    rows = list(read_recipients(p, limits=ReaderLimits(max_field_bytes=200 * 1024)))
    assert [type(r) for r in rows] == [Recipient, Recipient]
    assert rows[1].vars == {"note": big}  # type: ignore[union-attr]


def test_field_over_a_lowered_limit(tmp_path: Path) -> None:
    p = _write(tmp_path, b"email,note\na@example.test,0123456789\n")
    with pytest.raises(InputError, match=r"line 2: .*max_field_bytes \(9 bytes\)"):
        read_recipients(p, limits=ReaderLimits(max_field_bytes=9))


def test_row_spanning_too_many_lines(tmp_path: Path) -> None:
    note = "\n".join(["x"] * 100)  # 100 lines in one quoted field
    p = _write(tmp_path, f'email,note\na@example.test,"{note}"\nb@example.test,y\n'.encode())
    with pytest.raises(InputError, match=r"list.csv: line 2: the row starting here spans "
                                         r"100 lines, more than max_row_lines \(99\)"):
        read_recipients(p, limits=ReaderLimits(max_row_lines=99))
    rows = list(read_recipients(p))  # the default (100) admits it
    assert [r.row for r in rows] == [1, 2] and rows[0].vars == {"note": note}  # type: ignore[union-attr]


def test_limits_come_from_settings(tmp_path: Path, redis_url: str, key_prefix: str, app: Celery,
                                   redis_client: redis.Redis[bytes], provider: str,
                                   queue: str) -> None:
    strict = Settings(redis_url=redis_url, key_prefix=key_prefix, max_row_lines=2)
    p = _write(tmp_path, b'email,name\na@example.test,"A\nB\nC"\n')
    with pytest.raises(InputError, match="max_row_lines"):
        enqueue_campaign(strict, app, redis_client, _spec(provider), p)
    assert _nothing_enqueued(redis_client, strict, "c1", queue)


def test_jsonl_line_failures_are_invalid_rows(
        tmp_path: Path, bm_settings: Settings, app: Celery,
        redis_client: redis.Redis[bytes], provider: str, queue: str) -> None:
    lines = [
        json.dumps({"email": "a@example.test", "name": "A"}).encode(),
        b"[" * 100_000 + b"]" * 100_000,                      # RecursionError
        b'{"email": "b@example.test", "n": ' + b"9" * 5000 + b"}",  # int digits limit
        b'{"email": "c@example.test", "name": "\xe9"}',        # not UTF-8
        b'{"email": "d@example.test", "name": "\\ud800"}',     # lone surrogate
        b'"just a string"',
        b"{oops",
        b'{"email": "e@example.test", "name": "\\ud83d\\ude00"}',  # a valid pair
        b'{"email": "\\udcff@example.test"}',                  # surrogate in the address
    ]
    p = _write(tmp_path, b"\n".join(lines) + b"\n", "list.jsonl")
    res = enqueue_campaign(bm_settings, app, redis_client, _spec(provider), p)
    assert (res.rows, res.queued, res.invalid) == (9, 2, 7)
    ledger = Ledger(redis_client, bm_settings.keys)
    reasons = {e.row: e.detail["reason"] for e in ledger.entries("c1", {State.INVALID})}
    assert reasons[2] == "line 2: not JSON: nested too deeply"
    assert reasons[3].startswith("line 3: not JSON: Exceeds the limit")
    assert reasons[4].startswith("line 4: not UTF-8")
    assert reasons[5] == "line 5: not valid Unicode: a lone surrogate escape (\\ud800-\\udfff)"
    assert reasons[6] == "line 6: expected a JSON object"
    assert reasons[7].startswith("line 7: not JSON")
    assert reasons[9] == "line 9: not valid Unicode: a lone surrogate escape (\\ud800-\\udfff)"
    sent = ledger.batch("c1", 0)
    assert sent == [Recipient(1, "a@example.test", {"name": "A"}),
                    Recipient(8, "e@example.test", {"name": "\U0001f600"})]
    status = ledger.status("c1")
    assert status is not None and status.total == status.accounted == 9


# -- properties ---------------------------------------------------------------------------

MARK = re.compile(r"<(\d+)>")
# Hostile text: CSV syntax, line breaks, NUL, BOM, non-ASCII, but never "<" or ">", so
# the row markers below stay unambiguous.
HOSTILE = st.text(st.sampled_from(list('",\r\n\x00\ufeff \t;\'\\é€😀ab=')), max_size=12)
MUTATIONS = st.sampled_from([b'"', b"\xe9", b"\xff", b"\x80", b"\r", b"\n", b"\xef\xbb\xbf",
                             b",", b'""', b"\x00", b"\xc3"])


def _csv_file(values: list[tuple[str, str]], bom: bool) -> tuple[bytes, list[int]]:
    """The file and the byte offset where each row starts (row i's fields carry <i>)."""
    out = io.StringIO()
    # "\r\n" (the default) also makes the writer quote a lone "\r" in a field
    writer = csv.writer(out)
    writer.writerow(["email", "a", "b"])
    starts = []
    for i, (a, b) in enumerate(values, start=1):
        starts.append(len(out.getvalue().encode()))
        writer.writerow([f"u{i}@example.test", f"<{i}>{a}", f"<{i}>{b}"])
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode(), starts


def _no_leak(recipients: list[Recipient]) -> None:
    """Each recipient's variables carry the marker of one source row at most, and it is
    the row its address came from (a mutation may split an address, leaving no owner)."""
    for r in recipients:
        marks = {int(m) for value in r.vars.values() for m in MARK.findall(str(value))}
        assert len(marks) <= 1, (r.row, r.email, r.vars)
        owner = re.fullmatch(r"u(\d+)@example\.test", r.email)
        if owner is not None and marks:
            assert marks == {int(owner.group(1))}, (r.row, r.email, r.vars)


def _enqueue_checked(settings_: Settings, app: Celery, client: redis.Redis[bytes],
                     provider: str, path: Path) -> tuple[int, list[Recipient]] | None:
    """Enqueue ``path`` as a fresh campaign; check its ledger accounts for every row once.
    Returns the rows read and the recipients queued; None when the file was refused (and
    then nothing may be in Redis)."""
    cid = f"h{uuid.uuid4().hex[:10]}"
    queued_before = client.llen(queue_name(provider))  # earlier examples' tasks
    try:
        res = enqueue_campaign(settings_, app, client, _spec(provider, cid), path)
    except InputError:
        assert _nothing_enqueued(client, settings_, cid, queue_name(provider), queued_before)
        return None
    ledger = Ledger(client, settings_.keys)
    status = ledger.status(cid)
    assert status is not None and status.total == status.accounted == res.rows
    entries = list(ledger.entries(cid))
    assert sorted(e.row for e in entries) == list(range(1, res.rows + 1))  # one state each
    sent = [r for b in range(res.batches) for r in ledger.batch(cid, b)]
    assert len(sent) == res.queued
    return res.rows, sent


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=st.lists(st.tuples(HOSTILE, HOSTILE), min_size=1, max_size=12), bom=st.booleans(),
       mutation=st.none() | st.tuples(MUTATIONS, st.integers(0, 10_000)))
def test_csv_hostile_input_every_row_one_state_no_leak(
        tmp_path: Path, bm_settings: Settings, app: Celery, redis_client: redis.Redis[bytes],
        provider: str, queue: str, values: list[tuple[str, str]], bom: bool,
        mutation: tuple[bytes, int] | None) -> None:
    data, _ = _csv_file(values, bom)
    if mutation is not None:
        insert, at = mutation
        at %= len(data) + 1
        data = data[:at] + insert + data[at:]
    p = _write(tmp_path, data)
    outcome = _enqueue_checked(bm_settings, app, redis_client, provider, p)
    if outcome is None:
        assert mutation is not None  # a well-formed file is never refused
        return
    rows, sent = outcome
    _no_leak(sent)
    if mutation is None:
        # untouched: every row read back exactly, in order
        assert rows == len(values)
        assert [(r.row, r.email, r.vars) for r in sent] == [
            (i, f"u{i}@example.test", {"a": f"<{i}>{a}", "b": f"<{i}>{b}"})
            for i, (a, b) in enumerate(values, start=1)]


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.tuples(HOSTILE, HOSTILE), min_size=1, max_size=12),
       bad=st.sampled_from([b"\xe9", b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80"]),
       data=st.data())
def test_csv_bad_bytes_cost_exactly_their_row(tmp_path_factory: pytest.TempPathFactory,
                                              values: list[tuple[str, str]], bad: bytes,
                                              data: st.DataObject) -> None:
    body, starts = _csv_file(values, bom=False)
    row = data.draw(st.integers(1, len(values)), label="row")
    end = starts[row] if row < len(values) else len(body)
    at = data.draw(st.integers(starts[row - 1], end - 2), label="offset")  # before "\r\n"
    # Next to a quote any byte, ASCII or not, changes the quoting (after a closing quote
    # it is malformed, before an opening one the field is no longer quoted): that is the
    # structural case, tested above. Here the byte sits inside a field's text.
    assume(body[at - 1:at] != b'"' and body[at:at + 1] != b'"')
    p = _write(tmp_path_factory.mktemp("csv"), body[:at] + bad + body[at:])
    rows = list(read_recipients(p))
    assert [r.row for r in rows] == list(range(1, len(values) + 1))
    broken = rows[row - 1]
    assert isinstance(broken, InvalidRow) and "not UTF-8: byte 0x" in broken.reason
    assert all(isinstance(r, Recipient) for r in rows if r.row != row)
    _no_leak([r for r in rows if isinstance(r, Recipient)])


JSON_LINES = st.one_of(
    st.builds(lambda a, b: {"name": a, "x": b}, HOSTILE, HOSTILE),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    st.integers(1, 30_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 6000).map(lambda n: b'{"email": "z@example.test", "n": ' + b"1" * n + b"}"),
    st.sampled_from([b"null", b"[]", b"1e999999", b'"\\ud800"', b'{"email": "\\udfff"}',
                     b'{"a": "\\ud800"}', b"\xef\xbb\xbf{}", b"{}", b'{"email": 5}']),
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(JSON_LINES, min_size=1, max_size=10))
def test_jsonl_hostile_input_every_row_one_state_no_leak(
        tmp_path: Path, bm_settings: Settings, app: Celery, redis_client: redis.Redis[bytes],
        provider: str, queue: str, lines: list[dict[str, str] | bytes]) -> None:
    raw: list[bytes] = []
    for i, line in enumerate(lines, start=1):
        if isinstance(line, dict):
            obj = {"email": f"u{i}@example.test", **{k: f"<{i}>{v}" for k, v in line.items()}}
            raw.append(json.dumps(obj, ensure_ascii=bool(i % 2)).encode())
        else:
            raw.append(line)
    p = _write(tmp_path, b"\n".join(raw) + b"\n", "list.jsonl")
    outcome = _enqueue_checked(bm_settings, app, redis_client, provider, p)
    assert outcome is not None  # a JSONL file is never refused for its lines
    rows, sent = outcome
    assert rows == sum(1 for line in raw if line.strip())  # a row per line, none lost
    _no_leak(sent)
