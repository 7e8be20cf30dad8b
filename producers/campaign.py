"""Campaign files (TOML): what to send, through which provider, from whom.

    id = "spring-sale"          # optional; generated when absent
    provider = "relay"
    from = "Shop <news@example.com>"
    reply_to = "help@example.com"
    subject = "Hello {{ first_name }}"
    text_file = "body.txt"      # or text = "..."; html / html_file likewise; *_file
                                # paths stay inside this file's folder (no absolute
                                # paths, no "..", symlinks resolved and kept inside)
    batch_size = 500            # optional
    [headers]
    X-Campaign = "spring"

Everything is checked before anything is enqueued; an error names the file and the field.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from config.errors import InputError, TemplateError
from config.providers import ProviderConfig
from config.schema import CampaignSpec, check_id
from workers.templates import CompiledCampaign

__all__ = ["campaign_from_data", "header_variables", "load_campaign", "new_campaign_id"]

_KNOWN = {"id", "provider", "from", "reply_to", "subject", "text", "text_file", "html",
          "html_file", "headers", "batch_size", "return_path"}


def new_campaign_id() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


def _confined(path: Path, file_key: str, ref: object) -> Path:
    """The file a ``*_file`` key names, which must lie inside the campaign file's folder.

    Campaign authors are not trusted with the producer's file system: an absolute path,
    a ``..`` component or a symlink leading outside the folder (``text_file =
    "/proc/self/environ"`` would mail the environment, secrets included, to every
    recipient) is refused, and so is anything but a regular file (a FIFO would hang).
    """
    if not isinstance(ref, str) or not ref.strip():
        raise InputError(f"{path}: field {file_key!r} must be a non-empty file name")
    rel = PurePath(ref)
    if rel.is_absolute() or PureWindowsPath(ref).anchor or ref.startswith("~"):
        raise InputError(f"{path}: field {file_key!r}: {ref!r} must be a path relative to "
                         "the campaign file's folder, not an absolute one")
    if ".." in rel.parts or ".." in PureWindowsPath(ref).parts:
        raise InputError(f"{path}: field {file_key!r}: {ref!r} must not contain '..'; "
                         "keep body files in the campaign file's folder")
    folder = path.parent.resolve()
    target = (folder / rel).resolve()
    if not target.is_relative_to(folder):
        raise InputError(f"{path}: field {file_key!r}: {ref!r} leads outside the campaign "
                         f"file's folder {folder} (through a symlink)")
    if target.exists() and not target.is_file():
        raise InputError(f"{path}: field {file_key!r}: {ref!r} is not a regular file")
    return target


def _body(path: Path, data: Mapping[str, Any], name: str) -> str | None:
    inline, file_key = data.get(name), f"{name}_file"
    ref = data.get(file_key)
    if inline is not None and ref is not None:
        raise InputError(f"{path}: set only one of {name!r} and {file_key!r}")
    if ref is not None:
        body_path = _confined(path, file_key, ref)
        try:
            return body_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{path}: field {file_key!r}: cannot read {body_path}: "
                             f"{exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: field {file_key!r}: {body_path} is not UTF-8") from exc
    if inline is not None and not isinstance(inline, str):
        raise InputError(f"{path}: field {name!r} must be a string")
    return inline


def _str_field(path: Path, data: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise InputError(f"{path}: missing required field {name!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{path}: field {name!r} must be a non-empty string")
    return value


def load_campaign(
    path: str | Path,
    providers: Mapping[str, ProviderConfig],
    *,
    default_batch_size: int = 500,
    campaign_id: str | None = None,
) -> tuple[CampaignSpec, CompiledCampaign]:
    """Read, validate and compile a campaign file. Raises :class:`InputError`."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{p}: cannot read the campaign file: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid TOML: {exc}") from exc
    return campaign_from_data(data, p, providers, default_batch_size=default_batch_size,
                              campaign_id=campaign_id)


def campaign_from_data(
    data: Mapping[str, Any],
    p: Path,
    providers: Mapping[str, ProviderConfig],
    *,
    default_batch_size: int = 500,
    campaign_id: str | None = None,
) -> tuple[CampaignSpec, CompiledCampaign]:
    """Validate and compile a campaign given as data (a parsed file, an API request);
    ``p`` names it in errors and anchors relative ``*_file`` paths."""
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise InputError(f"{p}: unknown field(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(_KNOWN))}")
    cid = campaign_id or data.get("id") or new_campaign_id()
    check_id(cid, what=f"{p}: field 'id'")
    provider = _str_field(p, data, "provider", required=True)
    assert provider is not None
    if provider not in providers:
        known = ", ".join(sorted(providers)) or "none configured"
        raise InputError(f"{p}: field 'provider': unknown provider {provider!r} "
                         f"(providers file has: {known})")
    headers = data.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise InputError(f"{p}: field 'headers' must be a table of strings")
    batch_size = data.get("batch_size", providers[provider].batch_size or default_batch_size)
    if not isinstance(batch_size, int) or not 1 <= batch_size <= 10000:
        raise InputError(f"{p}: field 'batch_size' must be a whole number from 1 to 10000")

    sender = _str_field(p, data, "from", required=True)
    subject = _str_field(p, data, "subject", required=True)
    assert sender is not None and subject is not None
    spec = CampaignSpec(
        id=cid,
        provider=provider,
        sender=sender,
        subject=subject,
        text=_body(p, data, "text"),
        html=_body(p, data, "html"),
        reply_to=_str_field(p, data, "reply_to", required=False),
        headers={str(k): v for k, v in headers.items()},
        batch_size=batch_size,
        return_path=_str_field(p, data, "return_path", required=False),
    )
    try:
        compiled = CompiledCampaign.compile(spec)
    except TemplateError as exc:
        raise TemplateError(f"{p}: {exc}") from None
    try:
        compiled.check_allowed_senders(provider, providers[provider])
    except InputError as exc:
        raise InputError(f"{p}: {exc}") from None
    return spec, compiled


def header_variables(spec: CampaignSpec) -> frozenset[str]:
    """Variables that header templates (subject, from, reply-to, headers) refer to."""
    env = SandboxedEnvironment()
    names: set[str] = set()
    for source in [spec.subject, spec.sender, spec.reply_to or "", *spec.headers.values()]:
        names |= meta.find_undeclared_variables(env.parse(source))
    return frozenset(names)
