"""Streaming recipient readers: CSV (an ``email`` column, every other column a template
variable) and JSON Lines (one object per line with an ``email`` key).

Rows are read one at a time and never collected, so the producer's memory does not grow
with the list. Each row is checked on its own; a bad row becomes an :class:`InvalidRow`
with its row number and reason and never stops the reading. Duplicates are found on the
Redis side at enqueue time (a set in Redis), again to keep the producer flat.

A CSV file is read twice. The first, streaming pass checks only its structure: an
unterminated or malformed quote, a field above ``max_field_bytes``, a row spanning more
than ``max_row_lines`` lines. Any of these raises :class:`InputError` naming the file and
line before a single row is handed out, so a broken file publishes nothing (a quote left
open would otherwise swallow the following rows into one recipient's variables). The
second pass yields the rows. Bytes that are not UTF-8 are not a structural problem (UTF-8
resynchronizes at the next character, and quotes, commas and line ends are ASCII): they
make just their row invalid, numbered like every other row.

JSON Lines files need no pre-pass: a line is a row, and anything wrong with a line (not
UTF-8, not JSON, nested too deep, a number too long, not an object, a lone surrogate)
makes that row invalid.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import email_validator
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH
from email_validator.syntax import validate_email_domain_name

from config.addresses import canonical_address
from config.errors import InputError
from config.schema import Recipient

__all__ = [
    "InvalidRow",
    "ReaderLimits",
    "check_address",
    "check_rows",
    "read_recipients",
]


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    """Structural limits of a CSV recipient file; exceeding one stops the send.

    Settable as ``BULKMAIL_MAX_FIELD_BYTES`` / ``BULKMAIL_MAX_ROW_LINES``
    (:class:`config.settings.Settings`).
    """

    #: longest field, in UTF-8 bytes
    max_field_bytes: int = 128 * 1024
    #: most physical lines one row may span (quoted fields may hold line breaks)
    max_row_lines: int = 100


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
    """The address in canonical form (:func:`config.addresses.canonical_address`: IDNA
    domain, lower-cased), or ``ValueError`` with a reason. No DNS lookups.

    The same verdict as ``validate_email(raw, check_deliverability=False,
    allow_smtputf8=True, test_environment=True)``, decided without it for plain addresses.
    A non-ASCII local part is accepted here; whether it can be sent (SMTPUTF8) is decided
    where it is sent.
    """
    if len(raw) <= EMAIL_MAX_LENGTH:
        m = _FAST_ADDRESS(raw)
        if m is not None:
            local, domain = m.group(1, 2)
            normalized, error = _domain_verdict(domain)
            if normalized:
                if local.lower() in _ROLE_NAMES:
                    local = local.lower()
                # already canonical: an ASCII, non-Punycode domain, lower-cased
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
        info = validate_email(raw, check_deliverability=False, allow_smtputf8=True,
                              test_environment=True)
    except EmailNotValidError as exc:
        raise ValueError(f"bad address: {exc}") from None
    return canonical_address(str(info.normalized))


def _header_unsafe(value: str) -> bool:
    return "\n" in value or "\r" in value or "\x00" in value


def _shown(text: str) -> str:
    """``text`` safe to store and print: undecodable bytes (surrogate escapes) and lone
    surrogates shown as ``\\udcXX`` escapes instead of breaking UTF-8 encoding later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


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
            return InvalidRow(row, _shown(email),
                              f"field {name!r} contains CR/LF and is used in a header")
    try:
        normalized = check_address(email)
    except ValueError as exc:
        return InvalidRow(row, _shown(email), _shown(str(exc)))
    return Recipient(row, normalized, fields)


# -- CSV ----------------------------------------------------------------------------------

# Undecodable bytes are read as surrogate escapes (U+DC80-U+DCFF), so that one bad byte
# costs its row only; this finds them.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _undecodable(names: list[str], values: list[str]) -> str | None:
    """The reason a CSV row is not UTF-8, or None when it is."""
    for name, value in zip(names, values, strict=False):
        found = _ESCAPED_BYTE.search(value)
        if found is not None:
            byte = ord(found.group()) - 0xDC00
            return f"not UTF-8: byte 0x{byte:02X} in column {_shown(name)!r}"
    return None


