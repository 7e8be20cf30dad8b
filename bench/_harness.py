"""Shared pieces of the benchmarks in ``bench/``: the machine, the sink, the process tree.

Not a benchmark itself. Everything here measures from the outside (``/proc``, Redis
``INFO``, ``getrusage``) so the product code runs exactly as it does in production.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import redis

from producers.capture import free_port

__all__ = [
    "BENCH_DIR",
    "CAMPAIGN_TOML",
    "CampaignFiles",
    "Sink",
    "TreeSample",
    "children",
    "delete_keys",
    "fmt_int",
    "free_port",
    "keys_memory",
    "machine_busy",
    "machine_lines",
    "print_table",
    "proc_cpu",
    "raise_on_signals",
    "redis_cpu",
    "run_main",
    "sample_tree",
    "start_run",
    "stop_process",
    "verdict",
    "vm_kb",
    "wait_for_port",
    "wait_until_quiet",
    "write_campaign",
    "write_recipients",
]

BENCH_DIR = Path(__file__).resolve().parent
_TICK = os.sysconf("SC_CLK_TCK")

#: ~1 KB once rendered: a multipart/alternative message, text + html, four variables.
CAMPAIGN_TOML = '''\
provider = "{provider}"
from = "Spring Shop <news@shop.test>"
reply_to = "help@shop.test"
subject = "Hello {{{{ first_name }}}}, your order #{{{{ order }}}} has shipped"
batch_size = {batch_size}
text = """Hi {{{{ first_name }}}},

Good news: order #{{{{ order }}}} left our warehouse today and is on its way to
{{{{ city }}}}. You can follow it from your account page at any time.

If anything is wrong with the order, just reply to this message.

-- the Spring Shop team
"""
html = """<html><body>
<p>Hi <b>{{{{ first_name }}}}</b>,</p>
<p>Good news: order <b>#{{{{ order }}}}</b> left our warehouse today and is on its way
to {{{{ city }}}}. You can follow it from <a href="https://shop.test/account">your
account page</a> at any time.</p>
<p>If anything is wrong with the order, just reply to this message.</p>
<p>-- the Spring Shop team</p>
</body></html>
"""
[headers]
X-Campaign = "spring-bench"
'''

_NAMES = ["Ada", "Grace", "Linus", "Zoë", "Björk", "José", "Aiko", "Olena", "Marie", "Alan"]
_CITIES = ["Lisbon", "Oslo", "Kraków", "Lyon", "Turin", "Ghent", "Porto", "Tartu"]


# -- the machine ----------------------------------------------------------------------------

def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def versions(*dists: str) -> str:
    """``name version`` of each installed distribution, for the report header."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for d in dists:
        try:
            out.append(f"{d} {version(d)}")
        except PackageNotFoundError:
            out.append(f"{d} (not installed)")
    return ", ".join(out)


def machine_lines(client: redis.Redis[bytes] | None) -> list[tuple[str, str]]:
    """What the figures were measured on, for the top of every benchmark's output."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    redis_version = "unreachable"
    if client is not None:
        with contextlib.suppress(redis.RedisError):
            redis_version = str(client.info("server").get("redis_version", "?"))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        ("platform", platform.platform()),
        ("cpu", f"{_cpu_model()}, {cores} cores ({usable} usable)"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("redis", f"server {redis_version}"),
        ("libraries", versions("celery", "kombu", "redis", "aiosmtplib", "uvloop")),
        ("load average", f"{load} (1/5/15 min, at start; other work on the box skews figures)"),
    ]


# -- processes ------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                kids += [int(x) for x in text.split()]
    return kids


def _tree(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children(pid)
    return out


def proc_cpu(pid: int, *, with_reaped: bool = True) -> float:
    """CPU seconds (user + system) of ``pid``, plus its reaped children's by default."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # the command name (field 2) may hold spaces; the fields after ')' are fixed
    fields = raw.rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + ((cutime + cstime) if with_reaped else 0)) / _TICK


def vm_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (``VmHWM``, ``VmRSS``) in kB; 0 if gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


@dataclass(frozen=True, slots=True)
class TreeSample:
    """CPU and memory of a process tree at one moment."""

    cpu: float  # seconds, live processes plus the children they reaped
    root_cpu: float  # the worker's main process alone (Celery's consumer, the pump)
    root_hwm_kb: int  # the worker's main process
    child_hwm_kb: dict[int, int]  # pool processes (direct children of the root)


def sample_tree(root: int) -> TreeSample:
    """Sample ``root`` and all its descendants from ``/proc``."""
    cpu = sum(proc_cpu(p) for p in _tree(root))
    return TreeSample(cpu, proc_cpu(root, with_reaped=False), vm_kb(root, "VmHWM"),
                      {p: vm_kb(p, "VmHWM") for p in children(root)})


