"""The failure commands as an operator uses them: ``bulkmail suppress ...``, ``bulkmail dlq
...``, and what every campaign command says about a campaign id that does not exist.

Each command runs as a real ``bulkmail`` process against a real Redis (isolated by key
prefix); the dead-letter round trip runs real worker processes against ScriptedSMTP.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from config.schema import Keys
from producers.demo import stop_workers
from tests.integration.conftest import run_cli, wait_until
from tests.smtp_script import ScriptedSMTP
from workers.ledger import Ledger

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _forget_queue(forget_queue: None) -> None:
    """Every test here drops its queue at the end (see the fixture)."""


def _jsonl(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _flat(text: str) -> str:
    """Output with rich's line wrapping undone (the console is 80 columns wide)."""
    return " ".join(text.split())


def _ok(args: list[str], env: dict[str, str]) -> str:
    out = run_cli(args, env)
    assert out.returncode == 0, f"bulkmail {' '.join(args)}: {out.stderr}"
    return out.stdout


def _side_by_side(env: dict[str, str], *commands: list[str]
                  ) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands at once (each is a fresh Python process: ~0.5 s of start-up)."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: run_cli(args, env), commands))


@pytest.fixture
def env(bulkmail_env: Callable[[str], dict[str, str]], provider_name: str,
        redis_client: redis.Redis[bytes]) -> dict[str, str]:
    # redis_client: deletes this test's keys afterwards
    return bulkmail_env(f'[providers.{provider_name}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
                        'tls = "none"\n')


# -- the suppression list ----------------------------------------------------------------
def test_suppress_add_remove_list_import(tmp_path: Path, env: dict[str, str]) -> None:
    out = _ok(["suppress", "add", "Ann@Example.test", "bob@example.test", "old@example.test",
               "--reason", "hard_bounce"], env)
    assert "3 added, 0 already suppressed" in _flat(out)

    plain = tmp_path / "plain.txt"
    plain.write_text(
        "# exported from the old system\n"  # 1 comment
        "one@example.test\n"                 # 2
        "\n"                                 # 3 blank
        "not an address\n"                   # 4 bad
        "Two@Example.TEST\n"                 # 5
        "old@example.test\n"                 # 6 already suppressed: keeps its reason
        "three@@example.test\n")             # 7 bad
    table = tmp_path / "export.csv"
    table.write_text("name,email,reason\n"             # 1 header
                     "Cy,cy@example.test,complaint\n"  # 2
                     "Dee,,unsubscribe\n"              # 3 bad: no address
                     "Eve,eve-at-example,x\n"          # 4 bad
                     "Fay,fay@example.test,\n")        # 5 no reason: --reason's default
    clean = tmp_path / "clean.txt"
    clean.write_text("gus@example.test\nhal@example.test\n")
    missing = tmp_path / "nope.txt"

    # independent commands (different addresses) side by side: each is a fresh process
    again, removed, by_plain, by_table, by_clean, by_missing = _side_by_side(
        env, ["suppress", "add", "ann@example.test"],
        # removal folds case too; an address that is not on the list is not counted
        ["suppress", "remove", "BOB@example.test", "nobody@example.test"],
        ["suppress", "import", str(plain), "--reason", "legacy"],
        ["suppress", "import", str(table)], ["suppress", "import", str(clean)],
        ["suppress", "import", str(missing)])
    assert "0 added, 1 already suppressed" in _flat(again.stdout)
    assert "1 removed" in _flat(removed.stdout)

    # bad lines: reported on stderr as FILE:LINE, the good ones imported anyway, exit 1
    assert by_plain.returncode == 1, by_plain
    assert ("2 added, 1 already suppressed, 2 blank/comment lines, 2 bad lines"
            in _flat(by_plain.stdout))
    assert re.findall(rf"{re.escape(str(plain))}:(\d+): ", by_plain.stderr) == ["4", "7"]
    assert "'not an address'" in by_plain.stderr
    assert "'three@@example.test'" in by_plain.stderr
    assert by_table.returncode == 1, by_table
    lines = by_table.stderr.splitlines()
    assert any(f"{table}:3: no value in the email column" in line for line in lines), lines
    assert any(f"{table}:4: not an email address" in line and "eve-at-example" in line
               for line in lines), lines
    # a clean file: exit 0; a file that cannot be read: exit 2, the message names it
    assert by_clean.returncode == 0 and "2 added" in _flat(by_clean.stdout)
    assert by_missing.returncode == 2
    assert "nope.txt" in by_missing.stderr and "cannot read" in by_missing.stderr

    as_json, as_table = _side_by_side(env, ["suppress", "list", "--json"],
                                      ["suppress", "list"])
    listed = {e["address"]: e for e in _jsonl(as_json.stdout)}
    assert set(listed) == {"ann@example.test", "old@example.test",  # stored lower-cased
                           "one@example.test", "two@example.test", "cy@example.test",
                           "fay@example.test", "gus@example.test", "hal@example.test"}
    assert listed["old@example.test"]["reason"] == "hard_bounce"  # import never overwrites
    assert listed["old@example.test"]["source"] == "cli"
    assert (listed["one@example.test"]["reason"], listed["one@example.test"]["source"]) == (
        "legacy", "file:plain.txt")
    assert listed["cy@example.test"]["reason"] == "complaint"  # the file's reason column
    assert listed["fay@example.test"]["reason"] == "import"
    assert all(e["at"] > 0 for e in listed.values())
    assert "8 suppressed" in _flat(as_table.stdout)


