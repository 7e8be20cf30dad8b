"""End-to-end throughput of bulkmail over the HTTP API providers, with a one-request-per-
message baseline side by side, in one run.

    .venv/bin/python bench/e2e_http.py                          # every kind, 100k each
    .venv/bin/python bench/e2e_http.py --messages 20000 --kinds sendgrid,http
    .venv/bin/python bench/e2e_http.py --profile /tmp/prof      # py-spy the workers too
    .venv/bin/python bench/e2e_http.py --server-mode fakes      # the tests/fakes handlers

What runs (same machine, same Redis, same ~1 KB campaign as ``bench/e2e_smtp.py``):

* one fake provider server (``bench/http_fakeserver.py``, its own process, HTTP/1.1
  keep-alive on 127.0.0.1) standing for every kind, each on its own path; it counts the
  calls and messages it accepts;
* per kind, a real campaign enqueued with the product's ``enqueue_campaign`` from a CSV
  while one ``bulkmail worker -c 2`` (two prefork pool processes, the product's
  ``start_workers``) sends it: render, plan the API calls, send them over the provider's
  kept-alive ``httpx.AsyncClient`` (``concurrency`` 4 per process, the default), record
  every recipient in the ledger. The provider's ``base_url`` points at the fake server and
  its key comes from an environment variable, as in production;
* the baseline: the generic ``http`` kind with ``http_batch_size = 1`` (one request per
  message, the same tasks of 500, the same 4 requests in flight per process) on a smaller
  campaign; ``--baseline-kinds`` adds other kinds forced to one message per request the
  only way their config allows, a campaign ``batch_size`` of 1 (so also one Celery task
  per message). SES is one call per message by API design (SendEmail; SendBulkEmail only
  takes stored templates), so its row is a per-message figure too.

Timed from the first enqueue call to the ledger saying the campaign is done. ``HTTP
calls`` and ``msg/call`` come from the fake server's counters. ``CPU s / 1k msgs`` is
utime + stime from ``/proc`` of the worker process tree (sampled once the workers are idle
and ready, and again when the campaign is done), and of Redis, the fake server and this
process (enqueuing and polling). ``peak RSS`` is the largest ``VmHWM`` of the pool
processes. Every key a run writes (fresh ``BULKMAIL_KEY_PREFIX``, fresh provider queue) is
deleted afterwards and every process started here is stopped, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from _harness import (
    BENCH_DIR,
    CAMPAIGN_TOML,
    add_run_options,
    delete_keys,
    fmt_int,
    free_port,
    machine_busy,
    machine_lines,
    prepare_campaign,
    print_table,
    proc_cpu,
    queue_keys,
    raise_on_signals,
    redis_cpu,
    run_main,
    sample_tree,
    start_listening,
    stop_process,
    verdict,
    versions,
    wait_progress,
    wait_until_quiet,
    wait_worker_ready,
    write_recipients,
)
from http_fakeserver import ENV_DEFAULTS

__all__ = ["main"]

TARGET_MSG_S = 8000
BATCHING_KINDS = ("sendgrid", "mailgun", "postmark", "resend", "http")
ALL_KINDS = (*BATCHING_KINDS, "ses")
WORKER_CONCURRENCY = 2
STALL_TIMEOUT = 60.0  # seconds without progress before a run is declared stuck


@dataclass(slots=True)
class Run:
    """One campaign through one provider configuration."""

    label: str
    kind: str
    messages: int
    design: str
    baseline: bool = False
    seconds: float = 0.0
    enqueue_seconds: float = 0.0
    calls: int = 0
    accepted: int = 0  # messages the fake server accepted
    server_errors: int = 0
    worker_cpu: float = 0.0
    redis_cpu: float = 0.0
    server_cpu: float = 0.0
    self_cpu: float = 0.0
    machine_cpu: float = 0.0
    rss_kb: int = 0
    main_rss_kb: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    profile: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.seconds > 0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def per_1k(self, cpu: float) -> str:
        return f"{cpu / self.messages * 1000:.3f}" if self.ok and self.messages else "-"


# -- the fake provider server -----------------------------------------------------------------

class FakeProviders:
    """``bench/http_fakeserver.py`` in a child process; ``stats()`` reads its counters."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeProviders:
        self.proc = start_listening(
            [sys.executable, str(BENCH_DIR / "http_fakeserver.py"), "--port", str(self.port),
             "--mode", self.mode], self.port, stdout=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def stats(self, kind: str) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=5) as resp:
            data = json.load(resp)
        return dict(data["kinds"][kind])

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid) if self.proc else 0.0


