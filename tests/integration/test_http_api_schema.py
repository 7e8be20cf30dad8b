"""Schemathesis against the OpenAPI document: generated requests to every operation, with
a valid key, never get a 5xx (bounded: a few dozen examples per operation).

Uses schemathesis' Python API (operations as Hypothesis strategies) inside one pytest
test: its ``from_fixture`` pytest integration does not run under pytest 9."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings

from producers.keys import KeyStore
from producers.service.app import ServiceConfig, create_app
from tests.http_support import settings_for
from workers.heartbeat import beat

pytestmark = pytest.mark.integration

EXAMPLES = 20


def test_no_generated_request_gets_a_server_error(
        redis_url: str, key_prefix: str, tmp_path: Path, provider_name: str,
        redis_client: redis.Redis) -> None:
    config = settings_for(redis_url, f'[providers.{provider_name}]\nkind = "smtp"\n'
                          'host = "127.0.0.1"\nport = 1\ntls = "none"\n', key_prefix, tmp_path)
    app = create_app(config, ServiceConfig.build(rate="100000/s"))
    auth = {"Authorization": f"Bearer {KeyStore(redis_client, config.keys).create('fz').secret}"}
    beat(redis_client, config.keys, [provider_name], "fuzz")  # /readyz: 503 is by design
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    seen: dict[str, set[int]] = {}
    try:
        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def call(case: Any) -> None:
                response = case.call(headers=auth)
                seen.setdefault(f"{case.method} {case.operation.path}", set()).add(
                    response.status_code)
                assert response.status_code < 500, (case.method, case.formatted_path,
                                                    case.body, response.text)

            call()
    finally:
        redis_client.delete(f"bulkmail.{provider_name}",
                            f"_kombu.binding.bulkmail.{provider_name}")
    # every operation was reached, and some requests got past validation
    assert len(seen) == len(operations)
    assert any(code < 300 for codes in seen.values() for code in codes)
