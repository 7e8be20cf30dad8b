"""The HTTP API in-process (httpx ASGI transport) against a real Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config.settings import Settings
from producers.control import campaign_document
from producers.keys import KeyStore
from producers.service.app import ServiceConfig
from tests.http_support import ApiClient, api_client, settings_for
from workers.deadletter import DeadLetters
from workers.heartbeat import beat

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


@pytest.fixture
def providers(provider_name: str) -> tuple[str, str]:
    """Two providers with queues no other test uses."""
    return provider_name, provider_name + "b"


@pytest.fixture
def settings(redis_url: str, key_prefix: str, tmp_path: Path, providers: tuple[str, str],
             redis_client: redis.Redis) -> Iterator[Settings]:
    a, b = providers
    toml = "".join(f'[providers.{p}]\nkind = "smtp"\nhost = "127.0.0.1"\nport = 1\n'
                   'tls = "none"\n' for p in (a, b))
    yield settings_for(redis_url, toml, key_prefix, tmp_path)
    # no worker consumes these queues: drop the batches published to them
    for p in (a, b):
        redis_client.delete(f"bulkmail.{p}", f"_kombu.binding.bulkmail.{p}")


@pytest.fixture
def api(settings: Settings) -> Iterator[ApiClient]:
    with api_client(settings) as client:
        yield client


@pytest.fixture
def store(settings: Settings, redis_client: redis.Redis) -> KeyStore:
    return KeyStore(redis_client, settings.keys)


@pytest.fixture
def auth(store: KeyStore) -> dict[str, str]:
    return {"Authorization": f"Bearer {store.create('app').secret}"}


def campaign(provider: str, **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "from": "Shop <news@shop.test>",
            "subject": "Hello {{ name }}", "text": "Hi {{ name }}",
            "recipients": [{"email": f"u{i}@example.test", "name": f"U{i}"} for i in range(3)],
            **extra}


def stored_campaigns(client: redis.Redis, settings: Settings) -> int:
    return int(client.zcard(settings.keys.campaigns))


# -- authentication ----------------------------------------------------------------------
def test_no_wrong_or_revoked_key_is_401_and_nothing_is_stored(
        api: ApiClient, store: KeyStore, settings: Settings, redis_client: redis.Redis,
        providers: tuple[str, str]) -> None:
    new = store.create("soon-revoked")
    store.revoke("soon-revoked")
    body = campaign(providers[0], id="never")
    message = {"to": "a@example.test", "provider": providers[0], "from": "a@shop.test",
               "subject": "s", "text": "t", "message_id": "never-m"}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"},
                    {"Authorization": f"Bearer {new.secret}"}):
        for url, payload in (("/v1/campaigns", body), ("/v1/messages", message)):
            r = api.post(url, json=payload, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers["content-type"] == PROBLEM
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert api.get("/v1/campaigns/never", headers=headers).status_code == 401
    assert stored_campaigns(redis_client, settings) == 0


def test_smtp_credentials_are_not_api_keys(api: ApiClient, store: KeyStore) -> None:
    smtp = store.create("relay-app", kind="smtp")
    assert smtp.as_dict() == {"name": "relay-app", "username": "relay-app",
                              "password": smtp.secret}
    assert api.get("/v1/suppressions",
                   headers={"Authorization": f"Bearer {smtp.secret}"}).status_code == 401
    assert store.authenticate_smtp("relay-app", smtp.secret) is not None
    assert store.authenticate_smtp("other", smtp.secret) is None
    assert store.authenticate_smtp("relay-app", smtp.secret + "x") is None


def test_keys_are_stored_as_sha256_only(store: KeyStore, redis_client: redis.Redis,
                                        settings: Settings) -> None:
    new = store.create("hashed")
    dump = b"".join(v for v in redis_client.hvals(settings.keys.api_keys))
    assert new.secret.encode() not in dump
    assert json.loads(redis_client.hget(settings.keys.api_keys, "hashed"))["sha256"] == \
        new.key.sha256
    assert len(new.secret) >= 43  # 32 random bytes, base64url


def test_a_key_limited_to_a_provider_cannot_use_another(
        api: ApiClient, store: KeyStore, settings: Settings, redis_client: redis.Redis,
        providers: tuple[str, str]) -> None:
    a, b = providers
    only_a = {"Authorization": f"Bearer {store.create('only-a', providers=[a]).secret}"}
    r = api.post("/v1/campaigns", json=campaign(b, id="via-b"), headers=only_a)
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
    assert r.json()["errors"][0]["field"] == "provider"
    r = api.post("/v1/messages", json={"to": "a@example.test", "provider": b,
                                       "from": "a@shop.test", "subject": "s", "text": "t"},
                 headers=only_a)
    assert r.status_code == 403
    assert stored_campaigns(redis_client, settings) == 0
    r = api.post("/v1/campaigns", json=campaign(a, id="via-a"), headers=only_a)
    assert r.status_code == 202 and r.json()["id"] == "via-a"
    # and it cannot read, pause or list campaigns of the other provider
    all_keys = {"Authorization": f"Bearer {store.create('all').secret}"}
    assert api.post("/v1/campaigns", json=campaign(b, id="on-b"),
                    headers=all_keys).status_code == 202
    assert api.get("/v1/campaigns/on-b", headers=only_a).status_code == 403
    assert api.post("/v1/campaigns/on-b/pause", headers=only_a).status_code == 403


# -- campaigns -----------------------------------------------------------------------------
def test_json_campaign_is_enqueued_once_by_id_and_by_idempotency_key(
        api: ApiClient, auth: dict[str, str], settings: Settings, redis_client: redis.Redis,
        providers: tuple[str, str]) -> None:
    body = campaign(providers[0], id="spring")
    first = api.post("/v1/campaigns", json=body, headers=auth)
    assert first.status_code == 202, first.text
    assert first.json() | {"id": "spring"} == {"id": "spring", "created": True,
                                               "resumed": False, "rows": 3, "queued": 3,
                                               "invalid": 0, "batches": 1}
    again = api.post("/v1/campaigns", json=body, headers=auth)
    assert again.status_code == 202 and again.json()["created"] is False
    changed = api.post("/v1/campaigns", json={**body, "subject": "Other"}, headers=auth)
    assert changed.status_code == 409 and changed.json()["errors"][0]["field"] == "id"

    no_id = campaign(providers[0])
    one = api.post("/v1/campaigns", json=no_id, headers={**auth, "Idempotency-Key": "k-1"})
    two = api.post("/v1/campaigns", json=no_id, headers={**auth, "Idempotency-Key": "k-1"})
    assert one.status_code == two.status_code == 202
    assert one.json()["id"] == two.json()["id"]
    assert (one.json()["created"], two.json()["created"]) == (True, False)
    other = api.post("/v1/campaigns", json=no_id, headers={**auth, "Idempotency-Key": "k-2"})
    assert other.json()["id"] != one.json()["id"]
    assert stored_campaigns(redis_client, settings) == 3
    counts = redis_client.hgetall(settings.keys.counts("spring"))
    assert counts[b"queued"] == b"3"


@pytest.mark.parametrize(("change", "field", "text"), [
    ({"provider": "nope"}, "provider", "unknown provider 'nope'"),
    ({"subject": "{{ broken"}, None, "subject"),
    ({"text_file": "/etc/passwd", "text": None}, "text_file", "inline or as an uploaded part"),
    ({"from": ""}, "from", "non-empty string"),
    ({"bogus": 1}, None, "unknown field(s) 'bogus'"),
    ({"recipients": "a@example.test"}, "recipients", "must be a list"),
    ({"recipients": [{"email": "a@example.test"}, 7]}, "recipients[1]", "row 2"),
    ({"id": "../x"}, "id", "must be 1-64 letters"),
])
def test_invalid_campaigns_are_problems_naming_the_field(
        api: ApiClient, auth: dict[str, str], settings: Settings, redis_client: redis.Redis,
        providers: tuple[str, str], change: dict[str, Any], field: str | None, text: str
        ) -> None:
    body = {k: v for k, v in {**campaign(providers[0]), **change}.items() if v is not None}
    r = api.post("/v1/campaigns", json=body, headers=auth)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["status"] == 422 and text in problem["detail"]
    if field is not None:
        assert problem["errors"][0]["field"] == field
    assert stored_campaigns(redis_client, settings) == 0


def test_bad_rows_end_invalid_like_bulkmail_send(
        api: ApiClient, auth: dict[str, str], providers: tuple[str, str]) -> None:
    body = campaign(providers[0], id="rows")
    body["recipients"] += [{"email": "not an address"}, {"email": "u0@example.test"}]
    r = api.post("/v1/campaigns", json=body, headers=auth)
    assert r.status_code == 202 and (r.json()["queued"], r.json()["invalid"]) == (3, 2)
    listed = api.get("/v1/campaigns/rows/recipients?state=invalid", headers=auth).json()
    reasons = {e["row"]: e["reason"] for e in listed["entries"]}
    assert set(reasons) == {4, 5} and "duplicate of row 1" in reasons[5]


def test_not_json_and_wrong_media_type(api: ApiClient, auth: dict[str, str]) -> None:
    r = api.post("/v1/campaigns", content=b"{nope", headers={
        **auth, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    r = api.post("/v1/campaigns", content=b"x", headers={**auth, "Content-Type": "text/plain"})
    assert r.status_code == 415


def test_multipart_campaign_with_an_uploaded_list_and_body(
        api: ApiClient, auth: dict[str, str], settings: Settings, redis_client: redis.Redis,
        providers: tuple[str, str]) -> None:
    toml = f'id = "upload"\nprovider = "{providers[0]}"\nfrom = "a@shop.test"\nsubject = "Hi"\n'
    rows = "email,name\n" + "".join(f"u{i}@example.test,U{i}\n" for i in range(1200))
    r = api.post("/v1/campaigns", headers=auth, files={
        "campaign": ("spring.toml", toml.encode(), "application/toml"),
        "recipients": ("list.csv", rows.encode(), "text/csv"),
        "html": ("body.html", b"<p>Hello {{ name }}</p>", "text/html"),
    })
    assert r.status_code == 202, r.text
    assert (r.json()["id"], r.json()["queued"], r.json()["batches"]) == ("upload", 1200, 3)
    spec = json.loads(redis_client.hget(settings.keys.campaign("upload"), "spec"))
    assert spec["html"] == "<p>Hello {{ name }}</p>"

    jsonl = "".join(json.dumps({"email": f"j{i}@example.test"}) + "\n" for i in range(5))
    r = api.post("/v1/campaigns", headers=auth, files={
        "campaign": ("c.toml", toml.replace("upload", "upload-jsonl").encode() + b'text = "x"\n'),
        "recipients": ("people.jsonl", jsonl.encode(), "application/octet-stream"),
    })
    assert r.status_code == 202 and r.json()["queued"] == 5


def test_multipart_errors_name_the_upload_not_the_server_path(
        api: ApiClient, auth: dict[str, str], settings: Settings, redis_client: redis.Redis,
        providers: tuple[str, str]) -> None:
    toml = f'provider = "{providers[0]}"\nfrom = "a@shop.test"\nsubject = "Hi"\ntext = "x"\n'
    r = api.post("/v1/campaigns", headers=auth, files={
        "campaign": ("c.toml", toml.encode()),
        "recipients": ("list.csv", b"name\nAnn\n", "text/csv")})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "list.csv: the CSV has no 'email' column (columns: name)"
    r = api.post("/v1/campaigns", headers=auth, files={
        "campaign": ("c.toml", toml.encode() + b'html_file = "/etc/passwd"\n'),
        "recipients": ("list.csv", b"email\na@example.test\n")})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "html_file"
    r = api.post("/v1/campaigns", headers=auth, files={
        "campaign": ("c.toml", b"provider = "),
        "recipients": ("list.csv", b"email\na@example.test\n")})
    assert r.status_code == 422 and "c.toml: not valid TOML" in r.json()["detail"]
    r = api.post("/v1/campaigns", headers=auth, files={"campaign": ("c.toml", toml.encode())})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "recipients"
    r = api.post("/v1/campaigns", headers=auth, files={
        "campaign": ("c.toml", toml.encode()), "recipients": ("list.xlsx", b"x")})
    assert r.status_code == 422 and "unknown recipient file type" in r.json()["detail"]
    assert stored_campaigns(redis_client, settings) == 0


# -- messages ------------------------------------------------------------------------------
def test_messages_single_and_list_idempotent(
        api: ApiClient, auth: dict[str, str], settings: Settings, redis_client: redis.Redis,
        providers: tuple[str, str]) -> None:
    msg = {"to": "ann@example.test", "provider": providers[0], "from": "Shop <a@shop.test>",
           "subject": "Order {{ n }}", "text": "Hi", "variables": {"n": 7},
           "headers": {"X-Tag": "t"}}
    r = api.post("/v1/messages", json={**msg, "message_id": "order-7"}, headers=auth)
    assert r.status_code == 202 and r.json() == {"id": "order-7"}
    many = [msg, {**msg, "to": "bob@example.test"}]
    one = api.post("/v1/messages", json=many, headers={**auth, "Idempotency-Key": "batch-1"})
    two = api.post("/v1/messages", json=many, headers={**auth, "Idempotency-Key": "batch-1"})
    assert one.status_code == two.status_code == 202
    assert one.json() == two.json() and len(set(one.json()["ids"])) == 2
    assert stored_campaigns(redis_client, settings) == 3
    doc = api.get(f"/v1/campaigns/{one.json()['ids'][1]}", headers=auth).json()
    assert (doc["total"], doc["queued"]) == (1, 1)
    changed = api.post("/v1/messages", json={**msg, "subject": "x", "message_id": "order-7"},
                       headers=auth)
    assert changed.status_code == 409


@pytest.mark.parametrize(("payload", "field"), [
    ({"to": "not-an-address"}, "to"),
    ({"from": None}, "from"),
    ({"message_id": "a:b"}, "message_id"),
    ({"extra": 1}, "extra"),
])
def test_invalid_messages_are_problems(
        api: ApiClient, auth: dict[str, str], settings: Settings, redis_client: redis.Redis,
        providers: tuple[str, str], payload: dict[str, Any], field: str) -> None:
    msg = {"to": "ann@example.test", "provider": providers[0], "from": "a@shop.test",
           "subject": "s", "text": "t", **payload}
    r = api.post("/v1/messages", json={k: v for k, v in msg.items() if v is not None},
                 headers=auth)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert field in r.json()["errors"][0]["field"]
    assert stored_campaigns(redis_client, settings) == 0


# -- status, recipients, actions -----------------------------------------------------------------
def test_status_document_paging_and_actions(
        api: ApiClient, auth: dict[str, str], settings: Settings, redis_client: redis.Redis,
        providers: tuple[str, str]) -> None:
    body = campaign(providers[0], id="paged", batch_size=4)
    body["recipients"] = [{"email": f"p{i}@example.test"} for i in range(25)] + [
        {"email": "bad"}, {"email": "worse"}]
    assert api.post("/v1/campaigns", json=body, headers=auth).status_code == 202

    doc = api.get("/v1/campaigns/paged", headers=auth).json()
    assert doc == campaign_document(redis_client, settings.keys, "paged")
    assert (doc["total"], doc["queued"], doc["invalid"], doc["paused"]) == (27, 25, 2, False)
    assert api.get("/v1/campaigns/none", headers=auth).status_code == 404

    rows: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": 6} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/campaigns/paged/recipients", params=params, headers=auth).json()
        rows += [e["row"] for e in page["entries"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(rows) == list(range(1, 28)) and pages >= 5
    queued = api.get("/v1/campaigns/paged/recipients?state=queued&limit=1000",
                     headers=auth).json()
    assert len(queued["entries"]) == 25 and queued["next_cursor"] is None
    assert api.get("/v1/campaigns/paged/recipients?state=nope",
                   headers=auth).status_code == 422
    assert api.get("/v1/campaigns/paged/recipients?cursor=zz",
                   headers=auth).status_code == 400

    paused = api.post("/v1/campaigns/paged/pause", headers=auth).json()
    assert (paused["paused"], paused["paused_by"]) == (True, "api:app")
    assert isinstance(paused["paused_at"], float)
    resumed = api.post("/v1/campaigns/paged/resume", headers=auth).json()
    assert resumed["paused"] is False and resumed["resumed_by"] == "api:app"
    cancelled = api.post("/v1/campaigns/paged/cancel", headers=auth).json()
    assert (cancelled["cancelled"], cancelled["queued"], cancelled["done"]) == (25, 0, True)
    assert api.post("/v1/campaigns/none/pause", headers=auth).status_code == 404


# -- suppressions and dead letters -----------------------------------------------------------------
def test_suppressions_and_dead_letters(
        api: ApiClient, auth: dict[str, str], store: KeyStore, settings: Settings,
        redis_client: redis.Redis, providers: tuple[str, str]) -> None:
    r = api.post("/v1/suppressions", json={"addresses": ["A@example.test", "b@example.test"],
                                           "reason": "unsubscribed"}, headers=auth)
    assert r.status_code == 200 and r.json() == {"added": 2}
    listed = api.get("/v1/suppressions", headers=auth).json()
    assert {e["address"]: e["source"] for e in listed["entries"]} == {
        "a@example.test": "api:app", "b@example.test": "api:app"}
    assert api.post("/v1/suppressions", json={"address": "nope"},
                    headers=auth).status_code == 422
    assert api.post("/v1/suppressions", json={}, headers=auth).status_code == 422
    assert api.delete("/v1/suppressions?address=a@example.test",
                      headers=auth).status_code == 204
    assert api.delete("/v1/suppressions?address=a@example.test",
                      headers=auth).status_code == 404

    letters = DeadLetters(redis_client, settings.keys)
    letters.record("c1", 3, "x@example.test", "550 no", 8, providers[0])
    letters.record("c2", 1, "y@example.test", "550 no", 8, providers[1])
    page = api.get("/v1/dead-letters", headers=auth).json()
    assert {(e["campaign_id"], e["row"]) for e in page["entries"]} == {("c1", 3), ("c2", 1)}
    only_a = {"Authorization": f"Bearer {store.create('a', providers=[providers[0]]).secret}"}
    page = api.get("/v1/dead-letters", headers=only_a).json()
    assert [e["campaign_id"] for e in page["entries"]] == ["c1"]
    page = api.get("/v1/dead-letters?campaign=c2", headers=auth).json()
    assert [e["campaign_id"] for e in page["entries"]] == ["c2"]


# -- health ------------------------------------------------------------------------------------
def test_health_and_readiness_follow_worker_heartbeats(
        api: ApiClient, settings: Settings, redis_client: redis.Redis,
        providers: tuple[str, str]) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    r = api.get("/readyz")
    assert r.status_code == 503 and r.json()["workers"] == dict.fromkeys(providers)
    beat(redis_client, settings.keys, [providers[0]], "node-1")
    r = api.get("/readyz")
    assert r.status_code == 503 and r.json()["workers"][providers[0]]["node"] == "node-1"
    beat(redis_client, settings.keys, providers, "node-1")
    r = api.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_readiness_without_redis(tmp_path: Path, providers: tuple[str, str]) -> None:
    from producers.capture import free_port

    settings = settings_for(f"redis://127.0.0.1:{free_port()}/0",
                            f'[providers.{providers[0]}]\nkind = "smtp"\nhost = "h"\n',
                            "unused", tmp_path)
    with api_client(settings) as api:
        r = api.get("/readyz")
        assert r.status_code == 503 and "did not answer" in r.json()["detail"]
        r = api.get("/v1/suppressions", headers={"Authorization": "Bearer x"})
        assert r.status_code == 503 and r.headers["content-type"] == PROBLEM


# -- limits ---------------------------------------------------------------------------------------
def test_bodies_over_the_limit_are_413(settings: Settings, auth: dict[str, str],
                                       redis_client: redis.Redis, providers: tuple[str, str]
                                       ) -> None:
    config = ServiceConfig.build(max_body=2000, max_upload=4000)
    body = campaign(providers[0], id="big")
    body["recipients"] = [{"email": f"u{i}@example.test"} for i in range(200)]
    with api_client(settings, config) as api:
        r = api.post("/v1/campaigns", json=body, headers=auth)
        assert r.status_code == 413 and r.headers["content-type"] == PROBLEM

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            data = json.dumps(body).encode()
            for i in range(0, len(data), 500):
                yield data[i:i + 500]

        r = api.post("/v1/campaigns", content=chunks(),
                     headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 413
        rows = b"email\n" + b"".join(b"u%d@example.test\n" % i for i in range(400))
        r = api.post("/v1/campaigns", headers=auth, files={
            "campaign": ("c.toml", b'provider = "x"\n'), "recipients": ("l.csv", rows)})
        assert r.status_code == 413
    assert stored_campaigns(redis_client, settings) == 0


def test_each_key_has_its_own_request_rate(settings: Settings, store: KeyStore) -> None:
    config = ServiceConfig.build(rate="2/m", burst=2)
    first = {"Authorization": f"Bearer {store.create('first').secret}"}
    second = {"Authorization": f"Bearer {store.create('second').secret}"}
    with api_client(settings, config) as api:
        codes = [api.get("/v1/suppressions", headers=first).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = api.get("/v1/suppressions", headers=first)
        assert r.status_code == 429 and r.headers["content-type"] == PROBLEM
        assert 1 <= int(r.headers["retry-after"]) <= 30
        assert api.get("/v1/suppressions", headers=second).status_code == 200


def test_openapi_document_is_served(api: ApiClient) -> None:
    doc = api.get("/openapi.json").json()
    for path in ("/v1/campaigns", "/v1/messages", "/v1/campaigns/{campaign_id}",
                 "/v1/campaigns/{campaign_id}/recipients", "/v1/campaigns/{campaign_id}/pause",
                 "/v1/campaigns/{campaign_id}/resume", "/v1/campaigns/{campaign_id}/cancel",
                 "/v1/suppressions", "/v1/dead-letters", "/healthz", "/readyz"):
        assert path in doc["paths"], path
    assert api.get("/docs").status_code == 200