def _secrets_env() -> dict[str, str]:
    """Fresh credentials for this run: the fake server expects them, the providers file
    names the variables (``api_key_env``), the workers read them from their environment."""
    env = dict(ENV_DEFAULTS)
    for name in ("FAKE_SENDGRID_KEY", "FAKE_MAILGUN_KEY", "FAKE_POSTMARK_TOKEN",
                 "FAKE_RESEND_KEY", "FAKE_SES_SECRET", "FAKE_HTTP_KEY"):
        env[name] = f"{ENV_DEFAULTS[name]}-{secrets.token_hex(8)}"
    return env


def providers_toml(name: str, kind: str, base_url: str, *, http_batch_size: int = 100) -> str:
    """The ``[providers.NAME]`` table of ``kind`` pointing at the fake server."""
    head = f'[providers.{name}]\nkind = "{kind}"\n'
    if kind == "http":
        return (head + f'url = "{base_url}/send"\napi_key_env = "FAKE_HTTP_KEY"\n'
                f"http_batch_size = {http_batch_size}\n")
    head += f'base_url = "{base_url}"\n'
    if kind == "ses":
        return (head + 'region = "us-east-1"\naccess_key_id_env = "FAKE_SES_KEY_ID"\n'
                'secret_access_key_env = "FAKE_SES_SECRET"\n')
    key_env = {"sendgrid": "FAKE_SENDGRID_KEY", "mailgun": "FAKE_MAILGUN_KEY",
               "postmark": "FAKE_POSTMARK_TOKEN", "resend": "FAKE_RESEND_KEY"}[kind]
    head += f'api_key_env = "{key_env}"\n'
    if kind == "mailgun":
        head += f'domain = "{os.environ["FAKE_MAILGUN_DOMAIN"]}"\n'
    return head


# -- profiling ----------------------------------------------------------------------------------

#: Where a sampled stack's time goes: the first category (in this order of priority)
#: with a matching frame anywhere in the stack. Frames read "function (file:line)".
CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("render (jinja2 templates)", re.compile(r"workers/templates\.py|jinja2/|<template>")),
    ("address parsing (email.utils.parseaddr)", re.compile(r"email/_parseaddr|email/utils")),
    ("JSON encode", re.compile(r"json/encoder|\(json_bytes |dumps \(json/")),
    ("JSON decode", re.compile(r"json/decoder|loads \(json/")),
    ("SigV4 signing (botocore)", re.compile(r"botocore/")),
    ("logging", re.compile(r"logging/")),
    ("httpcore: failed 'import sniffio' per call",
     re.compile(r"current_async_library \(httpcore/")),
    ("httpx / httpcore / h11 / anyio", re.compile(r"httpx/|httpcore/|h11/|anyio/")),
    ("redis client (ledger, locks, suppression I/O)", re.compile(r"redis/")),
    ("ledger, outcomes (ours, pure Python)", re.compile(
        r"workers/(ledger|outcomes|suppression|redis_ops|retry|ratelimit|deadletter)")),
    ("provider plan (ours, excl. JSON)", re.compile(r"workers/providers/")),
    ("bulkmail delivery, other", re.compile(r"workers/delivery")),
    ("Celery / kombu / billiard (pool process)", re.compile(r"celery/|kombu/|billiard/|vine/")),
]


def _category(stack: str) -> str:
    frames = [f.strip() for f in stack.split(";")]
    if sum(1 for f in frames if f.startswith("process ")) < 2:
        return "worker main process (Celery consumer, broker I/O)"
    if frames[-1].startswith("Runtime.run (workers/runtime"):
        return "uvloop (C: socket I/O, callbacks)"
    for name, pattern in CATEGORIES:
        if any(pattern.search(f) for f in frames):
            return name
    return "other"


def summarize_profile(path: Path, top: int = 12) -> list[str]:
    """Share of on-CPU samples per category and the hottest leaf frames."""
    by_cat: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        by_cat[_category(stack)] += n
        by_leaf[stack.split(";")[-1].strip()] += n
    if not total:
        return ["(no samples)"]
    out = [f"{total} samples (worker tree, on-CPU only)"]
    out += [f"  {share / total:6.1%}  {name}" for name, share in by_cat.most_common()]
    out.append("  hottest leaf frames:")
    out += [f"  {n / total:6.1%}  {leaf}" for leaf, n in by_leaf.most_common(top)]
    return out


