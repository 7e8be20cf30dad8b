"""Ids built in one place (config/schema.py): task ids, retry-queue members, the id rule."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.errors import InputError, InvalidIdError
from config.schema import (
    ID_RULE,
    check_id,
    is_valid_id,
    parse_retry_member,
    requeue_task_id,
    retry_member,
    retry_task_id,
    task_id,
)

ID_CHARS = string.ascii_letters + string.digits + "._-"
valid_ids = st.builds(lambda first, rest: first + rest,
                      st.sampled_from(string.ascii_letters + string.digits),
                      st.text(ID_CHARS, max_size=63))


def test_formats() -> None:
    assert task_id("spring", 7) == "spring:7"
    assert retry_member("spring", 7) == "spring:7"
    assert retry_task_id("spring", 7, 1700000000123) == "spring:7:r1700000000123"
    assert requeue_task_id("spring", 7, 1700000000123) == "spring:7:q1700000000123"


@given(valid_ids, st.integers(min_value=0, max_value=10**9))
def test_a_member_names_exactly_its_batch(cid: str, batch_no: int) -> None:
    assert is_valid_id(cid) and check_id(cid) == cid
    assert parse_retry_member(retry_member(cid, batch_no)) == (cid, batch_no)


@pytest.mark.parametrize("member", ["spring", "spring:", "spring:x", ":", "spring:-1", "a:²"])
def test_a_malformed_member_is_refused(member: str) -> None:
    with pytest.raises(ValueError, match="retry-queue member"):
        parse_retry_member(member)


@pytest.mark.parametrize("bad", ["", "-lead", ".lead", "a:b", "news:counts", "a b", "a/b",
                                 "a\n", "x" * 65, "é", "a\x1b[31m", None, 7, b"abc"])
def test_the_id_rule_refuses(bad: object) -> None:
    assert not is_valid_id(bad)
    with pytest.raises(InvalidIdError, match="must be 1-64 letters") as info:
        check_id(bad, what="message_id")
    assert str(info.value).startswith("message_id: ")
    # an InputError (CLI: error message, exit 2) and a ValueError for callers
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)


@given(st.text(max_size=80))
def test_the_rule_is_the_documented_one(text: str) -> None:
    expected = (0 < len(text) <= 64 and text[0] in ID_CHARS.replace("._-", "")
                and all(c in ID_CHARS for c in text))
    assert is_valid_id(text) is expected


def test_a_long_id_is_cut_short_in_the_message() -> None:
    with pytest.raises(InvalidIdError) as info:
        check_id("x" * 5000)
    assert len(str(info.value)) < 120 + len(ID_RULE)
