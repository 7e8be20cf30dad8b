"""Crash safety: SIGKILL real worker processes in the middle of a campaign.

The claim under test (README, "Delivery guarantee"): a killed worker process can make the
relay receive a second copy only of the messages whose results it had not yet written to
the ledger, which is at most one chunk (``SmtpProvider.chunk_size``) per killed process,
because results reach the ledger after every chunk and a batch being sent again skips
every recipient already ``sent``. Nobody is lost: the batch comes back (Celery rejects a
task whose pool process died back onto the queue at once; a dead machine's tasks come back
after the broker's visibility timeout) and its lock, no longer renewed, lapses after
``BULKMAIL_BATCH_LOCK_TTL`` seconds.

The relay holds each DATA reply 5 ms (``ScriptedSMTP(data_delay=...)``), so 2,000
recipients in batches of 200 take long enough that batches are in flight when the kill
lands. Which batches were in flight is read from their locks right after the kill: a lock
held by a dead process stays until its TTL runs out, so it names the batch exactly.

The broker is a Redis database of its own: the replacement worker of the second test
sweeps unacknowledged messages after a few seconds (see ``_REPLACEMENT``), and kombu's
``unacked`` hash is shared by every queue of a database, so on the shared database it
would redeliver other tests' batches too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from config.providers import SmtpConfig
from config.schema import Keys, State
from tests.integration.conftest import ROOT, wait_until, worker_processes
from tests.smtp_script import ScriptedSMTP
from workers.ledger import Ledger
from workers.providers.smtp import SmtpProvider

pytestmark = pytest.mark.integration

ROWS = 2000
BATCH = 200
POOL_SIZE = 4
LOCK_TTL = 3
#: the pool-process test's lock TTL: longer than Celery takes to notice the dead process
POOL_KILL_LOCK_TTL = 10
#: database of the broker in these tests (see the module docstring)
BROKER_DB = 11
#: ``bulkmail worker`` with a broker visibility timeout of VISIBILITY seconds and a sweep
#: for unacknowledged messages every second. Settings refuse a visibility timeout under
#: 60 s (and kombu sweeps every 100 s by default), which would make the whole-worker test
#: wait over a minute; the recovery path is the same one production takes after 3600 s.
VISIBILITY = 6
_REPLACEMENT = f"""
import sys
from celery.signals import celeryd_init

@celeryd_init.connect
def _fast_sweep(conf, **_):
    # the app is built by the CLI (create_app); change its options before it connects
    conf.broker_transport_options = {{
        **conf.broker_transport_options, "visibility_timeout": {VISIBILITY},
        "unacked_restore_interval": 1, "unacked_restore_throttle": 1}}