@contextlib.contextmanager
def profiling(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy the worker tree (``--subprocesses``) while the block runs."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--subprocesses", "--rate",
                             "200", "--format", "raw", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # attached before the timed part starts
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                stop_process(proc)


# -- one campaign -------------------------------------------------------------------------------

def _wait(progress: Callable[[], tuple[int, bool]], what: str, every: float = 0.02) -> None:
    """Poll until ``progress()`` says done; fail when its count stalls."""
    wait_progress(progress, what, stall=STALL_TIMEOUT, every=every)


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, node: str, loglevel: str,
                timeout: float = 60) -> None:
    """Until the pool processes exist and the worker consumes ('ready.' is logged at INFO;
    at other levels a remote-control ping answers)."""
    from workers.app import app

    def ready() -> bool:
        if loglevel.upper() in ("INFO", "DEBUG"):
            return log.exists() and " ready." in log.read_text(errors="replace")
        return bool(app.control.ping(destination=[node], timeout=0.5))

    wait_worker_ready(proc, log, WORKER_CONCURRENCY, ready, timeout)


@dataclass(slots=True)
class Bench:
    """What every run shares."""

    client: redis.Redis
    url: str
    server: FakeProviders
    workdir: Path
    log_dir: Path
    profile_dir: Path | None
    loglevel: str
    recipients: dict[int, Path] = field(default_factory=dict)

    def recipient_file(self, n: int) -> Path:
        if n not in self.recipients:
            self.recipients[n] = write_recipients(self.workdir / f"recipients-{n}.csv", n)
        return self.recipients[n]


def run_campaign(b: Bench, run: Run, *, batch_size: int, http_batch_size: int = 100) -> Run:
    from producers.demo import start_workers, stop_workers

    tag = uuid.uuid4().hex[:8]
    provider = f"bh{run.kind}{tag}"
    prefix = f"bulkmail-bench-http-{tag}"
    folder = b.workdir / provider
    folder.mkdir()
    providers = folder / "providers.toml"
    providers.write_text(providers_toml(provider, run.kind, b.server.url,
                                        http_batch_size=http_batch_size))
    campaign = folder / "campaign.toml"
    campaign.write_text(CAMPAIGN_TOML.format(provider=provider, batch_size=batch_size))
    env, settings, spec, ledger, queue = prepare_campaign(
        b.client, b.url, providers, campaign, provider, prefix)
    from producers.enqueue import enqueue_campaign
    from workers.app import app

    log = b.log_dir / f"{run.label.split()[0]}{'-baseline' if run.baseline else ''}-worker.log"
    log.unlink(missing_ok=True)
    rows = b.recipient_file(run.messages)
    profile = (b.profile_dir / f"{log.stem}.txt") if b.profile_dir else None
    try:
        node = f"bench-http-{os.getpid()}-{tag}@{socket.gethostname()}"
        proc = start_workers(provider, concurrency=WORKER_CONCURRENCY, env=env, log=log,
                             loglevel=b.loglevel, name=node)
        try:
            _wait_ready(proc, log, node, b.loglevel)
            with profiling(proc.pid, profile):
                stats0, tree0 = b.server.stats(run.kind), sample_tree(proc.pid)
                redis0, server0 = redis_cpu(b.client), b.server.cpu()
                self0, machine0 = time.process_time(), machine_busy()
                started = time.perf_counter()
                result = enqueue_campaign(settings, app, b.client, spec, rows)
                run.enqueue_seconds = result.seconds

                def progress() -> tuple[int, bool]:
                    st = ledger.status(spec.id)
                    if st is None:
                        return 0, False
                    return st.accounted - st.counts["queued"], st.done

                _wait(progress, f"{run.label} campaign")
                run.seconds = time.perf_counter() - started
                tree1 = sample_tree(proc.pid)
                run.worker_cpu = tree1.cpu - tree0.cpu
                run.redis_cpu = redis_cpu(b.client) - redis0
                run.server_cpu = b.server.cpu() - server0
                run.self_cpu = time.process_time() - self0
                run.machine_cpu = machine_busy() - machine0
                run.rss_kb = max(tree1.child_hwm_kb.values(), default=0)
                run.main_rss_kb = tree1.root_hwm_kb
                stats1 = b.server.stats(run.kind)
        finally:
            stop_workers(proc)
        run.calls = stats1["requests"] - stats0["requests"]
        run.accepted = stats1["messages"] - stats0["messages"]
        run.server_errors = stats1["errors"] - stats0["errors"]
        status = ledger.status(spec.id)
        run.counts = dict(status.counts) if status else {}
        if run.counts.get("sent") != run.messages:
            run.notes.append(f"{run.label}: {run.counts.get('sent')} of {run.messages} sent: "
                             f"{run.counts} (see {log})")
        if run.accepted != run.messages or run.server_errors:
            run.notes.append(f"{run.label}: the fake server accepted {run.accepted} messages "
                             f"and answered {run.server_errors} calls with an error")
        if profile is not None and profile.exists():
            run.profile = "\n".join(summarize_profile(profile))
    except RuntimeError as exc:
        run.seconds = 0.0
        run.notes.append(f"{run.label}: {exc}")
    finally:
        delete_keys(b.client, prefix, queue_keys(queue))
        _forget_unacked(b.client, queue)
    return run


