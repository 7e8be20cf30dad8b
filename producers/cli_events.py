"""``bulkmail events ID``: the provider events (webhooks) of a campaign's recipients."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from workers.errors import BulkmailError

__all__ = ["events", "register"]

console = Console()
err_console = Console(stderr=True)

#: what --type accepts (bounced/hard and bounced/soft narrow bounced)
TYPES = ("delivered", "deferred", "bounced", "bounced/hard", "bounced/soft", "complained",
         "unsubscribed", "rejected")


def _types(text: str | None) -> set[str] | None:
    if not text:
        return None
    wanted = {t.strip() for t in text.split(",") if t.strip()}
    unknown = sorted(wanted - set(TYPES))
    if unknown:
        raise ValueError(f"--type: unknown event type(s) {', '.join(unknown)}; "
                         f"expected some of {', '.join(TYPES)}")
    return wanted


def events(
    campaign_id: Annotated[str, typer.Argument(help="campaign id")],
    types: Annotated[str | None, typer.Option(
        "--type", help="comma-separated event types (delivered, deferred, bounced, "
        "bounced/hard, bounced/soft, complained, unsubscribed, rejected)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per recipient")
                       ] = False,
) -> None:
    """Provider events (delivered, bounced, complained...) of a campaign's recipients."""
    try:
        from producers.connect import connect_redis
        from workers.app import settings
        from workers.feedback.store import campaign_events
        from workers.ledger import Ledger

        wanted = _types(types)
        client = connect_redis(settings)
        if Ledger(client, settings.keys).spec(campaign_id) is None:
            raise ValueError(f"no campaign {campaign_id!r} in {settings.keys.prefix!r}")
        for entry in campaign_events(client, settings.keys, campaign_id, wanted):
            if as_json:
                print(json.dumps(entry.as_dict(), ensure_ascii=False))
                continue
            for e in entry.events:
                when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
                        if e.get("at") else "-")
                kind = f"{e['type']}/{e['bounce']}" if e.get("bounce") else e["type"]
                console.print(f"{entry.row}\t{escape(entry.email)}\t{kind}\t"
                              f"{escape(str(e.get('provider', '')))}\t{when}\t"
                              f"{escape(str(e.get('reason', '')))}", highlight=False,
                              soft_wrap=True)
    except (BulkmailError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    """Add ``events`` to the ``bulkmail`` CLI."""
    app.command()(events)
