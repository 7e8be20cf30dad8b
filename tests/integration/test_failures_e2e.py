"""Failures end to end: CLI -> Redis -> the burst worker -> ScriptedSMTP.

Every scripted behaviour of ``tests/smtp_script.py`` is in one campaign, with plain
recipients and one address suppressed beforehand. The burst worker (``tests/burst.py``)
runs the batches and the retry pump in the test process, fast-forwarding the retry
queue; backoff is short (0.2 s base, 1 s cap), which the worker counts as due at once,
so four attempts take no waiting. (Competing pumps are tested in
``test_retry_queue.py``, worker processes in ``test_crash_safety.py``.) What is checked
comes from three independent places: the ledger (``bulkmail status --list all``), the
server's own counters, and the suppression and dead-letter lists (``bulkmail suppress
list`` / ``bulkmail dlq list``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from config.schema import Keys
from tests.burst import BurstResult, settings_from_env
from tests.helpers import run_cli
from tests.smtp_script import ScriptedSMTP
from workers.ledger import Ledger

pytestmark = pytest.mark.integration


MAX_ATTEMPTS = 4
#: recipients per scripted behaviour (in different batches: batch_size is small)
EACH = 2
PLAIN = 30
BEHAVIOURS = ("bounce", "reject", "defer2", "deferall", "throttle1", "drop1", "slow1", "full")


@pytest.fixture
def server() -> Iterator[ScriptedSMTP]:
    # slow1's DATA reply comes after 2.5 s, well past the client's 1 s timeout
    with ScriptedSMTP(slow_seconds=2.5) as srv:
        yield srv


def _providers(name: str, port: int, **extra: str) -> str:
    lines = [f"[providers.{name}]", 'kind = "smtp"', 'host = "127.0.0.1"', f"port = {port}",
             'tls = "none"', "pool_size = 2", "timeout = 1", f"max_attempts = {MAX_ATTEMPTS}",
             'backoff_base = "0.2s"', 'backoff_max = "1s"',
             *(f"{k} = {v}" for k, v in extra.items())]
    return "\n".join(lines) + "\n"


def _campaign(tmp_path: Path, provider: str, cid: str, batch_size: int) -> Path:
    path = tmp_path / f"{cid}.toml"
    path.write_text(
        f'id = "{cid}"\nprovider = "{provider}"\nfrom = "Shop <news@shop.test>"\n'
        'subject = "Hi {{ name }}"\ntext = "Hello {{ name }}"\n'
        f"batch_size = {batch_size}\n")
    return path


def _recipients(tmp_path: Path, addresses: list[str]) -> Path:
    path = tmp_path / "list.csv"
    path.write_text("email,name\n" + "".join(f"{a},N{i}\n" for i, a in enumerate(addresses)))
    return path


def _interleaved() -> list[str]:
    """Plain recipients with the scripted ones spread between them (several batches)."""
    out = [f"plain{i}@example.test" for i in range(PLAIN)]
    scripted = [f"{kind}-{n}@example.test" for n in range(EACH) for kind in BEHAVIOURS]
    for k, address in enumerate(scripted):
        out.insert(1 + k * 2, address)
    return out


def _cli(env: dict[str, str], *commands: list[str]) -> list[str]:
    """Run read-only CLI commands side by side (each is a fresh Python process);
    their stdout, in order. Every one must succeed."""
    with ThreadPoolExecutor(len(commands)) as pool:
        done: list[subprocess.CompletedProcess[str]] = list(
            pool.map(lambda args: run_cli(args, env), commands))
    for args, out in zip(commands, done, strict=True):
        assert out.returncode == 0, f"bulkmail {' '.join(args)}: {out.stderr}"
    return [out.stdout for out in done]


def _send_and_deliver(env: dict[str, str], campaign: Path, recipients: Path,
                      burst: Callable[..., BurstResult], provider: str) -> None:
    """``bulkmail send``, then the burst worker until nothing is left (what ``send
    --wait`` waits for; the tests read ``status --json`` alongside their listings)."""
    sent = run_cli(["send", str(campaign), "--recipients", str(recipients), "--json"], env)
    assert sent.returncode == 0, sent.stderr
    burst(provider, settings_from_env(env))


def _jsonl(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _by_email(out: str) -> dict[str, dict[str, Any]]:
    return {e["email"]: e for e in _jsonl(out)}


def _accounted(st: dict[str, Any]) -> int:
    return sum(st[s] for s in ("queued", "sent", "deferred", "failed", "invalid",
                               "suppressed", "cancelled"))


def _fate(entry: dict[str, Any]) -> tuple[str, str | None, int | None]:
    """(state, kind, attempts) of a ``status --list --json`` entry."""
    return entry["state"], entry.get("kind"), entry.get("attempts")


def _of(kind: str) -> list[str]:
    return [f"{kind}-{n}@example.test" for n in range(EACH)]


def test_every_failure_kind_end_to_end_then_retry_failed(
        tmp_path: Path, server: ScriptedSMTP, provider_name: str,
        bulkmail_env: Callable[[str], dict[str, str]], burst: Callable[..., BurstResult],
        redis_client: redis.Redis[bytes], keys: Keys) -> None:
    env = bulkmail_env(_providers(provider_name, server.port))
    pre = "presuppressed@example.test"
    addresses = [*_interleaved(), pre]
    added = run_cli(["suppress", "add", pre.upper(), "--reason", "complaint"], env)
    assert added.returncode == 0, added.stderr
    cid = "fail-e2e"
    campaign = _campaign(tmp_path, provider_name, cid, batch_size=6)

    _send_and_deliver(env, campaign, _recipients(tmp_path, addresses), burst, provider_name)
    status_out, listing, suppress_list, dlq_list = _cli(
        env, ["status", cid, "--json"], ["status", cid, "--list", "all", "--json"],
        ["suppress", "list", "--limit", "1000", "--json"],
        ["dlq", "list", "--campaign", cid, "--json"])
    status = json.loads(status_out)

    # -- accounting: every row read is in exactly one state, the campaign is done
    assert status["done"] is True
    assert status["total"] == len(addresses)
    assert _accounted(status) == status["total"]
    failed_kinds = ("bounce", "reject", "deferall")
    assert status["failed"] == EACH * len(failed_kinds)
    assert status["suppressed"] == 1
    assert status["sent"] == len(addresses) - 1 - EACH * len(failed_kinds)
    assert status["queued"] == status["deferred"] == status["invalid"] == 0

    entries = _by_email(listing)
    assert set(entries) == set(addresses)
    state = {a: e["state"] for a, e in entries.items()}
    sent = {a for a, s in state.items() if s == "sent"}

    # -- plain recipients: one RCPT, one message each
    for a in (a for a in addresses if a.startswith("plain")):
        assert state[a] == "sent" and server.rcpt_attempts[a] == 1 and server.accepted[a] == 1

    # -- hard bounce: failed after one attempt, and on the suppression list
    for a in _of("bounce"):
        e = entries[a]
        assert _fate(e) == ("failed", "permanent", 1), e
        assert "5.1.1" in e["reason"]
        assert server.rcpt_attempts[a] == 1 and server.accepted[a] == 0
    listed = {e["address"]: e for e in _jsonl(suppress_list)}
    assert set(_of("bounce")) <= set(listed)
    assert all("5.1.1" in listed[a]["reason"] and listed[a]["source"] == f"bounce:{cid}"
               for a in _of("bounce"))
    # a policy rejection (554 5.7.1) is permanent but not a bounce: not suppressed
    for a in _of("reject"):
        e = entries[a]
        assert _fate(e) == ("failed", "permanent", 1), e
        assert a not in listed and server.data_attempts[a] == 1 and server.accepted[a] == 0

    # -- defer2: 450 twice, accepted on exactly the third RCPT, one message
    for a in _of("defer2"):
        assert state[a] == "sent"
        assert server.rcpt_attempts[a] == 3 and server.accepted[a] == 1

    # -- deferall: failed after max_attempts, with a dead letter saying so
    for a in _of("deferall"):
        e = entries[a]
        assert _fate(e) == ("failed", "exhausted", MAX_ATTEMPTS), e
        assert server.rcpt_attempts[a] == MAX_ATTEMPTS and server.accepted[a] == 0
    dlq = _jsonl(dlq_list)
    assert {d["email"] for d in dlq} == set(_of("deferall"))
    assert all(d["attempts"] == MAX_ATTEMPTS and "4.3.0" in d["reply"]
               and d["provider"] == provider_name for d in dlq)

    # -- 552 5.2.2 (mailbox full) and 421 throttling: transient, retried, then sent once.
    #    (A sent recipient's ledger detail holds only the provider's id, not how many
    #    attempts it took, so the server's counters are the evidence for these.)
    for a in _of("full") + _of("throttle1"):
        assert state[a] == "sent"
        assert server.rcpt_attempts[a] == 2 and server.accepted[a] == 1

    # -- ambiguous (connection lost / timeout after the body): resent, so the server saw
    #    exactly one extra copy of each, no more
    for a in _of("drop1") + _of("slow1"):
        assert state[a] == "sent"
        assert server.data_attempts[a] == 2
        assert server.accepted[a] == 2
    extra = {a: n - 1 for a, n in server.accepted.items() if n > 1}
    assert extra == dict.fromkeys(_of("drop1") + _of("slow1"), 1)

    # -- suppressed beforehand (listed upper-case): never contacted
    assert state[pre] == "suppressed"
    assert entries[pre]["reason"] == "on the suppression list"
    assert server.rcpt_attempts[pre] == 0

    # -- retry-failed: only the failed are tried again, nobody sent gets a second copy
    before = dict(server.accepted)
    again = run_cli(["retry-failed", cid], env)
    assert again.returncode == 0, again.stderr
    assert f"requeued {EACH * len(failed_kinds)} failed recipients" in " ".join(
        again.stdout.split())
    burst(provider_name, settings_from_env(env))
    ledger = Ledger(redis_client, keys)
    assert ledger.status(cid).done  # type: ignore[union-attr]
    status_out, listing2, dlq_list2 = _cli(
        env, ["status", cid, "--json"], ["status", cid, "--list", "all", "--json"],
        ["dlq", "list", "--campaign", cid, "--json"])
    status2 = json.loads(status_out)
    assert status2["done"] is True
    assert _accounted(status2) == status2["total"] == len(addresses)
    entries2 = _by_email(listing2)
    for a in _of("bounce"):  # on the suppression list since the first run
        assert entries2[a]["state"] == "suppressed"
        assert server.rcpt_attempts[a] == 1
    for a in _of("reject"):  # tried again, refused again
        assert entries2[a]["state"] == "failed" and server.data_attempts[a] == 2
    for a in _of("deferall"):  # a full new round of attempts, and a new dead letter
        e = entries2[a]
        assert _fate(e) == ("failed", "exhausted", MAX_ATTEMPTS), e
        assert server.rcpt_attempts[a] == 2 * MAX_ATTEMPTS
    dlq2 = _jsonl(dlq_list2)
    assert sorted(d["email"] for d in dlq2) == sorted(_of("deferall"))
    assert status2["sent"] == status["sent"]
    assert status2["suppressed"] == 1 + EACH
    assert status2["failed"] == EACH * 2
    assert dict(server.accepted) == before
    assert all(entries2[a]["state"] == "sent" for a in sent)


def test_ambiguous_fail_policy_does_not_resend(
        tmp_path: Path, server: ScriptedSMTP, provider_name: str,
        bulkmail_env: Callable[[str], dict[str, str]], burst: Callable[..., BurstResult]
        ) -> None:
    env = bulkmail_env(_providers(provider_name, server.port, on_ambiguous='"fail"'))
    addresses = ["drop1-a@example.test", "slow1-b@example.test", "plain@example.test",
                 "full-c@example.test"]
    campaign = _campaign(tmp_path, provider_name, "fail-ambiguous", batch_size=10)
    _send_and_deliver(env, campaign, _recipients(tmp_path, addresses), burst, provider_name)
    status_out, listing, dlq_list = _cli(
        env, ["status", "fail-ambiguous", "--json"],
        ["status", "fail-ambiguous", "--list", "all", "--json"],
        ["dlq", "list", "--campaign", "fail-ambiguous", "--json"])
    status = json.loads(status_out)
    assert status["done"] is True and _accounted(status) == status["total"] == 4
    assert (status["sent"], status["failed"]) == (2, 2)

    entries = _by_email(listing)
    for a in ("drop1-a@example.test", "slow1-b@example.test"):
        e = entries[a]
        assert _fate(e) == ("failed", "unknown", 1), e
        assert server.data_attempts[a] == 1  # never sent again
    # the policy is about ambiguity only: a plain deferral is still retried
    assert entries["full-c@example.test"]["state"] == "sent"
    assert server.rcpt_attempts["full-c@example.test"] == 2
    # ambiguous failures are not dead letters (nothing ran out) and not bounces
    assert _jsonl(dlq_list) == []