def _forget_unacked(client: redis.Redis, queue: str) -> None:
    """Drop kombu's records of our tasks still unacknowledged (a run cut short): left
    there, the next worker on this Redis would restore them onto our deleted queue."""
    ours = [k for k, v in client.hscan_iter("unacked") if queue.encode() in v]
    if ours:
        client.hdel("unacked", *ours)
        client.zrem("unacked_index", *ours)


# -- output ---------------------------------------------------------------------------------------

def _mb(kb: int) -> str:
    return f"{kb / 1024:.1f}" if kb else "-"


def report(runs: list[Run], cores: int) -> None:
    print()
    for r in runs:
        print(f"  {r.label:<22} {r.design}")
    print()

    def row(name: str, fn: Callable[[Run], str]) -> list[str]:
        return [name, *(fn(r) if r.ok else "failed" for r in runs)]

    rows = [
        row("messages", lambda r: fmt_int(r.messages)),
        row("wall seconds", lambda r: f"{r.seconds:.2f}"),
        row("msg/s end to end", lambda r: fmt_int(r.rate)),
        row("HTTP calls (fake server)", lambda r: fmt_int(r.calls)),
        row("messages per call", lambda r: f"{r.accepted / r.calls:,.1f}" if r.calls else "-"),
        row("enqueue seconds (of the wall)", lambda r: f"{r.enqueue_seconds:.2f}"),
        row("CPU s / 1k msgs: workers", lambda r: r.per_1k(r.worker_cpu)),
        row("CPU s / 1k msgs: redis-server", lambda r: r.per_1k(r.redis_cpu)),
        row("CPU s / 1k msgs: fake server", lambda r: r.per_1k(r.server_cpu)),
        row("CPU s / 1k msgs: this process", lambda r: r.per_1k(r.self_cpu)),
        row(f"  ceiling on {cores} cores, msg/s", lambda r: fmt_int(
            cores * r.messages / (r.worker_cpu + r.redis_cpu + r.server_cpu + r.self_cpu))),
        row("machine busy during the run",
            lambda r: f"{r.machine_cpu / (cores * r.seconds):.0%}"),
        row("CPU s / 1k msgs: rest of the machine *", lambda r: r.per_1k(max(
            0.0, r.machine_cpu - r.worker_cpu - r.redis_cpu - r.server_cpu - r.self_cpu))),
        row("peak RSS MB, max pool process", lambda r: _mb(r.rss_kb)),
        row("peak RSS MB, worker main process", lambda r: _mb(r.main_rss_kb)),
    ]
    print_table(["", *(r.label for r in runs)], rows)
    print("\nthis process = the producer enqueuing the CSV and polling the ledger. The ceiling "
          "divides the cores by the CPU listed above it:\nwhat this design could reach here if "
          "nothing waited. * other users of the box, plus kernel network work not charged to\n"
          "any process: a large figure there means the run shared the cores and its msg/s is "
          "low.")

    print("\nTargets")
    t_rows: list[list[str]] = []
    baseline = next((r for r in runs if r.baseline and r.kind == "http" and r.ok), None)
    for r in runs:
        if r.baseline or not r.ok:
            continue
        if r.kind in BATCHING_KINDS:
            t_rows.append([f"{r.label} msg/s end to end", fmt_int(r.rate),
                           f">= {TARGET_MSG_S:,}", verdict(r.rate >= TARGET_MSG_S)])
        else:
            t_rows.append([f"{r.label} msg/s end to end", fmt_int(r.rate),
                           "info (1 call/msg)", ""])
        if baseline is not None and r.kind in BATCHING_KINDS:
            t_rows.append(["  vs one request per message (http, 1/call)",
                           f"{r.rate / baseline.rate:.1f}x", "info", ""])
    print_table(["", "measured", "target", ""], t_rows)
    for r in runs:
        if r.profile:
            print(f"\nprofile of the workers, {r.label} (py-spy, {r.design}):")
            print(r.profile)
    for r in runs:
        for note in r.notes:
            print(f"NOTE: {note}")


