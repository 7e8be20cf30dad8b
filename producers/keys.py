"""API keys and SMTP credentials, kept in Redis as SHA-256 hashes.

A key is 32 random bytes (``secrets.token_urlsafe``), shown once at creation. Redis holds
only its SHA-256 digest: the secret has 256 bits of entropy, so a fast hash is as safe as
a slow one and checking a request costs microseconds.

Layout (:class:`config.schema.Keys`):

- ``apikeys``: hash, key name -> JSON ``{"sha256", "kind", "providers", "created",
  "revoked"}``; ``kind`` is ``"api"`` (``Authorization: Bearer KEY``) or ``"smtp"``
  (SMTP AUTH, username = the name, password = the secret); ``providers`` is the list the
  key may send through, or null for all.
- ``apikey:<sha256 hex>``: string, the key's name (the lookup of a presented secret).
  Revoking deletes it, so a revoked secret finds nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import redis

from config.errors import InputError
from config.schema import Keys

__all__ = ["ApiKey", "KeyStore", "NewKey", "digest"]

Kind = Literal["api", "smtp"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def digest(secret: str) -> str:
    """SHA-256 hex digest of a presented secret."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as stored (never the secret)."""

    name: str
    kind: Kind
    providers: tuple[str, ...] | None
    created: float
    sha256: str
    revoked: float | None = None

    def allows(self, provider: str) -> bool:
        """Whether this key may send through ``provider``."""
        return self.providers is None or provider in self.providers

    def as_dict(self) -> dict[str, Any]:
        """For ``keys list --json`` (no digest: it is of no use to a reader)."""
        return {"name": self.name, "kind": self.kind,
                "providers": list(self.providers) if self.providers is not None else None,
                "created": self.created, "revoked": self.revoked}

    def to_json(self) -> str:
        return json.dumps({"sha256": self.sha256, "kind": self.kind,
                           "providers": self.as_dict()["providers"], "created": self.created,
                           "revoked": self.revoked}, separators=(",", ":"))

    @classmethod
    def from_json(cls, name: str, raw: str | bytes) -> ApiKey:
        d = json.loads(raw)
        providers = d.get("providers")
        return cls(name=name, kind=d["kind"], created=float(d["created"]),
                   providers=tuple(providers) if providers is not None else None,
                   sha256=d["sha256"], revoked=d.get("revoked"))


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly created key with its secret: the only time the secret exists outside
    the client that holds it."""

    key: ApiKey
    secret: str

    def as_dict(self) -> dict[str, str]:
        """What ``keys create --json`` prints."""
        if self.key.kind == "smtp":
            return {"name": self.key.name, "username": self.key.name, "password": self.secret}
        return {"name": self.key.name, "key": self.secret}


class KeyStore:
    """Create, list, revoke and check keys (sync Redis: the CLI and the API's threads)."""

    def __init__(self, client: redis.Redis[bytes], keys: Keys) -> None:
        self.r = client
        self.keys = keys

    def create(self, name: str, *, kind: Kind = "api",
               providers: Iterable[str] | None = None) -> NewKey:
        """A new key named ``name``. Raises :class:`InputError` for a bad or taken name
        (a revoked key's name may be used again)."""
        if not _NAME.match(name):
            raise InputError(f"key name {name!r} must be 1-64 letters, digits, '.', '_' or "
                             "'-', starting with a letter or digit")
        existing = self.get(name)
        if existing is not None and existing.revoked is None:
            raise InputError(f"a key named {name!r} exists already; revoke it first or "
                             "pick another name")
        secret = secrets.token_urlsafe(32)
        key = ApiKey(name=name, kind=kind, created=time.time(), sha256=digest(secret),
                     providers=tuple(dict.fromkeys(providers)) if providers is not None
                     else None)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.keys.api_keys, name, key.to_json())
        pipe.set(self.keys.api_key(key.sha256), name)
        pipe.execute()
        return NewKey(key, secret)

    def get(self, name: str) -> ApiKey | None:
        raw = self.r.hget(self.keys.api_keys, name)
        return ApiKey.from_json(name, raw) if raw is not None else None

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, by name."""
        return sorted((ApiKey.from_json(n.decode(), raw)
                       for n, raw in self.r.hscan_iter(self.keys.api_keys)),
                      key=lambda k: k.name)

    def revoke(self, name: str) -> bool:
        """Revoke ``name``: its secret stops working at once. False when there is no such
        live key."""
        key = self.get(name)
        if key is None or key.revoked is not None:
            return False
        revoked = ApiKey(name=key.name, kind=key.kind, providers=key.providers,
                         created=key.created, sha256=key.sha256, revoked=time.time())
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.keys.api_key(key.sha256))
        pipe.hset(self.keys.api_keys, name, revoked.to_json())
        pipe.execute()
        return True

    def authenticate(self, secret: str, *, kind: Kind = "api") -> ApiKey | None:
        """The live key of ``kind`` whose secret is ``secret``, or None."""
        if not secret:
            return None
        sha = digest(secret)
        name = self.r.get(self.keys.api_key(sha))
        if name is None:
            return None
        key = self.get(name.decode())
        if key is None or key.revoked is not None or key.kind != kind:
            return None
        # The lookup was by digest already; compare again in constant time so that the
        # record read is the one the secret belongs to (a re-created name).
        return key if hmac.compare_digest(key.sha256, sha) else None

    def authenticate_smtp(self, username: str, password: str) -> ApiKey | None:
        """SMTP AUTH: the live ``smtp`` key named ``username`` whose secret is
        ``password``, or None."""
        key = self.authenticate(password, kind="smtp")
        return key if key is not None and hmac.compare_digest(
            key.name.encode(), username.encode("utf-8", "surrogatepass")) else None
