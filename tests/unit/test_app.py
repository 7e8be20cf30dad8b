"""The Celery app is built by ``create_app(settings)``; importing bulkmail reads no
environment (a broken ``BULKMAIL_*`` only matters to whoever builds settings from it)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.settings import Settings
from workers.app import BulkmailApp, create_app, settings_of
from workers.publish import TASK_NAME

ROOT = Path(__file__).resolve().parents[2]
#: every variable set to a value Settings refuses
BROKEN_ENV = {"BULKMAIL_BATCH_SIZE": "0", "BULKMAIL_VISIBILITY_TIMEOUT": "hunter2",
              "BULKMAIL_BATCH_LOCK_TTL": "-1"}


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


def _all_modules() -> list[str]:
    names = []
    for package in ("config", "producers", "workers"):
        names.append(package)
        path = [str(ROOT / package)]
        names += [m.name for m in pkgutil.walk_packages(path, prefix=f"{package}.")
                  if m.name != "producers.__main__"]
    return names


def test_the_issue_command_imports_with_a_broken_environment() -> None:
    out = _python("import producers.api, producers.enqueue, workers.tasks, workers.delivery",
                  {"BULKMAIL_BATCH_SIZE": "0"})
    assert out.returncode == 0, out.stderr


def test_no_module_builds_settings_at_import() -> None:
    modules = _all_modules()
    assert "workers.app" in modules and "producers.cli" in modules
    out = _python(f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n",
                  BROKEN_ENV)
    assert out.returncode == 0, out.stderr


def test_celery_entry_is_built_from_the_environment_on_first_use() -> None:
    code = ("import workers.app as m\nassert 'app' not in vars(m)\n"
            "print(m.app.conf.broker_transport_options['visibility_timeout'], "
            "m.app.settings.key_prefix, m.app is m.app)")
    out = _python(code, {"BULKMAIL_VISIBILITY_TIMEOUT": "120", "BULKMAIL_KEY_PREFIX": "p9"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["120", "p9", "True"]


def test_celery_entry_with_a_broken_environment_names_the_variable() -> None:
    out = _python("import workers.app as m\nm.app", BROKEN_ENV)
    assert out.returncode != 0
    assert "ConfigError" in out.stderr and "BULKMAIL_VISIBILITY_TIMEOUT" in out.stderr
    assert "hunter2" not in out.stderr


def test_create_app_uses_the_settings_it_is_given() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6379/3", visibility_timeout=600,
                        broker_url="redis://127.0.0.1:6379/4", key_prefix="given")
    app = create_app(settings)
    assert isinstance(app, BulkmailApp)
    assert settings_of(app) is settings
    assert app.conf.broker_url == "redis://127.0.0.1:6379/4"
    assert app.conf.broker_transport_options["visibility_timeout"] == 600
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1


def test_every_app_has_the_batch_task() -> None:
    import workers.tasks  # noqa: F401  (what a worker imports at start: `include`)

    first, second = (create_app(Settings(key_prefix=p)) for p in ("a", "b"))
    assert TASK_NAME in first.tasks and TASK_NAME in second.tasks
    assert first.tasks[TASK_NAME].app is first


def test_settings_of_another_app_is_none() -> None:
    from celery import Celery

    assert settings_of(Celery("other")) is None


def test_settings_from_env_turns_a_bad_variable_into_a_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKMAIL_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match="BULKMAIL_BATCH_SIZE") as info:
        Settings.from_env()
    assert "lots" not in str(info.value)


@pytest.mark.parametrize(("campaign_id", "batch_no"), [
    ("news:counts", 0), ("", 0), ("spring", -1), ("spring", "0"), ("spring", True)])
def test_the_task_refuses_arguments_that_name_no_batch(campaign_id: str, batch_no: int
                                                       ) -> None:
    from workers.tasks import send_batch

    create_app(Settings(key_prefix="refuse"))
    # refused before anything (Redis, the runtime) is touched
    assert send_batch(campaign_id, batch_no) == "refused"
