"""CLI for failures: dead letters, the suppression list, sending failed recipients again."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from config.errors import CampaignNotFoundError, InputError
from config.schema import check_id
from producers.cli_base import (
    CliContext,
    console,
    context,
    err_console,
    format_time,
    guard,
    json_line,
    untrusted,
)

__all__ = ["dlq_app", "register", "suppress_app"]

dlq_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="Dead letters: recipients that ran out of attempts.")
suppress_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="The suppression list: addresses never sent to again.")


def _known_campaign(run: CliContext, campaign: str | None) -> None:
    """A mistyped id must not look like an empty dead-letter list."""
    from workers.ledger import Ledger

    if campaign is not None and Ledger(run.redis, run.settings.keys).spec(
            check_id(campaign)) is None:
        raise CampaignNotFoundError(campaign)


# -- dead letters ----------------------------------------------------------------------
@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    campaign: Annotated[str | None, typer.Option("--campaign", help="only this campaign")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List dead letters with their last reply and attempt count."""

    def go() -> None:
        from workers.deadletter import DeadLetters

        run = context(ctx)
        _known_campaign(run, campaign)
        page = DeadLetters(run.redis, run.settings.keys).list(campaign, limit=limit)
        if as_json:
            for d in page.entries:
                print(json_line(asdict(d)))
            return
        table = Table("campaign", "row", "email", "attempts", "last reply", "at")
        for d in page.entries:
            table.add_row(untrusted(d.campaign_id), str(d.row), untrusted(d.email),
                          str(d.attempts), untrusted(d.reply), format_time(d.at))
        console.print(table)
        if page.next_cursor:
            console.print(f"(more: raise --limit above {limit})")

    guard(go)


@dlq_app.command("requeue")
def dlq_requeue(
    ctx: typer.Context,
    campaign: Annotated[str | None, typer.Option("--campaign", help="only this campaign")] = None,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="only dead letters whose last reply contains this text")] = None,
) -> None:
    """Send dead letters again (their recipients go back to queued)."""

    def go() -> None:
        from workers.requeue import requeue_dead_letters

        run = context(ctx)
        _known_campaign(run, campaign)
        n, batches = requeue_dead_letters(run.settings, run.celery, run.redis,
                                          campaign_id=campaign, reason=reason)
        console.print(f"requeued {n} recipients in {batches} batches")

    guard(go)


def retry_failed_command(
    ctx: typer.Context,
    campaign_id: Annotated[str, typer.Argument(help="campaign id")],
) -> None:
    """Send a campaign again to its failed recipients only.

    Nobody already sent gets a second copy: workers skip recipients in a final state.
    """

    def go() -> None:
        from workers.requeue import retry_failed

        run = context(ctx)
        n, batches = retry_failed(run.settings, run.celery, run.redis, campaign_id)
        console.print(f"{untrusted(campaign_id)}: requeued {n} failed recipients in "
                      f"{batches} batches")

    guard(go)


# -- suppression -----------------------------------------------------------------------
@suppress_app.command("add")
def suppress_add(
    ctx: typer.Context,
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
        run = context(ctx)
        wanted = {a.strip().lower() for a in addresses}
        n = SuppressionList(run.redis, run.settings.keys).add_many(wanted, reason, "cli")
        console.print(f"{n} added, {len(wanted) - n} already suppressed (reason updated)")

    guard(go)


@suppress_app.command("remove")
def suppress_remove(ctx: typer.Context,
                    addresses: Annotated[list[str], typer.Argument()]) -> None:
    """Allow sending to these addresses again."""

    def go() -> None:
        from workers.suppression import SuppressionList

        run = context(ctx)
        sl = SuppressionList(run.redis, run.settings.keys)
        removed = sum(sl.remove(a) for a in addresses)
        console.print(f"{removed} removed")

    guard(go)


@suppress_app.command("list")
def suppress_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List suppressed addresses with reason, source and time."""

    def go() -> None:
        from workers.suppression import SuppressionList

        run = context(ctx)
        sl = SuppressionList(run.redis, run.settings.keys)
        page = sl.list(limit=limit)
        if as_json:
            for e in page.entries:
                print(json_line({"address": e.address, "reason": e.reason,
                                 "source": e.source, "at": e.at}))
            return
        table = Table("address", "reason", "source", "at", title=f"{sl.count()} suppressed")
        for e in page.entries:
            table.add_row(untrusted(e.address), untrusted(e.reason), untrusted(e.source),
                          format_time(e.at))
        console.print(table)

    guard(go)


@suppress_app.command("import")
def suppress_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="one address per line, or a CSV with an email "
                                         "column")],
    reason: Annotated[str, typer.Option()] = "import",
) -> None:
    """Add every address of a file; bad lines are reported with their line numbers."""

    def go() -> None:
        from workers.suppression import SuppressionList

        run = context(ctx)
        res = SuppressionList(run.redis, run.settings.keys).import_file(file, reason=reason)
        console.print(f"{untrusted(file)}: {res.added} added, {res.existing} already "
                      f"suppressed, {res.skipped} blank/comment lines, {len(res.bad)} bad lines")
        for bad in res.bad:
            err_console.print(untrusted(f"{file}:{bad.line}: {bad.problem}: {bad.text!r}"),
                              highlight=False, soft_wrap=True)
        if res.bad:
            raise typer.Exit(1)

    guard(go)


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(suppress_app, name="suppress")
    app.command("retry-failed")(retry_failed_command)
