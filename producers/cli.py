"""The ``bulkmail`` command: send campaigns, watch them, run workers, check providers.

Settings are built once per run (:class:`~producers.cli_base.CliContext`) and passed
down; every command runs inside the one error guard and prints untrusted text through
:func:`~producers.cli_base.untrusted`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from config.errors import CampaignNotFoundError, InputError
from config.schema import State, check_id
from producers.cli_base import console, context, format_time, guard, json_line, untrusted
from producers.cli_events import register as register_event_commands
from producers.cli_failures import register as register_failure_commands
from producers.cli_service import register as register_service_commands
from producers.progress import print_status

__all__ = ["app", "main"]

# Plain (click) help: no Rich panels, so flags read as flags (``--json``, ``--wait /
# --no-wait``) rather than ``<bool>``, and docstrings are shown as written.
app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  context_settings={"max_content_width": 100},
                  help="bulkmail: a horizontally scalable bulk-email sending queue.")
providers_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                            help="Inspect configured providers.")
app.add_typer(providers_app, name="providers")
register_failure_commands(app)
register_service_commands(app)
register_event_commands(app)


# -- send ------------------------------------------------------------------------------
@app.command()
def send(
    ctx: typer.Context,
    campaign: Annotated[Path, typer.Argument(help="campaign file (TOML)")],
    recipients: Annotated[Path, typer.Option("--recipients", "-r",
                                             help="recipient list (.csv or .jsonl)")],
    wait: Annotated[bool, typer.Option(help="show progress until the campaign is done")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    campaign_id: Annotated[str | None, typer.Option("--id", help="campaign id (overrides "
                                                    "the file's)")] = None,
) -> None:
    """Validate a campaign, enqueue it for every recipient, print its id."""

    def go() -> None:
        from producers.campaign import load_campaign
        from producers.enqueue import enqueue_campaign
        from producers.progress import wait_for_campaign
        from workers.ledger import Ledger

        run = context(ctx)
        settings = run.settings
        providers = settings.load_providers()
        spec, _ = load_campaign(campaign, providers, default_batch_size=settings.batch_size,
                                campaign_id=campaign_id)
        client = run.redis
        result = enqueue_campaign(settings, run.celery, client, spec, recipients)
        if as_json and not wait:
            print(json_line({"id": spec.id, "created": result.created,
                             "resumed": result.resumed, "rows": result.rows,
                             "queued": result.queued, "invalid": result.invalid,
                             "batches": result.batches}))
        elif not as_json:
            name = Text.assemble("campaign ", (untrusted(spec.id, markup=False), "bold"))
            if not result.created and not result.resumed:
                console.print(name, " already exists: nothing enqueued again", sep="")
            else:
                rate = result.rows / result.seconds if result.seconds else 0
                console.print(
                    name, f": {result.queued} queued, {result.invalid} invalid of "
                    f"{result.rows} rows in {result.batches} batches ({rate:,.0f} rows/s)"
                    + (" (resumed)" if result.resumed else ""), sep="")
        if wait:
            wait_for_campaign(Ledger(client, settings.keys), spec.id, console=console,
                              as_json=as_json)
        elif not as_json:
            print(untrusted(spec.id, markup=False))

    guard(go)


@app.command()
def status(
    ctx: typer.Context,
    campaign_id: Annotated[str | None, typer.Argument(help="campaign id; omit for a list")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    list_state: Annotated[str | None, typer.Option(
        "--list", help="list the recipients in this state (sent, failed, invalid, ...) "
        "or 'all'")] = None,
) -> None:
    """How a campaign stands: every row read is in exactly one state."""

    def go() -> None:
        from workers.ledger import Ledger

        run = context(ctx)
        settings, client = run.settings, run.redis
        ledger = Ledger(client, settings.keys)
        if campaign_id is None:
            rows = [s.as_dict() for c in ledger.campaign_ids() if (s := ledger.status(c))]
            if as_json:
                print(json_line(rows))
                return
            table = Table("campaign", "provider", "rows", "sent", "failed", "invalid",
                          "pending", "done")
            for d in rows:
                table.add_row(untrusted(d["id"]), untrusted(d["provider"]), str(d["total"]),
                              str(d["sent"]), str(d["failed"]), str(d["invalid"]),
                              str(d["queued"] + d["deferred"]), "yes" if d["done"] else "no")
            console.print(table)
            return
        st = ledger.status(check_id(campaign_id))
        if st is None:
            raise CampaignNotFoundError(campaign_id, repr(settings.keys.prefix))
        if list_state:
            wanted = None if list_state == "all" else _states(list_state)
            for e in ledger.entries(campaign_id, wanted):
                if as_json:
                    print(json_line(e.as_dict()))
                else:
                    reason = e.detail.get("r") or e.detail.get("reason") or ""
                    extra = ""
                    if "a" in e.detail:
                        extra += f"\tattempts={untrusted(e.detail['a'], markup=False)}"
                    if e.state == State.DEFERRED and "n" in e.detail:
                        extra += f"\tnext={untrusted(format_time(e.detail['n']), markup=False)}"
                    print(f"{e.row}\t{untrusted(e.email, markup=False)}\t{e.state.label}\t"
                          f"{untrusted(reason, markup=False)}{extra}")
            return
        from producers.control import campaign_document

        d = campaign_document(client, settings.keys, campaign_id) or st.as_dict()
        if as_json:
            print(json_line(d))
        else:
            print_status(d, console)
            if d.get("paused"):
                reason = f": {d['paused_reason']}" if d.get("paused_reason") else ""
                console.print(untrusted(f"paused by {d['paused_by']} at "
                                        f"{format_time(d['paused_at'])}{reason}"),
                              style="yellow", highlight=False)
            for line in _provider_lines(st.provider, d["providers"]):
                console.print(untrusted(line), style="yellow", highlight=False, soft_wrap=True)

    guard(go)


def _states(text: str) -> set[State]:
    """``"sent,failed"`` -> the states; an unknown name is an :class:`InputError`."""
    try:
        return {State.from_label(s.strip()) for s in text.split(",")}
    except ValueError as exc:
        raise InputError(f"--list: {exc}") from None


def _provider_lines(provider: str, state: dict[str, str]) -> list[str]:
    """What an operator needs to know about the provider, in words."""
    lines = []
    if "auth_error" in state:
        lines.append(f"provider {provider}: credentials rejected at "
                     f"{format_time(state.get('auth_error_at', ''))}: {state['auth_error']} "
                     "(its batches wait and retry every minute)")
    if "reason" in state:
        scope = state.get("domain") or "the whole provider"
        lines.append(f"provider {provider}: last throttled at {format_time(state.get('at', ''))} "
                     f"for {scope}: {state['reason']} ({state.get('throttles', '?')} "
                     f"throttling replies, {state.get('decreases', '?')} slow-downs so far)")
    return lines


@app.command()
def cancel(ctx: typer.Context,
           campaign_id: Annotated[str, typer.Argument(help="campaign id")]) -> None:
    """Stop a campaign: every recipient not yet sent ends cancelled."""

    def go() -> None:
        from workers.ledger import Ledger

        run = context(ctx)
        ledger = Ledger(run.redis, run.settings.keys)
        if ledger.status(check_id(campaign_id)) is None:
            raise CampaignNotFoundError(campaign_id)
        n = ledger.cancel(campaign_id)
        console.print(f"{untrusted(campaign_id)}: {n} recipients cancelled (sent ones stay "
                      "sent; a batch being sent stops at its next chunk)")

    guard(go)


# -- worker ----------------------------------------------------------------------------
@app.command()
def worker(
    ctx: typer.Context,
    provider: Annotated[list[str], typer.Option("--provider", "-p",
                                                help="provider(s) to send for")],
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1,
                                             help="worker processes")] = 2,
    loglevel: Annotated[str, typer.Option(help="log level")] = "INFO",
    name: Annotated[str | None, typer.Option(help="node name (default bulkmail-PROVIDER@host)")
                    ] = None,
) -> None:
    """Run a Celery worker consuming the queues of the given providers."""

    def go() -> None:
        from config.schema import queue_name

        run = context(ctx)
        settings = run.settings
        providers = settings.load_providers()
        unknown = [p for p in provider if p not in providers]
        if unknown:
            raise InputError(f"unknown provider(s) {', '.join(unknown)} in "
                             f"{settings.providers} (configured: "
                             f"{', '.join(sorted(providers)) or 'none'})")
        _ = run.redis  # fail early, naming the URL, when Redis does not answer
        queues = ",".join(queue_name(p) for p in provider)
        run.celery.worker_main([
            "worker", "-Q", queues, "-c", str(concurrency), "--loglevel", loglevel, "-E",
            "-n", name or f"bulkmail-{'-'.join(provider)}@%h", "--without-mingle",
            "--without-gossip",
        ])

    guard(go)


# -- providers check -------------------------------------------------------------------
@providers_app.command("check")
def providers_check(
    ctx: typer.Context,
    only: Annotated[list[str] | None, typer.Argument(help="provider names (default all)")] = None,
) -> None:
    """Connect to each provider: EHLO, STARTTLS and AUTH for SMTP; key and endpoint for APIs."""

    def go() -> None:
        from workers.health import check_provider

        providers = context(ctx).settings.load_providers()
        failed = 0
        for name, cfg in providers.items():
            if only and name not in only:
                continue
            ok, text = check_provider(name, cfg)
            failed += not ok
            mark = "[green]ok[/]  " if ok else "[red]FAIL[/]"
            console.print(f"{mark} {untrusted(name)} ({cfg.kind}): {untrusted(text)}",
                          highlight=False)
        if failed:
            raise typer.Exit(1)

    guard(go)


# -- demo ------------------------------------------------------------------------------
@app.command()
def demo(
    recipients: Annotated[int, typer.Option(help="how many recipients to generate")] = 10000,
    workers: Annotated[int, typer.Option(help="worker processes")] = 2,
    keep: Annotated[bool, typer.Option(help="keep the captured mail folder")] = True,
) -> None:
    """Send a generated campaign through local workers to a local capture server."""

    def go() -> None:
        from producers.demo import run_demo

        run_demo(recipients=recipients, workers=workers, keep=keep, console=console)

    guard(go)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
