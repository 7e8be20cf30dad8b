"""Security checklist, issue 9 item 7 (addresses): one canonical address form everywhere.

The domain IDNA-encoded (UTS 46) and lower-cased, the local part kept: dedupe, the ledger
and the suppression list see ``user@bücher.example`` and ``user@xn--bcher-kva.example`` as
one address. Against a real Redis.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from celery import Celery
from hypothesis import given
from hypothesis import strategies as st

from config.addresses import address_key, canonical_address, canonical_domain
from config.providers import SmtpConfig
from config.schema import CampaignSpec, Keys, State, queue_name
from config.settings import Settings
from producers.enqueue import enqueue_campaign
from producers.recipients import Recipient, check_address
from workers.delivery import domain_of
from workers.ledger import Ledger
from workers.suppression import SuppressionList

UNICODE = "user@bücher.example"
PUNYCODE = "user@xn--bcher-kva.example"


def test_canonical_form_is_the_ascii_domain() -> None:
    assert canonical_address(UNICODE) == PUNYCODE
    assert canonical_address("user@BÜCHER.Example") == PUNYCODE
    assert canonical_address("User@XN--BCHER-KVA.example") == "User@xn--bcher-kva.example"
    # the local part is kept as it is, non-ASCII included (SMTPUTF8 is the sender's call)
    assert canonical_address("Jörg@bücher.example") == "Jörg@xn--bcher-kva.example"
    assert address_key(" User@Bücher.example ") == PUNYCODE


def test_canonical_domain_never_raises_on_bad_idna() -> None:
    # lenient by design: the suppression list must still store a stable key
    assert canonical_domain("XN--ZZ.example") == "xn--zz.example"
    assert canonical_domain("a..b") == "a..b"


@given(st.text(min_size=1, max_size=30))
def test_canonical_domain_is_idempotent(domain: str) -> None:
    once = canonical_domain(domain)
    assert canonical_domain(once) == once


def test_producer_stores_the_canonical_address() -> None:
    assert check_address(UNICODE) == PUNYCODE
    assert check_address(PUNYCODE) == PUNYCODE


def test_suppressing_either_spelling_stops_the_other(redis_client: redis.Redis[bytes],
                                                      keys: Keys) -> None:
    suppression = SuppressionList(redis_client, keys)
    suppression.add(PUNYCODE, "unsubscribe")
    assert suppression.contains(UNICODE)
    assert suppression.filter_many([UNICODE, "other@bücher.example"]) == {UNICODE}
    assert suppression.remove("USER@BÜCHER.example")
    assert not suppression.contains(PUNYCODE)

    suppression.add(UNICODE, "hard_bounce")
    assert suppression.contains(PUNYCODE)
    entry = suppression.get(PUNYCODE)
    assert entry is not None and entry.address == PUNYCODE


def test_suppression_import_file_canonicalizes(tmp_path: Path, redis_client: redis.Redis[bytes],
                                               keys: Keys) -> None:
    suppression = SuppressionList(redis_client, keys)
    listing = tmp_path / "unsub.txt"
    listing.write_text(f"{UNICODE}\n", encoding="utf-8")
    suppression.import_file(listing, reason="unsubscribe")
    assert suppression.contains(PUNYCODE)


@pytest.mark.integration
def test_enqueue_dedupes_across_spellings_and_ledger_keeps_ascii(
        tmp_path: Path, redis_url: str, key_prefix: str,
        redis_client: redis.Redis[bytes]) -> None:
    settings = Settings(redis_url=redis_url, key_prefix=key_prefix)
    provider = f"t{uuid.uuid4().hex[:8]}"
    spec = CampaignSpec(id="idn", provider=provider, sender="a@shop.test", subject="Hi",
                        text="x", batch_size=10)
    rows = tmp_path / "r.csv"
    rows.write_text(f"email\n{UNICODE}\n{PUNYCODE}\nUSER@BÜCHER.EXAMPLE\n", encoding="utf-8")
    try:
        res = enqueue_campaign(settings, Celery("t", broker=settings.broker), redis_client,
                               spec, rows)
        assert (res.rows, res.queued, res.invalid) == (3, 1, 2)
        ledger = Ledger(redis_client, settings.keys)
        assert ledger.batch("idn", 0) == [Recipient(1, PUNYCODE, {})]
        invalid = {e.row: e.detail["reason"] for e in ledger.entries("idn", {State.INVALID})}
        assert invalid == {2: "duplicate of row 1", 3: "duplicate of row 1"}
    finally:
        redis_client.delete(queue_name(provider))


def test_domain_limits_use_the_canonical_domain() -> None:
    cfg = SmtpConfig(kind="smtp", host="h", domains={"Bücher.example": "5/s"})
    assert set(cfg.domains) == {"xn--bcher-kva.example"}
    # the worker groups recipients by this key when it takes domain tokens
    assert domain_of(UNICODE) == domain_of(PUNYCODE) == "xn--bcher-kva.example"
