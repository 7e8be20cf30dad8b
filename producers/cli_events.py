"""``bulkmail events ID``: the provider events (webhooks) of a campaign's recipients."""

from __future__ import annotations

from typing import Annotated

import typer

from config.errors import CampaignNotFoundError, InputError
from config.schema import check_id
from producers.cli_base import context, format_time, guard, json_line, untrusted

__all__ = ["events", "register"]

#: what --type accepts (bounced/hard and bounced/soft narrow bounced)
TYPES = ("delivered", "deferred", "bounced", "bounced/hard", "bounced/soft", "complained",
         "unsubscribed", "rejected")


def _types(text: str | None) -> set[str] | None:
    if not text:
        return None
    wanted = {t.strip() for t in text.split(",") if t.strip()}
    unknown = sorted(wanted - set(TYPES))
    if unknown:
        raise InputError(f"--type: unknown event type(s) {', '.join(unknown)}; "
                         f"expected some of {', '.join(TYPES)}")
    return wanted


def events(
    ctx: typer.Context,
    campaign_id: Annotated[str, typer.Argument(help="campaign id")],
    types: Annotated[str | None, typer.Option(
        "--type", help="comma-separated event types (delivered, deferred, bounced, "
        "bounced/hard, bounced/soft, complained, unsubscribed, rejected)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per recipient")
                       ] = False,
) -> None:
    """Provider events (delivered, bounced, complained...) of a campaign's recipients."""

    def go() -> None:
        from workers.feedback.store import campaign_events
        from workers.ledger import Ledger

        run = context(ctx)
        settings, client = run.settings, run.redis
        wanted = _types(types)
        if Ledger(client, settings.keys).spec(check_id(campaign_id)) is None:
            raise CampaignNotFoundError(campaign_id)
        for entry in campaign_events(client, settings.keys, campaign_id, wanted):
            if as_json:
                print(json_line(entry.as_dict()))
                continue
            for e in entry.events:
                when = format_time(e["at"]) if e.get("at") else "-"
                kind = f"{e['type']}/{e['bounce']}" if e.get("bounce") else e["type"]
                print("\t".join(untrusted(v, markup=False) for v in (
                    entry.row, entry.email, kind, e.get("provider", ""), when,
                    e.get("reason", ""))))

    guard(go)


def register(app: typer.Typer) -> None:
    """Add ``events`` to the ``bulkmail`` CLI."""
    app.command()(events)
