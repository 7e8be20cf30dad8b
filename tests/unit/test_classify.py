"""Reply classification, table-driven, with replies seen from Gmail, Microsoft 365, Amazon
SES, Postfix and the RFC 5321 / 3463 / 7505 texts."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from config.errors import (
    DeliveryError,
    PermanentDeliveryError,
    ProviderAuthError,
    ThrottledError,
    TransientDeliveryError,
)
from workers.classify import classify_http, classify_smtp, parse_enhanced, parse_retry_after

GMAIL_RATE = (
    "4.7.28 [203.0.113.5      15] Our system has detected an unusual rate of\n"
    "4.7.28 unsolicited mail originating from your IP address. To protect our\n"
    "4.7.28 users from spam, mail sent from your IP address has been temporarily\n"
    "4.7.28 rate limited. Please visit\n"
    "4.7.28  https://support.google.com/mail/?p=UnsolicitedRateLimitError to\n"
    "4.7.28 review our Bulk Email Senders Guidelines. a1si123 - gsmtp"
)
GMAIL_RECEIVING_RATE = (
    "4.2.1 The user you are trying to contact is receiving mail at a rate that\n"
    "4.2.1 prevents additional messages from being delivered. Please resend your\n"
    "4.2.1 message at a later time. If the user is able to receive mail at that\n"
    "4.2.1 time, your message will be delivered. a1si123 - gsmtp"
)
GMAIL_NO_USER = (
    "5.1.1 The email account that you tried to reach does not exist. Please try\n"
    "5.1.1 double-checking the recipient's email address for typos or\n"
    "5.1.1 unnecessary spaces. Learn more at\n"
    "5.1.1  https://support.google.com/mail/?p=NoSuchUser a1si123 - gsmtp"
)

# (name, code, text, stage, expected type, enhanced, hard_bounce or None when n/a)
SMTP_CASES: list[tuple[str, int, str, str, type[DeliveryError], str, bool | None]] = [
    # --- throttling --------------------------------------------------------------------
    ("gmail 421 4.7.28 rate limited", 421, GMAIL_RATE, "data", ThrottledError, "4.7.28", None),
    ("gmail 421 at EHLO", 421, "4.7.0 Try again later, closing connection. (EHLO) gsmtp",
     "helo", ThrottledError, "4.7.0", None),
    ("421 at greeting, no enhanced code", 421, "mx.example.com Service not available",
     "connect", ThrottledError, "", None),
    # one recipient's inbox is flooded: defer that recipient, do not slow the provider
    ("gmail 450 4.2.1 receiving at a rate", 450, GMAIL_RECEIVING_RATE, "rcpt",
     TransientDeliveryError, "4.2.1", None),
    ("microsoft 451 4.7.500 server busy", 451,
     "4.7.500 Server busy. Please try again later from [203.0.113.5]. (S77719) "
     "[BN8NAM12FT003.eop-nam12.prod.protection.outlook.com]",
     "mail", ThrottledError, "4.7.500", None),
    ("microsoft 450 4.7.650 rate limited (IP reputation)", 450,
     "4.7.650 The mail server [203.0.113.5] has been temporarily rate limited due to IP "
     "reputation.", "rcpt", ThrottledError, "4.7.650", None),
    ("microsoft 421 4.3.2 concurrent connections", 421,
     "4.3.2 The maximum number of concurrent server connections has exceeded a per-domain "
     "limit, closing transmission channel", "mail", ThrottledError, "4.3.2", None),
    ("ses 454 throttling: rate", 454, "Throttling failure: Maximum sending rate exceeded.",
     "data", ThrottledError, "", None),
    ("ses 454 throttling: daily quota", 454, "Throttling failure: Daily message quota exceeded.",
     "mail", ThrottledError, "", None),
    ("4.7.0 too many login attempts at AUTH", 454,
     "4.7.0 Too many login attempts, please try again later.", "auth", ThrottledError,
     "4.7.0", None),
    ("451 4.7.1 try again later", 451, "4.7.1 Please try again later", "rcpt",
     ThrottledError, "4.7.1", None),
    ("5xx that says throttled is still about our pace", 554,
     "Throttling failure: Maximum sending rate exceeded.", "data", ThrottledError, "", None),
    # --- transient, not throttling -------------------------------------------------------
    ("postfix greylisting 4.2.0", 450,
     "4.2.0 <bob@example.com>: Recipient address rejected: Greylisted, see "
     "http://postgrey.schweikert.ch/help/example.com.html", "rcpt",
     TransientDeliveryError, "4.2.0", None),
    ("4.2.1 without a rate is a disabled mailbox, not throttling", 450,
     "4.2.1 Mailbox disabled, not accepting messages, try again later", "rcpt",
     TransientDeliveryError, "4.2.1", None),
    ("452 4.5.3 too many recipients is not throttling", 452,
     "4.5.3 Your message has too many recipients.", "rcpt", TransientDeliveryError,
     "4.5.3", None),
    ("gmail 451 4.3.0", 451, "4.3.0 Mail server temporarily rejected message. gsmtp", "data",
     TransientDeliveryError, "4.3.0", None),
    ("microsoft 452 4.3.1 resources", 452,
     "4.3.1 Insufficient system resources (UsedDiskSpace[C:\\Queue])", "mail",
     TransientDeliveryError, "4.3.1", None),
    ("temporary auth failure", 454, "4.7.0 Temporary authentication failure", "auth",
     TransientDeliveryError, "4.7.0", None),
    ("4.1.1 is transient even for an unknown user", 450,
     "4.1.1 <bob@example.com>: Recipient address rejected: unverified address", "rcpt",
     TransientDeliveryError, "4.1.1", None),
    ("basic code wins over a contradicting enhanced class", 450,
     "5.1.1 user unknown", "rcpt", TransientDeliveryError, "5.1.1", None),
    ("rfc 5321 450", 450, "Requested mail action not taken: mailbox unavailable", "rcpt",
     TransientDeliveryError, "", None),
    ("rfc 5321 451", 451, "Requested action aborted: local error in processing", "data",
     TransientDeliveryError, "", None),
    ("rfc 5321 452", 452, "Requested action not taken: insufficient system storage", "rcpt",
     TransientDeliveryError, "", None),
    ("552 5.5.3 at RCPT means too many recipients (RFC 5321 4.5.3.1.10)", 552,
     "5.5.3 Too many recipients", "rcpt", TransientDeliveryError, "5.5.3", None),
    # --- mailbox full (default policy: transient) ----------------------------------------
    ("gmail 552 5.2.2 over quota", 552,
     "5.2.2 The email account that you tried to reach is over quota. gsmtp", "rcpt",
     TransientDeliveryError, "5.2.2", None),
    ("microsoft 554 5.2.2 mailbox full after DATA", 554,
     "5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException", "data",
     TransientDeliveryError, "5.2.2", None),
    ("rfc 5321 552 at RCPT", 552, "Requested mail action aborted: exceeded storage allocation",
     "rcpt", TransientDeliveryError, "", None),
    ("552 mailbox full in words after DATA", 552, "Mailbox full", "data",
     TransientDeliveryError, "", None),
    # --- hard bounces --------------------------------------------------------------------
    ("gmail 550 5.1.1 no such user", 550, GMAIL_NO_USER, "rcpt", PermanentDeliveryError,
     "5.1.1", True),
    ("postfix 550 5.1.1 user unknown", 550,
     "5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual "
     "mailbox table", "rcpt", PermanentDeliveryError, "5.1.1", True),
    ("microsoft 550 5.1.10 recipient not found", 550,
     "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     "rcpt", PermanentDeliveryError, "5.1.10", True),
    ("rfc 7505 556 5.1.10 null MX", 556, "5.1.10 Recipient address has null MX", "rcpt",
     PermanentDeliveryError, "5.1.10", True),
    ("5.1.2 bad destination system", 550, "5.1.2 Bad destination system address", "rcpt",
     PermanentDeliveryError, "5.1.2", True),
    ("553 5.1.3 bad address syntax", 553, "5.1.3 Bad destination mailbox address syntax",
     "rcpt", PermanentDeliveryError, "5.1.3", True),
    ("5.1.1 rejected after DATA", 550, "5.1.1 user unknown", "data", PermanentDeliveryError,
     "5.1.1", True),
    ("550 user unknown, no enhanced code", 550, "User unknown", "rcpt",
     PermanentDeliveryError, "", True),
    ("rfc 5321 550 no such user", 550, "No such user here", "rcpt", PermanentDeliveryError,
     "", True),
    ("550 5.0.0 no such user", 550, "5.0.0 <bob@example.com>... No such user", "rcpt",
     PermanentDeliveryError, "5.0.0", True),
    # --- permanent, but the address itself is not known bad ------------------------------
    ("5.1.x at MAIL is about our sender", 550, "5.1.1 sender unknown", "mail",
     PermanentDeliveryError, "5.1.1", False),
    ("5.1.8 at RCPT is about our sender's domain", 553, "5.1.8 Bad sender's system address",
     "rcpt", PermanentDeliveryError, "5.1.8", False),
    ("5.1.7 sender syntax", 553, "5.1.7 Bad sender's mailbox address syntax", "mail",
     PermanentDeliveryError, "5.1.7", False),
    ("gmail 550 5.2.1 account disabled", 550,
     "5.2.1 The email account that you tried to reach is disabled. gsmtp", "rcpt",
     PermanentDeliveryError, "5.2.1", False),
    ("gmail 550 5.7.26 unauthenticated sender", 550,
     "5.7.26 This mail has been blocked because the sender is unauthenticated. gsmtp",
     "data", PermanentDeliveryError, "5.7.26", False),
    ("gmail 550 5.7.1 blocked for unusual rate (a block, not a slow-down)", 550,
     "5.7.1 [203.0.113.5] Our system has detected an unusual rate of unsolicited mail "
     "originating from your IP address. mail sent from your IP address has been blocked.",
     "rcpt", PermanentDeliveryError, "5.7.1", False),
    ("gmail 550 5.4.5 sending quota is not a full mailbox", 550,
     "5.4.5 Daily user sending quota exceeded. gsmtp", "mail", PermanentDeliveryError,
     "5.4.5", False),
    ("microsoft 550 5.4.1 access denied", 550,
     "5.4.1 Recipient address rejected: Access denied. AS(201806281)", "rcpt",
     PermanentDeliveryError, "5.4.1", False),
    ("spamhaus block", 550,
     "5.7.1 Service unavailable, Client host [203.0.113.5] blocked using Spamhaus.", "rcpt",
     PermanentDeliveryError, "5.7.1", False),
    ("ses unverified identity", 554,
     "Message rejected: Email address is not verified. The following identities failed "
     "the check in region US-EAST-1: news@example.com", "data", PermanentDeliveryError, "",
     False),
    ("rfc 5321 550 mailbox unavailable (policy or unknown: not hard)", 550,
     "Requested action not taken: mailbox unavailable", "rcpt", PermanentDeliveryError, "",
     False),
    ("rfc 5321 551 user not local", 551, "User not local; please try <forward-path>", "rcpt",
     PermanentDeliveryError, "", False),
    ("552 5.3.4 too big after DATA", 552, "5.3.4 Message size exceeds fixed maximum message "
     "size", "data", PermanentDeliveryError, "5.3.4", False),
    ("rfc 5321 554", 554, "Transaction failed", "data", PermanentDeliveryError, "", False),
    # --- our credentials -----------------------------------------------------------------
    ("gmail 535 5.7.8 bad credentials", 535,
     "5.7.8 Username and Password not accepted. Learn more at\n"
     "5.7.8  https://support.google.com/mail/?p=BadCredentials a1si123 - gsmtp",
     "auth", ProviderAuthError, "5.7.8", False),
    ("microsoft 535 5.7.139 basic auth disabled", 535,
     "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
     "Tenant.", "auth", ProviderAuthError, "5.7.139", False),
    ("ses 535 credentials", 535, "Authentication Credentials Invalid", "auth",
     ProviderAuthError, "", False),
    ("534 mechanism too weak", 534, "5.7.9 Authentication mechanism is too weak", "auth",
     ProviderAuthError, "5.7.9", False),
    ("gmail 530 auth required at MAIL", 530, "5.7.0 Authentication Required. gsmtp", "mail",
     ProviderAuthError, "5.7.0", False),
    ("ses 530 at MAIL", 530, "Authentication required", "mail", ProviderAuthError, "", False),
    ("postfix 530 STARTTLS first", 530, "5.7.0 Must issue a STARTTLS command first", "mail",
     ProviderAuthError, "5.7.0", False),
]


@pytest.mark.parametrize(
    ("code", "text", "stage", "expected", "enhanced", "hard"),
    [case[1:] for case in SMTP_CASES],
    ids=[case[0] for case in SMTP_CASES],
)
def test_classify_smtp(
    code: int,
    text: str,
    stage: str,
    expected: type[DeliveryError],
    enhanced: str,
    hard: bool | None,
) -> None:
    err = classify_smtp(code, text, stage=stage)  # type: ignore[arg-type]
    assert type(err) is expected
    assert err.code == code
    assert err.enhanced == enhanced
    if hard is not None:
        assert isinstance(err, PermanentDeliveryError)
        assert err.hard_bounce is hard


MAILBOX_FULL = [
    (552, "5.2.2 The email account that you tried to reach is over quota.", "rcpt"),
    (554, "5.2.2 mailbox full", "data"),
    (552, "Requested mail action aborted: exceeded storage allocation", "rcpt"),
    (550, "Mailbox is full", "rcpt"),
]


@pytest.mark.parametrize(("code", "text", "stage"), MAILBOX_FULL)
def test_mailbox_full_follows_the_provider_setting(code: int, text: str, stage: str) -> None:
    transient = classify_smtp(code, text, stage=stage, mailbox_full="transient")  # type: ignore[arg-type]
    permanent = classify_smtp(code, text, stage=stage, mailbox_full="permanent")  # type: ignore[arg-type]
    assert type(transient) is TransientDeliveryError
    assert type(permanent) is PermanentDeliveryError
    # full is not gone: the address must not be suppressed
    assert permanent.hard_bounce is False


def test_too_many_recipients_is_transient_whatever_the_mailbox_policy() -> None:
    err = classify_smtp(552, "5.5.3 Too many recipients", stage="rcpt", mailbox_full="permanent")
    assert type(err) is TransientDeliveryError


def test_552_outside_rcpt_without_mailbox_text_is_permanent() -> None:
    err = classify_smtp(552, "Requested action aborted", stage="mail")
    assert type(err) is PermanentDeliveryError


def test_other_5xx_at_auth_is_a_provider_problem() -> None:
    err = classify_smtp(504, "5.5.4 Unrecognized authentication type", stage="auth")
    assert type(err) is ProviderAuthError


def test_reply_text_is_one_line_without_repeated_codes() -> None:
    err = classify_smtp(421, GMAIL_RATE, stage="data")
    assert "\n" not in err.reply
    assert "4.7.28" not in err.reply
    assert err.reply.startswith("[203.0.113.5      15] Our system has detected an unusual rate")
    assert err.describe().startswith("421 4.7.28 [203.0.113.5")
    assert classify_smtp(550, "5.1.1 user unknown", stage="rcpt").describe() == (
        "550 5.1.1 user unknown"
    )


def test_whole_reply_lines_with_the_code_in_front_work_too() -> None:
    text = "550-5.1.1 The email account that you tried to reach does not exist.\n550 5.1.1 bye"
    err = classify_smtp(550, text, stage="rcpt")
    assert isinstance(err, PermanentDeliveryError) and err.hard_bounce
    assert err.reply == "The email account that you tried to reach does not exist. bye"


def test_success_is_not_classified() -> None:
    with pytest.raises(ValueError):
        classify_smtp(250, "2.0.0 OK", stage="data")


def test_unexpected_code_falls_back_to_the_enhanced_class_then_transient() -> None:
    assert type(classify_smtp(354, "garbled", stage="data")) is TransientDeliveryError
    odd = classify_smtp(0, "5.1.1 user unknown", stage="rcpt")
    assert isinstance(odd, PermanentDeliveryError) and odd.hard_bounce


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5.1.1 user unknown", "5.1.1"),
        ("  5.1.10 Recipient address has null MX", "5.1.10"),
        ("4.7.500 Server busy.", "4.7.500"),
        ("550-5.1.1 whole line", "5.1.1"),
        ("421 4.7.0 whole line", "4.7.0"),
        ("5.1.1.", "5.1.1"),
        ("Greylisted\n4.2.0 come back later", "4.2.0"),
        ("", ""),
        ("User unknown", ""),
        ("Mailbox 5.1.1 not at the start", ""),
        ("4.3.2.1 is an address, not a code", ""),
        ("192.168.1.1 blocked", ""),
        ("6.1.1 no such class", ""),
        ("5.1234.1 too many digits", ""),
    ],
)
def test_parse_enhanced(text: str, expected: str) -> None:
    assert parse_enhanced(text) == expected


# --- HTTP ---------------------------------------------------------------------------------

HTTP_CASES: list[tuple[str, int, str, type[DeliveryError]]] = [
    ("resend 429", 429, "Too many requests. You can only make 2 requests per second.",
     ThrottledError),
    ("ses v2 429", 429, "Maximum sending rate exceeded.", ThrottledError),
    ("500", 500, "Internal Server Error", TransientDeliveryError),
    ("502", 502, "", TransientDeliveryError),
    ("503", 503, "Service Unavailable", TransientDeliveryError),
    ("504", 504, "", TransientDeliveryError),
    ("408", 408, "", TransientDeliveryError),
    ("mailgun 401", 401, "Forbidden", ProviderAuthError),
    ("sendgrid 403", 403, "The provided authorization grant is invalid, expired, or revoked",
     ProviderAuthError),
    ("sendgrid 400", 400,
     "The from address does not match a verified Sender Identity.", PermanentDeliveryError),
    ("postmark 422", 422, "Zero recipients specified", PermanentDeliveryError),
    ("mailgun 400 too many recipients", 400, "Too many recipients", PermanentDeliveryError),
    ("resend 409 idempotency", 409, "Same idempotency key used with a different payload",
     PermanentDeliveryError),
    ("413", 413, "Payload Too Large", PermanentDeliveryError),
    ("404", 404, "", PermanentDeliveryError),
    ("no response", 0, "", TransientDeliveryError),
]


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [c[1:] for c in HTTP_CASES],
    ids=[c[0] for c in HTTP_CASES],
)
def test_classify_http(status: int, message: str, expected: type[DeliveryError]) -> None:
    err = classify_http(status, message)
    assert type(err) is expected
    assert err.code == status
    assert err.reply  # never empty: the provider's text or the status phrase


def test_http_keeps_the_provider_message_and_retry_after() -> None:
    err = classify_http(429, "rate_limit_exceeded", retry_after=2.5)
    assert isinstance(err, ThrottledError) and err.retry_after == 2.5
    assert err.reply == "rate_limit_exceeded"
    unavailable = classify_http(503, "", retry_after=30.0)
    assert isinstance(unavailable, TransientDeliveryError) and unavailable.retry_after == 30.0
    assert unavailable.reply == "Service Unavailable"
    assert classify_http(404, "").reply == "Not Found"
    bad = classify_http(400, "  The to field is required.  ")
    assert isinstance(bad, PermanentDeliveryError) and bad.reply == "The to field is required."
    assert bad.hard_bounce is False


def test_http_ignores_a_nonsense_retry_after() -> None:
    err = classify_http(429, "", retry_after=-3.0)
    assert isinstance(err, ThrottledError) and err.retry_after is None


def test_http_success_is_not_classified() -> None:
    with pytest.raises(ValueError):
        classify_http(202, "")


# --- Retry-After --------------------------------------------------------------------------

NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),  # IMF-fixdate (RFC 9110)
        ("Wednesday, 21-Oct-15 07:29:00 GMT", 60.0),  # RFC 850
        ("Wed Oct 21 07:28:05 2015", 5.0),  # asctime
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # already past
        (str(int(NOW) + 45), 45.0),  # epoch seconds (X-RateLimit-Reset)
        (str(int(NOW) - 45), 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1e3", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_round_trips_formatted_dates() -> None:
    later = datetime.fromtimestamp(NOW + 3600, tz=UTC)
    assert parse_retry_after(format_datetime(later, usegmt=True), now=NOW) == 3600.0
