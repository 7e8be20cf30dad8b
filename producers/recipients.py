"""Streaming recipient readers: CSV (an ``email`` column, every other column a template
variable) and JSON Lines (one object per line with an ``email`` key).

Rows are read one at a time and never collected, so the producer's memory does not grow
with the list. Each row is checked on its own; a bad row becomes an :class:`InvalidRow`
with its row number and reason and never stops the reading. Duplicates are found on the
Redis side at enqueue time (a set in Redis), again to keep the producer flat.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import email_validator
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH
from email_validator.syntax import validate_email_domain_name

from config.schema import Recipient
from workers.errors import InputError

__all__ = [
    "InvalidRow",
    "check_address",
    "check_rows",
    "read_recipients",
]


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row that will not be sent: its row number, what it held as address, and why."""

    row: int
    email: str
    reason: str


_HEADER_UNSAFE = ("\r", "\n", "\x00")

# -- address check ----------------------------------------------------------------------
#
# ``validate_email`` costs 25-60 us an address, most of it re-checking the same handful of
# domains character by character. The fast path below handles the overwhelmingly common
# shape -- a plain ASCII dot-atom local part, an ASCII host name -- with one precompiled
# regex and a cache of the domain check (email_validator's own, run once per distinct
# domain), and gives every other address to ``validate_email``. Its result, normalized
# address or error, is the same as ``validate_email``'s for every input (property-tested in
# tests/unit/test_address_fastpath.py):
#
# * For such an address ``validate_email`` splits at the one "@"; the local part passes its
#   dot-atom regex unchanged (ASCII: NFC is a no-op), and only the RFC 2142 role names
#   ("Postmaster", "INFO", ...) are lower-cased. The first error it can then raise is the
#   domain's, from ``validate_email_domain_name`` -- a pure function of the domain, cached
#   here with its error message.
# * The last check is the length (254): the input is ASCII and at most 254 long, and the
#   fast path accepts only domains whose normalized form is the domain lower-cased (no
#   Punycode, which normalizes to Unicode), so the normalized and IDNA forms have the
#   input's length too.

# RFC 5322 atext: the characters of email_validator's DOT_ATOM_TEXT (rfc_constants.ATEXT).
_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_FAST_ADDRESS = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([a-zA-Z0-9.\-]+)").fullmatch
_ROLE_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
#: distinct domains whose verdict is kept (least recently used dropped): 2-3 MB at most
DOMAIN_CACHE_SIZE = 8192


@functools.lru_cache(maxsize=DOMAIN_CACHE_SIZE)
def _domain_verdict(domain: str) -> tuple[str, str]:
    """``(normalized domain, "")`` when the fast path may accept addresses at ``domain``,
    ``("", error)`` when ``validate_email`` rejects them with ``error``, ``("", "")`` when
    they must take ``validate_email`` (the normalized domain is not just lower-cased)."""
    try:
        info = validate_email_domain_name(
            domain, test_environment=True,
            globally_deliverable=email_validator.GLOBALLY_DELIVERABLE)
    except EmailNotValidError as exc:
        return "", str(exc)
    normalized = info["domain"]
    if normalized == info["ascii_domain"] == domain.lower():
        return normalized, ""
    return "", ""


def check_address(raw: str) -> str:
    """The normalized address, or ``ValueError`` with a reason. No DNS lookups.

    The same verdict as ``validate_email(raw, check_deliverability=False,
    allow_smtputf8=False, test_environment=True)``, decided without it for plain addresses.
    """
    if len(raw) <= EMAIL_MAX_LENGTH:
        m = _FAST_ADDRESS(raw)
        if m is not None:
            local, domain = m.group(1, 2)
            normalized, error = _domain_verdict(domain)
            if normalized:
                if local.lower() in _ROLE_NAMES:
                    local = local.lower()
                return f"{local}@{normalized}"
            if error:
                raise ValueError(f"bad address: {error}")
    return _check_address_slow(raw)


def _check_address_slow(raw: str) -> str:
    if not raw:
        raise ValueError("empty email")
    if any(c in raw for c in _HEADER_UNSAFE):
        raise ValueError("email contains CR/LF (header injection)")
    try:
        # test_environment admits the reserved *.test domain (handy for trials against a
        # capture server) and does no DNS; other special-use names stay refused.
        info = validate_email(raw, check_deliverability=False, allow_smtputf8=False,
                              test_environment=True)
    except EmailNotValidError as exc:
        raise ValueError(f"bad address: {exc}") from None
    return str(info.normalized)