# -- main -----------------------------------------------------------------------------------------

def _kinds(text: str, known: tuple[str, ...], what: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise SystemExit(f"{what}: unknown kind(s) {', '.join(unknown)}; known: "
                         f"{', '.join(known)}")
    return kinds


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=100000,
                   help="recipients per campaign for each kind (default 100000)")
    p.add_argument("--kinds", default=",".join(ALL_KINDS),
                   help=f"comma-separated subset of {','.join(ALL_KINDS)}")
    p.add_argument("--baseline-messages", type=int, default=10000,
                   help="recipients of each one-request-per-message baseline (default 10000)")
    p.add_argument("--baseline-kinds", default="http",
                   help="kinds to run one message per request: http uses http_batch_size=1, "
                        "the others a campaign batch_size of 1 (default http; '' for none)")
    p.add_argument("--batch-size", type=int, default=500,
                   help="recipients per task (the campaign's batch_size, default 500)")
    p.add_argument("--server-mode", choices=("minimal", "fakes"), default="minimal",
                   help="fake server handlers: minimal (default) or the tests/fakes ones")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="py-spy every worker tree into DIR and print where the time goes")
    p.add_argument("--worker-loglevel", default="INFO",
                   help="the workers' --loglevel (default INFO, bulkmail worker's default)")
    add_run_options(p, log_dir=Path(tempfile.gettempdir()) / "bulkmail-bench" / "http",
                    wait_idle=60)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    kinds = _kinds(args.kinds, ALL_KINDS, "--kinds")
    baseline_kinds = _kinds(args.baseline_kinds, ALL_KINDS, "--baseline-kinds")
    raise_on_signals()
    os.environ.update(_secrets_env())
    from producers.demo import embedded_redis

    args.log_dir.mkdir(parents=True, exist_ok=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bulkmail-bench-http-"))
    runs: list[Run] = []
    cores = len(os.sched_getaffinity(0))
    try:
        with embedded_redis() as url, FakeProviders(args.server_mode) as server:
            client = redis.Redis.from_url(url)
            print("bulkmail end-to-end HTTP API benchmark")
            print_table(["machine", ""], [*machine_lines(client), (
                "http stack", versions("httpx", "httpcore", "h11", "botocore"))], left=True)
            print(f"\nfake providers: bench/http_fakeserver.py --mode {args.server_mode} on "
                  f"{server.url} (1 process, uvloop, HTTP/1.1 keep-alive)\nworkers: 1 x "
                  f"`bulkmail worker -c {WORKER_CONCURRENCY}`, provider concurrency 4 "
                  f"(default), campaign batch_size {args.batch_size}, --loglevel "
                  f"{args.worker_loglevel}; logs: {args.log_dir}")
            b = Bench(client, url, server, workdir, args.log_dir, args.profile,
                      args.worker_loglevel)
            plan: list[tuple[Run, dict[str, int]]] = []
            for kind in kinds:
                per_call = {"sendgrid": "<= 1000 personalizations", "mailgun":
                            "<= 1000 recipients (recipient-variables)", "postmark":
                            "<= 500 messages", "resend": "<= 100 messages", "http":
                            "<= 100 messages (http_batch_size)", "ses":
                            "1 message (SendEmail, SigV4)"}[kind]
                plan.append((Run(kind, kind, args.messages, f"{per_call} per call"),
                             {"batch_size": args.batch_size}))
            for kind in baseline_kinds:
                if kind == "http":
                    run = Run("http 1/call", kind, args.baseline_messages,
                              "baseline: http_batch_size = 1, tasks of "
                              f"{args.batch_size}", baseline=True)
                    plan.append((run, {"batch_size": args.batch_size, "http_batch_size": 1}))
                else:
                    run = Run(f"{kind} 1/task", kind, args.baseline_messages,
                              "baseline: campaign batch_size = 1 (a task per message)",
                              baseline=True)
                    plan.append((run, {"batch_size": 1}))
            for run, options in plan:
                note = wait_until_quiet(args.wait_idle) if args.wait_idle > 0 else ""
                print(f"running {run.label}: {run.messages:,} recipients ...", flush=True)
                runs.append(run_campaign(b, run, **options))
                if note:
                    run.notes.append(f"{run.label}: {note}")
            report(runs, cores)
            client.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(r.ok and r.counts.get("sent") == r.messages for r in runs) else 1


if __name__ == "__main__":
    run_main(main)
