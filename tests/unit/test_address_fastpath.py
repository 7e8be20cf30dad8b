"""The address fast path of ``check_address`` decides exactly as ``validate_email`` does.

``check_address`` accepts plain ASCII addresses with a regex and a per-domain cache of
email_validator's own domain check, and hands everything else to ``validate_email``. The
reference below is the check as it was before the fast path (``validate_email`` on every
address); normalized address or error message, the two must agree on every input.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from email_validator.rfc_constants import ATEXT_RE, CASE_INSENSITIVE_MAILBOX_NAMES
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from config.addresses import canonical_address
from producers import recipients
from producers.recipients import _ATEXT, _domain_verdict, check_address

Outcome = tuple[str, str]


def reference(raw: str) -> str:
    """``check_address`` without the fast path: validate_email on every address, its
    result in canonical form."""
    if not raw:
        raise ValueError("empty email")
    if any(c in raw for c in ("\r", "\n", "\x00")):
        raise ValueError("email contains CR/LF (header injection)")
    try:
        info = validate_email(raw, check_deliverability=False, allow_smtputf8=True,
                              test_environment=True)
    except EmailNotValidError as exc:
        raise ValueError(f"bad address: {exc}") from None
    return canonical_address(str(info.normalized))


def outcome(check: Callable[[str], str], raw: str) -> Outcome:
    try:
        return "ok", check(raw)
    except ValueError as exc:
        return "error", str(exc)


@pytest.fixture
def no_validate_email(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record the addresses that reach ``validate_email`` (i.e. miss the fast path)."""
    slow: list[str] = []

    def spy(raw: str, **kwargs: Any) -> ValidatedEmail:
        slow.append(raw)
        return validate_email(raw, **kwargs)

    monkeypatch.setattr(recipients, "validate_email", spy)
    yield slow


# -- generated addresses ----------------------------------------------------------------------

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
#: characters outside an ASCII dot-atom: specials, spaces, controls, non-ASCII, look-alikes
ODD = ['"', "\\", " ", "(", ")", ",", ":", ";", "<", ">", "[", "]", "@", "\t", "\x7f",
       "é", "ß", "İ", "\u212a", "\u0301", "\u200b", "\u00a0", "\u2028", "＠", "﹫", "．", "。",
       "ａ", "例", "\ud800"]
ROLE_NAMES = list(CASE_INSENSITIVE_MAILBOX_NAMES)
TLDS = ["test", "TEST", "Test", "com", "COM", "org", "local", "LOCAL", "localhost",
        "invalid", "onion", "arpa", "in-addr.arpa", "example", "x", "123", "c0m", "co-uk",
        "xn--p1ai", "xn--zz", "рф", "テスト", ""]
#: 57 x U+4F8B (171 bytes of UTF-8) in a 63-character Punycode label
LONG_IDN = "xn--fsq" + "a" * 56
LABELS = [LONG_IDN, "xn--fsqaaaaa", "example", "EXAMPLE", "Mail", "a", "a-b", "-a", "a-",
          "ab--cd", "xn--bcher-kva", "xn--", "xn--a", "XN--BCHER-KVA", "bücher", "例え",
          "ПРИМЕР", "ａｂｃ", "ß", "1", "0-0", "localhost", "test", "under_score", ""]


@st.composite
def mixed_case(draw: st.DrawFn, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if f else c for c, f in zip(word, flips, strict=True))


def atoms(alphabet: str, max_size: int = 12) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=1, max_size=max_size)


local_parts = st.one_of(
    # plain dot-atoms, the fast path's business
    st.lists(atoms(ATEXT), min_size=1, max_size=4).map(".".join),
    # dots in odd places: leading, trailing, doubled, alone
    st.text(alphabet=ATEXT[:10] + "....", min_size=0, max_size=10),
    # RFC 2142 role names in any case (validate_email lower-cases those)
    st.sampled_from(ROLE_NAMES).flatmap(mixed_case),
    st.sampled_from(ROLE_NAMES).map(lambda n: n + "s"),
    # anything else a list can hold
    st.text(alphabet=st.sampled_from(list(ATEXT[:8] + ".") + ODD), max_size=10),
    st.text(max_size=8),
    # quoted local parts
    st.text(alphabet=ATEXT[:6] + ' ."@\\', max_size=8).map(lambda s: f'"{s}"'),
    # around the 64-character local-part limit (only "strict" enforces it)
    st.integers(60, 70).map(lambda n: "l" * n),
)