from producers.cli import main
sys.argv = ["bulkmail", "worker", *sys.argv[1:]]
main()
"""


def _chunk_size() -> int:
    cfg = SmtpConfig(kind="smtp", host="127.0.0.1", port=25, tls="none", pool_size=POOL_SIZE)
    return SmtpProvider("x", cfg).chunk_size


@pytest.fixture
def server() -> Iterator[ScriptedSMTP]:
    with ScriptedSMTP(data_delay=0.005) as srv:
        yield srv


@pytest.fixture
def broker(redis_url: str, provider_name: str) -> Iterator[str]:
    parts = urlsplit(redis_url)
    url = urlunsplit(parts._replace(path=f"/{BROKER_DB}"))
    yield url
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"*{provider_name}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def env(bulkmail_env: Callable[[str], dict[str, str]], provider_name: str,
        server: ScriptedSMTP, broker: str) -> dict[str, str]:
    base = bulkmail_env(
        f'[providers.{provider_name}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
        f'port = {server.port}\ntls = "none"\npool_size = {POOL_SIZE}\ntimeout = 10\n')
    return {**base, "BULKMAIL_BATCH_LOCK_TTL": str(LOCK_TTL), "BULKMAIL_BROKER_URL": broker}


@pytest.fixture
def replacement_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    yield from worker_processes(tmp_path, ["-c", _REPLACEMENT], "replacement")


def _pool_children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                kids += [int(x) for x in Path(f"/proc/{pid}/task/{task}/children")
                         .read_text().split()]
    return kids


class Campaign:
    """A 2,000-recipient campaign, its ledger and its batch locks."""

    def __init__(self, tmp_path: Path, provider: str, env: dict[str, str],
                 client: redis.Redis[bytes], keys: Keys) -> None:
        self.cid = f"crash-{uuid.uuid4().hex[:6]}"
        self.env = env
        self.client = client
        self.keys = keys
        self.ledger = Ledger(client, keys)
        self.addresses = [f"u{i}@example.test" for i in range(ROWS)]
        self.recipients = tmp_path / "list.csv"
        self.recipients.write_text("email,n\n" + "".join(f"{a},{i}\n" for i, a in
                                                         enumerate(self.addresses)))
        self.file = tmp_path / "campaign.toml"
        self.file.write_text(f'id = "{self.cid}"\nprovider = "{provider}"\n'
                             'from = "Shop <news@shop.test>"\nsubject = "Hi {{ n }}"\n'
                             f'text = "Hello {{{{ n }}}}"\nbatch_size = {BATCH}\n')

    def send(self) -> subprocess.Popen[str]:
        """``bulkmail send`` in the background: batches go out while it still enqueues."""
        return subprocess.Popen(
            [sys.executable, "-m", "producers", "send", str(self.file), "--recipients",
             str(self.recipients), "--json"], env=self.env, cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def sent_ok(self, proc: subprocess.Popen[str]) -> None:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err

    def counts(self) -> dict[str, int]:
        st = self.ledger.status(self.cid)
        return dict(st.counts) if st else {}

    def done(self) -> bool:
        st = self.ledger.status(self.cid)
        return st is not None and st.done

    def lock_holders(self) -> dict[int, int]:
        """batch -> pid of the process holding its lock (worker id is ``host:pid``)."""
        holders = {}
        for b in range(ROWS // BATCH):
            value = self.client.get(self.keys.batch_lock(self.cid, b))
            if value is not None:
                holders[b] = int(value.decode().rpartition(":")[2])
        return holders

    def batch_of(self, address: str) -> int:
        return self.addresses.index(address) // BATCH


def _check_outcome(campaign: Campaign, server: ScriptedSMTP, in_flight: dict[int, int],
                   killed: int, label: str) -> None:
    st = campaign.ledger.status(campaign.cid)
    assert st is not None and st.done
    assert st.total == ROWS and st.accounted == ROWS
    assert st.counts["sent"] == ROWS, st.counts
    assert all(e.state is State.SENT for e in campaign.ledger.entries(campaign.cid))

    accepted: Counter[str] = Counter(server.accepted)
    assert set(accepted) == set(campaign.addresses)  # nobody lost, nobody unexpected
    dupes = {a: n - 1 for a, n in accepted.items() if n > 1}
    chunk = _chunk_size()
    print(f"\n{label}: killed {killed} sending process(es) with batches {sorted(in_flight)} "
          f"in flight; {sum(dupes.values())} duplicate message(s) "
          f"(bound: {killed} x chunk_size {chunk} = {killed * chunk})")
    # at most the chunk each killed process had on the wire, once each
    assert all(n == 1 for n in dupes.values()), dupes
    assert sum(dupes.values()) <= chunk * killed
    # ... and only from the batches that were being sent when the kill landed
    assert {campaign.batch_of(a) for a in dupes} <= set(in_flight)
    per_batch = Counter(campaign.batch_of(a) for a in dupes)
    assert all(n <= chunk for n in per_batch.values()), per_batch


def test_sigkill_of_a_pool_process_duplicates_at_most_one_chunk(
        tmp_path: Path, server: ScriptedSMTP, provider_name: str, env: dict[str, str],
        start_worker: Callable[..., subprocess.Popen[bytes]], redis_client: redis.Redis[bytes],
        keys: Keys) -> None:
    # Celery notices a dead pool process within ~5 s (billiard's maintenance timer) and
    # puts its task back at once. A lock TTL well above that makes the task come back
    # while the dead process's lock is still there: the path where the batch waits on the
    # retry queue for the lock to lapse. (The whole-worker test below takes the other
    # path: the lock has lapsed when the batch comes back.)
    env = {**env, "BULKMAIL_BATCH_LOCK_TTL": str(POOL_KILL_LOCK_TTL)}
    worker = start_worker(provider_name, env, concurrency=2)
    assert wait_until(lambda: len(_pool_children(worker.pid)) == 2, timeout=30)
    campaign = Campaign(tmp_path, provider_name, env, redis_client, keys)
    sender = campaign.send()

    # kill a pool process while it holds a batch lock, i.e. in the middle of a batch
    assert wait_until(lambda: campaign.counts().get("sent", 0) >= 300, timeout=30)
    children = set(_pool_children(worker.pid))
    victim: int | None = None

    def sending() -> bool:
        nonlocal victim
        busy = [pid for pid in campaign.lock_holders().values() if pid in children]
        victim = busy[0] if busy else None
        return victim is not None

    assert wait_until(sending, timeout=10, every=0.01)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    in_flight = {b: pid for b, pid in campaign.lock_holders().items() if pid == victim}
    lock_lapses_at = {b: killed_at + redis_client.pttl(keys.batch_lock(campaign.cid, b)) / 1000
                      for b in in_flight}
    assert campaign.counts()["sent"] < ROWS, "the campaign ended before the kill"

    # Celery rejects the lost task back onto the queue; the lock lapses in LOCK_TTL s
    assert wait_until(campaign.done, timeout=60), campaign.counts()
    campaign.sent_ok(sender)
    assert worker.poll() is None  # the worker lives on with a new pool process
    # Celery saw the pool process die (and, reject_on_worker_lost, put its task back)
    log = (tmp_path / "worker-0.log").read_text(errors="replace")
    lost = [line for line in log.splitlines()
            if f"pid:{victim} exited with 'signal 9 (SIGKILL)'" in line]
    assert lost, log[-2000:]
    noticed = datetime.strptime(lost[0][1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    print(f"\nthe worker noticed the dead pool process {noticed - killed_at:.1f}s after the "
          f"kill; its batch lock lapsed after "
          f"{', '.join(f'{t - killed_at:.1f}s' for t in lock_lapses_at.values()) or '-'}")
    for b, lapses_at in lock_lapses_at.items():
        if noticed < lapses_at - 0.5:  # the task came back while the lock was still held
            waited = f"campaign={campaign.cid} batch={b} skipped: another worker holds"
            assert waited in log, log[-3000:]
    _check_outcome(campaign, server, in_flight, killed=len(in_flight) or 1,
                   label="pool process SIGKILL")


def test_sigkill_of_the_whole_worker_then_a_new_one(
        tmp_path: Path, server: ScriptedSMTP, provider_name: str, env: dict[str, str],
        start_worker: Callable[..., subprocess.Popen[bytes]],
        replacement_worker: Callable[..., subprocess.Popen[bytes]],
        redis_client: redis.Redis[bytes], keys: Keys) -> None:
    worker = start_worker(provider_name, env, concurrency=2)
    assert wait_until(lambda: len(_pool_children(worker.pid)) == 2, timeout=30)
    campaign = Campaign(tmp_path, provider_name, env, redis_client, keys)
    sender = campaign.send()

    assert wait_until(lambda: campaign.counts().get("sent", 0) >= 300, timeout=30)
    pids = {worker.pid, *_pool_children(worker.pid)}
    os.killpg(worker.pid, signal.SIGKILL)  # main process and pool: the machine is gone
    worker.wait(10)
    in_flight = {b: pid for b, pid in campaign.lock_holders().items() if pid in pids}
    sent_at_kill = campaign.counts()["sent"]
    assert sent_at_kill < ROWS, "the campaign ended before the kill"
    assert wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), timeout=10)
    # nothing moves while no worker runs: the stranded batches wait in the broker
    assert campaign.counts()["sent"] == sent_at_kill

    replacement_worker(provider_name, env)
    assert wait_until(campaign.done, timeout=60), campaign.counts()
    campaign.sent_ok(sender)
    _check_outcome(campaign, server, in_flight, killed=max(len(in_flight), 1),
                   label="whole worker SIGKILL")
