"""``make compose-test``: build the compose stack, run campaigns through it, kill a worker.

Runs on a machine without an image registry: the private Docker engine and the local
base images come from ``docker-local.sh start`` (``DOCKER_LOCAL``), the stack is built
with ``BASE_IMAGE=local/python:3.11`` and ``REDIS_IMAGE=local/redis:7``. Steps:

1. start the engine, write secrets / providers file / campaigns into a private folder;
2. build, ``up`` the default services plus the ``dev`` profile (capture server), wait
   for every healthcheck;
3. check what the stack exposes: no host port for Redis or Flower, Redis refuses a
   client without the password, Flower answers 401 without its password, the secrets
   appear in no container's configuration, the bulkmail containers do not run as root;
4. send a campaign, wait, check the accounting (ledger and capture server agree: every
   recipient sent, counts add up);
5. scale workers to 3, send a larger, rate-limited campaign, ``docker kill`` one worker
   while it sends, check that nothing was lost;
6. tear everything down; the last line is ``compose-test ok: N of N delivered``.

Not collected by pytest (the name does not start with ``test_``) and not in .ci/run: it
takes minutes. Only the standard library is needed.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Stack", "main", "send_campaign"]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "bulkmailct"
PROVIDER = "capture"
# small batches, so that a killed worker holds several of them
BATCH_SIZE = 50
# the smallest values Settings accepts: a killed container's batches come back after the
# visibility timeout (plus kombu's 10 s restore interval), its locks lapse after the TTL
VISIBILITY_TIMEOUT = 60
BATCH_LOCK_TTL = 10
# rate-limited so that the second campaign is still sending when a worker is killed
RATE = "100/s"
FIRST_CAMPAIGN = 500
SECOND_CAMPAIGN = 3000

# Counts, per campaign, the distinct recipients in the capture server's folder (one .eml per
# message accepted, the envelope is not kept: the recipient is read from the To header,
# CAMPAIGN-ROW@example.test) and the messages in all. Runs inside the capture container:
# argv[1] is the campaign id.
_COUNT_CAPTURED = r"""
import json, os, re, sys
cid = sys.argv[1]
folder = "/var/lib/bulkmail-capture"
pattern = re.compile(re.escape(cid).encode() + rb"-[0-9]+@example[.]test")
seen, total = set(), 0
for name in os.listdir(folder):
    with open(os.path.join(folder, name), "rb") as fh:
        for line in fh:
            if line in (b"\r\n", b"\n"):
                break
            if line.lower().startswith(b"to:"):
                found = pattern.search(line)
                if found:
                    seen.add(found.group())
                    total += 1
                break
