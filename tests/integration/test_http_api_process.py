"""The HTTP API as it runs: ``bulkmail api`` (uvicorn) in its own process, keys made with
``bulkmail keys``, a real worker and SMTP server behind it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from producers.capture import CaptureServer, free_port
from producers.demo import stop_workers
from tests.integration.conftest import ROOT, run_cli, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], str]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> str:
        port = free_port()
        log = (tmp_path / f"api-{len(procs)}.log").open("wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "producers", "api", "--port", str(port), "--rate", "50/s"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(up, timeout=30), (tmp_path / f"api-{len(procs) - 1}.log").read_text()
        return base

    yield start
    for proc in procs:
        stop_workers(proc, timeout=10)


def test_api_process_with_cli_keys_and_a_worker(
        smtp_server: CaptureServer, provider_name: str,
        bulkmail_env: Callable[[str], dict[str, str]], forget_queue: None,
        start_worker: Callable[..., object], start_api: Callable[[dict[str, str]], str]
        ) -> None:
    env = bulkmail_env(f'[providers.{provider_name}]\nkind = "smtp"\nhost = "127.0.0.1"\n'
                       f'port = {smtp_server.port}\ntls = "none"\n')
    made = run_cli(["keys", "create", "shop", "--json"], env)
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert set(created) == {"name", "key"} and created["name"] == "shop"
    smtp = json.loads(run_cli(["keys", "create", "relay", "--smtp", "--json",
                               "--providers", provider_name], env).stdout)
    assert set(smtp) == {"name", "username", "password"} and smtp["username"] == "relay"
    bad = run_cli(["keys", "create", "x", "--providers", "nope"], env)
    assert bad.returncode == 2 and "unknown provider(s) nope" in bad.stderr
    dup = run_cli(["keys", "create", "shop"], env)
    assert dup.returncode == 2 and "exists already" in dup.stderr
    listed = json.loads(run_cli(["keys", "list", "--json"], env).stdout)
    assert [(k["name"], k["kind"], k["providers"]) for k in listed] == [
        ("relay", "smtp", [provider_name]), ("shop", "api", None)]
    assert created["key"] not in json.dumps(listed)

    base = start_api(env)
    auth = {"Authorization": f"Bearer {created['key']}"}
    assert httpx.get(f"{base}/readyz").status_code == 503  # no worker yet
    start_worker(provider_name, env, concurrency=1)
    assert wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=60)

    r = httpx.post(f"{base}/v1/messages", headers={**auth, "Idempotency-Key": "welcome-ann"},
                   json={"to": "ann@example.test", "provider": provider_name,
                         "from": "Shop <news@shop.test>", "subject": "Welcome {{ name }}",
                         "text": "Hello {{ name }}", "variables": {"name": "Ann"}})
    assert r.status_code == 202, r.text
    mid = r.json()["id"]
    r = httpx.post(f"{base}/v1/campaigns", headers=auth, files={
        "campaign": ("c.toml", f'id = "proc"\nprovider = "{provider_name}"\n'
                               'from = "a@shop.test"\nsubject = "Hi"\ntext = "x"\n'.encode()),
        "recipients": ("l.csv", b"email\n" + b"".join(b"u%d@example.test\n" % i
                                                      for i in range(50)))})
    assert r.status_code == 202, r.text

    def done(cid: str) -> bool:
        return bool(httpx.get(f"{base}/v1/campaigns/{cid}", headers=auth).json()["done"])

    assert wait_until(lambda: done(mid) and done("proc"), timeout=60)
    assert smtp_server.by_recipient["ann@example.test"] == 1
    assert smtp_server.received == 51
    doc = httpx.get(f"{base}/v1/campaigns/proc", headers=auth).json()
    cli = run_cli(["status", "proc", "--json"], env)
    assert json.loads(cli.stdout) == doc
    assert (doc["sent"], doc["total"]) == (50, 50)

    revoked = run_cli(["keys", "revoke", "shop"], env)
    assert revoked.returncode == 0, revoked.stderr
    r = httpx.get(f"{base}/v1/campaigns/proc", headers=auth)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert run_cli(["keys", "revoke", "shop"], env).returncode == 2
