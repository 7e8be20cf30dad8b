"""Producer enqueue rate and memory: 10k, 100k and 1M-row CSVs through ``enqueue_campaign``.

    .venv/bin/python bench/enqueue.py                  # 10k, 100k, 1M rows (about 1-2 min)
    .venv/bin/python bench/enqueue.py --quick          # 10k and 100k rows
    .venv/bin/python bench/enqueue.py --sizes 50000 --profile   # where the time goes

Each size is enqueued by a child process of its own (so its peak RSS, ``ru_maxrss``, is
that run's alone) with the product's ``enqueue_campaign``: read and validate the CSV,
deduplicate in Redis, write the ledger, publish one Celery task per batch of 500. No
worker runs, so the tasks stay on the queue; every key of the run (fresh key prefix,
fresh provider queue) is deleted after each size.

How to read the output: ``rows/s`` is rows read per wall-clock second of the
``enqueue_campaign`` call. ``producer CPU us/row`` is the enqueuing process's own CPU per
row and ``redis CPU us/row`` the Redis server's; on an idle machine the wall time is about
their sum (the producer waits while Redis works), so a rows/s far below
1e6 / (producer + redis) means other work took the CPU. ``RSS after imports`` is the
process before it enqueues anything and ``peak RSS`` its high-water mark afterwards: a
streaming producer keeps the difference the same at every size ("flat"). ``Redis MB`` is
what the run's keys take in Redis (ledger, batch payloads, queued tasks; ``MEMORY
USAGE``), also per recipient. The machine, and how busy it was, is printed at the top.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from _harness import (
    delete_keys,
    fmt_int,
    keys_memory,
    machine_lines,
    print_table,
    queue_keys,
    raise_on_signals,
    redis_cpu,
    run_main,
    verdict,
    vm_kb,
    wait_until_quiet,
    write_campaign,
    write_recipients,
)

__all__ = ["main"]

TARGET_ROWS_S = 50000
#: "flat": the largest run's peak RSS within this factor of the smallest run's
FLAT_FACTOR = 1.10


# -- child: one enqueue, measured from the inside ----------------------------------------------

def child(recipients: Path, campaign: Path, profile: bool) -> None:
    """Enqueue ``recipients`` (settings from the environment); print one JSON line."""
    from config.settings import Settings
    from producers.campaign import load_campaign
    from producers.connect import connect_redis
    from producers.enqueue import enqueue_campaign
    from workers.app import app

    settings = Settings()
    spec, _ = load_campaign(campaign, settings.load_providers(),
                            default_batch_size=settings.batch_size)
    client = connect_redis(settings)
    with app.producer_or_acquire():  # open the broker connection before measuring
        pass
    rss_before = vm_kb(os.getpid(), "VmRSS")
    cpu0 = time.process_time()
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        result = prof.runcall(enqueue_campaign, settings, app, client, spec, recipients)
        stats = pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime")
        stats.print_stats(25)
    else:
        result = enqueue_campaign(settings, app, client, spec, recipients)
    cpu = time.process_time() - cpu0
    print(json.dumps({
        "rows": result.rows, "queued": result.queued, "invalid": result.invalid,
        "batches": result.batches, "seconds": result.seconds, "cpu": cpu,
        "rss_before_kb": rss_before,
        "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }), flush=True)


# -- parent: generate, run, clean up, print -----------------------------------------------------

def run_size(client: redis.Redis[bytes], url: str, folder: Path, rows: int, profile: bool
             ) -> dict[str, Any]:
    provider = f"benchenq{uuid.uuid4().hex[:8]}"
    prefix = f"bulkmail-bench-enq-{uuid.uuid4().hex[:10]}"
    files = write_campaign(folder, provider, 2525, 0)
    csv_path = folder / f"recipients-{rows}.csv"
    if not csv_path.exists():
        write_recipients(csv_path, rows)
    env = {**os.environ, "BULKMAIL_REDIS_URL": url, "BULKMAIL_PROVIDERS": str(files.providers),
           "BULKMAIL_KEY_PREFIX": prefix}
    queue = f"bulkmail.{provider}"
    redis_cpu_before = redis_cpu(client)
    proc: subprocess.Popen[str] | None = None
    try:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(csv_path), "--campaign",
             str(files.campaign), *(["--profile"] if profile else [])],
            env=env, stdout=subprocess.PIPE, text=True)
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"enqueue of {rows} rows failed (exit {proc.returncode})")
        data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        data["redis_bytes"] = keys_memory(client, prefix, [queue])
        data["redis_cpu"] = redis_cpu(client) - redis_cpu_before
        data["queue_len"] = int(client.llen(queue))
        return data
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        delete_keys(client, prefix, queue_keys(queue))


def _mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000",
                   help="comma-separated row counts (default 10000,100000,1000000)")
    p.add_argument("--quick", action="store_true", help="10k and 100k rows only")
    p.add_argument("--profile", action="store_true",
                   help="cProfile each child and print its top functions (slows it down)")
    p.add_argument("--wait-idle", type=float, default=15, metavar="SECONDS",
                   help="wait up to this long for an idle machine before each size")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--campaign", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.campaign, args.profile)
        return 0

    raise_on_signals()
    sizes = [10000, 100000] if args.quick else [int(s) for s in args.sizes.split(",")]
    from producers.demo import embedded_redis

    folder = Path(tempfile.mkdtemp(prefix="bulkmail-bench-enqueue-"))
    results: list[tuple[int, dict[str, Any]]] = []
    notes: list[str] = []
    try:
        with embedded_redis() as url:
            client = redis.Redis.from_url(url)
            print("bulkmail producer benchmark: enqueue_campaign from CSV, no workers")
            print_table(["machine", ""], machine_lines(client), left=True)
            print()
            for rows in sizes:
                started = time.perf_counter()
                write_recipients(folder / f"recipients-{rows}.csv", rows)
                made = time.perf_counter() - started
                note = wait_until_quiet(args.wait_idle) if args.wait_idle > 0 else ""
                if note:
                    notes.append(f"{rows:,} rows: {note}")
                size_mb = (folder / f"recipients-{rows}.csv").stat().st_size / 1e6
                print(f"{rows:,} rows (CSV of {size_mb:.1f} MB made in {made:.1f}s) ...",
                      flush=True)
                results.append((rows, run_size(client, url, folder, rows, args.profile)))
                (folder / f"recipients-{rows}.csv").unlink()
            client.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print()
    table = []
    for rows, d in results:
        growth = d["peak_kb"] - d["rss_before_kb"]
        table.append([
            fmt_int(rows), f"{d['seconds']:.2f}", fmt_int(d["rows"] / d["seconds"]),
            f"{d['cpu'] / d['rows'] * 1e6:.1f}", f"{d['redis_cpu'] / d['rows'] * 1e6:.1f}",
            _mb(d["rss_before_kb"]), _mb(d["peak_kb"]), _mb(growth),
            f"{d['redis_bytes'] / 1e6:.1f}", fmt_int(d["redis_bytes"] / max(d["queued"], 1)),
            fmt_int(d["queue_len"]),
        ])
    print_table(["rows", "seconds", "rows/s", "producer CPU us/row", "redis CPU us/row",
                 "RSS after imports MB", "peak RSS MB", "growth MB", "Redis MB",
                 "Redis B/rcpt", "tasks queued"], table)
    print("\nRedis MB: MEMORY USAGE of the run's keys and queue. Redis CPU is the whole "
          "server's,\nother clients included: on a shared Redis it is an upper bound.")
    if args.profile:
        print("\n(--profile: cProfile slows the producer; rows/s above are not comparable)")

    print("\nTargets")
    t_rows = []
    for rows, d in results:
        rate = d["rows"] / d["seconds"]
        t_rows.append([f"rows/s at {rows:,} rows", fmt_int(rate), f">= {TARGET_ROWS_S:,}",
                       verdict(rate >= TARGET_ROWS_S)])
    if len(results) >= 2:
        small, large = results[0], results[-1]
        ratio = large[1]["peak_kb"] / small[1]["peak_kb"]
        t_rows.append([f"peak RSS {large[0]:,} vs {small[0]:,} rows",
                       f"{_mb(large[1]['peak_kb'])} vs {_mb(small[1]['peak_kb'])} MB "
                       f"({ratio:.2f}x)", f"flat (<= {FLAT_FACTOR:.2f}x)",
                       verdict(ratio <= FLAT_FACTOR)])
    print_table(["", "measured", "target", ""], t_rows)
    for r, d in results:
        if d["queued"] != r or d["invalid"]:
            print(f"NOTE: {r:,} rows: {d['queued']:,} queued, {d['invalid']:,} invalid")
    for n in notes:
        print(f"NOTE: {n}")
    return 0


if __name__ == "__main__":
    run_main(main)
