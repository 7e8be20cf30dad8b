"""What producers and workers agree on: Redis key names, ids, recipient states, the
campaign record and the batch payload. Both sides import this module and nothing else of
each other's internals, so the wire format is defined in exactly one place.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from config.errors import InvalidIdError

__all__ = [
    "FINAL_STATES",
    "ID_RULE",
    "QUEUE_PREFIX",
    "CampaignSpec",
    "Keys",
    "Recipient",
    "State",
    "check_id",
    "decode_batch",
    "encode_batch",
    "is_valid_id",
    "parse_retry_member",
    "queue_name",
    "requeue_task_id",
    "retry_member",
    "retry_task_id",
    "task_id",
]

#: Celery queue of a provider is ``bulkmail.<provider>``.
QUEUE_PREFIX = "bulkmail."


def queue_name(provider: str) -> str:
    """The Celery queue that carries the batches of ``provider``."""
    return f"{QUEUE_PREFIX}{provider}"


class State(enum.StrEnum):
    """Where one recipient of a campaign stands. Stored in the ledger as one character."""

    QUEUED = "q"
    SENT = "s"
    DEFERRED = "d"
    FAILED = "f"
    INVALID = "i"
    SUPPRESSED = "x"
    CANCELLED = "c"

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> State:
        try:
            return cls[label.upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown state {label!r}; expected one of {names}") from None


#: States a recipient never leaves (``retry-failed`` and ``dlq requeue`` are explicit
#: operator actions that move ``failed`` back to ``queued``; workers never do).
FINAL_STATES = frozenset(
    {State.SENT, State.FAILED, State.INVALID, State.SUPPRESSED, State.CANCELLED}
)


class Keys:
    """Every Redis key bulkmail writes, built in one place.

    ``prefix`` (default ``bulkmail``) lets several installations or test runs share one
    Redis without seeing each other's data.
    """

    def __init__(self, prefix: str = "bulkmail") -> None:
        self.prefix = prefix

    # campaigns ---------------------------------------------------------------------
    @property
    def campaigns(self) -> str:
        """Sorted set of campaign ids scored by creation time."""
        return f"{self.prefix}:campaigns"

    def campaign(self, cid: str) -> str:
        """Hash: the campaign record (spec JSON, status, row counts)."""
        return f"{self.prefix}:c:{cid}"

    def counts(self, cid: str) -> str:
        """Hash: state label -> number of recipients in it."""
        return f"{self.prefix}:c:{cid}:counts"

    def batch(self, cid: str, batch_no: int) -> str:
        """String: the batch's recipients (see :func:`encode_batch`)."""
        return f"{self.prefix}:c:{cid}:b:{batch_no}"

    def states(self, cid: str, batch_no: int) -> str:
        """Hash: index within the batch -> state character."""
        return f"{self.prefix}:c:{cid}:s:{batch_no}"

    def details(self, cid: str, batch_no: int) -> str:
        """Hash: index within the batch -> JSON detail (reason, reply, attempts, ids)."""
        return f"{self.prefix}:c:{cid}:d:{batch_no}"

    def invalid(self, cid: str) -> str:
        """Hash: row number -> JSON {email, reason} of rows rejected at enqueue."""
        return f"{self.prefix}:c:{cid}:invalid"

    def seen(self, cid: str) -> str:
        """Hash: lower-cased address -> first row, used to find duplicates at enqueue."""
        return f"{self.prefix}:c:{cid}:seen"

    def batch_lock(self, cid: str, batch_no: int) -> str:
        """String with a TTL: held while one worker sends the batch."""
        return f"{self.prefix}:c:{cid}:lock:{batch_no}"

    def events(self, cid: str) -> str:
        """Stream: notable campaign events (throttling, auth errors) for status/logs."""
        return f"{self.prefix}:c:{cid}:events"

    # providers ---------------------------------------------------------------------
    def bucket(self, provider: str, domain: str = "") -> str:
        """Hash: token bucket state of a provider (or of one recipient domain of it)."""
        return f"{self.prefix}:rl:{provider}:{domain}" if domain else f"{self.prefix}:rl:{provider}"

    def leases(self, provider: str) -> str:
        """Sorted set: connection leases of a provider scored by expiry."""
        return f"{self.prefix}:conn:{provider}"

    def provider_state(self, provider: str) -> str:
        """Hash: throttling / auth status of a provider shown by ``bulkmail status``."""
        return f"{self.prefix}:p:{provider}"

    def retry(self, provider: str) -> str:
        """Sorted set: ``cid:batch`` members scored by the time they are due again."""
        return f"{self.prefix}:retry:{provider}"

    @property
    def dead_letters(self) -> str:
        """Hash: ``cid:seq`` -> JSON dead-letter record."""
        return f"{self.prefix}:dlq"

    @property
    def suppressed(self) -> str:
        """Hash: lower-cased address -> JSON {reason, at}."""
        return f"{self.prefix}:suppressed"

    # pause / resume, API keys, worker heartbeats ----------------------------------------
    def paused_batches(self, cid: str) -> str:
        """Set: numbers of the batches a worker set aside while the campaign was paused
        (released onto the retry queue, due at once, by ``resume``)."""
        return f"{self.prefix}:c:{cid}:paused"

    @property
    def api_keys(self) -> str:
        """Hash: key name -> JSON record (SHA-256 of the secret, kind, providers, times)."""
        return f"{self.prefix}:apikeys"

    def api_key(self, digest: str) -> str:
        """String: the name of the key whose secret has this SHA-256 hex digest."""
        return f"{self.prefix}:apikey:{digest}"

    def api_bucket(self, name: str) -> str:
        """The provider argument of the request-rate bucket of API key ``name`` (a name no
        provider can have, so the bucket is ``rl:@api:NAME``)."""
        return f"@api:{name}"

    def heartbeat(self, provider: str) -> str:
        """String with a TTL: the last worker node seen consuming ``provider``'s queue."""
        return f"{self.prefix}:hb:{provider}"

    # provider webhooks (workers/feedback/), complaint guard (workers/guard.py) ------------
    def recipient_events(self, cid: str, batch_no: int) -> str:
        """Hash: ``index|event key`` -> JSON of one provider event about that recipient
        (and ``index#label`` markers: the first event of a kind, counted once)."""
        return f"{self.prefix}:c:{cid}:ev:{batch_no}"

    def event_seen(self, provider: str, event_id: str) -> str:
        """String with a TTL: this provider event was recorded (dedupe by event id)."""
        return f"{self.prefix}:wh:seen:{provider}:{event_id}"

    def webhook_token(self, provider: str, token: str) -> str:
        """String with a TTL: a signature token already used (Mailgun replay check)."""
        return f"{self.prefix}:wh:tok:{provider}:{token}"

    def provider_ids(self, provider: str, day: int) -> str:
        """Hash with a TTL: provider message id -> ``<batch>:<campaign id>`` of the
        messages accepted on ``day`` (unix day number), to match events without our id."""
        return f"{self.prefix}:wh:pid:{provider}:{day}"

    def webhook_counts(self, provider: str) -> str:
        """Hash: what the provider's webhook received (recorded, duplicate, ignored...)."""
        return f"{self.prefix}:wh:n:{provider}"

    def guard(self, cid: str, provider: str) -> str:
        """Hash: the complaint guard's window of one campaign and provider
        (``<bucket>:<d|b|c>`` -> count, ``tripped`` -> time)."""
        return f"{self.prefix}:c:{cid}:guard:{provider}"


