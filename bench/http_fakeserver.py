"""The fake HTTP providers of ``tests/fakes`` served over real HTTP/1.1 keep-alive.

    .venv/bin/python bench/http_fakeserver.py --port 8025            # serve until killed
    .venv/bin/python bench/http_fakeserver.py --selftest             # measure it alone

Worker processes reach providers over the network, so the benchmarks need the fakes
behind a real socket: one process, one uvloop event loop, an ``asyncio.Protocol`` per
connection, requests read by ``Content-Length`` (what httpx sends), keep-alive unless
the client says ``Connection: close``. Every kind lives on its own path, so one server
on one port stands for all of them:

==========  =============================================  ===============================
kind        path                                           credential (env var)
==========  =============================================  ===============================
sendgrid    ``POST /v3/mail/send``                         ``Bearer $FAKE_SENDGRID_KEY``
mailgun     ``POST /v3/{FAKE_MAILGUN_DOMAIN}/messages``    ``Basic api:$FAKE_MAILGUN_KEY``
postmark    ``POST /email/batch``, ``/email``              ``$FAKE_POSTMARK_TOKEN``
resend      ``POST /emails/batch``, ``/emails``            ``Bearer $FAKE_RESEND_KEY``
ses         ``POST /v2/email/outbound-emails``             SigV4, ``$FAKE_SES_KEY_ID``...
http        ``POST /send``                                 ``Bearer $FAKE_HTTP_KEY``
==========  =============================================  ===============================

Two modes (``--mode``):

* ``minimal`` (default): small handlers implementing each provider's documented
  *success* contract (docs/providers.md): the credential is checked (SES: the SigV4 header's
  shape and key id, not the signature), the batch is parsed and counted against the
  provider's limit, and the answer has the provider's shape (SendGrid 202 + X-Message-Id,
  Mailgun ``{id, message}``, Postmark one ``{ErrorCode: 0, MessageID, ...}`` per element,
  Resend ``{data: [{id}]}``, SES ``{MessageId}``, generic ``{results: [{id}]}``). Anything
  else answers 4xx and is counted as an error.
* ``fakes``: the ``tests/fakes`` handlers themselves (full validation, SigV4 checked for
  real, each recipient's message reassembled): the reference, several times costlier.

``GET /_stats`` answers ``{"cpu": seconds, "kinds": {kind: {requests, messages, errors,
bytes}}}``, counting since start; a benchmark takes differences. ``messages`` are the
messages the provider accepted (individual recipients for Mailgun).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

__all__ = ["KINDS", "Counters", "FakeServer", "Reply", "expected_env", "main"]

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests/fakes is not an installed package
    sys.path.insert(0, str(ROOT))

KINDS = ("sendgrid", "mailgun", "postmark", "resend", "ses", "http")

#: environment variables holding the credentials the server expects, and their defaults
ENV_DEFAULTS = {
    "FAKE_SENDGRID_KEY": "SG.bench-key",
    "FAKE_MAILGUN_KEY": "key-bench",
    "FAKE_MAILGUN_DOMAIN": "mg.bench.test",
    "FAKE_POSTMARK_TOKEN": "pm-bench-token",
    "FAKE_RESEND_KEY": "re_bench_key",
    "FAKE_SES_KEY_ID": "AKIDBENCH",
    "FAKE_SES_SECRET": "bench-secret",
    "FAKE_SES_REGION": "us-east-1",
    "FAKE_SES_VERIFIED": "shop.test,example.com",
    "FAKE_HTTP_KEY": "http-bench-key",
}

_JSON = (b"content-type", b"application/json")
_REASONS = {200: b"OK", 202: b"Accepted", 400: b"Bad Request", 401: b"Unauthorized",
            403: b"Forbidden", 404: b"Not Found", 413: b"Payload Too Large",
            422: b"Unprocessable Entity", 500: b"Internal Server Error"}


def expected_env() -> dict[str, str]:
    """The credentials this server expects (environment, else the defaults)."""
    return {k: os.environ.get(k) or v for k, v in ENV_DEFAULTS.items()}


@dataclass(slots=True)
class Reply:
    """An answer: status, headers (raw bytes pairs) and body."""

    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: messages this request carried that the provider accepted
    messages: int = 0

    @classmethod
    def json(cls, status: int, value: Any, *, messages: int = 0,
             headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
        body = json.dumps(value, separators=(",", ":")).encode()
        return cls(status, body, [_JSON, *(headers or [])], messages)


@dataclass(slots=True)
class Counters:
    requests: int = 0
    messages: int = 0
    errors: int = 0
    bytes: int = 0


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes


Handler = Callable[[Request], Reply]


def kind_of(path: str) -> str | None:
    if path == "/v3/mail/send":
        return "sendgrid"
    if path.startswith("/v3/") and path.endswith("/messages"):
        return "mailgun"
    if path in ("/email/batch", "/email"):
        return "postmark"
    if path in ("/emails/batch", "/emails"):
        return "resend"
    if path == "/v2/email/outbound-emails":
        return "ses"
    if path == "/send":
        return "http"
    return None


# -- minimal handlers: the documented success contract, cheaply -----------------------------

class MinimalHandlers:
    """One cheap handler per kind; see the module docstring."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._ids = itertools.count(1)
        token = base64.b64encode(f"api:{env['FAKE_MAILGUN_KEY']}".encode()).decode()
        self._mailgun_auth = f"Basic {token}"
        self._mailgun_path = f"/v3/{env['FAKE_MAILGUN_DOMAIN']}/messages"
        self._ses_prefix = f"AWS4-HMAC-SHA256 Credential={env['FAKE_SES_KEY_ID']}/"
        self._ses_verified = {d.strip() for d in env["FAKE_SES_VERIFIED"].split(",")}

    def handlers(self) -> dict[str, Handler]:
        return {"sendgrid": self.sendgrid, "mailgun": self.mailgun, "postmark": self.postmark,
                "resend": self.resend, "ses": self.ses, "http": self.http}

    def _id(self) -> str:
        return f"{next(self._ids):012x}-bench"

    def sendgrid(self, req: Request) -> Reply:
        if req.headers.get("authorization") != f"Bearer {self.env['FAKE_SENDGRID_KEY']}":
            return Reply.json(401, {"errors": [{"field": None, "message": "bad key"}]})
        body = json.loads(req.body)
        ps = body.get("personalizations")
        if not isinstance(ps, list) or not ps or len(ps) > 1000:
            return Reply.json(400, {"errors": [{"field": "personalizations",
                                                "message": "1 to 1000 personalizations"}]})
        if not body.get("from", {}).get("email") or not body.get("content"):
            return Reply.json(400, {"errors": [{"field": "from.email", "message": "missing"}]})
        if body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable"):
            return Reply(200, messages=len(ps))
        return Reply(202, headers=[(b"x-message-id", self._id().encode())], messages=len(ps))

    def mailgun(self, req: Request) -> Reply:
        if req.headers.get("authorization") != self._mailgun_auth:
            return Reply(401, b"Forbidden")
        if req.path != self._mailgun_path:
            return Reply.json(404, {"message": "Domain not found"})
        ctype = req.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data; boundary="):
            return Reply.json(400, {"message": "bench fake: multipart only"})
        boundary = ctype.split("boundary=", 1)[1].encode()
        tos = req.body.count(b'name="to"\r\n')
        marker = b'name="recipient-variables"\r\n\r\n'
        start = req.body.find(marker)
        if start < 0:
            return Reply.json(400, {"message": "bench fake: recipient-variables expected"})
        start += len(marker)
        end = req.body.find(b"\r\n--" + boundary, start)
        variables = json.loads(req.body[start:end])
        if not tos or tos > 1000 or len(variables) != tos:
            return Reply.json(400, {"message": f"Too many recipients or variables ({tos})"})
        return Reply.json(200, {"id": f"<{self._id()}@{self.env['FAKE_MAILGUN_DOMAIN']}>",
                                "message": "Queued. Thank you."}, messages=tos)

    def postmark(self, req: Request) -> Reply:
        if req.headers.get("x-postmark-server-token") not in (
                self.env["FAKE_POSTMARK_TOKEN"], "POSTMARK_API_TEST"):
            return Reply.json(401, {"ErrorCode": 10, "Message": "bad token"})
        body = json.loads(req.body)
        single = req.path == "/email"
        elements = [body] if single else body
        if not isinstance(elements, list) or len(elements) > 500:
            return Reply.json(422, {"ErrorCode": 410, "Message": "at most 500 messages"})
        out = []
        for e in elements:
            if e.get("From") and e.get("To") and (e.get("TextBody") or e.get("HtmlBody")):
                out.append({"ErrorCode": 0, "Message": "OK", "MessageID": self._id(),
                            "SubmittedAt": "2024-01-01T00:00:00Z", "To": e["To"]})
            else:
                out.append({"ErrorCode": 300, "Message": "Invalid request"})
        ok = sum(1 for o in out if o["ErrorCode"] == 0)
        return Reply.json(200, out[0] if single else out, messages=ok)

    def resend(self, req: Request) -> Reply:
        if req.headers.get("authorization") != f"Bearer {self.env['FAKE_RESEND_KEY']}":
            return Reply.json(403, {"statusCode": 403, "name": "invalid_api_key",
                                    "message": "API key is invalid"})
        body = json.loads(req.body)
        if req.path == "/emails":
            return Reply.json(200, {"id": self._id()}, messages=1)
        if not isinstance(body, list) or not body or len(body) > 100:
            return Reply.json(422, {"statusCode": 422, "name": "validation_error",
                                    "message": "1 to 100 emails"})
        if not all(e.get("from") and e.get("to") and e.get("subject") for e in body):
            return Reply.json(422, {"statusCode": 422, "name": "validation_error",
                                    "message": "from, to and subject are required"})
        answer: dict[str, Any] = {"data": [{"id": self._id()} for _ in body]}
        if req.headers.get("x-batch-validation") == "permissive":
            answer["errors"] = []
        return Reply.json(200, answer, messages=len(body))

    def ses(self, req: Request) -> Reply:
        auth = req.headers.get("authorization", "")
        if not auth.startswith(self._ses_prefix) or "x-amz-date" not in req.headers:
            return Reply.json(403, {"message": "Missing Authentication Token"},
                              headers=[(b"x-amzn-errortype", b"UnrecognizedClientException")])
        body = json.loads(req.body)
        sender = body.get("FromEmailAddress", "")
        domain = sender.rsplit("<", 1)[-1].rstrip(">").rpartition("@")[2]
        to = body.get("Destination", {}).get("ToAddresses", [])
        if domain not in self._ses_verified or not to or len(to) > 50:
            return Reply.json(400, {"message": f"not verified or bad destination: {domain}"},
                              headers=[(b"x-amzn-errortype", b"MessageRejected")])
        return Reply.json(200, {"MessageId": self._id()}, messages=1)

    def http(self, req: Request) -> Reply:
        if req.headers.get("authorization") != f"Bearer {self.env['FAKE_HTTP_KEY']}":
            return Reply.json(401, {"message": "bad credentials"})
        body = json.loads(req.body)
        messages = body.get("messages")
        if not isinstance(messages, list):
            return Reply.json(400, {"message": "messages must be a list"})
        return Reply.json(200, {"results": [{"id": self._id()} for _ in messages]},
                          messages=len(messages))


