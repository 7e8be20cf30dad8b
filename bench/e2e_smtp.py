"""End-to-end SMTP throughput of bulkmail, side by side with two baselines, in one run.

    .venv/bin/python bench/e2e_smtp.py                 # full size (1-2 minutes; make bench)
    .venv/bin/python bench/e2e_smtp.py --quick         # a short run (about 20 s)
    .venv/bin/python bench/e2e_smtp.py --messages 20000 --naive-messages 2000
    .venv/bin/python bench/e2e_smtp.py --repeat 3      # best of 3 runs on a shared machine
    .venv/bin/python bench/e2e_smtp.py --only bulkmail # one contender (e.g. to profile it)

What is compared (same machine, same Redis, same local SMTP sink, same ~1 KB message):

* **bulkmail**: a real campaign (CSV with a few variables, text + HTML) enqueued with the
  product's ``enqueue_campaign`` while one ``bulkmail worker -c 2`` (two pool processes,
  started with the product's ``start_workers``) sends it over pooled aiosmtplib sessions
  (``pool_size = 8``, no TLS) and records every recipient in the ledger. Timed from the
  first enqueue call to the ledger saying the campaign is done.
* **(a) naive**: one Celery task per email, each building an ``EmailMessage`` and opening
  a new ``smtplib`` connection (``bench/naive_app.py``), two pool processes. Timed from
  the first publish until a Redis counter says every task has sent.
* **(b) raw loop**: no queue, no ledger: one process, uvloop, 8 aiosmtplib connections
  sending one prebuilt message (MAIL, RCPT, DATA, as the product does) over and over.
  The ceiling of one Python process with this SMTP client.

How to read the output: ``msg/s`` is wall-clock throughput. ``CPU s / 1k msgs`` is the
CPU time per 1,000 messages, from ``/proc`` (utime + stime of the process tree, sampled
once the workers are idle and again before they are stopped, so start-up is excluded);
the worker row is what the product costs, the other rows show where the rest of the
machine went (Redis, the sink, this process enqueuing and polling). The ``ceiling`` row
divides the machine's cores by the total CPU per message: the throughput this design
could reach on this box if nothing waited on anything. ``peak RSS`` is the largest
``VmHWM`` of the pool processes, read just before shutdown. The targets table marks each
goal PASS or MISS. Other work on the machine lowers every msg/s figure (not the CPU per
message): each run first waits (``--wait-idle``) for the box to calm down, notes how busy
it still was, and prints ``rest of the machine``: the CPU others used meanwhile. When
that row is large, trust the CPU rows and the ceiling over msg/s, or use ``--repeat``.

The sink is Postfix's ``smtp-sink`` when installed, else ``bench/sink.py``; its CPU per
message is printed to show it is not the bottleneck. Every key the run writes (fresh
``BULKMAIL_KEY_PREFIX``, fresh provider queue) is deleted afterwards, and every process
started here is stopped, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from _harness import (
    BENCH_DIR,
    Sink,
    TreeSample,
    add_run_options,
    delete_keys,
    fmt_int,
    logged_ready,
    machine_busy,
    machine_lines,
    prepare_campaign,
    print_table,
    queue_keys,
    redis_cpu,
    run_main,
    sample_tree,
    start_run,
    verdict,
    wait_progress,
    wait_until_quiet,
    wait_worker_ready,
    write_campaign,
)

__all__ = ["main"]

# Targets (README / issue): printed next to the measured values.
TARGET_MSG_S = 5000
TARGET_VS_NAIVE = 15.0
TARGET_ENQUEUE = 50000
TARGET_RSS_MB = 150

RAW_CONNECTIONS = 8
WORKER_CONCURRENCY = 2
STALL_TIMEOUT = 60.0  # seconds without progress before a run is declared stuck


@dataclass(slots=True)
class Run:
    """What one of the three contenders did."""

    label: str
    messages: int = 0
    seconds: float = 0.0
    enqueue_rate: float | None = None
    worker_cpu: float | None = None
    worker_main_cpu: float | None = None
    redis_cpu: float = 0.0
    sink_cpu: float = 0.0
    self_cpu: float = 0.0
    machine_cpu: float = 0.0  # every core's busy time, ours and everybody else's
    rss_kb: int | None = None
    main_rss_kb: int | None = None
    rusage_cpu: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def per_1k(self, cpu: float | None) -> str:
        if cpu is None or not self.messages:
            return "-"
        return f"{cpu / self.messages * 1000:.3f}"

    @property
    def total_cpu(self) -> float:
        return (self.worker_cpu or 0.0) + self.redis_cpu + self.sink_cpu + self.self_cpu

    @property
    def others_cpu(self) -> float:
        """CPU the rest of the machine used meanwhile (other users; kernel work of ours)."""
        return max(0.0, self.machine_cpu - self.total_cpu)


@dataclass(slots=True)
class Meter:
    """CPU of everything involved, sampled at the start and end of the timed part."""

    client: redis.Redis[bytes]
    sink: Sink
    worker_pid: int | None = None
    start: dict[str, float] = field(default_factory=dict)
    tree_end: TreeSample | None = None

    def _now(self) -> dict[str, float]:
        out = {"redis": redis_cpu(self.client), "sink": self.sink.cpu(),
               "self": time.process_time(), "machine": machine_busy()}
        if self.worker_pid is not None:
            tree = sample_tree(self.worker_pid)
            out["worker"], out["worker_main"] = tree.cpu, tree.root_cpu
        return out

    def begin(self) -> None:
        self.start = self._now()

    def end(self, run: Run) -> None:
        now = self._now()
        if self.worker_pid is not None:
            self.tree_end = sample_tree(self.worker_pid)
            run.worker_cpu = now["worker"] - self.start["worker"]
            run.worker_main_cpu = now["worker_main"] - self.start["worker_main"]
            hwm = self.tree_end.child_hwm_kb
            run.rss_kb = max(hwm.values()) if hwm else None
            run.main_rss_kb = self.tree_end.root_hwm_kb
        run.redis_cpu = now["redis"] - self.start["redis"]
        run.sink_cpu = now["sink"] - self.start["sink"]
        run.self_cpu = now["self"] - self.start["self"]
        run.machine_cpu = now["machine"] - self.start["machine"]


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _wait(predicate: Callable[[], int], target: int, what: str,
          every: float = 0.02) -> None:
    """Poll a progress counter until it reaches ``target``; fail if it stalls."""

    def progress() -> tuple[int, bool]:
        done = predicate()
        return done, done >= target

    wait_progress(progress, what, stall=STALL_TIMEOUT, of=target, every=every)


@contextlib.contextmanager
def _worker(start: Callable[[], subprocess.Popen[bytes]], ready: Callable[[], bool], log: Path,
            run: Run) -> Iterator[subprocess.Popen[bytes]]:
    """Start a worker, wait for it, and always stop it (recording rusage of its tree)."""
    from producers.demo import stop_workers

    before = _children_cpu()
    proc = start()
    try:
        wait_worker_ready(proc, log, WORKER_CONCURRENCY, ready)
        yield proc
    finally:
        stop_workers(proc)
        run.rusage_cpu = _children_cpu() - before


# -- bulkmail ---------------------------------------------------------------------------------

def run_bulkmail(client: redis.Redis[bytes], url: str, sink: Sink, n: int, workdir: Path,
                 log: Path) -> Run:
    from producers.demo import start_workers

    run = Run("bulkmail", messages=n)
    provider = f"bench{uuid.uuid4().hex[:8]}"
    prefix = f"bulkmail-bench-{uuid.uuid4().hex[:10]}"
    folder = workdir / "bulkmail"
    folder.mkdir(exist_ok=True)
    files = write_campaign(folder, provider, sink.port, n)
    env, settings, spec, ledger, queue = prepare_campaign(
        client, url, files.providers, files.campaign, provider, prefix)
    from producers.enqueue import enqueue_campaign
    from workers.app import app

    log.unlink(missing_ok=True)
    meter = Meter(client, sink)
    try:
        with _worker(lambda: start_workers(provider, concurrency=WORKER_CONCURRENCY, env=env,
                                           log=log, name=f"bench-{os.getpid()}@%h"),
                     logged_ready(log), log, run) as proc:
            meter.worker_pid = proc.pid
            meter.begin()
            started = time.perf_counter()
            result = enqueue_campaign(settings, app, client, spec, files.recipients)
            run.enqueue_rate = result.rows / result.seconds if result.seconds else None

            def sent_or_final() -> int:
                st = ledger.status(spec.id)
                if st is None:
                    return 0
                return n if st.done else st.accounted - st.counts["queued"]

            _wait(sent_or_final, n, "bulkmail campaign")
            run.seconds = time.perf_counter() - started
            meter.end(run)
        status = ledger.status(spec.id)
        assert status is not None
        if status.counts["sent"] != n:
            run.notes.append(f"bulkmail: only {status.counts['sent']} of {n} sent: "
                             f"{status.counts} (see {log})")
    finally:
        delete_keys(client, prefix, queue_keys(queue))
    return run


# -- (a) the naive design ---------------------------------------------------------------------

def _render_one(workdir: Path, port: int) -> tuple[Any, bytes]:
    """The campaign compiled by the product, and one message rendered + built (~1 KB)."""
    from config.providers import load_providers
    from config.schema import Recipient
    from producers.campaign import load_campaign

    folder = workdir / "render"
    folder.mkdir(exist_ok=True)
    files = write_campaign(folder, "render", port, 1)
    _, compiled = load_campaign(files.campaign, load_providers(files.providers))
    msg = compiled.render(Recipient(1, "user1@example.test",
                                    {"first_name": "Ada", "order": "100001", "city": "Oslo"}))
    return compiled, compiled.build_mime(msg)


def run_naive(client: redis.Redis[bytes], url: str, sink: Sink, n: int, workdir: Path,
              log: Path) -> Run:
    from config.schema import Recipient

    run = Run("naive", messages=n)
    tag = uuid.uuid4().hex[:10]
    queue, counter = f"bench-naive-{tag}", f"bench-naive-{tag}:sent"
    os.environ.update({"NAIVE_BROKER_URL": url, "NAIVE_COUNTER_KEY": counter})
    import naive_app

    compiled, _ = _render_one(workdir, sink.port)
    pythonpath = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH"))
                                 if p)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    node = f"naive-{os.getpid()}@{socket.gethostname()}"
    log.unlink(missing_ok=True)

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "naive_app", "worker", "-Q", queue,
                 "-c", str(WORKER_CONCURRENCY), "--loglevel", "WARNING", "--without-mingle",
                 "--without-gossip", "-n", node],
                env=env, cwd=BENCH_DIR, start_new_session=True, stdout=out,
                stderr=subprocess.STDOUT)

    meter = Meter(client, sink)

    # WARNING, not INFO: Celery would log two lines per task, a cost we spare the baseline.
    # So 'ready.' is not logged either; a remote-control ping tells when it consumes.
    def ready() -> bool:
        return bool(naive_app.app.control.ping(destination=[node], timeout=0.5))

    try:
        with _worker(start, ready, log, run) as proc:
            meter.worker_pid = proc.pid
            meter.begin()
            started = time.perf_counter()
            with naive_app.app.producer_or_acquire() as producer:
                for i in range(n):
                    msg = compiled.render(Recipient(i + 1, f"user{i}@example.test", {
                        "first_name": "Ada", "order": str(100000 + i), "city": "Oslo"}))
                    naive_app.send_one.apply_async(
                        args=("127.0.0.1", sink.port, msg.sender, msg.recipient, msg.subject,
                              msg.text, msg.html),
                        queue=queue, routing_key=queue, producer=producer)
            run.enqueue_rate = n / (time.perf_counter() - started)
            _wait(lambda: int(client.get(counter) or 0), n, "naive tasks")
            run.seconds = time.perf_counter() - started
            meter.end(run)
    finally:
        delete_keys(client, f"bench-naive-{tag}", queue_keys(queue))
    return run


# -- (b) the raw aiosmtplib loop --------------------------------------------------------------

async def _raw_send(port: int, n: int, connections: int, sender: str, message: bytes) -> None:
    import aiosmtplib

    async def lane(first: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False,
                               start_tls=False, timeout=30)
        await smtp.connect()
        for i in range(first, n, connections):
            await smtp.mail(sender)
            await smtp.rcpt(f"user{i}@example.test")
            await smtp.data(message)
        await smtp.quit()

    await asyncio.gather(*(lane(k) for k in range(connections)))


def run_raw(client: redis.Redis[bytes], sink: Sink, n: int, workdir: Path) -> Run:
    import uvloop

    run = Run("raw", messages=n)
    _, message = _render_one(workdir, sink.port)
    meter = Meter(client, sink)
    loop = uvloop.new_event_loop()
    try:
        meter.begin()
        started = time.perf_counter()
        loop.run_until_complete(_raw_send(sink.port, n, RAW_CONNECTIONS, "news@shop.test",
                                          message))
        run.seconds = time.perf_counter() - started
        meter.end(run)
    finally:
        loop.close()
    return run


# -- output -----------------------------------------------------------------------------------

def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f}"


def report(runs: dict[str, Run], message_size: int, sink: Sink) -> None:
    cores = len(os.sched_getaffinity(0))
    cols = [k for k in ("bulkmail", "naive", "raw") if k in runs]
    heads = {"bulkmail": "bulkmail e2e", "naive": "(a) naive", "raw": "(b) raw loop"}
    anchors = {"bulkmail": "~5,300 (bare stack)", "naive": "~340", "raw": "~4,900 (10 conn)"}
    design = {"bulkmail": "batch tasks of 500, 2 procs x 8 sessions, ledger",
              "naive": "task per email, new smtplib conn, 2 procs",
              "raw": f"1 proc, uvloop, {RAW_CONNECTIONS} conns, prebuilt bytes"}
    print(f"\nmessage: {message_size} bytes (multipart/alternative, text + html, "
          f"4 variables); sink: {sink.name}\n")
    for k in cols:
        print(f"  {heads[k]:<14} {design[k]}")
    print()

    def row(name: str, fn: Callable[[Run], str]) -> list[str]:
        return [name, *(fn(runs[k]) for k in cols)]

    rows = [
        row("messages", lambda r: fmt_int(r.messages)),
        row("wall seconds", lambda r: f"{r.seconds:.2f}"),
        row("msg/s", lambda r: fmt_int(r.rate)),
        row("  ARCHITECTURE.md anchor", lambda r: anchors[r.label]),
        row("enqueue rows/s (naive: tasks published/s)",
            lambda r: fmt_int(r.enqueue_rate) if r.enqueue_rate else "-"),
        row("CPU s / 1k msgs: workers", lambda r: r.per_1k(r.worker_cpu)),
        row("  of which the worker main process", lambda r: r.per_1k(r.worker_main_cpu)),
        row("CPU s / 1k msgs: this process",
            lambda r: r.per_1k(r.self_cpu)),
        row("CPU s / 1k msgs: redis-server", lambda r: r.per_1k(r.redis_cpu)),
        row("CPU s / 1k msgs: smtp sink", lambda r: r.per_1k(r.sink_cpu)),
        row("CPU s / 1k msgs: all of the above", lambda r: r.per_1k(r.total_cpu)),
        row(f"  ceiling on {cores} cores, msg/s",
            lambda r: fmt_int(cores * r.messages / r.total_cpu) if r.total_cpu else "-"),
        row("CPU s / 1k msgs: rest of the machine *",
            lambda r: r.per_1k(r.others_cpu)),
        row("machine busy during the run",
            lambda r: f"{r.machine_cpu / (cores * r.seconds):.0%}" if r.seconds else "-"),
        row("CPU s / 1k: workers incl. start/stop",
            lambda r: r.per_1k(r.rusage_cpu)),
        row("peak RSS MB, max pool process", lambda r: _mb(r.rss_kb)),
        row("peak RSS MB, worker main process", lambda r: _mb(r.main_rss_kb)),
    ]
    print_table(["", *(heads[k] for k in cols)], rows)
    print("\nthis process = the producer enqueuing and polling (bulkmail, naive), the whole "
          "sender (raw loop).\n* other users of the machine, plus kernel network work "
          "(softirq) not charged to any process.")

    bm = runs.get("bulkmail")
    print("\nTargets")
    t_rows: list[list[str]] = []
    if bm:
        t_rows.append(["end-to-end msg/s", fmt_int(bm.rate), f">= {TARGET_MSG_S:,}",
                       verdict(bm.rate >= TARGET_MSG_S)])
        if "naive" in runs and runs["naive"].rate:
            ratio = bm.rate / runs["naive"].rate
            t_rows.append(["bulkmail / naive", f"{ratio:.1f}x", f">= {TARGET_VS_NAIVE:.0f}x",
                           verdict(ratio >= TARGET_VS_NAIVE)])
            nv = runs["naive"]
            if bm.total_cpu and nv.total_cpu:
                by_cpu = (nv.total_cpu / nv.messages) / (bm.total_cpu / bm.messages)
                t_rows.append(["  same, by CPU per message (load-proof)", f"{by_cpu:.1f}x",
                               "info", ""])
        if bm.enqueue_rate:
            t_rows.append(["enqueue rows/s from CSV (workers running)",
                           fmt_int(bm.enqueue_rate), f">= {TARGET_ENQUEUE:,}",
                           verdict(bm.enqueue_rate >= TARGET_ENQUEUE)])
        if bm.rss_kb is not None:
            t_rows.append(["worker peak RSS MB (max pool process)", _mb(bm.rss_kb),
                           f"<= {TARGET_RSS_MB}", verdict(bm.rss_kb / 1024 <= TARGET_RSS_MB)])
        if "raw" in runs and runs["raw"].rate:
            pct = bm.rate / runs["raw"].rate * 100
            t_rows.append(["bulkmail vs raw loop (1 process)", f"{pct:.0f}%", "info", ""])
            raw = runs["raw"]
            if bm.total_cpu and raw.total_cpu:
                cpu_pct = (raw.total_cpu / raw.messages) / (bm.total_cpu / bm.messages) * 100
                t_rows.append(["  same, by CPU per message (load-proof)", f"{cpu_pct:.0f}%",
                               "info", ""])
    print_table(["", "measured", "target", ""], t_rows)
    for r in runs.values():
        for note in r.notes:
            print(f"NOTE: {note}")


# -- main -------------------------------------------------------------------------------------

def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=50000,
                   help="bulkmail campaign size and raw-loop messages (default 50000)")
    p.add_argument("--naive-messages", type=int, default=5000,
                   help="messages for the naive design (default 5000)")
    p.add_argument("--quick", action="store_true",
                   help="a short run: 5000 messages, 1000 for the naive design")
    p.add_argument("--only", default="bulkmail,naive,raw",
                   help="comma-separated subset of bulkmail,naive,raw")
    add_run_options(p, log_dir=Path(tempfile.gettempdir()) / "bulkmail-bench", wait_idle=30)
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run each contender N times and show its fastest run (default 1)")
    p.add_argument("--python-sink", action="store_true",
                   help="use bench/sink.py even when smtp-sink is installed")
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.naive_messages = 5000, 1000
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    only, workdir = start_run(args, "e2e")
    from producers.demo import embedded_redis

    runs: dict[str, Run] = {}
    try:
        with embedded_redis() as url, Sink(prefer_postfix=not args.python_sink) as sink:
            client = redis.Redis.from_url(url)
            print("bulkmail end-to-end SMTP benchmark")
            print_table(["machine", ""], machine_lines(client), left=True)
            print(f"\nsink: {sink.name} on port {sink.port}; worker logs: {args.log_dir}")
            size = len(_render_one(workdir, sink.port)[1])

            def section(key: str, title: str, fn: Callable[[], Run]) -> None:
                if key not in only:
                    return
                tries: list[Run] = []
                for attempt in range(args.repeat):
                    note = wait_until_quiet(args.wait_idle) if args.wait_idle > 0 else ""
                    print(f"running {title}" + (f" (run {attempt + 1} of {args.repeat})"
                                                if args.repeat > 1 else "") + " ...",
                          flush=True)
                    run = fn()
                    if note:
                        run.notes.append(f"{run.label}: {note}")
                    tries.append(run)
                best = max(tries, key=lambda r: r.rate)
                if len(tries) > 1:
                    rates = ", ".join(fmt_int(r.rate) for r in tries)
                    best.notes.insert(0, f"{best.label}: best of {len(tries)} runs shown "
                                         f"(msg/s of each: {rates})")
                runs[key] = best

            section("bulkmail", f"bulkmail: {args.messages:,} recipients",
                    lambda: run_bulkmail(client, url, sink, args.messages, workdir,
                                         args.log_dir / "bulkmail-worker.log"))
            section("naive", f"(a) naive: {args.naive_messages:,} messages",
                    lambda: run_naive(client, url, sink, args.naive_messages, workdir,
                                      args.log_dir / "naive-worker.log"))
            section("raw", f"(b) raw loop: {args.messages:,} messages",
                    lambda: run_raw(client, sink, args.messages, workdir))
            report(runs, size, sink)
            client.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run_main(main)
