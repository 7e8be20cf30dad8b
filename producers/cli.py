"""The ``bulkmail`` command: send campaigns, watch them, run workers, check providers."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from config.schema import State
from producers.cli_events import register as register_event_commands
from producers.cli_failures import register as register_failure_commands
from producers.cli_service import register as register_service_commands
from producers.progress import print_status
from workers.errors import BulkmailError

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="bulkmail: a horizontally scalable bulk-email sending queue.")
providers_app = typer.Typer(no_args_is_help=True, help="Inspect configured providers.")
app.add_typer(providers_app, name="providers")
register_failure_commands(app)
register_service_commands(app)
register_event_commands(app)

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _run(fn: Callable[[], None]) -> None:
    try:
        fn()
    except BulkmailError as exc:
        raise _fail(str(exc)) from None


# -- send ------------------------------------------------------------------------------
@app.command()
def send(
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
        from producers.connect import connect_redis
        from producers.enqueue import enqueue_campaign
        from producers.progress import wait_for_campaign
        from workers.app import app as celery_app
        from workers.app import settings
        from workers.ledger import Ledger

        providers = settings.load_providers()
        spec, _ = load_campaign(campaign, providers, default_batch_size=settings.batch_size,
                                campaign_id=campaign_id)
        client = connect_redis(settings)
        result = enqueue_campaign(settings, celery_app, client, spec, recipients)
        if as_json and not wait:
            print(json.dumps({"id": spec.id, "created": result.created,
                              "resumed": result.resumed, "rows": result.rows,
                              "queued": result.queued, "invalid": result.invalid,
                              "batches": result.batches}))
        elif not as_json:
            if not result.created and not result.resumed:
                console.print(f"campaign [bold]{spec.id}[/] already exists: nothing enqueued "
                              "again")
            else:
                rate = result.rows / result.seconds if result.seconds else 0
                console.print(
                    f"campaign [bold]{spec.id}[/]: {result.queued} queued, {result.invalid} "
                    f"invalid of {result.rows} rows in {result.batches} batches "
                    f"({rate:,.0f} rows/s)" + (" (resumed)" if result.resumed else ""))
        if wait:
            wait_for_campaign(Ledger(client, settings.keys), spec.id, console=console,
                              as_json=as_json)
        elif not as_json:
            print(spec.id)

    _run(go)


@app.command()
def status(
    campaign_id: Annotated[str | None, typer.Argument(help="campaign id; omit for a list")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    list_state: Annotated[str | None, typer.Option(
        "--list", help="list the recipients in this state (sent, failed, invalid, ...) "
        "or 'all'")] = None,
) -> None:
    """How a campaign stands: every row read is in exactly one state."""

    def go() -> None:
        from producers.connect import connect_redis
        from workers.app import settings
        from workers.ledger import Ledger

        client = connect_redis(settings)
        ledger = Ledger(client, settings.keys)
        if campaign_id is None:
            rows = [s.as_dict() for c in ledger.campaign_ids() if (s := ledger.status(c))]
            if as_json:
                print(json.dumps(rows))
                return
            table = Table("campaign", "provider", "rows", "sent", "failed", "invalid",
                          "pending", "done")
            for d in rows:
                table.add_row(d["id"], d["provider"], str(d["total"]), str(d["sent"]),
                              str(d["failed"]), str(d["invalid"]),
                              str(d["queued"] + d["deferred"]), "yes" if d["done"] else "no")
            console.print(table)
            return
        st = ledger.status(campaign_id)
        if st is None:
            raise _fail(f"no campaign {campaign_id!r} in {settings.keys.prefix!r}")
        if list_state:
            wanted = None if list_state == "all" else {State.from_label(s.strip())
                                                       for s in list_state.split(",")}
            for e in ledger.entries(campaign_id, wanted):
                if as_json:
                    print(json.dumps(e.as_dict(), ensure_ascii=False))
                else:
                    reason = e.detail.get("r") or e.detail.get("reason") or ""
                    extra = ""
                    if "a" in e.detail:
                        extra += f"\tattempts={e.detail['a']}"
                    if e.state == State.DEFERRED and "n" in e.detail:
                        when = time.strftime("%H:%M:%S", time.localtime(float(e.detail["n"])))
                        extra += f"\tnext={when}"
                    print(f"{e.row}\t{e.email}\t{e.state.label}\t{reason}{extra}")
            return
        from producers.control import campaign_document

        d = campaign_document(client, settings.keys, campaign_id) or st.as_dict()
        if as_json:
            print(json.dumps(d))
        else:
            print_status(d, console)
            if d.get("paused"):
                console.print(f"[yellow]paused by {escape(str(d['paused_by']))} at "
                              f"{_clock(str(d['paused_at']))}"
                              + (f": {escape(str(d['paused_reason']))}"
                                 if d.get("paused_reason") else "") + "[/]", highlight=False)
            for line in _provider_lines(st.provider, d["providers"]):
                console.print(f"[yellow]{line}[/]", highlight=False, soft_wrap=True)

    try:
        _run(go)
    except ValueError as exc:
        raise _fail(str(exc)) from None


def _clock(ts: str) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))
    except ValueError:
        return ts


def _provider_lines(provider: str, state: dict[str, str]) -> list[str]:
    """What an operator needs to know about the provider, in words."""
    lines = []
    if "auth_error" in state:
        lines.append(f"provider {provider}: credentials rejected at "
                     f"{_clock(state.get('auth_error_at', ''))}: {state['auth_error']} "
                     "(its batches wait and retry every minute)")
    if "reason" in state:
        scope = state.get("domain") or "the whole provider"
        lines.append(f"provider {provider}: last throttled at {_clock(state.get('at', ''))} "
                     f"for {scope}: {state['reason']} ({state.get('throttles', '?')} "
                     f"throttling replies, {state.get('decreases', '?')} slow-downs so far)")
    return lines


@app.command()
def cancel(campaign_id: Annotated[str, typer.Argument(help="campaign id")]) -> None:
    """Stop a campaign: every recipient not yet sent ends ``cancelled``."""

    def go() -> None:
        from producers.connect import connect_redis
        from workers.app import settings
        from workers.ledger import Ledger

        client = connect_redis(settings)
        ledger = Ledger(client, settings.keys)
        if ledger.status(campaign_id) is None:
            raise _fail(f"no campaign {campaign_id!r}")
        n = ledger.cancel(campaign_id)
        console.print(f"{campaign_id}: {n} recipients cancelled (sent ones stay sent; a batch "
                      "being sent stops at its next chunk)")

    _run(go)


# -- worker ----------------------------------------------------------------------------
@app.command()
def worker(
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
        from producers.connect import connect_redis
        from workers.app import app as celery_app
        from workers.app import settings

        providers = settings.load_providers()
        unknown = [p for p in provider if p not in providers]
        if unknown:
            raise _fail(f"unknown provider(s) {', '.join(unknown)} in {settings.providers} "
                        f"(configured: {', '.join(sorted(providers)) or 'none'})")
        connect_redis(settings)
        queues = ",".join(queue_name(p) for p in provider)
        celery_app.worker_main([
            "worker", "-Q", queues, "-c", str(concurrency), "--loglevel", loglevel, "-E",
            "-n", name or f"bulkmail-{'-'.join(provider)}@%h", "--without-mingle",
            "--without-gossip",
        ])

    _run(go)


# -- providers check -------------------------------------------------------------------
@providers_app.command("check")
def providers_check(
    only: Annotated[list[str] | None, typer.Argument(help="provider names (default all)")] = None,
) -> None:
    """Connect to each provider: EHLO, STARTTLS and AUTH for SMTP; key and endpoint for APIs."""

    def go() -> None:
        from workers.app import settings
        from workers.health import check_provider

        providers = settings.load_providers()
        failed = 0
        for name, cfg in providers.items():
            if only and name not in only:
                continue
            ok, text = check_provider(name, cfg)
            failed += not ok
            mark = "[green]ok[/]  " if ok else "[red]FAIL[/]"
            console.print(f"{mark} {name} ({cfg.kind}): {text}", highlight=False)
        if failed:
            raise typer.Exit(1)

    _run(go)


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

    _run(go)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