# -- dead letters: list, requeue by reason, requeue by campaign ------------------------------
@pytest.fixture
def server() -> Iterator[ScriptedSMTP]:
    with ScriptedSMTP() as srv:
        yield srv


def test_dlq_list_and_requeue_round_trip(
        tmp_path: Path, server: ScriptedSMTP, provider_name: str,
        bulkmail_env: Callable[[str], dict[str, str]], start_worker: Callable[..., Any],
        redis_client: redis.Redis[bytes], keys: Keys) -> None:
    env = bulkmail_env(
        f'[providers.{provider_name}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
        f'port = {server.port}\ntls = "none"\npool_size = 2\ntimeout = 2\n'
        'max_attempts = 2\nbackoff_base = "0.2s"\nbackoff_max = "0.5s"\n')
    plain = [f"p{i}@example.test" for i in range(5)]
    defer2 = ["defer2-a@example.test", "defer2-b@example.test"]  # accepted at the 3rd try
    deferall = ["deferall-c@example.test"]                       # never accepted
    rows = [plain[0], defer2[0], plain[1], plain[2], deferall[0], plain[3], defer2[1],
            plain[4]]
    recipients = tmp_path / "list.csv"
    recipients.write_text("email\n" + "".join(f"{r}\n" for r in rows))
    cid = "dlq-round-trip"
    campaign = tmp_path / "c.toml"
    campaign.write_text(f'id = "{cid}"\nprovider = "{provider_name}"\nfrom = "s@shop.test"\n'
                        'subject = "s"\ntext = "t"\nbatch_size = 4\n')
    ledger = Ledger(redis_client, keys)

    def done() -> bool:
        st = ledger.status(cid)
        return st is not None and st.done

    worker = start_worker(provider_name, env, concurrency=1)
    sent = run_cli(["send", str(campaign), "--recipients", str(recipients), "--wait", "--json"],
                   env, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout.splitlines()[-1])["failed"] == 3

    of_campaign, of_all = _side_by_side(env, ["dlq", "list", "--campaign", cid, "--json"],
                                        ["dlq", "list", "--json"])
    letters = {d["email"]: d for d in _jsonl(of_campaign.stdout)}
    assert set(letters) == set(defer2 + deferall)
    assert all(d["attempts"] == 2 and d["campaign_id"] == cid for d in letters.values())
    assert all("450 4.2.1" in letters[a]["reply"] for a in defer2)
    assert "451 4.3.0" in letters[deferall[0]]["reply"]
    # every campaign's dead letters (this key prefix has only this one)
    assert len(_jsonl(of_all.stdout)) == 3

    # no worker while we look: requeued recipients are back to queued, nothing else is
    stop_workers(worker)
    out = _ok(["dlq", "requeue", "--reason", "4.2.1"], env)
    assert "requeued 2 recipients" in _flat(out)
    listing, left = _side_by_side(env, ["status", cid, "--list", "all", "--json"],
                                  ["dlq", "list", "--json"])
    now = {e["email"]: e["state"] for e in _jsonl(listing.stdout)}
    assert {a for a, s in now.items() if s == "queued"} == set(defer2)
    assert now[deferall[0]] == "failed"
    assert [d["email"] for d in _jsonl(left.stdout)] == deferall

    # a worker sends them: defer2 is accepted at its third RCPT
    start_worker(provider_name, env, concurrency=1)
    assert wait_until(done, timeout=30)
    assert ledger.status(cid).counts["sent"] == len(plain + defer2)  # type: ignore[union-attr]
    assert all(server.accepted[a] == 1 and server.rcpt_attempts[a] == 3 for a in defer2)

    # requeue by campaign: deferall gets max_attempts more tries and a fresh dead letter
    assert "requeued 1 recipients" in _flat(_ok(["dlq", "requeue", "--campaign", cid], env))
    assert wait_until(lambda: done() and server.rcpt_attempts[deferall[0]] == 4, timeout=30)
    listing, again = _side_by_side(env, ["status", cid, "--list", "all", "--json"],
                                   ["dlq", "list", "--campaign", cid, "--json"])
    assert [(d["email"], d["attempts"]) for d in _jsonl(again.stdout)] == [(deferall[0], 2)]
    # nobody sent got a second message
    assert all(server.accepted[a] == 1 for a in plain + defer2)
    assert {e["email"]: e["state"] for e in _jsonl(listing.stdout)} == {
        **dict.fromkeys(plain + defer2, "sent"), deferall[0]: "failed"}


# -- a campaign id that does not exist -----------------------------------------------------
UNKNOWN = "no-such-campaign-42"


def _names_the_unknown_campaign(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 2, out
    assert UNKNOWN in out.stderr, out
    assert "Traceback" not in out.stderr


def test_unknown_campaign_is_an_error_naming_it(env: dict[str, str]) -> None:
    for out in _side_by_side(env, ["status", UNKNOWN, "--json"],
                             ["status", UNKNOWN, "--list", "failed"],
                             ["retry-failed", UNKNOWN], ["cancel", UNKNOWN]):
        _names_the_unknown_campaign(out)


def test_dlq_commands_refuse_an_unknown_campaign(env: dict[str, str]) -> None:
    for out in _side_by_side(env, ["dlq", "list", "--campaign", UNKNOWN],
                             ["dlq", "requeue", "--campaign", UNKNOWN]):
        _names_the_unknown_campaign(out)
