"""One error guard for every command, and typed errors instead of bare ``LookupError``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rich.console import Console

from config.errors import BulkmailError, CampaignNotFoundError, InvalidIdError
from config.schema import Keys
from config.settings import Settings
from producers.progress import wait_for_campaign
from tests.integration.conftest import run_cli
from workers.app import create_app
from workers.ledger import Ledger
from workers.requeue import requeue_dead_letters, retry_failed

pytestmark = pytest.mark.integration

PROVIDERS = '[providers.relay]\nkind = "smtp"\nhost = "127.0.0.1"\nport = 2525\ntls = "none"\n'


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=key_prefix)


def test_an_unknown_campaign_is_a_typed_error(settings: Settings, keys: Keys,
                                              redis_client: redis.Redis[bytes]) -> None:
    app = create_app(settings)
    with pytest.raises(CampaignNotFoundError, match="no campaign 'nope-1'") as info:
        retry_failed(settings, app, redis_client, "nope-1")
    # callers that caught LookupError before still do
    assert isinstance(info.value, LookupError) and isinstance(info.value, BulkmailError)
    assert info.value.campaign_id == "nope-1"
    with pytest.raises(CampaignNotFoundError):
        wait_for_campaign(Ledger(redis_client, keys), "nope-1", console=Console())


def test_operator_actions_check_the_id(settings: Settings,
                                       redis_client: redis.Redis[bytes]) -> None:
    app = create_app(settings)
    with pytest.raises(InvalidIdError):
        retry_failed(settings, app, redis_client, "a:counts")
    with pytest.raises(InvalidIdError):
        requeue_dead_letters(settings, app, redis_client, campaign_id="a:counts")


@pytest.mark.parametrize("args", [["status", "x", "--list", "bogus"],
                                  ["suppress", "add", "not an address"]])
def test_bad_arguments_are_errors_not_tracebacks(
        args: list[str], bulkmail_env: Callable[[str], dict[str, str]],
        redis_client: redis.Redis[bytes], tmp_path: Path) -> None:
    env = bulkmail_env(PROVIDERS)
    if args[0] == "status":  # a campaign to ask about
        campaign = tmp_path / "c.toml"
        campaign.write_text('id = "x"\nprovider = "relay"\nfrom = "a@shop.test"\n'
                            'subject = "s"\ntext = "t"\n')
        rows = tmp_path / "r.csv"
        rows.write_text("email\nnot-an-address\n")  # invalid only: nothing is published
        assert run_cli(["send", str(campaign), "-r", str(rows)], env).returncode == 0
    out = run_cli(args, env)
    assert out.returncode == 2, out
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr


@pytest.mark.parametrize("args", [["status"], ["dlq", "list"], ["suppress", "list"],
                                  ["providers", "check"], ["worker", "-p", "relay"]])
def test_a_bad_setting_is_reported_by_every_command(
        args: list[str], bulkmail_env: Callable[[str], dict[str, str]]) -> None:
    env = {**bulkmail_env(PROVIDERS), "BULKMAIL_BATCH_SIZE": "0"}
    out = run_cli(args, env)
    assert out.returncode == 2, out
    assert "error: environment variable BULKMAIL_BATCH_SIZE" in out.stderr
    assert "Traceback" not in out.stderr