print(json.dumps({"distinct": len(seen), "messages": total}))
"""

# Flower from inside its container, run through with-secrets (which exports
# FLOWER_BASIC_AUTH from the secret): status without credentials, status with them.
_FLOWER_AUTH = r"""
import base64, os, urllib.error, urllib.request
def status(headers):
    req = urllib.request.Request("http://127.0.0.1:5555/workers", headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code
creds = base64.b64encode(os.environ["FLOWER_BASIC_AUTH"].encode()).decode()
print(status({}), status({"Authorization": "Basic " + creds}))
"""


class CheckFailed(Exception):
    """A check of the compose test did not hold."""


def say(text: str) -> None:
    print(f"[compose-test] {text}", flush=True)


@dataclass
class Stack:
    """The compose project under test and the commands that drive it."""

    env: dict[str, str]
    workdir: Path
    secrets: dict[str, str] = field(default_factory=dict)
    #: "cli" (`bulkmail send` in a one-off container) or "api" (POST /v1/campaigns)
    send_via: str = "cli"
    #: host port the api service is published on (127.0.0.1 only), when send_via is api
    api_port: int = 0
    api_key: str = ""

    @property
    def profiles(self) -> list[str]:
        return ["dev", "api"] if self.send_via == "api" else ["dev"]

    def run(self, args: Sequence[str], *, timeout: float = 600, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(args), env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise CheckFailed(f"`{' '.join(args)}` exited {proc.returncode}:\n"
                              f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return proc

    def compose(self, *args: str, timeout: float = 600, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        profiles = [arg for p in self.profiles for arg in ("--profile", p)]
        return self.run(["docker-compose", "-p", PROJECT, *profiles, *args],
                        timeout=timeout, check=check)

    def containers(self, service: str, *, running_only: bool = True) -> list[str]:
        """Ids of the service's containers (not one-off `run` containers)."""
        args = ["docker", "ps", "-q", "--no-trunc",
                "--filter", f"label=com.docker.compose.project={PROJECT}",
                "--filter", f"label=com.docker.compose.service={service}",
                "--filter", "label=com.docker.compose.oneoff=False"]
        if not running_only:
            args.insert(2, "-a")
        return self.run(args).stdout.split()

    def health(self, cid: str) -> str:
        return self.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid]
                        ).stdout.strip()

    def wait_healthy(self, service: str, count: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            ids = self.containers(service)
            states = [self.health(c) for c in ids]
            if len(ids) == count and all(s == "healthy" for s in states):
                return ids
            if time.monotonic() > deadline:
                raise CheckFailed(f"{service}: {count} healthy container(s) expected within "
                                  f"{timeout:.0f}s, have {states}")
            time.sleep(3)

    def exec(self, cid: str, *args: str, timeout: float = 120) -> str:
        return self.run(["docker", "exec", cid, *args], timeout=timeout).stdout

    def bulkmail(self, *args: str) -> str:
        """``bulkmail ARGS`` in a running worker container (any live one)."""
        return self.exec(self.containers("worker")[0], "bulkmail", *args)

    def status(self, campaign_id: str) -> dict[str, object]:
        doc: dict[str, object] = json.loads(self.bulkmail("status", campaign_id, "--json"))
        return doc

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", check=False).stdout


def send_campaign(stack: Stack, campaign: Path, recipients: Path, campaign_id: str) -> str:
    """Enqueue a campaign through the stack; return its id.

    The one place that knows how campaigns get in. ``cli`` (the default until the HTTP
    API is merged): ``bulkmail send`` in a one-off worker container (the producer needs
    the Redis password, so it runs inside the stack). ``api`` (``COMPOSE_TEST_SEND=api``):
    a multipart ``POST /v1/campaigns`` (the campaign TOML and the CSV) to the ``api``
    service, published on 127.0.0.1, with a key made by ``bulkmail keys create``.
    """
    if stack.send_via == "api":
        result = _post_campaign(stack, campaign, recipients)
    else:
        proc = stack.compose(
            "run", "--rm", "--no-deps", "-T", "-v", f"{campaign.parent}:/campaign:ro",
            "worker", "bulkmail", "send", f"/campaign/{campaign.name}", "--recipients",
            f"/campaign/{recipients.name}", "--json")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["id"] != campaign_id:
        raise CheckFailed(f"send returned campaign {result['id']!r}, not {campaign_id!r}")
    say(f"campaign {campaign_id} sent via {stack.send_via}: {result.get('queued', '?')} "
        f"queued, {result.get('invalid', '?')} invalid")
    return str(result["id"])


def _post_campaign(stack: Stack, campaign: Path, recipients: Path) -> dict[str, object]:
    if not stack.api_key:
        created = json.loads(stack.bulkmail("keys", "create", f"compose-test-{os.getpid()}",
                                            "--providers", PROVIDER, "--json"))
        stack.api_key = str(created["key"])
    boundary = os.urandom(16).hex()
    body = b""
    for name, path, ctype in (("campaign", campaign, "application/toml"),
                              ("recipients", recipients, "text/csv")):
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                 f"filename=\"{path.name}\"\r\nContent-Type: {ctype}\r\n\r\n").encode()
        body += path.read_bytes() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.api_port}/v1/campaigns", data=body, method="POST",
        headers={"Authorization": f"Bearer {stack.api_key}",
                 "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            if response.status != 202:
                raise CheckFailed(f"POST /v1/campaigns: {response.status}")
            doc: dict[str, object] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CheckFailed(f"POST /v1/campaigns: {exc.code} {exc.read()[:500]!r}") from None
    return doc


def write_campaign(folder: Path, campaign_id: str, recipients: int) -> tuple[Path, Path]:
    folder.mkdir(mode=0o755)
    campaign = folder / "campaign.toml"
    campaign.write_text(
        f'id = "{campaign_id}"\n'
        f'provider = "{PROVIDER}"\n'
        'from = "compose test <test@bulkmail.test>"\n'
        'subject = "Hello {{ name }} ({{ n }})"\n'
        'text = "Hi {{ name }}, message {{ n }} of the compose test."\n')
    rows = folder / "recipients.csv"
    with rows.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["email", "name", "n"])
        for i in range(recipients):
            w.writerow([f"{campaign_id}-{i}@example.test", f"User {i}", i])
    for path in (campaign, rows):
        path.chmod(0o644)  # read by the container's unprivileged user
    return campaign, rows