labels = st.one_of(
    st.sampled_from(LABELS),
    st.text(alphabet=string.ascii_letters + string.digits + "-", min_size=0, max_size=12),
    st.text(alphabet=string.ascii_lowercase + "-_.", min_size=1, max_size=6),
    st.integers(60, 66).map(lambda n: "d" * n),  # the 63-character label limit
    st.text(alphabet=st.sampled_from(list("ab-") + ODD), min_size=1, max_size=4),
)

domains = st.one_of(
    st.builds(lambda ls, tld, sep, trail: sep.join([*ls, tld]) + trail,
              st.lists(labels, min_size=0, max_size=3), st.sampled_from(TLDS),
              st.sampled_from([".", ".", ".", "。", "．"]), st.sampled_from(["", "", "", "."])),
    st.sampled_from(["[1.2.3.4]", "[300.1.1.1]", "[IPv6:::1]", "[ipv6:2001:db8::1]",
                     "[IPv6:fe80::1%eth0]", "[foo:bar]", "[1.2.3.4", "localhost", "test",
                     "TEST", ".example.test", "example..test", "", "@example.test"]),
)


@st.composite
def near_length_limit(draw: st.DrawFn) -> str:
    """Addresses of 250-258 characters (254 is the limit; 253 for a domain)."""
    total = draw(st.integers(250, 258))
    local = "u" * draw(st.integers(1, 70))
    tld = draw(st.sampled_from(["test", "com", "TEST"]))
    room = total - len(local) - 1 - len(tld)
    parts: list[str] = []
    while room > 1:
        size = min(room - 1, draw(st.integers(1, 63)))
        parts.append("d" * size)
        room -= size + 1
    domain = ".".join([*parts, tld])
    return f"{local}@{domain}"


addresses = st.one_of(
    st.builds(lambda lp, d: f"{lp}@{d}", local_parts, domains),
    st.builds(lambda lp, d: f"{lp}@{d}", local_parts, domains),
    near_length_limit(),
    # no @-sign, two of them, a display name, stray spaces
    st.builds(lambda lp, d: f"{lp}{d}", local_parts, domains),
    st.builds(lambda lp, d, e: f"{lp}@{d}@{e}", local_parts, domains, domains),
    st.builds(lambda lp, d: f"Name <{lp}@{d}>", local_parts, domains),
    st.builds(lambda lp, d, pad: f"{pad}{lp}@{d}{pad}", local_parts, domains,
              st.sampled_from([" ", "\n", "\r\n", "\x00"])),
)


