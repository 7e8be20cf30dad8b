"""Derived keys and HMAC tags (workers/signing.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.signing import PURPOSES, derive_key, make_tag, verify_tag

SECRET = b"correct horse battery staple"


def test_each_purpose_has_its_own_key() -> None:
    keys = {derive_key(SECRET, p) for p in PURPOSES}
    assert len(keys) == len(PURPOSES)
    assert SECRET not in keys


def test_unknown_purpose_and_empty_secret_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown signing purpose"):
        derive_key(SECRET, "cookies")
    with pytest.raises(ValueError, match="empty"):
        derive_key(b"", "records")


@given(st.lists(st.binary(max_size=40), max_size=4), st.sampled_from([16, 24, 32]))
def test_tag_verifies_its_parts_only(parts: list[bytes], size: int) -> None:
    key = derive_key(SECRET, "records")
    tag = make_tag(key, *parts, size=size)
    assert verify_tag(key, tag, *parts)
    assert not verify_tag(derive_key(SECRET, "unsubscribe"), tag, *parts)
    assert not verify_tag(key, tag, *parts, b"x")


def test_parts_are_length_prefixed() -> None:
    key = derive_key(SECRET, "verp")
    assert make_tag(key, "ab", "c") != make_tag(key, "a", "bc")


@pytest.mark.parametrize("bad", ["", "!!!", "AAAA", "a" * 100])
def test_malformed_tags_do_not_verify(bad: str) -> None:
    assert not verify_tag(derive_key(SECRET, "records"), bad, "x")


def test_a_flipped_character_does_not_verify() -> None:
    key = derive_key(SECRET, "unsubscribe")
    tag = make_tag(key, "42", "user@example.com", size=16)
    flipped = ("B" if tag[5] == "A" else "A").join([tag[:5], tag[6:]])
    assert not verify_tag(key, flipped, "42", "user@example.com")
