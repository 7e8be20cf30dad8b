"""The one error tree of bulkmail.

Every failure that crosses a module boundary is one of these types. Providers translate
their own low-level errors (aiosmtplib, httpx, provider JSON) into :class:`DeliveryError`
subclasses at the boundary; retry logic reads only these types, never reply codes. Where
a built-in fits, a class also inherits it (in brackets below), so ``except LookupError``
or ``except ValueError`` in a caller still works::

    BulkmailError
    ├── ConfigError (ValueError)             settings or the providers file are wrong
    ├── InputError (ValueError)              a campaign, recipient file or argument is unusable
    │   ├── TemplateError                    a template does not compile or render
    │   └── InvalidIdError                   a campaign or message id breaks the id rule
    ├── CampaignNotFoundError (LookupError)  no campaign with that id
    ├── RedisUnavailableError (ConnectionError)
    └── DeliveryError                        the provider did not accept a message or call
        ├── PermanentDeliveryError           retrying will not help
        │   └── ProviderAuthError            our credentials were rejected
        └── TransientDeliveryError           try again later
            ├── ThrottledError               we send too fast
            ├── ProviderBusyError            no capacity: nothing was tried
            └── AmbiguousDeliveryError       lost after the body, before the reply

This module imports nothing of bulkmail, so ``config/`` and ``workers/`` may both use it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AmbiguousDeliveryError",
    "BulkmailError",
    "CampaignNotFoundError",
    "ConfigError",
    "DeliveryError",
    "InputError",
    "InvalidIdError",
    "PermanentDeliveryError",
    "ProviderAuthError",
    "ProviderBusyError",
    "RedisUnavailableError",
    "TemplateError",
    "ThrottledError",
    "TransientDeliveryError",
]


class BulkmailError(Exception):
    """Root of every error bulkmail raises on purpose."""


class ConfigError(BulkmailError, ValueError):
    """Settings or the providers file are wrong. The message names the file or variable
    and the key, never the value (it may be a secret)."""


class InputError(BulkmailError, ValueError):
    """A campaign file, recipient file or argument cannot be used at all (not a per-row
    problem)."""


class TemplateError(InputError):
    """A template does not compile, or renders to something that cannot be sent."""


class InvalidIdError(InputError):
    """A campaign or message id breaks the id rule (:data:`config.schema.ID_RULE`).

    Ids become parts of Redis keys, task ids and retry-queue members, so one that is not
    checked could reach into another campaign's keys.
    """


class CampaignNotFoundError(BulkmailError, LookupError):
    """No campaign (or single message) with this id under the key prefix in use."""

    def __init__(self, campaign_id: str, where: str = "") -> None:
        detail = f" in {where}" if where else ""
        super().__init__(f"no campaign {campaign_id!r}{detail}")
        self.campaign_id = campaign_id


class RedisUnavailableError(BulkmailError, ConnectionError):
    """Redis did not answer; the message names the URL (without its password)."""


class DeliveryError(BulkmailError):
    """One message (or a whole call) was not accepted by the provider.

    ``code`` is the SMTP reply code or HTTP status (0 when there is none, e.g. a dropped
    connection), ``enhanced`` the RFC 3463 status code when the reply had one, and
    ``reply`` the provider's own text, kept for the ledger.
    """

    #: short machine-readable kind, stored in the ledger with the reply
    kind = "error"

    def __init__(self, reply: str, *, code: int = 0, enhanced: str = "") -> None:
        super().__init__(reply)
        self.reply = reply
        self.code = code
        self.enhanced = enhanced

    def describe(self) -> str:
        """``"550 5.1.1 user unknown"``-style text for the ledger and CLI."""
        parts = [str(self.code) if self.code else "", self.enhanced, self.reply]
        return " ".join(p for p in parts if p)


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help (5xx, HTTP 4xx other than 429)."""

    kind = "permanent"

    def __init__(
        self, reply: str, *, code: int = 0, enhanced: str = "", hard_bounce: bool = False
    ) -> None:
        super().__init__(reply, code=code, enhanced=enhanced)
        #: the address itself is bad (5.1.x): it goes on the suppression list
        self.hard_bounce = hard_bounce


class TransientDeliveryError(DeliveryError):
    """Try again later (4xx, 5xx HTTP, timeouts, dropped connections)."""

    kind = "transient"

    def __init__(
        self,
        reply: str,
        *,
        code: int = 0,
        enhanced: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reply, code=code, enhanced=enhanced)
        #: seconds the provider asked us to wait, when it said so
        self.retry_after = retry_after


class ThrottledError(TransientDeliveryError):
    """The provider says we send too fast (421, 4.7.x rate texts, 454 Throttling, HTTP 429)."""

    kind = "throttled"


class ProviderBusyError(TransientDeliveryError):
    """Nothing was tried: no capacity right now (the cluster-wide connection cap).

    Not the recipient's fault, so the message is parked without spending an attempt.
    """

    kind = "busy"


class AmbiguousDeliveryError(TransientDeliveryError):
    """The connection was lost after the body was sent and before the reply came.

    The message may or may not have been accepted; by default it is sent again
    (at-least-once), or failed as ``unknown`` when the provider is set to at-most-once.
    """

    kind = "ambiguous"


class ProviderAuthError(PermanentDeliveryError):
    """The provider rejected our credentials (SMTP 535, HTTP 401/403).

    This is about the provider, not the recipient: sending through it stops and the
    batch is kept for later instead of failing every recipient one by one.
    """

    kind = "auth"

    def __init__(self, reply: str, *, code: int = 0, enhanced: str = "") -> None:
        super().__init__(reply, code=code, enhanced=enhanced)
        #: results of the messages that were handled before the rejection (a key revoked
        #: mid-batch): the worker records them so they are not sent again
        self.results: list[Any] = []
