"""End to end: CLI -> Redis -> the burst worker (the real task body in this process, fed
from the real broker queue) -> pooled SMTP -> capture server. Worker processes and their
crashes are tested in ``test_crash_safety.py``."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from producers.capture import CaptureServer
from tests.burst import BurstResult, settings_from_env
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

ROWS = 2000


def _campaign(tmp_path: Path, provider: str, cid: str) -> Path:
    path = tmp_path / "campaign.toml"
    path.write_text(
        f'id = "{cid}"\nprovider = "{provider}"\nfrom = "Shop <news@shop.test>"\n'
        'subject = "Hi {{ name }}"\n'
        'text = "Hello {{ name }}, code {{ code }}"\n'
        'html = "<p>Hello {{ name }}</p>"\n'
        "batch_size = 150\n")
    return path


def _recipients(tmp_path: Path) -> tuple[Path, set[str], int]:
    path = tmp_path / "list.csv"
    good: set[str] = set()
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["email", "name", "code"])
        for i in range(ROWS):
            w.writerow([f"u{i}@example.test", f"Name {i}", i])
            good.add(f"u{i}@example.test")
        w.writerow(["broken@", "Broken", 1])               # bad syntax
        w.writerow(["u5@example.test", "Again", 2])         # duplicate
        w.writerow(["evil@example.test", "x\r\nBcc: victim@example.test", 3])  # header injection
        w.writerow(["no-name@example.test", "Fine", 4])     # valid
        good.add("no-name@example.test")
    return path, good, ROWS + 4


def test_campaign_end_to_end(tmp_path: Path, smtp_server: CaptureServer, provider_name: str,
                             bulkmail_env: Callable[[str], dict[str, str]],
                             burst: Callable[..., BurstResult]) -> None:
    env = bulkmail_env(
        f'[providers.{provider_name}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
        f'port = {smtp_server.port}\ntls = "none"\npool_size = 4\n'
        "max_messages_per_connection = 300\n")
    campaign = _campaign(tmp_path, provider_name, "e2e-1")
    recipients, good, rows = _recipients(tmp_path)

    sent = run_cli(["send", str(campaign), "--recipients", str(recipients), "--json"], env)
    assert sent.returncode == 0, sent.stderr
    enqueued = json.loads(sent.stdout)
    assert enqueued["created"] is True
    ran = burst(provider_name, settings_from_env(env))
    assert ran.tasks == enqueued["batches"] == -(-len(good) // 150)  # one task per batch
    done = run_cli(["status", "e2e-1", "--json"], env)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["done"] is True
    assert status["total"] == rows
    assert status["sent"] == len(good)
    assert status["invalid"] == 3
    assert status["failed"] == status["queued"] == status["deferred"] == 0
    assert sum(status[s] for s in ("queued", "sent", "failed", "invalid", "deferred",
                                   "suppressed", "cancelled")) == rows

    # every valid recipient received exactly one message, nobody else received any
    assert smtp_server.received == len(good)
    assert set(smtp_server.by_recipient) == good
    assert all(n == 1 for n in smtp_server.by_recipient.values())

    # the invalid rows are listed with their row numbers and reasons
    listed = run_cli(["status", "e2e-1", "--list", "invalid", "--json"], env)
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    reasons = {e["row"]: e["reason"] for e in entries}
    assert set(reasons) == {ROWS + 1, ROWS + 2, ROWS + 3}
    assert "bad address" in reasons[ROWS + 1]
    assert reasons[ROWS + 2] == "duplicate of row 6"
    assert "header" in reasons[ROWS + 3]

    # sending the same campaign id again enqueues nothing
    again = run_cli(["send", str(campaign), "--recipients", str(recipients), "--json"], env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["created"] is False
    assert burst(provider_name, settings_from_env(env)).tasks == 0
    status2 = json.loads(run_cli(["status", "e2e-1", "--json"], env).stdout)
    assert status2["sent"] == len(good)
    assert smtp_server.received == len(good)
