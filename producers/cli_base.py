"""What every ``bulkmail`` command shares: the consoles, the error guard, the settings and
connections of one run, how untrusted text and times are printed.

Every printer of the CLI puts text that came from outside (recipient addresses, relay
replies, suppression reasons, CSV headers in error messages) through :func:`untrusted`:
Rich would read ``[bold]`` in a reason as markup (and ``[/x]`` crashes it), and escape
sequences in a bad address would reach the operator's terminal.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from config.errors import BulkmailError
from config.settings import Settings

if TYPE_CHECKING:
    import redis

    from workers.app import BulkmailApp

__all__ = [
    "CliContext",
    "console",
    "context",
    "err_console",
    "fail",
    "format_time",
    "guard",
    "json_line",
    "untrusted",
]

#: The CLI's console (stdout), and its twin on stderr for errors; no other module of the
#: CLI makes one. Emoji codes stay text (":x:" in a reply is not an emoji).
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

# Line breaks and tabs become spaces (one record per line in listings); every other
# control character (C0, DEL, C1 such as ESC and CSI) and the bidirectional overrides
# that can reorder what a terminal shows are dropped.
_BREAKS = re.compile(r"[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\u200e\u200f"
                       r"\u202a-\u202e\u2066-\u2069]")


# Every "[" with the backslashes before it; group 2 is a whole tag when the "[" opens one
# (the grammar of rich.markup.RE_TAGS). rich.markup.escape leaves a backslash before a
# "[" that opens no tag, which Rich then drops, and doubles a trailing backslash.
_BRACKET = re.compile(r"(\\*)(\[(?:[a-z#/@][^[]*?])?)")


def _escape_bracket(m: re.Match[str]) -> str:
    slashes, bracket = m.groups()
    if len(bracket) > 1:  # a tag: backslashes doubled, then one that escapes the tag
        return f"{slashes}{slashes}\\{bracket}"
    # a lone "[": Rich turns "\[" into "[", so one more backslash when any precede it
    return f"{slashes}\\{bracket}" if slashes else bracket


def untrusted(value: object, *, markup: bool = True) -> str:
    """``value`` as text that is safe to print: control characters removed, line breaks
    as spaces and, for Rich output (``markup=True``), Rich markup escaped so it shows as
    written. ``markup=False`` is for plain ``print`` (tab-separated listings).

    Put it where no tag follows directly (``[bold]{untrusted(x)}[/]`` would let a
    trailing backslash of ``x`` escape the ``[/]``): at the end of the text, or as a
    table cell, or with ``style=`` instead of a tag.
    """
    text = _CONTROLS.sub("", _BREAKS.sub(" ", str(value)))
    return _BRACKET.sub(_escape_bracket, text) if markup else text


# json.dumps escapes C0 controls; these it leaves as they are with ensure_ascii=False
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def json_line(value: Any) -> str:
    """``value`` as one JSON line for machine-readable output (``--json``), with the
    control characters a terminal would act on written as ``\\uXXXX`` escapes, which
    decode to the same data."""
    text = json.dumps(value, ensure_ascii=False)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def format_time(ts: float | str) -> str:
    """A unix time as local ``YYYY-MM-DD HH:MM:SS``; text that is not a number is
    returned as it is (made safe by the caller like any stored text)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))
    except (ValueError, OverflowError, OSError):
        return str(ts)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; returns the exit to raise."""
    err_console.print(f"[bold red]error:[/] {untrusted(message)}", highlight=False,
                      soft_wrap=True)
    return typer.Exit(code)


def guard(fn: Callable[[], None]) -> None:
    """Run a command's body; a :class:`~config.errors.BulkmailError` is an error message
    and exit code 2, not a traceback. The one guard of every command."""
    try:
        fn()
    except BulkmailError as exc:
        raise fail(str(exc)) from None


class CliContext:
    """The settings and connections of one ``bulkmail`` run, each built on first use and
    only once, then passed down. ``--help`` builds none; ``demo`` builds its own for the
    environment it sets up. A bad ``BULKMAIL_*`` variable is a
    :class:`~config.errors.ConfigError` from the first command that needs settings."""

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env()

    @cached_property
    def redis(self) -> redis.Redis[bytes]:
        from producers.connect import connect_redis

        return connect_redis(self.settings)

    @cached_property
    def celery(self) -> BulkmailApp:
        from workers.app import create_app

        return create_app(self.settings)


def context(ctx: typer.Context) -> CliContext:
    """The run's :class:`CliContext`, kept on the root of the command line's contexts."""
    return ctx.find_root().ensure_object(CliContext)
