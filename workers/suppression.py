"""The suppression list: addresses bulkmail never sends to again.

One Redis hash (``keys.suppressed``): lower-cased address -> JSON
``{"reason": ..., "source": ..., "at": unix seconds}``. Reasons are free text
(``hard_bounce``, ``unsubscribe``, ``complaint``, ``manual``...); ``source`` says who put
it there (a campaign id, a webhook, ``file:list.csv``, an operator).

Addresses are compared lower-cased. The whole address is folded, local part included:
strictly the local part is case-sensitive (RFC 5321), but no mailbox provider treats it
so, and a suppression that misses ``John@x`` because ``john@x`` bounced is the worse error.

:class:`SuppressionList` (sync) and :class:`AsyncSuppressionList` (``redis.asyncio``, only
what the worker uses) run the same operations, written once with :mod:`workers.redis_ops`.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeAlias, TypeVar

from config.addresses import address_key
from config.errors import InputError
from config.schema import Keys
from workers.redis_ops import Command, RedisOp, as_text, hscan_page, run_async, run_sync

if TYPE_CHECKING:  # used as base-class arguments, which ruff does not see
    from workers.redis_ops import AsyncRedis, SyncRedis  # noqa: F401

ClientT = TypeVar("ClientT")

__all__ = [
    "AsyncSuppressionList",
    "BadLine",
    "ImportResult",
    "SuppressionEntry",
    "SuppressionList",
    "SuppressionPage",
    "normalize_address",
]

#: Column names taken as "the email column" of a CSV file (compared lower-cased).
EMAIL_COLUMNS = ("email", "e-mail", "email_address", "address")
#: Addresses written per HSET / HMGET during imports: bounded command size.
_CHUNK = 1000

# Deliberately lenient: this list only ever stops mail, so an odd but real address is
# better on it than reported as bad. It rejects what is clearly not one address.
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")


def normalize_address(address: str) -> str:
    """The form addresses are stored and compared in: stripped, IDNA domain, lower-cased
    (:func:`config.addresses.address_key`), so a Unicode and a Punycode spelling of one
    domain are one entry."""
    norm = address_key(address)
    if not norm:
        raise ValueError("an empty address cannot be suppressed")
    return norm


@dataclass(frozen=True, slots=True)
class SuppressionEntry:
    """One suppressed address and why."""

    address: str
    reason: str
    source: str
    at: float


@dataclass(frozen=True, slots=True)
class SuppressionPage:
    """A page of :meth:`SuppressionList.list`; ``next_cursor`` is None after the last."""

    entries: list[SuppressionEntry]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line of an imported file that holds no usable address."""

    line: int
    text: str
    problem: str


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What :meth:`SuppressionList.import_file` did.

    ``added`` addresses are new on the list; ``existing`` were already on it (or
    repeated in the file) and kept their original reason; ``skipped`` lines were
    blank or comments; ``bad`` lines are listed with their line numbers.
    """

    added: int = 0
    existing: int = 0
    skipped: int = 0
    bad: list[BadLine] = field(default_factory=list)


def _encode(reason: str, source: str, at: float) -> str:
    return json.dumps({"reason": reason, "source": source, "at": at}, separators=(",", ":"))


def _decode(address: str, raw: str) -> SuppressionEntry:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        # Written by hand or by an older tool: keep it visible rather than fail listing.
        return SuppressionEntry(address, raw, "", 0.0)
    return SuppressionEntry(
        address,
        str(data.get("reason", "")),
        str(data.get("source", "")),
        float(data.get("at") or 0.0),
    )


# --------------------------------------------------------------------------------------
# Reading import files (pure; streams the file so a million lines need little memory)
# --------------------------------------------------------------------------------------

#: (line number, normalized address, reason or "" for the caller's default)
_Row: TypeAlias = tuple[int, str, str]


def _meaningful(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#")


def _read_import_file(path: Path) -> Iterator[_Row | BadLine | None]:
    """Rows of an import file; ``None`` for each skipped (blank or comment) line.

    A file whose first meaningful line is a header naming an email column (see
    :data:`EMAIL_COLUMNS`; comma, semicolon or tab separated) is read as CSV, with an
    optional ``reason`` column. Anything else is one address per line.
    """
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file: {exc.strerror}") from exc
    with handle:
        lines = iter(handle)
        line_no = 0
        first = ""
        for line in lines:
            line_no += 1
            if _meaningful(line):
                first = line
                break
            yield None
        if not first:
            return
        header = _csv_header(path, line_no, first)
        if header is None:
            yield from _plain_rows(itertools.chain([first], lines), line_no)
        else:
            yield from _csv_rows(path, itertools.chain([first], lines), line_no, header)


def _csv_header(path: Path, line_no: int, line: str) -> tuple[str, int, int | None] | None:
    """(delimiter, email column, reason column) when ``line`` is a CSV header."""
    text = line.strip()
    delimiter = next((d for d in ",;\t" if d in text), None)
    cells = [c.strip().strip('"').lower() for c in (text.split(delimiter) if delimiter else [text])]
    email = next((i for i, c in enumerate(cells) if c in EMAIL_COLUMNS), None)
    if email is None:
        if delimiter and "@" not in text:
            raise InputError(
                f"{path}: line {line_no} looks like a CSV header without an email column "
                f"(columns: {', '.join(cells)}); name the column one of "
                f"{', '.join(EMAIL_COLUMNS)}"
            )
        return None
    reason = cells.index("reason") if "reason" in cells else None
    return delimiter or ",", email, reason


def _plain_rows(lines: Iterable[str], first_no: int) -> Iterator[_Row | BadLine | None]:
    for line_no, line in enumerate(lines, start=first_no):
        if not _meaningful(line):
            yield None
            continue
        text = line.strip()
        if _ADDRESS.match(text):
            yield line_no, address_key(text), ""
        else:
            yield BadLine(line_no, text, "not an email address")


def _csv_rows(
    path: Path, lines: Iterable[str], header_no: int, header: tuple[str, int, int | None]
) -> Iterator[_Row | BadLine | None]:
    delimiter, email_col, reason_col = header
    reader = csv.reader(lines, delimiter=delimiter)
    next(reader)  # the header
    offset = header_no - 1  # reader.line_num counts from the header line
    for row in reader:
        line_no = offset + reader.line_num
        text = delimiter.join(row)
        if not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
            yield None
            continue
        if len(row) <= email_col or not row[email_col].strip():
            yield BadLine(line_no, text, "no value in the email column")
            continue
        address = row[email_col].strip()
        if not _ADDRESS.match(address):
            yield BadLine(line_no, text, f"not an email address: {address!r}")
            continue
        reason = row[reason_col].strip() if reason_col is not None and len(row) > reason_col else ""
        yield line_no, address_key(address), reason


# --------------------------------------------------------------------------------------
# Operations (no I/O)
# --------------------------------------------------------------------------------------


class _SuppressionOps:
    def __init__(self, keys: Keys, clock: Callable[[], float]) -> None:
        self.key = keys.suppressed
        self.clock = clock

    def add(self, address: str, reason: str, source: str) -> RedisOp[bool]:
        value = _encode(reason, source, self.clock())
        return bool((yield Command(("HSET", self.key, normalize_address(address), value))))

    def add_many(self, addresses: Iterable[str], reason: str, source: str) -> RedisOp[int]:
        value = _encode(reason, source, self.clock())
        added = 0
        unique = list(dict.fromkeys(normalize_address(a) for a in addresses))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            pairs = [x for a in chunk for x in (a, value)]
            added += int((yield Command(("HSET", self.key, *pairs))))
        return added

    def remove(self, address: str) -> RedisOp[bool]:
        return bool((yield Command(("HDEL", self.key, normalize_address(address)))))

    def contains(self, address: str) -> RedisOp[bool]:
        return bool((yield Command(("HEXISTS", self.key, normalize_address(address)))))

    def get(self, address: str) -> RedisOp[SuppressionEntry | None]:
        norm = normalize_address(address)
        raw = yield Command(("HGET", self.key, norm))
        return None if raw is None else _decode(norm, as_text(raw))

    def filter_many(self, addresses: Iterable[str]) -> RedisOp[set[str]]:
        given = [a for a in addresses if a.strip()]
        if not given:
            return set()  # HMGET needs at least one field
        folded = [address_key(a) for a in given]
        distinct = list(dict.fromkeys(folded))
        found = yield Command(("HMGET", self.key, *distinct))
        hit = {a for a, v in zip(distinct, found, strict=True) if v is not None}
        return {a for a, f in zip(given, folded, strict=True) if f in hit}

    def count(self) -> RedisOp[int]:
        return int((yield Command(("HLEN", self.key))))

    def list(self, cursor: str | None, limit: int) -> RedisOp[SuppressionPage]:
        pairs, next_cursor = yield from hscan_page(self.key, cursor, limit)
        return SuppressionPage([_decode(a, raw) for a, raw in pairs], next_cursor)

    def import_file(self, path: Path, reason: str, source: str | None) -> RedisOp[ImportResult]:
        source = source or f"file:{path.name}"
        at = self.clock()
        added = existing = skipped = 0
        bad: list[BadLine] = []
        rows: list[_Row] = []

        def flush(rows: list[_Row]) -> RedisOp[int]:
            # Import never overwrites: an address already suppressed (a bounce, an
            # unsubscribe) keeps its own reason. HMGET-then-HSET is not atomic, which
            # only matters if someone adds the same address in between, harmlessly.
            distinct = {address: r or reason for _, address, r in rows}
            present = yield Command(("HMGET", self.key, *distinct))
            new = [a for a, v in zip(distinct, present, strict=True) if v is None]
            if new:
                pairs = [x for a in new for x in (a, _encode(distinct[a], source, at))]
                yield Command(("HSET", self.key, *pairs))
            return len(new)

        for item in _read_import_file(path):
            if item is None:
                skipped += 1
            elif isinstance(item, BadLine):
                bad.append(item)
            else:
                rows.append(item)
                if len(rows) == _CHUNK:
                    n = yield from flush(rows)
                    added += n
                    existing += len(rows) - n
                    rows = []
        if rows:
            n = yield from flush(rows)
            added += n
            existing += len(rows) - n
        return ImportResult(added, existing, skipped, bad)


# --------------------------------------------------------------------------------------
# Public classes
# --------------------------------------------------------------------------------------


class _List(Generic[ClientT]):
    """What the sync and the async suppression list share: the client, the keys."""

    def __init__(
        self, client: ClientT, keys: Keys, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._ops = _SuppressionOps(keys, clock)

    @property
    def key(self) -> str:
        """The Redis hash holding the list."""
        return self._ops.key


class SuppressionList(_List["SyncRedis"]):
    """The suppression list over a sync Redis client (CLI, producers' checks, tests).

    ``clock`` gives the unix time stamped on new entries (injectable for tests).
    """

    def add(self, address: str, reason: str, source: str = "manual") -> bool:
        """Suppress ``address``; True when it was not on the list yet.

        An address already on the list takes the new reason and source: the latest
        event is the one an operator wants to see.
        """
        return run_sync(self._client, self._ops.add(address, reason, source))

    def add_many(self, addresses: Iterable[str], reason: str, source: str = "manual") -> int:
        """Suppress many addresses with one reason (e.g. a batch's hard bounces).

        One round trip per 1000 addresses; returns how many were new.
        """
        return run_sync(self._client, self._ops.add_many(addresses, reason, source))

    def remove(self, address: str) -> bool:
        """Take ``address`` off the list; True when it was on it."""
        return run_sync(self._client, self._ops.remove(address))

    def contains(self, address: str) -> bool:
        """Whether ``address`` is suppressed."""
        return run_sync(self._client, self._ops.contains(address))

    def get(self, address: str) -> SuppressionEntry | None:
        """The entry of ``address``, or None when it is not suppressed."""
        return run_sync(self._client, self._ops.get(address))

    def filter_many(self, addresses: Iterable[str]) -> set[str]:
        """The suppressed ones among ``addresses``, spelled as given; one round trip."""
        return run_sync(self._client, self._ops.filter_many(addresses))

    def count(self) -> int:
        """How many addresses are suppressed."""
        return run_sync(self._client, self._ops.count())

    def list(self, *, cursor: str | None = None, limit: int = 100) -> SuppressionPage:
        """Up to ``limit`` entries (hash order) and the cursor of the next page."""
        return run_sync(self._client, self._ops.list(cursor, limit))

    def import_file(
        self, path: str | Path, *, reason: str = "import", source: str | None = None
    ) -> ImportResult:
        """Suppress every address in a file.

        The file holds one address per line, or is a CSV whose header names an email
        column (``email``, ``e-mail``, ``email_address`` or ``address``) and optionally a
        ``reason`` column (else ``reason`` applies). Blank lines and ``#`` comments are
        skipped; lines without a usable address are reported in ``bad`` with their line
        numbers. Addresses already suppressed keep their entry. ``source`` defaults to
        ``file:<name>``. A file that cannot be read, or a CSV without an email column,
        raises :class:`~config.errors.InputError`.
        """
        return run_sync(self._client, self._ops.import_file(Path(path), reason, source))


class AsyncSuppressionList(_List["AsyncRedis"]):
    """What the worker's event loop does with the suppression list (over
    ``redis.asyncio``): skip suppressed recipients, add hard bounces. Everything else
    is the CLI's (:class:`SuppressionList`); both run the same operations."""

    async def add(self, address: str, reason: str, source: str = "manual") -> bool:
        """See :meth:`SuppressionList.add`."""
        return await run_async(self._client, self._ops.add(address, reason, source))

    async def filter_many(self, addresses: Iterable[str]) -> set[str]:
        """See :meth:`SuppressionList.filter_many`."""
        return await run_async(self._client, self._ops.filter_many(addresses))
