"""CLI for failures: dead letters, the suppression list, sending failed recipients again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from workers.errors import BulkmailError, InputError

__all__ = ["dlq_app", "register", "suppress_app"]

dlq_app = typer.Typer(no_args_is_help=True,
                      help="Dead letters: recipients that ran out of attempts.")
suppress_app = typer.Typer(no_args_is_help=True,
                           help="The suppression list: addresses never sent to again.")
console = Console()
err_console = Console(stderr=True)


def _guard(fn: Callable[[], None]) -> None:
    try:
        fn()
    except (BulkmailError, LookupError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _context() -> tuple[Any, Any, Any]:
    from producers.connect import connect_redis
    from workers.app import app, settings

    return settings, app, connect_redis(settings)


def _known_campaign(settings: Any, client: Any, campaign: str | None) -> None:
    """A mistyped id must not look like an empty dead-letter list."""
    from workers.ledger import Ledger

    if campaign is not None and Ledger(client, settings.keys).spec(campaign) is None:
        raise LookupError(f"no campaign {campaign!r}")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


# -- dead letters ----------------------------------------------------------------------
@dlq_app.command("list")
def dlq_list(
    campaign: Annotated[str | None, typer.Option("--campaign", help="only this campaign")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List dead letters with their last reply and attempt count."""

    def go() -> None:
        from workers.deadletter import DeadLetters

        settings, _, client = _context()
        _known_campaign(settings, client, campaign)
        page = DeadLetters(client, settings.keys).list(campaign, limit=limit)
        if as_json:
            for d in page.entries:
                print(d.to_json())
            return
        table = Table("campaign", "row", "email", "attempts", "last reply", "at")
        for d in page.entries:
            table.add_row(d.campaign_id, str(d.row), d.email, str(d.attempts), d.reply,
                          _when(d.at))
        console.print(table)
        if page.next_cursor:
            console.print(f"(more: raise --limit above {limit})")

    _guard(go)


@dlq_app.command("requeue")
def dlq_requeue(
    campaign: Annotated[str | None, typer.Option("--campaign", help="only this campaign")] = None,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="only dead letters whose last reply contains this text")] = None,
) -> None:
    """Send dead letters again (their recipients go back to queued)."""

    def go() -> None:
        from workers.requeue import requeue_dead_letters

        settings, app, client = _context()
        _known_campaign(settings, client, campaign)
        n, batches = requeue_dead_letters(settings, app, client, campaign_id=campaign,
                                          reason=reason)
        console.print(f"requeued {n} recipients in {batches} batches")

    _guard(go)


def retry_failed_command(
    campaign_id: Annotated[str, typer.Argument(help="campaign id")],
) -> None:
    """Send a campaign again to its failed recipients only; nobody sent gets a second copy."""

    def go() -> None:
        from workers.requeue import retry_failed

        settings, app, client = _context()
        n, batches = retry_failed(settings, app, client, campaign_id)
        console.print(f"{campaign_id}: requeued {n} failed recipients in {batches} batches")

    _guard(go)


# -- suppression -----------------------------------------------------------------------
@suppress_app.command("add")
def suppress_add(
    addresses: Annotated[list[str], typer.Argument(help="addresses to suppress")],
    reason: Annotated[str, typer.Option(help="why")] = "manual",
) -> None:
    """Never send to these addresses again."""

    def go() -> None:
        from producers.recipients import check_address
        from workers.suppression import SuppressionList

        bad = []
        for address in addresses:
            try:
                check_address(address.strip())
            except ValueError as exc:
                bad.append(f"{address!r}: {exc}")
        if bad:
            raise InputError("not added, fix these addresses first: " + "; ".join(bad))
        settings, _, client = _context()
        wanted = {a.strip().lower() for a in addresses}
        n = SuppressionList(client, settings.keys).add_many(wanted, reason, "cli")
        console.print(f"{n} added, {len(wanted) - n} already suppressed (reason updated)")

    _guard(go)


@suppress_app.command("remove")
def suppress_remove(addresses: Annotated[list[str], typer.Argument()]) -> None:
    """Allow sending to these addresses again."""

    def go() -> None:
        from workers.suppression import SuppressionList

        settings, _, client = _context()
        sl = SuppressionList(client, settings.keys)
        removed = sum(sl.remove(a) for a in addresses)
        console.print(f"{removed} removed")

    _guard(go)


@suppress_app.command("list")
def suppress_list(
    limit: Annotated[int, typer.Option()] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List suppressed addresses with reason, source and time."""

    def go() -> None:
        from workers.suppression import SuppressionList

        settings, _, client = _context()
        sl = SuppressionList(client, settings.keys)
        page = sl.list(limit=limit)
        if as_json:
            for e in page.entries:
                print(json.dumps({"address": e.address, "reason": e.reason, "source": e.source,
                                  "at": e.at}))
            return
        table = Table("address", "reason", "source", "at", title=f"{sl.count()} suppressed")
        for e in page.entries:
            table.add_row(e.address, e.reason, e.source, _when(e.at))
        console.print(table)

    _guard(go)


@suppress_app.command("import")
def suppress_import(
    file: Annotated[Path, typer.Argument(help="one address per line, or a CSV with an email "
                                         "column")],
    reason: Annotated[str, typer.Option()] = "import",
) -> None:
    """Add every address of a file; bad lines are reported with their line numbers."""

    def go() -> None:
        from workers.suppression import SuppressionList

        settings, _, client = _context()
        res = SuppressionList(client, settings.keys).import_file(file, reason=reason)
        console.print(f"{file}: {res.added} added, {res.existing} already suppressed, "
                      f"{res.skipped} blank/comment lines, {len(res.bad)} bad lines")
        for bad in res.bad:
            err_console.print(f"{file}:{bad.line}: {bad.problem}: {bad.text!r}",
                              highlight=False, soft_wrap=True)
        if res.bad:
            raise typer.Exit(1)

    _guard(go)


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(suppress_app, name="suppress")
    app.command("retry-failed")(retry_failed_command)
