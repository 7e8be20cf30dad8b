"""Watching a campaign: a live progress bar (sent, failed, rate, ETA) and the summary."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from config.errors import CampaignNotFoundError
from config.schema import State
from producers.cli_base import json_line, untrusted
from workers.ledger import CampaignStatus, Ledger

__all__ = ["print_status", "wait_for_campaign"]


def print_status(d: dict[str, Any], console: Console) -> None:
    """The status table: every state with recipients in it (queued/sent/failed always)."""
    table = Table(title=f"campaign {untrusted(d['id'])} "
                        f"({'done' if d['done'] else 'in progress'})", show_header=False)
    table.add_row("provider", untrusted(d["provider"]))
    table.add_row("rows read", str(d["total"]))
    for state in State:
        n = d[state.label]
        if n or state in (State.QUEUED, State.SENT, State.FAILED):
            table.add_row(state.label, str(n))
    console.print(table)


def wait_for_campaign(ledger: Ledger, cid: str, *, console: Console, as_json: bool = False,
                      poll: float = 0.25) -> CampaignStatus:
    """Block until the campaign is done, showing progress; returns the final status."""
    status = ledger.status(cid)
    if status is None:
        raise CampaignNotFoundError(cid)
    if as_json:
        while not status.done:
            time.sleep(poll)
            status = ledger.status(cid) or status
        print(json_line(status.as_dict()))
        return status
    columns = [
        BarColumn(bar_width=24), MofNCompleteColumn(),
        TextColumn("sent [green]{task.fields[sent]}[/] failed [red]{task.fields[failed]}[/] "
                   "deferred [yellow]{task.fields[deferred]}[/]"),
        TextColumn("{task.fields[rate]:>6,.0f}/s"), TextColumn("ETA"), TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(cid, total=status.total, sent=0, failed=0, deferred=0,
                                 rate=0.0)
        started, first_sent = time.monotonic(), status.counts["sent"]
        while True:
            c = status.counts
            elapsed = max(time.monotonic() - started, 1e-6)
            progress.update(task, completed=status.total - c["queued"] - c["deferred"],
                            sent=c["sent"], failed=c["failed"], deferred=c["deferred"],
                            rate=(c["sent"] - first_sent) / elapsed)
            if status.done:
                break
            time.sleep(poll)
            status = ledger.status(cid) or status
    print_status(status.as_dict(), console)
    return status