@contextmanager
def _open_csv(path: Path) -> Iterator[Iterator[list[str]]]:
    """A strict CSV reader over ``path`` (BOM skipped, bad bytes as surrogate escapes).

    ``strict``: a quote left open at the end of the file, or a closing quote followed by
    anything but a delimiter or line end, is an error, not text swallowed into a field.
    """
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        yield csv.reader(fh, strict=True)


def _structure_error(path: Path, start: int, reader: Any, exc: csv.Error,
                     limits: ReaderLimits) -> InputError:
    text = str(exc)
    if "unexpected end of data" in text:
        why = (f"line {start}: unterminated quote (the quoted field of the row starting "
               "here never closes)")
    elif "field larger than field limit" in text:
        why = (f"line {start}: a field of the row starting here is larger than "
               f"max_field_bytes ({limits.max_field_bytes} bytes)")
    else:
        why = (f"line {reader.line_num}: malformed quoting in the row starting at line "
               f"{start}: {text}")
    return InputError(f"{path}: {why}; nothing was enqueued")


def _ensure_field_limit(limits: ReaderLimits) -> None:
    # The csv module's own limit (characters, process-wide, 131072 by default) must not
    # cut in before ours; it is raised when a larger max_field_bytes is configured and
    # never lowered (others in this process may rely on it).
    if csv.field_size_limit() <= limits.max_field_bytes:
        csv.field_size_limit(limits.max_field_bytes + 1)


def _check_csv_structure(path: Path, limits: ReaderLimits) -> None:
    """The pre-pass: raise :class:`InputError` at the first structural error."""
    _ensure_field_limit(limits)
    max_lines, max_bytes = limits.max_row_lines, limits.max_field_bytes
    # A field of n characters has between n and 4n UTF-8 bytes (an escaped byte: 1):
    # only fields longer than this need their bytes counted.
    quick = max_bytes // 4
    with _open_csv(path) as reader:
        start = 1  # the line the next row starts on
        try:
            for values in reader:
                end = reader.line_num  # type: ignore[attr-defined]
                if end - start >= max_lines:
                    raise InputError(
                        f"{path}: line {start}: the row starting here spans "
                        f"{end - start + 1} lines, more than max_row_lines ({max_lines}); "
                        "is a quote left open? nothing was enqueued")
                if values and len(max(values, key=len)) > quick:
                    for value in values:
                        if (len(value) > quick and
                                len(value.encode("utf-8", "surrogateescape")) > max_bytes):
                            raise InputError(
                                f"{path}: line {start}: a field of the row starting here "
                                f"is larger than max_field_bytes ({max_bytes} bytes); "
                                "nothing was enqueued")
                start = end + 1
        except csv.Error as exc:
            raise _structure_error(path, start, reader, exc, limits) from None


def _read_csv(path: Path, header_fields: frozenset[str]) -> Iterator[Recipient | InvalidRow]:
    with _open_csv(path) as reader:
        try:
            yield from _csv_rows(path, reader, header_fields)
        except csv.Error as exc:
            # The pre-pass read the same file without error: it changed in between.
            raise InputError(f"{path}: line {reader.line_num}: {exc} (the file "  # type: ignore[attr-defined]
                             "changed while it was being read)") from exc


