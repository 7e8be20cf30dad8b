"""The retry decisions: one chunk's results -> ledger updates and follow-up work."""

from __future__ import annotations

import json
import random

from config.errors import (
    AmbiguousDeliveryError,
    PermanentDeliveryError,
    ThrottledError,
    TransientDeliveryError,
)
from config.providers import SmtpConfig
from config.schema import State
from workers.outcomes import decide
from workers.providers.base import SendResult

NOW = 1_000_000.0


def _cfg(**kw: object) -> SmtpConfig:
    return SmtpConfig.model_validate({"kind": "smtp", "host": "h", **kw})


def _decide(results: list[SendResult], details: dict[int, dict[str, object]] | None = None,
            **cfg: object):  # type: ignore[no-untyped-def]
    rows = [r.row for r in results]
    return decide(results, index_of={row: row - 1 for row in rows},
                  email_of={row: f"u{row}@x.test" for row in rows}, details=details or {},
                  cfg=_cfg(**cfg), now=NOW, campaign_id="c", provider="p",
                  rng=random.Random(1))


def test_sent_failed_and_bounced() -> None:
    out = _decide([
        SendResult(1, provider_id="abc"),
        SendResult(2, error=PermanentDeliveryError("user unknown", code=550, enhanced="5.1.1",
                                                   hard_bounce=True)),
        SendResult(3, error=PermanentDeliveryError("policy", code=554)),
    ])
    assert [(u.index, u.state) for u in out.updates] == [
        (0, State.SENT), (1, State.FAILED), (2, State.FAILED)]
    assert json.loads(out.updates[0].detail) == {"id": "abc"}
    assert json.loads(out.updates[1].detail)["r"] == "550 5.1.1 user unknown"
    assert out.suppress == [("u2@x.test", "550 5.1.1 user unknown")]  # only the hard bounce
    assert (out.sent, out.failed, out.deferred, out.next_due) == (1, 2, 0, None)


def test_transient_is_deferred_with_backoff_and_attempts() -> None:
    out = _decide([SendResult(1, error=TransientDeliveryError("busy", code=451))],
                  details={0: {"a": 2, "f": NOW - 100}}, backoff_base=10, backoff_max=1000)
    (u,) = out.updates
    d = json.loads(u.detail)
    assert u.state == State.DEFERRED and d["a"] == 3 and d["f"] == NOW - 100
    assert NOW <= d["n"] <= NOW + 40  # full jitter, attempt 3: at most base * 2**2
    assert out.next_due == d["n"]


def test_retry_after_is_honoured_and_throttles_reported() -> None:
    err = ThrottledError("slow down", code=429, retry_after=120)
    out = _decide([SendResult(1, error=err)], backoff_base=1, backoff_max=5)
    assert out.next_due is not None and out.next_due >= NOW + 120
    assert out.throttles == [("u1@x.test", err)]


def test_exhausted_attempts_fail_with_dead_letter() -> None:
    out = _decide([SendResult(1, error=TransientDeliveryError("busy", code=451))],
                  details={0: {"a": 4, "f": NOW - 10}}, max_attempts=5)
    (u,) = out.updates
    assert u.state == State.FAILED and json.loads(u.detail)["k"] == "exhausted"
    assert [(d.row, d.attempts) for d in out.dead_letters] == [(1, 5)]
    assert out.next_due is None


def test_max_age_also_exhausts() -> None:
    out = _decide([SendResult(1, error=TransientDeliveryError("busy", code=451))],
                  details={0: {"a": 1, "f": NOW - 7200}}, max_age="1h")
    assert out.updates[0].state == State.FAILED and out.dead_letters


def test_ambiguous_policy() -> None:
    lost = AmbiguousDeliveryError("connection lost during DATA")
    resend = _decide([SendResult(1, error=lost)])
    assert resend.updates[0].state == State.DEFERRED
    fail = _decide([SendResult(1, error=lost)], on_ambiguous="fail")
    assert fail.updates[0].state == State.FAILED
    assert json.loads(fail.updates[0].detail)["k"] == "unknown"


def test_sent_after_retries_keeps_its_attempt_count() -> None:
    out = _decide([SendResult(1), SendResult(2)], details={0: {"a": 2, "f": NOW - 5}})
    assert json.loads(out.updates[0].detail) == {"a": 3}
    assert out.updates[1].detail == "{}"  # first try: nothing stored (compact ledger)


def test_no_capacity_parks_without_spending_an_attempt() -> None:
    from config.errors import ProviderBusyError

    out = _decide([SendResult(1, error=ProviderBusyError("connection cap reached"))],
                  details={0: {"a": 1}}, max_wait="2s")
    assert out.updates == [] and out.parked == 1 and out.next_due == NOW + 2
