"""Untrusted text never drives the operator's terminal or crashes the CLI.

Suppression reasons, relay replies, CSV headers and addresses come from outside. Every CLI
printer puts them through ``producers.cli_base.untrusted``: Rich markup shows as written
(``[/bold]`` in a reason used to crash ``suppress list`` and ``dlq list``) and control
characters (escape sequences, bidirectional overrides) are dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from config.schema import Keys
from producers.cli_base import json_line, untrusted
from tests.integration.conftest import run_cli
from workers.deadletter import DeadLetters
from workers.suppression import SuppressionList

#: markup that crashes Rich, markup that restyles, a hyperlink, terminal escapes (clear
#: screen, set title, 8-bit CSI), a right-to-left override and a trailing backslash
HOSTILE = ("[/bold] [red]x[/red] [link=https://evil.test]y[/link] \x1b[2J\x1b]0;t\x07 "
           "\x9b31m \u202egnp.exe \\")
#: what an operator should see of it: the text, without the control characters
SHOWN = "[/bold] [red]x[/red] [link=https://evil.test]y[/link] [2J]0;t 31m gnp.exe \\"
#: characters that must never reach the terminal from untrusted text
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _rendered(markup: str) -> str:
    out = StringIO()
    Console(file=out, width=100_000, emoji=False, highlight=False, color_system=None
            ).print(markup, soft_wrap=True)
    return out.getvalue().removesuffix("\n")


def test_the_hostile_sample_shows_as_written() -> None:
    assert untrusted(HOSTILE, markup=False) == SHOWN
    assert _rendered(untrusted(HOSTILE)) == SHOWN
    assert _rendered(f"[bold red]error:[/] {untrusted(HOSTILE)}") == f"error: {SHOWN}"


@given(st.text())
def test_rich_shows_untrusted_text_as_it_is_minus_controls(text: str) -> None:
    plain = untrusted(text, markup=False)
    assert not CONTROL.search(plain) and "\n" not in plain and "\t" not in plain
    assert _rendered(untrusted(text)) == plain


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=10))
def test_json_lines_decode_to_the_same_data_without_raw_controls(value: object) -> None:
    line = json_line(value)
    assert json.loads(line) == value
    assert not CONTROL.search(line) and "\n" not in line


# -- the commands ------------------------------------------------------------------------
PROVIDERS = '[providers.relay]\nkind = "smtp"\nhost = "127.0.0.1"\nport = 2525\ntls = "none"\n'


def _clean(out: str) -> None:
    assert not CONTROL.search(out), repr(out)
    assert "Traceback" not in out


@pytest.mark.integration
def test_suppress_list_shows_a_hostile_reason(
        bulkmail_env: Callable[[str], dict[str, str]], keys: Keys,
        redis_client: redis.Redis[bytes]) -> None:
    # a reason as a relay wrote it (hard bounces are suppressed with the reply)
    SuppressionList(redis_client, keys).add("ann@example.test", HOSTILE, "bounce")
    out = run_cli(["suppress", "list"], {**bulkmail_env(PROVIDERS), "COLUMNS": "400"})
    assert out.returncode == 0, out.stderr
    _clean(out.stdout + out.stderr)
    assert SHOWN in out.stdout
    as_json = run_cli(["suppress", "list", "--json"], bulkmail_env(PROVIDERS))
    _clean(as_json.stdout)
    assert json.loads(as_json.stdout)["reason"] == HOSTILE


@pytest.mark.integration
def test_dlq_list_shows_a_hostile_reply_and_address(
        bulkmail_env: Callable[[str], dict[str, str]], keys: Keys,
        redis_client: redis.Redis[bytes]) -> None:
    DeadLetters(redis_client, keys).record("c1", 3, "evil\x1b[2J@example.test",
                                           f"550 {HOSTILE}", 8, "relay")
    # wide enough that the table does not wrap the cells
    out = run_cli(["dlq", "list"], {**bulkmail_env(PROVIDERS), "COLUMNS": "400"})
    assert out.returncode == 0, out.stderr
    _clean(out.stdout + out.stderr)
    assert f"550 {SHOWN}" in out.stdout and "evil[2J@example.test" in out.stdout
    as_json = run_cli(["dlq", "list", "--json"], bulkmail_env(PROVIDERS))
    _clean(as_json.stdout)
    assert json.loads(as_json.stdout)["email"] == "evil\x1b[2J@example.test"


@pytest.mark.integration
def test_errors_show_a_hostile_csv_header(
        tmp_path: Path, bulkmail_env: Callable[[str], dict[str, str]]) -> None:
    campaign = tmp_path / "c.toml"
    campaign.write_text('provider = "relay"\nfrom = "a@shop.test"\nsubject = "s"\ntext = "t"\n')
    rows = tmp_path / "r.csv"
    rows.write_text("[/x],\x1b[31mname\nann@example.test,Ann\n")
    out = run_cli(["send", str(campaign), "-r", str(rows)], bulkmail_env(PROVIDERS))
    assert out.returncode == 2
    _clean(out.stderr)
    assert "no 'email' column" in out.stderr and "[/x]" in out.stderr


@pytest.mark.integration
def test_status_list_of_invalid_rows_strips_escapes_from_addresses(
        tmp_path: Path, bulkmail_env: Callable[[str], dict[str, str]], provider_name: str,
        forget_queue: None, redis_client: redis.Redis[bytes]) -> None:
    env = bulkmail_env(PROVIDERS.replace("relay", provider_name))
    campaign = tmp_path / "c.toml"
    campaign.write_text(f'id = "esc-1"\nprovider = "{provider_name}"\nfrom = "a@shop.test"\n'
                        'subject = "s"\ntext = "t"\n')
    rows = tmp_path / "r.csv"
    rows.write_text('email\nann@example.test\n"evil\x1b]0;owned\x07\t[/b]@example.test"\n',
                    encoding="utf-8")
    assert run_cli(["send", str(campaign), "-r", str(rows)], env).returncode == 0
    out = run_cli(["status", "esc-1", "--list", "invalid"], env)
    assert out.returncode == 0, out.stderr
    _clean(out.stdout)
    [line] = out.stdout.splitlines()
    row, email, state, _reason = line.split("\t")
    assert (row, email, state) == ("2", "evil]0;owned [/b]@example.test", "invalid")
