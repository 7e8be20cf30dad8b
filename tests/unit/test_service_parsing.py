"""Pure parsing of what HTTP clients send: upload names, cursors, sizes, ids, problems."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producers.service.intake import derived_id, recipient_suffix, upload_label
from producers.service.limits import parse_size
from producers.service.pages import _parse
from producers.service.problems import Problem, _loc, field_of

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@given(st.one_of(st.none(), st.text()))
def test_an_upload_name_becomes_one_tame_path_component(name: str | None) -> None:
    label = upload_label(name, "recipients.csv")
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", label)
    folder = Path("/spool")
    target = folder / (Path(label).stem + ".csv")
    assert target.parent == folder and target.name not in (".", "..")


def test_upload_names_keep_their_base_name() -> None:
    assert upload_label("C:\\Users\\ann\\list.csv", "x") == "list.csv"
    assert upload_label("../../etc/passwd", "x") == "passwd"
    assert upload_label("", "fallback.toml") == "fallback.toml"
    assert upload_label("spring sale.toml", "x") == "spring_sale.toml"


@pytest.mark.parametrize(("name", "ctype", "suffix"), [
    ("list.CSV", None, ".csv"), ("a.txt", None, ".csv"), ("a.ndjson", None, ".jsonl"),
    ("upload", "application/x-ndjson; charset=utf-8", ".jsonl"), (None, "text/csv", ".csv"),
])
def test_recipient_suffix(name: str | None, ctype: str | None, suffix: str) -> None:
    assert recipient_suffix(name, ctype) == suffix


def test_unknown_recipient_types_are_refused() -> None:
    with pytest.raises(Problem) as err:
        recipient_suffix("list.xlsx", "application/vnd.ms-excel")
    assert err.value.status == 422 and err.value.errors[0]["field"] == "recipients"


@given(st.text(max_size=80))
def test_a_cursor_is_parsed_or_refused_with_valueerror(text: str) -> None:
    try:
        kind, scan, batch, index = _parse(text)
    except ValueError as exc:
        assert "not a cursor" in str(exc)
        return
    assert kind in ("i", "b") and batch >= 0 and index >= 0
    assert (kind == "i") == bool(scan)


@given(st.integers(0, 10**9), st.integers(0, 10**5))
def test_batch_cursors_round_trip(batch: int, index: int) -> None:
    assert _parse(f"b:{batch}:{index}") == ("b", "", batch, index)


@given(st.text(max_size=30))
def test_a_size_is_positive_bytes_or_valueerror(text: str) -> None:
    try:
        size = parse_size(text)
    except ValueError:
        return
    assert isinstance(size, int) and size >= 1


def test_sizes() -> None:
    assert parse_size("10M") == 10 * 1024**2
    assert parse_size("1G") == 1024**3
    assert parse_size("512k") == 512 * 1024
    assert parse_size("2000") == 2000
    with pytest.raises(ValueError, match="above zero"):
        parse_size("0")


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=200))
def test_derived_ids_are_valid_ids_and_depend_on_key_and_header(key: str, header: str) -> None:
    a = derived_id("c", key, header)
    assert _ID.match(a) and a == derived_id("c", key, header)
    assert a != derived_id("c", key + "x", header)
    assert a != derived_id("c", key, header + "x")


def test_the_field_is_pulled_from_producer_messages() -> None:
    assert field_of("campaign: field 'provider': unknown provider 'x'") == "provider"
    assert field_of("campaign: missing required field 'from'") == "from"
    assert field_of("list.csv: the CSV has no 'email' column") is None


def test_validation_locations_read_like_json_paths() -> None:
    assert _loc(("body", 0, "to")) == "[0].to"
    assert _loc(("body", "from")) == "from"
    assert _loc(("query", "limit")) == "limit"
    assert _loc(("body",)) == "body"