def _csv_rows(path: Path, reader: Iterator[list[str]], header_fields: frozenset[str]
              ) -> Iterator[Recipient | InvalidRow]:
    try:
        header = next(reader)
    except StopIteration:
        return
    names = [h.strip() for h in header]
    if _undecodable(names, names) is not None:
        raise InputError(f"{path}: line 1: the CSV header is not UTF-8")
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
    for values in reader:
        if len(values) != width:
            if not values or values == [""]:
                continue  # blank lines are not rows
            row += 1
            yield InvalidRow(row, "", f"line {reader.line_num}: {len(values)} fields, "  # type: ignore[attr-defined]
                                      f"the header has {width}")
            continue
        if width == 1 and values == [""]:
            continue  # a blank line (or a lone "") of a one-column file
        row += 1
        # Most rows are ASCII: one join and isascii() clear them of undecodable bytes.
        if not "".join(values).isascii():
            bad = _undecodable(names, values)
            if bad is not None:
                raw = values[email_at] if email_at >= 0 else ""
                yield InvalidRow(row, _shown(raw.strip()),
                                 f"line {reader.line_num}: {bad}")  # type: ignore[attr-defined]
                continue
        if email_at >= 0:
            email = values.pop(email_at).strip()
            yield _check_fields(row, email, dict(zip(var_names, values, strict=True)),
                                header_fields)
        else:
            yield _check_row(row, dict(zip(names, values, strict=True)), header_fields)


# -- JSON Lines ---------------------------------------------------------------------------

# \uD800-\uDFFF escapes: a pair is a valid character, a lone one cannot be encoded later.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _json_row(line: bytes) -> dict[str, Any] | str:
    """The object on ``line``, or why the line is not a row."""
    try:
        obj = json.loads(line)
    except RecursionError:
        return "not JSON: nested too deeply"
    except UnicodeDecodeError as exc:
        return f"not UTF-8: {exc.reason} at byte {exc.start}"
    except ValueError as exc:
        # JSONDecodeError, and the int-string conversion limit for a number too long
        return f"not JSON: {exc}"
    if not isinstance(obj, dict):
        return "expected a JSON object"
    if _SURROGATE_ESCAPE.search(line) is not None:
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return "not valid Unicode: a lone surrogate escape (\\ud800-\\udfff)"
        except (ValueError, RecursionError):
            return "not JSON: nested too deeply"
    return obj


def _read_jsonl(path: Path, header_fields: frozenset[str]
                ) -> Iterator[Recipient | InvalidRow]:
    with path.open("rb") as fh:
        row = 0
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row += 1
            obj = _json_row(line)
            if isinstance(obj, str):
                yield InvalidRow(row, "", f"line {line_no}: {obj}")
                continue
            try:
                yield _check_row(row, obj, header_fields)
            except RecursionError:
                # json.loads nests deeper than the checks below it may walk
                yield InvalidRow(row, "", f"line {line_no}: not JSON: nested too deeply")


def check_rows(rows: Iterable[Mapping[str, Any]], *,
               header_fields: frozenset[str] = frozenset()) -> Iterator[Recipient | InvalidRow]:
    """Rows given in-process (dicts with an ``email`` key), checked like a file's rows and
    numbered from 1. A row whose variables cannot be stored as JSON is invalid."""
    for row, fields in enumerate(rows, start=1):
        checked = _check_row(row, dict(fields), header_fields)
        if isinstance(checked, Recipient):
            try:
                json.dumps(checked.vars, ensure_ascii=False).encode("utf-8")
            except (TypeError, ValueError, RecursionError) as exc:
                reason = f"variables cannot be stored as JSON: {type(exc).__name__}"
                checked = InvalidRow(row, checked.email, reason)
        yield checked


def read_recipients(path: str | Path, *, header_fields: frozenset[str] = frozenset(),
                    limits: ReaderLimits | None = None) -> Iterator[Recipient | InvalidRow]:
    """Stream the rows of a ``.csv`` or ``.jsonl``/``.ndjson`` file, numbered from 1.

    ``header_fields`` are the variables the campaign uses in header templates: a row whose
    value for one of them holds CR or LF is invalid (it could inject a header).

    Raises :class:`InputError` (naming the file and, where there is one, the line) for
    problems with the whole file: missing, unreadable, a CSV without an ``email`` column,
    and a CSV structural error (see the module docstring and :class:`ReaderLimits`),
    which the pre-pass finds before this function returns, so before any row is seen.
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
        _check_csv_structure(p, limits or ReaderLimits())
        return _read_csv(p, header_fields)
    raise InputError(f"{p}: unknown recipient file type {suffix!r}; use .csv or .jsonl")
