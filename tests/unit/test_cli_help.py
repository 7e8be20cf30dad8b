"""``bulkmail --help`` and every subcommand's help read as plain text: no RST markup from
docstrings, flags shown as flags (``--json``, ``--wait / --no-wait``), never ``<bool>``."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from producers.cli import app


def _command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():  # a group's commands
            walk(sub, [*path, name])

    walk(root, [])
    return paths


PATHS = _command_paths()


def test_every_command_is_covered() -> None:
    names = {" ".join(p) for p in PATHS}
    assert {"", "send", "status", "cancel", "worker", "demo", "retry-failed",
            "providers check", "dlq list", "dlq requeue", "suppress add", "suppress list",
            "suppress remove", "suppress import"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "bulkmail")
def test_help_is_plain_text(path: list[str]) -> None:
    out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"},
                             prog_name="bulkmail")
    assert out.exit_code == 0, out.output
    assert "Usage: bulkmail" in out.output
    assert "``" not in out.output and ":class:" not in out.output
    assert "<bool>" not in out.output
    # Rich panels would draw boxes; plain help has none
    assert "╭" not in out.output


def test_flags_read_as_flags() -> None:
    out = CliRunner().invoke(app, ["send", "--help"], env={"COLUMNS": "100"})
    lines = [line.strip() for line in out.output.splitlines()]
    assert any(line.startswith("--wait / --no-wait ") for line in lines)
    assert any(line.startswith("--json ") and "machine-readable" in line for line in lines)


def test_cancel_help_names_the_state_without_markup() -> None:
    out = CliRunner().invoke(app, ["cancel", "--help"])
    assert "every recipient not yet sent ends cancelled" in " ".join(out.output.split())