def _header_unsafe(value: str) -> bool:
    return "\n" in value or "\r" in value or "\x00" in value


def _check_row(row: int, fields: dict[str, Any], header_fields: frozenset[str]
               ) -> Recipient | InvalidRow:
    raw_email = fields.pop("email", None)
    email = str(raw_email).strip() if raw_email is not None else ""
    return _check_fields(row, email, fields, header_fields)


def _check_fields(row: int, email: str, fields: dict[str, Any], header_fields: frozenset[str]
                  ) -> Recipient | InvalidRow:
    for name in header_fields:
        value = fields.get(name)
        if isinstance(value, str) and _header_unsafe(value):
            # Multi-line values are fine in bodies; in a header they would start a new one.
            return InvalidRow(row, email,
                              f"field {name!r} contains CR/LF and is used in a header")
    try:
        normalized = check_address(email)
    except ValueError as exc:
        return InvalidRow(row, email, str(exc))
    return Recipient(row, normalized, fields)


def _read_csv(path: Path, header_fields: frozenset[str]) -> Iterator[Recipient | InvalidRow]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: line 1: cannot read the CSV header: {exc}") from exc
        names = [h.strip() for h in header]
        if "email" not in names:
            raise InputError(
                f"{path}: the CSV has no 'email' column (columns: {', '.join(names) or 'none'})"
            )
        width = len(names)
        # The address is taken out of the row by position and the other columns zipped
        # into the variables directly (no dict built and then popped). Repeated column
        # names keep the dict semantics (the last one wins) through _check_row.
        email_at = names.index("email") if len(set(names)) == width else -1
        var_names = [n for n in names if n != "email"]
        row = 0
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                row += 1
                yield InvalidRow(row, "", f"unreadable CSV line {reader.line_num}: {exc}")
                continue
            if len(values) != width:
                if not values or values == [""]:
                    continue  # blank lines are not rows
                row += 1
                yield InvalidRow(row, "", f"line {reader.line_num}: {len(values)} fields, "
                                          f"the header has {width}")
                continue
            if width == 1 and values == [""]:
                continue  # a blank line (or a lone "") of a one-column file
            row += 1
            if email_at >= 0:
                email = values.pop(email_at).strip()
                yield _check_fields(row, email, dict(zip(var_names, values, strict=True)),
                                    header_fields)
            else:
                yield _check_row(row, dict(zip(names, values, strict=True)), header_fields)


def _read_jsonl(path: Path, header_fields: frozenset[str]
                ) -> Iterator[Recipient | InvalidRow]:
    with path.open("rb") as fh:
        row = 0
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row += 1
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield InvalidRow(row, "", f"line {line_no}: not JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                yield InvalidRow(row, "", f"line {line_no}: expected a JSON object")
                continue
            yield _check_row(row, obj, header_fields)


def check_rows(rows: Iterable[Mapping[str, Any]], *,
               header_fields: frozenset[str] = frozenset()) -> Iterator[Recipient | InvalidRow]:
    """Rows given in-process (dicts with an ``email`` key), checked like a file's rows and
    numbered from 1."""
    for row, fields in enumerate(rows, start=1):
        yield _check_row(row, dict(fields), header_fields)


def read_recipients(path: str | Path, *, header_fields: frozenset[str] = frozenset()
                    ) -> Iterator[Recipient | InvalidRow]:
    """Stream the rows of a ``.csv`` or ``.jsonl``/``.ndjson`` file, numbered from 1.

    ``header_fields`` are the variables the campaign uses in header templates: a row whose
    value for one of them holds CR or LF is invalid (it could inject a header).

    Raises :class:`InputError` (naming the file) only for problems with the whole file:
    missing, unreadable, or a CSV without an ``email`` column.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: recipient file not found")
    try:
        p.open("rb").close()
    except OSError as exc:
        raise InputError(f"{p}: cannot read the recipient file: {exc.strerror}") from exc
    suffix = p.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        return _read_jsonl(p, header_fields)
    if suffix in {".csv", ".txt", ""}:
        return _read_csv(p, header_fields)
    raise InputError(f"{p}: unknown recipient file type {suffix!r}; use .csv or .jsonl")
