"""CLI for the service surface: ``bulkmail api``, ``bulkmail keys ...``, ``bulkmail pause``
and ``bulkmail resume``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from config.errors import InputError
from config.schema import check_id
from producers.cli_base import console, context, format_time, guard, json_line, untrusted

__all__ = ["keys_app", "register"]

keys_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="API keys (HTTP API) and SMTP credentials (SMTP ingress).")


def _context(ctx: typer.Context) -> tuple[Any, Any]:
    run = context(ctx)
    return run.settings, run.redis


def _when(ts: float | None) -> str:
    return format_time(ts) if ts else ""


# -- keys ------------------------------------------------------------------------------
@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="key name (shown in status as api:NAME)")],
    providers: Annotated[str | None, typer.Option(
        "--providers", help="comma-separated providers the key may send through "
        "(default: all)")] = None,
    smtp: Annotated[bool, typer.Option("--smtp", help="SMTP ingress credentials (username "
                                       "and password) instead of an HTTP API key")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Create a key and print its secret (once: only its SHA-256 is stored)."""

    def go() -> None:
        from producers.keys import KeyStore
        settings, client = _context(ctx)
        allowed = None
        if providers is not None:
            allowed = [p.strip() for p in providers.split(",") if p.strip()]
            configured = settings.load_providers()
            unknown = [p for p in allowed if p not in configured]
            if unknown or not allowed:
                raise InputError(
                    f"--providers: unknown provider(s) {', '.join(unknown) or '(none given)'} "
                    f"(providers file {settings.providers} has: "
                    f"{', '.join(sorted(configured)) or 'none'})")
        new = KeyStore(client, settings.keys).create(
            name, kind="smtp" if smtp else "api", providers=allowed)
        if as_json:
            print(json_line(new.as_dict()))
            return
        scope = ", ".join(allowed) if allowed else "all providers"
        if smtp:
            console.print(f"SMTP credentials [bold]{untrusted(name)}[/] ({untrusted(scope)}); the "
                          "password is shown only now:", highlight=False)
            print(f"username: {name}\npassword: {new.secret}")
        else:
            console.print(f"API key [bold]{untrusted(name)}[/] ({untrusted(scope)}); it is "
                          "shown only now:", highlight=False)
            print(new.secret)

    guard(go)


@keys_app.command("list")
def keys_list(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List keys (names, kinds, providers, created, revoked); never secrets."""

    def go() -> None:
        from producers.keys import KeyStore

        settings, client = _context(ctx)
        keys = KeyStore(client, settings.keys).list()
        if as_json:
            print(json_line([k.as_dict() for k in keys]))
            return
        table = Table("name", "kind", "providers", "created", "revoked")
        for k in keys:
            table.add_row(untrusted(k.name), k.kind,
                          untrusted(", ".join(k.providers)) if k.providers is not None else "all",
                          _when(k.created), _when(k.revoked))
        console.print(table)

    guard(go)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="key name")]) -> None:
    """Revoke a key: requests with it get 401 from now on."""

    def go() -> None:
        from producers.keys import KeyStore
        settings, client = _context(ctx)
        if not KeyStore(client, settings.keys).revoke(name):
            raise InputError(f"no live key named {name!r}")
        console.print(f"key [bold]{untrusted(name)}[/] revoked", highlight=False)

    guard(go)


# -- pause / resume --------------------------------------------------------------------
def pause(ctx: typer.Context,
          campaign_id: Annotated[str, typer.Argument(help="campaign id")]) -> None:
    """Pause a campaign: workers stop before their next chunk; nothing is lost or spent."""

    def go() -> None:
        from producers.control import cli_actor
        from producers.control import pause as do_pause

        settings, client = _context(ctx)
        first = do_pause(client, settings.keys, check_id(campaign_id), by=cli_actor())
        console.print(f"{untrusted(campaign_id)}: " + (
            "paused (batches being sent stop before their next chunk)" if first
            else "was paused already"), highlight=False)

    guard(go)


def resume(ctx: typer.Context,
           campaign_id: Annotated[str, typer.Argument(help="campaign id")]) -> None:
    """Resume a paused campaign: recipients not yet final are sent."""

    def go() -> None:
        from producers.control import cli_actor
        from producers.control import resume as do_resume

        settings, client = _context(ctx)
        released = do_resume(client, settings.keys, check_id(campaign_id), by=cli_actor())
        console.print(f"{untrusted(campaign_id)}: " + (
            "was not paused" if released is None
            else f"resumed ({released} waiting batch(es) back on the queue)"), highlight=False)

    guard(go)


# -- api -------------------------------------------------------------------------------
def api(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8025,
    rate: Annotated[str, typer.Option(help="requests per API key, cluster-wide "
                                      "(e.g. 20/s, 600/m)")] = "20/s",
    burst: Annotated[int | None, typer.Option(help="request burst per key (default: one "
                                              "second's worth, at least 1)")] = None,
    max_body: Annotated[str, typer.Option(help="largest JSON body (bytes; k/M/G)")] = "10M",
    max_upload: Annotated[str, typer.Option(help="largest multipart upload (bytes; "
                                            "k/M/G)")] = "1G",
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""

    def go() -> None:
        import uvicorn

        from producers.service.app import ServiceConfig, create_app, parse_size
        settings, _ = _context(ctx)  # fails early, naming the URL, when Redis does not answer
        try:
            config = ServiceConfig.build(rate=rate, burst=burst,
                                         max_body=parse_size(max_body),
                                         max_upload=parse_size(max_upload))
        except ValueError as exc:
                raise InputError(str(exc)) from None
        uvicorn.run(create_app(settings, config), host=host, port=port, log_level="info",
                    proxy_headers=False)

    guard(go)


def register(app: typer.Typer) -> None:
    """Add the service commands to the ``bulkmail`` CLI."""
    app.add_typer(keys_app, name="keys")
    app.command()(pause)
    app.command()(resume)
    app.command()(api)