@settings(max_examples=2500, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(addresses)
@example("Postmaster@Example.TEST")
@example("a@xn--bcher-kva.test")
@example("a@" + "d" * 63 + "." + "d" * 63 + "." + "d" * 63 + "." + "d" * 58 + ".test")
def test_fast_path_decides_like_validate_email(raw: str) -> None:
    expected = outcome(reference, raw)
    assert outcome(check_address, raw) == expected  # the domain verdict computed ...
    assert outcome(check_address, raw) == expected  # ... and taken from the cache


# -- a table of tricky cases --------------------------------------------------------------------

TABLE: list[tuple[str, str | None]] = [
    # (address, normalized or None for an error)
    ("user@example.test", "user@example.test"),
    ("A@Example.test", "A@example.test"),  # the local part keeps its case ...
    ("User.Name+tag@EXAMPLE.COM", "User.Name+tag@example.com"),  # ... the domain does not
    ("Postmaster@Example.TEST", "postmaster@example.test"),  # RFC 2142 role names do
    ("INFO@x.test", "info@x.test"),
    ("Infos@x.test", "Infos@x.test"),
    ("a@test", "a@test"),  # test_environment: bare "test" is allowed
    ("a@TEST", "a@test"),
    ("a@sub.example.test", "a@sub.example.test"),
    ("o'neil@example.test", "o'neil@example.test"),
    ("a!#$%&'*+-/=?^_`{|}~z@example.test", "a!#$%&'*+-/=?^_`{|}~z@example.test"),
    # one canonical form: the IDNA (ASCII) domain, lower-cased
    ("a@xn--bcher-kva.test", "a@xn--bcher-kva.test"),
    ("a@bücher.test", "a@xn--bcher-kva.test"),
    ("a@BÜCHER.test", "a@xn--bcher-kva.test"),
    (f"u@{LONG_IDN}.test", "u@" + canonical_address("x@" + "例" * 57 + ".test")[2:]),
    (f"u@{LONG_IDN}.{LONG_IDN}.test", None),  # 136 characters, 355 bytes once normalized
    ("l" * 65 + "@x.test", "l" * 65 + "@x.test"),  # local part over 64: not strict
    ("a@localhost", None),
    ("a@b.local", None),
    ("a@b.invalid", None),
    ("a@x.onion", None),
    ("a@1.in-addr.arpa", None),
    ("a@example", None),  # no period
    ("a@x.123", None),  # numeric TLD
    ("a@example.test.", None),  # trailing dot
    ("a@.example.test", None),
    ("a@example..test", None),
    ("a@-a.test", None),
    ("a@a-.test", None),
    ("a@ab--c.test", None),
    ("a@xn--a.test", None),  # Punycode that is not IDNA
    ("a@x_y.test", None),
    ("a@[1.2.3.4]", None),
    ("a@[IPv6:::1]", None),
    ("a..b@x.test", None),
    (".a@x.test", None),
    ("a.@x.test", None),
    ('"a"@x.test', None),
    ('"a b"@x.test', None),
    ("a b@x.test", None),
    ("é@x.test", "é@x.test"),  # a non-ASCII local part is kept: SMTPUTF8 is the sender's call
    ("a@b@x.test", None),
    ("Name <a@x.test>", None),
    ("", None),
    ("a@x.test\n", None),
    ("@x.test", None),
    ("a@", None),
    ("a@" + "d" * 64 + ".test", None),  # label over 63
    ("u@" + "d" * 63 + "." + "d" * 63 + "." + "d" * 63 + "." + "d" * 57 + ".test",
     None),  # domain of 254 (limit 253)
    ("u@" + "d" * 63 + "." + "d" * 63 + "." + "d" * 63 + "." + "d" * 56 + ".test",
     None),  # domain of 253, address of 255
    ("u" * 65 + "@" + "d" * 63 + "." + "d" * 63 + "." + "d" * 56 + ".test",
     None),  # address of 255
    ("u" * 64 + "@" + "d" * 63 + "." + "d" * 63 + "." + "d" * 56 + ".test",
     "u" * 64 + "@" + "d" * 63 + "." + "d" * 63 + "." + "d" * 56 + ".test"),  # 254 exactly
]


@pytest.mark.parametrize(("raw", "normalized"), TABLE)
def test_table(raw: str, normalized: str | None) -> None:
    expected = outcome(reference, raw)
    assert outcome(check_address, raw) == expected
    if normalized is None:
        assert expected[0] == "error"
    else:
        assert expected == ("ok", normalized)


# -- the fast path is taken, and only where it may be -------------------------------------------

def test_plain_addresses_never_reach_validate_email(no_validate_email: list[str]) -> None:
    plain = ["user@example.test", "A.B+c@Mail.Example.COM", "Postmaster@example.test",
             "a@test", "x_y-z@sub-domain.example.org", "u" * 63 + "@" + "d" * 63 + ".test"]
    for raw in plain:
        assert check_address(raw) == reference(raw)
    # and neither do addresses at a domain already known to be bad
    for raw in ["a@localhost", "b@localhost", "a@ab--c.test"]:
        assert outcome(check_address, raw) == outcome(reference, raw)
    assert no_validate_email == []


@pytest.mark.parametrize("raw", [
    "a@xn--bcher-kva.test",  # normalizes to Unicode
    "a@bücher.test", "é@x.test", '"a"@x.test', "a@[1.2.3.4]", "a..b@x.test", ".a@x.test",
    "a b@x.test", "Name <a@x.test>", "a@b@x.test", "l" * 250 + "@x.test",
])
def test_unusual_addresses_take_validate_email(raw: str, no_validate_email: list[str]) -> None:
    assert outcome(check_address, raw) == outcome(reference, raw)
    assert no_validate_email == [raw]


def test_atext_is_email_validators() -> None:
    """The fast regex admits exactly the ASCII characters validate_email's dot-atom does."""
    import re

    ours = re.compile(f"[{_ATEXT}]")
    for code in range(128):
        c = chr(code)
        theirs = c != "." and ATEXT_RE.fullmatch(c) is not None
        assert (ours.fullmatch(c) is not None) == theirs, repr(c)


def test_domain_cache_is_bounded() -> None:
    info = _domain_verdict.cache_info()
    assert info.maxsize is not None and info.maxsize <= 100_000
