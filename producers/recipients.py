"""Streaming recipient readers: CSV (an ``email`` column, every other column a template
variable) and JSON Lines (one object per line with an ``email`` key).

Rows are read one at a time and never collected, so the producer's memory does not grow
with the list. Each row is checked on its own; a bad row becomes an :class:`InvalidRow`
with its row number and reason and never stops the reading. Duplicates are found on the
Redis side at enqueue time (a set in Redis), again to keep the producer flat.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email

from config.schema import Recipient
from workers.errors import InputError

__all__ = ["InvalidRow", "check_address", "read_recipients"]


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row that will not be sent: its row number, what it held as address, and why."""

    row: int
    email: str
    reason: str


_HEADER_UNSAFE = ("\r", "\n", "\x00")


def check_address(raw: str) -> str:
    """The normalized address, or ``ValueError`` with a reason. No DNS lookups."""
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


def _check_row(row: int, fields: dict[str, Any], header_fields: frozenset[str]
               ) -> Recipient | InvalidRow:
    raw_email = fields.pop("email", None)
    email = str(raw_email).strip() if raw_email is not None else ""
    for name in header_fields:
        value = fields.get(name)
        if isinstance(value, str) and any(c in value for c in _HEADER_UNSAFE):
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
            row += 1
            if not values or values == [""]:
                row -= 1  # blank lines are not rows
                continue
            if len(values) != len(names):
                yield InvalidRow(row, "", f"line {reader.line_num}: {len(values)} fields, "
                                          f"the header has {len(names)}")
                continue
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