# -- the tests/fakes handlers, adapted ------------------------------------------------------

class FakesHandlers:
    """The ``tests/fakes`` handlers behind the socket (recording lists cleared per call)."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        from tests.fakes import (
            FakeHttpApi,
            FakeMailgun,
            FakePostmark,
            FakeResend,
            FakeSendgrid,
            FakeSes,
        )

        self.port = port
        self.fakes: dict[str, Any] = {
            "sendgrid": FakeSendgrid(env["FAKE_SENDGRID_KEY"]),
            "mailgun": FakeMailgun(env["FAKE_MAILGUN_KEY"], env["FAKE_MAILGUN_DOMAIN"]),
            "postmark": FakePostmark(env["FAKE_POSTMARK_TOKEN"]),
            "resend": FakeResend(env["FAKE_RESEND_KEY"]),
            "ses": FakeSes(key_id=env["FAKE_SES_KEY_ID"], secret=env["FAKE_SES_SECRET"],
                           region=env["FAKE_SES_REGION"],
                           verified={d.strip() for d in env["FAKE_SES_VERIFIED"].split(",")}),
            "http": FakeHttpApi(path="/send", key=env["FAKE_HTTP_KEY"], max_batch=10000),
        }

    def handlers(self) -> dict[str, Handler]:
        return {kind: self._adapt(fake) for kind, fake in self.fakes.items()}

    def _adapt(self, fake: Any) -> Handler:
        import httpx

        def handle(req: Request) -> Reply:
            host = req.headers.get("host", f"127.0.0.1:{self.port}")
            request = httpx.Request(req.method, f"http://{host}{req.path}",
                                    headers=req.raw_headers, content=req.body)
            before = len(fake.delivered) + _accepted_only(fake)
            response = _run_now(fake.handle(request))
            messages = len(fake.delivered) + _accepted_only(fake) - before
            # the fakes keep every request and delivery: fine for a test, not for 100k
            fake.requests.clear()
            fake.delivered.clear()
            headers = [(k, v) for k, v in response.headers.raw
                       if k.lower() not in (b"content-length", b"transfer-encoding")]
            return Reply(response.status_code, response.content, headers, messages)

        return handle


def _accepted_only(fake: Any) -> int:
    """Messages a fake accepted without delivering (sandbox / test mode)."""
    return int(getattr(fake, "sandboxed", 0) + getattr(fake, "validated_only", 0))


def _run_now(coro: Any) -> Any:
    """Run a coroutine that never waits (a fake without delays) to its end, now."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a fake handler waited (delay or fault configured?)")


