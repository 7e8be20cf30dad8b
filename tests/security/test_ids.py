"""Ids that come in from outside follow one rule (config.schema.ID_RULE) everywhere: an id
becomes part of Redis keys, so ``"sr-news:counts"`` as a message id would write into the
counts hash of campaign ``sr-news``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from config.errors import InvalidIdError
from config.schema import CampaignSpec, Keys
from config.settings import Settings
from producers.api import Bulkmail
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration

PROVIDERS = '[providers.relay]\nkind = "smtp"\nhost = "127.0.0.1"\nport = 2525\ntls = "none"\n'
#: ids that reach into another campaign's keys, or the terminal
HOSTILE = ["sr-news:counts", "sr-news:s:0", "x\n", "../x", "a\x1b[2J", ""]


def _api(env: dict[str, str], key_prefix: str) -> Bulkmail:
    return Bulkmail(Settings(redis_url=env["BULKMAIL_REDIS_URL"],
                             providers=Path(env["BULKMAIL_PROVIDERS"]), key_prefix=key_prefix))


def _nothing_written(client: redis.Redis[bytes], prefix: str) -> bool:
    return not list(client.scan_iter(match=f"{prefix}:*"))


@pytest.mark.parametrize("message_id", HOSTILE)
def test_send_message_refuses_an_id_outside_the_rule(
        bulkmail_env: Callable[[str], dict[str, str]], key_prefix: str,
        redis_client: redis.Redis[bytes], message_id: str) -> None:
    mail = _api(bulkmail_env(PROVIDERS), key_prefix)
    with pytest.raises(InvalidIdError, match=r"message_id: .* must be 1-64 letters"):
        mail.send_message("ann@example.test", provider="relay", sender="a@shop.test",
                          subject="s", text="t", message_id=message_id)
    assert _nothing_written(redis_client, key_prefix)


def test_another_campaigns_counts_stay_untouched(
        bulkmail_env: Callable[[str], dict[str, str]], key_prefix: str, provider_name: str,
        forget_queue: None, redis_client: redis.Redis[bytes]) -> None:
    # a provider (so a queue) of this test's own: the message below is really published
    mail = _api(bulkmail_env(PROVIDERS.replace("relay", provider_name)), key_prefix)
    mail.send_message("ann@example.test", provider=provider_name, sender="a@shop.test",
                      subject="s", text="t", message_id="sr-news")
    counts = Keys(key_prefix).counts("sr-news")
    before = redis_client.hgetall(counts)
    with pytest.raises(InvalidIdError):
        mail.send_message("bob@example.test", provider=provider_name, sender="a@shop.test",
                          subject="s", text="t", message_id="sr-news:counts")
    assert before and redis_client.hgetall(counts) == before


def test_a_campaign_spec_from_an_app_follows_the_rule(
        bulkmail_env: Callable[[str], dict[str, str]], key_prefix: str,
        redis_client: redis.Redis[bytes]) -> None:
    mail = _api(bulkmail_env(PROVIDERS), key_prefix)
    spec = CampaignSpec(id="news:counts", provider="relay", sender="a@shop.test",
                        subject="s", text="t")
    with pytest.raises(InvalidIdError, match=r"CampaignSpec\.id"):
        mail.send_campaign(spec, [{"email": "ann@example.test"}])
    with pytest.raises(InvalidIdError):
        mail.status("news:counts")
    assert _nothing_written(redis_client, key_prefix)


def test_the_cli_refuses_the_same_ids(tmp_path: Path, key_prefix: str,
                                      bulkmail_env: Callable[[str], dict[str, str]],
                                      redis_client: redis.Redis[bytes]) -> None:
    env = bulkmail_env(PROVIDERS)
    campaign = tmp_path / "c.toml"
    campaign.write_text('provider = "relay"\nfrom = "a@shop.test"\nsubject = "s"\ntext = "t"\n')
    rows = tmp_path / "r.csv"
    rows.write_text("email\nann@example.test\n")
    for args in (["send", str(campaign), "-r", str(rows), "--id", "sr-news:counts"],
                 ["status", "sr-news:counts"], ["cancel", "sr-news:counts"],
                 ["retry-failed", "sr-news:counts"],
                 ["dlq", "list", "--campaign", "sr-news:counts"]):
        out = run_cli(args, env)
        assert out.returncode == 2, (args, out)
        assert "'sr-news:counts' must be 1-64 letters" in " ".join(out.stderr.split()), args
        assert "Traceback" not in out.stderr
    assert _nothing_written(redis_client, key_prefix)