def machine_busy() -> float:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``, not idle/iowait)."""
    with contextlib.suppress(OSError):
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
        return (sum(ticks) - ticks[3] - ticks[4]) / _TICK
    return 0.0


def wait_until_quiet(max_wait: float, *, busy_share: float = 0.15, window: float = 1.0) -> str:
    """Wait (at most ``max_wait`` s) until the machine is mostly idle for ``window`` s.

    Other work on a 2-core box halves a throughput figure. Returns "" when quiet, else a
    note saying how busy the machine still was.
    """
    cores = len(os.sched_getaffinity(0))
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy()
        time.sleep(window)
        share = (machine_busy() - before) / (window * cores)
        if share <= busy_share:
            return ""
        if time.monotonic() >= deadline:
            return (f"the machine was {share:.0%} busy with other work when this run started "
                    f"(waited {max_wait:.0f}s for it to calm down)")


def raise_on_signals() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks clean up as on Ctrl-C."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout}s")
        time.sleep(0.05)


def start_listening(cmd: list[str], port: int, **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` and wait until something listens on ``port``; stop it if that fails."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, **popen)
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL; only this one process (it was started by us)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


# -- a campaign and its worker -------------------------------------------------------------

class Prepared(NamedTuple):
    """What the producer side of a run needs, from :func:`prepare_campaign`."""

    env: dict[str, str]  # for the worker processes
    settings: Any
    spec: Any
    ledger: Any
    queue: str


def prepare_campaign(client: redis.Redis[bytes], url: str, providers: Path, campaign: Path,
                     provider: str, prefix: str) -> Prepared:
    """Point this process's settings (and the workers' environment) at ``url``, the
    ``providers`` file and a fresh key ``prefix``, and load ``campaign``."""
    names = {"BULKMAIL_REDIS_URL": url, "BULKMAIL_PROVIDERS": str(providers),
             "BULKMAIL_KEY_PREFIX": prefix}
    os.environ.update(names)  # the producer side reads the same settings
    env = {**os.environ, **names}
    from config.schema import queue_name
    from config.settings import Settings
    from producers.campaign import load_campaign
    from workers.ledger import Ledger

    settings = Settings()
    spec, _ = load_campaign(campaign, settings.load_providers(),
                            default_batch_size=settings.batch_size)
    return Prepared(env, settings, spec, Ledger(client, settings.keys), queue_name(provider))


def wait_progress(progress: Callable[[], tuple[int, bool]], what: str, *, stall: float,
                  of: int | None = None, every: float = 0.02) -> None:
    """Poll until ``progress()`` (a count, and whether it is done) says done; fail when the
    count has not moved for ``stall`` seconds (``of``: the target, for the message)."""
    last, last_change = -1, time.monotonic()
    while True:
        count, done = progress()
        if done:
            return
        now = time.monotonic()
        if count != last:
            last, last_change = count, now
        elif now - last_change > stall:
            at = f"{count}/{of}" if of is not None else f"{count}"
            raise RuntimeError(f"{what}: stuck at {at} for {stall:.0f}s")
        time.sleep(every)


def logged_ready(log: Path) -> Callable[[], bool]:
    """Whether the worker has logged ' ready.' (it does at INFO)."""
    return lambda: log.exists() and " ready." in log.read_text(errors="replace")


def wait_worker_ready(proc: subprocess.Popen[bytes], log: Path, pools: int,
                      ready: Callable[[], bool] | None = None, timeout: float = 60) -> None:
    """Until the worker's ``pools`` pool processes exist and ``ready()`` says so (by
    default: :func:`logged_ready`)."""
    ready = ready or logged_ready(log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}; see {log}")
        if len(children(proc.pid)) >= pools and ready():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker not ready after {timeout:.0f}s; see {log}")
        time.sleep(0.1)


def add_run_options(p: argparse.ArgumentParser, *, log_dir: Path, wait_idle: float) -> None:
    """``--log-dir`` and ``--wait-idle``, as the benchmarks that start workers take them."""
    p.add_argument("--log-dir", type=Path, default=log_dir,
                   help="where the worker logs go (overwritten each run)")
    p.add_argument("--wait-idle", type=float, default=wait_idle, metavar="SECONDS",
                   help="before each run, wait up to this long for the machine to be idle "
                        f"(0: do not wait; default {wait_idle:g})")


# -- the SMTP sink --------------------------------------------------------------------------

class Sink:
    """A fast local SMTP server that discards mail: Postfix ``smtp-sink`` when installed,
    else ``bench/sink.py`` (uvloop). ``with Sink() as sink: sink.port, sink.cpu()``.
    """

    def __init__(self, *, prefer_postfix: bool = True) -> None:
        self.port = free_port()
        self.binary = shutil.which("smtp-sink") or (
            "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)
        if not prefer_postfix:
            self.binary = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"Postfix smtp-sink ({self.binary})" if self.binary else "bench/sink.py (uvloop)"

    def __enter__(self) -> Sink:
        if self.binary:
            # -u: smtp-sink refuses to run as root without dropping privileges.
            # backlog 1000: the naive run opens a connection per message.
            cmd = [self.binary]
            if os.geteuid() == 0:
                cmd += ["-u", "nobody"]
            cmd += [f"127.0.0.1:{self.port}", "1000"]
        else:
            cmd = [sys.executable, str(BENCH_DIR / "sink.py"), str(self.port)]
        self.proc = start_listening(cmd, self.port, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        return self

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid) if self.proc else 0.0

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# -- Redis ----------------------------------------------------------------------------------

def redis_cpu(client: redis.Redis[bytes]) -> float:
    """CPU seconds the Redis server has used (all clients: a shared server skews this)."""
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def keys_memory(client: redis.Redis[bytes], prefix: str, extra: Sequence[str] = ()) -> int:
    """Bytes Redis uses for every ``prefix:*`` key and the ``extra`` keys (MEMORY USAGE).

    Exact for our keys even on a Redis other people use, unlike ``INFO memory``.
    """
    total = 0
    keys: list[bytes | str] = [*client.scan_iter(match=f"{prefix}:*", count=5000), *extra]
    for i in range(0, len(keys), 1000):
        pipe = client.pipeline(transaction=False)
        for key in keys[i:i + 1000]:
            pipe.memory_usage(key, samples=0)
        total += sum(int(x or 0) for x in pipe.execute())
    return total


def queue_keys(queue: str) -> list[str]:
    """A Celery queue's list and its kombu binding sets (for :func:`delete_keys`)."""
    return [queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]