# ids --------------------------------------------------------------------------------
# A campaign id (a single message's id too) becomes part of Redis keys, task ids and
# retry-queue members. The rule keeps ":" out, so "cid:batch" always splits at its last
# colon and no id can name another campaign's keys ("news:counts" would be the counts
# hash of campaign "news").

#: The id rule in words, for error messages.
ID_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: an id longer than this is cut short in error messages
_SHOWN = 80


def is_valid_id(value: object) -> bool:
    """Whether ``value`` is a campaign or message id that follows :data:`ID_RULE`."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_id(value: object, *, what: str = "campaign id") -> str:
    """``value`` when it follows :data:`ID_RULE`, else :class:`InvalidIdError`.

    ``what`` names where the id came from (``"message_id"``, ``"spring.toml: field
    'id'"``); it starts the error message.
    """
    if is_valid_id(value):
        assert isinstance(value, str)
        return value
    shown = repr(value)
    if len(shown) > _SHOWN:
        shown = shown[:_SHOWN] + "..."
    raise InvalidIdError(f"{what}: {shown} must be {ID_RULE}")


def retry_member(cid: str, batch_no: int) -> str:
    """``cid:batch``: a batch in a retry queue (:meth:`Keys.retry`)."""
    return f"{cid}:{batch_no}"


def parse_retry_member(member: str) -> tuple[str, int]:
    """``(campaign id, batch number)`` of a :func:`retry_member`; ``ValueError`` (an
    :class:`InvalidIdError` for a bad campaign id) for anything else."""
    cid, sep, batch = member.rpartition(":")
    if not sep or not (batch.isascii() and batch.isdigit()):
        raise ValueError(f"{member!r} is not a retry-queue member (campaign:batch)")
    return check_id(cid, what=f"retry-queue member {member!r}"), int(batch)


def task_id(cid: str, batch_no: int) -> str:
    """The task id of a batch's first send: ``cid:batch``, deterministic, so a batch
    published twice by a resumed enqueue is one task id (Flower shows one)."""
    return retry_member(cid, batch_no)


def retry_task_id(cid: str, batch_no: int, stamp: int) -> str:
    """``cid:batch:r<stamp>``: the batch published again by the retry pump."""
    return f"{task_id(cid, batch_no)}:r{stamp}"


def requeue_task_id(cid: str, batch_no: int, stamp: int) -> str:
    """``cid:batch:q<stamp>``: the batch published again by ``retry-failed`` or
    ``dlq requeue`` (an operator's action)."""
    return f"{task_id(cid, batch_no)}:q{stamp}"


@dataclass(frozen=True, slots=True)
class Recipient:
    """One valid row of a recipient list, numbered by its row in the source file."""

    row: int
    email: str
    vars: dict[str, Any] = field(default_factory=dict)


def encode_batch(recipients: list[Recipient]) -> bytes:
    """Compact JSON: ``[[row, email, vars], ...]``."""
    return json.dumps(
        [[r.row, r.email, r.vars] for r in recipients], separators=(",", ":"), ensure_ascii=False
    ).encode()


def decode_batch(data: bytes | str) -> list[Recipient]:
    return [Recipient(row, email, vars_) for row, email, vars_ in json.loads(data)]


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """A validated campaign, as stored in Redis and compiled by every worker process."""

    id: str
    provider: str
    sender: str
    subject: str
    text: str | None = None
    html: str | None = None
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    batch_size: int = 500
    #: explicit envelope sender (MAIL FROM); the From address when unset
    return_path: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | bytes) -> CampaignSpec:
        raw = json.loads(data)
        return cls(**raw)
