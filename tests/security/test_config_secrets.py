"""Secrets never appear in error messages: config errors name the variable, never its
value, and every URL shown is redacted (``user:pass@`` and ``?password=`` alike)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.errors import ConfigError
from config.settings import Settings, redact_url
from producers.api import Bulkmail
from tests.integration.conftest import run_cli

SECRET = "hunter2-Zq9"

# a secret as it would be written in a URL: percent-encoded, with a marker so that it
# cannot be a substring of the rest of the URL by chance
secrets = st.text(min_size=1, max_size=40).map(lambda s: "Zq9" + quote(s, safe=""))


@pytest.mark.parametrize("variable", ["BULKMAIL_BATCH_SIZE", "BULKMAIL_VISIBILITY_TIMEOUT",
                                      "BULKMAIL_BATCH_LOCK_TTL"])
def test_a_bad_variable_is_named_without_its_value(monkeypatch: pytest.MonkeyPatch,
                                                   variable: str) -> None:
    # someone pasted a password into the wrong variable: the error must not repeat it
    monkeypatch.setenv(variable, SECRET)
    with pytest.raises(ConfigError) as info:
        Settings.from_env()
    assert variable in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_the_python_api_reports_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKMAIL_BATCH_LOCK_TTL", SECRET)
    with pytest.raises(ConfigError, match="BULKMAIL_BATCH_LOCK_TTL") as info:
        Bulkmail()
    assert SECRET not in str(info.value)


@pytest.mark.integration
def test_the_cli_reports_a_bad_variable_without_its_value(
        bulkmail_env: Callable[[str], dict[str, str]]) -> None:
    env = {**bulkmail_env(""), "BULKMAIL_VISIBILITY_TIMEOUT": SECRET}
    out = run_cli(["status"], env)
    assert out.returncode == 2
    assert "BULKMAIL_VISIBILITY_TIMEOUT" in out.stderr
    assert SECRET not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


@given(user=st.sampled_from(["", "default", "app"]), password=secrets,
       query_secret=secrets, param=st.sampled_from(["password", "PASSWORD", "token", "pwd"]))
def test_redact_url_hides_every_password(user: str, password: str, query_secret: str,
                                         param: str) -> None:
    url = (f"redis://{user}:{password}@cache.internal:6380/2"
           f"?{param}={query_secret}&ssl_cert_reqs=none")
    shown = redact_url(url)
    assert password not in shown and query_secret not in shown
    assert shown == (f"redis://{user}:***@cache.internal:6380/2"
                     f"?{param}=***&ssl_cert_reqs=none")


@given(first=secrets, second=secrets)
def test_redact_url_covers_each_url_of_a_failover_list(first: str, second: str) -> None:
    shown = redact_url(f"sentinel://:{first}@a:26379;sentinel://:{second}@b:26379")
    assert shown == "sentinel://:***@a:26379;sentinel://:***@b:26379"


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://app@cache:6379/1",
                                 "redis://cache/0?db=3&socket_timeout=5", "unix:///tmp/r.sock"])
def test_redact_url_leaves_urls_without_passwords_alone(url: str) -> None:
    assert redact_url(url) == url


def test_unreachable_redis_error_hides_the_query_password() -> None:
    from config.errors import RedisUnavailableError
    from producers.connect import connect_redis

    settings = Settings(redis_url=f"redis://127.0.0.1:1/0?password={SECRET}")
    with pytest.raises(RedisUnavailableError, match=r"password=\*\*\*") as info:
        connect_redis(settings)
    assert SECRET not in str(info.value)
