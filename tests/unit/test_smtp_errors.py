"""The one SMTP error translator every SMTP path uses (opening a session, a plain
transaction, a pipelined one)."""

from __future__ import annotations

from typing import Literal

import aiosmtplib
import pytest

from config.errors import (
    AmbiguousDeliveryError,
    DeliveryError,
    PermanentDeliveryError,
    ProviderAuthError,
    ThrottledError,
    TransientDeliveryError,
)
from workers.classify import SmtpStage
from workers.providers.smtp import smtp_error
from workers.providers.smtp_pipeline import WireLost


def test_replies_are_classified_by_code_and_stage() -> None:
    def reply(code: int, text: str, stage: SmtpStage,
              mailbox_full: Literal["transient", "permanent"] = "transient") -> DeliveryError:
        return smtp_error(aiosmtplib.SMTPResponseException(code, text), stage,
                          where="relay:25", mailbox_full=mailbox_full)

    assert isinstance(reply(550, "5.1.1 no such user", "rcpt"), PermanentDeliveryError)
    assert isinstance(reply(451, "4.3.0 try later", "mail"), TransientDeliveryError)
    assert isinstance(reply(421, "4.7.0 too many connections", "connect"), ThrottledError)
    assert isinstance(reply(535, "5.7.8 bad credentials", "auth"), ProviderAuthError)
    assert isinstance(reply(552, "5.2.2 mailbox full", "rcpt"), TransientDeliveryError)
    assert not isinstance(reply(552, "5.2.2 mailbox full", "rcpt", mailbox_full="permanent"),
                          TransientDeliveryError)


@pytest.mark.parametrize("lost", [aiosmtplib.SMTPServerDisconnected("gone"),
                                  aiosmtplib.SMTPTimeoutError("slow"), WireLost("cut"),
                                  ConnectionResetError("reset")])
def test_lost_connections_by_stage(lost: BaseException) -> None:
    opening = smtp_error(lost, "connect", where="relay:25")
    assert type(opening) is TransientDeliveryError
    assert str(opening).startswith("cannot connect to relay:25: ")
    at_rcpt = smtp_error(lost, "rcpt", where="relay:25")
    assert type(at_rcpt) is TransientDeliveryError
    assert str(at_rcpt).startswith("connection lost at RCPT: ")
    # before the body went out nothing can have been delivered; after, it may have been
    assert type(smtp_error(lost, "data", where="relay:25")) is TransientDeliveryError
    assert isinstance(smtp_error(lost, "data", where="relay:25", body_sent=True),
                      AmbiguousDeliveryError)