def delete_keys(client: redis.Redis[bytes], prefix: str, extra: Sequence[str] = ()) -> int:
    """Delete every ``prefix:*`` key and the ``extra`` keys; returns how many."""
    deleted = 0
    batch: list[bytes | str] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += int(client.unlink(*batch))
            batch = []
    batch += list(extra)
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


# -- input files ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CampaignFiles:
    providers: Path
    campaign: Path
    recipients: Path


def write_recipients(path: Path, rows: int) -> Path:
    """A CSV of ``rows`` distinct valid recipients with three template variables."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["email", "first_name", "order", "city"])
        w.writerows([f"user{i}@example.test", _NAMES[i % 10], 100000 + i, _CITIES[i % 8]]
                    for i in range(rows))
    return path


def write_campaign(folder: Path, provider: str, sink_port: int, rows: int, *,
                   pool_size: int = 8, batch_size: int = 500) -> CampaignFiles:
    """The providers file, the campaign file and the recipient CSV of a bench run."""
    providers = folder / "providers.toml"
    providers.write_text(
        f'[providers.{provider}]\nkind = "smtp"\nhost = "127.0.0.1"\nport = {sink_port}\n'
        f'tls = "none"\npool_size = {pool_size}\n')
    campaign = folder / "campaign.toml"
    campaign.write_text(CAMPAIGN_TOML.format(provider=provider, batch_size=batch_size))
    recipients = write_recipients(folder / "recipients.csv", rows)
    return CampaignFiles(providers, campaign, recipients)


# -- output ---------------------------------------------------------------------------------

def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], *,
                left: bool = False) -> None:
    """A plain aligned table: first column left, the others right (or all left)."""
    table = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for n, r in enumerate(table):
        cells = [r[0].ljust(widths[0])] + [c.ljust(w) if left else c.rjust(w)
                                           for c, w in zip(r[1:], widths[1:], strict=True)]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def run_main(main: Callable[[], int]) -> None:
    """Run a benchmark's ``main`` and exit with its code; Ctrl-C exits with 130 after the
    script's own ``finally`` blocks have stopped its processes and deleted its keys."""
    try:
        code = main()
    except KeyboardInterrupt:
        print("\ninterrupted: processes stopped and keys deleted", file=sys.stderr)
        code = 130
    sys.exit(code)


def start_run(args: Any, name: str) -> tuple[set[str], Path]:
    """Common start of a benchmark's ``main``: signals unwind through ``finally``, the log
    folder exists, and a scratch folder is made (the caller deletes it). Returns the
    ``--only`` selection and the scratch folder."""
    raise_on_signals()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    only = {s.strip() for s in str(getattr(args, "only", "")).split(",") if s.strip()}
    return only, Path(tempfile.mkdtemp(prefix=f"bulkmail-bench-{name}-"))