def wait_done(stack: Stack, campaign_id: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        st = stack.status(campaign_id)
        line = (f"{campaign_id}: sent {st['sent']} / {st['total']}, queued {st['queued']}, "
                f"deferred {st['deferred']}, failed {st['failed']}")
        if line != last:
            say(line)
            last = line
        if st["done"]:
            return st
        if time.monotonic() > deadline:
            raise CheckFailed(f"{campaign_id} not done within {timeout:.0f}s: {st}")
        time.sleep(3)


def check_accounting(stack: Stack, campaign_id: str, expected: int) -> int:
    """Every recipient accounted for and sent, and the capture server got each of them.

    Returns how many messages arrived twice (at-least-once delivery allows duplicates
    when a worker dies mid-chunk; the README bounds them).
    """
    st = stack.status(campaign_id)
    states = ("queued", "sent", "deferred", "failed", "invalid", "suppressed", "cancelled")
    counted = sum(int(str(st[s])) for s in states)
    if not st["done"] or st["total"] != expected or counted != expected:
        raise CheckFailed(f"{campaign_id}: {expected} rows expected, ledger says {st}")
    if st["sent"] != expected:
        raise CheckFailed(f"{campaign_id}: {expected} sent expected, ledger says {st}")
    capture = stack.containers("capture")[0]
    got = json.loads(stack.exec(capture, "python3", "-c", _COUNT_CAPTURED, campaign_id))
    if got["distinct"] != expected:
        raise CheckFailed(f"{campaign_id}: the capture server holds {got['distinct']} "
                          f"distinct recipients of {expected}")
    return int(got["messages"]) - int(got["distinct"])


def batches_in_flight(stack: Stack, cid: str) -> int:
    """Batches a worker container had taken and not finished, from its Celery log."""
    proc = stack.run(["docker", "logs", cid])
    log = proc.stdout + proc.stderr
    received = set(re.findall(r"Task bulkmail\.send_batch\[([^\]]+)\] received", log))
    finished = set(re.findall(r"Task bulkmail\.send_batch\[([^\]]+)\] (?:succeeded|failed|"
                              r"raised|retry)", log))
    return len(received - finished)


def check_exposure(stack: Stack) -> None:
    """What the stack publishes and protects, checked on the running containers."""
    for service in ("redis", "worker", "flower", "capture"):
        for cid in stack.containers(service):
            ports = stack.run(["docker", "port", cid]).stdout.strip()
            if ports:
                raise CheckFailed(f"{service} publishes ports on the host: {ports}")
            if service != "redis":
                uid = stack.exec(cid, "id", "-u").strip()
                if uid == "0":
                    raise CheckFailed(f"{service} runs as root")
            inspect = stack.run(["docker", "inspect", cid]).stdout
            for name, secret in stack.secrets.items():
                if secret in inspect:
                    raise CheckFailed(f"the {name} secret is visible in `docker inspect` "
                                      f"of {service}")
    for cid in stack.containers("api"):
        published = stack.run(["docker", "port", cid]).stdout.split()
        if [p for p in published if ":" in p and not p.startswith("127.0.0.1:")]:
            raise CheckFailed(f"the API is published beyond loopback: {published}")
    redis = stack.containers("redis")[0]
    reply = stack.run(["docker", "exec", redis, "redis-cli", "ping"], check=False)
    if "NOAUTH" not in reply.stdout + reply.stderr:
        raise CheckFailed(f"Redis answered a client without the password: {reply.stdout!r}")
    flower = stack.containers("flower")[0]
    without, with_auth = stack.exec(flower, "with-secrets", "python3", "-c",
                                   _FLOWER_AUTH).split()
    if (without, with_auth) != ("401", "200"):
        raise CheckFailed(f"Flower: {without} without credentials, {with_auth} with them "
                          "(401 and 200 expected)")
    say("exposure: no host ports; Redis needs its password; Flower 401 without auth; "
        "no secret in container config; app containers not root")


def start_engine(script: Path) -> tuple[dict[str, str], bool]:
    """Environment with DOCKER_HOST for the private engine; whether we started it."""
    env = dict(os.environ)
    probe = subprocess.run([str(script), "env"], capture_output=True, text=True, check=True)
    host = probe.stdout.strip().removeprefix("export DOCKER_HOST=")
    was_running = subprocess.run(["docker", "info"], env={**env, "DOCKER_HOST": host},
                                 capture_output=True, check=False).returncode == 0
    say("starting the private Docker engine and base images (first time: minutes)")
    out = subprocess.run([str(script), "start"], stdout=subprocess.PIPE, text=True,
                         check=True).stdout
    for line in out.splitlines():
        if line.startswith("export DOCKER_HOST="):
            env["DOCKER_HOST"] = line.removeprefix("export DOCKER_HOST=")
    return env, not was_running


def main() -> int:
    started = time.monotonic()
    script = Path(os.environ.get("DOCKER_LOCAL", ROOT.parent / "shared/tools/docker-local.sh"))
    if not script.exists():
        print(f"compose-test: {script} not found (set DOCKER_LOCAL)", file=sys.stderr)
        return 2
    env, we_started = start_engine(script)
    workdir = Path(tempfile.mkdtemp(prefix="bulkmail-compose-"))
    secrets_dir = workdir / "secrets"
    (secrets_dir / "providers").mkdir(parents=True)
    secrets_dir.chmod(0o700)  # the folder guards the secrets on the host
    secrets = {"redis_password": os.urandom(24).hex(),
               "flower_basic_auth": f"admin:{os.urandom(12).hex()}"}
    for name, value in secrets.items():
        path = secrets_dir / name
        path.write_text(value + "\n")
        path.chmod(0o444)  # readable by the containers' unprivileged users
    providers = workdir / "providers.toml"
    providers.write_text(f'[providers.{PROVIDER}]\nkind = "smtp"\nhost = "capture"\n'
                         f'port = 2525\ntls = "none"\npool_size = 4\nrate = "{RATE}"\n')
    providers.chmod(0o644)
    env.update({
        "BASE_IMAGE": os.environ.get("BASE_IMAGE", "local/python:3.11"),
        "REDIS_IMAGE": os.environ.get("REDIS_IMAGE", "local/redis:7"),
        "BULKMAIL_IMAGE": "bulkmail:compose-test",
        "BULKMAIL_SECRETS_DIR": str(secrets_dir),
        "BULKMAIL_PROVIDERS_FILE": str(providers),
        "BULKMAIL_PROVIDER": PROVIDER,
        "BULKMAIL_BATCH_SIZE": str(BATCH_SIZE),
        "BULKMAIL_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "BULKMAIL_BATCH_LOCK_TTL": str(BATCH_LOCK_TTL),
    })
    send_via = os.environ.get("COMPOSE_TEST_SEND", "cli")
    if send_via not in ("cli", "api"):
        print(f"compose-test: COMPOSE_TEST_SEND must be cli or api, not {send_via!r}",
              file=sys.stderr)
        return 2
    stack = Stack(env=env, workdir=workdir, secrets=secrets, send_via=send_via)
    if send_via == "api":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            stack.api_port = int(s.getsockname()[1])
        env["BULKMAIL_API_PUBLISH"] = f"127.0.0.1:{stack.api_port}"
    delivered = 0
    try:
        say(f"building with BASE_IMAGE={env['BASE_IMAGE']} REDIS_IMAGE={env['REDIS_IMAGE']}")
        stack.compose("build", timeout=1800)
        stack.compose("up", "-d", timeout=600)
        services = ["redis", "capture", "flower", "worker"]
        services += ["api"] if send_via == "api" else []
        for service in services:
            stack.wait_healthy(service, 1, timeout=240)
        say(f"stack healthy: {', '.join(services)} (1 worker)")
        check_exposure(stack)

        first = "ct-first"
        campaign, rows = write_campaign(workdir / first, first, FIRST_CAMPAIGN)
        send_campaign(stack, campaign, rows, first)
        wait_done(stack, first, timeout=300)
        dupes = check_accounting(stack, first, FIRST_CAMPAIGN)
        delivered += FIRST_CAMPAIGN
        say(f"{first}: {FIRST_CAMPAIGN} of {FIRST_CAMPAIGN} delivered, {dupes} duplicates")

        stack.compose("up", "-d", "--no-recreate", "--scale", "worker=3", timeout=600)
        workers = stack.wait_healthy("worker", 3, timeout=300)
        say("scaled to 3 workers")

        second = "ct-killed"
        campaign, rows = write_campaign(workdir / second, second, SECOND_CAMPAIGN)
        send_campaign(stack, campaign, rows, second)
        deadline = time.monotonic() + 300
        while int(str(stack.status(second)["sent"])) < SECOND_CAMPAIGN // 5:
            if time.monotonic() > deadline:
                raise CheckFailed(f"{second}: not 20% sent within 300s")
            time.sleep(1)
        victim = workers[-1]
        stack.run(["docker", "kill", victim])
        at_kill = stack.status(second)
        held = batches_in_flight(stack, victim)
        if at_kill["done"] or held == 0:
            raise CheckFailed(f"{second}: the killed worker held {held} batches, campaign "
                              f"done: {at_kill['done']}; nothing was tested (raise "
                              "SECOND_CAMPAIGN or lower RATE)")
        say(f"killed worker {victim[:12]} holding {held} batches, at {at_kill['sent']} of "
            f"{SECOND_CAMPAIGN} sent")
        wait_done(stack, second, timeout=VISIBILITY_TIMEOUT * 4 + 120)
        dupes = check_accounting(stack, second, SECOND_CAMPAIGN)
        delivered += SECOND_CAMPAIGN
        say(f"{second}: {SECOND_CAMPAIGN} of {SECOND_CAMPAIGN} delivered after the kill, "
            f"{dupes} sent twice (at-least-once)")
    except (CheckFailed, subprocess.TimeoutExpired) as exc:
        print(stack.logs(), file=sys.stderr)
        print(f"compose-test FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)
        stack.run(["rm", "-rf", str(workdir)], check=False)
        if we_started and not os.environ.get("COMPOSE_TEST_KEEP_ENGINE"):
            subprocess.run([str(script), "stop"], check=False)
    total = FIRST_CAMPAIGN + SECOND_CAMPAIGN
    say(f"took {time.monotonic() - started:.0f}s")
    print(f"compose-test ok: {delivered} of {total} delivered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