# -- the HTTP/1.1 server --------------------------------------------------------------------

class FakeServer:
    """Routes requests to the handlers and keeps the counters."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.counters = {k: Counters() for k in KINDS}

    def dispatch(self, req: Request) -> Reply:
        if req.path == "/_stats":
            return Reply.json(200, {"cpu": time.process_time(), "pid": os.getpid(),
                                    "kinds": {k: {"requests": c.requests,
                                                  "messages": c.messages,
                                                  "errors": c.errors, "bytes": c.bytes}
                                              for k, c in self.counters.items()}})
        kind = kind_of(req.path)
        if kind is None or req.method != "POST":
            return Reply.json(404, {"message": f"no fake at {req.method} {req.path}"})
        c = self.counters[kind]
        c.requests += 1
        c.bytes += len(req.body)
        try:
            reply = self.handlers[kind](req)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            reply = Reply.json(400, {"message": f"bench fake: {type(exc).__name__}: {exc}"})
        if 200 <= reply.status < 300:
            c.messages += reply.messages
        else:
            c.errors += 1
        return reply


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: requests in order, framed by Content-Length."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self._need = 0  # bytes the current request needs before it is complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) < self._need:
            return  # a large body still arriving: do not rescan the headers
        while self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            raw: list[tuple[bytes, bytes]] = []
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                value = value.strip()
                raw.append((name.encode("latin-1"), value.encode("latin-1")))
                headers[name.lower()] = value
            if "chunked" in headers.get("transfer-encoding", ""):
                self._answer(Reply.json(501, {"message": "chunked bodies not supported"}),
                             close=True)
                return
            length = int(headers.get("content-length", "0"))
            total = end + 4 + length
            if len(self.buf) < total:
                self._need = total
                return
            body = bytes(self.buf[end + 4:total])
            del self.buf[:total]
            self._need = 0
            reply = self.server.dispatch(Request(method, path.split("?", 1)[0], headers,
                                                 raw, body))
            self._answer(reply, close=headers.get("connection", "").lower() == "close")

    def _answer(self, reply: Reply, *, close: bool) -> None:
        assert self.transport is not None
        lines = [b"HTTP/1.1 %d %s" % (reply.status, _REASONS.get(reply.status, b"Status"))]
        lines += [k + b": " + v for k, v in reply.headers]
        lines.append(b"content-length: %d" % len(reply.body))
        if close:
            lines.append(b"connection: close")
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + reply.body)
        if close:
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def build_server(mode: str, port: int) -> FakeServer:
    env = expected_env()
    handlers = (MinimalHandlers(env).handlers() if mode == "minimal"
                else FakesHandlers(env, port).handlers())
    return FakeServer(handlers)


async def serve(mode: str, host: str, port: int) -> None:
    server = build_server(mode, port)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: _Connection(server), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake providers ({mode}) on http://{host}:{port}", flush=True)
    async with srv:
        await stop.wait()


# -- self-test: the server alone, fed prebuilt product requests ------------------------------

def _product_calls(kind: str, n: int, base_url: str) -> list[tuple[bytes, int]]:
    """Raw HTTP requests (and their message counts) the product's provider builds for
    ``n`` rendered messages of ``kind``."""
    os.environ.update(expected_env())
    from config.providers import (
        HttpConfig,
        MailgunConfig,
        PostmarkConfig,
        ResendConfig,
        SendgridConfig,
        SesConfig,
    )
    from tests.fakes import make_messages
    from workers.providers import create_provider
    from workers.providers.http_base import HttpProvider

    env = expected_env()
    cfgs: dict[str, Any] = {
        "sendgrid": SendgridConfig(kind="sendgrid", base_url=base_url,
                                   api_key_env="FAKE_SENDGRID_KEY"),
        "mailgun": MailgunConfig(kind="mailgun", base_url=base_url,
                                 domain=env["FAKE_MAILGUN_DOMAIN"],
                                 api_key_env="FAKE_MAILGUN_KEY"),
        "postmark": PostmarkConfig(kind="postmark", base_url=base_url,
                                   api_key_env="FAKE_POSTMARK_TOKEN"),
        "resend": ResendConfig(kind="resend", base_url=base_url, api_key_env="FAKE_RESEND_KEY"),
        "ses": SesConfig(kind="ses", base_url=base_url, region=env["FAKE_SES_REGION"],
                         access_key_id_env="FAKE_SES_KEY_ID",
                         secret_access_key_env="FAKE_SES_SECRET"),
        "http": HttpConfig(kind="http", url=f"{base_url}/send", api_key_env="FAKE_HTTP_KEY"),
    }
    provider = create_provider(f"self-{kind}", cfgs[kind])
    assert isinstance(provider, HttpProvider)
    messages = make_messages(n, sender="Spring Shop <news@shop.test>", pad=600)
    plan = provider.plan(messages)
    import httpx

    out = []
    for call in plan.calls:
        request = httpx.Request("POST", base_url.rstrip("/") + call.path if
                                call.path.startswith("/") else call.path,
                                headers={"Content-Type": call.content_type, **call.headers},
                                content=call.body)
        provider.authorize(request)
        head = [f"POST {request.url.raw_path.decode()} HTTP/1.1",
                f"Host: {request.url.netloc.decode()}"]
        head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "host"]
        out.append(("\r\n".join(head).encode() + b"\r\n\r\n" + call.body,
                    len(call.positions)))
    return out


async def _drive(port: int, calls: list[tuple[bytes, int]], connections: int) -> int:
    """Send every call over ``connections`` keep-alive connections; count non-2xx."""
    bad = 0

    async def lane(k: int) -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for raw, _ in calls[k::connections]:
            writer.write(raw)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if not status_line.split(b" ", 2)[1].startswith(b"2"):
                bad += 1
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    await asyncio.gather(*(lane(k) for k in range(connections)))
    return bad


def selftest(mode: str, messages: int, connections: int, kinds: list[str]) -> int:
    """Start a server process and measure it alone, per kind (prints a table)."""
    import subprocess

    import uvloop

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _harness import (
        free_port,
        print_table,
        proc_cpu,
        raise_on_signals,
        stop_process,
        wait_for_port,
    )

    raise_on_signals()  # SIGTERM unwinds through the finally that stops the server
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--port", str(port), "--mode", mode],
                            stdout=subprocess.DEVNULL)
    rows = []
    try:
        wait_for_port(port, proc)
        print(f"fake server self-test: mode={mode}, {connections} keep-alive connections, "
              "requests built by the product's providers (~1 KB messages)")
        for kind in kinds:
            n = messages if kind != "ses" else min(messages, 20000)
            calls = _product_calls(kind, n, f"http://127.0.0.1:{port}")
            cpu0, t0 = proc_cpu(proc.pid), time.perf_counter()
            bad = uvloop.run(_drive(port, calls, connections))
            wall, cpu = time.perf_counter() - t0, proc_cpu(proc.pid) - cpu0
            sent = sum(m for _, m in calls)
            rows.append([kind, f"{len(calls):,}", f"{sent / len(calls):,.0f}",
                         f"{len(calls) / wall:,.0f}", f"{sent / wall:,.0f}",
                         f"{cpu / sent * 1000:.3f}",
                         f"{sent / cpu:,.0f}" if cpu else "-", str(bad)])
        print_table(["kind", "calls", "msg/call", "calls/s", "msg/s (wall)",
                     "server CPU s/1k msg", "msg/s per server core", "non-2xx"], rows)
        print("(wall figures include this Python client; the per-core column is the server's"
              " own ceiling)")
    finally:
        stop_process(proc)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8025)
    p.add_argument("--mode", choices=("minimal", "fakes"), default="minimal")
    p.add_argument("--selftest", action="store_true",
                   help="start a server and measure it alone, per kind")
    p.add_argument("--messages", type=int, default=100000, help="self-test messages per kind")
    p.add_argument("--connections", type=int, default=8, help="self-test connections")
    p.add_argument("--kinds", default=",".join(KINDS))
    args = p.parse_args(argv)
    if args.selftest:
        return selftest(args.mode, args.messages, args.connections,
                        [k.strip() for k in args.kinds.split(",") if k.strip()])
    import uvloop

    uvloop.run(serve(args.mode, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
