"""Operator actions on a campaign and its status document, shared by the CLI and the HTTP
API so that both say and do exactly the same thing.
"""

from __future__ import annotations

import getpass
from typing import Any

import redis

from config.errors import InputError
from config.schema import Keys
from workers.ledger import Ledger
from workers.pause import pause_campaign, pause_state, resume_campaign

__all__ = [
    "UnknownCampaignError",
    "campaign_document",
    "cancel",
    "cli_actor",
    "pause",
    "resume",
]


class UnknownCampaignError(InputError, LookupError):
    """No campaign with this id (in this key prefix)."""


def cli_actor() -> str:
    """Who acts from the command line, as status shows it: ``cli:USER``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (containers)
        return "cli"


def campaign_document(client: redis.Redis[bytes], keys: Keys, cid: str) -> dict[str, Any] | None:
    """The document of ``bulkmail status ID --json`` and ``GET /v1/campaigns/{id}``: the
    counts per state, ``done``, the provider's state and whether the campaign is paused
    (by whom, when). None when there is no such campaign."""
    ledger = Ledger(client, keys)
    st = ledger.status(cid)
    if st is None:
        return None
    d = st.as_dict()
    raw = client.hgetall(keys.provider_state(st.provider))
    d["providers"] = {k.decode(): v.decode() for k, v in raw.items()}
    d |= pause_state(ledger.record(cid)).as_dict()
    return d


def _provider_of(client: redis.Redis[bytes], keys: Keys, cid: str) -> str:
    spec = Ledger(client, keys).spec(cid)
    if spec is None:
        raise UnknownCampaignError(f"no campaign {cid!r} in {keys.prefix!r}")
    return spec.provider


def pause(client: redis.Redis[bytes], keys: Keys, cid: str, *, by: str) -> bool:
    """Pause ``cid``; False when it was paused already."""
    _provider_of(client, keys, cid)
    return pause_campaign(client, keys, cid, by=by)


def resume(client: redis.Redis[bytes], keys: Keys, cid: str, *, by: str) -> int | None:
    """Resume ``cid``; how many set-aside batches go back out, None when it was not
    paused."""
    provider = _provider_of(client, keys, cid)
    return resume_campaign(client, keys, cid, provider, by=by)


def cancel(client: redis.Redis[bytes], keys: Keys, cid: str) -> int:
    """Cancel ``cid``: every recipient not yet final ends ``cancelled``; how many."""
    _provider_of(client, keys, cid)
    return Ledger(client, keys).cancel(cid)
