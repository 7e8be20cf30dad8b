"""Turning API requests into what the producers take: a validated :class:`CampaignSpec`
and a recipient source (rows, or an uploaded file spooled to disk).

Validation is the campaign file's own (:func:`producers.campaign.campaign_from_data`) with
the same messages as ``bulkmail send``; only ``*_file`` keys are refused, because an API
request cannot point at files on the server: bodies come inline or as uploaded parts.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tomllib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import IO, Any

from config.errors import InputError
from config.providers import ProviderConfig
from config.schema import CampaignSpec
from producers.campaign import campaign_from_data
from producers.service.problems import Problem, field_of

__all__ = [
    "RECIPIENT_SUFFIXES",
    "derived_id",
    "input_problem",
    "recipient_suffix",
    "recipients_from_json",
    "spec_from_data",
    "spool_upload",
    "toml_campaign",
    "upload_label",
]

#: suffixes of recipient uploads, by what the reader takes (``producers.recipients``)
RECIPIENT_SUFFIXES = {".csv": ".csv", ".txt": ".csv", ".jsonl": ".jsonl", ".ndjson": ".jsonl"}
_CONTENT_TYPES = {"text/csv": ".csv", "application/jsonl": ".jsonl",
                  "application/x-ndjson": ".jsonl", "application/x-jsonlines": ".jsonl",
                  "application/jsonlines": ".jsonl"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def input_problem(exc: InputError, *, status: int = 422) -> Problem:
    """An :class:`InputError` as a problem: its message, and the field it names."""
    message = str(exc)
    field = field_of(message)
    return Problem(status, message, errors=[{"field": field, "detail": message}] if field else ())


def derived_id(prefix: str, key_name: str, idempotency_key: str) -> str:
    """The id a request with this ``Idempotency-Key`` gets when it names none: the same
    key (from the same API key) always gives the same id, so a retried request finds the
    campaign or message it created the first time."""
    h = hashlib.sha256(f"{key_name}\n{idempotency_key}".encode()).hexdigest()
    return f"{prefix}-{h[:24]}"


def spec_from_data(data: Mapping[str, Any], label: str,
                   providers: Mapping[str, ProviderConfig], *, default_batch_size: int,
                   campaign_id: str | None) -> CampaignSpec:
    """Validate a campaign given in a request; raises :class:`Problem` (422)."""
    refused = sorted(k for k in data if isinstance(k, str) and k.endswith("_file"))
    if refused:
        name = refused[0]
        body = name.removesuffix("_file")
        raise Problem(422, f"{label}: field {name!r}: files on the server are not read for "
                           f"API requests; send {body!r} inline or as an uploaded part",
                      errors=[{"field": name, "detail": "not allowed in API requests"}])
    try:
        spec, _ = campaign_from_data(data, Path(label), providers,
                                     default_batch_size=default_batch_size,
                                     campaign_id=campaign_id)
    except InputError as exc:
        raise input_problem(exc) from None
    return spec


def recipients_from_json(value: Any) -> list[dict[str, Any]]:
    """The ``recipients`` member of a JSON campaign: a list of objects."""
    if not isinstance(value, list):
        raise Problem(422, "field 'recipients' must be a list of objects with an 'email' key",
                      errors=[{"field": "recipients", "detail": "must be a list"}])
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise Problem(422, f"recipients[{i}] (row {i + 1}) must be an object with an "
                               "'email' key",
                          errors=[{"field": f"recipients[{i}]", "row": i + 1,
                                   "detail": "must be an object"}])
    return value


def toml_campaign(raw: bytes, label: str) -> dict[str, Any]:
    """Parse an uploaded campaign file."""
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise Problem(422, f"{label}: not valid TOML: {exc}",
                      errors=[{"field": "campaign", "detail": "not valid TOML"}]) from None


def upload_label(filename: str | None, default: str) -> str:
    """A safe display name for an uploaded part (its base name, tame characters)."""
    base = PurePosixPath((filename or "").replace("\\", "/")).name
    return _SAFE_NAME.sub("_", base)[:100] or default


def recipient_suffix(filename: str | None, content_type: str | None) -> str:
    """``.csv`` or ``.jsonl`` for an uploaded recipient list; raises :class:`Problem`."""
    suffix = PurePosixPath(filename or "").suffix.lower()
    if suffix in RECIPIENT_SUFFIXES:
        return RECIPIENT_SUFFIXES[suffix]
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype in _CONTENT_TYPES:
        return _CONTENT_TYPES[ctype]
    raise Problem(422, f"recipients: unknown recipient file type {suffix or ctype or '?'!r}; "
                       "upload a .csv or .jsonl file (or send text/csv, application/jsonl)",
                  errors=[{"field": "recipients", "detail": "not CSV or JSON Lines"}])


def spool_upload(source: IO[bytes], folder: Path, label: str, suffix: str) -> Path:
    """Copy an uploaded file, a chunk at a time, to ``folder`` for the streaming reader."""
    target = folder / (Path(label).stem + suffix)
    with target.open("wb") as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
    return target
